"""The Kafka transport, on kafka-python.

Topics are created if missing (``topic_prefix`` + logical name), with the
settings of :mod:`permwatch.transport.topics`. The producer waits for all
in-sync replicas (``acks=all``) and keeps one request in flight per connection
so retries cannot reorder one key's records; records are keyed so one path's
events land on one partition in order. :meth:`KafkaBus.flush` returns once
every record since the last flush is stored: it sends again what an outage
timed out (one the broker stored but answered too late is then stored twice:
at least once, in order), and raises :class:`~permwatch.transport.base.PublishError` for a
record the cluster refuses. Consumers belong to a
consumer group, never auto-commit, and commit only when the stage says its
effects are durable. Scale-out is Kafka's own: more consumers in the group.
A group's lag is read by :class:`KafkaLagProbe`, a client of its own that never
joins the group.
"""

from __future__ import annotations

import contextlib
import heapq
import logging
import time
from collections.abc import Iterator, Mapping, Sequence
from typing import Any, NamedTuple

from kafka import ConsumerRebalanceListener, KafkaAdminClient, KafkaConsumer, KafkaProducer, TopicPartition
from kafka.admin import ConfigResource, ConfigResourceType, NewTopic
from kafka.errors import (
    CommitFailedError,
    KafkaConnectionError,
    KafkaError,
    KafkaTimeoutError,
    RebalanceInProgressError,
    TopicAlreadyExistsError,
)
from kafka.producer.future import FutureRecordMetadata
from kafka.structs import OffsetAndMetadata

from permwatch.config import KafkaConfig
from permwatch.transport.base import PublishError, Record, checkpoint_starts
from permwatch.transport.kafka_security import kafka_python_options, unreachable_message
from permwatch.transport.topics import ALL_TOPICS, DEADLETTER_MAX_BYTES, differences, topic_configs

log = logging.getLogger(__name__)


class KafkaBus:
    """A :class:`permwatch.transport.base.Bus` on an Apache Kafka cluster."""

    def __init__(self, config: KafkaConfig) -> None:
        self.config = config
        self._security = kafka_python_options(config)  # holds the SASL password: never log it
        self._producer: KafkaProducer | None = None
        self._tracked_producer: KafkaProducer | None = None
        self._topics_ready = False
        self._sent: list[_Sent] = []
        """What :meth:`publish` and :meth:`broadcast` sent since the last flush."""

    def name(self, topic: str) -> str:
        return f"{self.config.topic_prefix}{topic}"

    def logical(self, name: str) -> str:
        return name.removeprefix(self.config.topic_prefix)

    def ensure_topics(self, topics: Sequence[str] = ALL_TOPICS) -> None:
        if self._topics_ready:
            return
        try:
            admin = KafkaAdminClient(
                bootstrap_servers=self.config.bootstrap_servers, client_id=self.config.client_id, **self._security
            )
        except KafkaTimeoutError as exc:  # the first contact: say what was tried (kafka-python says only "timeout")
            raise KafkaTimeoutError(unreachable_message(self.config, exc)) from None
        try:
            existing = set(admin.list_topics())
            missing = [
                NewTopic(
                    self.name(t),
                    self.config.partitions,
                    self.config.replication_factor,
                    topic_configs=topic_configs(t, self.config),
                )
                for t in topics
                if self.name(t) not in existing
            ]
            if missing:
                try:
                    admin.create_topics(missing)
                    log.info("created topics %s", ", ".join(t.name for t in missing))
                except TopicAlreadyExistsError:  # made elsewhere since the listing (metadata lags): check them too
                    log.debug("topics created concurrently by another process")
                    existing.update(t.name for t in missing)
            self._check_existing(admin, [t for t in topics if self.name(t) in existing])
        finally:
            admin.close()
        self._topics_ready = True

    def _check_existing(self, admin: KafkaAdminClient, topics: Sequence[str]) -> None:
        """Warn (once a start) about a topic made elsewhere whose settings lose records; change nothing."""
        if not topics:
            return
        keys = {"retention.ms": None, "max.message.bytes": None}
        resources = [ConfigResource(ConfigResourceType.TOPIC, self.name(t), keys) for t in topics]
        try:  # defaults included: a topic on the broker's default size is one that lacks room
            described = admin.describe_configs(resources, config_filter="all").get("topic", {})
        except KafkaError as exc:  # e.g. no DescribeConfigs permission: the check is advice, not a condition
            log.info("topic settings not checked (%s)", type(exc).__name__)
            return
        for topic in topics:
            entries = described.get(self.name(topic), {})
            found = {key: entry["value"] for key, entry in entries.items() if entry.get("value") is not None}
            lacking = differences(topic_configs(topic, self.config), found)
            if lacking:
                log.warning("topic %s exists with %s", self.name(topic), "; ".join(lacking))

    def _get_producer(self) -> KafkaProducer:
        if self._producer is None:
            self.ensure_topics()
            self._producer = self._new_producer()
        return self._producer

    def _new_producer(self, **options: Any) -> KafkaProducer:
        # Not idempotent: kafka-python 3.0's idempotent producer never sends again once it has given up
        # on a batch it already sent (a broker away past the delivery timeout). One request in flight
        # keeps each key's order; a retry may repeat a record, which every stage takes in its stride.
        options.setdefault("enable_idempotence", False)
        options.setdefault("reconnect_backoff_max_ms", 5000)
        delivery_ms = int(self.config.delivery_timeout_seconds * 1000)
        return KafkaProducer(
            bootstrap_servers=self.config.bootstrap_servers,
            client_id=self.config.client_id,
            **self._security,
            acks="all",
            linger_ms=2,
            max_in_flight_requests_per_connection=1,
            max_request_size=DEADLETTER_MAX_BYTES,
            delivery_timeout_ms=delivery_ms,
            request_timeout_ms=min(30_000, delivery_ms - 2),  # kafka-python wants delivery >= linger + request
            **options,
        )

    def publish(self, topic: str, key: str | None, value: bytes) -> None:
        self._send(self.name(topic), None if key is None else key.encode(), value, None)

    def broadcast(self, topic: str, key: str | None, value: bytes) -> None:
        name = self.name(topic)
        encoded = None if key is None else key.encode()
        for partition in sorted(self._get_producer().partitions_for(name)):
            self._send(name, encoded, value, partition)

    def _send(self, name: str, key: bytes | None, value: bytes, partition: int | None) -> None:
        future = self._get_producer().send(name, key=key, value=value, partition=partition)
        self._sent.append(_Sent(future, name, key, value, partition))

    def flush(self) -> None:
        """Until every record since the last flush is stored; an outage is waited out, not a loss.

        kafka-python's own flush returns once each record is delivered *or failed*. A record that
        failed for a passing reason (the broker away past the delivery timeout) is sent again, after
        those that failed with it, as often as it takes; a refusal (too large, not authorised) raises.
        """
        if self._producer is None:
            return
        while True:
            self._producer.flush()
            sent, self._sent = self._sent, []
            failed = [s for s in sent if s.future.failed()]
            if not failed:
                return
            refused = [s for s in failed if not _passing(s.future.exception)]
            if refused:
                first = refused[0]
                raise PublishError(
                    f"Kafka refused {len(refused)} record(s), the first on {first.name} "
                    f"({type(first.future.exception).__name__}: {first.future.exception})"
                )
            log.warning(
                "%d record(s) not delivered (%s); sending them again",
                len(failed),
                type(failed[0].future.exception).__name__,
            )
            for s in failed:
                self._send(s.name, s.key, s.value, s.partition)

    def send_tracked(self, topic: str, key: str | None, value: bytes, *, broadcast: bool = False) -> KafkaDelivery:
        """:meth:`publish` (or :meth:`broadcast`) on a producer of its own, returning a handle on the outcome,
        for the collectors' spool (:mod:`collectors.spool`).

        Never raises for an unreachable broker: that comes back as a failed delivery.
        """
        try:
            if self._tracked_producer is None:
                self.ensure_topics()
                # Not idempotent: kafka-python 3.0's idempotent producer sends nothing more, ever, once it
                # has expired a batch it had sent (the broker away past the delivery timeout, then back).
                # One request in flight keeps each key's order; a retry may repeat a batch, as the spool may.
                # It retries connecting every 5 s at most (not 30), so a drain starts soon after Kafka is back.
                self._tracked_producer = self._new_producer()  # same settings, a producer of its own
            producer = self._tracked_producer
            name = self.name(topic)
            encoded = None if key is None else key.encode()
            if not broadcast:
                return KafkaDelivery([producer.send(name, key=encoded, value=value)])
            partitions = sorted(producer.partitions_for(name))
            return KafkaDelivery([producer.send(name, key=encoded, value=value, partition=p) for p in partitions])
        except KafkaError as exc:
            return KafkaDelivery([], exc)

    def consumer(
        self,
        topics: Sequence[str],
        group: str,
        *,
        replay_history: bool = False,
        replay_from: Mapping[tuple[str, int], int] | None = None,
        member: str | None = None,
    ) -> KafkaTopicConsumer:
        self.ensure_topics()
        consumer = KafkaConsumer(
            bootstrap_servers=self.config.bootstrap_servers,
            client_id=self.config.client_id,
            **self._security,
            group_id=group,
            group_instance_id=member,
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            max_partition_fetch_bytes=DEADLETTER_MAX_BYTES,
            session_timeout_ms=int(self.config.session_timeout_seconds * 1000),
            heartbeat_interval_ms=min(3000, int(self.config.session_timeout_seconds * 1000) // 3),
        )
        # kafka-python 3.0 can be left with no partitions for good if it joins the group before it
        # knows the topics' partitions and a short poll times out during the rejoin: learn them first.
        for topic in topics:
            consumer.partitions_for_topic(self.name(topic))
        wrapped = KafkaTopicConsumer(consumer, self, replay_from=replay_from)
        names = [self.name(t) for t in topics]
        if replay_history:
            consumer.subscribe(names, listener=_RewindOnAssign(wrapped))
        else:
            consumer.subscribe(names)
        # A metadata refresh now, so the group coordinator's snapshot of the subscribed topics' partitions is
        # filled before the first join; joined with an empty one, the next refresh rebalances half a second
        # later (revoking and assigning every partition again, which starts a replay over).
        consumer.topics()
        return wrapped

    def history(
        self,
        topics: Sequence[str],
        *,
        until_ms: int | None = None,
        start: Mapping[tuple[str, int], int] | None = None,
    ) -> Iterator[Record]:
        """Reads every partition from the beginning (or ``start``) to its end as of now (or to ``until_ms``,
        found with ``offsets_for_times``), then merges the partitions by timestamp."""
        self.ensure_topics()
        consumer = KafkaConsumer(
            bootstrap_servers=self.config.bootstrap_servers,
            client_id=self.config.client_id,
            **self._security,
            group_id=None,
            enable_auto_commit=False,
            max_partition_fetch_bytes=DEADLETTER_MAX_BYTES,
        )
        try:
            partitions = [
                TopicPartition(self.name(t), p)
                for t in topics
                for p in sorted(consumer.partitions_for_topic(self.name(t)) or ())
            ]
            consumer.assign(partitions)
            ends = consumer.end_offsets(partitions)
            if until_ms is not None:
                cut = consumer.offsets_for_times({tp: until_ms + 1 for tp in partitions})
                for tp, found in cut.items():
                    if found is not None:
                        ends[tp] = min(ends[tp], found.offset)
            consumer.seek_to_beginning(*partitions)
            firsts = {tp: (start or {}).get((self.logical(tp.topic), tp.partition), 0) for tp in partitions}
            for tp, first in firsts.items():
                if first > 0:
                    consumer.seek(tp, first)
            per_partition: dict[TopicPartition, list[Record]] = {tp: [] for tp in partitions}
            remaining = {tp for tp in partitions if ends[tp] > firsts[tp]}
            while remaining:
                for tp, messages in consumer.poll(timeout_ms=500, max_records=10_000).items():
                    for m in messages:
                        if m.offset >= ends[tp]:
                            remaining.discard(tp)
                            break
                        key = None if m.key is None else m.key.decode("utf-8", "replace")
                        per_partition[tp].append(
                            Record(self.logical(tp.topic), tp.partition, m.offset, key, m.value, m.timestamp)
                        )
                    if consumer.position(tp) >= ends[tp]:
                        remaining.discard(tp)
        finally:
            consumer.close()
        yield from heapq.merge(*per_partition.values(), key=lambda r: r.timestamp_ms)

    def lag_probe(self, topics: Sequence[str], group: str) -> KafkaLagProbe:
        return KafkaLagProbe(self, topics, group)

    @property
    def log_id(self) -> str | None:
        """None: a checkpoint is checked against the partitions' offset ranges only (see LogExtent)."""
        return None

    def describe(self) -> str:
        return f"Kafka topics {self.config.topic_prefix}* on {self.config.bootstrap_servers}"

    def offset_ranges(self, topics: Sequence[str]) -> dict[tuple[str, int], tuple[int, int]] | None:
        try:
            consumer = KafkaConsumer(
                bootstrap_servers=self.config.bootstrap_servers,
                client_id=self.config.client_id,
                **self._security,
                group_id=None,
                enable_auto_commit=False,
            )
        except KafkaError:
            return None
        try:
            partitions = [
                TopicPartition(self.name(t), p)
                for t in topics
                for p in sorted(consumer.partitions_for_topic(self.name(t)) or ())
            ]
            firsts = consumer.beginning_offsets(partitions) if partitions else {}
            ends = consumer.end_offsets(partitions) if partitions else {}
        except KafkaError:
            return None
        finally:
            consumer.close()
        return {(self.logical(tp.topic), tp.partition): (firsts[tp], ends[tp]) for tp in partitions}

    def close(self) -> None:
        if self._producer is not None:
            self._producer.flush()
            self._producer.close()
            self._producer = None
        if self._tracked_producer is not None:
            # What it still holds is in the collectors' spool, or was never confirmed to them: no need to wait.
            self._tracked_producer.close(timeout=5)
            self._tracked_producer = None


class KafkaLagProbe:
    """A consumer group's lag per partition: log end offset minus the group's committed offset.

    Uses a consumer of its own that names the group without joining it (it only
    reads the group's commits), so it is safe beside the stage's consumer and
    keeps answering while the stage is stalled. Not thread-safe: one scrape at a
    time. When the broker does not answer it says so once in the log and
    reports nothing until it does.
    """

    def __init__(self, bus: KafkaBus, topics: Sequence[str], group: str, *, timeout_ms: int = 5000) -> None:
        self._bus = bus
        self._topics = [bus.name(t) for t in topics]
        self._group = group
        self._timeout_ms = timeout_ms
        self._consumer: KafkaConsumer | None = None
        self._failing = False

    @property
    def group(self) -> str:
        return self._group

    def lag(self) -> Mapping[tuple[str, int], int] | None:
        try:
            lag = self._read_lag()
        except KafkaError as exc:
            if not self._failing:
                log.warning("consumer lag of group %s unavailable: %s", self._group, exc)
            self._failing = True
            self.close()  # a fresh client next time
            return None
        if self._failing:
            log.info("consumer lag of group %s available again", self._group)
            self._failing = False
        return lag

    def _read_lag(self) -> dict[tuple[str, int], int]:
        if self._consumer is None:
            self._consumer = KafkaConsumer(
                bootstrap_servers=self._bus.config.bootstrap_servers,
                client_id=f"{self._bus.config.client_id}-lag",
                **self._bus._security,
                group_id=self._group,
                enable_auto_commit=False,
            )
        consumer = self._consumer
        partitions = [
            TopicPartition(topic, p) for topic in self._topics for p in sorted(consumer.partitions_for_topic(topic))
        ]
        if not partitions:
            return {}
        ends = consumer.end_offsets(partitions, timeout_ms=self._timeout_ms)
        uncommitted = []
        lag = {}
        for tp in partitions:
            committed = consumer.committed(tp, timeout_ms=self._timeout_ms)
            if committed is None:
                uncommitted.append(tp)
            else:
                lag[self._bus.logical(tp.topic), tp.partition] = max(0, ends[tp] - committed)
        if uncommitted:  # the group starts these at the beginning, which retention may have moved
            starts = consumer.beginning_offsets(uncommitted, timeout_ms=self._timeout_ms)
            for tp in uncommitted:
                lag[self._bus.logical(tp.topic), tp.partition] = max(0, ends[tp] - starts[tp])
        return lag

    def close(self) -> None:
        if self._consumer is not None:
            self._consumer.close(autocommit=False)
            self._consumer = None


class KafkaTopicConsumer:
    def __init__(
        self, consumer: KafkaConsumer, bus: KafkaBus, *, replay_from: Mapping[tuple[str, int], int] | None = None
    ) -> None:
        self._consumer = consumer
        self._bus = bus
        self.replay_until: dict[TopicPartition, int] = {}
        self.to_rewind: set[TopicPartition] = set()
        self.assigned = False
        """Set by the rewind listener at the first assignment."""
        self._replay_from = dict(replay_from or {})
        self.resumed = False
        """Whether the first assignment started where ``replay_from`` said (see Bus.consumer)."""
        self._next: dict[TopicPartition, int] = {}
        """The offset after the last record returned, per partition with records to replay."""
        self._uncommitted: dict[TopicPartition, int] = {}
        """The offset after the last record returned since the last commit, per partition."""
        self.generation = 0
        """Counts assignment changes seen by :meth:`poll`: a stage keeping per-partition state rebuilds on a change."""
        self.revoked = False
        self._down_since: float | None = None

    def _outage_warning(self, exc: KafkaError) -> None:
        if self._down_since is None:
            self._down_since = time.monotonic()
            log.warning("kafka unreachable (%s); waiting for it", type(exc).__name__)

    def poll(self, timeout: float, max_records: int = 500) -> list[Record]:
        try:
            batches = self._consumer.poll(timeout_ms=int(timeout * 1000), max_records=max_records)
        except KafkaError as exc:
            if not _passing(exc):
                raise
            # The broker (or the group coordinator) is away: wait and ask again rather than stop the stage.
            self._outage_warning(exc)
            time.sleep(timeout)
            return []
        changed, self.revoked = self.revoked, False
        if self.to_rewind:
            changed = self._rewind(batches) or changed
        if changed:
            self.generation += 1
        if self._down_since is not None and not self.to_rewind:
            log.info("kafka reachable again after %.0f s", time.monotonic() - self._down_since)
            self._down_since = None
        records = []
        for tp, messages in sorted(batches.items(), key=lambda item: (item[0].topic, item[0].partition)):
            topic = self._bus.logical(tp.topic)
            until = self.replay_until.get(tp, 0)
            for m in messages:
                key = None if m.key is None else m.key.decode("utf-8", "replace")
                records.append(Record(topic, tp.partition, m.offset, key, m.value, m.timestamp, m.offset < until))
            if messages:
                self._next[tp] = self._uncommitted[tp] = messages[-1].offset + 1
        return records

    def _rewind(self, batches: dict[TopicPartition, list[Any]]) -> bool:
        """Start newly assigned partitions over from the beginning (or the checkpoint); True once done.

        What this poll already fetched from them comes again after the seek, so it is dropped. The offsets
        it needs are asked of Kafka before anything changes: when the broker is away (or still finding its
        feet after coming back) the partitions stay to be rewound at the next poll, rather than the stage
        stopping, and their records keep being dropped until then.
        """
        rewind = set(self.to_rewind)  # (the rebalance listener adds to it from the IO thread)
        for tp in rewind:
            batches.pop(tp, None)
        starts = checkpoint_starts(self._replay_from, {(self._bus.logical(tp.topic), tp.partition) for tp in rewind})
        try:
            committed = {tp: self._consumer.committed(tp) or 0 for tp in rewind}
            from_start = [tp for tp in rewind if (self._bus.logical(tp.topic), tp.partition) not in starts]
            replaying = [tp for tp in from_start if committed[tp] > 0]
            beginnings = self._consumer.beginning_offsets(replaying) if replaying else {}
        except KafkaError as exc:
            if not _passing(exc):
                raise
            self._outage_warning(exc)
            return False
        self.to_rewind -= rewind
        self.resumed, self._replay_from = bool(starts), {}  # a saved state stands where it stood at the start
        self.replay_until.update(committed)
        for tp in rewind:
            start = starts.get((self._bus.logical(tp.topic), tp.partition))
            if start is not None:  # a checkpoint covers what comes before
                self._consumer.seek(tp, start)
                self._next[tp] = start
                if start > committed[tp]:  # the state is saved past the group's commit: the next commit says so too
                    self._uncommitted[tp] = start
        if from_start:  # (given no partitions, seek_to_beginning would rewind every one)
            self._consumer.seek_to_beginning(*from_start)
            self._next.update(beginnings)
        return True

    def replay_pending(self) -> bool:
        if not self.assigned or self.to_rewind:
            return True
        return any(self._next.get(tp, until) < until for tp, until in self.replay_until.items())

    def partitions(self) -> set[tuple[str, int]]:
        """The (topic, partition)s this consumer owns now."""
        return {(self._bus.logical(tp.topic), tp.partition) for tp in self._consumer.assignment()}

    def end_offsets(self) -> dict[tuple[str, int], int]:
        """The log end of every partition assigned now."""
        assigned = self._consumer.assignment()
        ends = self._consumer.end_offsets(list(assigned)) if assigned else {}
        return {(self._bus.logical(tp.topic), tp.partition): end for tp, end in ends.items()}

    def reached(self, ends: Mapping[tuple[str, int], int]) -> bool:
        """Whether this consumer has read up to ``ends`` on every partition it still owns."""
        for tp in self._consumer.assignment():
            end = ends.get((self._bus.logical(tp.topic), tp.partition))
            if end is not None and self._consumer.position(tp) < end:
                return False
        return True

    def commit(self) -> None:
        # What was returned, except where a replay has not yet reached the group's commit (see Consumer.commit).
        # (A copy: the rebalance listener drops revoked partitions from the IO thread.)
        returned = list(self._uncommitted.items())
        offsets = {
            tp: OffsetAndMetadata(offset, "", -1) for tp, offset in returned if offset >= self.replay_until.get(tp, 0)
        }
        try:
            if offsets:
                self._consumer.commit(offsets)
            for tp, offset in returned:
                if self._uncommitted.get(tp) == offset:
                    del self._uncommitted[tp]
        except KafkaError as exc:
            if not isinstance(exc, CommitFailedError | RebalanceInProgressError) and not _passing(exc):
                raise
            # A rebalance or an unreachable broker: whoever owns these partitions next starts from the
            # last successful commit and handles the batch again. Stages' effects are idempotent
            # (same exposure ids, deduplicated alerts), so this costs repeats, never losses.
            log.warning("commit not done (%s); the batch will be delivered again", type(exc).__name__)

    def close(self) -> None:
        self._consumer.close(autocommit=False)


class _Sent(NamedTuple):
    future: FutureRecordMetadata
    name: str
    key: bytes | None
    value: bytes
    partition: int | None


class KafkaDelivery:
    """The outcome of one record (or one broadcast's copies): pending, delivered, or failed with an error."""

    def __init__(self, futures: list[FutureRecordMetadata], error: KafkaError | None = None) -> None:
        self._futures = futures
        self._error = error

    def wait(self, timeout: float) -> bool:
        """Wait up to ``timeout`` seconds; True once every copy is delivered or failed."""
        deadline = time.monotonic() + timeout
        for future in self._futures:
            remaining = deadline - time.monotonic()
            if not future.is_done and remaining > 0:
                with contextlib.suppress(KafkaError):  # a timeout, or the record's own failure: read below
                    future.get(remaining)
            if not future.is_done:
                return False
        return True

    @property
    def error(self) -> BaseException | None:
        """Why delivery failed (once settled); None while pending or when delivered."""
        if self._error is not None:
            return self._error
        return next((f.exception for f in self._futures if f.is_done and f.exception is not None), None)

    @property
    def permanent(self) -> bool:
        """Failed in a way retrying will not mend (the record is refused, not the broker away)."""
        error = self.error
        return error is not None and not (isinstance(error, KafkaError) and _passing(error))


def _passing(exc: KafkaError) -> bool:
    """An error that goes away by itself when the broker is back (connection refused, no coordinator...)."""
    return bool(getattr(exc, "retriable", False)) or isinstance(exc, KafkaConnectionError)


class _RewindOnAssign(ConsumerRebalanceListener):
    """Marks assigned partitions for a rewind; the consumer does it on its next poll.

    kafka-python 3 runs listeners on its IO thread, where blocking calls such as
    ``committed()`` are not allowed, so the work is deferred to ``poll``.
    """

    def __init__(self, wrapped: KafkaTopicConsumer) -> None:
        self._wrapped = wrapped

    def on_partitions_revoked(self, revoked: set[TopicPartition]) -> None:
        if revoked:
            self._wrapped.revoked = True
        for tp in revoked:
            self._wrapped.replay_until.pop(tp, None)
            self._wrapped._uncommitted.pop(tp, None)
            self._wrapped.to_rewind.discard(tp)

    def on_partitions_assigned(self, assigned: set[TopicPartition]) -> None:
        self._wrapped.to_rewind |= set(assigned)
        self._wrapped.assigned = True
