"""A processor killed anywhere leaves a true exposure record (issue 13): restarts on the embedded log.

The processor is killed at every commit of a run in turn (after its exposures are published, before its
position is committed: the awkward moment), more changes are made while it is down, and a new process
with another batch size finishes the job. Whatever the kill point, the record on the ``exposures`` topic
must read as one consistent story: each exposure's events numbered from 0 without gaps, opened first,
closed at most once and last; one folder's episodes never overlapping nor sharing an id; nothing closed
that was not opened; and at the end exactly the folders open that an uninterrupted run leaves open.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from permwatch.config import ProcessorConfig
from permwatch.events import (
    DirectoryGroup,
    DirectoryUser,
    Event,
    ExposureEvent,
    ExposureStatus,
    LabelAssigned,
    ObjectType,
)
from permwatch.transport.base import Consumer
from permwatch.transport.embedded import EmbeddedBus
from processor.runner import ProcessorRunner
from tests.unit.test_checkpoint import publish, published, run_until_idle
from tests.unit.test_engine import ALLA, LABEL, MGMT, ROOT, T0, UNIT, Clock, entry, fs

LEDNING = "/srv/share/ledning"
EKONOMI = "/srv/share/ekonomi"
EKONOMI_LABEL = LABEL.model_copy(update={"name": "ekonomi"})


def at(minutes: int) -> Any:
    return T0 + timedelta(minutes=minutes)


def setting_up() -> list[Event]:
    people = {"anna": (1001, MGMT), "bo": (1002, ALLA), "cia": (1003, ALLA), "dan": (1004, UNIT), "eva": (1005, ALLA)}
    events: list[Event] = [
        DirectoryUser(name=name, uid=uid, primary_gid=gid, observed_at=T0) for name, (uid, gid) in people.items()
    ]
    events += [
        DirectoryGroup(name="ledningsgrupp", gid=MGMT, member_users=("anna",), observed_at=T0),
        DirectoryGroup(name="alla", gid=ALLA, member_users=("bo", "cia", "eva"), member_groups=("enhet",)),
        DirectoryGroup(name="enhet", gid=UNIT, member_users=("dan",)),
        fs("/", mode=0o755),
        fs("/srv", mode=0o755, group=ROOT),
        fs("/srv/share", mode=0o755, group=ROOT),
        fs(LEDNING, mode=0o750),
        fs(f"{LEDNING}/protokoll.txt", mode=0o640, obj=ObjectType.FILE),
        fs(EKONOMI, mode=0o750),
        LabelAssigned(path=LEDNING, label=LABEL),
        LabelAssigned(path=EKONOMI, label=EKONOMI_LABEL),
    ]
    return events


def grant(path: str, minutes: int, *extra: Any) -> Event:
    return fs(path, entry("user_obj", "rwx"), entry("group_obj", "rx"), *extra, entry("mask", "rx"), at=at(minutes))


def several_episodes() -> list[Event]:
    """Exposures opened, widened, closed and opened again, by the filesystem and by the directory."""
    bo = entry("user", "rx", 1002)
    alla = entry("group", "rx", ALLA)
    nested = DirectoryGroup(
        name="ledningsgrupp", gid=MGMT, member_users=("anna",), member_groups=("alla",), observed_at=at(40)
    )
    unnested = DirectoryGroup(name="ledningsgrupp", gid=MGMT, member_users=("anna",), observed_at=at(50))
    return [
        grant(LEDNING, 10, bo),  # opened: bo
        grant(EKONOMI, 11, alla),  # opened: alla
        grant(LEDNING, 20, bo, alla),  # widened
        fs(LEDNING, mode=0o750, at=at(30)),  # closed
        nested,  # opened again, by the directory: alla nested into the management group
        unnested,  # closed
        fs(EKONOMI, mode=0o750, at=at(55)),  # closed
        fs(LEDNING, mode=0o755, at=at(60)),  # opened: everyone
        fs(LEDNING, mode=0o750, at=at(70)),  # closed
        grant(LEDNING, 80, bo),  # opened again, the same grant as the first episode's
    ]


def while_down() -> list[Event]:
    alla = entry("group", "rx", ALLA)
    return [
        grant(LEDNING, 90, entry("user", "rx", 1002), alla),  # widened (or opened, after a kill mid-episode)
        grant(EKONOMI, 91, alla),  # opened again
        fs(EKONOMI, mode=0o750, at=at(92)),  # and closed, both while down
    ]


class Killed(Exception):
    """The process died here (SIGKILL): nothing after this point ran."""


class _DyingConsumer:
    def __init__(self, inner: Consumer, bus: DyingBus) -> None:
        self._inner, self._bus = inner, bus

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)

    def commit(self) -> None:
        self._bus.commits += 1
        if self._bus.commits == self._bus.kill_at:
            raise Killed(f"killed at commit {self._bus.commits}")
        self._inner.commit()


class DyingBus:
    """An embedded bus whose consumers die at the ``kill_at``-th commit: its exposures published, not committed."""

    def __init__(self, bus: EmbeddedBus, kill_at: int) -> None:
        self.bus, self.kill_at, self.commits = bus, kill_at, 0

    def __getattr__(self, name: str) -> Any:
        return getattr(self.bus, name)

    def consumer(self, *args: Any, **kwargs: Any) -> _DyingConsumer:
        return _DyingConsumer(self.bus.consumer(*args, **kwargs), self)


def run_until_killed(bus: DyingBus, config: ProcessorConfig) -> bool:
    """Run until the kill (True) or until caught up with no kill (False)."""
    runner = ProcessorRunner(bus, config, clock=Clock())  # type: ignore[arg-type]
    stop, outcome = threading.Event(), []

    def run() -> None:
        try:
            runner.run(stop)
        except Killed:
            outcome.append(True)

    thread = threading.Thread(target=run)
    thread.start()
    while thread.is_alive() and not runner.caught_up.wait(0.05):
        pass
    stop.set()
    thread.join(30)
    return bool(outcome)


def consistent_story(events: Sequence[ExposureEvent]) -> set[str]:
    """Check the record reads as one story; return the folders it leaves open."""
    by_id: dict[str, list[ExposureEvent]] = {}
    seen: dict[str, ExposureEvent] = {}
    open_in: dict[str, str] = {}
    for event in events:
        earlier = seen.get(event.event_id)
        if earlier is not None:  # a repeat must say the same
            assert earlier.model_dump(exclude={"detected_at"}) == event.model_dump(exclude={"detected_at"})
            continue
        seen[event.event_id] = event
        story = by_id.setdefault(event.exposure_id, [])
        assert event.sequence == len(story), f"{event.event_id} after {[e.event_id for e in story]}"
        if not story:
            assert event.status is ExposureStatus.OPENED, f"{event.event_id} was never opened"
            assert event.folder not in open_in, f"{event.folder}: {event.exposure_id} opened over {open_in}"
            open_in[event.folder] = event.exposure_id
        else:
            assert story[-1].status is not ExposureStatus.CLOSED, f"{event.event_id} after its close"
            assert open_in.get(event.folder) == event.exposure_id
        if event.status is ExposureStatus.CLOSED:
            del open_in[event.folder]
        story.append(event)
    return set(open_in)


def uninterrupted(tmp_path: Path, config: ProcessorConfig) -> tuple[set[str], list[ExposureEvent]]:
    bus = EmbeddedBus(tmp_path / "uninterrupted.db")
    publish(bus, setting_up() + several_episodes())
    run_until_idle(ProcessorRunner(bus, config, clock=Clock()))
    publish(bus, while_down())
    run_until_idle(ProcessorRunner(bus, config, clock=Clock()))
    events = published(bus)
    bus.close()
    return consistent_story(events), events


def commits_of_a_run(tmp_path: Path, config: ProcessorConfig) -> int:
    bus = DyingBus(EmbeddedBus(tmp_path / "count.db"), kill_at=-1)
    publish(bus.bus, setting_up() + several_episodes())
    assert not run_until_killed(bus, config)
    bus.bus.close()
    return bus.commits


@pytest.mark.parametrize("restart_batch", [1, 5000])
def test_a_kill_at_any_commit_with_changes_while_down_leaves_a_true_record(tmp_path: Path, restart_batch: int) -> None:
    live = ProcessorConfig(group="g", batch_max=1)
    expected_open, reference = uninterrupted(tmp_path, live)
    assert expected_open == {LEDNING}
    assert sum(e.status is ExposureStatus.OPENED for e in reference) == 6
    commits = commits_of_a_run(tmp_path, live)
    assert commits > 5
    for kill_at in range(1, commits + 1):
        log = EmbeddedBus(tmp_path / f"killed-at-{kill_at}.db")
        publish(log, setting_up() + several_episodes())
        assert run_until_killed(DyingBus(log, kill_at), live)
        publish(log, while_down())
        run_until_idle(ProcessorRunner(log, ProcessorConfig(group="g", batch_max=restart_batch), clock=Clock()))
        events = published(log)
        assert consistent_story(events) == expected_open, f"killed at commit {kill_at}"
        # the alerts stage dedupes on event ids: what it drops as a repeat must be one
        assert len({e.event_id for e in events}) == len({(e.event_id, e.status, e.people) for e in events})
        log.close()


def test_several_kills_in_a_row_then_a_revert_close_what_was_opened(tmp_path: Path) -> None:
    log = EmbeddedBus(tmp_path / "log.db")
    publish(log, setting_up())
    run_until_idle(ProcessorRunner(log, ProcessorConfig(group="g"), clock=Clock()))
    for n, event in enumerate(several_episodes()):
        publish(log, [event])
        if n % 2 == 0:  # killed after publishing the effect of a batch, before committing it
            run_until_killed(DyingBus(log, 1 + n % 4 // 2), ProcessorConfig(group="g", batch_max=1 + n % 3))
    publish(log, [fs(LEDNING, mode=0o750, at=at(100))])
    run_until_idle(ProcessorRunner(log, ProcessorConfig(group="g", batch_max=3), clock=Clock()))
    events = published(log)
    assert consistent_story(events) == set()
    assert sum(e.status is ExposureStatus.OPENED for e in events) >= 2
    log.close()


def test_a_close_caused_by_the_filesystem_names_nobody() -> None:
    from tests.unit.test_engine import setup

    engine = setup()
    nested = DirectoryGroup(
        name="ledningsgrupp", gid=MGMT, member_users=("anna",), member_groups=("alla",), actor="cn=admin"
    )
    [opened] = engine.step(nested)
    assert opened.actor == "cn=admin"
    [closed] = engine.step(fs(LEDNING, mode=0o700, at=at(5)))
    assert closed.status is ExposureStatus.CLOSED and closed.actor is None
