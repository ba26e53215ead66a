"""The syslog sink: one RFC 5424 message per exposure event over TCP (RFC 6587 octet counting), optionally TLS.

A SIEM reads syslog; so that it parses permwatch without custom rules, the
message (MSG) is either CEF (``format = "cef"``: ArcSight's Common Event
Format, standard extension keys such as ``filePath``, ``suser``, ``act`` and
labelled custom strings) or one JSON object with Elastic Common Schema field
names (``format = "ecs"``: ``event.kind``, ``event.action``, ``file.path``,
``group.name``, ``user.name``…). Both say the exposure's kind, ``contents`` or
``names`` (names only: outsiders can list the folder, read no file; CEF ``cs5``
labelled ``exposureKind``, ECS ``permwatch.exposure.kind``), and the summary
words a names-only one "listable (names only, no file readable)". Each event of a burst is its own message and
carries the burst id (CEF ``cs3``, ECS ``permwatch.burst.id``, and the
structured data element ``permwatch@32473``), so the SIEM correlates a burst
itself: per event on purpose, since SIEM rules query records per folder (README,
"Syslog sends one message per exposure event"). ``messages = "burst"`` sends
one message per update of a burst instead (MSGID ``BURST_OPENED``,
``BURST_UPDATED``, ``BURST_RESOLVED``): the e-mail's headline and counts, the
top folders, the burst's labels, readers and kind, and how many of the
update's events opened, changed and closed an exposure (every event counted: an
opening and a later change of it in one update are one of each); for a SIEM that should see a 5,000-folder
``setfacl -R`` as one record. The header's PRI says the label's severity (critical → crit, high →
err, medium → warning, low → notice; a close is info), the timestamp is when
the event was observed, MSGID says opened / changed / closed. MSG is plain
UTF-8 without a BOM (RFC 5424's MSG-ANY): CEF and JSON parsers expect none.

Only what the other sinks show leaves the host: the folder, the label, the
reading groups, counts, the actor (unless ``actor = "omit"``), sample paths
(hidden below the labelled folder with ``hide_below_label``); never the list of
people who can read.

``send`` keeps one connection and writes the frames of an update in order, in one write.
TCP syslog has no acknowledgement: a write the kernel took can still be lost
if the receiver dies right then. The sink looks for a connection the receiver
closed before each write (a peer that went away answers EOF), reconnects, and
raises :class:`RetryableSinkError` for refused connections, timeouts and
resets; a certificate the TLS check refuses is a :class:`PermanentSinkError`.
"""

from __future__ import annotations

import hashlib
import json
import logging
import select
import socket
import ssl
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, field_validator

from alerts.base import ActorSinkSettings, PermanentSinkError, RetryableSinkError, SinkContext, SinkSettings
from alerts.digest import GroupDigest, digest, format_duration
from alerts.grouping import GroupUpdate
from alerts.mail_render import headline
from alerts.redaction import shown_paths
from permwatch.events import ExposureEvent, ExposureKind, ExposureStatus, Severity

log = logging.getLogger("permwatch.alerts.syslog")

VENDOR = "permwatch"
PRODUCT = "permwatch"
PRODUCT_VERSION = "0.1.0"
SD_ID = "permwatch@32473"  # 32473: the enterprise number RFC 5612 reserves for examples; no PEN is registered
ECS_VERSION = "8.11.0"

FACILITIES = {
    "kern": 0, "user": 1, "mail": 2, "daemon": 3, "auth": 4, "syslog": 5, "lpr": 6, "news": 7,
    "uucp": 8, "cron": 9, "authpriv": 10, "ftp": 11,
    "local0": 16, "local1": 17, "local2": 18, "local3": 19, "local4": 20, "local5": 21, "local6": 22, "local7": 23,
}  # fmt: skip
# RFC 5424 severities: 2 crit, 3 err, 4 warning, 5 notice, 6 informational
_SYSLOG_SEVERITY = {Severity.CRITICAL: 2, Severity.HIGH: 3, Severity.MEDIUM: 4, Severity.LOW: 5}
_CLOSED_SEVERITY = 6
# CEF severity 0-10 (Low 0-3, Medium 4-6, High 7-8, Very-High 9-10)
_CEF_SEVERITY = {Severity.CRITICAL: 10, Severity.HIGH: 8, Severity.MEDIUM: 5, Severity.LOW: 3}
_ECS_SEVERITY = {Severity.CRITICAL: 99, Severity.HIGH: 73, Severity.MEDIUM: 47, Severity.LOW: 21}
_MSGID = {
    ExposureStatus.OPENED: "EXPOSURE_OPENED",
    ExposureStatus.CHANGED: "EXPOSURE_CHANGED",
    ExposureStatus.CLOSED: "EXPOSURE_CLOSED",
}
_ACTION = {
    ExposureStatus.OPENED: "exposure-opened",
    ExposureStatus.CHANGED: "exposure-changed",
    ExposureStatus.CLOSED: "exposure-closed",
}
_COUNTED = (ExposureStatus.OPENED, ExposureStatus.CHANGED, ExposureStatus.CLOSED)
SAMPLE_PATHS = 3
TOP_FOLDERS = 10
MAX_GROUPS = 20


class SyslogConfig(ActorSinkSettings):
    kind: str = "syslog"
    host: str = Field(min_length=1)
    port: int = Field(default=6514, ge=1, le=65535, description="6514 is syslog over TLS (RFC 5425); 601 plain TCP")
    tls: bool = True
    ca_file: Path | None = Field(default=None, description="CA bundle for the receiver's certificate; default: system")
    check_hostname: bool = True
    format: Literal["cef", "ecs"] = "ecs"
    messages: Literal["event", "burst"] = Field(
        default="event", description='"event": one message per exposure event; "burst": one per update of a burst'
    )
    facility: str = Field(default="authpriv", description="syslog facility name: authpriv, local0…local7, …")
    hostname: str | None = Field(default=None, description="HOSTNAME in the header; default: this host's name")
    app_name: str = Field(default="permwatch", min_length=1, max_length=48)
    timeout_seconds: float = Field(default=10.0, gt=0)

    @field_validator("facility")
    @classmethod
    def _known_facility(cls, name: str) -> str:
        if name not in FACILITIES:
            raise ValueError(f"unknown facility {name!r}; one of {', '.join(FACILITIES)}")
        return name


class SyslogSink:
    def __init__(self, config: SyslogConfig, context: SinkContext | None = None) -> None:
        self.name = config.name or "syslog"
        self.settings: SinkSettings = config
        self.resend_seconds: float | None = None
        self.config = config
        self.hostname = _header_token(config.hostname or socket.gethostname(), 255)
        self._socket: socket.socket | None = None

    def __repr__(self) -> str:
        return f"SyslogSink(name={self.name!r})"

    def render(self, update: GroupUpdate) -> list[str]:
        """One RFC 5424 message (without its octet-count frame) per new event of the update, or with ``messages =
        "burst"`` one for the whole update."""
        if self.config.messages == "burst":
            return [self.burst_message(update)]
        readers = {m.exposure_id: m.open_groups for m in update.group.members}
        return [
            self.message(event, update.group.group_id, readers.get(event.exposure_id, event.groups))
            for event in update.events
        ]

    def message(self, event: ExposureEvent, burst_id: str, groups: tuple[str, ...]) -> str:
        """``groups``: who can read, or for a close who could (a close event itself names nobody)."""
        closed = event.status is ExposureStatus.CLOSED
        severity = _CLOSED_SEVERITY if closed else _SYSLOG_SEVERITY[event.label.severity]
        pri = FACILITIES[self.config.facility] * 8 + severity
        structured = (
            f'[{SD_ID} burst="{_sd_value(burst_id)}" exposure="{_sd_value(event.exposure_id)}" '
            f'event="{_sd_value(event.event_id)}" label="{_sd_value(event.label.name)}"]'
        )
        groups = event.groups or groups
        render_body = self._cef if self.config.format == "cef" else self._ecs
        body = render_body(event, burst_id, groups)
        header = f"<{pri}>1 {_timestamp(event.observed_at)} {self.hostname} {_header_token(self.config.app_name, 48)}"
        return f"{header} - {_MSGID[event.status]} {structured} {body}"

    def burst_message(self, update: GroupUpdate) -> str:
        """One message for an update of a burst: how the burst stands (the e-mail's headline and counts), what this
        update did, its top folders; MSGID ``BURST_OPENED``, ``BURST_UPDATED`` or ``BURST_RESOLVED``."""
        d = digest(update.group, top=TOP_FOLDERS)
        opened_now = {e.exposure_id for e in update.events if e.status is ExposureStatus.OPENED}
        if not d.is_open:
            phase = "resolved"  # also a burst opened and closed within one update
        else:
            phase = "opened" if all(m.exposure_id in opened_now for m in update.group.members) else "updated"
        severity = _SYSLOG_SEVERITY[d.severity] if d.is_open else _CLOSED_SEVERITY
        pri = FACILITIES[self.config.facility] * 8 + severity
        at = max((e.observed_at for e in update.events), default=d.opened_at)
        update_id = hashlib.sha256("\n".join(e.event_id for e in update.events).encode()).hexdigest()[:16]
        structured = (
            f'[{SD_ID} burst="{_sd_value(d.group_id)}" update="{update_id}" events="{len(update.events)}" '
            f'label="{_sd_value(d.labels[0])}"]'
        )
        # every event of the update counted (an opening and a later change of it in one update are both news)
        counts = [sum(1 for e in update.events if e.status is status) for status in _COUNTED]
        news = ", ".join(f"{n:,} {word}" for n, word in zip(counts, ("opened", "changed", "closed"), strict=True) if n)
        summary = headline(d) + (f"; this update: {news}" if news else "")
        facts = _BurstFacts(d, at, phase, update_id, summary, counts, self.config.names_actor)
        body = facts.cef() if self.config.format == "cef" else facts.ecs()
        header = f"<{pri}>1 {_timestamp(at)} {self.hostname} {_header_token(self.config.app_name, 48)}"
        return f"{header} - BURST_{phase.upper()} {structured} {body}"

    def _paths(self, event: ExposureEvent) -> list[str]:
        return list(shown_paths(event.folder, event.sample_paths, hide=self.config.hide_below_label))[:SAMPLE_PATHS]

    def _cef(self, event: ExposureEvent, burst_id: str, groups: tuple[str, ...]) -> str:
        names_only = event.kind is ExposureKind.NAMES and event.status is not ExposureStatus.CLOSED
        name = {
            ExposureStatus.OPENED: "Restricted folder "
            + ("listable (names only)" if names_only else "readable")
            + " outside its label",
            ExposureStatus.CHANGED: "Exposed folder readers changed" + (" (names only)" if names_only else ""),
            ExposureStatus.CLOSED: "Exposure closed",
        }[event.status]
        header = "|".join(
            _cef_header(part)
            for part in (
                "CEF:0",
                VENDOR,
                PRODUCT,
                PRODUCT_VERSION,
                _ACTION[event.status],
                name,
                str(_CEF_SEVERITY[event.label.severity]),
            )
        )
        extension: list[tuple[str, str]] = [
            ("rt", str(_millis(event.observed_at))),
            ("act", _ACTION[event.status]),
            ("externalId", event.exposure_id),
            ("filePath", event.folder),
            ("fileType", "directory"),
            ("cs1Label", "label"),
            ("cs1", event.label.name),
            ("cs2Label", "readableByGroups" if event.status is not ExposureStatus.CLOSED else "wasReadableByGroups"),
            ("cs2", ",".join(groups[:MAX_GROUPS])),
            ("cs3Label", "burstId"),
            ("cs3", burst_id),
            ("cs4Label", "samplePaths"),
            ("cs4", ",".join(self._paths(event))),
            ("cs5Label", "exposureKind"),
            ("cs5", event.kind.value),
            *((("cs6Label", "preexisting"), ("cs6", "true")) if event.preexisting else ()),  # the first scan's
            ("cn1Label", "peopleOutsideLabel"),
            ("cn1", str(event.people)),
            ("cn2Label", "pathsAffected"),
            ("cn2", str(event.paths_affected)),
            ("start", str(_millis(event.opened_at))),
        ]
        if event.closed_at is not None:
            extension.append(("end", str(_millis(event.closed_at))))
        if event.actor and self.config.names_actor:
            extension.append(("suser", event.actor))
        extension.append(("msg", _summary(event)))
        return header + "|" + " ".join(f"{key}={_cef_value(value)}" for key, value in extension)

    def _ecs(self, event: ExposureEvent, burst_id: str, groups: tuple[str, ...]) -> str:
        document: dict[str, Any] = {
            "@timestamp": _timestamp(event.observed_at),
            "ecs": {"version": ECS_VERSION},
            "message": _summary(event),
            "event": {
                "kind": "alert",
                "category": ["file"],
                "type": ["change"],  # a folder's permissions changed (or changed back, for a close)
                "action": _ACTION[event.status],
                "id": event.event_id,
                "dataset": "permwatch.exposure",
                "module": "permwatch",
                "provider": "permwatch",
                "severity": _ECS_SEVERITY[event.label.severity],
                "start": _timestamp(event.opened_at),
                "reason": f"label {event.label.name} does not allow the groups that can "
                + ("list its names" if event.kind is ExposureKind.NAMES else "read it"),
            },
            "file": {"path": event.folder, "type": "dir"},
            "group": {"name": list(groups[:MAX_GROUPS])},
            "rule": {"name": f"label {event.label.name}"},
            "observer": {"vendor": VENDOR, "product": PRODUCT, "version": PRODUCT_VERSION, "type": "monitor"},
            "permwatch": {
                "exposure": {
                    "id": event.exposure_id,
                    "status": event.status.value,
                    "kind": event.kind.value,
                    "people": event.people,
                    "paths_affected": event.paths_affected,
                    "sample_paths": self._paths(event),
                },
                "label": {"name": event.label.name, "severity": event.label.severity.value},
                "burst": {"id": burst_id},
            },
        }
        if event.preexisting:  # found by the first scan, not a change: said beside the kind
            document["permwatch"]["exposure"]["preexisting"] = True
        if event.closed_at is not None:
            document["event"]["end"] = _timestamp(event.closed_at)
        if event.duration_seconds is not None:
            document["event"]["duration"] = round(event.duration_seconds * 1e9)  # ECS: nanoseconds
        if event.actor and self.config.names_actor:
            document["user"] = {"name": event.actor}
        return json.dumps(document, separators=(",", ":"), ensure_ascii=False)

    # ------------------------------------------------------------ sending

    def send(self, payload: list[str]) -> None:
        frames = []
        for text in payload:
            data = text.encode("utf-8")
            frames.append(str(len(data)).encode("ascii") + b" " + data)
        if frames:
            self._write(b"".join(frames))  # one write for a burst of thousands, not one per message

    def close(self) -> None:
        if self._socket is not None:
            try:
                self._socket.close()
            finally:
                self._socket = None

    def _write(self, frame: bytes) -> None:
        where = f"{self.config.host}:{self.config.port}"
        try:
            sock = self._connected()
            sock.sendall(frame)
        except ssl.SSLCertVerificationError as exc:
            self.close()
            raise PermanentSinkError(f"syslog {where}: TLS certificate refused: {exc.verify_message}") from None
        except (OSError, ssl.SSLError) as exc:  # refused, reset, timed out, TLS alert: the receiver may be back
            self.close()
            raise RetryableSinkError(f"syslog {where}: {type(exc).__name__}: {str(exc)[:200]}") from None

    def _connected(self) -> socket.socket:
        sock = self._socket
        if sock is not None and _peer_gone(sock):
            log.info("sink %s: the receiver closed the connection; reconnecting", self.name)
            self.close()
            sock = None
        if sock is None:
            config = self.config
            raw = socket.create_connection((config.host, config.port), timeout=config.timeout_seconds)
            if config.tls:
                context = ssl.create_default_context(cafile=str(config.ca_file) if config.ca_file else None)
                context.check_hostname = config.check_hostname
                try:
                    sock = context.wrap_socket(raw, server_hostname=config.host)
                except BaseException:
                    raw.close()
                    raise
            else:
                sock = raw
            self._socket = sock
        return sock


@dataclass(frozen=True)
class _BurstFacts:
    """A burst update's summary as CEF or as ECS JSON (``messages = "burst"``)."""

    d: GroupDigest
    at: datetime
    """when the update's last event was observed"""
    phase: str
    update_id: str
    summary: str
    counts: list[int]
    """events of the update that opened, changed and closed an exposure"""
    names_actor: bool

    @property
    def kind(self) -> str:
        return "names" if self.d.names_only else "mixed" if self.d.names_folders else "contents"

    def cef(self) -> str:
        d = self.d
        name = {
            "opened": "Restricted folders readable outside their label",
            "updated": "Exposed folders changed",
            "resolved": "Exposures closed",
        }[self.phase]
        parts = ("CEF:0", VENDOR, PRODUCT, PRODUCT_VERSION, f"burst-{self.phase}", name, str(_CEF_SEVERITY[d.severity]))
        extension: list[tuple[str, str]] = [
            ("rt", str(_millis(self.at))),
            ("act", f"burst-{self.phase}"),
            ("externalId", d.group_id),
            ("cs1Label", "label"),
            ("cs1", ",".join(d.labels[:MAX_GROUPS])),
            ("cs2Label", "readableByGroups" if d.is_open else "wasReadableByGroups"),
            ("cs2", ",".join(d.readers[:MAX_GROUPS])),
            ("cs3Label", "burstId"),
            ("cs3", d.group_id),
            ("cs4Label", "topFolders"),
            ("cs4", ",".join(m.latest.folder for m in d.top)),
            ("cs5Label", "exposureKind"),
            ("cs5", self.kind),
            ("cn1Label", "peopleOutsideLabel"),
            ("cn1", str(d.people_max)),
            ("cn2Label", "pathsAffected"),
            ("cn2", str(d.paths_affected)),
            ("cn3Label", "folders"),
            ("cn3", str(d.folders)),
            ("start", str(_millis(d.opened_at))),
        ]
        if d.closed_at is not None:
            extension.append(("end", str(_millis(d.closed_at))))
        if d.actor and self.names_actor:
            extension.append(("suser", d.actor))
        extension.append(("msg", self.summary))
        return "|".join(_cef_header(p) for p in parts) + "|" + " ".join(f"{k}={_cef_value(v)}" for k, v in extension)

    def ecs(self) -> str:
        d = self.d
        opened, changed, closed = self.counts
        can = "list its names" if d.names_only else "read it"
        document: dict[str, Any] = {
            "@timestamp": _timestamp(self.at),
            "ecs": {"version": ECS_VERSION},
            "message": self.summary,
            "event": {
                "kind": "alert",
                "category": ["file"],
                "type": ["change"],
                "action": f"burst-{self.phase}",
                "id": self.update_id,
                "dataset": "permwatch.burst",
                "module": "permwatch",
                "provider": "permwatch",
                "severity": _ECS_SEVERITY[d.severity],
                "start": _timestamp(d.opened_at),
                "reason": f"label {d.labels[0]} does not allow the groups that can {can}",
            },
            "group": {"name": list(d.readers[:MAX_GROUPS])},
            "rule": {"name": f"label {d.labels[0]}"},
            "observer": {"vendor": VENDOR, "product": PRODUCT, "version": PRODUCT_VERSION, "type": "monitor"},
            "permwatch": {
                "burst": {
                    "id": d.group_id,
                    "status": "open" if d.is_open else "resolved",
                    "kind": self.kind,
                    "folders": d.folders,
                    "open_folders": d.open_folders,
                    "people_max": d.people_max,
                    "paths_affected": d.paths_affected,
                    "top_folders": [m.latest.folder for m in d.top],
                    "first_exposure_id": d.first_exposure_id,
                    "update": {"opened": opened, "changed": changed, "closed": closed},
                },
                "label": {"name": d.labels[0], "severity": d.severity.value},
            },
        }
        if d.closed_at is not None:
            document["event"]["end"] = _timestamp(d.closed_at)
            document["event"]["duration"] = round((d.duration_seconds or 0.0) * 1e9)
        if d.actor and self.names_actor:
            document["user"] = {"name": d.actor}
        return json.dumps(document, separators=(",", ":"), ensure_ascii=False)


def _peer_gone(sock: socket.socket) -> bool:
    """Whether the receiver closed (or reset) the connection. It never sends data, so a readable socket means EOF,
    an error, or TLS housekeeping (a TLS 1.3 session ticket), which a non-blocking read absorbs."""
    try:
        readable, _, _ = select.select([sock], [], [], 0)
    except (OSError, ValueError):
        return True
    if not readable:
        return False
    timeout = sock.gettimeout()
    sock.setblocking(False)
    try:
        data = sock.recv(1) if isinstance(sock, ssl.SSLSocket) else sock.recv(1, socket.MSG_PEEK)
        return not data
    except (ssl.SSLWantReadError, ssl.SSLWantWriteError, BlockingIOError):
        return False  # nothing for the application: the connection is alive
    except (OSError, ssl.SSLError):
        return True
    finally:
        sock.settimeout(timeout)


def _summary(event: ExposureEvent) -> str:
    if event.status is ExposureStatus.CLOSED:
        return f"{event.folder} (label {event.label.name}) is restricted again after {_seconds(event)}"
    readers = ", ".join(event.groups[:MAX_GROUPS]) or "users named in the ACL"
    verb = "listable (names only, no file readable)" if event.kind is ExposureKind.NAMES else "readable"
    verb = verb if event.status is ExposureStatus.OPENED else "now " + verb
    first = "First run (pre-existing): " if event.preexisting else ""  # found by the first scan, not a change
    return (
        f"{first}{event.folder} (label {event.label.name}) {verb} by {event.people} people outside the label via "
        f"{readers}"
    )


def _seconds(event: ExposureEvent) -> str:
    return format_duration(event.duration_seconds or 0.0)


def _timestamp(at: datetime) -> str:
    """RFC 5424 / RFC 3339 in UTC with milliseconds: ``2026-11-23T08:00:00.000Z``."""
    return at.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _millis(at: datetime) -> int:
    return round(at.timestamp() * 1000)


def _header_token(text: str, limit: int) -> str:
    """A header field: printable US-ASCII without spaces (RFC 5424 PRINTUSASCII), ``-`` when empty."""
    cleaned = "".join(c if 33 <= ord(c) <= 126 else "_" for c in text)[:limit]
    return cleaned or "-"


def _sd_value(text: str) -> str:
    return text.replace("\\", "\\\\").replace('"', '\\"').replace("]", "\\]")


def _cef_header(text: str) -> str:
    return text.replace("\\", "\\\\").replace("|", "\\|").replace("\r", " ").replace("\n", " ")


def _cef_value(text: str) -> str:
    return text.replace("\\", "\\\\").replace("=", "\\=").replace("\r", "\\r").replace("\n", "\\n")
