"""Decisions about exposures as the processor keeps them: approvals in force, to mark exposure events with.

The ``decisions`` topic is an input like the others: a restart replays it (or
finds it in the checkpoint) with the rest. An ``approve`` records who, why and
until when, and the groups and people that could read when it was given; every
later event of that exposure judged before ``until`` carries the
:class:`~permwatch.events.Approval`, with ``widened`` set when groups or people
beyond those can read now. The alerts stage skips a ``changed`` event whose
approval is not widened (``ExposureEvent.alerting``): the judgement is made
here, and dispatch stays a filter. ``revoke`` withdraws the approval; a close
forgets it (the exposure id is spent). When an approval runs out while its
exposure is open, the live processor says so once: a ``changed`` event that
restates the exposure without the approval (cause ``expiry.<exposure_id>``),
which alerts; a restart does not say it again when the record already has an
event of the exposure judged after ``until``. Acknowledgements and reverts are kept
on the topic for the record and change no verdict.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from permwatch.events import Approval, Decision, DecisionAction, ExposureEvent, ExposureStatus
from permwatch.wire import unchecked
from processor.exposures import Verdict


@dataclass(slots=True)
class ApprovalRecord:
    by: str
    reason: str | None
    until: datetime
    groups: frozenset[str] | None
    """the groups that could read when it was approved; None until first seen (approved before it was judged)"""
    users: frozenset[str] | None
    folder: str = ""


class DecisionBook:
    """Approvals in force, by exposure id."""

    def __init__(self) -> None:
        self.approvals: dict[str, ApprovalRecord] = {}

    def expired(self, now: datetime) -> list[tuple[str, str]]:
        """The (exposure id, folder) whose approval ran out by ``now``, forgotten here (the runner says so once)."""
        gone = [(exposure_id, found.folder) for exposure_id, found in self.approvals.items() if found.until <= now]
        for exposure_id, _ in gone:
            del self.approvals[exposure_id]
        return gone

    def forget_told(self, last: dict[str, ExposureEvent]) -> None:
        """After a restart: drop the approvals whose expiry the record already shows (an event of the exposure
        judged at or after ``until``), so it is not said again. ``last``: folder → its last recorded event."""
        told = {e.exposure_id for e in last.values()}
        for exposure_id in [x for x in self.approvals if x in told]:
            event = next(e for e in last.values() if e.exposure_id == exposure_id)
            if event.detected_at >= self.approvals[exposure_id].until:
                del self.approvals[exposure_id]

    def apply(self, decision: Decision, readers: tuple[frozenset[str], frozenset[str]] | None) -> None:
        """Take ``decision``; ``readers`` are the (groups, people) that read the exposure now, when it is open."""
        if decision.action is DecisionAction.APPROVE and decision.until is not None:
            groups, users = readers if readers is not None else (None, None)
            self.approvals[decision.exposure_id] = ApprovalRecord(
                decision.by, decision.reason, decision.until, groups, users, decision.folder
            )
        elif decision.action is DecisionAction.REVOKE:
            self.approvals.pop(decision.exposure_id, None)

    def mark(self, verdict: Verdict) -> Verdict:
        """``verdict`` with the approval in force (if any) on it, judged at its ``detected_at`` (a verdict is a
        frozen exposure event: a marked one is a copy)."""
        found = self.approvals.get(verdict.exposure_id)
        if verdict.status is ExposureStatus.CLOSED:
            self.approvals.pop(verdict.exposure_id, None)
        if found is None or verdict.detected_at >= found.until:
            return verdict
        groups, users = frozenset(verdict.groups), frozenset(verdict.all_users)
        if found.groups is None or found.users is None:
            found.groups, found.users = groups, users  # approved before this processor judged it: as it is now
        widened = not (groups <= found.groups and users <= found.users)
        approval = Approval(by=found.by, reason=found.reason, until=found.until, widened=widened)
        return unchecked(Verdict, {**verdict.__dict__, "approval": approval})  # the same fields, in their order
