"""The collectors' spool: the file queue (order, bound, restart, damage) and the spooling bus over a fake Kafka.

The fake Kafka acknowledges at once while up; while down it holds what it is
given, like the producer's buffer, until it comes back (delivered then, in
order) or the test expires it (failed, as after the delivery timeout).
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry

from collectors.fs import FsCollector
from collectors.labels import LabelPolicy
from collectors.settings import SpoolConfig
from collectors.spool import (
    RecordDropped,
    SpooledRecord,
    SpoolingBus,
    SpoolQueue,
    TrackingBus,
    open_spooling_bus,
)
from permwatch.cli.settings import load_config
from permwatch.config import ConfigError, LabelDefinition, LabelsConfig
from permwatch.events import Event, FsKind, LabelAssigned
from permwatch.metrics import Metrics
from permwatch.transport.base import Consumer, Record
from tests.unit.test_fs_collector import ListEmitter, config, running, wait_for


def record(i: int, key: str | None = None) -> SpooledRecord:
    return SpooledRecord("fs", key if key is not None else f"/share/f{i % 7}", f"value-{i}".encode())


def read_all(queue: SpoolQueue) -> list[SpooledRecord]:
    records, _ = queue.read(1 << 30, 1 << 40)
    return records


# ------------------------------------------------------------------ the queue


def test_queue_keeps_order_across_segments_and_restarts(tmp_path: Path) -> None:
    queue = SpoolQueue(tmp_path / "spool", 1 << 20, segment_bytes=4096)
    written = [record(i) for i in range(1000)]
    for each in written:
        assert queue.append(each)
    queue.sync()
    assert len(list((tmp_path / "spool").glob("*.seg"))) > 5
    assert read_all(queue) == written
    first, end = queue.read(300, 1 << 30)
    assert first == written[:300]
    queue.advance(end, len(first))
    queue.close()

    reopened = SpoolQueue(tmp_path / "spool", 1 << 20, segment_bytes=4096)
    assert reopened.records == 700
    more = [record(i) for i in range(1000, 1010)]
    for each in more:
        reopened.append(each)
    assert read_all(reopened) == written[300:] + more
    records, end = reopened.read(1 << 30, 1 << 40)
    reopened.advance(end, len(records))
    assert reopened.records == 0
    assert list((tmp_path / "spool").glob("*.seg")) == []  # delivered segments are deleted, the active one too
    reopened.append(record(1))
    assert read_all(reopened) == [record(1)]
    reopened.close()


def test_queue_is_bounded_by_max_bytes(tmp_path: Path) -> None:
    queue = SpoolQueue(tmp_path / "spool", 8192, segment_bytes=2048)
    accepted = 0
    while queue.append(record(accepted)):
        accepted += 1
    assert 100 < accepted < 500
    assert queue.bytes <= 8192
    queue.sync()
    assert sum(p.stat().st_size for p in (tmp_path / "spool").glob("*.seg")) == queue.bytes
    assert queue.records == accepted
    queue.append(record(0), beyond_bound=True)  # what the producer held when Kafka went away is always kept
    assert queue.records == accepted + 1
    records, end = queue.read(1 << 30, 1 << 40)
    queue.advance(end, len(records))
    assert queue.bytes == 0 and queue.append(record(1))
    queue.close()


def test_a_torn_last_record_is_skipped_with_a_log_line(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    queue = SpoolQueue(tmp_path / "spool", 1 << 20)
    written = [record(i) for i in range(50)]
    for each in written:
        queue.append(each)
    queue.close()
    (segment,) = (tmp_path / "spool").glob("*.seg")
    with segment.open("r+b") as fh:  # the process stopped in the middle of writing the last record
        fh.truncate(segment.stat().st_size - 5)

    with caplog.at_level(logging.WARNING):
        reopened = SpoolQueue(tmp_path / "spool", 1 << 20)
    assert "ends in a torn record" in caplog.text
    assert reopened.records == 49
    assert read_all(reopened) == written[:49]
    assert not reopened.rescan_needed  # never confirmed to anyone: the collector publishes it again itself
    reopened.append(record(99))
    assert read_all(reopened) == [*written[:49], record(99)]
    reopened.close()


def test_damage_inside_a_segment_skips_the_rest_and_asks_for_a_rescan(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    queue = SpoolQueue(tmp_path / "spool", 1 << 20)
    written = [record(i) for i in range(50)]
    for each in written:
        queue.append(each)
    queue.close()
    (segment,) = (tmp_path / "spool").glob("*.seg")
    data = bytearray(segment.read_bytes())
    data[len(b"PWSPOOL1") + sum(len(r.encode()) for r in written[:25]) + 20] ^= 0xFF  # inside record 25
    segment.write_bytes(bytes(data))

    with caplog.at_level(logging.WARNING):
        reopened = SpoolQueue(tmp_path / "spool", 1 << 20)
    assert "is damaged at byte" in caplog.text
    survivors = read_all(reopened)
    assert survivors == written[:25]
    assert reopened.damaged == 1 and reopened.rescan_needed
    reopened.close()
    again = SpoolQueue(tmp_path / "spool", 1 << 20)
    assert again.rescan_needed  # the marker is on disk
    again.close()


def test_a_spool_directory_that_cannot_be_made_names_the_key(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("")
    with pytest.raises(ConfigError, match=r"key .collector.spool.path.: .*cannot use as spool"):
        open_spooling_bus(FakeKafka(), SpoolConfig(path=blocker / "spool"), state_dir=tmp_path)


def test_spool_settings_in_the_config_file(tmp_path: Path) -> None:
    path = tmp_path / "permwatch.toml"
    path.write_text('[collector.spool]\npath = "spool-here"\nmax_bytes = 65536\nflush_timeout_seconds = 3\n')
    spool = load_config(path, environ={}).collector.spool
    assert (spool.path, spool.max_bytes, spool.flush_timeout_seconds, spool.enabled) == (
        tmp_path / "spool-here",
        65536,
        3.0,
        True,
    )
    assert load_config(path, environ={"PERMWATCH__COLLECTOR__SPOOL__ENABLED": "false"}).collector.spool.enabled is False
    path.write_text("[collector.spool]\nmax_bytes = 10\nsize = 3\n")
    with pytest.raises(ConfigError) as raised:
        load_config(path, environ={})
    assert str(raised.value).splitlines() == [
        f"{path}: key 'collector.spool.max_bytes': Input should be greater than or equal to 4096",
        f"{path}: key 'collector.spool.size': unknown key",
    ]


# ------------------------------------------------------------- the fake kafka


class FakeDelivery:
    def __init__(self) -> None:
        self._settled = threading.Event()
        self._error: BaseException | None = None
        self._permanent = False

    def wait(self, timeout: float) -> bool:
        return self._settled.wait(timeout) if timeout > 0 else self._settled.is_set()

    @property
    def error(self) -> BaseException | None:
        return self._error

    @property
    def permanent(self) -> bool:
        return self._permanent

    def settle(self, error: BaseException | None = None, *, permanent: bool = False) -> None:
        self._error, self._permanent = error, permanent
        self._settled.set()


class FakeKafka:
    """Delivered records in order; ``up`` says whether sends are acknowledged at once."""

    def __init__(self) -> None:
        self.up = True
        self.refuse: Callable[[SpooledRecord], bool] = lambda r: False
        self.delivered: list[SpooledRecord] = []
        self.pending: list[tuple[SpooledRecord, FakeDelivery]] = []
        self._lock = threading.Lock()

    def send_tracked(self, topic: str, key: str | None, value: bytes, *, broadcast: bool = False) -> FakeDelivery:
        sent = SpooledRecord(topic, key, value, broadcast)
        delivery = FakeDelivery()
        with self._lock:
            if self.refuse(sent):
                delivery.settle(ValueError("too large"), permanent=True)
            elif self.up:
                self.delivered.append(sent)
                delivery.settle()
            else:
                self.pending.append((sent, delivery))
        return delivery

    def come_back(self, deliver: Callable[[SpooledRecord], bool] = lambda r: True) -> None:
        """Up again; the held records are delivered in order, except those ``deliver`` says failed meanwhile."""
        with self._lock:
            for sent, delivery in self.pending:
                if deliver(sent):
                    self.delivered.append(sent)
                    delivery.settle()
                else:
                    delivery.settle(TimeoutError("expired in the producer"))
            self.pending.clear()
            self.up = True

    def expire(self) -> None:
        with self._lock:
            for _, delivery in self.pending:
                delivery.settle(TimeoutError("expired in the producer"))
            self.pending.clear()

    # the rest of the Bus; the spooling bus does not use it
    def publish(self, topic: str, key: str | None, value: bytes) -> None:
        raise NotImplementedError

    def broadcast(self, topic: str, key: str | None, value: bytes) -> None:
        raise NotImplementedError

    def flush(self) -> None:
        raise NotImplementedError

    def consumer(self, topics: object, group: str, **kwargs: object) -> Consumer:
        raise NotImplementedError

    def history(self, topics: object, *, until_ms: int | None = None) -> Iterator[Record]:
        raise NotImplementedError

    def close(self) -> None:
        pass


def test_the_fake_is_a_tracking_bus() -> None:
    assert isinstance(FakeKafka(), TrackingBus)


@pytest.fixture
def kafka() -> FakeKafka:
    return FakeKafka()


@pytest.fixture
def metrics() -> Metrics:
    return Metrics.create(CollectorRegistry())


def spooling_bus(
    kafka: FakeKafka, path: Path, *, max_bytes: int = 1 << 20, metrics: Metrics | None = None, **kwargs: object
) -> SpoolingBus:
    options: dict[str, object] = {"flush_timeout": 0.2, "retry_seconds": 0.05, **kwargs}
    return SpoolingBus(kafka, SpoolQueue(path, max_bytes, segment_bytes=4096), metrics=metrics, **options)  # type: ignore[arg-type]


def sample(metrics: Metrics, name: str, **labels: str) -> float:
    value = metrics.registry.get_sample_value(name, labels)
    return 0.0 if value is None else value


def publish(bus: SpoolingBus, records: list[SpooledRecord]) -> None:
    for each in records:
        bus.publish(each.topic, each.key, each.value)


def wait_direct(bus: SpoolingBus) -> None:
    wait_for(lambda: not bus.spooling, what="the spool to drain")


# --------------------------------------------------------------- the bus


def test_publishes_straight_through_while_kafka_acknowledges(kafka: FakeKafka, tmp_path: Path) -> None:
    bus = spooling_bus(kafka, tmp_path / "spool")
    bus.start()
    records = [record(i) for i in range(100)]
    publish(bus, records)
    bus.flush()
    assert kafka.delivered == records
    assert not bus.spooling and list((tmp_path / "spool").glob("*.seg")) == []
    bus.close()


def test_an_outage_spools_and_the_drain_keeps_every_key_in_order(
    kafka: FakeKafka, tmp_path: Path, metrics: Metrics, caplog: pytest.LogCaptureFixture
) -> None:
    bus = spooling_bus(kafka, tmp_path / "spool", metrics=metrics)
    bus.start()
    before = [record(i) for i in range(10)]
    publish(bus, before)
    bus.flush()
    kafka.up = False
    held = [record(i) for i in range(10, 30)]  # handed to the producer before anyone knew
    publish(bus, held)
    with caplog.at_level(logging.WARNING):
        bus.flush()  # no acknowledgement within the flush timeout
        assert bus.spooling
        after = [record(i) for i in range(30, 530)]
        publish(bus, after)
        bus.flush()
        assert sample(metrics, "permwatch_spool_spooling") == 1
        assert sample(metrics, "permwatch_spool_records") == len(held) + len(after)
        assert sample(metrics, "permwatch_spool_bytes") > 0
        assert [r for r, _ in kafka.pending] == held  # only the producer's own records, nothing new
        kafka.come_back()
        wait_direct(bus)
    assert f"spooling to {tmp_path / 'spool'}" in caplog.text
    assert "spool drained: 520 records in" in caplog.text
    assert kafka.delivered == before + held + after  # the producer's retries first, then the spool
    assert sample(metrics, "permwatch_spool_spooling") == 0 and sample(metrics, "permwatch_spool_records") == 0
    assert sample(metrics, "permwatch_spool_drained_total") == 520
    publish(bus, [record(999)])
    bus.flush()
    assert kafka.delivered[-1] == record(999)
    bus.close()


def test_records_the_producer_gave_up_on_are_sent_again_first(kafka: FakeKafka, tmp_path: Path) -> None:
    bus = spooling_bus(kafka, tmp_path / "spool")
    bus.start()
    kafka.up = False
    held = [record(i) for i in range(20)]
    publish(bus, held)
    bus.flush()
    later = [record(i) for i in range(20, 40)]
    publish(bus, later)
    bus.flush()
    kafka.expire()  # past the delivery timeout: the producer reports them failed
    time.sleep(0.2)
    kafka.come_back()
    wait_direct(bus)
    assert kafka.delivered == held + later


def test_a_key_whose_earlier_record_failed_ends_on_its_last_state(kafka: FakeKafka, tmp_path: Path) -> None:
    bus = spooling_bus(kafka, tmp_path / "spool")
    bus.start()
    kafka.up = False
    a1, b1, a2 = SpooledRecord("fs", "a", b"a1"), SpooledRecord("fs", "b", b"b1"), SpooledRecord("fs", "a", b"a2")
    publish(bus, [a1, b1, a2])
    bus.flush()
    kafka.come_back(deliver=lambda r: r != a1)  # a1 expired, the later ones made it
    wait_direct(bus)
    assert kafka.delivered == [b1, a2, a1, a2]  # a ends on a2; b1 is not repeated


def test_a_record_kafka_refuses_for_good_is_dropped_with_a_log_line(
    kafka: FakeKafka, tmp_path: Path, metrics: Metrics, caplog: pytest.LogCaptureFixture
) -> None:
    bus = spooling_bus(kafka, tmp_path / "spool", metrics=metrics)
    bus.start()
    kafka.refuse = lambda r: r.value == b"value-3"
    publish(bus, [record(i) for i in range(6)])
    bus.flush()
    assert not bus.spooling
    assert [r.value for r in kafka.delivered] == [b"value-0", b"value-1", b"value-2", b"value-4", b"value-5"]
    assert "kafka refused a fs record" in caplog.text
    assert sample(metrics, "permwatch_spool_dropped_total", reason="rejected") == 1


def test_a_full_spool_drops_then_asks_for_a_rescan_once_drained(
    kafka: FakeKafka, tmp_path: Path, metrics: Metrics, caplog: pytest.LogCaptureFixture
) -> None:
    bus = spooling_bus(kafka, tmp_path / "spool", max_bytes=8192, metrics=metrics)
    rescans: list[float] = []
    bus.on_recovered(lambda: rescans.append(time.monotonic()))
    bus.start()
    kafka.up = False
    publish(bus, [record(0)])
    bus.flush()
    kept, dropped = [], 0
    for i in range(1, 1000):
        try:
            bus.publish("fs", f"k{i}", f"value-{i}".encode())
            kept.append(i)
        except RecordDropped:
            dropped += 1
    bus.flush()
    assert dropped and kept == list(range(1, len(kept) + 1))  # once full, everything is dropped until drained
    assert "spool full (max_bytes=8192): dropping, rescan after recovery" in caplog.text
    assert sample(metrics, "permwatch_spool_dropped_total", reason="full") == dropped
    assert (tmp_path / "spool" / "rescan-needed").exists()
    assert not rescans
    kafka.come_back()
    wait_direct(bus)
    wait_for(lambda: rescans, what="the rescan callback")
    assert not (tmp_path / "spool" / "rescan-needed").exists()
    assert [r.key for r in kafka.delivered] == ["/share/f0", *(f"k{i}" for i in kept)]
    bus.publish("fs", "after", b"x")  # direct again
    bus.close()


def test_a_spool_left_from_before_is_sent_before_anything_new(kafka: FakeKafka, tmp_path: Path) -> None:
    first = spooling_bus(kafka, tmp_path / "spool")
    kafka.up = False
    old = [record(i) for i in range(300)]
    publish(first, old)
    first.flush()
    first.close()  # the process stops while Kafka is still away
    kafka.come_back(deliver=lambda r: False)  # what the old producer held is gone with it
    kafka.delivered.clear()

    second = spooling_bus(kafka, tmp_path / "spool")
    assert second.spooling  # before the drain even starts
    new = [record(i) for i in range(300, 310)]
    publish(second, new)
    second.flush()
    assert kafka.delivered == []
    second.start()
    wait_direct(second)
    assert kafka.delivered == old + new
    second.close()


def test_a_rescan_owed_from_before_is_asked_for_at_start(kafka: FakeKafka, tmp_path: Path) -> None:
    queue = SpoolQueue(tmp_path / "spool", 1 << 20)
    queue.mark_rescan_needed()
    queue.close()
    bus = spooling_bus(kafka, tmp_path / "spool")
    called = threading.Event()
    bus.on_recovered(called.set)
    bus.start()
    assert called.wait(5)
    bus.close()


def test_open_spooling_bus_follows_the_config(kafka: FakeKafka, tmp_path: Path) -> None:
    assert open_spooling_bus(kafka, SpoolConfig(enabled=False), state_dir=tmp_path) is None
    bus = open_spooling_bus(kafka, SpoolConfig(max_bytes=65536), state_dir=tmp_path)
    assert bus is not None and bus.path == tmp_path / "spool"
    bus.close()


# --------------------------------------------------- the filesystem collector


class DroppingEmitter(ListEmitter):
    """A spool that is full while ``full`` is set: those events raise :class:`RecordDropped`."""

    def __init__(self) -> None:
        super().__init__()
        self.full = False

    def emit(self, event: Event) -> None:
        if self.full:
            raise RecordDropped("full")
        super().emit(event)


def test_the_fs_collector_publishes_what_the_full_spool_dropped_in_its_rescan(tmp_path: Path) -> None:
    share = tmp_path / "share"
    (share / "ledning").mkdir(parents=True)
    (share / "ledning" / "notes.txt").write_text("x")
    (share / "old.txt").write_text("x")
    os.chmod(share / "ledning" / "notes.txt", 0o600)
    labels = LabelsConfig(definitions={"ledning": LabelDefinition(allowed_groups=["ledningsgrupp"])})
    emitter = DroppingEmitter()
    collector = FsCollector(
        config(share, coalesce_ms=0),
        emitter,
        labeller=LabelPolicy(labels, source="fs-test"),
        state_path=tmp_path / "fs.db",
    )
    with running(collector, emitter):
        emitter.full = True
        os.chmod(share / "ledning" / "notes.txt", 0o644)  # changed, deleted, labelled: all dropped
        (share / "old.txt").unlink()
        (share / "ledning" / ".sensitivity").write_text("ledning\n")
        time.sleep(1.0)
        emitter.full = False
        marker = len(emitter.events)
        collector.request_spool_rescan()
        scan = wait_for(
            lambda: next((s for s in emitter.scans() if s.reason == "spool_overflow"), None),
            what="the spool_overflow rescan",
        )
        after = emitter.events[marker:]
    changed = [e for e in after if getattr(e, "path", None) == str(share / "ledning" / "notes.txt")]
    assert [(e.kind, e.mode) for e in changed] == [(FsKind.CHANGED, 0o644)]  # type: ignore[attr-defined]
    deleted = [e for e in after if getattr(e, "path", None) == str(share / "old.txt")]
    assert [e.kind for e in deleted] == [FsKind.DELETED]  # type: ignore[attr-defined]
    label = [e for e in after if isinstance(e, LabelAssigned) and e.path == str(share / "ledning")]
    assert [(e.label.name if e.label else None) for e in label] == ["ledning"]
    assert scan.paths_changed >= 2
    collector.close()
