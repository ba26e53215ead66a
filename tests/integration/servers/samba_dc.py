"""What the two Samba AD DC fixtures share: `samba_ad` (LDAP only, on 127.0.0.1) and `samba_ad_files` (a DC that
serves files too, on a loopback address of its own).

Both provision a domain with ``samba-tool domain provision`` (no DNS backend, RFC 2307 attributes) into
``<workdir>/dc`` and run ``samba -i -M single`` on its smb.conf as a child in its own process group, logging to
``<workdir>/samba.out``. What each serves, its smb.conf and its readiness check stay in its own module.
"""

from __future__ import annotations

import contextlib
import os
import shutil
from pathlib import Path

from tests.integration.servers.ldap_server import LdapServer


class SambaDC(LdapServer):
    """A Samba AD DC fixture: ``workdir``, ``realm``, ``domain`` and the Administrator's ``password``."""

    workdir: Path
    realm: str
    domain: str

    @property
    def dc_dir(self) -> Path:
        """The provisioned domain: ``etc/smb.conf``, ``private/sam.ldb``, state, pid file."""
        return self.workdir / "dc"

    @property
    def smb_conf(self) -> Path:
        return self.dc_dir / "etc" / "smb.conf"

    @property
    def log_path(self) -> Path:
        """samba's stdout/stderr (``-i`` logs there; appended to across restarts)."""
        return self.workdir / "samba.out"

    def _samba(self, *tools: str) -> str:
        """The ``samba`` to run, once it is clear we are root and it, ``samba-tool`` and ``tools`` are installed
        (else the fixture's error, in one line)."""
        error = self._server.error
        if os.geteuid() != 0:
            raise error(f"{self._server.name} must run as root (it serves LDAP on port 389)")
        samba = shutil.which("samba") or "/usr/sbin/samba"
        missing = [tool for tool in ("samba-tool", *tools) if shutil.which(tool) is None]
        if not os.access(samba, os.X_OK) or missing:
            raise error(f"{' and '.join(['samba', *missing])} not found: scripts/install.sh --test")
        return samba

    def _provision_command(self, *, host: str, host_name: str) -> list[str]:
        return [
            "samba-tool",
            "domain",
            "provision",
            "--server-role=dc",
            "--dns-backend=NONE",
            "--use-rfc2307",
            f"--host-ip={host}",
            f"--host-name={host_name}",
            f"--realm={self.realm}",
            f"--domain={self.domain}",
            f"--adminpass={self.password}",
            f"--targetdir={self.dc_dir}",
        ]

    def _spawn(self, samba: str) -> None:
        # A pid file left by a killed samba would make the next one refuse to start if its pid had been reused.
        with contextlib.suppress(FileNotFoundError):
            (self.dc_dir / "run" / "samba.pid").unlink()
        # SIGKILL samba if the thread that started it dies, so an aborted test run cannot leave a DC behind
        # (parent-death signal, see `process`).
        self._server.spawn([samba, "-i", "-M", "single", "-s", str(self.smb_conf)], cwd=self.workdir)
