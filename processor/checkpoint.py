"""Processor checkpoints: the engine's state on disk with the offsets it covers, so a restart replays only the rest.

Without a checkpoint a restarted processor rebuilds its state by replaying
every input record since the beginning. With one it loads the snapshot and
the consumer starts each partition at the checkpoint's offset (the first
record the snapshot does not cover); records from there up to the group's
commit still come marked replayed, so nothing is published twice.

The file is a fixed magic line, a JSON header (format version, the identity
of what the offsets refer to, the offsets, a code fingerprint, the payload's
size and SHA-256) and the payload: the engine's state pickled with protocol 5.
A file whose format, identity, fingerprint or checksum does not match, or that
does not unpickle, is ignored with one log line and the processor replays all
history. So is one that does not fit the log as it is now
(:mod:`processor.log_fit`: the log emptied, replaced or older than the
checkpoint; the header carries the embedded log's ``log_id``). The
fingerprint hashes the modules whose classes are pickled, so a new release
never loads an old layout. The file is written atomically (a temporary file,
fsync, rename, fsync of the directory) with mode 0600: it is unpickled on
start, so only the processor's own user may write it.

Taking the snapshot (pickling) holds up the processor's loop, because the
state must not move while it is read; writing, checksumming and fsyncing run
on a thread of their own. :class:`Checkpoints` takes one at most every
``interval_seconds``, after a commit, and skips a turn while the previous one
is still being written.

The snapshot holds exactly what :class:`processor.engine.Engine` keeps between
batches (see :data:`CAPTURED`); caches are rebuilt. Permission states are
interned to small ints (:func:`processor.state.intern_acl`) numbered by the
process, so the snapshot carries the interning table and a process that has
already numbered other ACLs renumbers the restored state.
"""

from __future__ import annotations

import contextlib
import copy
import functools
import hashlib
import json
import logging
import os
import pickle
import struct
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import datetime
from pathlib import Path
from typing import Any

import permwatch.events
from permwatch.events import utcnow
from permwatch.metrics import Metrics
from permwatch.transport.base import LogExtent
from processor import engine as engine_module
from processor import exposures as exposures_module
from processor import readers as readers_module
from processor import state as state_module
from processor.engine import Engine
from processor.exposures import ExposureTracker
from processor.gcpause import gc_paused
from processor.log_fit import LogMismatch, check_fits
from processor.metrics import ProcessorMetrics
from processor.readers import ReaderEvaluator
from processor.state import AclTuple, Directory, PathState, intern_acl

log = logging.getLogger("permwatch.processor")

FORMAT = 1
MAGIC = b"permwatch processor checkpoint\n"
_LENGTH = struct.Struct(">I")

Offsets = dict[tuple[str, int], int]
"""(topic, partition) → the offset of the first record the snapshot does not cover."""

CAPTURED = frozenset(
    {"directory", "paths", "labels", "_labelled_sorted", "_allowing", "folders_judged", "last_directory_change"}
    | {"decisions", "scanned_roots"}  # respond (issue 19): approvals in force, roots past their first scan
    | {"shares"}  # Samba shares' doors (issue 16)
)
"""Engine attributes the snapshot holds (with ``tracker.folders``, the exposure book)."""
REBUILT = frozenset({"evaluator", "tracker", "_source", "_clock", "awaiting_scan"})  # awaiting: set by adopt
"""Engine attributes made afresh on restore: caches over the captured state, and construction arguments."""
BETWEEN_FLUSHES = frozenset({"_touched", "_directory_cause", "_changed_groups", "_judge_all", "_closing"})
"""Engine attributes that hold work until the next flush; empty whenever the runner checkpoints."""


class CheckpointError(Exception):
    """A checkpoint that cannot be used; the message says why, in a few words."""


@dataclass(frozen=True)
class Restored:
    engine: Engine
    offsets: Offsets
    records: int
    """Input records the restored state covers, counted since the first start."""
    written_at: datetime


# ---------------------------------------------------------------- the state


def capture(engine: Engine) -> dict[str, Any]:
    """What the engine keeps between batches, as one picklable dict (shared, not copied: pickle it at once)."""
    if engine._touched or engine._directory_cause is not None or engine._closing:
        raise ValueError("the engine holds unjudged changes: flush it before taking a checkpoint")
    directory = copy.copy(engine.directory)  # the same users and groups, without the membership caches
    directory._effective, directory._direct = {}, {}
    directory._by_primary = directory._parents = directory._everyone = None
    for record in engine.tracker.folders.values():
        record.shaped = None  # a memo (people bitsets again, per folder): not state; judged again when next touched
    return {
        "acls": list(state_module._ACL_TUPLES),  # the interning table: every AclKey is an index into it
        "directory": directory,
        "paths": engine.paths,
        "folders": engine.tracker.folders,
        **{name: getattr(engine, name) for name in sorted(CAPTURED - {"directory", "paths"})},
    }


def restore(state: Mapping[str, Any], *, source: str, clock: Callable[[], datetime]) -> Engine:
    """An engine holding ``state`` (from :func:`capture`), with fresh caches."""
    engine = Engine(source=source, clock=clock)
    directory: Directory = state["directory"]
    engine.directory = directory
    engine.paths = state["paths"]
    engine.evaluator = ReaderEvaluator(engine.directory, engine.paths)
    engine.tracker = ExposureTracker(engine.directory, engine.evaluator, source=source, clock=clock)
    engine.tracker.folders = state["folders"]
    for name in CAPTURED - {"directory", "paths"}:
        setattr(engine, name, state[name])
    for record in engine.tracker.folders.values():
        record.allowed_version = -1  # the audience memo is judged again against this directory
        record.shaped = None  # and the folder judged again: its key's versions are another process's
    renumbered = _intern(state["acls"])
    if renumbered is not None:
        _renumber(engine, renumbered)
    return engine


def _intern(saved: list[AclTuple]) -> dict[int, int] | None:
    """Intern the saved ACLs; None when their numbers hold here too (always so in a fresh process)."""
    current = state_module._ACL_TUPLES
    common = min(len(current), len(saved))
    if current[:common] == saved[:common]:
        for acl in saved[common:]:
            intern_acl(acl)
        return None
    return {old: intern_acl(acl) for old, acl in enumerate(saved)}


def _renumber(engine: Engine, keys: dict[int, int]) -> None:
    """Rewrite every interned ACL number the state holds (path states and each folder's signatures)."""
    renewed: dict[int, PathState] = {}

    def renew(state: PathState) -> PathState:
        found = renewed.get(id(state))
        if found is None:
            found = renewed[id(state)] = replace(state, acl=keys[state.acl])
        return found

    paths = engine.paths
    paths.states = {path: renew(state) for path, state in paths.states.items()}
    for record in engine.tracker.folders.values():
        record.groups = {
            (keys[acl], parent, contents): members for (acl, parent, contents), members in record.groups.items()
        }
        record.states = {keys[acl]: renew(state) for acl, state in record.states.items()}
        record.samples = {}  # keyed by signature too: made again when asked


@functools.cache
def code_fingerprint() -> str:
    """A hash of the modules whose classes a checkpoint pickles, as this process loaded them: a checkpoint
    from other code (another release, an edited module) is ignored."""
    digest = hashlib.sha256(FORMAT.to_bytes(4, "big"))
    for module in (state_module, exposures_module, readers_module, engine_module, permwatch.events):
        where = getattr(module, "__file__", None)
        digest.update(Path(where).read_bytes() if where else module.__name__.encode())
    return digest.hexdigest()[:16]


# ---------------------------------------------------------------- the file


def snapshot(engine: Engine) -> bytes:
    """The engine's state, pickled: the part of a checkpoint that holds up the processor."""
    return pickle.dumps(capture(engine), protocol=5)


def frame(
    payload: bytes,
    offsets: Mapping[tuple[str, int], int],
    identity: Mapping[str, str],
    *,
    records: int,
    log_id: str | None = None,
) -> tuple[bytes, bytes]:
    """The checkpoint file's head (magic, header length, header) to write before ``payload``."""
    header = {
        "format": FORMAT,
        "identity": dict(identity),
        "log_id": log_id,
        "code": code_fingerprint(),
        "offsets": sorted([topic, partition, offset] for (topic, partition), offset in offsets.items()),
        "records": records,
        "written_at": utcnow().isoformat(),
        "payload_bytes": len(payload),
        "payload_sha256": hashlib.sha256(payload).hexdigest(),
    }
    head = json.dumps(header, sort_keys=True).encode()
    return MAGIC + _LENGTH.pack(len(head)) + head, payload


def encode(
    engine: Engine, offsets: Mapping[tuple[str, int], int], identity: Mapping[str, str], *, records: int
) -> bytes:
    """A whole checkpoint file's bytes."""
    return b"".join(frame(snapshot(engine), offsets, identity, records=records))


def read_header(data: bytes) -> tuple[dict[str, Any], Offsets]:
    """A checkpoint file's header and offsets, read without the payload; :class:`CheckpointError` if unreadable."""
    if not data.startswith(MAGIC) or len(data) < len(MAGIC) + _LENGTH.size:
        raise CheckpointError("not a checkpoint file")
    start = len(MAGIC) + _LENGTH.size
    (length,) = _LENGTH.unpack_from(data, len(MAGIC))
    try:
        header = json.loads(data[start : start + length])
        offsets = {(str(topic), int(partition)): int(offset) for topic, partition, offset in header["offsets"]}
    except (ValueError, KeyError, TypeError) as exc:
        raise CheckpointError(f"unreadable header ({type(exc).__name__})") from None
    if not isinstance(header, dict):
        raise CheckpointError("unreadable header (not an object)")
    return header, offsets


def decode(
    data: bytes, identity: Mapping[str, str], *, source: str, clock: Callable[[], datetime] = utcnow
) -> Restored:
    """The state and offsets in a checkpoint file's bytes; :class:`CheckpointError` if it cannot be used."""
    header, offsets = read_header(data)
    (length,) = _LENGTH.unpack_from(data, len(MAGIC))
    payload = memoryview(data)[len(MAGIC) + _LENGTH.size + length :]
    try:
        if header["format"] != FORMAT:
            raise CheckpointError(f"format {header['format']}, this release reads {FORMAT}")
        if header["identity"] != dict(identity):
            raise CheckpointError(f"written for {header['identity']}, not {dict(identity)}")
        if header["code"] != code_fingerprint():
            raise CheckpointError("written by another release")
        if len(payload) != header["payload_bytes"] or hashlib.sha256(payload).hexdigest() != header["payload_sha256"]:
            raise CheckpointError("truncated or corrupt")
        records, written_at = int(header["records"]), datetime.fromisoformat(header["written_at"])
    except (ValueError, KeyError, TypeError) as exc:
        raise CheckpointError(f"unreadable header ({type(exc).__name__})") from None
    try:
        with gc_paused():  # millions of new, long-lived objects
            engine = restore(pickle.loads(payload), source=source, clock=clock)
    except Exception as exc:  # the checksum matched, so this is a layout the fingerprint missed: replay instead
        raise CheckpointError(f"state does not load ({type(exc).__name__}: {exc})") from None
    return Restored(engine, offsets, records, written_at)


def split(data: bytes) -> tuple[dict[str, Any], Offsets, bytes]:
    """A checkpoint's header, offsets and payload, unchecked (a snapshot in the workshop store is framed the
    same way and checked by :mod:`processor.workshop_store`); :class:`CheckpointError` if unreadable."""
    header, offsets = read_header(data)
    (length,) = _LENGTH.unpack_from(data, len(MAGIC))
    return header, offsets, data[len(MAGIC) + _LENGTH.size + length :]


def write_atomically(path: Path, parts: Sequence[bytes]) -> None:
    """Replace ``path`` with ``parts`` (mode 0600) so that a crash leaves the old file or the new one, whole."""
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    temporary.unlink(missing_ok=True)
    fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        with os.fdopen(fd, "wb") as fh:
            for part in parts:
                fh.write(part)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(temporary, path)
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise
    directory = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(directory)
    finally:
        os.close(directory)


# ---------------------------------------------------------------- the runner's side


class Checkpoints:
    """Loads the checkpoint at start; takes one now and then, writing it on a thread of its own.

    ``identity`` names what the offsets refer to (the consumer group and the
    topics: a Kafka topic prefix or the embedded log's path); a checkpoint
    written for anything else is ignored. With ``log`` (the bus), a checkpoint
    must also fit the log as it is now (:func:`processor.log_fit.check_fits`).
    """

    def __init__(
        self,
        path: Path,
        identity: Mapping[str, str],
        *,
        interval_seconds: float = 30.0,
        metrics: Metrics | None = None,
        monotonic: Callable[[], float] = time.monotonic,
        log: LogExtent | None = None,
    ) -> None:
        self.path = Path(path)
        self.identity = dict(identity)
        self.log = log
        self.log_id = None if log is None else log.log_id
        self.superseded: Restored | None = None
        """After :meth:`load` turned down a checkpoint that does not fit the log (emptied, replaced, older): its
        state, if it loads. It holds the exposures open when it was written, which were published then; a
        runner rebuilding from the log may reconcile with them (issue 13). None otherwise."""
        self.interval_seconds = interval_seconds
        self.metrics = metrics
        self._monotonic = monotonic
        self._last_at = monotonic()
        self._last_offsets: Offsets = {}
        self._writer: threading.Thread | None = None
        self.written = 0
        self.last_pause_seconds: float | None = None
        self.last_bytes: int | None = None

    def load(self, *, source: str, clock: Callable[[], datetime] = utcnow) -> Restored | None:
        """The saved state, or None (with one log line saying why) when there is none that fits."""
        for stale in self.path.parent.glob(f".{self.path.name}.*.tmp"):  # left by a kill during a write
            stale.unlink(missing_ok=True)
        started = time.perf_counter()
        try:
            data = self.path.read_bytes()
        except FileNotFoundError:
            log.info("no checkpoint at %s: replaying all history", self.path)
            return None
        except OSError as exc:
            log.warning("checkpoint %s not used (cannot read: %s): replaying all history", self.path, exc.strerror)
            return None
        try:
            if self.log is not None:
                header, offsets = read_header(data)
                check_fits(offsets, header.get("log_id"), self.log)
            restored = decode(data, self.identity, source=source, clock=clock)
        except LogMismatch as exc:
            log.warning("checkpoint %s not used: %s; rebuilding from the log's history", self.path, exc)
            with contextlib.suppress(CheckpointError):  # (another release's, say: nothing to keep then)
                self.superseded = decode(data, self.identity, source=source, clock=clock)
            return None
        except CheckpointError as exc:
            log.warning("checkpoint %s not used (%s): replaying all history", self.path, exc)
            return None
        self._last_offsets = dict(restored.offsets)
        log.info(
            "checkpoint %s loaded in %.2f s: %s records to %s, %.1f MB, written %s",
            self.path,
            time.perf_counter() - started,
            f"{restored.records:,}",
            _describe(restored.offsets),
            len(data) / 1e6,
            restored.written_at.isoformat(timespec="seconds"),
        )
        return restored

    def covers(self, offsets: Mapping[tuple[str, int], int]) -> bool:
        """The last checkpoint (taken or loaded) covers exactly these offsets."""
        return offsets == self._last_offsets

    def due(self, offsets: Mapping[tuple[str, int], int]) -> bool:
        """Time for one: the interval has passed, the state moved on, and the last one is written."""
        if self._monotonic() - self._last_at < self.interval_seconds or offsets == self._last_offsets:
            return False
        return self._writer is None or not self._writer.is_alive()

    def save(self, engine: Engine, offsets: Mapping[tuple[str, int], int], *, records: int, wait: bool = False) -> None:
        """Snapshot now (on the caller's thread: the engine must hold still), write it in the background."""
        self.wait()
        started = time.perf_counter()
        payload = snapshot(engine)
        pause = time.perf_counter() - started
        self._last_at = self._monotonic()
        self._last_offsets = dict(offsets)
        self.last_pause_seconds = pause
        if self.metrics is not None:
            self.metrics.part(ProcessorMetrics).processor_checkpoint_seconds.set(pause)
        self._writer = threading.Thread(
            target=self._write,
            args=(payload, dict(offsets), records, pause),
            name="processor-checkpoint",
            daemon=True,
        )
        self._writer.start()
        if wait:
            self.wait()

    def wait(self) -> None:
        """Until the checkpoint being written, if any, is on disk."""
        if self._writer is not None:
            self._writer.join()
            self._writer = None

    def _write(self, payload: bytes, offsets: Offsets, records: int, pause: float) -> None:
        started = time.perf_counter()
        head, payload = frame(payload, offsets, self.identity, records=records, log_id=self.log_id)
        try:
            write_atomically(self.path, (head, payload))
        except OSError as exc:
            log.warning("checkpoint not written to %s: %s; the next one tries again", self.path, exc)
            return
        size = len(head) + len(payload)
        self.written += 1
        self.last_bytes = size
        if self.metrics is not None:
            self.metrics.part(ProcessorMetrics).processor_checkpoint_bytes.set(size)
        log.log(
            logging.INFO if self.written == 1 else logging.DEBUG,
            "checkpoint written to %s: %s records to %s, %.1f MB, snapshot %.0f ms, write %.0f ms",
            self.path,
            f"{records:,}",
            _describe(offsets),
            size / 1e6,
            pause * 1000,
            (time.perf_counter() - started) * 1000,
        )


def _describe(offsets: Mapping[tuple[str, int], int]) -> str:
    return ", ".join(f"{topic}/{partition}@{offset}" for (topic, partition), offset in sorted(offsets.items())) or "-"


def process_age() -> float | None:
    """Seconds since this process started (Linux), or None where /proc cannot tell."""
    try:
        uptime = float(Path("/proc/uptime").read_text().split()[0])
        fields = Path("/proc/self/stat").read_text().rsplit(")", 1)[1].split()
        started_ticks = int(fields[19])  # field 22, starttime, counted after the ")" that ends field 2
    except (OSError, ValueError, IndexError):
        return None
    return max(0.0, uptime - started_ticks / os.sysconf("SC_CLK_TCK"))
