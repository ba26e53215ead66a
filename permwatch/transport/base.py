"""The bus interface every stage talks to, whatever carries the bytes.

A :class:`Bus` publishes keyed records to logical topics (``fs``,
``directory``, ``labels``, ``exposures``, ``deadletter``) and hands out
consumers that belong to a consumer group. A consumer's ``commit`` records
that everything returned by its earlier polls has been handled, so a restart
resumes after it: stages call it only after their effects are durable.
Records keep their offset and timestamp so history can be replayed.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Protocol, runtime_checkable


class PublishError(Exception):
    """Records the bus refused for good (too large, not authorised): retrying will not store them."""


class EventLogError(Exception):
    """The event log cannot be used (damaged, its disk full, unreadable): one line naming the file, the cause and
    the way out. A stage stops on it and ``permwatch run`` exits 1 without a traceback."""


class EventLogDamaged(EventLogError):
    """The event log's file is corrupt: only moving it aside and rescanning into a fresh log helps."""


@dataclass(frozen=True, slots=True)
class Record:
    topic: str
    partition: int
    offset: int
    key: str | None
    value: bytes | None
    timestamp_ms: int
    replayed: bool = False
    """True for a record at or before the group's committed position, re-read to rebuild state."""


class Consumer(Protocol):
    def poll(self, timeout: float, max_records: int = 500) -> list[Record]:
        """Records after the last one returned, waiting up to ``timeout`` seconds for the first."""
        ...

    def commit(self) -> None:
        """Mark every record returned so far as handled, durably.

        A commit never moves a group's position back: while a ``replay_history`` consumer re-reads records
        the group had committed, committing leaves that earlier position as it is, so a stage killed
        mid-replay starts over with the same records marked replayed, not with some of them live again."""
        ...

    def close(self) -> None: ...


@runtime_checkable
class ReplayProgress(Protocol):
    """A ``replay_history`` consumer that can tell when the records up to the group's commit are all out."""

    def replay_pending(self) -> bool:
        """True until every assigned partition has returned its records up to the group's commit
        (and before the first assignment); a stage is rebuilt, caught up with its own past, once it is False."""
        ...


@runtime_checkable
class EndOffsets(Protocol):
    """A consumer that can tell where its partitions end now, and whether it has read that far."""

    def end_offsets(self) -> dict[tuple[str, int], int]:
        """The log end of every partition assigned now."""
        ...

    def reached(self, ends: Mapping[tuple[str, int], int]) -> bool:
        """Whether this consumer has returned every record before ``ends`` on the partitions it still owns."""
        ...


@runtime_checkable
class SharedPartitions(Consumer, EndOffsets, ReplayProgress, Protocol):
    """A ``replay_history`` group consumer whose topic the group shares out among its members (both Kafka
    clients'): which partitions it owns now, and a count of the changes, so a stage keeping state per partition
    (the partitioned processor) rebuilds when its share moves."""

    @property
    def generation(self) -> int:
        """Counts the changes of this consumer's assignment seen by :meth:`Consumer.poll` so far."""
        ...

    @property
    def resumed(self) -> bool:
        """Whether the first assignment started where ``replay_from`` said (see :meth:`Bus.consumer`)."""
        ...

    def partitions(self) -> set[tuple[str, int]]:
        """The (topic, partition)s this consumer owns now."""
        ...


@runtime_checkable
class LogExtent(Protocol):
    """A bus that can say which log it is and what it holds, so a checkpoint can be checked against it."""

    @property
    def log_id(self) -> str | None:
        """What tells this log from another put in its place (the embedded log's random id), if anything."""
        ...

    def describe(self) -> str:
        """The log in a few words, for a warning: "event log /x/events.db", "Kafka topics pw-* on host:9092"."""
        ...

    def offset_ranges(self, topics: Sequence[str]) -> dict[tuple[str, int], tuple[int, int]] | None:
        """(topic, partition) → (the first offset it holds, the offset after its last), for every partition of
        ``topics``; None when the log cannot say now (a broker out of reach)."""
        ...


def checkpoint_starts(
    replay_from: Mapping[tuple[str, int], int], assigned: set[tuple[str, int]]
) -> dict[tuple[str, int], int]:
    """Where a first assignment ``assigned`` starts (see :meth:`Bus.consumer`): at ``replay_from``'s offsets for a
    topic all of whose named partitions are assigned; every other partition at the beginning. A state saved
    with a partition this consumer does not own now holds records that are not its own: that topic starts
    over."""
    starts = {}
    for topic in {topic for topic, _ in replay_from}:
        named = {(t, p) for t, p in replay_from if t == topic}
        if named <= assigned:
            starts.update({tp: replay_from[tp] for tp in named})
    return starts


class Bus(Protocol):
    def publish(self, topic: str, key: str | None, value: bytes) -> None:
        """Queue a record; it is durable once :meth:`flush` returns."""
        ...

    def broadcast(self, topic: str, key: str | None, value: bytes) -> None:
        """Queue a copy of a record on every partition of ``topic``.

        For the few records every member of a consumer group needs whatever
        partitions it owns (the watched roots and their ancestors, whose traverse
        bits gate every folder beneath): each partition keeps them in order with
        its own records.
        """
        ...

    def flush(self) -> None:
        """Until every record queued since the last flush is durable; :class:`PublishError` if one is refused."""
        ...

    def consumer(
        self,
        topics: Sequence[str],
        group: str,
        *,
        replay_history: bool = False,
        replay_from: Mapping[tuple[str, int], int] | None = None,
        member: str | None = None,
    ) -> Consumer:
        """A consumer in ``group``; a new group starts at the beginning of each topic.

        With ``replay_history`` it starts at the beginning even when the group has
        committed, marking the records up to the commit ``replayed`` so a stage
        that keeps state in memory can rebuild it without repeating its effects.
        ``replay_from`` (topic, partition) → offset moves that start to the offset
        of the first record the stage's saved state (a checkpoint) does not
        cover: at the first assignment, for each topic all of whose named
        partitions are assigned (a state saved with a partition not owned now
        does not fit); every other partition, and every later assignment,
        starts at the beginning. ``member`` is a stable name for this consumer across
        restarts (Kafka's static membership): started again within the session
        timeout it gets the same partitions back, without a rebalance.
        """
        ...

    def history(
        self,
        topics: Sequence[str],
        *,
        until_ms: int | None = None,
        start: Mapping[tuple[str, int], int] | None = None,
    ) -> Iterator[Record]:
        """Every record of ``topics`` published up to ``until_ms``, oldest first (for replay; no group).

        One key's records keep their order; records of different partitions are merged by timestamp.
        ``start`` (topic, partition) → offset skips what comes before it there (a partition not named is read
        from its beginning): the workshop store reads only what was appended since it was built.
        """
        ...

    def close(self) -> None: ...


class Delivery(Protocol):
    """The outcome of one record handed to a :class:`TrackingBus`."""

    def wait(self, timeout: float) -> bool:
        """Wait up to ``timeout`` seconds; True once the record is delivered or failed."""
        ...

    @property
    def error(self) -> BaseException | None:
        """Why delivery failed; None while pending or once delivered."""
        ...

    @property
    def permanent(self) -> bool:
        """Failed in a way retrying will not mend (the record refused, not the broker away)."""
        ...


@runtime_checkable
class TrackingBus(Bus, Protocol):
    """A bus that reports each record's delivery (the Kafka buses): what the collectors' spool
    (:mod:`collectors.spool`) needs to know when to keep a record itself."""

    def send_tracked(self, topic: str, key: str | None, value: bytes, *, broadcast: bool = False) -> Delivery:
        """Publish (or broadcast) and return the record's delivery; an unreachable broker is a failed delivery."""
        ...
