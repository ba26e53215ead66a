"""The JSONL sink: one JSON object per exposure event, appended to a file and fsynced."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict

from alerts.base import RetryableSinkError
from permwatch.events import ExposureEvent


class JsonlConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")
    kind: str = "jsonl"
    name: str | None = None
    path: Path


class JsonlSink:
    def __init__(self, config: JsonlConfig) -> None:
        self.name = config.name or "jsonl"
        self.path = config.path

    def render(self, exposure: ExposureEvent) -> dict[str, Any]:
        payload: dict[str, Any] = exposure.model_dump(mode="json")
        return payload

    def send(self, payload: dict[str, Any]) -> None:
        line = json.dumps(payload, sort_keys=True, separators=(",", ":")) + "\n"
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            with self.path.open("a", encoding="utf-8") as fh:
                fh.write(line)
                fh.flush()
                os.fsync(fh.fileno())
        except OSError as exc:
            raise RetryableSinkError(f"cannot append to {self.path}: {exc.strerror}") from None
