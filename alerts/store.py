"""The alerts stage's memory: one SQLite file (WAL) that survives restarts.

- ``delivered``: which (sink, event id) pairs were delivered (:class:`DeliveryLog`),
  so nothing is sent twice when records come again after a crash;
- ``burst_members``: every exposure's group and latest state (:class:`GroupStore`),
  so bursts continue across restarts;
- ``slack_posts``: every Slack message posted, with its channel id and ``ts``,
  and posts sent but not yet confirmed (:class:`SlackPosts`), so updates after
  a restart go to the same message and thread, and an unconfirmed post can be
  found instead of posted twice; ``slack_told``: which exposure events each
  post tells, so events delivered again after a crash (in another batch, so
  another reply) are not told a second time;
- ``file_appends``: where in its file a file sink's latest append went, recorded
  before the bytes are written (:class:`FileAppends`), so after a crash between
  the append and the delivery log's mark the sink knows which few bytes to
  look at instead of appending the same lines again.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from alerts.grouping import GroupSnapshot, Member
from permwatch.events import ExposureEvent

_SCHEMA = """
CREATE TABLE IF NOT EXISTS delivered (sink TEXT, event_id TEXT, PRIMARY KEY (sink, event_id));
CREATE TABLE IF NOT EXISTS burst_members (
    exposure_id TEXT PRIMARY KEY,
    group_id TEXT NOT NULL,
    position INTEGER NOT NULL,
    is_open INTEGER NOT NULL,
    last_at TEXT NOT NULL,
    state TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS burst_members_group ON burst_members (group_id, position);
CREATE INDEX IF NOT EXISTS burst_members_open ON burst_members (is_open, group_id);
CREATE TABLE IF NOT EXISTS slack_posts (
    sink TEXT, post_key TEXT, group_id TEXT NOT NULL, channel TEXT NOT NULL, thread_ts TEXT, since REAL NOT NULL,
    channel_id TEXT, ts TEXT,
    PRIMARY KEY (sink, post_key)
);
CREATE INDEX IF NOT EXISTS slack_posts_group ON slack_posts (group_id);
CREATE TABLE IF NOT EXISTS slack_told (sink TEXT, event_id TEXT, post_key TEXT NOT NULL, PRIMARY KEY (sink, event_id));
CREATE TABLE IF NOT EXISTS file_appends (
    sink TEXT, path TEXT, start INTEGER, length INTEGER NOT NULL, PRIMARY KEY (sink, path, start)
);
"""

_IN_CHUNK = 500  # SQLite's bound-parameter limit is far above this; keeps statements small


def open_state_db(path: Path | str) -> sqlite3.Connection:
    """Open (creating) the alert state file; ``":memory:"`` gives a throw-away one."""
    if str(path) != ":memory:":
        Path(path).parent.mkdir(parents=True, exist_ok=True)
    conn = sqlite3.connect(path, timeout=30, isolation_level=None, check_same_thread=False)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA busy_timeout=30000")
    conn.executescript(_SCHEMA)
    return conn


class DeliveryLog:
    """Which (sink, event id) pairs were delivered; SQLite so it survives restarts.

    Its file also holds the other alert state; :attr:`database` hands the
    connection to the stores that share it.
    """

    def __init__(self, path: Path) -> None:
        self._conn = open_state_db(path)

    @property
    def database(self) -> sqlite3.Connection:
        return self._conn

    def seen(self, sink: str, event_id: str) -> bool:
        row = self._conn.execute("SELECT 1 FROM delivered WHERE sink = ? AND event_id = ?", (sink, event_id))
        return row.fetchone() is not None

    def delivered_among(self, sink: str, event_ids: Sequence[str]) -> set[str]:
        return _delivered_among(self._conn, sink, event_ids)

    def mark(self, sink: str, event_id: str) -> None:
        self._conn.execute("INSERT OR IGNORE INTO delivered VALUES (?, ?)", (sink, event_id))

    def mark_many(self, sink: str, event_ids: Iterable[str]) -> None:
        with _transaction(self._conn):
            self._conn.executemany("INSERT OR IGNORE INTO delivered VALUES (?, ?)", ((sink, e) for e in event_ids))

    def close(self) -> None:
        self._conn.close()


class GroupStore:
    """Every exposure's group and latest state, for :class:`alerts.grouping.BurstGrouper` after a restart."""

    def __init__(self, conn: sqlite3.Connection) -> None:
        self._conn = conn

    def save(self, assignments: Iterable[tuple[str, Member]]) -> None:
        """Upsert members (in the order they joined); one transaction."""
        with _transaction(self._conn):
            position = self._conn.execute("SELECT COALESCE(MAX(position), 0) FROM burst_members").fetchone()[0]
            for group_id, member in assignments:
                position += 1
                self._conn.execute(
                    "INSERT INTO burst_members (exposure_id, group_id, position, is_open, last_at, state) "
                    "VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT (exposure_id) DO UPDATE SET "
                    "is_open = excluded.is_open, last_at = excluded.last_at, state = excluded.state",
                    (
                        member.exposure_id,
                        group_id,
                        position,
                        int(member.is_open),
                        member.latest.observed_at.isoformat(),
                        _encode_member(member),
                    ),
                )

    def load_open(self) -> list[GroupSnapshot]:
        rows = self._conn.execute("SELECT DISTINCT group_id FROM burst_members WHERE is_open = 1").fetchall()
        return [self._load(group_id) for (group_id,) in rows]

    def load_group_of(self, exposure_id: str) -> GroupSnapshot | None:
        row = self._conn.execute("SELECT group_id FROM burst_members WHERE exposure_id = ?", (exposure_id,)).fetchone()
        return None if row is None else self._load(row[0])

    def prune(self, closed_before: datetime) -> int:
        """Forget groups with nothing open and no event since ``closed_before``; returns how many."""
        with _transaction(self._conn):
            stale = [
                row[0]
                for row in self._conn.execute(
                    "SELECT group_id FROM burst_members GROUP BY group_id HAVING MAX(is_open) = 0 AND MAX(last_at) < ?",
                    (closed_before.isoformat(),),
                )
            ]
            for group_id in stale:
                self._conn.execute("DELETE FROM burst_members WHERE group_id = ?", (group_id,))
                self._conn.execute("DELETE FROM slack_posts WHERE group_id = ?", (group_id,))
        return len(stale)

    def _load(self, group_id: str) -> GroupSnapshot:
        rows = self._conn.execute(
            "SELECT state FROM burst_members WHERE group_id = ? ORDER BY position", (group_id,)
        ).fetchall()
        members = tuple(_decode_member(row[0]) for row in rows)
        actor = next((m.latest.actor for m in members if m.latest.actor), None)
        return GroupSnapshot(group_id, actor, members)


@dataclass(frozen=True)
class PendingPost:
    channel: str
    thread_ts: str | None
    since: float


class SlackPosts:
    """Every Slack post of a sink: pending (sent, no answer yet) or confirmed with its channel id and ts.

    A group's root message is the post with key ``<group>/<channel>/root``; its
    (channel id, ts) is where later updates and thread replies go.
    """

    def __init__(self, conn: sqlite3.Connection) -> None:
        self._conn = conn

    def posted(self, sink: str, post_key: str) -> tuple[str, str] | None:
        row = self._conn.execute(
            "SELECT channel_id, ts FROM slack_posts WHERE sink = ? AND post_key = ? AND ts IS NOT NULL",
            (sink, post_key),
        ).fetchone()
        return None if row is None else (row[0], row[1])

    def pending(self, sink: str, post_key: str) -> PendingPost | None:
        row = self._conn.execute(
            "SELECT channel, thread_ts, since FROM slack_posts WHERE sink = ? AND post_key = ? AND ts IS NULL",
            (sink, post_key),
        ).fetchone()
        return None if row is None else PendingPost(row[0], row[1], row[2])

    def begin(self, sink: str, post_key: str, group_id: str, pending: PendingPost, told: Sequence[str] = ()) -> None:
        """Record a post about to be sent, and the exposure event ids it tells, in one transaction."""
        with _transaction(self._conn):
            self._conn.execute(
                "INSERT OR REPLACE INTO slack_posts VALUES (?, ?, ?, ?, ?, ?, NULL, NULL)",
                (sink, post_key, group_id, pending.channel, pending.thread_ts, pending.since),
            )
            self._conn.executemany(
                "INSERT OR REPLACE INTO slack_told VALUES (?, ?, ?)", ((sink, e, post_key) for e in told)
            )

    def pending_telling(self, sink: str, event_ids: Sequence[str]) -> dict[str, PendingPost]:
        """post key → the unconfirmed posts of this sink that tell any of ``event_ids``."""
        found: dict[str, PendingPost] = {}
        for start in range(0, len(event_ids), _IN_CHUNK):
            chunk = event_ids[start : start + _IN_CHUNK]
            rows = self._conn.execute(
                "SELECT DISTINCT p.post_key, p.channel, p.thread_ts, p.since FROM slack_told t JOIN slack_posts p "
                "ON p.sink = t.sink AND p.post_key = t.post_key WHERE t.sink = ? AND p.ts IS NULL "
                f"AND t.event_id IN ({','.join('?' * len(chunk))})",
                (sink, *chunk),
            )
            found.update((key, PendingPost(channel, thread_ts, since)) for key, channel, thread_ts, since in rows)
        return found

    def told(self, sink: str, event_ids: Sequence[str]) -> set[str]:
        """Those of ``event_ids`` a confirmed post of this sink tells already."""
        found: set[str] = set()
        for start in range(0, len(event_ids), _IN_CHUNK):
            chunk = event_ids[start : start + _IN_CHUNK]
            rows = self._conn.execute(
                "SELECT t.event_id FROM slack_told t JOIN slack_posts p ON p.sink = t.sink AND p.post_key = t.post_key"
                f" WHERE t.sink = ? AND p.ts IS NOT NULL AND t.event_id IN ({','.join('?' * len(chunk))})",
                (sink, *chunk),
            )
            found.update(row[0] for row in rows)
        return found

    def confirm(self, sink: str, post_key: str, channel_id: str, ts: str) -> None:
        self._conn.execute(
            "UPDATE slack_posts SET channel_id = ?, ts = ? WHERE sink = ? AND post_key = ?",
            (channel_id, ts, sink, post_key),
        )

    def forget(self, sink: str, post_key: str) -> None:
        with _transaction(self._conn):
            self._conn.execute("DELETE FROM slack_posts WHERE sink = ? AND post_key = ?", (sink, post_key))
            self._conn.execute("DELETE FROM slack_told WHERE sink = ? AND post_key = ?", (sink, post_key))


@dataclass(frozen=True)
class FileAppend:
    """One append's place in its file: ``length`` bytes from offset ``start``."""

    start: int
    length: int

    @property
    def end(self) -> int:
        return self.start + self.length


class FileAppends:
    """The appends of one file sink that are not known to be in the delivery log yet.

    A sink records an append here before writing it and forgets it once the
    dispatcher has marked its events; what is left after a crash is the few
    places in the file where lines the delivery log does not know can be.
    """

    def __init__(self, conn: sqlite3.Connection, sink: str, path: Path) -> None:
        self._conn = conn
        self._sink = sink
        self._path = str(path)

    def unconfirmed(self) -> list[FileAppend]:
        rows = self._conn.execute(
            "SELECT start, length FROM file_appends WHERE sink = ? AND path = ? ORDER BY start",
            (self._sink, self._path),
        ).fetchall()
        return [FileAppend(start, length) for start, length in rows]

    def begin(self, append: FileAppend, *, replacing: FileAppend | None = None) -> None:
        """Record ``append`` (and forget ``replacing``, now confirmed) in one transaction."""
        with _transaction(self._conn):
            if replacing is not None:
                self._delete(replacing)
            self._conn.execute(
                "INSERT OR REPLACE INTO file_appends VALUES (?, ?, ?, ?)",
                (self._sink, self._path, append.start, append.length),
            )

    def forget(self, append: FileAppend) -> None:
        self._delete(append)

    def delivered_among(self, event_ids: Sequence[str]) -> set[str]:
        """Which of ``event_ids`` the delivery log has marked delivered for this sink."""
        return _delivered_among(self._conn, self._sink, event_ids)

    def _delete(self, append: FileAppend) -> None:
        self._conn.execute(
            "DELETE FROM file_appends WHERE sink = ? AND path = ? AND start = ?", (self._sink, self._path, append.start)
        )


def _delivered_among(conn: sqlite3.Connection, sink: str, event_ids: Sequence[str]) -> set[str]:
    found: set[str] = set()
    for start in range(0, len(event_ids), _IN_CHUNK):
        chunk = list(event_ids[start : start + _IN_CHUNK])
        marks = ",".join("?" * len(chunk))
        rows = conn.execute(f"SELECT event_id FROM delivered WHERE sink = ? AND event_id IN ({marks})", [sink, *chunk])
        found.update(row[0] for row in rows)
    return found


class _transaction:
    """BEGIN IMMEDIATE … COMMIT, or ROLLBACK when the block raises."""

    def __init__(self, conn: sqlite3.Connection) -> None:
        self._conn = conn

    def __enter__(self) -> None:
        self._conn.execute("BEGIN IMMEDIATE")

    def __exit__(self, exc_type: object, exc: object, tb: object) -> None:
        self._conn.execute("COMMIT" if exc_type is None else "ROLLBACK")


def _encode_member(member: Member) -> str:
    return json.dumps(
        {
            "latest": member.latest.model_dump(mode="json"),
            "open_groups": list(member.open_groups),
            "open_people": member.open_people,
            "previous_groups": None if member.previous_groups is None else list(member.previous_groups),
        },
        separators=(",", ":"),
    )


def _decode_member(text: str) -> Member:
    raw = json.loads(text)
    previous = raw["previous_groups"]
    return Member(
        ExposureEvent.model_validate(raw["latest"]),
        tuple(raw["open_groups"]),
        raw["open_people"],
        None if previous is None else tuple(previous),
    )
