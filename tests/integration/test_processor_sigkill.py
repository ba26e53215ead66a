"""Processor restarts on real Kafka: checkpoints, SIGKILL at random points, and what comes out the other end.

The acceptance test runs the same 50,000 input events (:mod:`tests.permission_stream`) through two pipelines of
real ``permwatch run --role processor`` and ``--role alerts`` processes on topics of their own: one left alone,
one whose processor is killed with SIGKILL at five random points and started again each time, with checkpoints
every second. Both must publish the same exposures (every event of every exposure: ids, sequences, folders,
times, readers; at-least-once may repeat an event, never change it), and the alerts stage must deliver each
exposure change once. Every restart must have started from a checkpoint; the restart times are printed (run
with ``-s``), with those of a clean restart with and without a checkpoint for comparison.
"""

from __future__ import annotations

import json
import random
import re
import signal
import struct
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import pytest
from kafka import KafkaConsumer, TopicPartition

from permwatch.config import KafkaConfig, TransportConfig
from permwatch.events import INPUT_TOPICS, AnyEvent, encode
from permwatch.transport import open_bus
from permwatch.transport.base import Bus, Consumer, Record, ReplayProgress
from permwatch.transport.kafka import KafkaBus
from processor import checkpoint
from tests.integration.pipeline import Pipeline, wait_until
from tests.integration.servers.kafka import KafkaBroker
from tests.permission_stream import Stream, stream

pytestmark = pytest.mark.integration

EVENTS = 50_000
KILLS = 5
SEED = 20_261_123
BATCH_MAX = 200  # the stream keeps one hot folder's changes ≥ 1,500 events (≈ 500 a partition) apart
COMPARED = (
    "exposure_id", "sequence", "status", "folder", "label", "people", "groups", "users", "grants", "paths_affected",
    "sample_paths", "cause_event_ids", "actor", "opened_at", "closed_at", "duration_seconds", "observed_at",
)  # fmt: skip
"""Every field of an exposure event but its detection time, which a rerun may change."""
RESTART = re.compile(
    r"processor restart: state rebuilt (?P<seconds>[\d.]+) s after the process started, (?P<replayed>[\d,]+) "
    r"records replayed (?P<basis>on top of the checkpoint|from the beginning)"
)
LOADED = " loaded in "
"""The log line of a checkpoint loaded at start (a checkpoint that does not fit says "not used")."""


# ------------------------------------------------------------------ the transports


def drain(consumer: Consumer, count: int) -> list[Record]:
    got: list[Record] = []

    def enough() -> bool:
        got.extend(consumer.poll(0.5))
        return len(got) >= count

    wait_until(enough, f"{count} records")
    return got


@pytest.mark.parametrize("kind", ["kafka", "confluent"])
def test_replay_starts_at_the_checkpoint_offsets(kind: str, kafka_broker: KafkaBroker, kafka_topic_prefix: str) -> None:
    config = KafkaConfig(bootstrap_servers=kafka_broker.bootstrap, topic_prefix=kafka_topic_prefix, partitions=3)
    bus: Bus = open_bus(TransportConfig(kind=kind, kafka=config))  # type: ignore[arg-type]
    for i in range(60):
        bus.publish("fs", f"/p{i % 6}", f"{i}".encode())
    bus.flush()
    first = bus.consumer(["fs"], "g1")
    committed: dict[int, int] = {}
    for r in drain(first, 60):
        committed[r.partition] = max(committed.get(r.partition, 0), r.offset + 1)
    first.commit()
    first.close()
    for i in range(60, 66):
        bus.publish("fs", f"/p{i % 6}", f"{i}".encode())
    bus.flush()

    named = [p for p in sorted(committed) if committed[p] >= 4][:2]  # partitions the "checkpoint" names
    start = {("fs", p): committed[p] - 3 for p in named}
    rebuilt = bus.consumer(["fs"], "g1", replay_history=True, replay_from=start)
    assert isinstance(rebuilt, ReplayProgress) and rebuilt.replay_pending()
    expected = 66 - sum(committed[p] - 3 for p in named)
    got: list[Record] = []

    def complete() -> bool:
        got.extend(rebuilt.poll(0.5))
        return len({(r.partition, r.offset) for r in got}) >= expected and not rebuilt.replay_pending()

    wait_until(complete, f"{expected} records and the replay over")
    # (a rebalance while joining starts the partitions over again, so a record may come twice)
    for p in committed:
        offsets = [r.offset for r in got if r.partition == p]
        start_at = committed[p] - 3 if p in named else 0
        assert offsets[0] == start_at and set(offsets) == set(range(start_at, max(offsets) + 1))
        assert all(r.replayed == (r.offset < committed[p]) for r in got if r.partition == p)
    assert sum(committed.values()) + 6 == sum(max(r.offset for r in got if r.partition == p) + 1 for p in committed)
    rebuilt.close()
    bus.close()


# ------------------------------------------------------------------ the acceptance test


@dataclass
class Outcome:
    exposures: dict[str, list[dict[str, Any]]]
    """exposure id → its events in sequence order"""
    alerts: list[dict[str, Any]]
    restarts: list[dict[str, Any]]
    """each start of the processor, from its log line"""


class Rig:
    """One pipeline (processor + alerts roles as processes) on topics with its own prefix."""

    def __init__(self, workdir: Path, broker: KafkaBroker, prefix: str, monkeypatch: pytest.MonkeyPatch) -> None:
        workdir.mkdir()
        self.pipeline = Pipeline(workdir, broker.bootstrap, prefix, share=workdir)
        self.pipeline.write_config("")
        self.monkeypatch = monkeypatch
        monkeypatch.setenv("PERMWATCH__PROCESSOR__BATCH_MAX", str(BATCH_MAX))
        monkeypatch.setenv("PERMWATCH__PROCESSOR__CHECKPOINT_INTERVAL_SECONDS", "1")
        self.bus = KafkaBus(KafkaConfig(bootstrap_servers=broker.bootstrap, topic_prefix=prefix, partitions=3))
        self.bus.ensure_topics()
        self.checkpoint = workdir / "state" / f"processor-{prefix}processor.checkpoint"
        self._offsets = KafkaConsumer(
            bootstrap_servers=broker.bootstrap, group_id=f"{prefix}processor", enable_auto_commit=False
        )
        self.prefix = prefix

    def publish(self, events: Sequence[AnyEvent]) -> None:
        for event in events:
            self.bus.publish(event.topic, event.key, encode(event))
        self.bus.flush()

    def committed_fs(self) -> int:
        """The processor group's committed offsets on the fs topic, summed over its partitions."""
        topic = f"{self.prefix}fs"
        return sum(self._offsets.committed(TopicPartition(topic, p)) or 0 for p in range(3))

    def checkpointed(self) -> int:
        """How many input records the checkpoint on disk covers (0 when there is none yet)."""
        try:
            data = self.checkpoint.read_bytes()
        except FileNotFoundError:
            return 0
        (length,) = struct.unpack_from(">I", data, len(checkpoint.MAGIC))
        start = len(checkpoint.MAGIC) + 4
        return int(json.loads(data[start : start + length])["records"])

    def caught_up(self, group: str, topics: Sequence[str]) -> bool:
        consumer = KafkaConsumer(
            bootstrap_servers=self.pipeline.bootstrap, group_id=self.prefix + group, enable_auto_commit=False
        )
        try:
            partitions = [TopicPartition(self.prefix + t, p) for t in topics for p in range(3)]
            ends = consumer.end_offsets(partitions)
            return all(end == 0 or (consumer.committed(tp) or 0) >= end for tp, end in ends.items())
        finally:
            consumer.close(autocommit=False)

    def restart(self, sig: int, **environment: str) -> None:
        self.pipeline.kill("processor", sig)
        for name, value in environment.items():
            self.monkeypatch.setenv(name, value)
        self.pipeline.start("processor")
        for name in environment:
            self.monkeypatch.delenv(name)

    def restarts(self) -> list[dict[str, Any]]:
        """Each start of the processor: whether it loaded a checkpoint, and (unless it was killed before)
        how long it took to rebuild its state and how many records it replayed."""
        starts = self.pipeline.log("processor").split("permwatch starting (role processor")[1:]
        out = []
        for log in starts:
            rebuilt = RESTART.search(log)
            out.append(
                {
                    "checkpoint": LOADED in log,
                    "seconds": float(rebuilt["seconds"]) if rebuilt else None,
                    "replayed": int(rebuilt["replayed"].replace(",", "")) if rebuilt else None,
                }
            )
            assert rebuilt is None or (rebuilt["basis"] == "on top of the checkpoint") == (LOADED in log)
        return out

    def outcome(self) -> Outcome:
        wait_until(lambda: self.caught_up("processor", INPUT_TOPICS), "the processor to catch up", timeout=600)
        wait_until(lambda: self.caught_up("alerts", ["exposures"]), "the alerts stage to catch up", timeout=300)
        reader = self.pipeline.reader("exposures")
        end = sum(reader._consumer.end_offsets([TopicPartition(reader.topic, p) for p in range(3)]).values())
        wait_until(lambda: len(reader.read()) >= end, f"{end} exposure events")
        by_event: dict[str, dict[str, Any]] = {}
        for value in reader.values:
            event = {name: value[name] for name in COMPARED}
            assert by_event.setdefault(value["event_id"], event) == event, "a repeated exposure event differs"
        exposures: dict[str, list[dict[str, Any]]] = {}
        for event in sorted(by_event.values(), key=lambda e: (e["exposure_id"], e["sequence"])):
            exposures.setdefault(event["exposure_id"], []).append(event)
        lines = self.pipeline.alerts_path.read_text(encoding="utf-8").splitlines()
        return Outcome(exposures, [json.loads(line) for line in lines], self.restarts())

    def close(self) -> None:
        self.pipeline.stop()
        self._offsets.close(autocommit=False)
        self.bus.close()


def run(rig: Rig, events: Stream, kill_points: list[int]) -> None:
    """The directory, then the folders until a checkpoint covers them, then the changes, killing the processor
    at ``kill_points``."""
    rig.publish(events.directory)
    rig.pipeline.start("processor")
    rig.pipeline.start("alerts")
    # The directory is applied before any path is judged, and the setup is checkpointed before any change:
    # the setup's records are on three topics, whose interleaving a full replay need not repeat, while the
    # changes of one folder share one partition.
    wait_until(lambda: rig.caught_up("processor", INPUT_TOPICS), "the processor to read the directory")
    rig.publish(events.folders)
    wait_until(lambda: rig.checkpointed() >= len(events.setup), "a checkpoint covering the setup", timeout=120)
    setup_fs = rig.committed_fs()
    # The changes go out while the processor is killed, as a file server's would.
    failed: list[BaseException] = []
    publisher = threading.Thread(target=publish_or_keep, args=(rig, events.changes, failed), name="publisher")
    publisher.start()
    try:
        rng = random.Random(SEED + 1)
        last = setup_fs
        for point in kill_points:
            # progress since the last kill, not just a stale commit; never past the last change (a processor that
            # raced to the end before the kill has nothing more to commit)
            target = min(max(setup_fs + point, last + 300), setup_fs + len(events.changes))
            try:
                wait_until(partial(progressing, rig, target), f"the processor to commit {target} fs records", 300)
            except AssertionError as exc:  # say where it stood and what the processor last said
                tail = rig.pipeline.log("processor")[-4000:]
                raise AssertionError(f"{exc} (committed: {rig.committed_fs()}); the processor's log:\n{tail}") from None
            time.sleep(rng.uniform(0, 0.3))
            rig.pipeline.kill("processor", signal.SIGKILL)
            # read once it is dead (it may commit a batch or two while the kill lands): the next kill waits
            # for 300 records this start handles itself, so that start has loaded its checkpoint
            last = rig.committed_fs()
            rig.pipeline.start("processor")
    finally:
        publisher.join()
    assert not failed, failed


def publish_or_keep(rig: Rig, events: Sequence[AnyEvent], failed: list[BaseException]) -> None:
    try:
        rig.publish(events)
    except BaseException as exc:  # handed to the test's thread, which fails with it
        failed.append(exc)


def reached(rig: Rig, target: int) -> bool:
    return rig.committed_fs() >= target


def progressing(rig: Rig, target: int) -> bool:
    """`reached`, failing at once with the end of the processor's log when it is not running (rather than
    after the wait's timeout, with nothing to go on)."""
    proc = rig.pipeline.procs["processor"]
    if proc.poll() is not None:
        tail = rig.pipeline.log("processor")[-4000:]
        raise AssertionError(f"the processor exited with {proc.returncode} at {rig.committed_fs()}; its log:\n{tail}")
    return reached(rig, target)


def rebuilt(rig: Rig, starts: int) -> bool:
    restarts = rig.restarts()
    return len(restarts) == starts and restarts[-1]["seconds"] is not None


def windows(outcome: Outcome) -> dict[str, tuple[Any, ...]]:
    """exposure id → (folder, opened at, closed at, the readers it last had)."""
    out = {}
    for exposure_id, events in outcome.exposures.items():
        last_open: dict[str, Any] = next((e for e in reversed(events) if e["status"] != "closed"), {})
        closed = events[-1]["closed_at"] if events[-1]["status"] == "closed" else None
        readers = (last_open.get("groups"), last_open.get("users"))
        out[exposure_id] = (events[0]["folder"], events[0]["opened_at"], closed, readers)
    return out


def test_sigkill_at_random_points_changes_no_exposure_and_repeats_no_alert(
    kafka_broker: KafkaBroker, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    events = stream(hot=200, quiet=300, files=10, total=EVENTS, gap=1500, seed=SEED)
    assert len(events.events) == EVENTS
    changes_fs = len(events.changes)
    kill_points = sorted(random.Random(SEED).sample(range(changes_fs // 10, changes_fs * 7 // 10, 250), KILLS))
    print(f"\n{EVENTS:,} events ({len(events.setup):,} setup), kill points (fs records after the setup): {kill_points}")

    steady = Rig(tmp_path / "steady", kafka_broker, "steady.", monkeypatch)
    try:
        run(steady, events, [])
        expected = steady.outcome()
        # the figures to compare with: a clean restart with a checkpoint, and one without
        steady.restart(signal.SIGTERM)
        wait_until(partial(rebuilt, steady, 2), "the restart with a checkpoint", timeout=300)
        steady.restart(signal.SIGTERM, PERMWATCH__PROCESSOR__CHECKPOINT="false")
        wait_until(partial(rebuilt, steady, 3), "the restart without a checkpoint", timeout=300)
        clean = steady.restarts()
    finally:
        steady.close()

    killed = Rig(tmp_path / "killed", kafka_broker, "killed.", monkeypatch)
    try:
        run(killed, events, kill_points)
        got = killed.outcome()
    finally:
        killed.close()

    print(f"clean restart with a checkpoint: {clean[1]}; without: {clean[2]}")
    for i, restart in enumerate(got.restarts[1:], 1):
        print(f"restart {i} after SIGKILL: {restart}")

    # the same exposures as the uninterrupted run, event for event
    assert len(expected.exposures) > 500
    assert any(e[-1]["status"] != "closed" for e in expected.exposures.values())  # some still open at the end
    assert any(len(e) > 2 for e in expected.exposures.values())  # opened, changed, closed
    assert windows(got) == windows(expected)
    assert got.exposures == expected.exposures

    # no alert twice: one JSONL line per exposure event, an exposure opened and closed once each
    for outcome in (expected, got):
        delivered = [line["event_id"] for line in outcome.alerts]
        assert len(delivered) == len(set(delivered)), "an exposure change was alerted twice"
        assert set(delivered) == {f"{e['exposure_id']}.{e['sequence']}" for x in outcome.exposures.values() for e in x}
        ends = [(line["exposure_id"], line["status"]) for line in outcome.alerts if line["status"] != "changed"]
        assert len(ends) == len(set(ends))

    # every restart after a kill started from a checkpoint; the clean ones as configured
    assert [r["checkpoint"] for r in got.restarts] == [False] + [True] * KILLS
    assert clean[1]["checkpoint"] and clean[1]["replayed"] == 0
    assert not clean[2]["checkpoint"] and clean[2]["replayed"] == EVENTS
