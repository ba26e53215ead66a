"""Run a real Samba Active Directory domain controller (LDAP only) for DirSync tests.

`SambaAD` provisions a fresh domain with ``samba-tool domain provision`` (no DNS
backend, RFC 2307 attributes such as ``gidNumber``) into the caller's work dir,
rewrites its ``smb.conf`` to run nothing but the LDAP server on 127.0.0.1 with
simple binds over plain LDAP allowed and TLS off, and runs ``samba -i -M single``
as our own child in its own process group. Samba cannot be told to serve LDAP on
another port: it always takes 127.0.0.1:389 (and the global catalog, 3268), so it
needs root and only one instance can run on a machine at a time; ``start()``
fails with a clear message when those ports are taken. The process dies with the
Python process (parent-death signal) and is killed at interpreter exit.
Measured here (2 cores): provision ~6 s, start ~0.3 s, stop under 0.1 s.
"""

from __future__ import annotations

import shutil
import socket
import subprocess
from collections.abc import Iterable, Mapping
from pathlib import Path

from ldap3.core.exceptions import LDAPException

from tests.integration.servers.process import ServerProcess, log_tail, port_accepts, run_logged
from tests.integration.servers.samba_dc import SambaDC
from tests.integration.servers.started import DestroyedOnExit

DEFAULT_REALM = "EXAMPLE.ORG"
DEFAULT_DOMAIN = "EXAMPLE"
# AD's default policy wants 7+ characters from three character classes.
DEFAULT_ADMIN_PASSWORD = "Permwatch-AD-Secret1"

HOST = "127.0.0.1"
LDAP_PORT = 389
GLOBAL_CATALOG_PORT = 3268
_PORTS = (LDAP_PORT, GLOBAL_CATALOG_PORT)
_DC_HOST_NAME = "pwdc"  # fixed, so provisioning does not depend on the machine's hostname

ENABLED_ACCOUNT = 0x0200 | 0x0020
"""``userAccountControl`` of a normal account that needs no password, so it can be enabled without LDAPS."""


class SambaADError(RuntimeError):
    """The domain could not be provisioned, started or stopped."""


def _port_taken(port: int) -> bool:
    """Whether something listens on, or holds, ``HOST:port`` (TCP)."""
    if port_accepts(HOST, port):
        return True
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # TIME_WAIT leftovers are fine
    try:
        sock.bind((HOST, port))
    except OSError:
        return True
    finally:
        sock.close()
    return False


def _listeners(ports: Iterable[int]) -> str:
    """``ss``'s view of who listens on ``ports``, for error messages."""
    ss = shutil.which("ss")
    if ss is None:
        return "<ss not available>"
    result = subprocess.run([ss, "-ltnp"], capture_output=True, text=True, check=False)
    wanted = tuple(f":{port} " for port in ports)
    lines = [line for line in result.stdout.splitlines() if any(w in line for w in wanted)]
    return "\n".join(lines) or "<no listener shown by ss>"


def _rewrite_global_section(smb_conf: Path, overrides: Mapping[str, str]) -> None:
    """Keep provision's [global] settings, apply ``overrides`` and drop every share.

    ``samba-tool domain provision --option`` silently leaves some settings out of
    the file it writes, so the file is edited afterwards instead.
    """
    settings: dict[str, str] = {}
    in_global = False
    for raw in smb_conf.read_text(encoding="utf-8").splitlines():
        line = raw.strip()
        if not line or line.startswith(("#", ";")):
            continue
        if line.startswith("["):
            in_global = line.lower() == "[global]"
            continue
        if in_global and "=" in line:
            key, value = line.split("=", 1)
            settings[key.strip().lower()] = value.strip()
    settings.update({key.lower(): value for key, value in overrides.items()})
    body = "".join(f"\t{key} = {value}\n" for key, value in settings.items())
    smb_conf.write_text(f"# written by permwatch's SambaAD test fixture\n[global]\n{body}", encoding="utf-8")


def _base_dn(realm: str) -> str:
    return ",".join(f"DC={part}" for part in realm.lower().split("."))


class SambaAD(SambaDC, DestroyedOnExit):
    """One Samba AD DC serving LDAP on 127.0.0.1:389, provisioned on first ``start()``.

    The domain survives ``stop()`` + ``start()``; `destroy` stops the DC and deletes
    the domain. ``start()`` on a running DC does nothing.
    """

    host = HOST
    port = LDAP_PORT
    uri = f"ldap://{HOST}:{LDAP_PORT}"

    def __init__(
        self,
        workdir: Path,
        *,
        realm: str = DEFAULT_REALM,
        domain: str = DEFAULT_DOMAIN,
        admin_password: str = DEFAULT_ADMIN_PASSWORD,
        provision_timeout: float = 300.0,
        start_timeout: float = 120.0,
    ) -> None:
        self.workdir = Path(workdir).resolve()
        self.realm = realm.upper()
        self.domain = domain.upper()
        self.password = admin_password
        self.base_dn = _base_dn(realm)
        self.provision_timeout = provision_timeout
        self.start_timeout = start_timeout
        self._server = ServerProcess("samba", self.log_path, SambaADError)

    # -- public API -------------------------------------------------------------

    @property
    def bind_dn(self) -> str:
        """The domain Administrator's DN, for simple binds."""
        return f"CN=Administrator,CN=Users,{self.base_dn}"

    @property
    def provision_log_path(self) -> Path:
        return self.workdir / "provision.log"

    def start(self) -> None:
        """Provision the domain if needed, start samba and block until LDAP answers.

        Raises `SambaADError` when not root, when 127.0.0.1:389 or :3268 is taken,
        when provisioning fails, or (with the log tail) when samba exits or does
        not answer a bind and a base search within ``start_timeout`` seconds; samba
        is killed in that case.
        """
        if self.running:
            return
        samba = self._samba()
        taken = [port for port in _PORTS if _port_taken(port)]
        if taken:
            raise SambaADError(
                f"{HOST} port(s) {taken} already in use; Samba's AD LDAP server cannot move off "
                f"{LDAP_PORT}/{GLOBAL_CATALOG_PORT}, so only one instance (and no other LDAP server "
                f"on those ports) can run at a time. Listeners:\n{_listeners(taken)}"
            )
        self.workdir.mkdir(parents=True, exist_ok=True)
        if not (self.dc_dir / "private" / "sam.ldb").exists():
            self._provision()
        self._spawn(samba)
        self._ready_or_killed()

    def destroy(self) -> None:
        """Stop the DC and delete the domain; the logs in ``workdir`` stay."""
        self.stop()
        shutil.rmtree(self.dc_dir, ignore_errors=True)

    def __repr__(self) -> str:
        state = "running" if self.running else "stopped"
        return f"SambaAD({self.realm}, {self.uri}, {state}, workdir={self.workdir})"

    # -- internals --------------------------------------------------------------

    def _provision(self) -> None:
        shutil.rmtree(self.dc_dir, ignore_errors=True)  # a half-provisioned leftover
        run_logged(
            self._provision_command(host=HOST, host_name=_DC_HOST_NAME),
            what=f"provisioning {self.realm}",
            log_path=self.provision_log_path,
            timeout=self.provision_timeout,
            error=SambaADError,
            cwd=self.workdir,
        )
        run = self.dc_dir / "run"
        run.mkdir(exist_ok=True)
        _rewrite_global_section(
            self.smb_conf,
            {
                # The LDAP server alone (no smbd, kdc, rpc, winbindd, dns): fewest ports and daemons.
                "server services": "ldap",
                "ldap server require strong auth": "no",  # simple binds over plain LDAP
                "tls enabled": "no",  # no LDAPS (636/3269) listeners
                "interfaces": HOST,
                "bind interfaces only": "yes",
                "pid directory": str(run),
                "ncalrpc dir": str(self.dc_dir / "ncalrpc"),
                "winbindd socket directory": str(self.dc_dir / "winbindd"),
                "log file": str(self.workdir / "log.%m"),
            },
        )

    def _wait_ready(self) -> None:
        self._server.wait_ready(
            self._serves_base_dn,
            timeout=self.start_timeout,
            where=self.uri,
            logs=lambda: f"--- {self.log_path} ---\n{log_tail(self.log_path)}",
            retry_on=(LDAPException, OSError, SambaADError),
        )

    def _serves_base_dn(self) -> bool:
        return port_accepts(HOST, LDAP_PORT) and self._binds_and_finds_base()
