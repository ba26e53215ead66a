"""The processor's own note of what it published, kept beside its checkpoint, for a log that loses its record.

A restart takes the ``exposures`` topic as the truth of what was published
(:mod:`processor.published`). When the event log is emptied, replaced or
moved aside after damage, that record goes with it while the SOC still holds
those exposures open: the rebuild would never close them, and a folder still
exposed would be opened a second time under a new id. A checkpoint cannot
stand in, as it is older than the record by up to its interval.

:class:`PublishedLedger` is a small SQLite file the runner writes after every
batch that published something, once the bus has taken it and before the
consumer commits: per folder, the last exposure event published and every
exposure id the folder has had (and which were ever of contents). On a
restart :meth:`PublishedLedger.fill` adds to the log's record the folders it
does not know, so the rebuild continues or closes them under their published
ids. On the same log it adds nothing, since everything noted was on the log
first. A ledger that cannot be read is left out with one warning.
"""

from __future__ import annotations

import logging
import sqlite3
from collections.abc import Iterable
from pathlib import Path

from permwatch.events import DecodeError, ExposureEvent, ExposureKind, decode, encode
from processor.published import PublishedRecord

log = logging.getLogger("permwatch.processor")

_SCHEMA = """
CREATE TABLE IF NOT EXISTS last (folder TEXT PRIMARY KEY, sequence INTEGER NOT NULL, event BLOB NOT NULL);
CREATE TABLE IF NOT EXISTS ids (
    folder TEXT NOT NULL, exposure_id TEXT NOT NULL, contents INTEGER NOT NULL, PRIMARY KEY (folder, exposure_id)
);
"""


class PublishedLedger:
    """What this processor published, per folder (SQLite, written per publishing batch)."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self._conn: sqlite3.Connection | None = None

    def _connection(self) -> sqlite3.Connection:
        if self._conn is None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            conn = sqlite3.connect(self.path, timeout=30, isolation_level=None, check_same_thread=False)
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute("PRAGMA synchronous=NORMAL")  # a killed process loses nothing committed
            conn.executescript(_SCHEMA)
            self._conn = conn
        return self._conn

    def note(self, events: Iterable[ExposureEvent]) -> None:
        """Record ``events`` (published and flushed to the bus) in one transaction."""
        rows = list(events)
        if not rows:
            return
        conn = self._connection()
        with conn:
            conn.execute("BEGIN")
            conn.executemany(
                "INSERT INTO last VALUES (?, ?, ?) ON CONFLICT (folder) DO UPDATE SET sequence = excluded.sequence, "
                "event = excluded.event",
                ((e.folder, e.sequence, encode(e)) for e in rows),
            )
            conn.executemany(
                "INSERT INTO ids VALUES (?, ?, ?) ON CONFLICT (folder, exposure_id) DO UPDATE SET "
                "contents = max(contents, excluded.contents)",
                ((e.folder, e.exposure_id, int(e.kind is ExposureKind.CONTENTS)) for e in rows),
            )

    def fill(self, record: PublishedRecord) -> int:
        """Add to ``record`` the folders it does not know, as noted here; how many folders were added."""
        if not self.path.exists():
            return 0
        try:
            conn = self._connection()
            ids = conn.execute("SELECT folder, exposure_id, contents FROM ids").fetchall()
            last = conn.execute("SELECT folder, event FROM last").fetchall()
        except sqlite3.DatabaseError as exc:
            log.warning("published ledger %s not used (%s): exposures of an earlier log are not known", self.path, exc)
            return 0
        known = set(record.ids)
        added = record.awaiting_scan
        for folder, exposure_id, contents in ids:
            if folder in known:
                continue  # the log's record knows this folder: it is the truth
            record.ids.setdefault(folder, set()).add(exposure_id)
            if contents:
                record.contents.add(exposure_id)
            added.add(folder)
        for folder, value in last:
            if folder not in added:
                continue
            try:
                event = decode(value)
            except DecodeError:
                continue  # (written by this code: only a damaged file gets here)
            if isinstance(event, ExposureEvent):
                record.last[folder] = event
                record.ids[folder].add(event.exposure_id)
        return len(added)

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None
