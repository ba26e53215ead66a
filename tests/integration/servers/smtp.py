"""A real SMTP server for tests: aiosmtpd on free loopback ports, with STARTTLS, implicit TLS and AUTH.

`SmtpServer` starts two aiosmtpd controllers sharing one mailbox: a submission
port that requires STARTTLS before anything else and AUTH (only over TLS)
before mail, and an implicit-TLS port (SMTPS) that requires AUTH. The TLS
certificate is self-signed and made for the run (``openssl``). Every accepted
message is kept with its envelope and the user that logged in; a test can make
the next DATA answers fail with a given SMTP reply (``451 …`` or ``554 …``) to
see the client retry or give up. ``stop()`` (or leaving the ``with`` block)
closes both listeners however the test ends; the controllers' threads are
daemons, so an aborted run leaves nothing behind.
"""

from __future__ import annotations

import email
import email.policy
import ssl
import threading
import time
from dataclasses import dataclass
from email.message import EmailMessage
from pathlib import Path
from typing import Any

from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP, AuthResult, Envelope, LoginPassword, Session

from tests.integration.servers.certs import TestCertificate, self_signed
from tests.integration.servers.process import free_loopback_ports
from tests.integration.servers.started import StartedInWith

HOST = "127.0.0.1"


@dataclass(frozen=True)
class ReceivedMail:
    mail_from: str
    rcpt_tos: tuple[str, ...]
    user: str | None
    raw: bytes
    received_at: float = 0.0
    """``time.monotonic()`` when the server accepted it"""

    @property
    def message(self) -> EmailMessage:
        parsed = email.message_from_bytes(self.raw, policy=email.policy.default)
        assert isinstance(parsed, EmailMessage)
        return parsed


class _Mailbox:
    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.mails: list[ReceivedMail] = []
        self.failures: list[str] = []
        self.data_attempts = 0
        self.logins: list[tuple[str, bool]] = []


class _Handler:
    def __init__(self, mailbox: _Mailbox) -> None:
        self.mailbox = mailbox

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        mailbox = self.mailbox
        with mailbox.lock:
            mailbox.data_attempts += 1
            if mailbox.failures:
                return mailbox.failures.pop(0)
            user = session.auth_data.login.decode() if isinstance(session.auth_data, LoginPassword) else None
            raw = envelope.original_content or b""
            received = ReceivedMail(str(envelope.mail_from), tuple(envelope.rcpt_tos), user, raw, time.monotonic())
            mailbox.mails.append(received)
        return "250 2.0.0 OK: queued"


class _Authenticator:
    def __init__(self, mailbox: _Mailbox, username: str, password: str) -> None:
        self.mailbox = mailbox
        self.username = username.encode()
        self.password = password.encode()

    def __call__(self, server: SMTP, session: Session, envelope: Envelope, mechanism: str, data: Any) -> AuthResult:
        ok = isinstance(data, LoginPassword) and data.login == self.username and data.password == self.password
        with self.mailbox.lock:
            self.mailbox.logins.append((mechanism, ok))
        return AuthResult(success=ok, handled=False, auth_data=data if ok else None)


class SmtpServer(StartedInWith):
    def __init__(self, workdir: Path, *, username: str, password: str) -> None:
        self.workdir = Path(workdir).resolve()
        self.username = username
        self._password = password
        self.mailbox = _Mailbox()
        self.certificate: TestCertificate | None = None
        self.starttls_port: int | None = None
        self.tls_port: int | None = None
        self._controllers: list[Controller] = []

    def start(self) -> None:
        if self.certificate is None:
            self.certificate = self_signed(self.workdir / "tls")
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(self.certificate.cert, self.certificate.key)
        if self.starttls_port is None or self.tls_port is None:
            self.starttls_port, self.tls_port = free_loopback_ports(2)
        handler = _Handler(self.mailbox)
        authenticator = _Authenticator(self.mailbox, self.username, self._password)
        common: dict[str, Any] = {"authenticator": authenticator, "auth_required": True, "ident": "permwatch-test"}
        self._controllers = [
            Controller(
                handler, hostname=HOST, port=self.starttls_port, tls_context=context, require_starttls=True,
                auth_require_tls=True, server_hostname="localhost", **common,
            ),
            Controller(
                handler, hostname=HOST, port=self.tls_port, ssl_context=context, auth_require_tls=False,
                server_hostname="localhost", **common,
            ),
        ]  # fmt: skip
        try:
            for controller in self._controllers:
                controller.start()
        except BaseException:
            self.stop()
            raise

    def stop(self) -> None:
        controllers, self._controllers = self._controllers, []
        for controller in controllers:
            if controller._thread is not None:
                controller.stop()

    def fail_data(self, reply: str, times: int = 1) -> None:
        """Answer the next ``times`` DATA commands with ``reply`` (e.g. ``451 4.3.0 try later``)."""
        with self.mailbox.lock:
            self.mailbox.failures += [reply] * times

    def mails(self) -> list[ReceivedMail]:
        with self.mailbox.lock:
            return list(self.mailbox.mails)

    def wait_for(self, count: int, timeout: float = 60.0) -> list[ReceivedMail]:
        deadline = time.monotonic() + timeout
        while True:
            mails = self.mails()
            if len(mails) >= count:
                return mails
            if time.monotonic() > deadline:
                raise AssertionError(f"the SMTP server received {len(mails)} of {count} mails")
            time.sleep(0.05)
