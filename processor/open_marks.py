"""Opens marked live: an outsider's open while a folder's exposure is open becomes an ``exposure.opened_by`` event.

The live processor reads the ``access`` topic beside its inputs. :class:`ExposureWindows` follows every exposure
verdict the processor makes (replayed ones included, and the record it adopts on a restart): per folder, the
latest exposure's id, when it opened and closed, and everyone any of its events named as an outsider.
:meth:`ExposureWindows.mark` judges one access record against it by the open's own time, so the order in which
the ``fs`` and ``access`` records reach the processor does not matter: an open at or after ``opened_at`` and
before ``closed_at`` (if closed) by a named outsider is marked; one after the close, or by someone the label
allows, is not. The rules are those of :mod:`processor.opens` (the report's, from the history), for one record.
Pure: no bus, no clock but the one passed in.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Iterable
from dataclasses import dataclass, field
from datetime import datetime

from permwatch.events import (
    ExposureEvent,
    ExposureOpenedBy,
    ExposureStatus,
    FsAccessEvent,
    opened_by_event_id,
)

MAX_LISTS = 8
"""Lists of outsiders a window keeps as they came before it merges them into one set."""


@dataclass(slots=True)
class Window:
    """One folder's latest exposure: from ``opened_at`` to ``closed_at`` (None while open)."""

    exposure_id: str
    opened_at: datetime
    closed_at: datetime | None = None
    named: list[Collection[str]] = field(default_factory=list)
    """the lists of outsiders its events named, as they came: following a verdict costs no copy of a list that
    may hold thousands of names (the processor's hot path), and folders exposed alike share one list"""
    cut: bool = False
    """an event of it cut its list of outsiders: someone missing from ``named`` may be one"""

    def add(self, names: Collection[str]) -> None:
        if not names or any(names is known for known in self.named):
            return
        self.named.append(names)
        if len(self.named) > MAX_LISTS:
            self.named = [frozenset().union(*self.named)]

    def names(self, who: str) -> bool:
        return any(who in names for names in self.named)


class ExposureWindows:
    """Per folder, its latest exposure window; see the module docstring."""

    def __init__(self) -> None:
        self.windows: dict[str, Window] = {}

    def note(self, event: ExposureEvent) -> None:
        """Follow one exposure event (a verdict, with every outsider in ``all_users``, or a recorded event)."""
        window = self.windows.get(event.folder)
        if window is None or window.exposure_id != event.exposure_id:
            if window is not None and window.opened_at > event.opened_at:
                return  # an older episode's event, read late
            window = self.windows[event.folder] = Window(event.exposure_id, event.opened_at)
        everyone = getattr(event, "all_users", ())
        window.add(everyone or event.users)
        window.cut = window.cut or (event.users_truncated and not everyone)
        if event.status is ExposureStatus.CLOSED:
            window.closed_at = event.closed_at or event.observed_at

    def adopt(self, last: Iterable[ExposureEvent]) -> None:
        """Start from the record's last event per folder (a restart): its ids are the ones that were published."""
        for event in last:
            current = self.windows.get(event.folder)
            if current is not None and current.exposure_id == event.exposure_id:
                self.note(event)
                continue
            self.windows.pop(event.folder, None)
            self.note(event)
            if current is not None and current.opened_at >= event.opened_at:
                # the rebuild's own window of the same episode under another id: keep who it named
                for names in current.named:
                    self.windows[event.folder].add(names)

    def mark(
        self, access: FsAccessEvent, name_of_uid: Callable[[int], str | None], *, source: str, now: datetime
    ) -> ExposureOpenedBy | None:
        """The mark for ``access``, or None when it is no outsider's open inside the folder's exposure."""
        window = self.windows.get(access.folder)
        at = access.observed_at
        if window is None or at < window.opened_at or (window.closed_at is not None and at >= window.closed_at):
            return None
        uid = access.actor.uid
        # the directory's name for the uid, else the collector's (an SMB user the audit log named, maybe no uid)
        who = (name_of_uid(uid) if uid is not None else None) or access.actor.name
        if who is None:
            return None
        if window.names(who):
            outsider: bool | None = True
        elif window.cut:
            outsider = None
        else:
            return None  # the label allows them: not a breach (the report counts these)
        return ExposureOpenedBy(
            event_id=opened_by_event_id(window.exposure_id, access.event_id),
            observed_at=at,
            source=source,
            exposure_id=window.exposure_id,
            folder=access.folder,
            path=access.path,
            who=who,
            outsider=outsider,
            actor=access.actor,
            how=access.how,
            access_event_id=access.event_id,
            detected_at=now,
        )
