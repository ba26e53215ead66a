"""The exposure record: what processors have published, per folder, as a restart must take it.

A processor's memory of what it emitted (each folder's open exposure, its id
and sequence) is rebuilt from input history on a restart, judged in other
batches than the live run judged it, so it can differ from what reached the
``exposures`` topic. The topic is the truth the alerts stage and the
workshop see; :class:`PublishedRecord` reads it once at start: the last
event per folder (a late at-least-once repeat of an event already taken
does not count), every exposure id a folder has had, so a new episode
never takes an id an earlier one used, and which exposures were ever of
contents, so one that narrowed to names still closes as contents.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

from permwatch.events import ExposureEvent, ExposureKind


@dataclass
class PublishedRecord:
    last: dict[str, ExposureEvent] = field(default_factory=dict)
    """folder → the last exposure event published for it"""
    ids: dict[str, set[str]] = field(default_factory=dict)
    """folder → every exposure id published for it"""
    contents: set[str] = field(default_factory=set)
    """exposure ids with an event of kind ``contents``: its close must say so, whatever its last event says"""
    awaiting_scan: set[str] = field(default_factory=set)
    """folders known only from the processor's ledger (the log lost them): judged after a scan of their root"""

    @classmethod
    def of(cls, events: Iterable[ExposureEvent]) -> PublishedRecord:
        record = cls()
        seen: set[str] = set()
        newest: dict[str, int] = {}
        for event in events:
            record.ids.setdefault(event.folder, set()).add(event.exposure_id)
            if event.kind is ExposureKind.CONTENTS:
                record.contents.add(event.exposure_id)
            if event.event_id in seen or event.sequence < newest.get(event.exposure_id, -1):
                continue  # a repeat (at-least-once) of an event already taken, perhaps after a later one
            seen.add(event.event_id)
            newest[event.exposure_id] = event.sequence
            record.last[event.folder] = event
        return record
