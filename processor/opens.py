"""Opens while exposed: which recorded opens of a labelled folder fell inside one of its exposures, and by whom.

The collector records opens in labelled folders (``access`` topic, one
:class:`permwatch.events.FsAccessEvent` per process and path); the processor
records exposures. An open *counts* for a breach when it happened while an
exposure of its folder was open (from ``opened_at`` up to, not including,
``closed_at``) and the person was outside the label: among the outsiders the
exposure's state at that moment says could read. An open by someone the label
allows is kept too, marked so: it is not a breach, and the report says how many.
Records that cut their list of outsiders (``users_truncated``) cannot rule a
person out; such opens are marked ``outsider=None`` (unknown) rather than guessed.
Pure: no bus, no clock; who a uid is comes from the directory's own events.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime

from permwatch.events import DirectoryUser, ExposureEvent, ExposureStatus, FsAccessEvent


@dataclass(frozen=True, slots=True)
class MarkedOpen:
    """One open inside an exposure window, with who it was and whether they were outside the label."""

    at: datetime
    path: str
    folder: str
    exposure_id: str
    who: str
    uid: int | None
    process: str | None
    confidence: str
    how: str
    granted: bool
    outsider: bool | None
    """True: among those outside the label who could read; False: allowed by the label; None: cannot tell"""


def uid_names(events: Iterable[object]) -> dict[int, str]:
    """uid → user name, from the directory's user events (the latest wins; deleted users keep their name)."""
    names: dict[int, str] = {}
    for event in events:
        if isinstance(event, DirectoryUser) and event.uid is not None:
            names[event.uid] = event.name
    return names


def who_opened(access: FsAccessEvent, names: Mapping[int, str]) -> str:
    """The directory's name for the opener's uid, else the collector's name, else ``uid N`` / ``unknown``."""
    actor = access.actor
    if actor.uid is not None and actor.uid in names:
        return names[actor.uid]
    return actor.text() or "unknown"


def opens_during_exposures(
    exposures: Iterable[ExposureEvent], accesses: Iterable[FsAccessEvent], names: Mapping[int, str]
) -> list[MarkedOpen]:
    """Every open that fell inside an exposure of its folder, in time order, marked outsider or not."""
    by_folder: dict[str, dict[str, list[ExposureEvent]]] = {}
    for event in exposures:
        by_folder.setdefault(event.folder, {}).setdefault(event.exposure_id, []).append(event)
    marked = []
    for access in accesses:
        at = access.observed_at
        for exposure_id, events in by_folder.get(access.folder, {}).items():
            state = _state_at(events, at)
            if state is None:
                continue
            who = who_opened(access, names)
            if who in state.users:
                outsider: bool | None = True
            elif state.users_truncated:
                outsider = None
            else:
                outsider = False
            actor = access.actor
            marked.append(
                MarkedOpen(
                    at,
                    access.path,
                    access.folder,
                    exposure_id,
                    who,
                    actor.uid,
                    actor.process,
                    actor.confidence,
                    access.how,
                    access.granted,
                    outsider,
                )
            )
    return sorted(marked, key=lambda m: (m.at, m.path, m.who))


def _state_at(events: list[ExposureEvent], at: datetime) -> ExposureEvent | None:
    """The exposure's open state at ``at``: its latest event by then, when the exposure was open at ``at``."""
    ordered = sorted(events, key=lambda e: e.sequence)
    if not ordered or at < ordered[0].opened_at:
        return None
    closed = next((e for e in ordered if e.status is ExposureStatus.CLOSED), None)
    if closed is not None and closed.closed_at is not None and at >= closed.closed_at:
        return None
    state = ordered[0]
    for event in ordered:
        if event.status is ExposureStatus.CLOSED:
            break
        if event.observed_at <= at:
            state = event
    return state
