"""The workshop's store: the record indexed by key, with snapshots of the replayed state along it (issue 21).

Every workshop command used to replay the whole history. The store is one
SQLite file beside the processor's state, named by the log it describes (the
embedded log's ``log_id``; for Kafka a hash of its topics and brokers), built
by ``permwatch snapshot`` in one replay of the history:

- ``records``: every input record in history order (``ord``), with its topic,
  partition, offset, key, time, bytes and the replay batch it belongs to.
  Indexed by key, so a folder's timeline reads its unit's records, the
  keyless ones (roots and their ancestors, broadcast), its ancestors' and the
  directory's, labels' and decisions' — not everyone's — and still judges them
  in the full history's batches.
- ``windows``: every exposure window that replay found, so ``exposures`` (and
  ``timeline EXPOSURE_ID``) answer without replaying.
- ``snapshots``: every ``every`` records, at a batch boundary, the engine's
  state exactly as :mod:`processor.checkpoint` captures it, framed as a
  checkpoint (format, code fingerprint, identity, the positions it covers,
  SHA-256), plus the exposure windows open at that point (what a replay from it
  continues: :func:`windows_from`). ``who-can-read --at`` starts from the
  latest snapshot at or before the time it asks about and replays only the
  rest. A snapshot that fails any check (checksum, log identity, positions,
  another release) is named in one line and an older one is tried, down to a
  replay from the first record: a longer replay, never another answer.

Why replay-made side snapshots and not the live processor's checkpoints: a
replay judges the records that reached the log in the same millisecond
together, while the live processor judged whatever batch it happened to read
(and, on Kafka, read partitions at its own pace). State taken from the live run
would give exposure windows with the live run's batching, which the record does
not hold, so answers from it could differ from a full replay's. Snapshots taken
by the replay itself at its own batch boundaries are, by construction, the
state a full replay has at that point. They reuse the checkpoint's capture,
restore and framing, so the two cannot drift apart.

The log goes on growing after a build. The store is used while the log still
holds everything it was built from (same identity, same first offsets, ends
not behind): what was appended since (the *tail*) is read from the log by
position and replayed after the last snapshot, which every build takes at its
very end. That equals a full replay only while the tail comes after the
store in time (every tail record later than the store's latest), so the
history's order and batches are the same; when it does not (Kafka producers'
clocks), or the log lost records (retention, a replaced file), the store is
not used and the command replays in full, with one line saying to run
``permwatch snapshot`` again.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import logging
import os
import pickle
import sqlite3
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from permwatch.events import INPUT_TOPICS, TOPIC_FS, AnyEvent
from permwatch.transport.base import Bus, LogExtent, Record
from processor import checkpoint
from processor.engine import Engine
from processor.forensics import ExposureWindow, WindowFold, ancestors, select_windows
from processor.gcpause import gc_paused
from processor.replay import ReplayResult, replay

log = logging.getLogger("permwatch.workshop")

FORMAT = "2"
DEFAULT_EVERY = 5_000
"""Records between snapshots: a command replays at most this many past its snapshot (0.1-0.5 s on these
machines) after loading it (0.2-0.4 s with 100,000 folders); each snapshot costs the state's size on disk."""

_SCHEMA = """
CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE records (
    ord INTEGER PRIMARY KEY, topic TEXT NOT NULL, part INTEGER NOT NULL, off INTEGER NOT NULL,
    key TEXT, ts_ms INTEGER NOT NULL, batch INTEGER NOT NULL, value BLOB
);
CREATE TABLE batches (batch INTEGER PRIMARY KEY, end_ts_ms INTEGER NOT NULL);
CREATE TABLE windows (seq INTEGER PRIMARY KEY, opened_us INTEGER NOT NULL, closed_us INTEGER, data BLOB);
CREATE TABLE snapshots (
    ord INTEGER PRIMARY KEY, last_ts_ms INTEGER NOT NULL, max_ts_ms INTEGER NOT NULL, closed_us INTEGER NOT NULL,
    data BLOB
);
"""
_INDEXES = """
CREATE INDEX records_key ON records (key);
CREATE INDEX records_topic ON records (topic);
"""


class StoreUnusable(Exception):
    """The store does not describe the log as it is now; the message says why, in a few words."""


def log_key(bus: Bus) -> str:
    """What names the log: the embedded log's random id, else a hash of how the bus describes itself."""
    if isinstance(bus, LogExtent):
        if bus.log_id is not None:
            return bus.log_id
        return hashlib.sha256(bus.describe().encode()).hexdigest()[:16]
    raise StoreUnusable("this transport cannot say which log it is")


def store_path(state_dir: Path, bus: Bus) -> Path:
    return Path(state_dir) / "workshop" / f"store-{log_key(bus)}.db"


def _ends(bus: Bus) -> dict[str, list[int]]:
    ranges = bus.offset_ranges(INPUT_TOPICS) if isinstance(bus, LogExtent) else None
    if ranges is None:
        raise StoreUnusable("the log cannot say where it ends now")
    return {f"{topic}/{part}": [first, end] for (topic, part), (first, end) in sorted(ranges.items())}


def _identity(key: str) -> dict[str, str]:
    return {"store": "workshop", "log": key, "gap_ms": "0"}


# ---------------------------------------------------------------- building


@dataclass(frozen=True)
class Built:
    path: Path
    records: int
    snapshots: int
    seconds: float
    bytes: int


class _Recorder:
    """Passes the history through to the replay, storing each record with its batch and keeping the positions
    the records before the current one cover (what a snapshot taken at this boundary holds)."""

    def __init__(self, conn: sqlite3.Connection, records: Iterator[Record]) -> None:
        self._conn = conn
        self._records = records
        self._pending: list[tuple[Any, ...]] = []
        self._batches: list[tuple[int, int]] = []
        self.covered: dict[tuple[str, int], int] = {}
        self.last_ts_ms = 0
        self.max_ts_ms = 0
        self.count = 0

    def __iter__(self) -> Iterator[Record]:
        previous: Record | None = None
        batch = 0
        for record in self._records:
            if previous is not None:
                self.covered[previous.topic, previous.partition] = previous.offset + 1
                self.last_ts_ms = previous.timestamp_ms
                self.max_ts_ms = max(self.max_ts_ms, previous.timestamp_ms)
                if record.timestamp_ms - previous.timestamp_ms > 0:  # where the replay judges (gap 0)
                    self._batches.append((batch, previous.timestamp_ms))  # its clock when it is judged
                    batch += 1
            row = (self.count, record.topic, record.partition, record.offset, record.key, record.timestamp_ms)
            self._pending.append((*row, batch, record.value))
            self.count += 1
            if len(self._pending) >= 10_000:
                self.write()
            previous = record
            yield record
        if previous is not None:
            self._batches.append((batch, previous.timestamp_ms))
            self.covered[previous.topic, previous.partition] = previous.offset + 1
            self.last_ts_ms = previous.timestamp_ms
            self.max_ts_ms = max(self.max_ts_ms, previous.timestamp_ms)

    def write(self) -> None:
        self._conn.executemany("INSERT INTO records VALUES (?, ?, ?, ?, ?, ?, ?, ?)", self._pending)
        self._conn.executemany("INSERT INTO batches VALUES (?, ?)", self._batches)
        self._pending, self._batches = [], []


def build(bus: Bus, path: Path, *, every: int = DEFAULT_EVERY, progress: Callable[[int], None] | None = None) -> Built:
    """Replay the whole history once into a new store at ``path`` (replacing it atomically)."""
    started = time.perf_counter()
    key = log_key(bus)
    covers = _ends(bus)  # what the store holds: what the log holds now; what is appended meanwhile is a tail
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    temporary.unlink(missing_ok=True)
    temporary.touch(mode=0o600)  # it is unpickled when used: only its owner may write it, as a checkpoint
    conn = sqlite3.connect(temporary, isolation_level=None)
    snapshots = 0
    try:
        conn.execute("PRAGMA journal_mode=OFF")
        conn.execute("PRAGMA synchronous=OFF")
        conn.executescript(_SCHEMA)
        conn.execute("BEGIN")
        recorder = _Recorder(conn, _within(bus.history(INPUT_TOPICS), covers))
        fold = WindowFold()
        last_snapshot = 0
        closed_us = 0  # the latest close among the windows closed so far (a snapshot no longer carries them)

        def at_boundary(result: ReplayResult, *, last: bool = False) -> None:
            nonlocal last_snapshot, snapshots, closed_us
            for verdict in result.verdicts:
                fold.add(verdict)
                if verdict.closed_at is not None:
                    closed_us = max(closed_us, _us(verdict.closed_at))
            result.verdicts.clear()  # folded: only the windows still open matter to a snapshot
            if result.events - last_snapshot < (1 if last else every):
                return
            last_snapshot = result.events
            state = {"engine": checkpoint.capture(result.engine), "windows": fold.open_windows()}
            payload = pickle.dumps(state, protocol=5)
            head, _ = checkpoint.frame(payload, recorder.covered, _identity(key), records=result.events, log_id=key)
            conn.execute(
                "INSERT INTO snapshots VALUES (?, ?, ?, ?, ?)",
                [result.events, recorder.last_ts_ms, recorder.max_ts_ms, closed_us, head + payload],
            )
            snapshots += 1

        final = replay(recorder, boundary=at_boundary, progress=progress)
        recorder.write()
        at_boundary(final, last=True)  # the last batch's verdicts, and where a replay of the tail starts
        conn.executemany(
            "INSERT INTO windows VALUES (?, ?, ?, ?)",
            (
                (seq, _us(w.opened_at), None if w.closed_at is None else _us(w.closed_at), pickle.dumps(w))
                for seq, w in enumerate(fold.all_windows())
            ),
        )
        for statement in _INDEXES.strip().splitlines():
            conn.execute(statement)
        meta = {
            "format": FORMAT,
            "log": key,
            "covers": json.dumps(covers),
            "records": str(recorder.count),
            "max_ts_ms": str(recorder.max_ts_ms),
        }
        conn.executemany("INSERT INTO meta VALUES (?, ?)", sorted(meta.items()))
        conn.execute("COMMIT")
        conn.close()
        os.replace(temporary, path)
    except BaseException:
        conn.close()
        temporary.unlink(missing_ok=True)
        raise
    return Built(path, recorder.count, snapshots, time.perf_counter() - started, path.stat().st_size)


# ---------------------------------------------------------------- using it


@dataclass(frozen=True)
class FromSnapshot:
    """A replay that started from a snapshot (``start_ord`` 0 and no windows: from the first record)."""

    result: ReplayResult
    start_ord: int
    windows: list[ExposureWindow]
    """The exposure windows open at the snapshot, to continue with the replay's verdicts."""
    rejected: list[str]
    """Snapshots turned down on the way, each with why."""


class IndexedRecords:
    """Records read from the store, iterable once, that say where the full history's batches start. Each
    comes with its batch's last time as its own: the replay's clock when it judges the batch (the detection
    time), which a record of another folder may have set in the full history."""

    def __init__(self, rows: Iterator[tuple[Any, ...]]) -> None:
        self._rows = rows
        self._batch = -1
        self._judged = -1

    def __iter__(self) -> Iterator[Record]:
        for _ord, topic, part, off, key, _ts_ms, batch, value, judged_ms in self._rows:
            self._batch = batch
            yield Record(topic, part, off, key, value, judged_ms)

    def new_batch(self, record: Record) -> bool:
        starts = self._batch != self._judged
        self._judged = self._batch
        return starts


class WorkshopStore:
    """An open store that has been checked to describe ``bus``'s log as it is now."""

    def __init__(self, path: Path, bus: Bus) -> None:
        if not path.exists():
            raise StoreUnusable(f"no workshop store at {path}")
        self.path = path
        self._conn = sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True)
        try:
            meta = dict(self._conn.execute("SELECT key, value FROM meta").fetchall())
        except sqlite3.DatabaseError as exc:
            self._conn.close()
            raise StoreUnusable(f"{path} is not readable ({exc})") from None
        self.key = log_key(bus)
        problem = None
        if meta.get("format") != FORMAT:
            problem = f"format {meta.get('format')}, this release reads {FORMAT} (run permwatch snapshot again)"
        elif meta.get("log") != self.key:
            problem = "built from another log"
        else:
            self.stored = int(meta["records"])
            self.tail, problem = _tail(bus, json.loads(meta["covers"]), int(meta["max_ts_ms"]))
        if problem is not None:
            self._conn.close()
            raise StoreUnusable(f"{path}: {problem}")
        self.record_count = self.stored + len(self.tail)

    def close(self) -> None:
        self._conn.close()

    def rows(self, start_ord: int = 0, until_ms: int | None = None) -> Iterator[tuple[Any, ...]]:
        bound = "" if until_ms is None else " AND ts_ms <= ?"
        params = [start_ord] + ([] if until_ms is None else [until_ms])
        yield from self._conn.execute(f"SELECT * FROM records WHERE ord >= ?{bound} ORDER BY ord", params)

    def records(self, start_ord: int = 0, until_ms: int | None = None) -> Iterator[Record]:
        """The history from ``start_ord`` on (to ``until_ms``): the store's records, then the log's tail."""
        for _ord, topic, part, off, key, ts_ms, _batch, value in self.rows(start_ord, until_ms):
            yield Record(topic, part, off, key, value, ts_ms)
        for record in self.tail:
            if until_ms is None or record.timestamp_ms <= until_ms:  # as the log's history selects them
                yield record

    def _tail_rows(self, wanted: Callable[[Record], bool]) -> list[tuple[Any, ...]]:
        """The tail's records ``wanted`` as the store's rows with their batch's time (see :meth:`folder_records`):
        batched as the build batches, after the store's last batch."""
        batch = self._conn.execute("SELECT COALESCE(MAX(batch), -1) FROM batches").fetchone()[0]
        rows: list[list[Any]] = []
        ends: list[int] = []
        previous = None
        for ordinal, r in enumerate(self.tail, start=self.stored):
            if previous is None or r.timestamp_ms - previous > 0:
                batch += 1
                ends.append(r.timestamp_ms)
            previous = ends[-1] = r.timestamp_ms
            if wanted(r):
                rows.append([ordinal, r.topic, r.partition, r.offset, r.key, r.timestamp_ms, batch, r.value, len(ends)])
        for row in rows:
            row[-1] = ends[row[-1] - 1]
        return [tuple(row) for row in rows]

    def folder_records(self, folder: str) -> IndexedRecords:
        """What a timeline of ``folder`` needs: its unit's records (whichever key they travel under: the folder,
        an ancestor, or one below it), the keyless broadcasts, and every directory, label and decision record."""
        keys = [folder, *ancestors(folder)]
        below = folder.rstrip("/") + "/"
        query = (
            "SELECT records.*, batches.end_ts_ms FROM records JOIN batches USING (batch) WHERE ord IN ("
            f"SELECT ord FROM records WHERE key IN ({','.join('?' * len(keys))}) "
            "UNION SELECT ord FROM records WHERE key >= ? AND key < ? "
            "UNION SELECT ord FROM records WHERE key IS NULL "
            "UNION SELECT ord FROM records WHERE topic IN (?, ?, ?)"
            ") ORDER BY ord"
        )
        others = [t for t in INPUT_TOPICS if t != TOPIC_FS]
        params = [*keys, below, below[:-1] + chr(ord("/") + 1), *others]
        stored = self._conn.execute(query, params)
        if not self.tail:
            return IndexedRecords(iter(stored))
        wanted = set(keys)

        def in_unit(r: Record) -> bool:
            return r.key is None or r.key in wanted or r.key.startswith(below) or r.topic != TOPIC_FS

        return IndexedRecords(itertools.chain(stored, self._tail_rows(in_unit)))

    def exposure_windows(
        self, *, label: str | None = None, since: datetime | None = None, until: datetime | None = None
    ) -> list[ExposureWindow]:
        """The exposure windows the full replay that built the store found, as :func:`exposure_windows` selects
        them: no replay at all, or, with a tail, one of the tail only."""
        if self.tail:
            return select_windows(self._continued(), label=label, since=since, until=until)
        where, params = ["1"], []
        if since is not None:
            where.append("(closed_us IS NULL OR closed_us >= ?)")
            params.append(_us(since))
        if until is not None:
            where.append("opened_us <= ?")
            params.append(_us(until))
        rows = self._conn.execute(f"SELECT data FROM windows WHERE {' AND '.join(where)} ORDER BY seq", params)
        with gc_paused():
            found = [pickle.loads(data) for (data,) in rows]
        selected = [w for w in found if label is None or w.label == label]
        return sorted(selected, key=lambda w: (w.opened_at, w.folder))

    def _continued(self) -> list[ExposureWindow]:
        """Every window, the tail replayed after the build's last snapshot: the windows closed by the store's
        end as stored, those still open there continued (or, that snapshot unusable, all from a full replay)."""
        try:
            _header, payload = self.load(self.stored)
            with gc_paused():
                state = pickle.loads(payload)
        except Exception as exc:  # CheckpointError, or a layout the fingerprint missed
            log.warning("workshop store %s: its last snapshot is not usable (%s); replaying all", self.path, exc)
            fold = WindowFold()
            for verdict in replay(self.records()).verdicts:
                fold.add(verdict)
            return fold.all_windows()
        rows = self._conn.execute("SELECT data FROM windows WHERE closed_us IS NOT NULL ORDER BY seq")
        with gc_paused():
            closed = [pickle.loads(data) for (data,) in rows]

        def start(clock: Callable[[], datetime], saved: dict[str, Any] = state["engine"]) -> Engine:
            with gc_paused():
                return checkpoint.restore(saved, source="replay", clock=clock)

        fold = WindowFold(state["windows"], adopt=True)
        for verdict in replay(self.tail, start=start).verdicts:
            fold.add(verdict)
        return [*closed, *fold.all_windows()]

    def snapshot_candidates(self, *, at_ms: int | None, closed_before: datetime | None) -> list[tuple[int, int]]:
        """(ord, last record's time) of the snapshots newest first: of those whose records all reached the log
        at or before ``at_ms``, and whose closed exposure windows (which it no longer carries) all closed
        before ``closed_before``: the windows a question about ``closed_before`` on needs are all in it."""
        where, params = [], []
        if at_ms is not None:
            where.append("max_ts_ms <= ?")
            params.append(at_ms)
        if closed_before is not None:
            where.append("closed_us < ?")
            params.append(_us(closed_before))
        condition = f" WHERE {' AND '.join(where)}" if where else ""
        rows = self._conn.execute(f"SELECT ord, last_ts_ms FROM snapshots{condition} ORDER BY ord DESC", params)
        return [(int(o), int(t)) for o, t in rows.fetchall()]

    def load(self, start_ord: int) -> tuple[dict[str, Any], bytes]:
        """The verified snapshot at ``start_ord``: its header and payload; :class:`checkpoint.CheckpointError`."""
        row = self._conn.execute("SELECT data FROM snapshots WHERE ord = ?", [start_ord]).fetchone()
        if row is None or row[0] is None:
            raise checkpoint.CheckpointError("missing")
        data = bytes(row[0])
        header, offsets, payload = checkpoint.split(data)
        if header.get("format") != checkpoint.FORMAT or header.get("code") != checkpoint.code_fingerprint():
            raise checkpoint.CheckpointError("written by another release")
        if header.get("identity") != _identity(self.key) or header.get("log_id") != self.key:
            raise checkpoint.CheckpointError("written for another log")
        if len(payload) != header.get("payload_bytes") or hashlib.sha256(payload).hexdigest() != header.get(
            "payload_sha256"
        ):
            raise checkpoint.CheckpointError("truncated or corrupt")
        if header.get("records") != start_ord:
            raise checkpoint.CheckpointError(f"covers {header.get('records')} records, stored at {start_ord}")
        self._check_positions(start_ord, offsets)
        return header, payload

    def _check_positions(self, start_ord: int, offsets: Mapping[tuple[str, int], int]) -> None:
        """The snapshot's positions must be where the store's records before and after it are."""
        last = self._conn.execute("SELECT topic, part, off FROM records WHERE ord = ?", [start_ord - 1]).fetchone()
        after = self._conn.execute("SELECT topic, part, off FROM records WHERE ord = ?", [start_ord]).fetchone()
        if last is None or offsets.get((last[0], last[1])) != last[2] + 1:
            raise checkpoint.CheckpointError("its positions do not match the record before it")
        if after is not None and (after[0], after[1]) in offsets and after[2] < offsets[after[0], after[1]]:
            raise checkpoint.CheckpointError("its positions cover records after it")

    def replay_from_snapshot(
        self,
        *,
        until: datetime | None = None,
        windows_since: datetime | None = None,
        keep: Callable[[AnyEvent], object | None] | None = None,
    ) -> FromSnapshot:
        """Replay to ``until`` (or the end) from the latest usable snapshot at or before it (and, with
        ``windows_since``, holding every exposure window that overlaps ``windows_since`` on); from the first
        record if none is usable."""
        until_ms = None if until is None else int(until.timestamp() * 1000)
        rejected: list[str] = []
        for start_ord, last_ts_ms in self.snapshot_candidates(at_ms=until_ms, closed_before=windows_since):
            first = self._conn.execute(
                "SELECT ts_ms FROM records WHERE ord >= ? AND (? IS NULL OR ts_ms <= ?) ORDER BY ord LIMIT 1",
                [start_ord, until_ms, until_ms],
            ).fetchone()
            if first is not None and first[0] <= last_ts_ms:
                continue  # a record skipped by ``until`` would join the snapshot's last batch in a full replay
            try:
                _header, payload = self.load(start_ord)
                with gc_paused():
                    state = pickle.loads(payload)
            except checkpoint.CheckpointError as exc:
                rejected.append(f"snapshot at record {start_ord:,}: {exc}")
                log.warning("workshop store %s: snapshot at record %s not used: %s", self.path, start_ord, exc)
                continue
            except Exception as exc:  # the checksum matched, so a layout the fingerprint missed: an older one
                rejected.append(f"snapshot at record {start_ord:,}: does not load ({type(exc).__name__})")
                log.warning("workshop store %s: snapshot at record %s does not load: %s", self.path, start_ord, exc)
                continue

            def start(clock: Callable[[], datetime], saved: dict[str, Any] = state["engine"]) -> Engine:
                with gc_paused():
                    return checkpoint.restore(saved, source="replay", clock=clock)

            result = replay(self.records(start_ord, until_ms), until=until, keep=keep, start=start)
            return FromSnapshot(result, start_ord, list(state["windows"]), rejected)
        result = replay(self.records(0, until_ms), until=until, keep=keep)
        return FromSnapshot(result, 0, [], rejected)

    def folder_replay(self, folder: str, keep: Callable[[AnyEvent], object | None] | None = None) -> ReplayResult:
        """A replay of what ``folder``'s timeline needs only, in the full history's batches."""
        indexed = self.folder_records(folder)
        return replay(indexed, keep=keep, new_batch=indexed.new_batch)


def _tail(bus: Bus, covers: dict[str, list[int]], max_ts_ms: int) -> tuple[list[Record], str | None]:
    """What the log holds after what the store ``covers``, if the store still describes its beginning, and
    why not if not."""
    now = _ends(bus)
    start: dict[tuple[str, int], int] = {}
    for name, (first, end) in covers.items():
        held = now.get(name)
        # (a partition empty then may have a first record now, at or after where the log ended)
        if held is None or held[1] < end or (held[0] != first and not (first == end and held[0] >= end)):
            return [], "the log no longer holds what it was built from (run permwatch snapshot again)"
        start[_partition(name)] = end
    for name, (first, _end) in now.items():  # a partition the store holds nothing of: all of it is new
        start.setdefault(_partition(name), first)
    if all(end <= start[_partition(name)] for name, (_first, end) in now.items()):
        return [], None
    tail = list(bus.history(INPUT_TOPICS, start=start))
    if any(r.timestamp_ms <= max_ts_ms for r in tail):
        return [], "records reached the log since it was built with earlier times (run permwatch snapshot again)"
    return tail, None


def _within(records: Iterator[Record], ends: dict[str, list[int]]) -> Iterator[Record]:
    """``records`` before ``ends`` ("topic/partition" → [first, end]): what the log held when a build began (the
    embedded log shares one offset space among its topics, so every topic's end is where the log ended)."""
    for record in records:
        bound = ends.get(f"{record.topic}/{record.partition}")
        if bound is not None and record.offset < bound[1]:
            yield record


def _partition(name: str) -> tuple[str, int]:
    topic, part = name.rsplit("/", 1)
    return topic, int(part)


def _us(at: datetime) -> int:
    return int(at.timestamp()) * 1_000_000 + at.microsecond


def windows_from(found: FromSnapshot, **select: Any) -> list[ExposureWindow]:
    """The exposure windows of a replay from a snapshot: those open at it, continued with the replay's."""
    fold = WindowFold(found.windows)
    for verdict in found.result.verdicts:
        fold.add(verdict)
    return fold.windows(**select)
