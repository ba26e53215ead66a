"""Replay: rebuild state from the recorded event history through the live processor code.

The history (Kafka or the embedded log, read with ``Bus.history``) goes
through the same :class:`processor.engine.Engine` as a live run. Only the
judging points differ: live, the processor judges after each batch it
happens to read; in a replay, records that reached the log within ``gap_ms``
of each other form one batch (by default those of the same millisecond).
Changes made apart from each other therefore give the same exposure windows
live, replayed from Kafka and replayed from the embedded log, while a burst
(a recursive setfacl) is judged in few batches instead of once per path; a
larger ``gap_ms`` replays bursts faster at the price of merging changes that
were that close.

Nothing is published and no sink fires; the caller decides what to do with
the verdicts. A *what-if* replay ignores the recorded labels and labels
folders with another policy instead (``label_for``), to see what would have
alerted.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from permwatch.events import (
    AnyEvent,
    DecodeError,
    FsKind,
    FsPermissionEvent,
    Label,
    LabelAssigned,
    ObjectType,
    decode,
    unbatched,
)
from permwatch.transport.base import Record
from processor.engine import Engine
from processor.exposures import Verdict
from processor.gcpause import gc_paused

DEFAULT_GAP_MS = 0


@dataclass
class ReplayResult:
    engine: Engine
    verdicts: list[Verdict] = field(default_factory=list)
    """Verdicts observed at or after ``since`` (earlier ones only built state)."""
    events: int = 0
    undecodable: int = 0
    seconds: float = 0.0
    observed: list[Any] = field(default_factory=list)
    """What ``keep`` returned for the input events, where not None (e.g. timeline items)."""

    @property
    def events_per_second(self) -> float:
        return self.events / self.seconds if self.seconds > 0 else 0.0


def replay(
    records: Iterable[Record],
    *,
    since: datetime | None = None,
    until: datetime | None = None,
    gap_ms: int = DEFAULT_GAP_MS,
    label_for: Callable[[str], Label | None] | None = None,
    keep: Callable[[AnyEvent], object | None] | None = None,
    progress: Callable[[int], None] | None = None,
    start: Callable[[Callable[[], datetime]], Engine] | None = None,
    new_batch: Callable[[Record], bool] | None = None,
    boundary: Callable[[ReplayResult], None] | None = None,
) -> ReplayResult:
    """Feed ``records`` (oldest first) through a fresh engine; see the module docstring.

    For the workshop's snapshots and index (:mod:`processor.workshop_store`): ``start`` makes the engine
    (from a snapshot) given the replay's log clock; ``new_batch`` says where a batch starts instead of the
    records' times (an indexed subset keeps the full history's batches); ``boundary`` is called between
    batches, with the engine judged and ``result.events`` the records read so far.
    """
    log_time = _LogClock()
    # Detection time in a replay is when the record reached the log, not when the replay ran.
    engine = Engine(source="replay", clock=log_time) if start is None else start(log_time)
    result = ReplayResult(engine)
    what_if = _WhatIfLabels(label_for) if label_for is not None else None
    until_ms = None if until is None else int(until.timestamp() * 1000)
    started = time.perf_counter()

    def judge() -> None:
        for verdict in engine.flush():
            if since is None or verdict.observed_at >= since:
                result.verdicts.append(verdict)

    with gc_paused():  # millions of acyclic objects, many kept (state, timeline events)
        _feed(records, engine, result, until_ms, gap_ms, what_if, keep, progress, log_time, judge, new_batch, boundary)
    if progress is not None:
        progress(result.events)
    result.seconds = time.perf_counter() - started
    return result


def _feed(
    records: Iterable[Record],
    engine: Engine,
    result: ReplayResult,
    until_ms: int | None,
    gap_ms: int,
    what_if: _WhatIfLabels | None,
    keep: Callable[[AnyEvent], object | None] | None,
    progress: Callable[[int], None] | None,
    log_time: _LogClock,
    judge: Callable[[], None],
    new_batch: Callable[[Record], bool] | None = None,
    boundary: Callable[[ReplayResult], None] | None = None,
) -> None:
    batch_last_ms: int | None = None
    for record in records:
        if until_ms is not None and record.timestamp_ms > until_ms:
            break
        if new_batch is not None:
            starts = new_batch(record) and batch_last_ms is not None
        else:
            starts = batch_last_ms is not None and record.timestamp_ms - batch_last_ms > gap_ms
        if starts:
            judge()
            if boundary is not None:
                boundary(result)
        batch_last_ms = record.timestamp_ms
        log_time.ms = record.timestamp_ms
        result.events += 1
        if progress is not None and result.events % 10_000 == 0:
            progress(result.events)
        try:
            event = decode(record.value)
        except DecodeError:
            result.undecodable += 1  # dead-lettered by the live processor already
            continue
        for one in unbatched(event):
            if keep is not None:
                kept = keep(one)
                if kept is not None:
                    result.observed.append(kept)
            if what_if is not None:
                if isinstance(one, LabelAssigned):
                    continue
                for assigned in what_if.labels_for(one):
                    engine.apply(assigned)
            engine.apply(one)
    judge()


class _LogClock:
    def __init__(self) -> None:
        self.ms = 0

    def __call__(self) -> datetime:
        return datetime.fromtimestamp(self.ms / 1000, UTC)


class _WhatIfLabels:
    """Labels directories as they appear in the history, with another policy."""

    def __init__(self, label_for: Callable[[str], Label | None]) -> None:
        self._label_for = label_for
        self._assigned: dict[str, Label] = {}

    def labels_for(self, event: AnyEvent) -> list[LabelAssigned]:
        if not isinstance(event, FsPermissionEvent) or event.object_type is not ObjectType.DIRECTORY:
            return []
        if event.kind is FsKind.DELETED:
            return []
        label = self._label_for(event.path)
        if label is None or self._assigned.get(event.path) == label:
            return []
        self._assigned[event.path] = label
        return [
            LabelAssigned(
                event_id=f"what-if:{event.event_id}",
                path=event.path,
                label=label,
                observed_at=event.observed_at,
                source="what-if",
            )
        ]
