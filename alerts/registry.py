"""Sink kinds by name: the explicit list of what ``[[alerts.sinks]] kind = …`` may say."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from pydantic import BaseModel

from alerts.base import Sink
from alerts.console import ConsoleConfig, ConsoleSink
from alerts.jsonl import JsonlConfig, JsonlSink

SINKS: dict[str, tuple[type[BaseModel], Callable[[Any], Sink]]] = {
    "console": (ConsoleConfig, ConsoleSink),
    "jsonl": (JsonlConfig, JsonlSink),
}


def build_sink(settings: dict[str, Any]) -> Sink:
    """Validate one sink's settings with its own model and build it (raises pydantic's ValidationError or KeyError)."""
    config_model, factory = SINKS[settings["kind"]]
    return factory(config_model.model_validate(settings))
