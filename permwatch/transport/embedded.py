"""The embedded durable event log: the default transport, no broker needed.

One SQLite file in WAL mode holds every record of every topic in publish
order (``seq`` is the offset, global across topics, so a single-process run
reads events in exactly the order they were published) and each consumer
group's committed position per topic. Several threads and processes may
share one file; consumers in the same process are woken as soon as a record
is flushed, consumers in other processes notice within a poll interval.
A group's lag (:class:`EmbeddedLagProbe`) is the number of records of a topic
after the group's committed position; the log has one partition, 0. The file
carries an identity, a random ``log_id`` written when it is created (table
``meta``), so a checkpoint can tell this log from one put in its place. The
file is checked (SQLite's ``quick_check``) when the bus opens it, and any
SQLite error is raised as :class:`permwatch.transport.base.EventLogError`
naming the file: a damaged file (:class:`EventLogDamaged`) with the way out,
a full disk with the real error.
"""

from __future__ import annotations

import logging
import sqlite3
import threading
import time
import uuid
from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager, suppress
from pathlib import Path

from permwatch.transport.base import EventLogDamaged, EventLogError, Record, checkpoint_starts

_SCHEMA = """
CREATE TABLE IF NOT EXISTS log (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    topic TEXT NOT NULL,
    key TEXT,
    value BLOB,
    ts_ms INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS log_topic_ts ON log (topic, ts_ms);
CREATE TABLE IF NOT EXISTS offsets (
    grp TEXT NOT NULL,
    topic TEXT NOT NULL,
    seq INTEGER NOT NULL,
    PRIMARY KEY (grp, topic)
);
CREATE TABLE IF NOT EXISTS meta (
    key TEXT PRIMARY KEY,
    value TEXT NOT NULL
);
"""
_DAMAGED = {"SQLITE_CORRUPT", "SQLITE_NOTADB"}

log = logging.getLogger(__name__)

_CROSS_PROCESS_POLL = 0.05
_wakeups: dict[str, threading.Condition] = {}
_wakeups_lock = threading.Lock()


def _wakeup_for(path: Path) -> threading.Condition:
    key = str(path.resolve())
    with _wakeups_lock:
        return _wakeups.setdefault(key, threading.Condition())


def damaged(path: Path, cause: str) -> EventLogDamaged:
    """The error for a corrupt log file, with the way out."""
    return EventLogDamaged(
        f"event log {path} is damaged ({cause}); move it aside and rescan into a fresh log: stop permwatch, "
        f"mv {path} {path}.damaged (and its -wal and -shm files), remove the collectors' state (fs-*.db, "
        "ldap-*.json in state_dir) so they publish everything again, and start permwatch"
    )


@contextmanager
def _errors(path: Path) -> Iterator[None]:
    """Raise SQLite's errors as :class:`EventLogError` naming the file (and the way out of a damaged one)."""
    try:
        yield
    except sqlite3.DatabaseError as exc:
        name = getattr(exc, "sqlite_errorname", "")
        if name in _DAMAGED:
            raise damaged(path, str(exc)) from None
        raise EventLogError(f"event log {path}: {exc}") from None


def _connect(path: Path) -> sqlite3.Connection:
    with _errors(path):
        conn = sqlite3.connect(path, timeout=30, isolation_level=None, check_same_thread=False)
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("PRAGMA synchronous=NORMAL")
        conn.execute("PRAGMA busy_timeout=30000")
    return conn


def _check(path: Path) -> None:
    """Raise :class:`EventLogDamaged` if SQLite's ``quick_check`` finds the file corrupt. Read-only: the last
    connection to close would otherwise checkpoint the WAL into the damaged file and remove it."""
    if not path.exists():
        return
    started = time.perf_counter()
    with _errors(path):
        conn = sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True, timeout=30)
        try:
            problems = [row[0] for row in conn.execute("PRAGMA quick_check(3)")]
        finally:
            conn.close()
    took = time.perf_counter() - started
    if took > 1.0:  # it reads every page: say what a large log costs at each start
        log.info("event log %s checked for damage in %.1f s", path, took)
    if problems != ["ok"]:
        lines = [line for problem in problems for line in problem.splitlines() if not line.startswith("***")]
        raise damaged(path, "; ".join(lines[:2]))


def _rollback(conn: sqlite3.Connection) -> None:
    """Roll back what is left of a failed write. SQLite has already rolled back after some errors (a full disk,
    an I/O error); a ROLLBACK then would fail with "no transaction is active" and hide the real error."""
    # (should the ROLLBACK fail too, the error being raised is the one that says what went wrong)
    if conn.in_transaction:
        with suppress(sqlite3.Error):
            conn.execute("ROLLBACK")


class EmbeddedBus:
    """A :class:`permwatch.transport.base.Bus` on one SQLite file."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        _check(self.path)
        self._conn = _connect(self.path)
        with _errors(self.path):
            self._conn.executescript(_SCHEMA)
            self._conn.execute("INSERT OR IGNORE INTO meta (key, value) VALUES ('log_id', ?)", [uuid.uuid4().hex])
            self._log_id: str = self._conn.execute("SELECT value FROM meta WHERE key = 'log_id'").fetchone()[0]
        self._lock = threading.Lock()
        self._pending: list[tuple[str, str | None, bytes, int]] = []
        self._wakeup = _wakeup_for(self.path)

    def publish(self, topic: str, key: str | None, value: bytes) -> None:
        with self._lock:
            self._pending.append((topic, key, value, int(time.time() * 1000)))

    def broadcast(self, topic: str, key: str | None, value: bytes) -> None:
        self.publish(topic, key, value)  # one partition: every reader sees it anyway

    def flush(self) -> None:
        with self._lock:
            if not self._pending:
                return
            pending, self._pending = self._pending, []
            try:
                with _errors(self.path):
                    self._conn.execute("BEGIN IMMEDIATE")
                    self._conn.executemany("INSERT INTO log (topic, key, value, ts_ms) VALUES (?, ?, ?, ?)", pending)
                    self._conn.execute("COMMIT")
            except BaseException:
                _rollback(self._conn)
                self._pending[:0] = pending  # still queued: a flush once there is room stores them
                raise
        with self._wakeup:
            self._wakeup.notify_all()

    def consumer(
        self,
        topics: Sequence[str],
        group: str,
        *,
        replay_history: bool = False,
        replay_from: Mapping[tuple[str, int], int] | None = None,
        member: str | None = None,
    ) -> EmbeddedConsumer:
        """(One process holds a group's position here: ``member`` has nothing to keep.)"""
        consumer = EmbeddedConsumer(self.path, list(topics), group, self._wakeup)
        if replay_history:
            consumer.rewind(replay_from)
        return consumer

    def reader(self, topics: Sequence[str], *, since_ms: int | None = None) -> EmbeddedConsumer:
        """A consumer outside any group that starts at ``since_ms`` (replay)."""
        consumer = EmbeddedConsumer(self.path, list(topics), None, self._wakeup)
        if since_ms is not None:
            consumer.seek_to_time(since_ms)
        return consumer

    def append_records(self, records: Iterable[Record]) -> int:
        """Copy records from another log keeping their topics, keys and timestamps (an archive)."""
        rows = ((r.topic, r.key, r.value, r.timestamp_ms) for r in records)
        with self._lock:
            try:
                with _errors(self.path):
                    self._conn.execute("BEGIN IMMEDIATE")
                    cursor = self._conn.executemany(
                        "INSERT INTO log (topic, key, value, ts_ms) VALUES (?, ?, ?, ?)", rows
                    )
                    self._conn.execute("COMMIT")
            except BaseException:
                _rollback(self._conn)
                raise
        with self._wakeup:
            self._wakeup.notify_all()
        return cursor.rowcount

    def history(
        self,
        topics: Sequence[str],
        *,
        until_ms: int | None = None,
        start: Mapping[tuple[str, int], int] | None = None,
    ) -> Iterator[Record]:
        conn = _connect(self.path)
        marks = ",".join("?" * len(topics))
        bound = "" if until_ms is None else " AND ts_ms <= ?"
        params: list[object] = [*topics] + ([] if until_ms is None else [until_ms])
        firsts = {topic: (start or {}).get((topic, 0), 0) for topic in topics}
        lowest = min(firsts.values(), default=0)
        # From a position: the rowid range, not the topics' index (which would read each topic whole, then sort).
        topic = "+topic" if lowest else "topic"
        try:
            with _errors(self.path):
                cursor = conn.execute(
                    f"SELECT seq, topic, key, value, ts_ms FROM log WHERE seq >= ? AND {topic} IN ({marks}){bound}"
                    " ORDER BY seq",
                    [lowest, *params],
                )
                for seq, topic, key, value, ts_ms in cursor:
                    if seq >= firsts[topic]:
                        yield Record(topic, 0, seq, key, value, ts_ms)
        finally:
            conn.close()

    def lag_probe(self, topics: Sequence[str], group: str) -> EmbeddedLagProbe:
        return EmbeddedLagProbe(self.path, topics, group)

    @property
    def log_id(self) -> str:
        """Random, written when the file was made: another file put in this path has another."""
        return self._log_id

    def describe(self) -> str:
        return f"event log {self.path}"

    def offset_ranges(self, topics: Sequence[str]) -> dict[tuple[str, int], tuple[int, int]]:
        """(topic, 0) → (its first record's offset, the log's end); both the end when the topic has none.
        Offsets run across topics, so every topic ends where the log does."""
        with self._lock, _errors(self.path):
            end = self._conn.execute("SELECT COALESCE(MAX(seq), 0) + 1 FROM log").fetchone()[0]
            ranges = {}
            for topic in topics:
                # (MIN(seq) would read the topic's whole index; its first record is near the start, rowids are not)
                held = self._conn.execute("SELECT EXISTS(SELECT 1 FROM log WHERE topic = ?)", [topic]).fetchone()[0]
                first = end
                if held:
                    row = self._conn.execute("SELECT seq FROM log WHERE +topic = ? ORDER BY seq LIMIT 1", [topic])
                    first = row.fetchone()[0]
                ranges[topic, 0] = (first, end)
        return ranges

    def close(self) -> None:
        try:
            self.flush()
        finally:
            self._conn.close()


class EmbeddedLagProbe:
    """A consumer group's lag per topic: records after its committed position. One scrape at a time."""

    def __init__(self, path: Path, topics: Sequence[str], group: str) -> None:
        self._path = path
        self._topics = list(topics)
        self._group = group
        self._conn: sqlite3.Connection | None = None

    @property
    def group(self) -> str:
        return self._group

    def lag(self) -> Mapping[tuple[str, int], int] | None:
        if self._conn is None:
            self._conn = _connect(self._path)
        lag = {}
        with _errors(self._path):
            for topic in self._topics:
                row = self._conn.execute("SELECT seq FROM offsets WHERE grp = ? AND topic = ?", [self._group, topic])
                committed = (row.fetchone() or (0,))[0]
                # "+topic": walk the rowids after the position rather than the topic's whole index.
                count = self._conn.execute("SELECT COUNT(*) FROM log WHERE seq > ? AND +topic = ?", [committed, topic])
                lag[topic, 0] = count.fetchone()[0]
        return lag

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None


class EmbeddedConsumer:
    """Reads the log in publish order. Its position is one global ``seq``, stored per topic for the group."""

    def __init__(self, path: Path, topics: list[str], group: str | None, wakeup: threading.Condition) -> None:
        if not topics:
            raise ValueError("a consumer needs at least one topic")
        self._path = path
        self._conn = _connect(path)
        self._topics = topics
        self._marks = ",".join("?" * len(topics))
        self._group = group
        self._wakeup = wakeup
        self._position = 0
        with _errors(path):
            self._conn.executescript(_SCHEMA)
            if group is not None:
                row = self._conn.execute(
                    f"SELECT MIN(seq) FROM offsets WHERE grp = ? AND topic IN ({self._marks})", [group, *topics]
                ).fetchone()
                self._position = row[0] or 0
        self._committed = self._position
        self._replay_until = 0
        self.resumed = False
        """Whether the rewind started where ``replay_from`` said (see Bus.consumer)."""
        self._replay_done = True
        self._floors: dict[str, int] = {}
        """topic → the first seq to return of it, while a replay starts from a checkpoint"""

    def rewind(self, replay_from: Mapping[tuple[str, int], int] | None = None) -> None:
        """Start over from the first record, or per topic from ``replay_from``'s offset (the topic's
        partition 0); those up to the committed position come marked replayed."""
        self._replay_until = self._committed
        self._replay_done = False
        starts = checkpoint_starts(replay_from or {}, {(topic, 0) for topic in self._topics})
        self.resumed = bool(starts)
        floors = {topic: starts.get((topic, 0), 0) for topic in self._topics}
        self._position = max(0, min(floors.values()) - 1)
        # One seq runs across topics: a topic that went quiet before the others starts earlier, and
        # the others' records below their own start are skipped until every start is passed.
        self._floors = {topic: floor for topic, floor in floors.items() if floor > self._position + 1}

    def replay_pending(self) -> bool:
        return not self._replay_done

    def end_offsets(self) -> dict[tuple[str, int], int]:
        row = self._conn.execute(f"SELECT COALESCE(MAX(seq), 0) FROM log WHERE topic IN ({self._marks})", self._topics)
        end = row.fetchone()[0]
        return {(topic, 0): end for topic in self._topics}

    def reached(self, ends: Mapping[tuple[str, int], int]) -> bool:
        # one seq runs across topics: the position is past every topic's last record or it is not
        return all(self._position >= end for end in ends.values())

    def seek_to_time(self, since_ms: int) -> None:
        with _errors(self._path):
            self._seek_to_time(since_ms)

    def _seek_to_time(self, since_ms: int) -> None:
        row = self._conn.execute(
            f"SELECT MIN(seq) FROM log WHERE topic IN ({self._marks}) AND ts_ms >= ?", [*self._topics, since_ms]
        ).fetchone()
        if row[0] is None:
            self._position = self._conn.execute("SELECT COALESCE(MAX(seq), 0) FROM log").fetchone()[0]
        else:
            self._position = row[0] - 1

    def poll(self, timeout: float, max_records: int = 500) -> list[Record]:
        deadline = time.monotonic() + timeout
        while True:
            records = self._fetch(max_records)
            remaining = deadline - time.monotonic()
            if records or remaining <= 0:
                return records
            with self._wakeup:
                self._wakeup.wait(min(remaining, _CROSS_PROCESS_POLL))

    def _fetch(self, max_records: int) -> list[Record]:
        with _errors(self._path):
            return self._fetch_rows(max_records)

    def _fetch_rows(self, max_records: int) -> list[Record]:
        skip, skipped = "", []
        if self._floors and self._position + 1 >= max(self._floors.values()):
            self._floors = {}
        if self._floors:
            skip = " AND NOT (" + " OR ".join(["(topic = ? AND seq < ?)"] * len(self._floors)) + ")"
            skipped = [each for floor in self._floors.items() for each in floor]
        rows = self._conn.execute(
            f"SELECT seq, topic, key, value, ts_ms FROM log WHERE seq > ? AND topic IN ({self._marks}){skip} "
            "ORDER BY seq LIMIT ?",
            [self._position, *self._topics, *skipped, max_records],
        ).fetchall()
        if rows:
            self._position = rows[-1][0]
        until = self._replay_until
        if not self._replay_done and (not rows or rows[-1][0] >= until):
            self._replay_done = True
        return [Record(topic, 0, seq, key, value, ts_ms, seq <= until) for seq, topic, key, value, ts_ms in rows]

    def commit(self) -> None:
        # (not below the group's earlier commit while a replay re-reads what it covers: see Consumer.commit)
        if self._group is None or self._position <= self._committed:
            return
        try:
            with _errors(self._path):
                self._conn.execute("BEGIN IMMEDIATE")
                self._conn.executemany(
                    "INSERT INTO offsets (grp, topic, seq) VALUES (?, ?, ?) "
                    "ON CONFLICT (grp, topic) DO UPDATE SET seq = excluded.seq",
                    [(self._group, topic, self._position) for topic in self._topics],
                )
                self._conn.execute("COMMIT")
        except BaseException:
            _rollback(self._conn)
            raise
        self._committed = self._position

    def close(self) -> None:
        self._conn.close()
