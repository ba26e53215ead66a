"""Exposures of labelled folders: opened, changed, closed.

A labelled folder owns every path beneath it (up to the next labelled folder).
For each such path the outsiders are its effective readers minus the label's
audience. The folder's exposure is the union over its paths. This module
keeps, per folder, only the paths that have outsiders, grouped by their
*signature* (permission state and traverse set), so a burst that opens 20,000
paths the same way is one signature with a count, and judging the folder
after each event costs the number of distinct signatures, not of paths.

The audience rule lives here (:func:`audience`): a user may read when listed,
when a direct member of an allowed group, or when its primary group is
allowed. A group nested into an allowed group is *not* allowed unless listed.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime

from permwatch.events import (
    ExposureEvent,
    ExposureStatus,
    Grant,
    Label,
    exposure_event_id,
    exposure_id_for,
)
from processor.readers import AclVerdict, ReaderEvaluator
from processor.state import AclKey, Directory, parent_of, popcount

MAX_SAMPLE_PATHS = 5
MAX_USERS_LISTED = 20
MAX_CAUSES = 10


def audience(label: Label, directory: Directory) -> int:
    """The people the label allows: listed users, direct members and primary-group members of listed groups."""
    mask = 0
    for name in label.allowed_users:
        mask |= directory.user_bit(name)
    for group in label.allowed_groups:
        mask |= directory.direct_members(group)
    return mask


Signature = tuple[AclKey, int]
GrantKey = tuple[str, str | None, tuple[str, ...], str | None]


@dataclass(frozen=True)
class Cause:
    event_ids: tuple[str, ...]
    at: datetime
    actor: str | None = None


@dataclass
class OpenExposure:
    exposure_id: str
    sequence: int
    opened_at: datetime
    shape: tuple[int, tuple[Grant, ...]]
    actor: str | None


@dataclass
class FolderExposure:
    """What one labelled folder's exposure looks like right now."""

    folder: str
    label: Label
    allowed: int = 0
    allowed_version: int = -1
    exposed: dict[str, Signature] = field(default_factory=dict)
    signatures: dict[Signature, int] = field(default_factory=dict)
    verdicts: dict[AclKey, AclVerdict] = field(default_factory=dict)
    open: OpenExposure | None = None

    def set_path(self, path: str, signature: Signature | None, verdict: AclVerdict | None = None) -> None:
        old = self.exposed.pop(path, None)
        if old is not None:
            left = self.signatures[old] - 1
            if left:
                self.signatures[old] = left
            else:
                del self.signatures[old]
        if signature is not None:
            self.exposed[path] = signature
            self.signatures[signature] = self.signatures.get(signature, 0) + 1
            if verdict is not None:
                self.verdicts[signature[0]] = verdict

    def clear_paths(self) -> None:
        self.exposed.clear()
        self.signatures.clear()
        self.verdicts.clear()


class ExposureTracker:
    """Judges paths against their folder's label and emits exposure events on transitions."""

    def __init__(
        self, directory: Directory, evaluator: ReaderEvaluator, *, source: str, clock: Callable[[], datetime]
    ) -> None:
        self.directory = directory
        self.evaluator = evaluator
        self.source = source
        self.clock = clock
        self.folders: dict[str, FolderExposure] = {}

    # ------------------------------------------------------------ labels

    def set_label(self, folder: str, label: Label | None) -> FolderExposure | None:
        """Assign or remove a folder's label; returns the record to judge (or to close)."""
        record = self.folders.get(folder)
        if label is None:
            return record
        if record is None:
            record = self.folders[folder] = FolderExposure(folder, label)
        else:
            record.label = label
            record.allowed_version = -1
        return record

    def drop(self, folder: str) -> None:
        self.folders.pop(folder, None)

    def allowed(self, record: FolderExposure) -> int:
        if record.allowed_version != self.directory.version:
            record.allowed = audience(record.label, self.directory)
            record.allowed_version = self.directory.version
        return record.allowed

    # ------------------------------------------------------------ judging

    def judge_path(self, record: FolderExposure, path: str) -> None:
        state = self.evaluator.paths.get(path)
        if state is None:
            record.set_path(path, None)
            return
        verdict = self.evaluator.verdict(state)
        traverse = self.evaluator.traverse(parent_of(path))
        if verdict.read & traverse & ~self.allowed(record):
            record.set_path(path, (state.acl, traverse), verdict)
        else:
            record.set_path(path, None)

    def shape(self, record: FolderExposure) -> tuple[int, tuple[Grant, ...]]:
        """The outsiders (as a bitset) and the grants that let them read."""
        allowed = self.allowed(record)
        outsiders = 0
        by_key: dict[GrantKey, int] = {}
        for acl, traverse in record.signatures:
            verdict = record.verdicts[acl]
            reach = verdict.read & traverse & ~allowed
            outsiders |= reach
            for via in verdict.via:
                hit = via.people & reach
                if not hit:
                    continue
                key: GrantKey
                if via.group is None:
                    key = (via.entry, None, (), via.user)
                    by_key[key] = by_key.get(key, 0) | hit
                    continue
                for nested in self.directory.nested_groups(via.group):
                    direct = self.directory.direct_members(nested) & hit
                    if direct:
                        key = (via.entry, nested, self.directory.chain(via.group, nested), None)
                        by_key[key] = by_key.get(key, 0) | direct
                        hit &= ~direct
        grants = tuple(
            sorted(
                (
                    Grant(entry=entry, group=group, chain=chain, user=user, people=popcount(mask))
                    for (entry, group, chain, user), mask in by_key.items()
                ),
                key=lambda g: (-g.people, g.entry, g.group or "", g.user or ""),
            )
        )
        return outsiders, grants

    def transition(self, record: FolderExposure, cause: Cause) -> ExposureEvent | None:
        """Compare the folder's exposure with what was last emitted; return the event, if any."""
        outsiders, grants = self.shape(record)
        current = record.open
        if not outsiders:
            if current is None:
                return None
            record.open = None
            duration = max(0.0, (cause.at - current.opened_at).total_seconds())
            return self._event(
                record, current, ExposureStatus.CLOSED, 0, (), cause, closed_at=cause.at, duration=duration
            )
        if current is None:
            exposure_id = exposure_id_for(record.folder, record.label.name, cause.event_ids[0])
            current = record.open = OpenExposure(exposure_id, 0, cause.at, (outsiders, grants), cause.actor)
            return self._event(record, current, ExposureStatus.OPENED, outsiders, grants, cause)
        if current.shape == (outsiders, grants):
            return None
        current.sequence += 1
        current.shape = (outsiders, grants)
        return self._event(record, current, ExposureStatus.CHANGED, outsiders, grants, cause)

    def _event(
        self,
        record: FolderExposure,
        current: OpenExposure,
        status: ExposureStatus,
        outsiders: int,
        grants: tuple[Grant, ...],
        cause: Cause,
        *,
        closed_at: datetime | None = None,
        duration: float | None = None,
    ) -> ExposureEvent:
        if status is ExposureStatus.CLOSED:
            current.sequence += 1
        users = tuple(sorted(self.directory.names(outsiders)))[:MAX_USERS_LISTED]
        groups = tuple(sorted({g.group for g in grants if g.group is not None}))
        return ExposureEvent(
            event_id=exposure_event_id(current.exposure_id, current.sequence),
            source=self.source,
            exposure_id=current.exposure_id,
            sequence=current.sequence,
            status=status,
            folder=record.folder,
            label=record.label,
            people=popcount(outsiders),
            groups=groups,
            users=users,
            grants=grants,
            paths_affected=len(record.exposed),
            sample_paths=tuple(sorted(record.exposed)[:MAX_SAMPLE_PATHS]),
            cause_event_ids=cause.event_ids[:MAX_CAUSES],
            actor=cause.actor or current.actor,
            opened_at=current.opened_at,
            closed_at=closed_at,
            duration_seconds=duration,
            observed_at=cause.at,
            detected_at=self.clock(),
        )
