"""Run Debian's real ``rsyslogd`` as a syslog receiver for tests: RFC 5424 over TCP, plain and TLS.

`RsyslogServer` writes its own config into a caller-supplied work dir and
starts ``/usr/sbin/rsyslogd -n`` (not a daemon, not the system service, no
``/dev/log``) with two ``imtcp`` inputs on free loopback ports: one plain, one
TLS through the ``gtls`` network stream driver (Debian's ``rsyslog-gnutls``)
with a self-signed certificate made for the run. Everything received goes to
one file, one line per message, as rsyslog *parsed* it (PRI, timestamp,
hostname, app-name, msgid, structured data, msg, separated by ``\\t``), so a
test proves rsyslog read the RFC 5424 header, not only that bytes arrived.
The process runs in its own process group, dies with the thread that started
it and is killed at interpreter exit.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

from tests.integration.servers.certs import TestCertificate, self_signed
from tests.integration.servers.process import ServerProcess, free_loopback_ports, log_tail, port_accepts
from tests.integration.servers.started import StartedInWith

BINARY = Path("/usr/sbin/rsyslogd")
HOST = "127.0.0.1"
FIELDS = ("pri", "timestamp", "hostname", "app_name", "msgid", "structured_data", "msg")


class RsyslogError(RuntimeError):
    """rsyslogd is missing or would not start."""


@dataclass(frozen=True)
class Received:
    """One message as rsyslog parsed it."""

    pri: int
    timestamp: str
    hostname: str
    app_name: str
    msgid: str
    structured_data: str
    msg: str


class RsyslogServer(StartedInWith):
    def __init__(self, workdir: Path, *, start_timeout: float = 30.0) -> None:
        self.workdir = Path(workdir).resolve()
        self.start_timeout = start_timeout
        self.plain_port: int | None = None
        self.tls_port: int | None = None
        self.certificate: TestCertificate | None = None
        self._server = ServerProcess("rsyslogd", self.workdir / "rsyslogd.log", RsyslogError)

    @property
    def received_path(self) -> Path:
        return self.workdir / "received.log"

    def start(self) -> None:
        if not BINARY.exists():
            raise RsyslogError(f"{BINARY} not found: apt-get install -y rsyslog rsyslog-gnutls")
        self.workdir.mkdir(parents=True, exist_ok=True)
        (self.workdir / "spool").mkdir(exist_ok=True)
        if self.certificate is None:
            self.certificate = self_signed(self.workdir / "tls")
        if self.plain_port is None or self.tls_port is None:
            self.plain_port, self.tls_port = free_loopback_ports(2, RsyslogError)
        config = self.workdir / "rsyslog.conf"
        config.write_text(self._config(), encoding="utf-8")
        self._server.spawn(
            [str(BINARY), "-n", "-f", str(config), "-i", str(self.workdir / "rsyslogd.pid")],
            cwd=self.workdir,
        )
        try:
            self._server.wait_ready(
                lambda: self._listening(),
                timeout=self.start_timeout,
                where=f"{HOST}:{self.plain_port}/{self.tls_port}",
                logs=lambda: log_tail(self._server.log_path),
            )
        except BaseException:
            self.stop()
            raise

    def stop(self, timeout: float = 10.0) -> None:
        self._server.stop(timeout)

    def kill(self) -> None:
        self._server.kill()

    def _listening(self) -> bool:
        assert self.plain_port is not None and self.tls_port is not None
        return port_accepts(HOST, self.plain_port) and port_accepts(HOST, self.tls_port)

    def _config(self) -> str:
        cert = self.certificate
        assert cert is not None
        fields = "\\t".join(
            [
                "%pri%",
                "%timereported:::date-rfc3339%",
                "%hostname%",
                "%app-name%",
                "%msgid%",
                "%structured-data%",
                "%msg%",
            ]
        )
        return f"""\
global(
    workDirectory="{self.workdir / "spool"}"
    maxMessageSize="64k"
    defaultNetstreamDriverCAFile="{cert.cert}"
    defaultNetstreamDriverCertFile="{cert.cert}"
    defaultNetstreamDriverKeyFile="{cert.key}"
)
module(load="imtcp" maxSessions="20")
input(type="imtcp" address="{HOST}" port="{self.plain_port}" ruleset="received")
input(type="imtcp" address="{HOST}" port="{self.tls_port}" ruleset="received"
      streamDriver.name="gtls" streamDriver.mode="1" streamDriver.authMode="anon")
template(name="parsed" type="string" string="{fields}\\n")
ruleset(name="received") {{
    action(type="omfile" file="{self.received_path}" template="parsed" flushOnTXEnd="on" asyncWriting="off")
}}
"""

    def received(self) -> list[Received]:
        if not self.received_path.exists():
            return []
        lines = self.received_path.read_text(encoding="utf-8").splitlines()
        out = []
        for line in lines:
            parts = line.split("\t", len(FIELDS) - 1)
            out.append(Received(int(parts[0]), *parts[1:]))
        return out

    def wait_for(self, count: int, timeout: float = 60.0) -> list[Received]:
        deadline = time.monotonic() + timeout
        while True:
            got = self.received()
            if len(got) >= count:
                return got
            if time.monotonic() > deadline:
                raise AssertionError(
                    f"rsyslog received {len(got)} of {count} messages\n{log_tail(self._server.log_path)}"
                )
            time.sleep(0.05)
