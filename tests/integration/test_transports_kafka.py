"""The Bus contract on real Kafka, for both Kafka transports (kafka-python and confluent-kafka)."""

from __future__ import annotations

import logging
import threading
import time
from typing import Any

import pytest
from kafka import KafkaConsumer, TopicPartition
from kafka.admin import ConfigResource, ConfigResourceType, KafkaAdminClient, NewTopic

from permwatch.config import KafkaConfig, TransportConfig
from permwatch.events import MAX_MESSAGE_BYTES
from permwatch.transport import open_bus
from permwatch.transport.base import Bus, Consumer, EndOffsets, PublishError, Record, ReplayProgress
from permwatch.transport.topics import ALL_TOPICS, DEADLETTER_MAX_BYTES, RECORD_MAX_BYTES
from tests.integration.pipeline import wait_until
from tests.integration.servers.kafka import KafkaBroker

pytestmark = pytest.mark.integration

KINDS = ["kafka", "confluent"]


def bus_for(kind: str, broker: KafkaBroker, prefix: str, **settings: Any) -> Bus:
    config = KafkaConfig(bootstrap_servers=broker.bootstrap, topic_prefix=prefix, partitions=3, **settings)
    return open_bus(TransportConfig(kind=kind, kafka=config))  # type: ignore[arg-type]


def topic_settings(broker: KafkaBroker, names: list[str]) -> dict[str, dict[str, str]]:
    """Each topic's retention and size, once the broker describes them all (a new topic takes a moment)."""
    admin = KafkaAdminClient(bootstrap_servers=broker.bootstrap)
    keys = {"retention.ms": None, "max.message.bytes": None}
    resources = [ConfigResource(ConfigResourceType.TOPIC, name, keys) for name in names]
    found: dict[str, dict[str, str]] = {}

    def described() -> bool:
        entries = admin.describe_configs(resources, config_filter="all")["topic"]
        found.update({name: {key: e["value"] for key, e in each.items()} for name, each in entries.items()})
        return all(len(found.get(name, {})) == len(keys) for name in names)

    try:
        wait_until(described, f"the settings of {', '.join(names)}")
    finally:
        admin.close()
    return found


def drain(consumer: Consumer, count: int) -> list[Record]:
    got: list[Record] = []
    wait_until(lambda: got.extend(consumer.poll(0.5)) or len(got) >= count, f"{count} records")
    return got


@pytest.mark.parametrize("kind", KINDS)
def test_bus_contract(kind: str, kafka_broker: KafkaBroker, kafka_topic_prefix: str) -> None:
    bus = bus_for(kind, kafka_broker, kafka_topic_prefix)
    for i in range(60):
        bus.publish("fs", f"/p{i % 6}", f"{i}".encode())
    bus.flush()
    consumer = bus.consumer(["fs"], "g1")
    records = drain(consumer, 60)
    assert len(records) == 60
    for key in {r.key for r in records}:
        values = [int(r.value or b"") for r in records if r.key == key]
        assert values == sorted(values), "one key's records stay in order"
    consumer.commit()
    consumer.close()

    bus.publish("fs", "/p0", b"60")
    bus.flush()
    resumed = bus.consumer(["fs"], "g1")
    assert [r.value for r in drain(resumed, 1)] == [b"60"]
    resumed.commit()
    resumed.close()

    # a commit part-way through a replay leaves the group's position where it was
    partway = bus.consumer(["fs"], "g1", replay_history=True)
    first: list[Record] = []
    wait_until(lambda: first.extend(partway.poll(0.5, max_records=5)) or bool(first), "the first replayed records")
    assert 0 < len(first) < 61 and all(r.replayed for r in first)
    partway.commit()
    partway.close()

    rebuilt = bus.consumer(["fs"], "g1", replay_history=True)
    again = drain(rebuilt, 61)
    assert sum(r.replayed for r in again) == 61  # all committed before: history to rebuild from
    rebuilt.commit()
    rebuilt.close()
    bus.publish("fs", "/p2", b"61")
    bus.flush()
    plain = bus.consumer(["fs"], "g1")
    assert [r.value for r in drain(plain, 1)] == [b"61"]  # not the replayed ones again
    plain.close()

    cut = int(time.time() * 1000)
    while int(time.time() * 1000) <= cut + 5:
        time.sleep(0.005)
    bus.publish("fs", "/p1", b"late")
    bus.flush()
    history = list(bus.history(["fs"]))
    assert len(history) == 63 and history[-1].value == b"late"
    assert [r.timestamp_ms for r in history] == sorted(r.timestamp_ms for r in history)
    assert len(list(bus.history(["fs"], until_ms=cut))) == 62
    bus.close()


@pytest.mark.parametrize("kind", KINDS)
def test_topics_keep_history_and_have_room_for_dead_letters(
    kind: str, kafka_broker: KafkaBroker, kafka_topic_prefix: str, caplog: pytest.LogCaptureFixture
) -> None:
    # one topic made beforehand by someone else, on the broker's defaults but for a week's retention
    admin = KafkaAdminClient(bootstrap_servers=kafka_broker.bootstrap)
    admin.create_topics([NewTopic(f"{kafka_topic_prefix}labels", 3, 1, topic_configs={"retention.ms": "604800000"})])
    # "beforehand": the broker has it, with its settings, before permwatch looks (a creation racing permwatch's
    # own is the other case, covered by ensure_topics checking a topic whose creation it lost)
    deadline = time.monotonic() + 30
    while f"{kafka_topic_prefix}labels" not in admin.list_topics():
        assert time.monotonic() < deadline, "the broker never listed the topic made beforehand"
        time.sleep(0.1)
    admin.close()
    caplog.set_level(logging.WARNING, logger="permwatch.transport")
    bus = bus_for(kind, kafka_broker, kafka_topic_prefix)
    bus.ensure_topics()  # type: ignore[attr-defined]
    names = [f"{kafka_topic_prefix}{t}" for t in ALL_TOPICS]
    settings = topic_settings(kafka_broker, names)
    for topic in ("fs", "directory", "exposures"):
        assert settings[f"{kafka_topic_prefix}{topic}"] == {
            "retention.ms": "-1",
            "max.message.bytes": str(RECORD_MAX_BYTES),
        }
    assert settings[f"{kafka_topic_prefix}deadletter"]["max.message.bytes"] == str(DEADLETTER_MAX_BYTES)
    # what exists is left as it is, with one warning saying what it lacks
    assert settings[f"{kafka_topic_prefix}labels"]["retention.ms"] == "604800000"
    warnings = [r.getMessage() for r in caplog.records if "exists with" in r.getMessage()]
    assert warnings == [
        f"topic {kafka_topic_prefix}labels exists with max.message.bytes=1048588 (want at least {RECORD_MAX_BYTES}); "
        "retention.ms=604800000 (want -1, for good)"
    ]

    # the largest record an input topic takes, refused by a stage, fits the dead-letter topic whole
    largest = b"x" * (MAX_MESSAGE_BYTES + 1)
    bus.publish("fs", "/big", largest)
    bus.publish("deadletter", "/big", b"{" + b"y" * (len(largest) * 4 // 3 + 4096) + b"}")
    bus.flush()
    with pytest.raises(PublishError, match=f"the first on {kafka_topic_prefix}fs"):
        bus.publish("fs", "/bigger", b"x" * (RECORD_MAX_BYTES + 1024))
        bus.flush()
    assert [r.key for r in bus.history(["fs", "deadletter"])] == ["/big", "/big"]
    bus.close()

    retained = bus_for(kind, kafka_broker, f"{kafka_topic_prefix}r.", retention_days=30)
    retained.ensure_topics()  # type: ignore[attr-defined]
    assert topic_settings(kafka_broker, [f"{kafka_topic_prefix}r.fs"])[f"{kafka_topic_prefix}r.fs"][
        "retention.ms"
    ] == str(30 * 86_400_000)
    retained.close()


@pytest.mark.parametrize("kind", KINDS)
def test_flush_waits_out_an_outage_longer_than_the_delivery_timeout(
    kind: str, kafka_broker: KafkaBroker, kafka_topic_prefix: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="permwatch.transport")
    bus = bus_for(kind, kafka_broker, kafka_topic_prefix, delivery_timeout_seconds=2)
    bus.publish("fs", "/a", b"before")
    bus.flush()
    flushed = threading.Event()
    failed: list[BaseException] = []

    def flush() -> None:
        try:
            bus.flush()
        except BaseException as exc:  # handed to the test's thread
            failed.append(exc)
        flushed.set()

    kafka_broker.stop()
    try:
        bus.publish("fs", "/a", b"during")
        flusher = threading.Thread(target=flush, name="flush")
        flusher.start()
        # the record timed out at least once: kafka-python's own flush would have returned without it
        wait_until(lambda: "sending them again" in caplog.text, "a delivery timed out and sent again", timeout=120)
        assert not flushed.is_set()
    finally:
        kafka_broker.start()
    flusher.join(180)
    assert flushed.is_set() and not failed, failed
    values = [r.value for r in bus.history(["fs"])]
    if kind == "confluent":  # librdkafka's idempotent producer: each record stored once
        assert values == [b"before", b"during"]
    else:
        # kafka-python is not idempotent here (see KafkaBus._new_producer): a send the broker stored but
        # answered after the delivery timeout (it was still starting) is sent again. At least once, in order:
        # the record after "before", and nothing but that record repeated.
        assert values[:2] == [b"before", b"during"] and set(values[2:]) <= {b"during"}, values
    bus.close()


@pytest.mark.parametrize("kind", KINDS)
def test_a_state_saved_past_the_groups_commit_is_committed_with_nothing_new_to_read(
    kind: str, kafka_broker: KafkaBroker, kafka_topic_prefix: str
) -> None:
    """A stage killed after saving its checkpoint and before committing starts again at the checkpoint: with
    nothing new to read, its commit still moves the group there (the CI run that found it waited for the
    processor's lag to close; Grafana would have shown the stale gap as lag)."""
    bus = bus_for(kind, kafka_broker, kafka_topic_prefix)
    for i in range(30):
        bus.publish("fs", f"/p{i % 6}", b"x")
    bus.flush()
    ranges = bus.offset_ranges(["fs"])
    assert ranges is not None and sum(end for _first, end in ranges.values()) == 30
    saved = {key: end for key, (_first, end) in ranges.items()}
    consumer = bus.consumer(["fs"], "g-saved", replay_history=True, replay_from=saved)
    assert isinstance(consumer, ReplayProgress)
    wait_until(lambda: not consumer.poll(0.2) and not consumer.replay_pending(), "the partitions assigned")
    consumer.commit()
    consumer.close()
    offsets = KafkaConsumer(bootstrap_servers=kafka_broker.bootstrap, group_id="g-saved", enable_auto_commit=False)
    try:
        committed = {p: offsets.committed(TopicPartition(f"{kafka_topic_prefix}fs", p)) for p in range(3)}
    finally:
        offsets.close()
    assert committed == {part: end for (_topic, part), end in saved.items()}
    bus.close()


@pytest.mark.parametrize("kind", KINDS)
def test_end_offsets_while_reading_are_the_log_ends(
    kind: str, kafka_broker: KafkaBroker, kafka_topic_prefix: str
) -> None:
    """What a restarted processor reconciles at: every assigned partition's log end, asked while the consumer has
    a backlog to fetch (confluent's per-partition watermark query waited ~0.3 s a partition behind the fetches
    then: 4,900 events/s in bench/throughput.py for 37,900 before), and reached only once all of it is read."""
    bus = bus_for(kind, kafka_broker, kafka_topic_prefix)
    for i in range(3000):
        bus.publish("fs", f"/p{i % 6}", b"x" * 100)
    bus.flush()
    ranges = bus.offset_ranges(["fs"])
    assert ranges is not None
    consumer = bus.consumer(["fs"], "g-ends", replay_history=False)
    assert isinstance(consumer, EndOffsets)
    got = drain(consumer, 1)
    ends = consumer.end_offsets()
    assert ends == {key: end for key, (_first, end) in ranges.items()}
    assert sum(ends.values()) == 3000
    if len(got) < 3000:
        assert not consumer.reached(ends)
    drain(consumer, 3000 - len(got))
    assert consumer.reached(ends)
    consumer.close()
    bus.close()
