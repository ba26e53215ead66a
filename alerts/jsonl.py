"""The JSONL sink: one JSON object per exposure event, with its burst's ``group_id``, appended and fsynced.

Each line is the exposure event as it is on the bus (paths hidden below the
labelled folder when ``hide_below_label`` is set) plus ``group_id``, so a
reader can count bursts. A group update's lines are written in one append.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from alerts.base import RetryableSinkError, SinkContext, SinkSettings
from alerts.grouping import GroupUpdate
from alerts.redaction import shown_paths


class JsonlConfig(SinkSettings):
    kind: str = "jsonl"
    path: Path


class JsonlSink:
    def __init__(self, config: JsonlConfig, context: SinkContext | None = None) -> None:
        self.name = config.name or "jsonl"
        self.settings: SinkSettings = config
        self.resend_seconds: float | None = None
        self.path = config.path
        self._hide = config.hide_below_label

    def render(self, update: GroupUpdate) -> list[dict[str, Any]]:
        lines = []
        for event in update.events:
            line: dict[str, Any] = event.model_dump(mode="json")
            line["sample_paths"] = list(shown_paths(event.folder, event.sample_paths, hide=self._hide))
            line["group_id"] = update.group.group_id
            lines.append(line)
        return lines

    def send(self, payload: list[dict[str, Any]]) -> None:
        text = "".join(json.dumps(line, sort_keys=True, separators=(",", ":")) + "\n" for line in payload)
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            with self.path.open("a", encoding="utf-8") as fh:
                fh.write(text)
                fh.flush()
                os.fsync(fh.fileno())
        except OSError as exc:
            raise RetryableSinkError(f"cannot append to {self.path}: {exc.strerror}") from None
