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
    ) -> Consumer:
        """A consumer in ``group``; a new group starts at the beginning of each topic.

        With ``replay_history`` it starts at the beginning even when the group has
        committed, marking the records up to the commit ``replayed`` so a stage
        that keeps state in memory can rebuild it without repeating its effects.
        ``replay_from`` (topic, partition) → offset moves that start, for the
        partitions it names, to the offset of the first record the stage's saved
        state does not cover (a checkpoint); the others start at the beginning.
        """
        ...

    def history(self, topics: Sequence[str], *, until_ms: int | None = None) -> Iterator[Record]:
        """Every record of ``topics`` published up to ``until_ms``, oldest first (for replay; no group).

        One key's records keep their order; records of different partitions are merged by timestamp.
        """
        ...

    def close(self) -> None: ...
