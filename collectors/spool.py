"""The collectors' spool: events wait on local disk while Kafka is unreachable and go out in order once it answers.

:class:`SpoolingBus` wraps the Kafka bus the collectors publish to. While the
broker acknowledges, records go straight to it and the wrapper only remembers
each record's delivery until a flush has seen it acknowledged. When a flush
gets no acknowledgement within ``flush_timeout`` seconds, or a delivery fails
because the broker is away, it switches to spooling: the records the producer
still holds are copied to the spool first (the producer keeps retrying them;
their copies are what survives a crash), then every later record goes to the
spool too, so one key's records never overtake each other. A flush while
spooling is an fsync. A background thread drains the spool oldest first: it
waits until the producer has settled the records it held (delivered or
failed), re-sends those that failed together with every later record of the
same key, then sends the spool a window at a time, moving its cursor past a
window only once all of it is acknowledged, and switches back to direct
publishing when the spool is empty. A spool left by a previous run is drained
before anything new is sent.

The spool (:class:`SpoolQueue`) is a directory of append-only segment files
of length-prefixed, CRC-checked records plus a cursor file; it is bounded by
``max_bytes``. When it is full, :meth:`SpoolingBus.publish` raises
:class:`RecordDropped` for every record until the spool has drained, a
persistent ``rescan-needed`` marker is set, and once drained the registered
callbacks ask the collectors for a full rescan (the filesystem collector then
publishes ``ScanCompleted`` with reason ``spool_overflow``). A crash while
draining can send up to one window again; copies of records the producer held
when the broker went away can repeat too. Both come in their original order.
"""

from __future__ import annotations

import logging
import os
import struct
import threading
import time
import zlib
from collections import deque
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from collectors.metrics import CollectorMetrics
from collectors.settings import SpoolConfig
from permwatch.config import ConfigError
from permwatch.metrics import Metrics
from permwatch.transport.base import Bus, Consumer, Delivery, Record, TrackingBus

log = logging.getLogger(__name__)

MAGIC = b"PWSPOOL1"
_HEADER = struct.Struct("<II")  # payload length, CRC-32 of the payload
_FIELDS = struct.Struct("<BHi")  # flags, topic length, key length (-1: no key)
_BROADCAST = 1
_MAX_PAYLOAD = 64 * 1024 * 1024  # far above any event; a larger length is damage
_CURSOR = "cursor"
_MARKER = "rescan-needed"

Position = tuple[int, int]
"""(segment number, byte offset in that segment)"""


class RecordDropped(Exception):
    """The spool is full and did not keep this record; the collectors rescan once it has drained."""


class SpoolError(Exception):
    """The spool directory cannot be used."""


@dataclass(frozen=True, slots=True)
class SpooledRecord:
    topic: str
    key: str | None
    value: bytes
    broadcast: bool = False

    def encode(self) -> bytes:
        topic = self.topic.encode()
        key = b"" if self.key is None else self.key.encode()
        flags = _BROADCAST if self.broadcast else 0
        payload = b"".join(
            (_FIELDS.pack(flags, len(topic), -1 if self.key is None else len(key)), topic, key, self.value)
        )
        return _HEADER.pack(len(payload), zlib.crc32(payload)) + payload

    @classmethod
    def decode(cls, payload: bytes) -> SpooledRecord:
        flags, topic_len, key_len = _FIELDS.unpack_from(payload)
        at = _FIELDS.size
        topic = payload[at : at + topic_len].decode()
        at += topic_len
        key = None
        if key_len >= 0:
            key = payload[at : at + key_len].decode()
            at += key_len
        return cls(topic, key, payload[at:], bool(flags & _BROADCAST))


@dataclass(slots=True)
class _Segment:
    number: int
    path: Path
    size: int
    valid_end: int
    """Where the last whole record ends; a torn or damaged tail beyond it is never read."""


class SpoolQueue:
    """A bounded, durable FIFO of records in a directory; thread-safe.

    ``append`` adds at the end (``sync`` makes it durable), ``read`` returns
    records from the cursor on without consuming them, ``advance`` moves the
    cursor past records that were delivered and deletes finished segments.
    """

    def __init__(self, path: Path, max_bytes: int, *, segment_bytes: int | None = None) -> None:
        self.path = path
        self.max_bytes = max_bytes
        self._segment_bytes = segment_bytes or max(4096, min(16 * 1024 * 1024, max_bytes // 8))
        self._lock = threading.Lock()
        self._writer: BinaryIO | None = None
        self._closed = False
        self.damaged = 0
        """Damaged stretches found (their records are lost; a rescan is marked)."""
        try:
            path.mkdir(parents=True, exist_ok=True)
            self._segments = {s.number: s for s in self._scan()}
            self._cursor = self._read_cursor()
        except OSError as exc:
            raise SpoolError(f"{path}: cannot use as spool: {exc.strerror or exc}") from None
        self._next_number = max(self._segments, default=self._cursor[0]) + 1
        self.records = sum(1 for _ in self._iter_from(self._cursor, self._segments))
        self.bytes = sum(s.size for s in self._segments.values())
        self._rescan_needed = (path / _MARKER).exists()
        if self.damaged:
            self.mark_rescan_needed()

    # ------------------------------------------------------------- opening

    def _scan(self) -> list[_Segment]:
        segments = []
        for entry in sorted(self.path.glob("*.seg")):
            try:
                number = int(entry.stem)
            except ValueError:
                continue
            size = entry.stat().st_size
            valid_end = self._validate(entry, size)
            segments.append(_Segment(number, entry, size, valid_end))
        return sorted(segments, key=lambda s: s.number)

    def _validate(self, path: Path, size: int) -> int:
        """The offset where the segment's last whole, intact record ends (logged when short of ``size``)."""
        with path.open("rb") as fh:
            data = fh.read()
        if not data.startswith(MAGIC):
            if len(data) >= len(MAGIC) or not MAGIC.startswith(data):
                self.damaged += 1
                log.error("spool: %s is not a spool segment (%d bytes): skipping it; a rescan follows", path, size)
            return len(MAGIC)
        at = len(MAGIC)
        while at < size:
            end = _record_end(data, at)
            if end is None:
                if _torn(data, at):
                    log.warning(
                        "spool: %s ends in a torn record (%d bytes, written as the process stopped): skipped",
                        path,
                        size - at,
                    )
                else:
                    self.damaged += 1
                    log.error(
                        "spool: %s is damaged at byte %d: skipping its last %d bytes; a rescan follows",
                        path,
                        at,
                        size - at,
                    )
                return at
            at = end
        return at

    def _read_cursor(self) -> Position:
        try:
            number, offset = (self.path / _CURSOR).read_text(encoding="ascii").split()
            cursor = (int(number), int(offset))
        except FileNotFoundError:
            cursor = (0, len(MAGIC))
        except ValueError:
            log.error("spool: %s is unreadable; starting from the oldest segment", self.path / _CURSOR)
            cursor = (0, len(MAGIC))
        for delivered in [n for n in self._segments if n < cursor[0]]:  # a crash came between cursor and delete
            self._segments.pop(delivered).path.unlink(missing_ok=True)
        return cursor

    # ------------------------------------------------------------- writing

    def append(self, record: SpooledRecord, *, beyond_bound: bool = False) -> bool:
        """Add ``record`` at the end; False (and nothing written) when it would pass ``max_bytes``."""
        data = record.encode()
        with self._lock:
            if self._closed:
                raise SpoolError(f"{self.path}: spool closed")
            if not beyond_bound and self.bytes + len(data) + len(MAGIC) > self.max_bytes:  # (room for a new segment)
                return False
            writer, segment = self._active(len(data))
            writer.write(data)
            segment.size += len(data)
            segment.valid_end = segment.size
            self.records += 1
            self.bytes += len(data)
            return True

    def _active(self, adding: int) -> tuple[BinaryIO, _Segment]:
        segment = self._segments.get(self._next_number - 1)
        if self._writer is not None and segment is not None and segment.size + adding <= self._segment_bytes:
            return self._writer, segment
        self._seal()
        number = self._next_number
        self._next_number += 1
        path = self.path / f"{number:016d}.seg"
        self._writer = path.open("xb")
        self._writer.write(MAGIC)
        segment = self._segments[number] = _Segment(number, path, len(MAGIC), len(MAGIC))
        self.bytes += len(MAGIC)
        return self._writer, segment

    def _seal(self) -> None:
        if self._writer is not None:
            self._writer.flush()
            os.fsync(self._writer.fileno())
            self._writer.close()
            self._writer = None

    def sync(self) -> None:
        """Make every appended record durable."""
        with self._lock:
            if self._writer is not None and not self._closed:
                self._writer.flush()
                os.fsync(self._writer.fileno())

    @property
    def end(self) -> Position:
        """Where the last appended record ends."""
        with self._lock:
            return self._end()

    def _end(self) -> Position:
        if not self._segments:
            return self._cursor
        last = self._segments[max(self._segments)]
        return (last.number, last.valid_end)

    # ------------------------------------------------------------- reading

    def read(self, max_records: int, max_bytes: int) -> tuple[list[SpooledRecord], Position]:
        """Up to ``max_records`` records (at least one, whatever its size) from the cursor on, and where they end."""
        with self._lock:
            if self._writer is not None:
                self._writer.flush()  # what was appended is readable, durable or not
            records: list[SpooledRecord] = []
            end = self._cursor
            size = 0
            lost = self.damaged
            for record, at in self._iter_from(self._cursor, dict(self._segments)):
                records.append(record)
                end = at
                size += len(record.value)
                if len(records) >= max_records or size >= max_bytes:
                    break
            if self.damaged != lost:
                self._rescan_needed = False  # (re)write the marker
                self.mark_rescan_needed()
            if not records:
                self.records = 0  # what the count promised was damaged
                end = self._end()
            return records, end

    def _iter_from(
        self, cursor: Position, segments: Mapping[int, _Segment]
    ) -> Iterator[tuple[SpooledRecord, Position]]:
        for number in sorted(n for n in segments if n >= cursor[0]):
            segment = segments[number]
            offset = cursor[1] if number == cursor[0] else len(MAGIC)
            if offset >= segment.valid_end:
                continue
            with segment.path.open("rb") as fh:
                fh.seek(offset)
                data = fh.read(segment.valid_end - offset)
            at = 0
            while at < len(data):
                end = _record_end(data, at)
                if end is None:  # damaged since it was opened: the rest of the segment cannot be trusted
                    log.error("spool: %s is damaged at byte %d: skipping the rest", segment.path, offset + at)
                    segment.valid_end = offset + at
                    self.damaged += 1
                    break
                yield SpooledRecord.decode(data[at + _HEADER.size : end]), (number, offset + end)
                at = end

    # ------------------------------------------------------------ consuming

    def advance(self, position: Position, records: int) -> None:
        """``records`` records up to ``position`` are delivered: move the cursor there, durably."""
        with self._lock:
            if self._closed:
                return
            self._cursor = position
            self.records = max(0, self.records - records)
            for number in sorted(self._segments):
                segment = self._segments[number]
                finished = number < position[0] or (number == position[0] and position[1] >= segment.valid_end)
                if not finished:
                    break
                if number == self._next_number - 1:
                    self._seal()  # the active segment, all delivered: the next record starts a new one
                del self._segments[number]
                segment.path.unlink(missing_ok=True)
                self.bytes -= segment.size
            _write_atomically(self.path / _CURSOR, f"{position[0]} {position[1]}\n")

    # --------------------------------------------------------- rescan marker

    @property
    def rescan_needed(self) -> bool:
        return self._rescan_needed

    def mark_rescan_needed(self) -> None:
        """Remember, across restarts, that records were lost and the collectors must rescan."""
        if not self._rescan_needed:
            _write_atomically(self.path / _MARKER, f"records lost at {time.time():.0f}\n")
            self._rescan_needed = True

    def clear_rescan_needed(self) -> None:
        (self.path / _MARKER).unlink(missing_ok=True)
        self._rescan_needed = False

    def close(self) -> None:
        with self._lock:
            if not self._closed:
                self._seal()
                self._closed = True


def _torn(data: bytes, at: int) -> bool:
    """Whether the bad record at ``at`` is one the file ends in the middle of (not damage inside the file)."""
    if at + _HEADER.size > len(data):
        return True
    length, _ = _HEADER.unpack_from(data, at)
    return length <= _MAX_PAYLOAD and at + _HEADER.size + length >= len(data)


def _record_end(data: bytes, at: int) -> int | None:
    """Where the record at ``at`` ends, or None when it is short, implausible or fails its CRC."""
    if at + _HEADER.size > len(data):
        return None
    length, crc = _HEADER.unpack_from(data, at)
    end = at + _HEADER.size + length
    if length < _FIELDS.size or length > _MAX_PAYLOAD or end > len(data):
        return None
    if zlib.crc32(data[at + _HEADER.size : end]) != crc:
        return None
    return end


def _write_atomically(path: Path, text: str) -> None:
    temporary = path.with_name(path.name + ".tmp")
    with temporary.open("w", encoding="ascii") as fh:
        fh.write(text)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(temporary, path)
    directory = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(directory)
    finally:
        os.close(directory)


# ------------------------------------------------------------------ the bus


@dataclass(frozen=True, slots=True)
class _NotSent:
    """The delivery of a record not handed over, because the one before it failed at once."""

    error: BaseException

    def wait(self, timeout: float) -> bool:
        return True

    @property
    def permanent(self) -> bool:
        return False


@dataclass(slots=True)
class _Sent:
    record: SpooledRecord
    delivery: Delivery
    done: bool = False
    """Delivered (or refused for good) and not to be sent again."""


@dataclass(slots=True)
class _Window:
    sent: list[_Sent]
    end: Position
    """Where these records end in the spool."""


@dataclass(slots=True)
class _Episode:
    """One stretch of spooling, for its log lines."""

    started: float
    answered: float | None = None
    """When Kafka first acknowledged a record of the episode again."""
    drained: int = 0
    dropped: int = 0
    unreachable_logged: bool = False


class SpoolingBus:
    """A :class:`Bus` for collectors that spools to a :class:`SpoolQueue` while the inner Kafka bus is unreachable.

    ``publish`` and ``broadcast`` may raise :class:`RecordDropped` when the
    spool is full; ``consumer`` and ``history`` are the inner bus's. Call
    :meth:`start` once the recovery callbacks are registered; :meth:`close`
    stops the drain and closes the spool, not the inner bus.
    """

    def __init__(
        self,
        inner: TrackingBus,
        queue: SpoolQueue,
        *,
        flush_timeout: float = 2.0,
        metrics: Metrics | None = None,
        window_records: int = 5000,
        window_bytes: int = 4 * 1024 * 1024,
        retry_seconds: float = 1.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._inner = inner
        self._queue = queue
        self._flush_timeout = flush_timeout
        self._metrics = None if metrics is None else metrics.part(CollectorMetrics)
        self._window_records = window_records
        self._window_bytes = window_bytes
        self._retry_seconds = retry_seconds
        self._clock = clock
        self._lock = threading.Lock()
        self._wake = threading.Condition(self._lock)
        self._unsettled: deque[_Sent] = deque()
        """Records handed to the inner bus directly and not yet seen delivered, oldest first."""
        self._window: _Window | None = None
        self._spooling = queue.records > 0
        self._overflowing = False
        self._generation = 0
        self._episode = _Episode(clock()) if self._spooling else None
        self._on_recovered: list[Callable[[], None]] = []
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.dropped = 0
        if self._spooling:
            log.warning(
                "spool %s holds %d records from before; sending them before anything new", queue.path, queue.records
            )
        own = self._metrics
        if own is not None:
            own.spool_records.set_function(lambda: self._queue.records)
            own.spool_bytes.set_function(lambda: self._queue.bytes)
            own.spool_spooling.set_function(lambda: 1 if self._spooling else 0)
            for reason in ("full", "rejected", "corrupt"):
                own.spool_dropped.labels(reason=reason)
            if queue.damaged:
                own.spool_dropped.labels(reason="corrupt").inc(queue.damaged)

    @property
    def spooling(self) -> bool:
        with self._lock:  # not halfway through finishing an episode (its "spool drained" line not yet written)
            return self._spooling

    @property
    def path(self) -> Path:
        return self._queue.path

    def on_recovered(self, callback: Callable[[], None]) -> None:
        """Call ``callback`` (on the drain thread) once the spool has drained after losing records."""
        self._on_recovered.append(callback)

    def start(self) -> None:
        """Start draining (a spool left from before first); tell the callbacks of a rescan still owed."""
        self._thread = threading.Thread(target=self._drain, name="spool-drain", daemon=True)
        self._thread.start()

    # ---------------------------------------------------------- publishing

    def publish(self, topic: str, key: str | None, value: bytes) -> None:
        self._put(SpooledRecord(topic, key, value))

    def broadcast(self, topic: str, key: str | None, value: bytes) -> None:
        self._put(SpooledRecord(topic, key, value, broadcast=True))

    def _put(self, record: SpooledRecord) -> None:
        with self._lock:
            if not self._spooling:
                delivery = self._inner.send_tracked(record.topic, record.key, record.value, broadcast=record.broadcast)
                self._unsettled.append(_Sent(record, delivery))
                self._settle_head()
                return  # if that found the broker away, the record went to the spool with the others
            if self._overflowing or not self._queue.append(record):
                self._drop(record)

    def flush(self) -> None:
        """Return once every record published so far is acknowledged by Kafka or written to the spool."""
        with self._lock:
            if self._spooling:
                self._queue.sync()
                return
            waiting = list(self._unsettled)
            generation = self._generation
        deadline = self._clock() + self._flush_timeout
        settled = all(sent.delivery.wait(max(0.0, deadline - self._clock())) for sent in waiting)
        with self._lock:
            if generation == self._generation and not self._spooling:
                if settled:
                    self._settle_head()
                else:
                    self._start_spooling(f"no acknowledgement within {self._flush_timeout:g} s")
            if self._generation != generation or self._spooling:
                self._queue.sync()  # spooled meanwhile: these records went to the spool with the others

    def _settle_head(self) -> None:
        """Forget delivered records at the head; switch to spooling at one that failed because Kafka is away."""
        while self._unsettled:
            sent = self._unsettled[0]
            if not sent.delivery.wait(0):
                return
            error = sent.delivery.error
            if error is not None and not sent.delivery.permanent:
                self._start_spooling(f"{type(error).__name__}: {error}")
                return
            if error is not None:
                self._reject(sent.record, error)
            self._unsettled.popleft()

    def _start_spooling(self, why: str) -> None:
        """Copy what the producer holds to the spool, as the first window; spool everything after it."""
        for sent in self._unsettled:
            self._queue.append(sent.record, beyond_bound=True)
        self._window = _Window(list(self._unsettled), self._queue.end) if self._unsettled else None
        self._unsettled.clear()
        self._spooling = True
        self._generation += 1
        self._episode = _Episode(self._clock())
        log.warning("kafka unreachable (%s); spooling to %s", why, self._queue.path)
        self._wake.notify_all()

    def _drop(self, record: SpooledRecord) -> None:
        if not self._overflowing:
            self._overflowing = True
            self._queue.mark_rescan_needed()
            log.warning("spool full (max_bytes=%d): dropping, rescan after recovery", self._queue.max_bytes)
        self.dropped += 1
        if self._episode is not None:
            self._episode.dropped += 1
        if self._metrics is not None:
            self._metrics.spool_dropped.labels(reason="full").inc()
        raise RecordDropped(f"spool {self._queue.path} full: {record.topic} record for {record.key!r} dropped")

    def _reject(self, record: SpooledRecord, error: BaseException) -> None:
        log.error("kafka refused a %s record for %r for good (%s): dropped", record.topic, record.key, error)
        if self._metrics is not None:
            self._metrics.spool_dropped.labels(reason="rejected").inc()

    # ------------------------------------------------------------ draining

    def _drain(self) -> None:
        self._recover_if_owed()
        failures = 0
        while True:
            with self._lock:
                while not self._spooling and not self._stop.is_set():
                    self._wake.wait()
                if self._stop.is_set():
                    return
                window = self._window
                drained = window is None and self._queue.records == 0
                if drained:
                    self._finish_episode()
            if drained:
                self._recover_if_owed()
                continue
            if window is None:
                damaged = self._queue.damaged
                records, end = self._queue.read(self._window_records, self._window_bytes)
                if self._queue.damaged != damaged and self._metrics is not None:
                    self._metrics.spool_dropped.labels(reason="corrupt").inc(self._queue.damaged - damaged)
                window = _Window(self._send_all(records), end)
                with self._lock:
                    self._window = window
            round_started = self._clock()
            if not self._await(window):
                return
            again = self._to_send_again(window)
            if not again:
                self._queue.advance(window.end, len(window.sent))
                if self._metrics is not None:
                    self._metrics.spool_drained.inc(len(window.sent))
                with self._lock:
                    self._window = None
                    if self._episode is not None:
                        self._episode.drained += len(window.sent)
                failures = 0
                continue
            failures += 1
            self._log_still_unreachable(again[0].delivery.error)
            backoff = min(30.0, self._retry_seconds * 2 ** min(failures - 1, 5))
            if self._stop.wait(max(0.0, backoff - (self._clock() - round_started))):  # a slow round waited enough
                return
            for sent, delivery in zip(again, self._send_all([s.record for s in again]), strict=True):
                sent.delivery = delivery.delivery

    def _send_all(self, records: Sequence[SpooledRecord]) -> list[_Sent]:
        """Hand ``records`` to the inner bus in order; after one fails at once, the rest are not handed over."""
        sent = []
        failed: BaseException | None = None
        for record in records:
            if failed is not None:
                sent.append(_Sent(record, _NotSent(failed)))
                continue
            delivery = self._inner.send_tracked(record.topic, record.key, record.value, broadcast=record.broadcast)
            if delivery.wait(0) and delivery.error is not None and not delivery.permanent:
                failed = delivery.error
            sent.append(_Sent(record, delivery))
        return sent

    def _await(self, window: _Window) -> bool:
        """Wait until every record of ``window`` is delivered or failed; False when stopped meanwhile."""
        for sent in window.sent:
            while not sent.done and not sent.delivery.wait(1.0):
                if self._stop.is_set():
                    return False
            episode = self._episode
            if episode is not None and episode.answered is None and not sent.done and sent.delivery.error is None:
                episode.answered = self._clock()
        return True

    def _to_send_again(self, window: _Window) -> list[_Sent]:
        """The window's failed records plus every later record of the same key, so each key ends on its last state.

        Marks the others done (refused records are dropped with a log line).
        """
        again = []
        keys: set[tuple[str, str | None]] = set()
        for sent in window.sent:
            if sent.done:
                continue
            key = (sent.record.topic, sent.record.key)
            error = sent.delivery.error
            if error is not None and sent.delivery.permanent:
                self._reject(sent.record, error)
                sent.done = True
            elif error is not None or key in keys:
                again.append(sent)
                keys.add(key)
            else:
                sent.done = True
        return again

    def _log_still_unreachable(self, error: BaseException | None) -> None:
        episode = self._episode
        if episode is not None and not episode.unreachable_logged:
            episode.unreachable_logged = True
            log.info("spool: kafka still unreachable (%s); retrying until it answers", error)

    def _finish_episode(self) -> None:
        """The spool is empty: publish directly again (lock held)."""
        episode = self._episode
        self._spooling = False
        self._overflowing = False
        self._episode = None
        if episode is not None:
            now = self._clock()
            log.warning(
                "spool drained: %d records in %.1f s (spooling for %.1f s%s)",
                episode.drained,
                now - (episode.answered if episode.answered is not None else now),
                now - episode.started,
                f"; {episode.dropped} dropped while it was full" if episode.dropped else "",
            )

    def _recover_if_owed(self) -> None:
        """Records were lost (spool full, or damaged): once nothing is spooled, the collectors rescan."""
        if not self._queue.rescan_needed or self._spooling:
            return
        log.warning("spool: records were lost while Kafka was unreachable; asking the collectors to rescan")
        for callback in self._on_recovered:
            callback()
        self._queue.clear_rescan_needed()

    # --------------------------------------------------------------- closing

    def close(self) -> None:
        """Stop draining and close the spool; records the producer still holds stay in the spool as well."""
        self._stop.set()
        with self._lock:
            self._wake.notify_all()
        if self._thread is not None:
            self._thread.join(10)
        with self._lock:
            window = self._window
        if window is not None and self._thread is not None and not self._thread.is_alive():
            deadline = self._clock() + self._flush_timeout
            delivered = all(
                s.done or (s.delivery.wait(max(0.0, deadline - self._clock())) and s.delivery.error is None)
                for s in window.sent
            )
            if delivered:
                self._queue.advance(window.end, len(window.sent))
        self._queue.close()

    # -------------------------------------------------------- the inner bus

    def consumer(
        self,
        topics: Sequence[str],
        group: str,
        *,
        replay_history: bool = False,
        replay_from: Mapping[tuple[str, int], int] | None = None,
        member: str | None = None,
    ) -> Consumer:
        return self._inner.consumer(
            topics, group, replay_history=replay_history, replay_from=replay_from, member=member
        )

    def history(
        self,
        topics: Sequence[str],
        *,
        until_ms: int | None = None,
        start: Mapping[tuple[str, int], int] | None = None,
    ) -> Iterator[Record]:
        return self._inner.history(topics, until_ms=until_ms, start=start)


def open_spooling_bus(
    inner: Bus,
    config: SpoolConfig,
    *,
    state_dir: Path,
    metrics: Metrics | None = None,
) -> SpoolingBus | None:
    """The collectors' bus over ``inner`` as ``[collector.spool]`` says; None when ``inner`` cannot report deliveries.

    Raises :class:`ConfigError` naming the key when the spool directory cannot be used.
    """
    if not config.enabled:
        return None
    if not isinstance(inner, TrackingBus):
        log.warning("the %s bus cannot report deliveries; collectors publish without a spool", type(inner).__name__)
        return None
    path = config.path or state_dir / "spool"
    try:
        queue = SpoolQueue(path, config.max_bytes)
    except SpoolError as exc:
        raise ConfigError(f"key 'collector.spool.path': {exc}") from None
    return SpoolingBus(inner, queue, flush_timeout=config.flush_timeout_seconds, metrics=metrics)
