"""Run a real 389 Directory Server (ns-slapd from Debian's ``389-ds-base``) for tests.

`DirSrv` creates a throw-away instance with ``dscreate`` in a private "ds-root"
prefix (no systemd, no SELinux, no TLS, nothing under /etc or /var), then runs
``ns-slapd`` in the foreground as our own child in its own process group, bound
to free loopback ports only. ``dscreate`` refuses to prepare a prefix as root, so
when the tests run as root the prefix belongs to the ``dirsrv`` user and both
``dscreate`` and ``ns-slapd`` run as that user; run as anyone else, they run as
the caller. The prefix lives in a fresh directory under the system temp dir
(pytest's own temp dirs are 0700 root, which ``dirsrv`` cannot enter); the
caller's ``workdir`` keeps the INF answer file, ``dscreate``'s output, ns-slapd's
stdout/stderr and, after `DirSrv.destroy`, copies of the server's error and
access logs. Processes are killed and prefixes removed at interpreter exit too.
Measured here (2 cores): create ~6 s, start ~0.6 s, stop ~2.2 s.
"""

from __future__ import annotations

import contextlib
import os
import pwd
import shutil
import signal
import subprocess
import tempfile
from pathlib import Path

from ldap3.core.exceptions import LDAPException

from tests.integration.servers.ldap_server import LdapServer
from tests.integration.servers.process import (
    ServerProcess,
    at_exit,
    free_loopback_ports,
    log_tail,
    port_accepts,
    run_logged,
)
from tests.integration.servers.started import DestroyedOnExit

DEFAULT_SUFFIX = "dc=example,dc=org"
# No '%': dscreate reads the INF with configparser, which would interpolate it.
DEFAULT_PASSWORD = "Permwatch-DM-Secret1"
ROOT_DN = "cn=Directory Manager"

_HOST = "127.0.0.1"
_DSCREATE = "/usr/sbin/dscreate"
_NS_SLAPD = "/usr/sbin/ns-slapd"
_SERVICE_USER = "dirsrv"  # the system user Debian's 389-ds-base creates
_RETRO_CHANGELOG_DN = "cn=Retro Changelog Plugin,cn=plugins,cn=config"
_ROOT_PREFIX = "permwatch-389ds-"
_OWNER_FILE = "owner.pid"  # pid of the test process that created an instance dir

# Every prefix we have not yet removed; removed at interpreter exit, after the
# servers (see `process`) are killed.
_ROOTS: set[Path] = set()


class DirSrvError(RuntimeError):
    """The instance could not be created, started, stopped or written to."""


@at_exit
def _remove_live_roots() -> None:
    for root in list(_ROOTS):
        shutil.rmtree(root, ignore_errors=True)
        _ROOTS.discard(root)


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _remove_orphaned_roots() -> None:
    """Delete instance dirs whose test process died without cleaning up (e.g. SIGKILL).

    Their ns-slapd died with that process (parent-death signal); only files remain.
    """
    for root in Path(tempfile.gettempdir()).glob(f"{_ROOT_PREFIX}*"):
        try:
            owner_pid = int((root / _OWNER_FILE).read_text(encoding="ascii"))
        except (OSError, ValueError):
            continue  # being created right now, or not one of ours
        if not _pid_alive(owner_pid):
            shutil.rmtree(root, ignore_errors=True)


def _set_dse_attribute(dse: Path, dn: str, attribute: str, value: str) -> None:
    """Replace ``attribute`` of entry ``dn`` in a stopped server's ``dse.ldif``.

    Editing the file before start saves a restart compared with cn=config
    modifies. Entries are separated by blank lines; folded values (lines
    starting with a space) belong to the line before them.
    """
    text = dse.read_text(encoding="utf-8")
    blocks = text.split("\n\n")
    wanted_dn = f"dn: {dn}".lower()
    prefix = f"{attribute.lower()}:"
    for index, block in enumerate(blocks):
        lines = block.splitlines()
        if not lines or lines[0].lower() != wanted_dn:
            continue
        kept: list[str] = []
        skipping = False
        for line in lines:
            if line.startswith(" ") and skipping:
                continue
            skipping = line.lower().startswith(prefix)
            if not skipping:
                kept.append(line)
        kept.append(f"{attribute}: {value}")
        blocks[index] = "\n".join(kept)
        # Writing in place keeps the file's owner (dirsrv) and mode.
        dse.write_text("\n\n".join(blocks), encoding="utf-8")
        return
    raise DirSrvError(f"no entry {dn!r} in {dse}")


class DirSrv(LdapServer, DestroyedOnExit):
    """One 389 Directory Server instance on loopback, created on first ``start()``.

    The instance (ports, data, configuration) survives ``stop()`` + ``start()``
    like a real server restart; `destroy` stops it and removes it for good.
    ``start()`` on a running instance does nothing.
    """

    bind_dn = ROOT_DN

    def __init__(
        self,
        workdir: Path,
        *,
        suffix: str = DEFAULT_SUFFIX,
        password: str = DEFAULT_PASSWORD,
        instance_name: str = "permwatch",
        retro_changelog: bool = False,
        create_timeout: float = 300.0,
        start_timeout: float = 120.0,
    ) -> None:
        if len(password) < 8 or "%" in password:
            raise DirSrvError("the root password needs 8+ characters and no '%' (dscreate's INF rules)")
        self.workdir = Path(workdir).resolve()
        self.base_dn = suffix
        self.password = password
        self.instance_name = instance_name
        self.retro_changelog = retro_changelog
        self.create_timeout = create_timeout
        self.start_timeout = start_timeout
        self._root: Path | None = None
        self._port: int | None = None
        self._secure_port: int | None = None
        self._server = ServerProcess("ns-slapd", self.log_path, DirSrvError)

    # -- public API -------------------------------------------------------------

    @property
    def port(self) -> int:
        if self._port is None:
            raise DirSrvError("instance has never been started; no port assigned yet")
        return self._port

    @property
    def uri(self) -> str:
        """``ldap://127.0.0.1:PORT`` (plain LDAP; the instance has no TLS)."""
        return f"ldap://{_HOST}:{self.port}"

    @property
    def instance_root(self) -> Path:
        """The private temp dir (owned by ``dirsrv`` under root) holding the whole instance."""
        if self._root is None:
            raise DirSrvError("instance has not been created")
        return self._root

    @property
    def prefix(self) -> Path:
        """The ds-root prefix inside `instance_root` that dscreate installs into."""
        return self.instance_root / "prefix"

    @property
    def config_dir(self) -> Path:
        return self.prefix / "etc" / "dirsrv" / f"slapd-{self.instance_name}"

    @property
    def error_log_path(self) -> Path:
        return self.prefix / "var" / "log" / "dirsrv" / f"slapd-{self.instance_name}" / "errors"

    @property
    def access_log_path(self) -> Path:
        return self.error_log_path.with_name("access")

    @property
    def log_path(self) -> Path:
        """ns-slapd's stdout/stderr (appended to across restarts)."""
        return self.workdir / "ns-slapd.out"

    @property
    def create_log_path(self) -> Path:
        return self.workdir / "dscreate.log"

    def start(self) -> None:
        """Create the instance if needed, start ns-slapd and block until it serves the suffix.

        Raises `DirSrvError` (with log tails) if creation fails, or if ns-slapd exits
        or does not answer a bind and a base search within ``start_timeout`` seconds;
        ns-slapd is killed in that case.
        """
        if self.running:
            return
        self.workdir.mkdir(parents=True, exist_ok=True)
        if self._root is None:
            self._create()
        self._spawn()
        self._ready_or_killed()

    def destroy(self) -> None:
        """Stop the server, keep copies of its logs in ``workdir/logs`` and delete the instance."""
        self.stop()
        root = self._root
        if root is None:
            return
        saved = self.workdir / "logs"
        saved.mkdir(parents=True, exist_ok=True)
        for log in (self.error_log_path, self.access_log_path):
            with contextlib.suppress(FileNotFoundError):
                shutil.copyfile(log, saved / log.name)
        shutil.rmtree(root, ignore_errors=True)
        _ROOTS.discard(root)
        self._root = None
        self._port = self._secure_port = None

    def load_ldif(self, path: Path) -> None:
        """Apply an LDIF file with ``ldapadd`` (records without a changetype are adds)."""
        result = subprocess.run(
            ["ldapadd", "-x", "-H", self.uri, "-D", self.bind_dn, "-w", self.password, "-f", str(path)],
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=120,
        )
        if result.returncode != 0:
            raise DirSrvError(f"ldapadd -f {path} failed ({result.returncode}):\n{result.stdout}\n{result.stderr}")

    def __repr__(self) -> str:
        where = self.uri if self._port is not None else "uncreated"
        state = "running" if self.running else "stopped"
        return f"DirSrv({self.instance_name}, {where}, {state}, workdir={self.workdir})"

    # -- internals --------------------------------------------------------------

    def _as_service_user(self, command: list[str], *, pdeathsig: bool = False) -> list[str]:
        """Wrap ``command`` so it runs as ``dirsrv`` when we are root, else as ourselves."""
        setpriv = shutil.which("setpriv")
        if setpriv is None:
            raise DirSrvError("'setpriv' (util-linux) not found on PATH")
        wrapper = [setpriv]
        if os.geteuid() == 0:
            wrapper += [f"--reuid={_SERVICE_USER}", f"--regid={_SERVICE_USER}", "--init-groups"]
        if pdeathsig:
            # SIGKILL ns-slapd if the thread that started it dies (even by SIGKILL),
            # so an aborted test run cannot leave a server behind.
            wrapper += ["--pdeathsig", "KILL"]
        return [*wrapper, "--", *command]

    def _service_env(self, root: Path) -> dict[str, str]:
        # A clean environment: the venv's variables must not leak into the system
        # python that runs dscreate (lib389 lives in /usr/lib/python3/dist-packages).
        return {
            "PATH": "/usr/sbin:/usr/bin:/sbin:/bin",
            "HOME": str(root),
            "LANG": "C.UTF-8",
            "PREFIX": str(root / "prefix"),
            "INSTALL_PREFIX": str(root / "prefix"),
        }

    def _run_tool(self, command: list[str], root: Path, what: str) -> None:
        run_logged(
            self._as_service_user(command),
            what=f"{what}: {' '.join(command)}",
            log_path=self.create_log_path,
            timeout=self.create_timeout,
            error=DirSrvError,
            cwd=root,
            env=self._service_env(root),
        )

    def _create(self) -> None:
        for tool in (_DSCREATE, _NS_SLAPD):
            if not os.access(tool, os.X_OK):
                raise DirSrvError(f"{tool} not found: install Debian's 389-ds-base (scripts/install.sh --test)")
        _remove_orphaned_roots()
        owner = pwd.getpwnam(_SERVICE_USER) if os.geteuid() == 0 else None
        root = Path(tempfile.mkdtemp(prefix=_ROOT_PREFIX))
        _ROOTS.add(root)
        try:
            (root / _OWNER_FILE).write_text(str(os.getpid()), encoding="ascii")
            if owner is not None:
                os.chown(root, owner.pw_uid, owner.pw_gid)
            self._port, self._secure_port = free_loopback_ports(2, DirSrvError)
            self._root = root
            prefix = root / "prefix"
            self._run_tool([_DSCREATE, "ds-root", str(prefix)], root, "dscreate ds-root")
            inf = root / "instance.inf"
            inf.write_text(self._inf_text(), encoding="utf-8")
            shutil.copyfile(inf, self.workdir / "instance.inf")
            if owner is not None:
                os.chown(inf, owner.pw_uid, owner.pw_gid)
            self._run_tool([_DSCREATE, "from-file", str(inf)], root, "dscreate from-file")
            # Without a listen host ns-slapd binds every interface; tests stay on loopback.
            dse = self.config_dir / "dse.ldif"
            _set_dse_attribute(dse, "cn=config", "nsslapd-listenhost", _HOST)
            if self.retro_changelog:
                _set_dse_attribute(dse, _RETRO_CHANGELOG_DN, "nsslapd-pluginEnabled", "on")
        except BaseException:
            self._kill_server_left_by_dscreate()
            shutil.rmtree(root, ignore_errors=True)
            _ROOTS.discard(root)
            self._root = None
            self._port = self._secure_port = None
            raise

    def _inf_text(self) -> str:
        return (
            "[general]\n"
            "full_machine_name = localhost\n"
            "strict_host_checking = False\n"
            "selinux = False\n"
            "systemd = False\n"
            # dscreate starts the server to configure it; we stop it to edit dse.ldif.
            "start = False\n"
            "[slapd]\n"
            f"instance_name = {self.instance_name}\n"
            f"port = {self.port}\n"
            f"secure_port = {self._secure_port}\n"
            "self_sign_cert = False\n"
            f"root_password = {self.password}\n"
            "[backend-userroot]\n"
            f"suffix = {self.base_dn}\n"
            "create_suffix_entry = True\n"
            "sample_entries = no\n"
        )

    @property
    def _pid_file(self) -> Path:
        return self.prefix / "run" / "dirsrv" / f"slapd-{self.instance_name}.pid"

    def _kill_server_left_by_dscreate(self) -> None:
        """dscreate starts (and stops) a daemonized ns-slapd itself; a failed create may leave it running."""
        if self._root is None:
            return
        try:
            pid = int(self._pid_file.read_text(encoding="ascii").split()[0])
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
        except (OSError, ValueError, IndexError):
            return
        if str(self.config_dir).encode() in cmdline:  # not some other process that reused the pid
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)

    def _spawn(self) -> None:
        pid_file = self._pid_file
        # -d 0 keeps ns-slapd in the foreground (no fork), so it stays our child.
        command = self._as_service_user(
            [_NS_SLAPD, "-D", str(self.config_dir), "-i", str(pid_file), "-d", "0"], pdeathsig=True
        )
        self._server.spawn(command, cwd=self.instance_root, env=self._service_env(self.instance_root), pdeathsig=False)

    def _wait_ready(self) -> None:
        self._server.wait_ready(
            self._serves_suffix,
            timeout=self.start_timeout,
            where=self.uri,
            logs=self._log_tails,
            retry_on=(LDAPException, OSError, DirSrvError),
        )

    def _serves_suffix(self) -> bool:
        return port_accepts(_HOST, self.port) and self._binds_and_finds_base()

    def _log_tails(self) -> str:
        errors = self.error_log_path if self._root is not None else Path("<no instance>")
        return f"--- {self.log_path} ---\n{log_tail(self.log_path)}\n--- {errors} ---\n{log_tail(errors)}"
