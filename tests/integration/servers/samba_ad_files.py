"""Run a second, real Samba AD DC that also serves a file share, so AD users log in over SMB (NTLM or Kerberos).

`SambaADFileServer` provisions its own domain (realm ``FILES.EXAMPLE.ORG``, RFC 2307 attributes, no DNS) into
the caller's work dir and runs ``samba -i -M single`` with the services a DC file server needs: ``ldap``,
``kdc``, ``s3fs`` (smbd), ``winbindd`` (smbd maps the token's SIDs to Unix ids through it; with ``idmap_ldb:use
rfc2307`` a user's uid is its ``uidNumber`` and a group's gid its ``gidNumber``) and ``rpc``. It shares one
folder of its own (`share_path`) as ``[files]`` with ``vfs objects = dfs_samba4 acl_xattr`` (a DC's default:
Windows ACLs in ``security.NTACL``, mapped to POSIX ACLs as well), so smbd's check is the NT check and the
kernel's POSIX check together, exactly as on the standalone server of `samba_fs`.

It does not disturb the session's LDAP-only DC (`samba_ad`, on 127.0.0.1): every listener (389, 88, 445, 135,
3268, the RPC ports) binds a random loopback address of its own (``interfaces = <address>/8``, ``bind
interfaces only``). One thing is machine-wide: smbd finds winbindd only at the compiled-in socket
``/run/samba/winbindd/pipe`` (``winbindd socket directory`` moves the listener but not smbd's client), so one
such server runs on a machine at a time; `start` fails with a clear message if another winbindd answers there.

Kerberos: the KDC is the DC itself; `krb5_conf` is a krb5.conf naming it (point ``KRB5_CONFIG`` at it), and the
machine account also carries the SPN ``cifs/<address>``, since a test has no DNS name for the server (a real
deployment connects to the server's FQDN instead). The users given at construction are created before the first
start, with passwords, through Samba's own Python bindings run by Debian's python3 (`samba_ad_accounts`,
passwords on stdin only). Needs root.
Measured here (2 cores, loaded): provision ~8 s, start ~3 s, users ~1 s, stop under 1 s.
"""

from __future__ import annotations

import json
import os
import random
import shutil
import signal
import socket
import subprocess
import tempfile
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from ldap3 import BASE
from ldap3.core.exceptions import LDAPException

from tests.integration.servers.process import ServerProcess, at_exit, log_tail, port_accepts
from tests.integration.servers.samba_dc import SambaDC
from tests.integration.servers.started import StartedInWith

REALM = "FILES.EXAMPLE.ORG"
DOMAIN = "FILES"
SHARE = "files"
ADMIN_PASSWORD = "Permwatch-AD-Files1"
DOMAIN_USERS_GID = 70000
SYSTEM_PYTHON = "/usr/bin/python3"
WINBINDD_PIPE = Path("/run/samba/winbindd/pipe")
_HOST_NAME = "pwfs"
_ACCOUNTS_SCRIPT = Path(__file__).with_name("samba_ad_accounts.py")
_PORTS = (389, 445, 88)


class SambaADFileServerError(RuntimeError):
    """The DC file server could not be provisioned, started or given its users."""


@dataclass(frozen=True)
class ADUser:
    """A test user: ``sAMAccountName``, password, ``uidNumber`` (its ``gidNumber`` is Domain Users')."""

    name: str
    password: str
    uid: int


def _free_loopback_address() -> str:
    """A random 127.x.y.z on which the DC's main ports are free (all of 127/8 is the loopback device)."""
    for _ in range(100):
        address = f"127.{random.randint(1, 254)}.{random.randint(0, 255)}.{random.randint(2, 254)}"
        if all(_bindable(address, port) for port in _PORTS):
            return address
    raise SambaADFileServerError("no loopback address with ports 389, 445 and 88 free")


def _bindable(address: str, port: int) -> bool:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        sock.bind((address, port))
    except OSError:
        return False
    finally:
        sock.close()
    return True


def _winbindd_answers() -> bool:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        sock.connect(str(WINBINDD_PIPE))
    except OSError:
        return False
    finally:
        sock.close()
    return True


def _run(command: Sequence[str], *, stdin: str | None = None, timeout: float = 300.0) -> str:
    """Run a setup command; raise with its output (passwords go on stdin only, never in a message)."""
    result = subprocess.run(list(command), input=stdin, capture_output=True, text=True, timeout=timeout, check=False)
    if result.returncode != 0:
        raise SambaADFileServerError(
            f"{' '.join(command)} exited with {result.returncode}: {result.stdout.strip()[-2000:]} "
            f"{result.stderr.strip()[-2000:]}"
        )
    return result.stdout


class SambaADFileServer(SambaDC, StartedInWith):
    """One Samba AD DC serving LDAP, Kerberos and ``//<host>/files`` on a loopback address of its own."""

    realm = REALM
    domain = DOMAIN
    password = ADMIN_PASSWORD
    base_dn = ",".join(f"DC={part}" for part in REALM.lower().split("."))

    def __init__(self, workdir: Path, users: Iterable[ADUser] = (), *, start_timeout: float = 120.0) -> None:
        self.workdir = Path(workdir).resolve()
        self.users = tuple(users)
        self.start_timeout = start_timeout
        self.host = _free_loopback_address()
        self._share_path: Path | None = None
        self._server = ServerProcess("samba (AD DC file server)", self.log_path, SambaADFileServerError)
        at_exit(self._delete_share)

    # -- paths and names -----------------------------------------------------

    @property
    def sam_ldb(self) -> Path:
        return self.dc_dir / "private" / "sam.ldb"

    @property
    def krb5_conf(self) -> Path:
        """A krb5.conf naming this DC as the realm's KDC (for ``KRB5_CONFIG``)."""
        return self.workdir / "krb5.conf"

    def auth_audit(self) -> str:
        """smbd's logs (one per client, ``log.%m``): with ``auth_audit:3`` they name each session's method
        (``Authorization: [SMB2,krb5]``, ``[SMB2,NTLMSSP]``)."""
        return "".join(p.read_text(encoding="utf-8", errors="replace") for p in sorted(self.workdir.glob("log.*")))

    @property
    def uri(self) -> str:
        return f"ldap://{self.host}:389"

    @property
    def bind_dn(self) -> str:
        return f"CN=Administrator,CN=Users,{self.base_dn}"

    @property
    def unc(self) -> str:
        return f"//{self.host}/{SHARE}"

    @property
    def share_path(self) -> Path:
        """The shared folder, outside pytest's root-only temp dirs (smbd works as the logged-in user)."""
        if self._share_path is None:
            raise SambaADFileServerError("the share exists only while the server runs")
        return self._share_path

    def credentials(self, user: str, password: str) -> str:
        """``DOMAIN\\user%password`` for smbclient's ``-U``: only on a test client's command line."""
        return f"{DOMAIN}\\{user}%{password}"

    # -- lifecycle -----------------------------------------------------------

    def start(self) -> None:
        """Provision (first time), start samba and block until LDAP, the KDC and an SMB login answer."""
        if self._server.running:
            return
        samba = self._samba("smbclient")
        if _winbindd_answers():
            raise SambaADFileServerError(
                f"another winbindd answers at {WINBINDD_PIPE}: smbd on a DC reaches winbindd only there, so one "
                "DC file server runs on a machine at a time"
            )
        self.workdir.mkdir(parents=True, exist_ok=True)
        if self._share_path is None:
            self._share_path = Path(tempfile.mkdtemp(prefix="permwatch-ad-share-"))
            self._share_path.chmod(0o755)
        provision = not self.sam_ldb.exists()
        if provision:
            self._provision()
        self._write_conf()
        if provision:
            # before the first start: smbd caches a SID's Unix id at the first login that needs it, so Domain
            # Users must have its gidNumber before anyone logs in
            self._add_users()
        self._write_krb5_conf()
        self._spawn(samba)
        smbd_log = self.workdir / "log.smbd"
        try:
            self._server.wait_ready(
                self._ready,
                timeout=self.start_timeout,
                where=self.unc,
                logs=lambda: f"--- {self.log_path} ---\n{log_tail(self.log_path)}\n--- smbd ---\n{log_tail(smbd_log)}",
                retry_on=(LDAPException, OSError, SambaADFileServerError),
                interval=0.3,
            )
        except BaseException:
            self.stop()
            raise

    def stop(self, timeout: float = 30.0) -> None:
        """Stop samba and its smbd/winbindd children (one process group) and delete the share."""
        try:
            self._server.stop(timeout)
        finally:
            _kill_detached(self.smb_conf)
            self._delete_share()

    # -- the directory -------------------------------------------------------

    @property
    def people_dn(self) -> str:
        """The OU holding `users`."""
        return f"OU=people,{self.base_dn}"

    def sid_of(self, dn: str) -> str:
        conn = self.connect()
        try:
            if not conn.search(dn, "(objectClass=*)", search_scope=BASE, attributes=["objectSid"]):
                raise SambaADFileServerError(f"{dn} not found: {conn.result}")
            return str(conn.entries[0].objectSid.value)
        finally:
            conn.unbind()

    # -- internals -----------------------------------------------------------

    def _add_users(self) -> None:
        """Create `people_dn` and each user in it with its password (enabled, RFC 2307 ids, primary gid Domain
        Users'), and give Domain Users its ``gidNumber``: straight into sam.ldb, with the DC stopped."""
        request = {
            "smb_conf": str(self.smb_conf),
            "sam_ldb": str(self.sam_ldb),
            "ou": self.people_dn,
            "domain_users_gid": DOMAIN_USERS_GID,
            "users": [
                {"name": u.name, "password": u.password, "uid": u.uid, "gid": DOMAIN_USERS_GID} for u in self.users
            ],
        }
        _run([SYSTEM_PYTHON, str(_ACCOUNTS_SCRIPT)], stdin=json.dumps(request), timeout=120)

    def _provision(self) -> None:
        shutil.rmtree(self.dc_dir, ignore_errors=True)
        _run(self._provision_command(host=self.host, host_name=_HOST_NAME))
        # a Kerberos client asks for cifs/<what it connected to>: here an address, so the DC answers to that too
        _run(["samba-tool", "spn", "add", f"cifs/{self.host}", f"{_HOST_NAME.upper()}$", "-H", str(self.sam_ldb)])

    def _write_conf(self) -> None:
        dc = self.dc_dir
        (dc / "run").mkdir(exist_ok=True)
        settings = {
            "netbios name": _HOST_NAME.upper(),
            "realm": REALM,
            "workgroup": DOMAIN,
            "server role": "active directory domain controller",
            "server services": "s3fs, rpc, ldap, kdc, winbindd",
            "idmap_ldb:use rfc2307": "yes",
            "private dir": dc / "private",
            "lock directory": dc,
            "state directory": dc / "state",
            "cache directory": dc / "cache",
            "binddns dir": dc / "bind-dns",
            "pid directory": dc / "run",
            "ncalrpc dir": dc / "ncalrpc",
            "interfaces": f"{self.host}/8",
            "bind interfaces only": "yes",
            "smb ports": "445",
            "disable netbios": "yes",
            "ldap server require strong auth": "no",  # simple binds over plain LDAP for the test's LDAP client
            "tls enabled": "no",
            "load printers": "no",
            "printing": "bsd",
            "printcap name": "/dev/null",
            "disable spoolss": "yes",
            "log file": self.workdir / "log.%m",
            "log level": "1 auth_audit:5",  # 3: each authentication, 5: each authorization (Kerberos sessions)
        }
        share = {"path": self.share_path, "read only": "no", "vfs objects": "dfs_samba4 acl_xattr"}
        lines = ["# written by permwatch's SambaADFileServer test fixture", "[global]"]
        lines += [f"\t{key} = {value}" for key, value in settings.items()]
        lines += [f"[{SHARE}]"] + [f"\t{key} = {value}" for key, value in share.items()]
        self.smb_conf.write_text("\n".join(lines) + "\n", encoding="utf-8")

    def _write_krb5_conf(self) -> None:
        self.krb5_conf.write_text(
            "[libdefaults]\n"
            f"\tdefault_realm = {REALM}\n"
            "\tdns_lookup_kdc = false\n"
            "\tdns_lookup_realm = false\n"
            "\trdns = false\n"
            "\tdns_canonicalize_hostname = false\n"
            "[realms]\n"
            f"\t{REALM} = {{\n\t\tkdc = {self.host}\n\t}}\n",
            encoding="utf-8",
        )

    def _ready(self) -> bool:
        if not (port_accepts(self.host, 389) and port_accepts(self.host, 88) and port_accepts(self.host, 445)):
            return False
        self._binds_and_finds_base()
        # a login maps the token's SIDs to Unix ids through winbindd: ready only once that answers too
        result = subprocess.run(
            ["smbclient", self.unc, "-U", self.credentials("Administrator", self.password), "-c", "ls"],
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
        )
        if result.returncode != 0:
            raise SambaADFileServerError(f"SMB login as Administrator: {(result.stdout + result.stderr)[-300:]}")
        return True

    def _delete_share(self) -> None:
        if self._share_path is not None:
            shutil.rmtree(self._share_path, ignore_errors=True)
            self._share_path = None


def _kill_detached(smb_conf: Path) -> None:
    """Kill what smbd started for this server and that left its process group (samba-dcerpcd and its rpcd_*
    workers daemonize), found by the configuration file on their command line."""
    marker = f"--configfile={smb_conf}".encode()
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            if marker in (proc / "cmdline").read_bytes():
                os.kill(int(proc.name), signal.SIGKILL)
        except (OSError, ProcessLookupError):
            continue  # gone meanwhile, or not ours to see
