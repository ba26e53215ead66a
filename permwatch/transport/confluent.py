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
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import replace
from typing import Any

from confluent_kafka import (
    OFFSET_BEGINNING,
    Consumer,
    KafkaError,
    KafkaException,
    Message,
    Producer,
    TopicPartition,
)
from confluent_kafka.admin import AdminClient, ConfigResource, NewTopic, OffsetSpec, ResourceType

from permwatch.config import KafkaConfig
from permwatch.transport.base import PublishError, Record, checkpoint_starts
from permwatch.transport.kafka_security import librdkafka_options, unreachable_message
from permwatch.transport.topics import ALL_TOPICS, DEADLETTER_MAX_BYTES, differences, topic_configs

log = logging.getLogger(__name__)


class ConfluentBus:
    def __init__(self, config: KafkaConfig) -> None:
        self.config = config
        self._security = librdkafka_options(config)  # holds the SASL password: never log it
        self._producer: Producer | None = None
        self._topics_ready = False
        self._failed: list[tuple[KafkaError, Message]] = []
        self._partitions: dict[str, list[int]] = {}
        self._admin: AdminClient | None = None

    def name(self, topic: str) -> str:
        return f"{self.config.topic_prefix}{topic}"

    def logical(self, name: str) -> str:
        return name.removeprefix(self.config.topic_prefix)

    def _common(self) -> dict[str, Any]:
        return {
            "bootstrap.servers": self.config.bootstrap_servers,
            "client.id": self.config.client_id,
            **self._security,
        }

    def log_ends(self, partitions: Sequence[TopicPartition]) -> dict[tuple[str, int], int]:
        """The log end of each partition, asked in one request per broker. (A group consumer's own
        ``get_watermark_offsets`` waits behind its fetches: ~0.3 s a partition while it reads, measured.)"""
        if not partitions:
            return {}
        if self._admin is None:
            self._admin = AdminClient(self._common())
        asked = {TopicPartition(tp.topic, tp.partition): OffsetSpec.latest() for tp in partitions}
        answers = self._admin.list_offsets(asked, request_timeout=30)
        return {(tp.topic, tp.partition): answer.result().offset for tp, answer in answers.items()}

    def ensure_topics(self, topics: Sequence[str] = ALL_TOPICS) -> None:
        if self._topics_ready:
            return
        admin = AdminClient(self._common())
        try:
            existing = set(admin.list_topics(timeout=30).topics)
        except KafkaException as exc:  # the first contact: say what was tried (librdkafka says "transport failure")
            raise KafkaException(unreachable_message(self.config, exc)) from None
        missing = [
            NewTopic(
                self.name(t),
                self.config.partitions,
                self.config.replication_factor,
                config=topic_configs(t, self.config),
            )
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
                existing.add(name)  # made by someone else since the listing (metadata lags): check it too
        self._check_existing(admin, [t for t in topics if self.name(t) in existing])
        self._topics_ready = True

    def _check_existing(self, admin: AdminClient, topics: Sequence[str]) -> None:
        """Warn (once a start) about a topic made elsewhere whose settings lose records; change nothing."""
        if not topics:
            return
        resources = [ConfigResource(ResourceType.TOPIC, self.name(t)) for t in topics]
        for resource, future in admin.describe_configs(resources).items():
            try:
                entries = future.result(timeout=30)
            except KafkaException as exc:  # e.g. no DescribeConfigs permission: advice, not a condition
                log.info("topic settings of %s not checked (%s)", resource.name, exc)
                continue
            found = {key: entry.value for key, entry in entries.items() if entry.value is not None}
            lacking = differences(topic_configs(self.logical(resource.name), self.config), found)
            if lacking:
                log.warning("topic %s exists with %s", resource.name, "; ".join(lacking))

    def _get_producer(self) -> Producer:
        if self._producer is None:
            self.ensure_topics()
            self._producer = Producer(
                {
                    **self._common(),
                    "acks": "all",
                    "enable.idempotence": True,
                    "linger.ms": 2,
                    "message.max.bytes": DEADLETTER_MAX_BYTES,
                    "delivery.timeout.ms": int(self.config.delivery_timeout_seconds * 1000),
                }
            )
        return self._producer

    def _delivered(self, err: KafkaError | None, msg: Message) -> None:
        if err is not None:
            self._failed.append((err, msg))

    def publish(self, topic: str, key: str | None, value: bytes) -> None:
        self._produce(self.name(topic), key, value, None)
        self._get_producer().poll(0)

    def broadcast(self, topic: str, key: str | None, value: bytes) -> None:
        producer = self._get_producer()
        name = self.name(topic)
        partitions = self._partitions.get(name)
        if partitions is None:
            found = producer.list_topics(name, timeout=30).topics[name].partitions
            partitions = self._partitions[name] = sorted(found)
        for partition in partitions:
            self._produce(name, key, value, partition)
        producer.poll(0)

    def _produce(self, name: str, key: str | bytes | None, value: bytes, partition: int | None) -> None:
        producer = self._get_producer()
        while True:
            try:
                if partition is None:
                    producer.produce(name, value=value, key=key, on_delivery=self._delivered)
                else:
                    producer.produce(name, value=value, key=key, partition=partition, on_delivery=self._delivered)
                return
            except BufferError:
                producer.poll(0.1)  # the local queue is full: let deliveries drain, then try again

    def send_tracked(self, topic: str, key: str | None, value: bytes, *, broadcast: bool = False) -> ConfluentDelivery:
        """:meth:`publish` (or :meth:`broadcast`) returning a handle on the outcome, for the collectors' spool.

        Never raises for an unreachable broker or a full local queue: that comes back as a failed delivery.
        """
        try:
            producer = self._get_producer()
            name = self.name(topic)
            partitions: list[int | None] = [None]
            if broadcast:
                if name not in self._partitions:
                    self._partitions[name] = sorted(producer.list_topics(name, timeout=30).topics[name].partitions)
                partitions = list(self._partitions[name])
            delivery = ConfluentDelivery(producer, len(partitions))
            for partition in partitions:
                if partition is None:
                    producer.produce(name, value=value, key=key, on_delivery=delivery.delivered)
                else:
                    producer.produce(name, value=value, key=key, partition=partition, on_delivery=delivery.delivered)
            producer.poll(0)
            return delivery
        except (KafkaException, BufferError) as exc:
            return ConfluentDelivery(None, 0, exc)

    def flush(self) -> None:
        """Until every record since the last flush is stored; as :meth:`KafkaBus.flush`, an outage is waited
        out (what timed out is produced again) and a refusal raises :class:`PublishError`."""
        if self._producer is None:
            return
        while True:
            while left := self._producer.flush(60) or 0:  # each one is delivered or fails within delivery.timeout.ms
                log.info("%d record(s) still on their way to Kafka", left)
            failed, self._failed = self._failed, []
            if not failed:
                return
            refused = [(err, msg) for err, msg in failed if not _passing(err)]
            if refused:
                err, msg = refused[0]
                raise PublishError(f"Kafka refused {len(refused)} record(s), the first on {msg.topic()} ({err.str()})")
            log.warning("%d record(s) not delivered (%s); sending them again", len(failed), failed[0][0].name())
            for _, msg in failed:
                partition = msg.partition()
                self._produce(
                    msg.topic() or "",
                    msg.key(),
                    msg.value() or b"",
                    None if partition is None or partition < 0 else partition,
                )

    def consumer(
        self,
        topics: Sequence[str],
        group: str,
        *,
        replay_history: bool = False,
        replay_from: Mapping[tuple[str, int], int] | None = None,
        member: str | None = None,
    ) -> ConfluentConsumer:
        self.ensure_topics()
        return ConfluentConsumer(self, [self.name(t) for t in topics], group, replay_history, replay_from, member)

    def history(
        self,
        topics: Sequence[str],
        *,
        until_ms: int | None = None,
        start: Mapping[tuple[str, int], int] | None = None,
    ) -> Iterator[Record]:
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
            firsts = {
                (tp.topic, tp.partition): (start or {}).get((self.logical(tp.topic), tp.partition), 0)
                for tp in partitions
            }
            consumer.assign(
                [
                    TopicPartition(tp.topic, tp.partition, firsts[tp.topic, tp.partition] or OFFSET_BEGINNING)
                    for tp in partitions
                ]
            )
            per_partition: dict[tuple[str, int], list[Record]] = {k: [] for k in ends}
            remaining = {k for k, end in ends.items() if end > firsts[k]}
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

    @property
    def log_id(self) -> str | None:
        """None: a checkpoint is checked against the partitions' offset ranges only (see LogExtent)."""
        return None

    def describe(self) -> str:
        return f"Kafka topics {self.config.topic_prefix}* on {self.config.bootstrap_servers}"

    def offset_ranges(self, topics: Sequence[str]) -> dict[tuple[str, int], tuple[int, int]] | None:
        consumer = Consumer({**self._common(), "group.id": "permwatch-offset-ranges", "enable.auto.commit": False})
        try:
            metadata = consumer.list_topics(timeout=30)
            ranges = {}
            for topic in topics:
                found = metadata.topics.get(self.name(topic))
                for partition in sorted(found.partitions if found is not None and found.error is None else ()):
                    first, end = consumer.get_watermark_offsets(TopicPartition(self.name(topic), partition), timeout=30)
                    ranges[topic, partition] = (first, end)
        except KafkaException:
            return None
        finally:
            consumer.close()
        return ranges

    def close(self) -> None:
        if self._producer is not None:
            self._producer.flush(60)
            self._producer = None


class ConfluentConsumer:
    """A group consumer; with ``replay_history`` each assigned partition starts over from the beginning
    (or from its ``replay_from`` offset)."""

    def __init__(
        self,
        bus: ConfluentBus,
        names: list[str],
        group: str,
        replay_history: bool,
        replay_from: Mapping[tuple[str, int], int] | None = None,
        member: str | None = None,
    ) -> None:
        self._bus = bus
        self._consumer = Consumer(
            {
                **bus._common(),
                "group.id": group,
                **({"group.instance.id": member} if member else {}),
                "enable.auto.commit": False,
                "auto.offset.reset": "earliest",
                "fetch.max.bytes": DEADLETTER_MAX_BYTES * 2,
                "session.timeout.ms": int(bus.config.session_timeout_seconds * 1000),
            }
        )
        self._replay_until: dict[tuple[str, int], int] = {}
        self._replay_from = dict(replay_from or {})
        self.resumed = False
        """Whether the first assignment started where ``replay_from`` said (see Bus.consumer)."""
        self.generation = 0
        """Counts assignment changes (each assignment and each revocation, seen during :meth:`poll`): a stage
        keeping per-partition state rebuilds on a change."""
        self._next: dict[tuple[str, int], int] = {}
        # the offset after the last record returned, per partition with records to replay
        self._uncommitted: dict[tuple[str, int], int] = {}
        # the offset after the last record returned since the last commit, per partition
        self._assigned = False
        self._fetched: dict[tuple[str, int], int] = {}
        # the offset after the last record returned (or where the partition started), per partition owned
        if replay_history:
            self._consumer.subscribe(names, on_assign=self._rewind, on_revoke=self._revoked)
        else:
            self._consumer.subscribe(names)

    def _rewind(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        committed = consumer.committed(partitions, timeout=30)
        saved = checkpoint_starts(self._replay_from, {(self._bus.logical(tp.topic), tp.partition) for tp in partitions})
        self.resumed, self._replay_from = bool(saved), {}  # a saved state stands where it stood at the start
        starts = []
        for tp in committed:
            key = (tp.topic, tp.partition)
            until = self._replay_until[key] = max(tp.offset, 0)
            start = saved.get((self._bus.logical(tp.topic), tp.partition))
            if start is not None:  # a checkpoint covers what comes before
                starts.append(TopicPartition(tp.topic, tp.partition, start))
                self._next[key] = self._fetched[key] = start
                if start > until:  # the state is saved past the group's commit: the next commit says so too
                    self._uncommitted[key] = start
                continue
            starts.append(TopicPartition(tp.topic, tp.partition, OFFSET_BEGINNING))
            low = consumer.get_watermark_offsets(TopicPartition(tp.topic, tp.partition), timeout=30)[0]
            self._fetched[key] = low
            if until > 0:
                self._next[key] = low
        consumer.assign(starts)
        self._assigned = True
        self.generation += 1

    def _revoked(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        if partitions:
            self.generation += 1
        for tp in partitions:
            self._replay_until.pop((tp.topic, tp.partition), None)
            self._next.pop((tp.topic, tp.partition), None)
            self._uncommitted.pop((tp.topic, tp.partition), None)
            self._fetched.pop((tp.topic, tp.partition), None)

    def replay_pending(self) -> bool:
        if not self._assigned:
            return True
        return any(self._next.get(key, until) < until for key, until in self._replay_until.items())

    def poll(self, timeout: float, max_records: int = 500) -> list[Record]:
        records = []
        for m in self._consumer.consume(max_records, timeout=timeout):
            if m.error():
                log.warning("consumer: %s", m.error())
                continue
            record = _record(self._bus, m)
            key = (m.topic() or "", record.partition)
            until = self._replay_until.get(key, 0)
            records.append(replace(record, replayed=True) if record.offset < until else record)
            self._uncommitted[key] = self._fetched[key] = record.offset + 1
            if key in self._next:
                self._next[key] = record.offset + 1
        return records

    def partitions(self) -> set[tuple[str, int]]:
        """The (topic, partition)s this consumer owns now."""
        return {(self._bus.logical(tp.topic), tp.partition) for tp in self._consumer.assignment()}

    def end_offsets(self) -> dict[tuple[str, int], int]:
        ends = self._bus.log_ends(self._consumer.assignment())
        return {(self._bus.logical(topic), partition): end for (topic, partition), end in ends.items()}

    def reached(self, ends: Mapping[tuple[str, int], int]) -> bool:
        for tp in self._consumer.assignment():
            end = ends.get((self._bus.logical(tp.topic), tp.partition))
            if end is not None and self._fetched.get((tp.topic, tp.partition), 0) < end:
                return False
        return True

    def commit(self) -> None:
        # What was returned, except where a replay has not yet reached the group's commit (see Consumer.commit).
        returned = list(self._uncommitted.items())
        offsets = [
            TopicPartition(topic, partition, offset)
            for (topic, partition), offset in returned
            if offset >= self._replay_until.get((topic, partition), 0)
        ]
        if offsets:
            self._consumer.commit(offsets=offsets, asynchronous=False)
        for key, offset in returned:
            if self._uncommitted.get(key) == offset:
                del self._uncommitted[key]

    def close(self) -> None:
        self._consumer.close()


def _passing(err: KafkaError) -> bool:
    """An error that ends when the broker is back (librdkafka does not call a message timeout retriable)."""
    return bool(err.retriable()) or err.code() in _PASSING


_PASSING = {
    KafkaError._MSG_TIMED_OUT,
    KafkaError._TIMED_OUT,
    KafkaError._TIMED_OUT_QUEUE,
    KafkaError._TRANSPORT,
    KafkaError._ALL_BROKERS_DOWN,
    KafkaError._QUEUE_FULL,
}


class ConfluentDelivery:
    """The outcome of one record (or one broadcast's copies); waiting serves the producer's callbacks."""

    def __init__(self, producer: Producer | None, copies: int, error: BaseException | None = None) -> None:
        self._producer = producer
        self._left = copies
        self._error = error
        self._failures: list[KafkaError] = []

    def delivered(self, err: KafkaError | None, msg: Any) -> None:
        if err is not None:
            self._failures.append(err)
        self._left -= 1

    def wait(self, timeout: float) -> bool:
        """Wait up to ``timeout`` seconds; True once every copy is delivered or failed."""
        deadline = time.monotonic() + timeout
        while self._left > 0 and self._producer is not None:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return False
            self._producer.poll(min(remaining, 0.1))
        return True

    @property
    def error(self) -> BaseException | None:
        if self._error is not None:
            return self._error
        return KafkaException(self._failures[0]) if self._failures else None

    @property
    def permanent(self) -> bool:
        if self._error is not None:
            return False  # could not even queue it: the broker (or the local queue) is the trouble
        return any(not _passing(err) for err in self._failures)


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
