"""Opens marked live (issue 18): the processor marks an outsider's open while an exposure is open, and no other.

The rules on single records (processor/open_marks.py), then the processor itself on the embedded log: access
records published *before* the permission changes they follow (the two topics are read in any order), a run, and
a restart that replays them without marking anything twice.
"""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

from prometheus_client import CollectorRegistry

from permwatch.config import ProcessorConfig
from permwatch.events import (
    TOPIC_EXPOSURES,
    Actor,
    ExposureEvent,
    ExposureOpenedBy,
    ExposureStatus,
    FsAccessEvent,
    Label,
    decode,
    opened_by_event_id,
)
from permwatch.metrics import Metrics
from permwatch.transport.embedded import EmbeddedBus
from processor.open_marks import ExposureWindows
from processor.runner import ProcessorRunner
from tests.unit.test_checkpoint import publish, run_until_idle
from tests.unit.test_engine import T0, Clock, entry, fs
from tests.unit.test_processor_restart import LEDNING, at, grant, setting_up

LABEL = Label(name="ledning", allowed_groups=("ledningsgrupp",))
NAMES = {1001: "anna", 1002: "bo", 1003: "cia"}.get


def exposure(
    status: ExposureStatus, sequence: int, users: tuple[str, ...], minutes: int, **extra: object
) -> ExposureEvent:
    closed = status is ExposureStatus.CLOSED
    return ExposureEvent(
        exposure_id="exp-1",
        sequence=sequence,
        status=status,
        folder=LEDNING,
        label=LABEL,
        people=len(users),
        users=users,
        paths_affected=0 if closed else 1,
        opened_at=at(10),
        closed_at=at(minutes) if closed else None,
        observed_at=at(minutes),
        **extra,  # type: ignore[arg-type]
    )


def opened_by(uid: int | None, minutes: float, *, name: str | None = None, how: str = "local") -> FsAccessEvent:
    return FsAccessEvent(
        path=f"{LEDNING}/protokoll.txt",
        folder=LEDNING,
        actor=Actor(name=name, uid=uid, process="cat", pid=4242, confidence="pidfd"),
        how=how,  # type: ignore[arg-type]
        observed_at=at(0) + timedelta(minutes=minutes),
    )


def mark(windows: ExposureWindows, access: FsAccessEvent) -> ExposureOpenedBy | None:
    return windows.mark(access, NAMES, source="processor", now=at(60))


def test_an_outsiders_open_inside_the_window_is_marked_and_nothing_else_is() -> None:
    windows = ExposureWindows()
    windows.note(exposure(ExposureStatus.OPENED, 0, ("bo",), 10))
    windows.note(exposure(ExposureStatus.CHANGED, 1, ("bo", "cia"), 15))
    windows.note(exposure(ExposureStatus.CLOSED, 2, (), 20))
    bo = opened_by(1002, 12)
    marked = mark(windows, bo)
    assert marked is not None
    assert (marked.exposure_id, marked.who, marked.outsider, marked.path) == ("exp-1", "bo", True, bo.path)
    assert marked.observed_at == bo.observed_at and marked.access_event_id == bo.event_id
    assert marked.event_id == opened_by_event_id("exp-1", bo.event_id) and marked.key == LEDNING
    assert marked.topic == TOPIC_EXPOSURES
    assert mark(windows, opened_by(1003, 19.9)) is not None  # named by a later event of the same exposure
    assert mark(windows, opened_by(1001, 12)) is None  # anna: the label allows her
    assert mark(windows, opened_by(1002, 9.9)) is None  # before it opened
    assert mark(windows, opened_by(1002, 20)) is None  # at the close and after
    assert mark(windows, opened_by(4711, 12)) is None  # nobody the directory names
    assert mark(windows, opened_by(None, 12, name="bo", how="smb")) is not None  # an SMB user the audit log named


def test_a_cut_list_of_outsiders_marks_an_unlisted_opener_as_cannot_tell() -> None:
    windows = ExposureWindows()
    windows.note(exposure(ExposureStatus.OPENED, 0, ("bo",), 10, users_truncated=True))
    unlisted = mark(windows, opened_by(1003, 12))
    assert unlisted is not None and unlisted.outsider is None
    listed = mark(windows, opened_by(1002, 12))
    assert listed is not None and listed.outsider is True


def test_a_restart_adopts_the_records_ids() -> None:
    windows = ExposureWindows()
    rebuilt = exposure(ExposureStatus.OPENED, 0, ("bo",), 10).model_copy(update={"exposure_id": "exp-rebuilt"})
    windows.note(rebuilt)
    windows.adopt([exposure(ExposureStatus.OPENED, 0, ("bo",), 10)])
    marked = mark(windows, opened_by(1002, 12))
    assert marked is not None and marked.exposure_id == "exp-1"


def marks_on(bus: EmbeddedBus) -> list[ExposureOpenedBy]:
    events = [decode(record.value) for record in bus.history([TOPIC_EXPOSURES])]
    return [e for e in events if isinstance(e, ExposureOpenedBy)]


def test_the_processor_marks_live_an_outsiders_open_while_exposed_once_across_a_restart(tmp_path: Path) -> None:
    bus = EmbeddedBus(tmp_path / "log.db")
    try:
        bo_during, anna_during, bo_after = opened_by(1002, 12), opened_by(1001, 13), opened_by(1002, 25)
        publish(bus, [bo_during, anna_during, bo_after])  # read first: marked once what they follow is applied
        bo = entry("user", "rx", 1002)
        closing = fs(LEDNING, entry("user_obj", "rwx"), entry("group_obj", "rx"), entry("other", ""), at=at(20))
        ready = [e.model_copy(update={"observed_at": T0}) for e in setting_up()]  # before the times below
        publish(bus, [*ready, grant(LEDNING, 10, bo), closing])
        config = ProcessorConfig(group="g", batch_max=1)  # the opening and the close judged apart
        metrics = Metrics.create(CollectorRegistry())
        runner = ProcessorRunner(bus, config, clock=Clock(), metrics=metrics)
        run_until_idle(runner)
        marks = marks_on(bus)
        counted = metrics.registry.get_sample_value("permwatch_processor_opens_marked_total", {"outsider": "true"})
        assert counted == 1
        assert [(m.who, m.access_event_id, m.outsider) for m in marks] == [("bo", bo_during.event_id, True)]
        exposures = [
            e for e in (decode(r.value) for r in bus.history([TOPIC_EXPOSURES])) if isinstance(e, ExposureEvent)
        ]
        assert [e.status for e in exposures] == [ExposureStatus.OPENED, ExposureStatus.CLOSED]
        assert marks[0].exposure_id == exposures[0].exposure_id and runner.opens_marked == 1

        again = ProcessorRunner(bus, config, clock=Clock())
        run_until_idle(again)  # the access records come replayed: judged before the commit, not marked again
        assert again.opens_marked == 0 and len(marks_on(bus)) == 1
    finally:
        bus.close()


def test_a_window_keeps_the_lists_it_is_given_not_copies_and_merges_many() -> None:
    """Following verdicts costs no copy of their lists of outsiders (the hot path); many lists become one set."""
    windows = ExposureWindows()
    first = exposure(ExposureStatus.OPENED, 0, ("bo",), 10)
    windows.note(first)
    windows.note(exposure(ExposureStatus.CHANGED, 1, ("bo",), 11).model_copy(update={"users": first.users}))
    window = windows.windows[LEDNING]
    assert len(window.named) == 1 and window.named[0] is first.users
    for sequence in range(2, 12):
        windows.note(exposure(ExposureStatus.CHANGED, sequence, (f"u{sequence}",), 11))
    assert len(window.named) <= 8 and window.names("bo") and window.names("u11")
