"""Grouping of bulk changes: which exposures belong to one burst, and what each burst looks like now.

One ``setfacl -R`` or one group nesting can expose thousands of labelled
folders at once; the SOC wants one alert for that, with counts and the top
folders, not thousands. :class:`BurstGrouper` maps every exposure event to a
*group* (a burst) and keeps each group's latest state per exposure.

An exposure joins the group of its earlier events. A new exposure joins an
open group (one with an exposure still open) that shares one of its cause
events; else the most recent open group with the same actor within
``actor_window_seconds``; else the most recent open group whose exposures
opened within ``window_seconds`` of it and whose actor does not differ; else
it starts a group. No group spans more than ``max_span_seconds`` except by a
shared cause. Windows are measured on the events' own times (``opened_at``,
which the processor takes from the change that caused it), never on when the
alerts stage happens to read them, so a backlog read after an outage groups
exactly as it would have live, and a restart re-reading the same events
agrees with the first run. The group id is derived from the first exposure's
id, so it is deterministic too; the dispatcher persists the state (see
:class:`alerts.store.GroupStore`) so groups continue across restarts.

This module is pure: no I/O, no clock; the only time is the events' time.
"""

from __future__ import annotations

import hashlib
from collections import OrderedDict
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta

from permwatch.events import ExposureEvent, ExposureStatus


@dataclass(frozen=True)
class GroupingPolicy:
    window_seconds: float = 5.0
    actor_window_seconds: float = 300.0
    max_span_seconds: float = 3600.0


@dataclass(frozen=True)
class Member:
    """The latest state of one exposure in a group.

    ``open_groups`` and ``open_people`` are what the exposure looked like when
    last open (a close event carries no readers, but its alert still names
    them); ``previous_groups`` are the reading groups before the latest event
    when that event changed them (Alertmanager resolves the old label set).
    """

    latest: ExposureEvent
    open_groups: tuple[str, ...]
    open_people: int
    previous_groups: tuple[str, ...] | None = None

    @property
    def exposure_id(self) -> str:
        return self.latest.exposure_id

    @property
    def is_open(self) -> bool:
        return self.latest.status is not ExposureStatus.CLOSED

    def advanced(self, event: ExposureEvent) -> Member:
        """This member after ``event`` (an older or repeated event changes nothing)."""
        if event.sequence <= self.latest.sequence:
            return self
        if event.status is ExposureStatus.CLOSED:
            return Member(event, self.open_groups, self.open_people, None)
        previous = self.open_groups if event.groups != self.open_groups else None
        return Member(event, event.groups, event.people, previous)

    @classmethod
    def first(cls, event: ExposureEvent) -> Member:
        return cls(event, event.groups, event.people, None)


@dataclass(frozen=True)
class GroupSnapshot:
    """One burst: its id, its actor (the first one known) and its members in the order they joined."""

    group_id: str
    actor: str | None
    members: tuple[Member, ...]

    @property
    def is_open(self) -> bool:
        return any(member.is_open for member in self.members)

    def only(self, accepts: Callable[[ExposureEvent], bool]) -> GroupSnapshot:
        return replace(self, members=tuple(m for m in self.members if accepts(m.latest)))


@dataclass(frozen=True)
class GroupUpdate:
    """What a sink renders: a group as it is now and the events of it that are new to the sink.

    A ``refresh`` update has no events: it asks a sink that re-sends (Alertmanager)
    to say again what is still open.
    """

    group: GroupSnapshot
    events: tuple[ExposureEvent, ...]
    refresh: bool = False

    def only(self, accepts: Callable[[ExposureEvent], bool]) -> GroupUpdate | None:
        """The part a sink's filter accepts, or None when nothing of it is left to render."""
        group = self.group.only(accepts)
        events = tuple(e for e in self.events if accepts(e))
        if self.refresh:
            return replace(self, group=group) if any(m.is_open for m in group.members) else None
        return GroupUpdate(group, events) if events else None

    def without(self, event_ids: set[str]) -> GroupUpdate | None:
        events = tuple(e for e in self.events if e.event_id not in event_ids)
        return replace(self, events=events) if events or self.refresh else None

    @classmethod
    def single(cls, event: ExposureEvent) -> GroupUpdate:
        """A one-exposure group (tests, and what a lone exposure looks like)."""
        return cls(GroupSnapshot(group_id_for(event.exposure_id), event.actor, (Member.first(event),)), (event,))


def group_id_for(first_exposure_id: str) -> str:
    return "burst-" + hashlib.sha256(first_exposure_id.encode()).hexdigest()[:16]


@dataclass
class _OpenGroup:
    group_id: str
    actor: str | None
    first_at: datetime
    last_at: datetime
    members: dict[str, Member] = field(default_factory=dict)
    causes: set[str] = field(default_factory=set)
    open_members: int = 0
    preexisting: bool = False
    """the first run's group: every exposure its first baseline scan found, one alert"""

    def put(self, member: Member) -> None:
        old = self.members.get(member.exposure_id)
        self.open_members += int(member.is_open) - int(old is not None and old.is_open)
        self.members[member.exposure_id] = member

    def snapshot(self) -> GroupSnapshot:
        return GroupSnapshot(self.group_id, self.actor, tuple(self.members.values()))

    def is_open(self) -> bool:
        return self.open_members > 0


class BurstGrouper:
    """Assigns exposure events to groups; holds the open groups in memory.

    ``groups`` are the open groups to start from (loaded after a restart);
    ``lookup`` finds the group of an exposure that is not in memory any more
    (its group closed) so its late or repeated events still land there.
    """

    def __init__(
        self,
        policy: GroupingPolicy | None = None,
        *,
        groups: Iterable[GroupSnapshot] = (),
        lookup: Callable[[str], GroupSnapshot | None] = lambda exposure_id: None,
    ) -> None:
        self.policy = policy or GroupingPolicy()
        self._lookup = lookup
        self._groups: OrderedDict[str, _OpenGroup] = OrderedDict()  # least recently joined first
        self._group_of: dict[str, str] = {}
        self._by_cause: dict[str, str] = {}
        for snapshot in sorted(groups, key=lambda g: max(m.latest.opened_at for m in g.members)):
            self._adopt(snapshot, recent=True)

    def assign(self, event: ExposureEvent) -> tuple[str, Member]:
        """Put ``event`` in its group; return the group id and the exposure's state after it."""
        group_id = self._group_of.get(event.exposure_id)
        if group_id is None:
            known = self._lookup(event.exposure_id)
            if known is not None:
                group_id = self._adopt(known, recent=False).group_id
        if group_id is not None:
            group = self._groups[group_id]
            member = group.members[event.exposure_id].advanced(event)
            group.put(member)
            return group_id, member
        group = self._joinable(event) or self._start(event)
        member = Member.first(event)
        group.put(member)
        self._group_of[event.exposure_id] = group.group_id
        group.first_at = min(group.first_at, event.opened_at)
        group.last_at = max(group.last_at, event.opened_at)
        group.actor = group.actor or event.actor
        for cause in event.cause_event_ids:
            group.causes.add(cause)
            self._by_cause.setdefault(cause, group.group_id)
        self._groups.move_to_end(group.group_id)
        return group.group_id, member

    def snapshot(self, group_id: str) -> GroupSnapshot:
        return self._groups[group_id].snapshot()

    def open_groups(self) -> list[GroupSnapshot]:
        return [group.snapshot() for group in self._groups.values() if group.is_open()]

    def forget_closed(self) -> None:
        """Drop the groups with nothing open from memory (a closed group takes no new members)."""
        for group_id in [gid for gid, group in self._groups.items() if not group.is_open()]:
            group = self._groups.pop(group_id)
            for exposure_id in group.members:
                self._group_of.pop(exposure_id, None)
            for cause in group.causes:
                if self._by_cause.get(cause) == group_id:
                    del self._by_cause[cause]

    # ------------------------------------------------------------ internals

    def _joinable(self, event: ExposureEvent) -> _OpenGroup | None:
        if event.preexisting:  # what the first run found is one alert, however long the scan took
            return next((g for g in reversed(self._groups.values()) if g.preexisting and g.is_open()), None)
        at = event.opened_at
        for cause in event.cause_event_ids:
            group_id = self._by_cause.get(cause)
            if group_id is not None and self._groups[group_id].is_open() and not self._groups[group_id].preexisting:
                return self._groups[group_id]
        policy = self.policy
        horizon = timedelta(seconds=max(policy.window_seconds, policy.actor_window_seconds))
        by_window: _OpenGroup | None = None
        for group in reversed(self._groups.values()):
            # Joined last is not opened last: partitions read unevenly (a backlog) join an older burst after a
            # newer one, so a group out of reach says nothing about those joined before it. Skip, never stop.
            if group.last_at + horizon < at or not group.is_open() or group.preexisting:
                continue
            if event.actor is not None and group.actor == event.actor:
                reach = max(policy.actor_window_seconds, policy.window_seconds)
                if _within(group, at, reach, policy.max_span_seconds):
                    return group
            elif (
                by_window is None
                and (event.actor is None or group.actor is None)
                and _within(group, at, policy.window_seconds, policy.max_span_seconds)
            ):
                if event.actor is None:
                    return group  # no actor to match: the most recent window is the answer, the scan stays short
                by_window = group
        return by_window

    def _start(self, event: ExposureEvent) -> _OpenGroup:
        group = _OpenGroup(group_id_for(event.exposure_id), event.actor, event.opened_at, event.opened_at)
        group.preexisting = event.preexisting
        self._groups[group.group_id] = group
        return group

    def _adopt(self, snapshot: GroupSnapshot, *, recent: bool) -> _OpenGroup:
        existing = self._groups.get(snapshot.group_id)
        if existing is not None:
            return existing
        times = [m.latest.opened_at for m in snapshot.members]
        group = _OpenGroup(snapshot.group_id, snapshot.actor, min(times), max(times))
        group.preexisting = snapshot.members[0].latest.preexisting
        for member in snapshot.members:
            group.put(member)
            self._group_of[member.exposure_id] = group.group_id
            for cause in member.latest.cause_event_ids:
                group.causes.add(cause)
                self._by_cause.setdefault(cause, group.group_id)
        self._groups[group.group_id] = group
        if not recent:  # a closed group looked up again: keep it out of the way of the window scan
            self._groups.move_to_end(group.group_id, last=False)
        return group


def _within(group: _OpenGroup, at: datetime, window: float, max_span: float) -> bool:
    """``at`` is within ``window`` of the group's exposures and keeps the group under ``max_span``."""
    reach = timedelta(seconds=window)
    if not group.first_at - reach <= at <= group.last_at + reach:
        return False
    return (max(group.last_at, at) - min(group.first_at, at)).total_seconds() <= max_span
