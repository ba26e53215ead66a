"""The Kafka transport on confluent-kafka (librdkafka), an optional alternative to kafka-python.

Same topics, keys, guarantees and :class:`permwatch.transport.base.Bus`
contract as :mod:`permwatch.transport.kafka`: idempotent ``acks=all``
producer, consumer groups, no auto-commit (commits are synchronous and only
when the stage says its effects are durable). librdkafka does the network
work in C, which is several times faster than the pure-Python client on a
busy pipeline (see ``bench/throughput.py``). Select it with
``transport.kind = "confluent"``; it needs the ``confluent-kafka`` package
(``pip install 'permwatch[confluent]'``).
"""

from __future__ import annotations

import heapq
import logging
from collections.abc import Iterator, Sequence
from dataclasses import replace
from typing import Any

from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaException, Message, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic

from permwatch.config import KafkaConfig
from permwatch.events import MAX_MESSAGE_BYTES
from permwatch.transport.base import Record
from permwatch.transport.kafka import ALL_TOPICS

log = logging.getLogger(__name__)


class ConfluentBus:
    def __init__(self, config: KafkaConfig) -> None:
        self.config = config
        self._producer: Producer | None = None
        self._topics_ready = False
        self._failed: list[str] = []

    def name(self, topic: str) -> str:
        return f"{self.config.topic_prefix}{topic}"

    def logical(self, name: str) -> str:
        return name.removeprefix(self.config.topic_prefix)

    def _common(self) -> dict[str, Any]:
        return {"bootstrap.servers": self.config.bootstrap_servers, "client.id": self.config.client_id}

    def ensure_topics(self, topics: Sequence[str] = ALL_TOPICS) -> None:
        if self._topics_ready:
            return
        admin = AdminClient(self._common())
        existing = set(admin.list_topics(timeout=30).topics)
        missing = [
            NewTopic(self.name(t), self.config.partitions, self.config.replication_factor)
            for t in topics
            if self.name(t) not in existing
        ]
        for name, future in admin.create_topics(missing).items() if missing else ():
            try:
                future.result()
                log.info("created topic %s", name)
            except KafkaException as exc:
                if "TOPIC_ALREADY_EXISTS" not in str(exc):
                    raise
        self._topics_ready = True

    def _get_producer(self) -> Producer:
        if self._producer is None:
            self.ensure_topics()
            self._producer = Producer(
                {
                    **self._common(),
                    "acks": "all",
                    "enable.idempotence": True,
                    "linger.ms": 2,
                    "message.max.bytes": MAX_MESSAGE_BYTES + 64 * 1024,
                }
            )
        return self._producer

    def _delivered(self, err: Any, msg: Any) -> None:
        if err is not None:
            self._failed.append(str(err))

    def publish(self, topic: str, key: str | None, value: bytes) -> None:
        producer = self._get_producer()
        while True:
            try:
                producer.produce(self.name(topic), value=value, key=key, on_delivery=self._delivered)
                break
            except BufferError:
                producer.poll(0.1)  # the local queue is full: let deliveries drain, then try again
        producer.poll(0)

    def flush(self) -> None:
        if self._producer is None:
            return
        left = self._producer.flush(60)
        if left or self._failed:
            failed, self._failed = self._failed, []
            raise KafkaException(f"{left} record(s) not delivered; {failed[:3]}")

    def consumer(self, topics: Sequence[str], group: str, *, replay_history: bool = False) -> ConfluentConsumer:
        self.ensure_topics()
        return ConfluentConsumer(self, [self.name(t) for t in topics], group, replay_history)

    def history(self, topics: Sequence[str], *, until_ms: int | None = None) -> Iterator[Record]:
        self.ensure_topics()
        consumer = Consumer({**self._common(), "group.id": "permwatch-history", "enable.auto.commit": False})
        try:
            metadata = consumer.list_topics(timeout=30)
            partitions = [
                TopicPartition(self.name(t), p)
                for t in topics
                for p in sorted(metadata.topics[self.name(t)].partitions)
            ]
            ends: dict[tuple[str, int], int] = {
                (tp.topic, tp.partition): consumer.get_watermark_offsets(tp, timeout=30)[1] for tp in partitions
            }
            if until_ms is not None:
                cut = consumer.offsets_for_times(
                    [TopicPartition(tp.topic, tp.partition, until_ms + 1) for tp in partitions]
                )
                for tp in cut:
                    if tp.offset >= 0:
                        ends[tp.topic, tp.partition] = min(ends[tp.topic, tp.partition], tp.offset)
            consumer.assign([TopicPartition(tp.topic, tp.partition, OFFSET_BEGINNING) for tp in partitions])
            per_partition: dict[tuple[str, int], list[Record]] = {k: [] for k in ends}
            remaining = {k for k, end in ends.items() if end > 0}
            while remaining:
                for m in consumer.consume(10_000, timeout=0.5):
                    if m.error():
                        continue
                    record = _record(self, m)
                    k = (self.name(record.topic), record.partition)
                    if record.offset >= ends[k]:
                        remaining.discard(k)
                        continue
                    per_partition[k].append(record)
                    if record.offset + 1 >= ends[k]:
                        remaining.discard(k)
        finally:
            consumer.close()
        yield from heapq.merge(*per_partition.values(), key=lambda r: r.timestamp_ms)

    def close(self) -> None:
        if self._producer is not None:
            self._producer.flush(60)
            self._producer = None


class ConfluentConsumer:
    """A group consumer; with ``replay_history`` each assigned partition starts over from the beginning."""

    def __init__(self, bus: ConfluentBus, names: list[str], group: str, replay_history: bool) -> None:
        self._bus = bus
        self._consumer = Consumer(
            {
                **bus._common(),
                "group.id": group,
                "enable.auto.commit": False,
                "auto.offset.reset": "earliest",
                "fetch.max.bytes": MAX_MESSAGE_BYTES * 4,
            }
        )
        self._replay_until: dict[tuple[str, int], int] = {}
        if replay_history:
            self._consumer.subscribe(names, on_assign=self._rewind)
        else:
            self._consumer.subscribe(names)

    def _rewind(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        committed = consumer.committed(partitions, timeout=30)
        for tp in committed:
            self._replay_until[tp.topic, tp.partition] = max(tp.offset, 0)
        consumer.assign([TopicPartition(tp.topic, tp.partition, OFFSET_BEGINNING) for tp in partitions])

    def poll(self, timeout: float, max_records: int = 500) -> list[Record]:
        records = []
        for m in self._consumer.consume(max_records, timeout=timeout):
            if m.error():
                log.warning("consumer: %s", m.error())
                continue
            record = _record(self._bus, m)
            until = self._replay_until.get((m.topic() or "", record.partition), 0)
            records.append(replace(record, replayed=True) if record.offset < until else record)
        return records

    def commit(self) -> None:
        try:
            self._consumer.commit(asynchronous=False)
        except KafkaException as exc:
            if "NO_OFFSET" not in str(exc):  # nothing consumed since the last commit
                raise

    def close(self) -> None:
        self._consumer.close()


def _record(bus: ConfluentBus, m: Message) -> Record:
    key = m.key()
    return Record(
        bus.logical(m.topic() or ""),
        m.partition() or 0,
        m.offset() or 0,
        key.decode("utf-8", "replace") if isinstance(key, bytes) else key,
        m.value(),
        m.timestamp()[1],
    )
