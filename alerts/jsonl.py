"""The JSONL sink: one JSON object per exposure event, with its burst's ``group_id``, appended and fsynced, once.

Each line is the exposure event as it is on the bus (paths hidden below the
labelled folder when ``hide_below_label`` is set) plus ``group_id``, so a
reader can count bursts. A group update's lines are written in one append.

The dispatcher marks events delivered only after :meth:`JsonlSink.send`
returns, so a crash between the two would bring the same events again and a
plain append would repeat their lines. Before appending, the sink records
where in the file the append goes (in the alert state file,
:class:`alerts.store.FileAppends`) and forgets it on the next send, by which
time the dispatcher has marked it. After a crash, the appends still recorded
(each no longer than what it wrote) are the only places where lines of
unmarked events can be: the sink reads just those bytes and leaves out every
event whose ``event_id`` it finds there, whatever else the re-delivered update
holds. A file written before appends were recorded gets its tail, as long as
the payload plus a margin, searched the same way once.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from alerts.base import RetryableSinkError, SinkContext, SinkSettings
from alerts.grouping import GroupUpdate
from alerts.redaction import shown_paths
from alerts.store import FileAppend, FileAppends, open_state_db

# How far beyond the payload's own size an unrecorded tail is searched: room for the cut-off lines to have been
# rendered longer than now (another hide_below_label) while reading no more than a few pages.
_TAIL_MARGIN = 64 * 1024


class JsonlConfig(SinkSettings):
    kind: str = "jsonl"
    path: Path


@dataclass
class _Unconfirmed:
    """A stretch of the file that may hold lines the delivery log has not marked."""

    append: FileAppend
    recorded: bool
    """In the state file (else a guess at the tail of a file from before appends were recorded)."""
    event_ids: set[str] | None = None
    """The ids of its lines not yet marked delivered; None until read."""


class JsonlSink:
    def __init__(self, config: JsonlConfig, context: SinkContext | None = None) -> None:
        self.name = config.name or "jsonl"
        self.settings: SinkSettings = config
        self.resend_seconds: float | None = None
        self.path = config.path
        self._hide = config.hide_below_label
        database = context.database if context is not None else None
        self._appends = FileAppends(database or open_state_db(":memory:"), self.name, config.path)
        self._unconfirmed: list[_Unconfirmed] | None = None  # loaded at the first send: it needs the file's size
        self._latest: FileAppend | None = None  # this process's last append that went through

    def render(self, update: GroupUpdate) -> list[dict[str, Any]]:
        lines = []
        for event in update.events:
            line: dict[str, Any] = event.model_dump(mode="json")
            line["sample_paths"] = list(shown_paths(event.folder, event.sample_paths, hide=self._hide))
            line["group_id"] = update.group.group_id
            lines.append(line)
        return lines

    def send(self, payload: list[dict[str, Any]]) -> None:
        lines = [(str(line["event_id"]), _encode(line)) for line in payload]
        # The dispatcher calls send again only after marking what the last send took: that append is confirmed.
        confirmed, self._latest = self._latest, None
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            with self.path.open("a+b") as fh:
                fd = fh.fileno()
                size = os.fstat(fd).st_size
                ids = {event_id for event_id, _ in lines}
                there = self._already_there(fd, size, ids, sum(len(text) for _, text in lines))
                data = b"".join(text for event_id, text in lines if event_id not in there)
                if not data:
                    if confirmed is not None:
                        self._appends.forget(confirmed)
                    return
                if size and os.pread(fd, 1, size - 1) != b"\n":
                    data = b"\n" + data  # a line torn by a crash mid-write must not swallow the first new one
                append = FileAppend(size, len(data))
                self._appends.begin(append, replacing=confirmed)
                try:
                    fh.write(data)
                    fh.flush()
                    os.fsync(fd)
                except OSError:
                    # some of it may be in the file: the retry looks there before writing again
                    self._pending().append(_Unconfirmed(append, recorded=True))
                    raise
                self._latest = append
        except OSError as exc:
            raise RetryableSinkError(f"cannot append to {self.path}: {exc.strerror}") from None

    # ------------------------------------------------------------ internals

    def _pending(self) -> list[_Unconfirmed]:
        if self._unconfirmed is None:
            self._unconfirmed = []
        return self._unconfirmed

    def _already_there(self, fd: int, size: int, event_ids: set[str], payload_bytes: int) -> set[str]:
        """Which of ``event_ids`` an unconfirmed stretch of the file already holds (the others are forgotten
        once the delivery log has marked every line of theirs)."""
        if self._unconfirmed is None:
            self._unconfirmed = self._load(size, payload_bytes)
        found: set[str] = set()
        for stretch in list(self._unconfirmed):
            if stretch.event_ids is None:
                stretch.event_ids = _event_ids_in(fd, stretch.append.start, min(stretch.append.end, size))
            stretch.event_ids -= self._appends.delivered_among(sorted(stretch.event_ids))
            if not stretch.event_ids:
                self._unconfirmed.remove(stretch)
                if stretch.recorded:
                    self._appends.forget(stretch.append)
                continue
            found |= event_ids & stretch.event_ids
        return found

    def _load(self, size: int, payload_bytes: int) -> list[_Unconfirmed]:
        recorded = self._appends.unconfirmed()
        stretches = []
        for append in recorded:
            if append.start >= size:  # the file was replaced or truncated since: those lines are not in it
                self._appends.forget(append)
            else:
                stretches.append(_Unconfirmed(append, recorded=True))
        if not recorded and size:
            start = max(0, size - payload_bytes - _TAIL_MARGIN)
            stretches.append(_Unconfirmed(FileAppend(start, size - start), recorded=False))
        return stretches


def _encode(line: dict[str, Any]) -> bytes:
    return (json.dumps(line, sort_keys=True, separators=(",", ":")) + "\n").encode("utf-8")


def _event_ids_in(fd: int, start: int, end: int) -> set[str]:
    """The event ids of the whole lines between ``start`` and ``end``; a cut or torn line is not one."""
    found: set[str] = set()
    if end <= start:
        return found
    for raw in os.pread(fd, end - start, start).split(b"\n"):
        if b'"event_id"' not in raw:
            continue
        try:
            value = json.loads(raw)
        except ValueError:
            continue
        if isinstance(value, dict) and isinstance(value.get("event_id"), str):
            found.add(value["event_id"])
    return found
