"""Sink kinds by name: the explicit list of what ``[[alerts.sinks]] kind = …`` may say."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from pydantic import BaseModel

from alerts.alertmanager import AlertmanagerConfig, AlertmanagerSink
from alerts.base import Sink, SinkContext
from alerts.console import ConsoleConfig, ConsoleSink
from alerts.jsonl import JsonlConfig, JsonlSink
from alerts.mail import EmailConfig, EmailSink
from alerts.slack import SlackConfig, SlackSink
from alerts.syslog import SyslogConfig, SyslogSink
from alerts.teams import TeamsConfig, TeamsSink
from alerts.webhook import WebhookConfig, WebhookSink

SINKS: dict[str, tuple[type[BaseModel], Callable[[Any, SinkContext], Sink]]] = {
    "alertmanager": (AlertmanagerConfig, AlertmanagerSink),
    "console": (ConsoleConfig, ConsoleSink),
    "email": (EmailConfig, EmailSink),
    "jsonl": (JsonlConfig, JsonlSink),
    "slack": (SlackConfig, SlackSink),
    "syslog": (SyslogConfig, SyslogSink),
    "teams": (TeamsConfig, TeamsSink),
    "webhook": (WebhookConfig, WebhookSink),
}


def build_sink(settings: dict[str, Any], context: SinkContext | None = None) -> Sink:
    """Validate one sink's settings with its own model and build it (raises pydantic's ValidationError or KeyError).

    ``context`` hands the sink the alert state file and the clock; without one
    (config validation) a sink gets a throw-away in-memory state.
    """
    config_model, factory = SINKS[settings["kind"]]
    return factory(config_model.model_validate(settings), context or SinkContext())
