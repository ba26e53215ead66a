"""The e-mail sink: one mail thread per burst over SMTP (STARTTLS or implicit TLS, with AUTH), or a digest per label.

``render`` (pure, in :mod:`alerts.mail_render`) makes one :class:`Mail` per
group update: the opening mail, update mails and the resolved mail of a burst,
threaded by Message-ID / In-Reply-To / References derived from the burst id.
``send`` connects, secures the connection (``security = "starttls"``, the
submission port 587, or ``"tls"``, port 465; ``"none"`` only for a relay on
loopback, and never with a password), logs in when ``username`` is set
(password from ``password_env`` or ``password_file``, never in the config, a
log line or an error) and sends it as ``multipart/alternative``.

Delivered once: the Message-ID of every mail sent is recorded in the alert
state file, so an update that comes again after a crash is not mailed again;
were the crash between the server's "250" and that record, the mail sent again
has the same Message-ID, and mail servers and clients drop repeats by it.

Errors: SMTP 4xx answers, refused or dropped connections and timeouts are
retryable; 5xx answers (a refused sender, recipient or login) and a
certificate the TLS check refuses are permanent.

Digest mode (``digest_minutes = N``): at most one mail per N minutes per label
(a burst counts against its most frequent label). A mail that comes sooner is
held in the alert state file and the dispatcher's maintenance mails what is
held, as one digest, once the label's N minutes are over.
"""

from __future__ import annotations

import json
import logging
import smtplib
import sqlite3
import ssl
from collections.abc import Callable
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, field_validator, model_validator

from alerts.base import (
    ActorSinkSettings,
    PermanentSinkError,
    RetryableSinkError,
    SinkContext,
    SinkError,
    SinkSettings,
)
from alerts.grouping import GroupUpdate
from alerts.mail_render import Mail, MailOptions, digest_mail, render_mail, to_mime
from alerts.secrets import check_env_source, read_secret
from alerts.store import open_state_db
from permwatch.events import utcnow

log = logging.getLogger("permwatch.alerts.email")

_SCHEMA = """
CREATE TABLE IF NOT EXISTS mail_sent (
    sink TEXT, message_id TEXT, sent_at TEXT NOT NULL, PRIMARY KEY (sink, message_id)
);
CREATE TABLE IF NOT EXISTS mail_held (
    sink TEXT, digest_key TEXT, message_id TEXT, position INTEGER NOT NULL, mail TEXT NOT NULL,
    PRIMARY KEY (sink, message_id)
);
CREATE TABLE IF NOT EXISTS mail_digest_sent (sink TEXT, digest_key TEXT, sent_at TEXT NOT NULL,
    PRIMARY KEY (sink, digest_key));
"""
_FAILED_FLUSH_BACKOFF = timedelta(seconds=60)
_KEEP_SENT = timedelta(days=30)  # as long as the delivery log keeps closed bursts (the dispatcher's retention)


class EmailConfig(ActorSinkSettings):
    kind: str = "email"
    host: str = Field(min_length=1)
    port: int | None = Field(default=None, ge=1, le=65535, description="default: 587 for starttls, 465 for tls, 25")
    security: Literal["starttls", "tls", "none"] = "starttls"
    username: str | None = None
    password_env: str | None = Field(default=None, description="environment variable holding the SMTP password")
    password_file: Path | None = Field(default=None, description="file holding the SMTP password")
    ca_file: Path | None = Field(default=None, description="CA bundle for the server's certificate; default: system")
    check_hostname: bool = True
    sender: str = Field(min_length=3, description="From: address")
    to: list[str] = Field(min_length=1, description="To: addresses")
    subject_prefix: str = "[permwatch]"
    message_id_domain: str | None = Field(default=None, description="right side of Message-IDs; default: sender's")
    replay_url: str | None = Field(default=None, description="link template, e.g. https://pw/t/{exposure_id}")
    timeout_seconds: float = Field(default=30.0, gt=0)
    digest_minutes: float | None = Field(default=None, gt=0, description="at most one mail per N minutes per label")

    @field_validator("password_env")
    @classmethod
    def _password_env_is_set(cls, name: str | None) -> str | None:
        return check_env_source(name)

    @field_validator("sender", "to")
    @classmethod
    def _addresses(cls, value: str | list[str]) -> str | list[str]:
        for address in [value] if isinstance(value, str) else value:
            if "@" not in address or any(c in address for c in "\r\n"):
                raise ValueError(f"not an e-mail address: {address!r}")
        return value

    @model_validator(mode="after")
    def _login(self) -> EmailConfig:
        sources = (self.password_env is not None) + (self.password_file is not None)
        if self.username is None and sources:
            raise ValueError("password_env/password_file need username")
        if self.username is not None:
            if sources != 1:
                raise ValueError("with username, set exactly one of password_env and password_file")
            if self.security == "none":
                raise ValueError('security = "none" would send the password in clear; use starttls or tls')
            read_secret(self.password_env, self.password_file, what="password")  # names the file or variable
        return self

    @property
    def effective_port(self) -> int:
        return self.port or {"starttls": 587, "tls": 465, "none": 25}[self.security]


class MailState:
    """What the e-mail sink keeps in the alert state file: mails sent, mails held for a digest, digests sent."""

    def __init__(self, conn: sqlite3.Connection, sink: str) -> None:
        self._conn = conn
        self._sink = sink
        conn.executescript(_SCHEMA)

    def was_sent(self, message_id: str) -> bool:
        row = self._conn.execute(
            "SELECT 1 FROM mail_sent WHERE sink = ? AND message_id = ?", [self._sink, message_id]
        ).fetchone()
        return row is not None

    def sent(self, message_id: str, at: datetime) -> None:
        self._conn.execute("INSERT OR IGNORE INTO mail_sent VALUES (?, ?, ?)", [self._sink, message_id, at.isoformat()])

    def prune(self, before: datetime) -> None:
        """Forget the ids of mails sent before ``before`` (a burst that old is not re-delivered)."""
        self._conn.execute("DELETE FROM mail_sent WHERE sink = ? AND sent_at < ?", [self._sink, before.isoformat()])

    def hold(self, mail: Mail) -> None:
        row = self._conn.execute("SELECT COALESCE(MAX(position), 0) + 1 FROM mail_held WHERE sink = ?", [self._sink])
        position = row.fetchone()[0]
        self._conn.execute(
            "INSERT OR IGNORE INTO mail_held VALUES (?, ?, ?, ?, ?)",
            [self._sink, mail.digest_key, mail.message_id, position, json.dumps(_mail_to_json(mail))],
        )

    def held(self) -> dict[str, list[Mail]]:
        rows = self._conn.execute(
            "SELECT digest_key, mail FROM mail_held WHERE sink = ? ORDER BY position", [self._sink]
        ).fetchall()
        held: dict[str, list[Mail]] = {}
        for key, text in rows:
            held.setdefault(key, []).append(_mail_from_json(json.loads(text)))
        return held

    def release(self, key: str, mails: list[Mail], at: datetime) -> None:
        with self._conn:
            self._conn.execute("BEGIN")
            self._conn.executemany(
                "DELETE FROM mail_held WHERE sink = ? AND message_id = ?", [(self._sink, m.message_id) for m in mails]
            )
            self.digest_sent(key, at)

    def last_digest(self, key: str) -> datetime | None:
        row = self._conn.execute(
            "SELECT sent_at FROM mail_digest_sent WHERE sink = ? AND digest_key = ?", [self._sink, key]
        ).fetchone()
        return None if row is None else datetime.fromisoformat(row[0])

    def digest_sent(self, key: str, at: datetime) -> None:
        self._conn.execute(
            "INSERT OR REPLACE INTO mail_digest_sent VALUES (?, ?, ?)", [self._sink, key, at.isoformat()]
        )


class EmailSink:
    def __init__(self, config: EmailConfig, context: SinkContext | None = None) -> None:
        self.name = config.name or "email"
        self.settings: SinkSettings = config
        self.resend_seconds: float | None = None
        self.config = config
        self._password = (
            read_secret(config.password_env, config.password_file, what="password") if config.username else None
        )
        domain = config.message_id_domain or config.sender.rsplit("@", 1)[1].strip(">").strip()
        self.options = MailOptions(
            sender=config.sender,
            to=tuple(config.to),
            domain=domain,
            subject_prefix=config.subject_prefix,
            hide_below_label=config.hide_below_label,
            replay_url=config.replay_url,
            name_actor=config.names_actor,
        )
        database = context.database if context is not None else None
        self._state = MailState(database or open_state_db(":memory:"), self.name)
        self._clock: Callable[[], datetime] = context.clock if context is not None else utcnow
        self._next_flush_try: datetime | None = None
        self._prune_at = self._clock()

    def __repr__(self) -> str:
        return f"EmailSink(name={self.name!r})"

    def render(self, update: GroupUpdate) -> list[Mail]:
        return [render_mail(update, self.options)]

    def send(self, payload: list[Mail]) -> None:
        for mail in payload:
            if self.config.digest_minutes is None:
                self._mail(mail)
            else:
                self._digest(mail)

    def flush_due(self) -> None:
        """Mail what digest mode holds for every label whose N minutes are over (the dispatcher calls this)."""
        if self.config.digest_minutes is None:
            return
        now = self._clock()
        if self._next_flush_try is not None and now < self._next_flush_try:
            return
        for key, mails in self._state.held().items():
            if not self._digest_due(key, now):
                continue
            combined = mails[0] if len(mails) == 1 else digest_mail(mails, key, self.options)
            try:
                self._mail(combined)
            except SinkError:
                self._next_flush_try = now + _FAILED_FLUSH_BACKOFF  # held, not lost: tried again later
                raise
            self._state.release(key, mails, now)
        self._next_flush_try = None

    # ------------------------------------------------------------ internals

    def _digest(self, mail: Mail) -> None:
        now = self._clock()
        if self._state.was_sent(mail.message_id):
            return
        if self._digest_due(mail.digest_key, now) and not self._state.held().get(mail.digest_key):
            self._mail(mail)
            self._state.digest_sent(mail.digest_key, now)
            return
        self._state.hold(mail)  # durable: the dispatcher may mark it delivered
        log.info("sink %s: holding a mail for label %s for the next digest", self.name, mail.digest_key)

    def _digest_due(self, key: str, now: datetime) -> bool:
        last = self._state.last_digest(key)
        minutes = self.config.digest_minutes or 0.0
        return last is None or now - last >= timedelta(minutes=minutes)

    def _mail(self, mail: Mail) -> None:
        if self._state.was_sent(mail.message_id):
            log.info("sink %s: %s was mailed before; not mailing it again", self.name, mail.message_id)
            return
        message = to_mime(mail, self.options)
        where = f"{self.config.host}:{self.config.effective_port}"
        try:
            with self._connect() as smtp:
                refused = smtp.send_message(message)
        except ssl.SSLCertVerificationError as exc:
            raise PermanentSinkError(f"smtp {where}: TLS certificate refused: {exc.verify_message}") from None
        except smtplib.SMTPRecipientsRefused as exc:
            codes = sorted({code for code, _ in exc.recipients.values()})
            error = f"smtp {where}: every recipient refused ({', '.join(map(str, codes))})"
            if all(400 <= code < 500 for code in codes):
                raise RetryableSinkError(error) from None
            raise PermanentSinkError(error) from None
        except smtplib.SMTPResponseException as exc:
            error = f"smtp {where}: {exc.smtp_code} {_text(exc.smtp_error)}"
            if 400 <= exc.smtp_code < 500:
                raise RetryableSinkError(error) from None
            raise PermanentSinkError(error) from None
        except smtplib.SMTPNotSupportedError as exc:
            raise PermanentSinkError(f"smtp {where}: {str(exc)[:200]}") from None
        except (smtplib.SMTPException, OSError, ssl.SSLError) as exc:  # dropped, refused, timed out
            raise RetryableSinkError(f"smtp {where}: {type(exc).__name__}: {str(exc)[:200]}") from None
        if refused:
            log.warning(
                "sink %s: %d of %d recipients refused %s", self.name, len(refused), len(self.config.to), mail.kind
            )
        now = self._clock()
        self._state.sent(mail.message_id, now)
        if now >= self._prune_at:
            self._state.prune(now - _KEEP_SENT)
            self._prune_at = now + timedelta(days=1)

    def _connect(self) -> smtplib.SMTP:
        config = self.config
        context = ssl.create_default_context(cafile=str(config.ca_file) if config.ca_file else None)
        context.check_hostname = config.check_hostname
        port = config.effective_port
        smtp: smtplib.SMTP
        if config.security == "tls":
            smtp = smtplib.SMTP_SSL(config.host, port, timeout=config.timeout_seconds, context=context)
        else:
            smtp = smtplib.SMTP(config.host, port, timeout=config.timeout_seconds)
        try:
            smtp.ehlo()
            if config.security == "starttls":
                smtp.starttls(context=context)  # raises SMTPNotSupportedError if the server does not offer it
                smtp.ehlo()
            if config.username is not None and self._password is not None:
                smtp.login(config.username, self._password)
        except BaseException:
            smtp.close()
            raise
        return smtp


def _text(error: bytes | str) -> str:
    text = error.decode("utf-8", "replace") if isinstance(error, bytes) else error
    return text.replace("\r", " ").replace("\n", " ")[:200]


def _mail_to_json(mail: Mail) -> dict[str, Any]:
    return {
        "kind": mail.kind,
        "group_id": mail.group_id,
        "message_id": mail.message_id,
        "in_reply_to": mail.in_reply_to,
        "subject": mail.subject,
        "date": mail.date.isoformat(),
        "text": mail.text,
        "html": mail.html,
        "digest_key": mail.digest_key,
    }


def _mail_from_json(data: dict[str, Any]) -> Mail:
    return Mail(
        data["kind"],
        data["group_id"],
        data["message_id"],
        data["in_reply_to"],
        data["subject"],
        datetime.fromisoformat(data["date"]),
        data["text"],
        data["html"],
        data["digest_key"],
    )
