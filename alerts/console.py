"""The console sink: one readable block per exposure event on standard output."""

from __future__ import annotations

import sys
from typing import TextIO

from pydantic import BaseModel, ConfigDict

from permwatch.events import ExposureEvent, ExposureStatus


class ConsoleConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")
    kind: str = "console"
    name: str | None = None


_HEADLINE = {
    ExposureStatus.OPENED: "EXPOSURE OPENED",
    ExposureStatus.CHANGED: "EXPOSURE CHANGED",
    ExposureStatus.CLOSED: "EXPOSURE CLOSED",
}


class ConsoleSink:
    def __init__(self, config: ConsoleConfig, stream: TextIO | None = None) -> None:
        self.name = config.name or "console"
        self._stream = stream

    def render(self, exposure: ExposureEvent) -> str:
        e = exposure
        lines = [f"[{e.label.severity.value.upper()}] {_HEADLINE[e.status]}: {e.folder} (label {e.label.name})"]
        if e.status is ExposureStatus.CLOSED:
            lines.append(f"  closed at {e.closed_at:%Y-%m-%d %H:%M:%S %Z} after {_duration(e.duration_seconds or 0)}")
        else:
            lines.append(
                f"  {e.people} people outside the label can read it; opened {e.opened_at:%Y-%m-%d %H:%M:%S %Z}"
            )
            for grant in e.grants[:5]:
                via = " -> ".join(grant.chain) if grant.chain else (grant.user or "everyone")
                lines.append(f"  - {grant.people} via {grant.entry} ({via})")
            lines.append(
                f"  paths affected: {e.paths_affected}"
                + (f", e.g. {', '.join(e.sample_paths[:3])}" if e.sample_paths else "")
            )
        if e.actor:
            lines.append(f"  changed by: {e.actor}")
        lines.append(f"  exposure id: {e.exposure_id}  (replay: permwatch timeline {e.exposure_id})")
        return "\n".join(lines)

    def send(self, payload: str) -> None:
        stream = self._stream or sys.stdout
        stream.write(payload + "\n")
        stream.flush()


def _duration(seconds: float) -> str:
    seconds = round(seconds)
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    if hours:
        return f"{hours} h {minutes} min"
    if minutes:
        return f"{minutes} min {secs} s"
    return f"{secs} s"
