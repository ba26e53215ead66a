"""Run a real OpenLDAP ``slapd`` (Debian's package) for tests, with its own slapd.conf.

Not the Debian service and not cn=config: `Slapd` writes a slapd.conf into a
work dir — an mdb database for ``dc=example,dc=org`` with the memberof,
refint, ppolicy and accesslog overlays (``logops writes``, ``logsuccess
TRUE``, ``logoldattr member``), a second mdb database for ``cn=accesslog``,
and ACLs that let a non-root ``it-admin`` write users and groups under
``ou=sites`` and the ``permwatch`` service account read everything — and runs
``slapd -d 0`` in the foreground, in its own process group, dying with the
test process (parent-death signal) and killed at interpreter exit. It
listens on a free loopback port for plain LDAP and StartTLS and, when
openssl could make a throwaway CA and certificate, on a second one for
LDAPS (``ldaps_uri``), with the same certificate. Passwords are random per
instance. Each test loads its own site (``add_site``) from
``tests/integration/fixtures/ldap/site.ldif`` under
``ou=<name>,ou=sites,dc=example,dc=org``, so tests share one server without
seeing each other's entries. ``stop()`` + ``start()`` keeps ports and data,
for outage tests. ``slow_seconds`` makes every operation on the data wait
that long first (the retcode overlay), for a time limit to be met. Two
settings make the server of a plain install for the tests that need one: ``reader_limits`` (default ``size=unlimited
time=unlimited``; ``None`` leaves the permwatch account at slapd's default
500-entry size limit) and ``refint`` (False: no refint overlay, as in
Debian's default slapd); both are written into slapd.conf on every start, so
a test may change them between ``stop()`` and ``start()``. ``modify_offline``
runs ``slapmodify`` against the stopped server's data, a change no
accesslog records.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import shutil
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

from ldap3 import LEVEL, SIMPLE, Connection, Server
from ldap3.core.exceptions import LDAPException

from tests.integration.servers.process import ServerProcess, free_loopback_ports, log_tail, port_accepts
from tests.integration.servers.started import StartedInWith

SUFFIX = "dc=example,dc=org"
ROOT_DN = f"cn=admin,{SUFFIX}"
IT_ADMIN_DN = f"uid=it-admin,ou=admins,{SUFFIX}"
READER_DN = f"cn=permwatch,ou=admins,{SUFFIX}"
SITES = f"ou=sites,{SUFFIX}"
ACCESSLOG = "cn=accesslog"

_HOST = "127.0.0.1"
_FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "ldap"
_SCHEMA_DIRS = (Path("/etc/ldap/schema"), Path("/etc/openldap/schema"))
_MODULE_DIRS = (Path("/usr/lib/ldap"), Path("/usr/lib64/openldap"), Path("/usr/lib/openldap"))


class SlapdError(RuntimeError):
    """slapd is not installed, would not start, or refused a fixture."""


def slapd_binary() -> str | None:
    found = shutil.which("slapd")
    if found:
        return found
    return "/usr/sbin/slapd" if os.access("/usr/sbin/slapd", os.X_OK) else None


def _first_dir(candidates: tuple[Path, ...], marker: str) -> Path:
    for path in candidates:
        if (path / marker).exists():
            return path
    raise SlapdError(f"no {marker} in any of {', '.join(map(str, candidates))}: is slapd installed?")


@dataclass(frozen=True)
class LdapSite:
    """One test's part of the tree: ``base`` with ``people`` and ``groups`` under it."""

    name: str
    base: str

    @property
    def people(self) -> str:
        return f"ou=people,{self.base}"

    @property
    def groups(self) -> str:
        return f"ou=groups,{self.base}"

    def user(self, uid: str) -> str:
        return f"uid={uid},{self.people}"

    def group(self, cn: str) -> str:
        return f"cn={cn},{self.groups}"


class Slapd(StartedInWith):
    """One slapd on 127.0.0.1; port, data and passwords are kept across ``stop()``/``start()``."""

    def __init__(
        self,
        workdir: Path,
        *,
        start_timeout: float = 15.0,
        reader_limits: str | None = "size=unlimited time=unlimited",
        refint: bool = True,
        slow_seconds: int = 0,
    ) -> None:
        self.workdir = Path(workdir).resolve()
        self.start_timeout = start_timeout
        self.reader_limits = reader_limits
        self.refint = refint
        self.slow_seconds = slow_seconds
        """Every operation on the data waits this long first (the retcode overlay's ``retcode-sleep``): a search
        then meets a time limit shorter than that, as on a loaded server."""
        self.root_password = secrets.token_urlsafe(16)
        self.it_admin_password = secrets.token_urlsafe(16)
        self.reader_password = secrets.token_urlsafe(16)
        self._port: int | None = None
        self._ldaps_port: int | None = None
        self._server = ServerProcess("slapd", self.log_path, SlapdError)
        self._loaded = False
        self.started_in: float | None = None

    # -- public API -------------------------------------------------------------

    @property
    def port(self) -> int:
        if self._port is None:
            raise SlapdError("slapd has never been started; no port assigned yet")
        return self._port

    @property
    def uri(self) -> str:
        return f"ldap://{_HOST}:{self.port}"

    @property
    def ldaps_uri(self) -> str | None:
        """The LDAPS (TLS from the first byte) listener, with the StartTLS certificate; None without openssl."""
        if self._ldaps_port is None:
            return None
        return f"ldaps://{_HOST}:{self._ldaps_port}"

    @property
    def running(self) -> bool:
        return self._server.running

    @property
    def log_path(self) -> Path:
        return self.workdir / "slapd.out"

    @property
    def ca_file(self) -> Path | None:
        """The CA that signed the server's certificate (for 127.0.0.1, StartTLS and LDAPS), or None without openssl."""
        ca = self.workdir / "tls" / "ca.pem"
        return ca if ca.exists() else None

    @property
    def reader_password_file(self) -> Path:
        """The permwatch service account's password, in a 0600 file (what ``password_file`` points at)."""
        return self.workdir / "reader.password"

    def start(self) -> None:
        """Start slapd and block until the root DN can bind; load the base tree on the first start."""
        if self.running:
            raise SlapdError(f"slapd already running at {self.uri}")
        binary = slapd_binary()
        if binary is None:
            raise SlapdError("slapd not found: apt-get install slapd ldap-utils")
        began = time.monotonic()
        self.workdir.mkdir(parents=True, exist_ok=True)
        for sub in ("data", "accesslog", "run"):
            (self.workdir / sub).mkdir(exist_ok=True)
        if not (self.workdir / "tls").exists():
            self._make_certificates()
        if self._port is None:
            # both at once, so the second cannot be the port just handed out for the first
            ports = free_loopback_ports(2 if self.ca_file is not None else 1, SlapdError)
            self._port = ports[0]
            self._ldaps_port = ports[1] if len(ports) > 1 else None
        self._write_config()
        self._spawn(binary)
        try:
            self._wait_ready()
            if not self._loaded:
                self.reader_password_file.write_text(self.reader_password, encoding="utf-8")
                self.reader_password_file.chmod(0o600)
                self.load_ldif(
                    (_FIXTURES / "base.ldif").read_text(encoding="utf-8"),
                    IT_ADMIN_PASSWORD=self.it_admin_password,
                    READER_PASSWORD=self.reader_password,
                )
                self._loaded = True
        except BaseException:
            self.kill()
            raise
        self.started_in = time.monotonic() - began

    def stop(self, timeout: float = 10.0) -> None:
        """SIGTERM the process group (slapd syncs and exits); SIGKILL it after ``timeout`` s."""
        self._server.stop(timeout)

    def kill(self) -> None:
        self._server.kill()

    def __repr__(self) -> str:
        where = self.uri if self._port is not None else "unstarted"
        return f"Slapd({where}, {'running' if self.running else 'stopped'}, workdir={self.workdir})"

    def connect(self, who: str = "it-admin") -> Connection:
        """A bound ldap3 connection as ``"it-admin"``, ``"reader"`` or ``"root"``; close it with ``unbind()``."""
        dn, password = {
            "it-admin": (IT_ADMIN_DN, self.it_admin_password),
            "reader": (READER_DN, self.reader_password),
            "root": (ROOT_DN, self.root_password),
        }[who]
        server = Server(_HOST, port=self.port, connect_timeout=5)
        connection = Connection(
            server, user=dn, password=password, authentication=SIMPLE, raise_exceptions=True, receive_timeout=10
        )
        try:
            connection.open()
            connection.bind()
        except BaseException:
            with contextlib.suppress(LDAPException, OSError):
                connection.unbind()
            if connection.socket is not None:  # ldap3 leaves it open when connect or bind fails
                connection.socket.close()
            raise
        return connection

    def load_ldif(self, text: str, **substitutions: str) -> None:
        """Add the entries of an LDIF text as the root DN (``@KEY@`` placeholders replaced first)."""
        for key, value in substitutions.items():
            text = text.replace(f"@{key}@", value)
        ldapadd = shutil.which("ldapadd")
        if ldapadd is None:
            raise SlapdError("ldapadd not found: apt-get install ldap-utils")
        secret = self.workdir / "root.password"
        secret.write_text(self.root_password, encoding="utf-8")
        secret.chmod(0o600)
        result = subprocess.run(
            [ldapadd, "-x", "-H", self.uri, "-D", ROOT_DN, "-y", str(secret)],
            input=text.encode(),
            capture_output=True,
            timeout=60,
        )
        if result.returncode != 0:
            raise SlapdError(f"ldapadd failed ({result.returncode}): {result.stderr.decode(errors='replace')}")

    def add_site(self, name: str) -> LdapSite:
        """Load the office fixture (site.ldif) under ``ou=<name>,ou=sites,dc=example,dc=org``."""
        site = LdapSite(name, f"ou={name},{SITES}")
        self.load_ldif((_FIXTURES / "site.ldif").read_text(encoding="utf-8"), SITE=site.base, NAME=name)
        return site

    def modify_offline(self, ldif: str) -> None:
        """Apply an LDIF of changes with ``slapmodify`` while slapd is stopped: a write the accesslog never sees."""
        if self.running:
            raise SlapdError("slapmodify needs slapd stopped")
        slapmodify = shutil.which("slapmodify") or "/usr/sbin/slapmodify"
        changes = self.workdir / "offline.ldif"
        changes.write_text(ldif, encoding="utf-8")
        result = subprocess.run(
            [slapmodify, "-f", str(self.workdir / "slapd.conf"), "-b", SUFFIX, "-l", str(changes)],
            capture_output=True,
            timeout=60,
        )
        if result.returncode != 0:
            raise SlapdError(f"slapmodify failed ({result.returncode}): {result.stderr.decode(errors='replace')}")

    def purge_accesslog(self) -> int:
        """Delete every accesslog entry, as the overlay's ``logpurge`` would once they are old; return how many."""
        connection = self.connect("root")
        try:
            connection.search(ACCESSLOG, "(objectClass=*)", LEVEL, attributes=["1.1"], paged_size=1000)
            dns = [entry["dn"] for entry in connection.response if entry.get("type") == "searchResEntry"]
            for dn in dns:
                connection.delete(dn)
            return len(dns)
        finally:
            connection.unbind()

    # -- internals --------------------------------------------------------------

    def _make_certificates(self) -> None:
        """A throwaway CA and a server certificate for 127.0.0.1, for StartTLS and LDAPS; skipped without openssl."""
        openssl = shutil.which("openssl")
        if openssl is None:
            return
        tls = self.workdir / "tls"
        tls.mkdir()
        ext = tls / "server.ext"
        ext.write_text("subjectAltName=IP:127.0.0.1,DNS:localhost\nextendedKeyUsage=serverAuth\n", encoding="ascii")
        ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes"]
        sign = ["-CA", "ca.pem", "-CAkey", "ca.key", "-CAcreateserial", "-days", "2", "-extfile", str(ext)]
        steps = [
            [openssl, "req", "-x509", *ec, "-keyout", "ca.key", "-out", "ca.pem", "-days", "2", "-subj", "/CN=test CA"],
            [openssl, "req", *ec, "-keyout", "server.key", "-out", "server.csr", "-subj", "/CN=127.0.0.1"],
            [openssl, "x509", "-req", "-in", "server.csr", "-out", "server.pem", *sign],
        ]
        for command in steps:
            result = subprocess.run(command, cwd=tls, capture_output=True, timeout=60)
            if result.returncode != 0:
                raise SlapdError(f"{' '.join(command[:3])} failed: {result.stderr.decode(errors='replace')}")

    def _write_config(self) -> None:
        schema = _first_dir(_SCHEMA_DIRS, "core.schema")
        modules = _first_dir(_MODULE_DIRS, "back_mdb.la")
        data, accesslog, tls = self.workdir / "data", self.workdir / "accesslog", self.workdir / "tls"
        tls_settings = (
            f"TLSCACertificateFile {tls}/ca.pem\nTLSCertificateFile {tls}/server.pem\n"
            f"TLSCertificateKeyFile {tls}/server.key\n"
            if self.ca_file is not None
            else ""
        )
        limits = f'limits dn.exact="{READER_DN}" {self.reader_limits}\n' if self.reader_limits else ""
        refint = (
            f'overlay refint\nrefint_attributes member\nrefint_nothing "cn=nobody,{SUFFIX}"\n' if self.refint else ""
        )
        slow = (
            f'overlay retcode\nretcode-parent "ou=RetCodes,{SUFFIX}"\nretcode-sleep {self.slow_seconds}\n'
            if self.slow_seconds
            else ""
        )
        conf = f"""# Written by tests/integration/servers/slapd.py
include {schema}/core.schema
include {schema}/cosine.schema
include {schema}/nis.schema
include {schema}/inetorgperson.schema
modulepath {modules}
moduleload back_mdb
moduleload accesslog
moduleload memberof
moduleload refint
moduleload ppolicy
{"moduleload retcode" if self.slow_seconds else ""}
pidfile {self.workdir}/run/slapd.pid
argsfile {self.workdir}/run/slapd.args
{tls_settings}
# The change log: one entry per successful write, readable by the permwatch account.
database mdb
suffix "{ACCESSLOG}"
rootdn "{ROOT_DN}"
directory {accesslog}
maxsize 268435456
index reqStart eq
{limits}access to * by dn.exact="{READER_DN}" read by * none

database mdb
suffix "{SUFFIX}"
rootdn "{ROOT_DN}"
rootpw {self.root_password}
directory {data}
maxsize 268435456
index objectClass eq
index uid,cn,member,memberUid eq
{limits}access to attrs=userPassword
    by self write
    by anonymous auth
    by * none
access to dn.subtree="{SITES}"
    by dn.exact="{IT_ADMIN_DN}" write
    by dn.exact="{READER_DN}" read
    by * none
access to *
    by dn.exact="{READER_DN}" read
    by * none

overlay memberof
{refint}overlay ppolicy
overlay accesslog
logdb "{ACCESSLOG}"
logops writes
logsuccess TRUE
logoldattr member
{slow}"""
        (self.workdir / "slapd.conf").write_text(conf, encoding="utf-8")

    def _spawn(self, binary: str) -> None:
        listeners = " ".join(f"{uri}/" for uri in (self.uri, self.ldaps_uri) if uri is not None)
        command = [binary, "-f", str(self.workdir / "slapd.conf"), "-h", listeners, "-d", "0"]
        self._server.spawn(command, cwd=self.workdir)

    def _wait_ready(self) -> None:
        self._server.wait_ready(
            self._root_can_bind,
            timeout=self.start_timeout,
            where=self.uri,
            logs=lambda: log_tail(self.log_path, 40),
            retry_on=(OSError, LDAPException),
            interval=0.02,
        )

    def _root_can_bind(self) -> bool:
        if not port_accepts(_HOST, self.port):
            return False
        if self._ldaps_port is not None and not port_accepts(_HOST, self._ldaps_port):
            return False
        self.connect("root").unbind()
        return True
