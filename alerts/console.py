"""The console sink: a readable block per exposure event on standard output, a summary for a big burst.

A group update of up to ``MAX_BLOCKS`` events prints one block per event;
a bigger one prints the burst's summary (counts, readers, top folders), so a
5,000-folder ``setfacl -R`` is one screen, not five thousand.
"""

from __future__ import annotations

import sys
from collections import Counter
from typing import TextIO

from alerts.base import SinkContext, SinkSettings
from alerts.digest import FIRST_RUN_NOTE, actor_text, digest, first_names, format_duration, plural
from alerts.grouping import GroupUpdate
from alerts.redaction import shown_paths
from permwatch.events import ExposureEvent, ExposureKind, ExposureStatus

MAX_BLOCKS = 3


class ConsoleConfig(SinkSettings):
    kind: str = "console"


_HEADLINE = {
    ExposureStatus.OPENED: "EXPOSURE OPENED",
    ExposureStatus.CHANGED: "EXPOSURE CHANGED",
    ExposureStatus.CLOSED: "EXPOSURE CLOSED",
}


class ConsoleSink:
    def __init__(self, config: ConsoleConfig, context: SinkContext | None = None, stream: TextIO | None = None) -> None:
        self.name = config.name or "console"
        self.settings: SinkSettings = config
        self.resend_seconds: float | None = None
        self._hide = config.hide_below_label
        self._stream = stream

    def render(self, update: GroupUpdate) -> str:
        if any(e.preexisting for e in update.events) and digest(update.group).first_run:
            return self._burst_block(update)  # what the first scan found: one block pointing to the report
        if len(update.events) <= MAX_BLOCKS:
            return "\n".join(self._event_block(event) for event in update.events)
        return self._burst_block(update)

    def _event_block(self, e: ExposureEvent) -> str:
        lines = [f"[{e.label.severity.value.upper()}] {_HEADLINE[e.status]}: {e.folder} (label {e.label.name})"]
        if e.status is ExposureStatus.CLOSED:
            lines.append(
                f"  closed at {e.closed_at:%Y-%m-%d %H:%M:%S %Z} after {format_duration(e.duration_seconds or 0)}"
            )
        else:
            can = "can read it" if e.kind is ExposureKind.CONTENTS else "can list its names (no file in it readable)"
            lines.append(f"  {e.people} people outside the label {can}; opened {e.opened_at:%Y-%m-%d %H:%M:%S %Z}")
            for grant in e.grants[:5]:
                via = " -> ".join(grant.chain) if grant.chain else (grant.user or "everyone")
                lines.append(f"  - {grant.people} via {grant.entry} ({via})")
            paths = shown_paths(e.folder, e.sample_paths, hide=self._hide)
            lines.append(f"  paths affected: {e.paths_affected}" + (f", e.g. {', '.join(paths[:3])}" if paths else ""))
        changed_by = actor_text(e.actor, e.actor_confidence, e.actor_unresolved)
        if changed_by:
            lines.append(f"  changed by: {changed_by}")
        lines.append(f"  exposure id: {e.exposure_id}  (replay: permwatch timeline {e.exposure_id})")
        return "\n".join(lines)

    def _burst_block(self, update: GroupUpdate) -> str:
        d = digest(update.group)
        counts = Counter(e.status.value for e in update.events)
        what = ", ".join(f"{counts[s.value]:,} {s.value}" for s in ExposureStatus if counts[s.value])
        state = "open" if d.is_open else f"resolved after {format_duration(d.duration_seconds or 0)}"
        head = f"FIRST RUN {d.group_id}: {d.first_run_headline}" if d.first_run and d.is_open else f"BURST {d.group_id}"
        lines = [
            f"[{d.severity.value.upper()}] {head}: {what} ({plural(d.folders, 'folder')} in all, {state})",
            f"  labels: {first_names(d.labels)}; readable by {first_names(d.readers) or 'users named in the ACL'}; "
            f"up to {d.people_max} people per folder",
        ]
        lines += [f"  - {m.latest.folder}" for m in d.top]
        if d.folders > len(d.top):
            lines.append(f"  … and {d.folders - len(d.top):,} more")
        if d.actor_text:
            lines.append(f"  changed by: {d.actor_text}")
        if d.first_run and d.is_open:
            lines.append(f"  {FIRST_RUN_NOTE}")
        lines.append(f"  replay: permwatch timeline {d.first_exposure_id} (first of the burst)")
        return "\n".join(lines)

    def send(self, payload: str) -> None:
        stream = self._stream or sys.stdout
        stream.write(payload + "\n")
        stream.flush()
