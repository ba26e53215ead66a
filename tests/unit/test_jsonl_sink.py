"""The JSONL sink exactly once in effect: a crash between its append and the delivery log's mark repeats no line.

A "crash" here is the stage stopping dead at that point: the delivery log's
mark raises an exception nothing catches, and the "restarted" stage is a new
delivery log, sink and dispatcher on the same files, so all it knows is what
is on disk. The file is checked by event id (each once) and byte for byte
where nothing went wrong; reads are counted from ``/proc/self/io``.
"""

from __future__ import annotations

import json
import os
import threading
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from alerts.base import RetryableSinkError, SinkContext
from alerts.dispatch import DeliveryLog, Dispatcher
from alerts.grouping import GroupUpdate
from alerts.jsonl import JsonlConfig, JsonlSink
from permwatch.events import ExposureEvent, encode
from permwatch.transport.embedded import EmbeddedBus
from tests.unit.alert_samples import case_burst, closed, opened


class Crash(BaseException):
    """The process dies here: nothing after it runs, nothing handles it."""


class Stage:
    """One life of the alerts stage on the files under ``workdir``: a delivery log and a JSONL sink on them."""

    def __init__(self, workdir: Path) -> None:
        self.jsonl = workdir / "alerts.jsonl"
        self.log = DeliveryLog(workdir / "state" / "alerts.db")
        self.sink = JsonlSink(JsonlConfig(path=self.jsonl), SinkContext(database=self.log.database))

    def deliver(self, update: GroupUpdate, *, crash_before_mark: bool = False) -> None:
        """What the dispatcher does for one sink and one update: leave out what is marked, send, mark."""
        view = update.without(self.log.delivered_among(self.sink.name, [e.event_id for e in update.events]))
        if view is None:
            return
        self.sink.send(self.sink.render(view))
        if crash_before_mark:
            raise Crash
        self.log.mark_many(self.sink.name, [e.event_id for e in view.events])

    def close(self) -> None:
        self.log.close()


@pytest.fixture
def lives(tmp_path: Path) -> Iterator[list[Stage]]:
    """Every life a test starts, closed at the end (a crashed one too)."""
    started: list[Stage] = []
    yield started
    for stage in started:
        stage.close()


def start(lives: list[Stage], workdir: Path) -> Stage:
    stage = Stage(workdir)
    lives.append(stage)
    return stage


def written_ids(path: Path) -> list[str]:
    return [json.loads(line)["event_id"] for line in path.read_text(encoding="utf-8").splitlines()]


def once_each(path: Path, events: list[ExposureEvent]) -> None:
    counts = Counter(written_ids(path))
    assert counts == Counter({e.event_id: 1 for e in events}), {i: n for i, n in counts.items() if n != 1}


def update_of(events: list[ExposureEvent]) -> GroupUpdate:
    first = GroupUpdate.single(events[0])
    return GroupUpdate(first.group, tuple(events))


def bytes_read() -> int:
    for line in Path("/proc/self/io").read_text().splitlines():
        if line.startswith("rchar:"):
            return int(line.split()[1])
    raise AssertionError("no rchar in /proc/self/io")


# ------------------------------------------------------------------ through the dispatcher


def test_killed_between_append_and_mark_the_restart_writes_each_event_once(
    tmp_path: Path, lives: list[Stage], monkeypatch: pytest.MonkeyPatch
) -> None:
    burst = case_burst(3)
    bus = EmbeddedBus(tmp_path / "events.db")
    try:
        for event in burst[:2]:
            bus.publish("exposures", event.key, encode(event))
        bus.flush()
        first = start(lives, tmp_path)
        real_mark = DeliveryLog.mark_many

        def killed_at_the_mark(log: DeliveryLog, sink: str, event_ids: Any) -> None:
            raise Crash

        monkeypatch.setattr(DeliveryLog, "mark_many", killed_at_the_mark)
        dispatcher = Dispatcher(bus, [first.sink], first.log, group="alerts")
        consumer = bus.consumer(["exposures"], "alerts")
        with pytest.raises(Crash):
            dispatcher.handle(consumer.poll(1.0), consumer, threading.Event())
        consumer.close()
        assert written_ids(first.jsonl) == [e.event_id for e in burst[:2]]  # appended and fsynced, not marked
        monkeypatch.setattr(DeliveryLog, "mark_many", real_mark)

        # while it was down the burst grew: the update that comes again is bigger than the one cut off
        bus.publish("exposures", burst[2].key, encode(burst[2]))
        bus.flush()
        second = start(lives, tmp_path)
        dispatcher = Dispatcher(bus, [second.sink], second.log, group="alerts")
        consumer = bus.consumer(["exposures"], "alerts")
        assert dispatcher.handle(consumer.poll(1.0), consumer, threading.Event())
        consumer.close()
    finally:
        bus.close()
    once_each(second.jsonl, burst)
    assert second.log.delivered_among("jsonl", [e.event_id for e in burst]) == {e.event_id for e in burst}


# ------------------------------------------------------------------ what the restart may see first


def test_another_burst_appended_first_after_the_restart_does_not_hide_the_cut_off_lines(
    tmp_path: Path, lives: list[Stage]
) -> None:
    cut_off = case_burst(2, start=0, cause="fs-a", actor="anna")
    big = case_burst(400, start=100, cause="fs-b", actor="bo")  # far more than any tail margin
    with pytest.raises(Crash):
        start(lives, tmp_path).deliver(update_of(cut_off), crash_before_mark=True)
    after = start(lives, tmp_path)
    after.deliver(update_of(big))  # on Kafka another partition's burst can come first in the batch
    more = case_burst(1, start=2, cause="fs-a", actor="anna")
    after.deliver(update_of(cut_off + more))
    once_each(after.jsonl, cut_off + big + more)


def test_killed_twice_before_the_cut_off_update_came_again(tmp_path: Path, lives: list[Stage]) -> None:
    a = case_burst(3, start=0, cause="fs-a", actor="anna")
    b = case_burst(300, start=100, cause="fs-b", actor="bo")
    with pytest.raises(Crash):
        start(lives, tmp_path).deliver(update_of(a), crash_before_mark=True)
    with pytest.raises(Crash):
        start(lives, tmp_path).deliver(update_of(b), crash_before_mark=True)
    third = start(lives, tmp_path)
    third.deliver(update_of(b[:150]))  # the batch split differently this time
    third.deliver(update_of(a))
    third.deliver(update_of(b))
    once_each(third.jsonl, a + b)
    # everything is marked now; the next life has nothing left to look at and writes the new event
    fourth = start(lives, tmp_path)
    fourth.deliver(update_of([closed(a[0])]))
    once_each(fourth.jsonl, [*a, *b, closed(a[0])])


def test_a_file_from_before_appends_were_recorded_gets_its_tail_searched(tmp_path: Path, lives: list[Stage]) -> None:
    events = case_burst(4)
    stage = start(lives, tmp_path)
    old = b"".join(
        (json.dumps(line, sort_keys=True, separators=(",", ":")) + "\n").encode()
        for line in stage.sink.render(update_of(events[:3]))
    )
    stage.jsonl.write_bytes(old)  # written and never marked, by a version that recorded nothing
    stage.deliver(update_of(events))
    once_each(stage.jsonl, events)


# ------------------------------------------------------------------ failures inside one life


def test_a_failed_fsync_is_retried_without_repeating_what_reached_the_file(
    tmp_path: Path, lives: list[Stage], monkeypatch: pytest.MonkeyPatch
) -> None:
    events = case_burst(3)
    stage = start(lives, tmp_path)
    real_fsync = os.fsync
    failures = [OSError(5, "Input/output error")]

    def flaky_fsync(fd: int) -> None:
        if failures:
            raise failures.pop()
        real_fsync(fd)

    monkeypatch.setattr("alerts.jsonl.os.fsync", flaky_fsync)
    with pytest.raises(RetryableSinkError, match="Input/output error"):
        stage.deliver(update_of(events))
    stage.deliver(update_of(events))  # the dispatcher's retry
    once_each(stage.jsonl, events)


def test_a_line_torn_by_a_crash_mid_write_is_written_again_on_a_line_of_its_own(
    tmp_path: Path, lives: list[Stage]
) -> None:
    events = case_burst(2)
    with pytest.raises(Crash):
        start(lives, tmp_path).deliver(update_of(events), crash_before_mark=True)
    jsonl = tmp_path / "alerts.jsonl"
    data = jsonl.read_bytes()
    jsonl.write_bytes(data[: len(data) - 40])  # the second line lost its end
    stage = start(lives, tmp_path)
    stage.deliver(update_of(events))
    lines = jsonl.read_text(encoding="utf-8").splitlines()
    assert [json.loads(line)["event_id"] for line in (lines[0], lines[2])] == [e.event_id for e in events]
    assert lines[1] == data[: len(data) - 40].decode().splitlines()[1]  # the torn line is left as it was


# ------------------------------------------------------------------ the normal case


def test_without_crashes_the_file_is_exactly_the_lines_in_order(tmp_path: Path, lives: list[Stage]) -> None:
    first = opened("exp-a", at=case_burst(1)[0].opened_at)
    updates = [update_of(case_burst(3)), update_of([first]), update_of([closed(first)])]
    stage = start(lives, tmp_path)
    expected = b""
    for update in updates:
        expected += b"".join(
            (json.dumps(line, sort_keys=True, separators=(",", ":")) + "\n").encode()
            for line in stage.sink.render(update)
        )
        stage.deliver(update)
    again = start(lives, tmp_path)  # a clean restart
    last = update_of([closed(case_burst(1)[0])])
    expected += b"".join(
        (json.dumps(line, sort_keys=True, separators=(",", ":")) + "\n").encode() for line in again.sink.render(last)
    )
    again.deliver(last)
    assert again.jsonl.read_bytes() == expected
    # what the sink keeps is the latest append, not a row per append
    rows = again.log.database.execute("SELECT COUNT(*) FROM file_appends").fetchone()[0]
    assert rows == 1


def test_a_large_existing_file_is_not_read_whole(tmp_path: Path, lives: list[Stage]) -> None:
    jsonl = tmp_path / "alerts.jsonl"
    with jsonl.open("wb") as fh:
        fh.truncate(512 * 1024 * 1024)  # half a GiB of history (sparse: cheap to make, not to read)
        fh.seek(0, os.SEEK_END)
        fh.write(b"\n")
    events = case_burst(3)
    stage = start(lives, tmp_path)
    before = bytes_read()
    stage.deliver(update_of(events[:2]))  # the first send of a life with no record: the tail is searched
    with pytest.raises(Crash):
        stage.deliver(update_of(events[2:]), crash_before_mark=True)
    restarted = start(lives, tmp_path)
    restarted.deliver(update_of(events))  # the recorded append is searched
    assert bytes_read() - before < 1024 * 1024
    assert jsonl.stat().st_size < 512 * 1024 * 1024 + 64 * 1024
    with jsonl.open("rb") as fh:
        fh.seek(512 * 1024 * 1024 + 1)
        assert Counter(json.loads(line)["event_id"] for line in fh) == Counter({e.event_id: 1 for e in events})
