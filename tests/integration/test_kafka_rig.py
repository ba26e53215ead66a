"""End-to-end check of the real-Kafka rig with kafka-python: topics, keyed
produce, group consume with manual commits, offsets_for_times, and committed
offsets surviving a broker restart."""

from __future__ import annotations

import time
from collections import defaultdict
from collections.abc import Callable

import pytest
from kafka import KafkaAdminClient, KafkaConsumer, KafkaProducer, TopicPartition
from kafka.admin import NewTopic
from kafka.consumer.fetcher import ConsumerRecord
from kafka.serializer import DefaultSerializer

from tests.integration.servers.kafka import KafkaBroker

PARTITIONS = 3
KEYS = [f"key-{i}" for i in range(10)]
MESSAGES = 100
TIMEOUT = 60.0
# kafka-python 3.x deprecates plain callables as (de)serializers.
UTF8 = DefaultSerializer("utf-8")


def _wait_for(condition: Callable[[], bool], what: str, timeout: float = TIMEOUT) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(0.1)


def _consumer(broker: KafkaBroker, group: str, topic: str) -> KafkaConsumer:
    consumer = KafkaConsumer(
        bootstrap_servers=broker.bootstrap,
        group_id=group,
        enable_auto_commit=False,
        auto_offset_reset="earliest",
        key_deserializer=UTF8,
        value_deserializer=UTF8,
    )
    # Load the topic's metadata *before* subscribing. kafka-python 3.0.12 can
    # otherwise join the group before it knows the partitions, and a short
    # poll() that times out during the follow-up rejoin leaves the consumer
    # with an empty assignment forever (seen ~1 in 6 right after a restart).
    assert consumer.partitions_for_topic(topic) == set(range(PARTITIONS))
    consumer.subscribe([topic])
    return consumer


def _poll_until(consumer: KafkaConsumer, count: int, what: str, timeout: float = TIMEOUT) -> list[ConsumerRecord]:
    records: list[ConsumerRecord] = []
    deadline = time.monotonic() + timeout
    while len(records) < count:
        if time.monotonic() > deadline:
            raise AssertionError(f"got {len(records)}/{count} {what} within {timeout}s")
        for batch in consumer.poll(timeout_ms=500).values():
            records.extend(batch)
    return records


@pytest.mark.integration
def test_produce_consume_commit_survives_restart(kafka_broker: KafkaBroker, kafka_topic_prefix: str) -> None:
    topic = f"{kafka_topic_prefix}rig"
    group = f"{kafka_topic_prefix}group"

    admin = KafkaAdminClient(bootstrap_servers=kafka_broker.bootstrap)
    try:
        admin.create_topics([NewTopic(name=topic, num_partitions=PARTITIONS, replication_factor=1)])
        assert topic in admin.list_topics()
    finally:
        admin.close()

    before_produce_ms = int(time.time() * 1000)
    producer = KafkaProducer(
        bootstrap_servers=kafka_broker.bootstrap,
        acks="all",
        key_serializer=UTF8,
        value_serializer=UTF8,
    )
    try:
        futures = [
            producer.send(topic, key=KEYS[i % len(KEYS)], value=f"{KEYS[i % len(KEYS)]}:{i}") for i in range(MESSAGES)
        ]
        producer.flush(timeout=TIMEOUT)
        metadata = [future.get(timeout=TIMEOUT) for future in futures]
    finally:
        producer.close()
    end_offsets: dict[int, int] = defaultdict(int)
    for md in metadata:
        end_offsets[md.partition] = max(end_offsets[md.partition], md.offset + 1)
    assert sum(end_offsets.values()) == MESSAGES

    consumer = _consumer(kafka_broker, group, topic)
    try:
        records = _poll_until(consumer, MESSAGES, "records")
        assert len(records) == MESSAGES
        seqs_by_key: dict[str, list[int]] = defaultdict(list)
        partition_by_key: dict[str, set[int]] = defaultdict(set)
        for record in records:
            key, seq = record.value.split(":")
            assert key == record.key
            seqs_by_key[key].append(int(seq))
            partition_by_key[key].add(record.partition)
        assert sorted(seqs_by_key) == sorted(KEYS)
        for key, seqs in seqs_by_key.items():
            assert seqs == sorted(seqs), f"per-key order broken for {key}: {seqs}"
            assert len(partition_by_key[key]) == 1, f"{key} spread over partitions"
        consumer.commit()
        for partition, end in end_offsets.items():
            assert consumer.committed(TopicPartition(topic, partition)) == end
    finally:
        consumer.close()

    # offsets_for_times, via a group-less consumer with manual assignment.
    lookup = KafkaConsumer(bootstrap_servers=kafka_broker.bootstrap)
    try:
        found = lookup.offsets_for_times({TopicPartition(topic, p): before_produce_ms for p in end_offsets})
        for tp, offset_and_ts in found.items():
            assert offset_and_ts is not None, tp
            assert offset_and_ts.offset == 0
            assert offset_and_ts.timestamp >= before_produce_ms
    finally:
        lookup.close()

    bootstrap = kafka_broker.bootstrap
    kafka_broker.stop()
    assert not kafka_broker.running
    kafka_broker.start()
    assert kafka_broker.running
    assert kafka_broker.bootstrap == bootstrap

    consumer = _consumer(kafka_broker, group, topic)
    try:
        redelivered: list[ConsumerRecord] = []

        def assigned() -> bool:
            for batch in consumer.poll(timeout_ms=200).values():
                redelivered.extend(batch)
            return len(consumer.assignment()) == PARTITIONS

        _wait_for(assigned, "partition assignment after restart")
        assert redelivered == []
        for partition in range(PARTITIONS):
            tp = TopicPartition(topic, partition)
            expected = end_offsets.get(partition, 0)
            assert (consumer.committed(tp) or 0) == expected
            assert consumer.position(tp) == expected

        producer = KafkaProducer(
            bootstrap_servers=kafka_broker.bootstrap,
            acks="all",
            key_serializer=UTF8,
            value_serializer=UTF8,
        )
        try:
            producer.send(topic, key="after-restart", value="after-restart:0").get(timeout=TIMEOUT)
        finally:
            producer.close()

        # Had the committed offsets been lost, old records would arrive first.
        fresh = _poll_until(consumer, 1, "records after restart")
        assert [r.value for r in fresh] == ["after-restart:0"]
    finally:
        consumer.close()
