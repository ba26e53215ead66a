"""The embedded log: order, consumer groups, commit-after-handling, replay of history, time seek, and its faults (a
full disk, a damaged file)."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import pytest

from permwatch.transport.base import EventLogDamaged, EventLogError
from permwatch.transport.embedded import EmbeddedBus


def test_publish_order_and_group_commit(tmp_path: Path) -> None:
    bus = EmbeddedBus(tmp_path / "log.db")
    for i in range(5):
        bus.publish("fs", f"/p{i % 2}", f"v{i}".encode())
    bus.publish("labels", "/p0", b"label")
    bus.flush()
    consumer = bus.consumer(["fs", "labels"], "g")
    records = consumer.poll(1.0)
    assert [r.value for r in records] == [b"v0", b"v1", b"v2", b"v3", b"v4", b"label"]
    assert [r.offset for r in records] == sorted(r.offset for r in records)
    consumer.close()
    # nothing committed: a new consumer in the same group sees everything again
    again = bus.consumer(["fs", "labels"], "g")
    assert len(again.poll(1.0)) == 6
    again.commit()
    again.close()
    after = bus.consumer(["fs", "labels"], "g")
    assert after.poll(0.05) == []
    bus.publish("fs", "/p9", b"new")
    bus.flush()
    assert [r.value for r in after.poll(1.0)] == [b"new"]


def test_replay_history_marks_committed_records(tmp_path: Path) -> None:
    bus = EmbeddedBus(tmp_path / "log.db")
    for i in range(3):
        bus.publish("fs", "/a", str(i).encode())
    bus.flush()
    first = bus.consumer(["fs"], "g")
    first.poll(1.0)
    first.commit()
    bus.publish("fs", "/a", b"3")
    bus.flush()
    rebuilt = bus.consumer(["fs"], "g", replay_history=True)
    records = rebuilt.poll(1.0)
    assert [(r.value, r.replayed) for r in records] == [(b"0", True), (b"1", True), (b"2", True), (b"3", False)]


def test_a_commit_part_way_through_a_replay_leaves_the_group_position(tmp_path: Path) -> None:
    bus = EmbeddedBus(tmp_path / "log.db")
    for i in range(4):
        bus.publish("fs", "/a", str(i).encode())
    bus.flush()
    first = bus.consumer(["fs"], "g")
    first.poll(1.0)
    first.commit()
    first.close()
    partway = bus.consumer(["fs"], "g", replay_history=True)
    assert [(r.value, r.replayed) for r in partway.poll(1.0, max_records=2)] == [(b"0", True), (b"1", True)]
    partway.commit()
    partway.close()
    # killed there: the next replay marks all four replayed, and a plain consumer resumes after them
    again = bus.consumer(["fs"], "g", replay_history=True)
    assert [r.replayed for r in again.poll(1.0)] == [True] * 4
    again.close()
    bus.publish("fs", "/a", b"4")
    bus.flush()
    assert [r.value for r in bus.consumer(["fs"], "g").poll(1.0)] == [b"4"]


def test_unflushed_records_are_invisible_and_other_topics_ignored(tmp_path: Path) -> None:
    bus = EmbeddedBus(tmp_path / "log.db")
    consumer = bus.consumer(["exposures"], "g")
    bus.publish("exposures", "/a", b"x")
    bus.publish("fs", "/a", b"y")
    assert consumer.poll(0.01) == []
    bus.flush()
    assert [r.value for r in consumer.poll(1.0)] == [b"x"]


def test_poll_wakes_when_another_thread_flushes(tmp_path: Path) -> None:
    bus = EmbeddedBus(tmp_path / "log.db")
    consumer = bus.consumer(["fs"], "g")
    got: list[bytes | None] = []

    def read() -> None:
        got.extend(r.value for r in consumer.poll(30.0))

    reader = threading.Thread(target=read)
    reader.start()
    bus.publish("fs", "/a", b"hello")
    bus.flush()
    reader.join(30.0)
    assert got == [b"hello"]


def test_reader_seeks_by_time(tmp_path: Path) -> None:
    bus = EmbeddedBus(tmp_path / "log.db")
    bus.publish("fs", "/a", b"old")
    bus.flush()
    cut = int(time.time() * 1000) + 1
    while int(time.time() * 1000) <= cut:
        time.sleep(0.001)
    bus.publish("fs", "/a", b"new")
    bus.flush()
    reader = bus.reader(["fs"], since_ms=cut)
    assert [r.value for r in reader.poll(1.0)] == [b"new"]


def test_a_flush_that_finds_the_log_full_keeps_its_records_and_says_why(tmp_path: Path) -> None:
    bus = EmbeddedBus(tmp_path / "log.db")
    pages = bus._conn.execute("PRAGMA page_count").fetchone()[0]
    bus._conn.execute(f"PRAGMA max_page_count = {pages + 2}")  # a full disk, as SQLite reports it
    for i in range(200):
        bus.publish("fs", f"/p{i}", bytes(2000))
    with pytest.raises(EventLogError, match=rf"^event log {tmp_path / 'log.db'}: database or disk is full$"):
        bus.flush()
    assert len(bus._pending) == 200 and not bus._conn.in_transaction
    with pytest.raises(EventLogError, match="database or disk is full"):  # again, and nothing else goes wrong
        bus.flush()
    bus._conn.execute("PRAGMA max_page_count = 1000000")  # room again: the same records go in, once each
    bus.flush()
    assert [r.key for r in bus.history(["fs"])] == [f"/p{i}" for i in range(200)]
    bus.close()


def test_a_damaged_log_is_named_with_the_way_out(tmp_path: Path) -> None:
    path = tmp_path / "log.db"
    bus = EmbeddedBus(path)
    for i in range(3000):
        bus.publish("fs", f"/p{i}", bytes(300))
    bus.flush()
    bus.close()
    with path.open("r+b") as fh:  # garbage over the log's pages, past the header
        fh.seek(path.stat().st_size // 2)
        fh.write(b"\xa5" * 8192)
    with pytest.raises(EventLogDamaged) as raised:
        EmbeddedBus(path)
    message = str(raised.value)
    assert message.startswith(f"event log {path} is damaged (") and "\n" not in message
    assert f"move it aside and rescan into a fresh log: stop permwatch, mv {path} {path}.damaged" in message
    path.write_bytes(b"not a database at all, " * 400)
    with pytest.raises(EventLogDamaged, match=r"is damaged \(file is not a database\); move it aside"):
        EmbeddedBus(path)
