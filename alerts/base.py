"""The sink protocol, its errors, and the settings every sink shares.

A sink turns a :class:`~alerts.grouping.GroupUpdate` (one burst of exposures
and the events of it that are new) into a payload with a pure
:meth:`Sink.render` (tests compare it exactly) and delivers it with a thin
:meth:`Sink.send`. ``send`` raises :class:`RetryableSinkError` for what may
pass (timeouts, rate limits, 5xx) and :class:`PermanentSinkError` for what
will not; the dispatcher retries the first with backoff and dead-letters the
second. Payloads carry paths, group names and counts, never file contents or
secrets, and error messages never carry a token or a secret URL.

:class:`SinkSettings` is the part of every sink's typed config the dispatcher
reads: which exposures the sink wants (``min_severity``, ``labels``; never one
of names only whose label sets ``alert_on_names = false``, nor a change an
approval covers) and whether paths
below the labelled folder are hidden (``hide_below_label``).
"""

from __future__ import annotations

import fnmatch
import sqlite3
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal, Protocol, runtime_checkable

from pydantic import BaseModel, ConfigDict, Field

from alerts.grouping import GroupUpdate
from permwatch.events import ExposureEvent, ExposureKind, Severity, utcnow

SEVERITY_RANK = {Severity.LOW: 0, Severity.MEDIUM: 1, Severity.HIGH: 2, Severity.CRITICAL: 3}


class SinkError(Exception):
    """Delivery failed."""


class RetryableSinkError(SinkError):
    def __init__(self, message: str, *, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class PermanentSinkError(SinkError):
    pass


class SinkSettings(BaseModel):
    """Keys every ``[[alerts.sinks]]`` table may set, whatever its kind."""

    model_config = ConfigDict(extra="forbid")
    kind: str
    name: str | None = None
    min_severity: Severity = Field(default=Severity.LOW, description="skip exposures of a lower label severity")
    labels: list[str] = Field(default_factory=list, description="label names (fnmatch globs) to alert on; empty: all")
    hide_below_label: bool = Field(default=False, description="show paths below the labelled folder as '…'")

    def accepts(self, exposure: ExposureEvent) -> bool:
        if not exposure.alerting:
            return False  # a change an approval in force covers (the processor marked it: processor/decisions.py)
        if exposure.kind is ExposureKind.NAMES and not exposure.label.alert_on_names:
            return False  # recorded on the topic, not alerted: the label said names alone are not worth an alert
        if SEVERITY_RANK[exposure.label.severity] < SEVERITY_RANK[self.min_severity]:
            return False
        return not self.labels or any(fnmatch.fnmatchcase(exposure.label.name, glob) for glob in self.labels)


class ActorSinkSettings(SinkSettings):
    """The settings of a sink that can say who made a change (#18), with the choice not to (#20).

    ``actor = "omit"`` sends no user name at all (no "Changed by", CEF
    ``suser``, ECS ``user.name``): what leaves the host is then paths, group
    names, counts and ids, for a receiver that must get nothing personal (a
    regional SOC or a SIEM outside the organisation). Who made the change stays
    on the exposure topic and in ``permwatch timeline``.
    """

    actor: Literal["name", "omit"] = Field(
        default="name", description='"name": say who made the change; "omit": send no user name (nothing personal)'
    )

    @property
    def names_actor(self) -> bool:
        return self.actor == "name"


@dataclass(frozen=True)
class SinkContext:
    """What a sink may need from the alerts stage besides its settings.

    ``database`` is the alert state file (the delivery log's SQLite), where a
    sink keeps what must survive a restart (Slack's message ids); ``None``
    means a throw-away in-memory database (config validation, unit tests).
    """

    database: sqlite3.Connection | None = None
    clock: Callable[[], datetime] = utcnow


class Sink(Protocol):
    name: str
    settings: SinkSettings
    resend_seconds: float | None
    """Re-send what is still open this often (``render`` gets a refresh update); None: never."""

    def render(self, update: GroupUpdate) -> Any: ...

    def send(self, payload: Any) -> None: ...


@runtime_checkable
class FlushingSink(Protocol):
    """A sink that holds alerts back (the e-mail digest) and mails them when due: the dispatcher's maintenance
    calls ``flush_due`` often; it raises a :class:`SinkError` when sending failed (what it holds stays held)."""

    def flush_due(self) -> None: ...
