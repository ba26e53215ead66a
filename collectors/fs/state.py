"""What the filesystem collector last published, per path, in a local SQLite file.

The collector compares each freshly read permission state with the
fingerprint stored here and publishes only differences, so a restart
re-publishes nothing that did not change. Writes go into an open transaction
that the collector commits only after the bus confirmed (``flush``) the events
they describe: a crash loses the uncommitted part and the next run publishes
it again rather than never. Paths are stored as raw bytes so any name the
filesystem allows round-trips. One collector thread owns a store; it is not
meant to be shared between threads. A store names the event log it published
to (:func:`bind_to_log`): kept for another log (the log emptied, replaced or
moved aside), it forgets what it published, so the next scan publishes
everything into this one.

The bus may take a record before the flush that confirms it (Kafka's producer
sends in the background), so a crash can leave the bus *ahead* of the
committed records: a path changed A → B, B reached the bus, the commit did
not, and while the collector was down the path went back to A. The next scan
would find A as recorded and publish nothing, leaving B as the last word on
the bus. So every path an event is about is also marked *in flight*, and the
marks (with the writes so far) are committed before anything can be sent
(:meth:`PublishedStateStore.commit_in_flight`); the commit after the flush
clears them. Marks found when the store is opened, or left by a failed
flush, make their paths unknown (:meth:`PublishedStateStore.forget_unconfirmed`):
the next scan publishes them again, as deleted when they are gone.
"""

from __future__ import annotations

import logging
import os
import sqlite3
from dataclasses import dataclass
from pathlib import Path

from permwatch.events import ObjectType

log = logging.getLogger(__name__)

SCHEMA_VERSION = 1

_SCHEMA = """
CREATE TABLE IF NOT EXISTS published (
    path BLOB PRIMARY KEY,
    parent BLOB NOT NULL,
    object_type TEXT NOT NULL,
    fingerprint BLOB NOT NULL
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS published_by_parent ON published(parent);
CREATE TABLE IF NOT EXISTS meta (
    key TEXT PRIMARY KEY,
    value TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS in_flight (
    path BLOB PRIMARY KEY,
    object_type TEXT NOT NULL
) WITHOUT ROWID;
"""

UNKNOWN = b""
"""The fingerprint of a path whose last event may or may not have reached the bus: differs from every state."""


class StateStoreError(Exception):
    """The state file cannot be used (wrong schema version, not a database)."""


@dataclass(frozen=True, slots=True)
class PublishedRecord:
    """The last published state of one path: what kind of object it was and its fingerprint."""

    path: str
    object_type: ObjectType
    fingerprint: bytes

    @property
    def is_dir(self) -> bool:
        return self.object_type is ObjectType.DIRECTORY


class PublishedStateStore:
    """Per-path fingerprints of published states; ``None`` as path keeps them in memory only."""

    def __init__(self, path: Path | None) -> None:
        target = ":memory:" if path is None else str(path)
        if path is not None:
            path.parent.mkdir(parents=True, exist_ok=True)
        try:
            self._db = sqlite3.connect(target, isolation_level=None, check_same_thread=False)
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=NORMAL")
            version = self._db.execute("PRAGMA user_version").fetchone()[0]
            if version not in (0, SCHEMA_VERSION):
                raise StateStoreError(f"{target}: state schema version {version}, this build reads {SCHEMA_VERSION}")
            self._db.executescript(_SCHEMA)
            self._db.execute(f"PRAGMA user_version={SCHEMA_VERSION}")
        except sqlite3.DatabaseError as exc:
            raise StateStoreError(f"{target}: cannot use as state store: {exc}") from None
        self._puts: list[tuple[bytes, bytes, str, bytes]] = []
        """Writes not yet handed to SQLite: a walk's puts go in by the thousand, and any read sees them."""
        self._marks: list[tuple[bytes, str]] = []
        """In-flight marks not yet handed to SQLite (see the module docstring)."""
        self._marked = False
        """The in_flight table may hold rows (handed to SQLite since the last confirmed commit)."""
        self.unconfirmed_at_open = self.forget_unconfirmed()
        """Paths a crash left in flight, made unknown when the store was opened."""
        if self.unconfirmed_at_open:
            log.info(
                "%d path(s) were on their way to the bus at the last stop: the scan publishes them again",
                self.unconfirmed_at_open,
            )

    # ------------------------------------------------------------- reading

    def get(self, path: str) -> PublishedRecord | None:
        self._write_puts()
        row = self._db.execute(
            "SELECT object_type, fingerprint FROM published WHERE path = ?", (os.fsencode(path),)
        ).fetchone()
        return None if row is None else PublishedRecord(path, ObjectType(row[0]), row[1])

    def children(self, directory: str) -> dict[str, PublishedRecord]:
        """Records directly inside ``directory``, keyed by base name."""
        self._write_puts()
        key = os.fsencode(directory)
        rows = self._db.execute(
            "SELECT path, object_type, fingerprint FROM published WHERE parent = ? AND path != ?", (key, key)
        )
        children = {}
        for raw_path, object_type, fingerprint in rows:
            path = os.fsdecode(raw_path)
            children[os.path.basename(path)] = PublishedRecord(path, ObjectType(object_type), fingerprint)
        return children

    def subtree(self, path: str, *, include_self: bool = True) -> list[PublishedRecord]:
        """The records of everything below ``path`` (and of ``path`` itself), in path order."""
        self._write_puts()
        rows = self._db.execute(
            "SELECT path, object_type, fingerprint FROM published"
            " WHERE (path = ? AND ?) OR (path >= ? AND path < ?) ORDER BY path",
            _subtree_bounds(path, include_self),
        )
        return [PublishedRecord(os.fsdecode(raw), ObjectType(kind), fp) for raw, kind, fp in rows]

    def has_below(self, path: str) -> bool:
        """Whether anything below ``path`` is recorded."""
        self._write_puts()
        _, _, lower, upper = _subtree_bounds(path, False)
        return (
            self._db.execute("SELECT 1 FROM published WHERE path >= ? AND path < ? LIMIT 1", (lower, upper)).fetchone()
            is not None
        )

    def __len__(self) -> int:
        self._write_puts()
        return int(self._db.execute("SELECT count(*) FROM published").fetchone()[0])

    # ------------------------------------------------------------- writing

    def put(self, path: str, *, object_type: ObjectType, fingerprint: bytes) -> None:
        key = os.fsencode(path)
        self._puts.append((key, os.path.dirname(key), object_type.value, fingerprint))
        if len(self._puts) >= 1000:
            self._write_puts()

    def delete(self, path: str) -> None:
        self._write_puts()
        self._begin()
        self._db.execute("DELETE FROM published WHERE path = ?", (os.fsencode(path),))

    def delete_subtree(self, path: str, *, include_self: bool = True) -> None:
        self._write_puts()
        self._begin()
        self._db.execute(
            "DELETE FROM published WHERE (path = ? AND ?) OR (path >= ? AND path < ?)",
            _subtree_bounds(path, include_self),
        )

    def mark(self, path: str, *, object_type: ObjectType) -> None:
        """``path``'s event is on its way to the bus: unknown after a crash until :meth:`commit` confirms it."""
        self._marks.append((os.fsencode(path), object_type.value))

    def commit_in_flight(self) -> None:
        """Make the writes and marks so far durable before the bus may take the events they describe."""
        if self._puts or self._marks or self._db.in_transaction:
            self._write_puts()
            self._db.execute("COMMIT")

    def commit(self) -> None:
        """Make the writes since the last commit durable and clear the marks; call only after the bus confirmed
        them."""
        self._marks.clear()
        self._write_puts()
        if self._marked:
            self._begin()
            self._db.execute("DELETE FROM in_flight")
            self._marked = False
        if self._db.in_transaction:
            self._db.execute("COMMIT")

    def rollback(self) -> None:
        self._puts.clear()
        self._marks.clear()
        if self._db.in_transaction:
            self._db.execute("ROLLBACK")

    def forget_unconfirmed(self) -> int:
        """After a crash or a failed flush: drop the uncommitted writes, and make every path marked in flight
        unknown (:data:`UNKNOWN`, a record made for one deleted meanwhile), so the next scan publishes it again.
        Returns how many paths."""
        self.rollback()
        rows = self._db.execute("SELECT path, object_type FROM in_flight").fetchall()
        if rows:
            self._db.execute("BEGIN")
            self._db.executemany(
                "INSERT INTO published (path, parent, object_type, fingerprint) VALUES (?, ?, ?, ?)"
                " ON CONFLICT (path) DO UPDATE SET fingerprint = excluded.fingerprint",
                ((path, os.path.dirname(path), object_type, UNKNOWN) for path, object_type in rows),
            )
            self._db.execute("DELETE FROM in_flight")
            self._db.execute("COMMIT")
        self._marked = False
        return len(rows)

    @property
    def has_uncommitted(self) -> bool:
        return bool(self._puts or self._marks) or self._marked or self._db.in_transaction

    def bind_to_log(self, log_id: str) -> bool:
        """Name ``log_id`` as the log this store's records were published to. A store that named another (or
        none, but holds records) forgets them all first; True when it did."""
        self.rollback()
        row = self._db.execute("SELECT value FROM meta WHERE key = 'log_id'").fetchone()
        if row is not None and row[0] == log_id:
            return False
        forgot = len(self) > 0
        self._db.execute("BEGIN")
        self._db.execute("DELETE FROM published")
        self._db.execute("DELETE FROM in_flight")
        self._db.execute("INSERT OR REPLACE INTO meta (key, value) VALUES ('log_id', ?)", (log_id,))
        self._db.execute("COMMIT")
        return forgot

    def close(self) -> None:
        """Close without committing: what was not confirmed is published again next time."""
        self.rollback()
        self._db.close()

    def _write_puts(self) -> None:
        if self._puts:
            self._begin()
            self._db.executemany(
                "INSERT OR REPLACE INTO published (path, parent, object_type, fingerprint) VALUES (?, ?, ?, ?)",
                self._puts,
            )
            self._puts.clear()
        if self._marks:
            self._begin()
            self._db.executemany("INSERT OR REPLACE INTO in_flight (path, object_type) VALUES (?, ?)", self._marks)
            self._marks.clear()
            self._marked = True

    def _begin(self) -> None:
        if not self._db.in_transaction:
            self._db.execute("BEGIN")


def _subtree_bounds(path: str, include_self: bool) -> tuple[bytes, int, bytes, bytes]:
    """``(path, include_self, lower, upper)``: descendants are exactly ``lower <= p < upper``.

    ``"0"`` is the byte after ``"/"``, so ``[prefix + "/", prefix + "0")`` holds
    every path that continues below the directory and nothing else.
    """
    key = os.fsencode(path)
    prefix = key.rstrip(b"/")
    return key, int(include_self), prefix + b"/", prefix + b"0"


def bind_to_log(path: Path, log_id: str) -> bool:
    """:meth:`PublishedStateStore.bind_to_log` on the store at ``path`` (before its collector opens it)."""
    store = PublishedStateStore(path)
    try:
        return store.bind_to_log(log_id)
    finally:
        store.close()
