"""Decisions as events (issue 19): approvals silence exactly their exposure until expiry, widening alerts anyway,
revoke and close forget them, a checkpoint keeps them; first-run exposures are marked pre-existing and grouped."""

from __future__ import annotations

import pickle
from datetime import timedelta

import pytest
from pydantic import ValidationError

from alerts.base import SinkSettings
from alerts.grouping import BurstGrouper
from permwatch.events import (
    Decision,
    DecisionAction,
    DirectoryGroup,
    DirectoryUser,
    ExposureEvent,
    ExposureStatus,
    FsKind,
    LabelAssigned,
    ScanCompleted,
    decode,
    encode,
)
from processor import checkpoint
from processor.engine import Engine
from processor.entitlements import preexisting_open, render_report
from tests.unit.test_engine import ALLA, LABEL, MGMT, T0, UNIT, Clock, entry, fs, setup

FOLDER = "/srv/share/ledning"
EXTERN = 20009


def _acl(*named: tuple[str, int]) -> tuple:
    return (
        entry("user_obj", "rwx"),
        entry("group_obj", "rx"),
        *(entry("group", perms, gid) for perms, gid in named),
        entry("mask", "rx"),
        entry("other", ""),
    )


def _open_alla(engine: Engine) -> ExposureEvent:
    opened = engine.step(fs(FOLDER, *_acl(("rx", ALLA)), at=T0))
    assert [v.status for v in opened] == [ExposureStatus.OPENED]
    return opened[0].to_event()


def _approve(engine: Engine, exposure: ExposureEvent, hours: float = 24) -> None:
    engine.step(
        Decision(
            action=DecisionAction.APPROVE,
            exposure_id=exposure.exposure_id,
            folder=FOLDER,
            by="anna",
            reason="board pack",
            until=T0 + timedelta(hours=hours),
        )
    )


def _clock(engine: Engine) -> Clock:
    clock = engine.tracker.clock
    assert isinstance(clock, Clock)
    return clock


def test_an_approved_change_is_marked_and_not_alerted_until_it_expires() -> None:
    engine = setup()
    exposure = _open_alla(engine)
    _approve(engine, exposure, hours=1)
    sink = SinkSettings(kind="jsonl")
    # a file beneath becomes readable too: same groups and people, more paths -> changed, approved, silent
    changed = engine.step(fs(FOLDER + "/protokoll.txt", *_acl(("r", ALLA)), at=T0 + timedelta(minutes=1)))
    event = changed[0].to_event()
    assert event.status is ExposureStatus.CHANGED
    assert event.approval is not None and event.approval.by == "anna" and not event.approval.widened
    assert not sink.accepts(event)
    assert decode(encode(event)) == event
    # after expiry the next change carries no approval and alerts
    _clock(engine).now = T0 + timedelta(hours=2)
    later = engine.step(fs(FOLDER + "/protokoll.txt", mode=0o640, at=T0 + timedelta(hours=2)))
    assert later and later[0].approval is None
    assert sink.accepts(later[0].to_event())


def test_a_further_widening_alerts_even_while_approved() -> None:
    engine = setup()
    engine.step(DirectoryUser(name="fia", uid=1006, primary_gid=EXTERN))
    engine.step(DirectoryGroup(name="extern", gid=EXTERN, member_users=("fia",)))
    exposure = _open_alla(engine)
    _approve(engine, exposure)
    widened = engine.step(fs(FOLDER, *_acl(("rx", ALLA), ("rx", EXTERN)), at=T0 + timedelta(minutes=1)))
    event = widened[0].to_event()
    assert event.status is ExposureStatus.CHANGED and event.approval is not None and event.approval.widened
    assert SinkSettings(kind="jsonl").accepts(event)


def test_revoke_makes_changes_alert_again_and_a_close_is_always_alerted() -> None:
    engine = setup()
    exposure = _open_alla(engine)
    _approve(engine, exposure)
    engine.step(Decision(action=DecisionAction.REVOKE, exposure_id=exposure.exposure_id, folder=FOLDER, by="anna"))
    changed = engine.step(fs(FOLDER + "/protokoll.txt", *_acl(("r", ALLA)), at=T0 + timedelta(minutes=1)))
    assert changed[0].approval is None
    _approve(engine, exposure)
    closed = engine.step(fs(FOLDER, mode=0o750, at=T0 + timedelta(minutes=2)))
    closed += engine.step(fs(FOLDER + "/protokoll.txt", mode=0o640, at=T0 + timedelta(minutes=2)))
    last = next(v for v in closed if v.status is ExposureStatus.CLOSED).to_event()
    assert last.approval is not None and SinkSettings(kind="jsonl").accepts(last)  # the alert resolves
    assert engine.decisions.approvals == {}  # the id is spent: the approval goes with it


def test_an_approval_covers_exactly_its_exposure() -> None:
    engine = setup()
    _open_alla(engine)
    engine.step(
        Decision(
            action=DecisionAction.APPROVE,
            exposure_id="exp-00000000000000000000",
            folder=FOLDER,
            by="anna",
            until=T0 + timedelta(days=1),
        )
    )
    changed = engine.step(fs(FOLDER + "/protokoll.txt", *_acl(("r", ALLA)), at=T0 + timedelta(minutes=1)))
    assert changed[0].approval is None


def test_an_approval_replayed_before_the_record_is_adopted_keeps_what_could_read_then() -> None:
    """A rebuilding processor may hold the folder's exposure under another id than the record's until it adopts
    the record: the approval still remembers who could read when it was given, so a later widening is one."""
    engine = setup()
    engine.step(DirectoryUser(name="fia", uid=1006, primary_gid=EXTERN))
    engine.step(DirectoryGroup(name="extern", gid=EXTERN, member_users=("fia",)))
    _open_alla(engine)
    record_id = "exp-0123456789abcdef0123"  # the id the record holds (the rebuild judged in other batches)
    engine.step(
        Decision(
            action=DecisionAction.APPROVE,
            exposure_id=record_id,
            folder=FOLDER,
            by="anna",
            until=T0 + timedelta(days=1),
        )
    )
    engine.tracker.folders[FOLDER].open.exposure_id = record_id  # what adopting the record does
    widened = engine.step(fs(FOLDER, *_acl(("rx", ALLA), ("rx", EXTERN)), at=T0 + timedelta(minutes=1)))
    assert widened[0].approval is not None and widened[0].approval.widened


def test_a_checkpoint_keeps_the_approvals() -> None:
    engine = setup()
    exposure = _open_alla(engine)
    _approve(engine, exposure)
    restored = checkpoint.restore(pickle.loads(checkpoint.snapshot(engine)), source="processor", clock=Clock())
    assert set(restored.decisions.approvals) == {exposure.exposure_id}
    changed = restored.step(fs(FOLDER + "/protokoll.txt", *_acl(("r", ALLA)), at=T0 + timedelta(minutes=1)))
    assert changed[0].approval is not None and not changed[0].approval.widened


def test_approve_needs_until_and_decisions_are_keyed_by_folder() -> None:
    with pytest.raises(ValidationError, match="needs until"):
        Decision(action=DecisionAction.APPROVE, exposure_id="exp-1", folder=FOLDER, by="anna")
    ack = Decision(action=DecisionAction.ACKNOWLEDGE, exposure_id="exp-1", folder=FOLDER, by="anna")
    assert (ack.topic, ack.key) == ("decisions", FOLDER)
    assert decode(encode(ack)) == ack


def test_an_exposure_without_approval_or_first_run_keeps_its_old_wire_form() -> None:
    engine = setup()
    raw = encode(_open_alla(engine))
    assert b"approval" not in raw and b"preexisting" not in raw


# ------------------------------------------------------------------ first run


def _first_run() -> tuple[Engine, list[ExposureEvent]]:
    engine = Engine(clock=Clock())
    from tests.unit.test_engine import users

    users(engine)
    found = []
    for path, mode in (("/", 0o755), ("/srv", 0o755), ("/srv/share", 0o755)):
        engine.step(fs(path, mode=mode, kind=FsKind.BASELINE, group=0))
    for name in ("ledning", "styrelse"):
        engine.step(fs(f"/srv/share/{name}", *_acl(("rx", ALLA)), kind=FsKind.BASELINE))
        found += engine.step(LabelAssigned(path=f"/srv/share/{name}", label=LABEL))
    engine.step(ScanCompleted(root="/srv/share", paths_seen=5, paths_changed=5, seconds=0.1, observed_at=T0))
    return engine, [v.to_event() for v in found]


def test_what_the_first_baseline_finds_is_preexisting_and_later_changes_are_not() -> None:
    engine, found = _first_run()
    assert [(e.status, e.preexisting) for e in found] == [(ExposureStatus.OPENED, True)] * 2
    widened = engine.step(fs("/srv/share/ledning", *_acl(("rx", ALLA), ("rx", UNIT)), at=T0 + timedelta(minutes=1)))
    assert widened[0].status is ExposureStatus.CHANGED and widened[0].preexisting  # the same exposure, still
    engine.step(LabelAssigned(path="/srv/share/hr", label=LABEL))
    fresh = engine.step(fs("/srv/share/hr", *_acl(("rx", ALLA)), at=T0 + timedelta(minutes=2)))
    assert fresh[0].status is ExposureStatus.OPENED and not fresh[0].preexisting


def test_the_first_scan_is_told_by_the_events_times_not_by_their_arrival() -> None:
    """On Kafka the scan's completion (keyed by the root) can be read before its last batch (keyed by unit)."""
    engine = Engine(clock=Clock())
    from tests.unit.test_engine import users

    users(engine)
    for path, mode in (("/", 0o755), ("/srv", 0o755), ("/srv/share", 0o755)):
        engine.step(fs(path, mode=mode, kind=FsKind.BASELINE, group=0))
    engine.step(LabelAssigned(path=FOLDER, label=LABEL, observed_at=T0))
    engine.step(ScanCompleted(root="/srv/share", paths_seen=5, paths_changed=5, seconds=1, observed_at=T0))
    late = engine.step(fs(FOLDER, *_acl(("rx", ALLA)), kind=FsKind.BASELINE, at=T0 - timedelta(seconds=1)))
    assert [(v.status, v.preexisting) for v in late] == [(ExposureStatus.OPENED, True)]
    engine.step(fs(FOLDER, mode=0o750, at=T0 + timedelta(minutes=1)))
    # a restart's scan publishes what changed while permwatch was down as baseline too: that is news
    restart = engine.step(fs(FOLDER, *_acl(("rx", ALLA)), kind=FsKind.BASELINE, at=T0 + timedelta(hours=1)))
    assert [(v.status, v.preexisting) for v in restart] == [(ExposureStatus.OPENED, False)]


def test_preexisting_exposures_make_one_burst_and_a_live_one_its_own() -> None:
    engine, found = _first_run()
    grouper = BurstGrouper()
    groups = {grouper.assign(e)[0] for e in found}
    assert len(groups) == 1
    live = engine.step(fs("/srv/share/ledning/x", *_acl(("rx", MGMT)), at=T0))  # nothing new
    assert live == []
    engine.step(LabelAssigned(path="/srv/share/hr", label=LABEL))
    fresh = engine.step(fs("/srv/share/hr", *_acl(("rx", ALLA)), at=found[0].opened_at))[0].to_event()
    assert grouper.assign(fresh)[0] not in groups  # same moment, but a live change: not the first run's alert


def test_the_entitlement_report_lists_open_preexisting_exposures_per_label() -> None:
    _, found = _first_run()
    report = render_report(preexisting_open(found))
    assert "2 pre-existing exposure(s) still open" in report
    assert "## Label `ledning` (severity high): 2 folder(s), up to 4 people" in report
    assert "| `/srv/share/styrelse` | 4 | alla, enhet | group:alla | contents |" in report  # r-x: alla may enter


def test_the_directorys_first_snapshot_is_preexisting_and_a_later_membership_change_is_not() -> None:
    engine = Engine(clock=Clock())
    for path, mode in (("/", 0o755), ("/srv", 0o755), ("/srv/share", 0o755)):
        engine.step(fs(path, mode=mode, kind=FsKind.BASELINE, group=0))
    engine.step(fs(FOLDER, *_acl(("rx", ALLA)), kind=FsKind.BASELINE))
    engine.step(LabelAssigned(path=FOLDER, label=LABEL))
    engine.step(ScanCompleted(root="/srv/share", paths_seen=4, paths_changed=4, seconds=0.1, observed_at=T0))
    # the directory collector's first snapshot arrives after the scan: still what was there before permwatch
    first = engine.step(DirectoryUser(name="bo", uid=1002, primary_gid=ALLA, change="snapshot"))
    first += engine.step(DirectoryGroup(name="alla", gid=ALLA, member_users=("bo",), change="snapshot"))
    assert first[0].status is ExposureStatus.OPENED
    assert all(v.preexisting for v in first)
    engine.step(fs(FOLDER, mode=0o750, at=T0 + timedelta(minutes=1)))  # fixed: closed
    engine.step(DirectoryUser(name="cia", uid=1003, primary_gid=UNIT, change="created"))
    engine.step(fs(FOLDER, *_acl(("rx", ALLA)), at=T0 + timedelta(minutes=2)))  # opened again: a live change
    again = engine.step(DirectoryGroup(name="alla", gid=ALLA, member_users=("bo", "cia"), change="snapshot"))
    assert [(v.status, v.preexisting) for v in again] == [(ExposureStatus.CHANGED, False)]


def test_an_approval_that_runs_out_while_open_is_said_once() -> None:
    engine = setup()
    exposure = _open_alla(engine)
    _approve(engine, exposure, hours=1)
    assert engine.expire_approvals(T0 + timedelta(minutes=59)) == []
    (said,) = engine.expire_approvals(T0 + timedelta(hours=1))
    event = said.to_event()
    assert (event.status, event.sequence, event.approval) == (ExposureStatus.CHANGED, 1, None)
    assert event.cause_event_ids == (f"expiry.{exposure.exposure_id}",)
    assert (event.people, event.groups) == (exposure.people, exposure.groups)
    assert SinkSettings(kind="jsonl").accepts(event)
    assert engine.expire_approvals(T0 + timedelta(hours=2)) == []  # once


def test_a_restart_does_not_say_an_expiry_the_record_already_tells() -> None:
    engine = setup()
    exposure = _open_alla(engine)
    _approve(engine, exposure, hours=1)
    (said,) = engine.expire_approvals(T0 + timedelta(hours=1))
    rebuilt = setup()
    _approve(rebuilt, exposure, hours=1)  # the decisions topic, replayed
    rebuilt.decisions.forget_told({FOLDER: said.to_event()})
    assert rebuilt.decisions.approvals == {}
    still = setup()
    _approve(still, exposure, hours=1)
    still.decisions.forget_told({FOLDER: exposure})  # the record's last event is from before the expiry
    assert set(still.decisions.approvals) == {exposure.exposure_id}
