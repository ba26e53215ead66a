"""What a group of exposures amounts to, for renders: counts, the worst severity, readers, top folders, duration.

Pure functions of a :class:`~alerts.grouping.GroupSnapshot`, shared by the
sinks so the Slack message, the console block and the webhook body agree on
what "5,000 folders readable by alla, open for 3 min" means. People are not
summed over folders (the same staff read all of them): a group reports the
largest number of outsiders any one folder has.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from datetime import datetime

from alerts.base import SEVERITY_RANK
from alerts.grouping import GroupSnapshot, Member
from permwatch.events import ExposureEvent, ExposureKind, ExposureStatus, Severity


@dataclass(frozen=True)
class GroupDigest:
    group_id: str
    folders: int
    open_folders: int
    severity: Severity
    labels: tuple[str, ...]
    """Distinct label names, most folders first."""
    readers: tuple[str, ...]
    """Groups whose members can read (could, once all is closed), most folders first."""
    people_max: int
    paths_affected: int
    actor: str | None
    opened_at: datetime
    closed_at: datetime | None
    """When the last folder closed, once all are closed."""
    top: tuple[Member, ...]
    """The folders to name: open before closed, most people first."""
    first_exposure_id: str
    # -- who changed it (#18)
    actor_confidence: str | None = None
    """how sure the collector was of ``actor`` (the first member event naming it)"""
    actor_unresolved: int = 0
    """filesystem events of the burst whose actor could not be resolved, over its folders"""
    first_run: bool = False
    """every folder of it was found by permwatch's first scan (pre-existing, #19): one alert pointing to the report"""

    @property
    def first_run_headline(self) -> str:
        """``First run: 12 folders already open to people outside their label``: every sink's words for it."""
        return f"First run: {plural(self.folders, 'folder')} already open to people outside their label"

    # -- names-only exposures (#14)
    names_folders: int = 0
    """of the folders counted for ``readers`` (the open ones, or all once closed), those whose names alone
    outsiders can list (kind ``names``); the rest are of contents"""

    @property
    def counted_folders(self) -> int:
        """The folders ``readers``, ``people_max`` and ``names_folders`` are about: the open ones, or all."""
        return self.open_folders or self.folders

    @property
    def names_only(self) -> bool:
        """Whether outsiders can (could) list names only, in every folder counted: no file readable."""
        return self.names_folders == self.counted_folders

    @property
    def actor_text(self) -> str | None:
        """``cecilia (pidfd)``, ``unknown; 12 events unresolved``: the actor as the alerts name it, or None."""
        return actor_text(self.actor, self.actor_confidence, self.actor_unresolved)

    @property
    def is_open(self) -> bool:
        return self.open_folders > 0

    @property
    def duration_seconds(self) -> float | None:
        if self.closed_at is None:
            return None
        return max(0.0, (self.closed_at - self.opened_at).total_seconds())


def digest(group: GroupSnapshot, *, top: int = 5) -> GroupDigest:
    members = group.members
    if not members:
        raise ValueError(f"group {group.group_id} has no members to digest")
    open_members = [m for m in members if m.is_open]
    counted = open_members or list(members)
    readers = Counter(name for m in counted for name in m.open_groups)
    labels = Counter(m.latest.label.name for m in members)
    closed_at = None
    if not open_members:
        closed_at = max(m.latest.closed_at or m.latest.observed_at for m in members)
    ranked = sorted(members, key=lambda m: (not m.is_open, -m.open_people, m.latest.folder))
    return GroupDigest(
        group_id=group.group_id,
        folders=len(members),
        open_folders=len(open_members),
        severity=max((m.latest.label.severity for m in members), key=SEVERITY_RANK.__getitem__),
        labels=_by_count(labels),
        readers=_by_count(readers),
        people_max=max(m.open_people for m in counted),
        paths_affected=sum(m.latest.paths_affected for m in open_members),
        actor=group.actor,
        opened_at=min(m.latest.opened_at for m in members),
        closed_at=closed_at,
        top=tuple(ranked[:top]),
        first_exposure_id=members[0].exposure_id,
        actor_confidence=next(
            (m.latest.actor_confidence for m in members if m.latest.actor == group.actor and m.latest.actor), None
        ),
        actor_unresolved=sum(m.latest.actor_unresolved for m in members),
        first_run=all(m.latest.preexisting for m in members),
        names_folders=sum(1 for m in counted if m.latest.kind is ExposureKind.NAMES),
    )


FIRST_RUN_NOTE = (
    "Pre-existing: found by permwatch's first scan, not a change it saw. The entitlement report lists every such "
    "folder per label, with the groups, ACL entries and people: permwatch entitlements --config <file>. Each is "
    "tracked: it closes when fixed, and a further widening alerts."
)
"""What every sink says beside a first-run alert (Slack in its own markup)."""


CONFIDENCE_TEXT = {"pidfd": "pidfd", "proc": "best effort", "smb_audit": "SMB audit", "audit": "audit log"}


def actor_text(actor: str | None, confidence: str | None, unresolved: int) -> str | None:
    """Who made a change as an alert says it, with how sure that is and the events nobody could be named for."""
    if actor is None and not unresolved:
        return None
    text = actor or "unknown"
    if actor is not None and confidence in CONFIDENCE_TEXT:
        text += f" ({CONFIDENCE_TEXT[confidence]})"
    if unresolved:
        text += f"; {plural(unresolved, 'event')} whose actor could not be resolved"
    return text


def _by_count(counter: Counter[str]) -> tuple[str, ...]:
    return tuple(name for name, _ in sorted(counter.items(), key=lambda item: (-item[1], item[0])))


def format_duration(seconds: float) -> str:
    whole = round(seconds)
    days, rest = divmod(whole, 86400)
    hours, rest = divmod(rest, 3600)
    minutes, secs = divmod(rest, 60)
    if days:
        return f"{days} d {hours} h"
    if hours:
        return f"{hours} h {minutes} min"
    if minutes:
        return f"{minutes} min {secs} s"
    return f"{secs} s"


def plural(count: int, word: str, words: str | None = None) -> str:
    return f"{count:,} {word if count == 1 else (words or word + 's')}"


def first_names(names: tuple[str, ...], *, limit: int = 3) -> str:
    """``alla, it, hr +2 more`` (empty string for no names)."""
    shown = ", ".join(names[:limit])
    return shown + (f" +{len(names) - limit:,} more" if len(names) > limit else "")


def news_by_status(
    events: tuple[ExposureEvent, ...],
) -> tuple[list[ExposureEvent], list[ExposureEvent], list[ExposureEvent]]:
    """What ``events`` say of each exposure (its latest event), split into opened, changed and closed: what a
    sink's update of a burst reports."""
    latest: dict[str, ExposureEvent] = {}
    for event in events:
        latest[event.exposure_id] = event
    by_status: dict[ExposureStatus, list[ExposureEvent]] = {status: [] for status in ExposureStatus}
    for event in latest.values():
        by_status[event.status].append(event)
    return by_status[ExposureStatus.OPENED], by_status[ExposureStatus.CHANGED], by_status[ExposureStatus.CLOSED]
