"""Run a real standalone Samba file server (Debian ``smbd``) on a loopback address of its own for NT-ACL tests.

`SambaFileServer` writes its own ``smb.conf`` with every directory Samba writes to (private, lock, state, cache,
pid, ncalrpc) and the passdb (``tdbsam``) under the caller's work dir, shares one folder of its own (see
`share_path`) as ``[share]`` with ``vfs objects = acl_xattr`` and ``map acl inherit = yes`` (so Windows ACLs set
over SMB are stored in the ``security.NTACL`` xattr, as on a production Samba file server), and runs ``smbd
--foreground --no-process-group`` as our own child. It listens on a random 127.x.y.z, port 445, rather than on a
free port: Samba 4.17's ACL clients (``smbcacls``, the Python bindings) always connect to 445 and cannot be told
another. smbd maps every SMB user to a Unix account, so the users a test asks for are created with ``useradd
--no-create-home`` (names prefixed ``pwnt``) and deleted again by `stop`, at interpreter exit or when the start
fails; their SMB passwords go to ``pdbedit`` on stdin, never on a command line or in a log. Needs root (smbd
switches to the users' uids; ``useradd``). Measured here (2 cores): start ~0.9 s (with the users), stop under 0.1 s.
"""

from __future__ import annotations

import fcntl
import os
import pwd
import random
import shutil
import signal
import socket
import subprocess
import tempfile
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

from tests.integration.servers.process import ServerProcess, at_exit, log_tail, port_accepts
from tests.integration.servers.started import StartedInWith

SHARE = "share"
# Samba 4.17's clients (smbcacls, the Python bindings) always connect to 445 (then 139): only smbclient takes
# a port. So each server gets a loopback address of its own instead of a port of its own.
SMB_PORT = 445
ADMIN_USER = "pwntadmin"  # in `admin users`: works as root over SMB, so it may set any ACL
USER_PREFIX = "pwnt"
# Servers alive at once (nested in one test, or in two test processes) share Unix accounts of the same name: each
# server leaves a mark per account here, and an account is deleted by the last server whose mark remains.
ACCOUNT_MARKS = Path(tempfile.gettempdir()) / "permwatch-samba-accounts"


class SambaFileServerError(RuntimeError):
    """smbd or one of its users could not be set up, started or stopped."""


def _run(command: Sequence[str], *, stdin: str | None = None) -> None:
    """Run a setup command; raise with its output (never a password: those go on stdin only)."""
    result = subprocess.run(list(command), input=stdin, capture_output=True, text=True, check=False)
    if result.returncode != 0:
        raise SambaFileServerError(
            f"{' '.join(command)} exited with {result.returncode}: {result.stdout.strip()} {result.stderr.strip()}"
        )


def _free_loopback_address() -> str:
    """A random 127.x.y.z on which port 445 is free (Linux routes all of 127/8 to the loopback device)."""
    for _ in range(100):
        address = f"127.{random.randint(1, 254)}.{random.randint(0, 255)}.{random.randint(2, 254)}"
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        try:
            sock.bind((address, SMB_PORT))
        except OSError:
            continue
        finally:
            sock.close()
        return address
    raise SambaFileServerError("no loopback address with port 445 free")


def _unix_user_exists(name: str) -> bool:
    try:
        pwd.getpwnam(name)
    except KeyError:
        return False
    return True


class SambaFileServer(StartedInWith):
    """One smbd serving ``//<host>/share`` (``share_path``) on ``port``, with local users ``users``.

    ``users`` maps a short name (``alice``) to its password; the Unix and SMB account is ``pwnt<short name>``
    (see `account`). An admin account (`ADMIN_USER`, password `admin_password`) is always added.
    """

    port = SMB_PORT
    admin_password = "Permwatch-admin-1"

    def __init__(
        self,
        workdir: Path,
        users: dict[str, str],
        *,
        start_timeout: float = 30.0,
        share_options: dict[str, str] | None = None,
    ) -> None:
        self.workdir = Path(workdir).resolve()
        self.users = dict(users)
        self.share_options = dict(share_options or {})
        self.start_timeout = start_timeout
        self.host = _free_loopback_address()
        self._created_accounts: list[str] = []
        self._share_path: Path | None = None
        self._server = ServerProcess("smbd", self.log_path, SambaFileServerError)
        self._cleanup = at_exit(self._delete_accounts)
        at_exit(self._delete_share)

    # -- paths ---------------------------------------------------------------

    @property
    def share_path(self) -> Path:
        """The shared folder: its own directory under the system temp dir, made by `start`, deleted by `stop`.

        Not under ``workdir``: smbd works as the logged-in user, so every ancestor must let the test users
        traverse, and pytest's temp dirs are private to root."""
        if self._share_path is None:
            raise SambaFileServerError("the share exists only while the server runs")
        return self._share_path

    @property
    def conf_path(self) -> Path:
        return self.workdir / "smb.conf"

    @property
    def log_path(self) -> Path:
        return self.workdir / "smbd.out"

    @property
    def unc(self) -> str:
        return f"//{self.host}/{SHARE}"

    @staticmethod
    def account(user: str) -> str:
        """The Unix and SMB account name for a test user's short name."""
        return user if user == ADMIN_USER else f"{USER_PREFIX}{user}"

    def uid(self, user: str) -> int:
        return pwd.getpwnam(self.account(user)).pw_uid

    def credentials(self, user: str) -> str:
        """``DOMAIN-less user%password`` for ``-U``; pass it on the command line of a test client only."""
        password = self.admin_password if user == ADMIN_USER else self.users[user]
        return f"{self.account(user)}%{password}"

    # -- lifecycle -----------------------------------------------------------

    def start(self) -> None:
        """Create the accounts, write smb.conf, start smbd and block until it accepts connections."""
        if self._server.running:
            return
        if os.geteuid() != 0:
            raise SambaFileServerError("smbd as a file server for other users must run as root")
        smbd = shutil.which("smbd") or "/usr/sbin/smbd"
        if not os.access(smbd, os.X_OK) or shutil.which("pdbedit") is None:
            raise SambaFileServerError("smbd/pdbedit not found: install Debian's samba (scripts/install.sh --test)")
        try:
            self._write_conf()
            self._add_accounts()
            self._server.spawn(
                [smbd, "--foreground", "--no-process-group", "--debug-stdout", f"--configfile={self.conf_path}"],
                cwd=self.workdir,
                # a standalone server asks no winbindd: one running on this machine for an AD DC (its socket is in
                # the default /run/samba/winbindd) would map our users' SIDs to its own uids (LOGON_FAILURE)
                env={**os.environ, "_NO_WINBINDD": "1"},
            )
            self._server.wait_ready(
                lambda: port_accepts(self.host, self.port),
                timeout=self.start_timeout,
                where=f"{self.host}:{self.port}",
                logs=lambda: log_tail(self.log_path),
            )
        except BaseException:
            self.stop()
            raise

    def stop(self, timeout: float = 10.0) -> None:
        """Stop smbd (SIGTERM, then SIGKILL), delete the Unix accounts this server created and the share."""
        try:
            self._server.stop(timeout)
        finally:
            _kill_helpers_of(self.conf_path)
            self._delete_accounts()
            self._delete_share()

    # -- internals -----------------------------------------------------------

    def _write_conf(self) -> None:
        dirs = {name: self.workdir / name for name in ("private", "lock", "state", "cache", "pid", "ncalrpc")}
        for path in dirs.values():
            path.mkdir(parents=True, exist_ok=True)
        if self._share_path is None:
            self._share_path = Path(tempfile.mkdtemp(prefix="permwatch-smb-share-"))
        # smbd checks that its private dir is not world-readable
        dirs["private"].chmod(0o700)
        self.share_path.chmod(0o755)
        settings = {
            "server role": "standalone server",
            "workgroup": "PWTEST",
            "netbios name": "PWNTACL",
            "private dir": dirs["private"],
            "lock directory": dirs["lock"],
            "state directory": dirs["state"],
            "cache directory": dirs["cache"],
            "pid directory": dirs["pid"],
            "ncalrpc dir": dirs["ncalrpc"],
            "passdb backend": f"tdbsam:{dirs['private'] / 'passdb.tdb'}",
            "smb ports": self.port,
            "interfaces": f"{self.host}/8",
            "bind interfaces only": "yes",
            "disable netbios": "yes",
            "load printers": "no",
            "printing": "bsd",
            "printcap name": "/dev/null",
            "disable spoolss": "yes",
            "log level": "1",
            "server min protocol": "SMB2_10",
        }
        share = {
            "path": self.share_path,
            "read only": "no",
            "vfs objects": "acl_xattr",
            "map acl inherit": "yes",
            "admin users": ADMIN_USER,
            **self.share_options,
        }
        lines = ["# written by permwatch's SambaFileServer test fixture", "[global]"]
        lines += [f"\t{key} = {value}" for key, value in settings.items()]
        lines += [f"[{SHARE}]"] + [f"\t{key} = {value}" for key, value in share.items()]
        self.conf_path.write_text("\n".join(lines) + "\n", encoding="utf-8")

    def _add_accounts(self) -> None:
        accounts = {ADMIN_USER: self.admin_password} | {self.account(u): pw for u, pw in self.users.items()}
        with _account_lock():
            for account, password in accounts.items():
                if not _unix_user_exists(account):
                    # (one that exists is another live server's, or a leftover of a run killed before its clean-up)
                    _run(["useradd", "--no-create-home", "--shell", "/usr/sbin/nologin", account])
                self._mark(account).parent.mkdir(parents=True, exist_ok=True)
                self._mark(account).touch()
                self._created_accounts.append(account)
                _run(
                    ["pdbedit", f"--configfile={self.conf_path}", "-a", "-t", "-u", account],
                    stdin=f"{password}\n{password}\n",
                )

    def _mark(self, account: str) -> Path:
        return ACCOUNT_MARKS / account / f"{os.getpid()}.{id(self)}"

    def _delete_share(self) -> None:
        if self._share_path is not None:
            shutil.rmtree(self._share_path, ignore_errors=True)
            self._share_path = None

    def _delete_accounts(self) -> None:
        with _account_lock():
            while self._created_accounts:
                account = self._created_accounts.pop()
                self._mark(account).unlink(missing_ok=True)
                if _unix_user_exists(account) and not _marked_by_a_live_server(account):
                    subprocess.run(["userdel", account], capture_output=True, check=False)


@contextmanager
def _account_lock() -> Iterator[None]:
    """Serialise adding and deleting the shared Unix accounts across test processes."""
    ACCOUNT_MARKS.mkdir(parents=True, exist_ok=True)
    with open(ACCOUNT_MARKS / ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        yield


def _marked_by_a_live_server(account: str) -> bool:
    """Whether a server in a live process still uses `account` (marks of dead processes are removed)."""
    live = False
    for mark in (ACCOUNT_MARKS / account).glob("*.*"):
        pid = int(mark.name.split(".", 1)[0])
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            mark.unlink(missing_ok=True)
            continue
        live = True
    return live


def _kill_helpers_of(conf_path: Path) -> None:
    """SIGKILL the RPC helpers (samba-dcerpcd, rpcd_*) smbd started on demand for this server: they leave
    smbd's process group, so stopping smbd does not stop them. Found by the config file on their command line."""
    wanted = f"--configfile={conf_path}".encode()
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            if wanted in (entry / "cmdline").read_bytes().split(b"\0"):
                os.kill(int(entry.name), signal.SIGKILL)
        except (FileNotFoundError, ProcessLookupError, PermissionError):
            continue  # gone meanwhile
