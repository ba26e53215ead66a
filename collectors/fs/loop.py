"""The filesystem collector: publish the permission state of every path under the roots.

On start it watches the roots (inotify through watchdog), then runs a baseline
scan: the root's ancestor directories first (the processor needs their
traverse bits), then every path below the root. Each state is compared with
the fingerprint of what was last published (``fs.state``) so only
differences reach the bus, and paths that vanished are published as deleted.
Afterwards it turns inotify events into events of its own: attribute changes
are coalesced per path for ``coalesce_ms`` and read once; created and
moved-in directories are walked, because inotify cannot report what was made
inside them before their watch existed. Every read is of the path's current
state, so late or duplicated inotify events cannot publish a stale state.
When inotify loses events (queue overflow) or cannot watch a directory
(watch limit), the collector says so in the log and rescans the affected
roots. The store is committed only after the emitter flushed what it
describes, so a crash publishes again rather than never; a batch with an
event the full spool dropped is not committed at all, and the rescan the
spool asks for once it has drained (reason ``spool_overflow``) publishes
what differs from what did reach the bus. Metrics (inotify
events read, watch trouble, scans by reason and their progress) go through
:class:`collectors.fs.metrics.FsCollectorMetrics`.
"""

from __future__ import annotations

import contextlib
import enum
import errno
import logging
import os
import queue
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Literal, Protocol, runtime_checkable

from prometheus_client import Gauge
from watchdog.events import (
    DirAttribEvent,
    DirCreatedEvent,
    DirDeletedEvent,
    DirMovedEvent,
    FileAttribEvent,
    FileCreatedEvent,
    FileDeletedEvent,
    FileMovedEvent,
    FileSystemEvent,
    FileSystemEventHandler,
)
from watchdog.observers.api import BaseObserver, ObservedWatch
from watchdog.observers.inotify import InotifyEmitter
from watchdog.observers.inotify_c import (
    CallbackId,
    InotifyConstants,
    InotifyEvent,
    InotifyFD,
    Mask,
    WatchCallback,
    WatchDescriptor,
)

from collectors.acl import DEFAULT_NAMES, MalformedAclError, NameCache
from collectors.fs.metrics import FsCollectorMetrics
from collectors.fs.parallel import Finding, WorkerFailed, walk_units
from collectors.fs.read import PathExcluder, PathState, publishable, read_path_state
from collectors.fs.state import PublishedRecord, PublishedStateStore
from collectors.fs.wire import FsWireEncoder, time_text
from permwatch.config import FsCollectorConfig
from permwatch.events import (
    Event,
    FsKind,
    FsPermissionEvent,
    Identity,
    LabelAssigned,
    ObjectType,
    ScanCompleted,
    utcnow,
)
from permwatch.metrics import Metrics
from permwatch.transport.spool import RecordDropped

log = logging.getLogger(__name__)

ScanReason = Literal["baseline", "overflow", "spool_overflow", "manual"]

# What permissions depend on, plus the structure changes that move them, plus
# IN_CLOSE_WRITE (once per file written, not per write): a label marker file is
# written after it is made, and may be edited in place. No IN_MODIFY / IN_OPEN /
# IN_CLOSE_NOWRITE: other contents never matter here and those would fill the
# kernel queue on a busy share.
WATCH_MASK = Mask(
    InotifyConstants.IN_ATTRIB
    | InotifyConstants.IN_CLOSE_WRITE
    | InotifyConstants.IN_CREATE
    | InotifyConstants.IN_DELETE
    | InotifyConstants.IN_DELETE_SELF
    | InotifyConstants.IN_MOVED_FROM
    | InotifyConstants.IN_MOVED_TO
)


class Emitter(Protocol):
    """Where events go: ``emit`` may buffer, ``flush`` returns once the bus has them."""

    def emit(self, event: Event) -> None: ...

    def flush(self) -> None: ...


@runtime_checkable
class WireEmitter(Emitter, Protocol):
    """An emitter that also takes permission events already encoded (see :mod:`collectors.fs.wire`)."""

    def emit_wire(self, path: str, value: bytes, source: str) -> None: ...


class Labeller(Protocol):
    """Decides the sensitivity label of directories (collectors/labels.py)."""

    def observe(self, path: str) -> LabelAssigned | None: ...

    def forget(self, path: str) -> LabelAssigned | None: ...

    @property
    def marker_file(self) -> str:
        """The name of a file whose presence in a folder may label it."""
        ...


# ----------------------------------------------------------------- paths


def ancestors_of(root: str) -> list[str]:
    """``/srv/share/x`` → ``["/", "/srv", "/srv/share"]``."""
    found = []
    parent = os.path.dirname(root)
    while parent != root:
        found.append(parent)
        root, parent = parent, os.path.dirname(parent)
    return found[::-1]


# ------------------------------------------------------------ watchdog hooks


@dataclass(frozen=True, slots=True)
class WatchTrouble:
    """inotify lost events (``overflow``) or could not add a watch (``watch_limit``)."""

    kind: Literal["overflow", "watch_limit"]
    path: str | None
    at: float


class _TroubleReportingInotifyFD(InotifyFD):
    """watchdog's inotify reader, reporting what watchdog only logs or swallows.

    watchdog 7.1 handles IN_Q_OVERFLOW inside ``InotifyFD.handle_event`` by
    removing every watch and adding them again, and hands no event to the
    handler. Over a big tree that recovery feeds itself: removing 100,000
    watches queues 100,000 IN_IGNORED events, which overflow the queue again,
    and so on (measured: an overflow every ~20 s for minutes after one burst).
    So an overflow is only reported here; the collector adds the watches that
    may be missing (:meth:`_PermissionObserver.rewatch`) and then rescans. A
    failed watch (ENOSPC included) below a watched root, which watchdog
    ignores, is reported too.
    """

    def __init__(self, report: Callable[[Literal["overflow", "watch_limit"], str | None], None]) -> None:
        super().__init__()
        self._report = report

    def handle_event(self, event: InotifyEvent) -> None:
        if event.is_queue_overflow:
            log.warning("inotify queue overflowed: events were lost")
            self._report("overflow", None)
            return
        super().handle_event(event)

    def add_callback(self, path: bytes, mask: Mask, callback: WatchCallback, id_: CallbackId) -> WatchDescriptor:
        try:
            return super().add_callback(path, mask, callback, id_)
        except OSError as exc:
            if exc.errno == errno.ENOSPC:
                self._report("watch_limit", os.fsdecode(path))
            raise

    def _add_callback(self, path: bytes, mask: Mask, callback: WatchCallback, id_: CallbackId) -> WatchDescriptor:
        # When a new directory tree appears, watchdog registers its group's
        # callback on a subdirectory twice (once walking the tree, once on the
        # subdirectory's own IN_CREATE) and warns on this, the reader thread.
        # Re-adding the identical callback is harmless; a warning turned into an
        # error there (as under pytest) would kill the reader, so skip it.
        watch = self._get_or_create_watch(path, mask)
        if watch.callbacks.get(id_) is callback:
            return watch.wd
        return super()._add_callback(path, mask, callback, id_)


class _PermissionEmitter(InotifyEmitter):
    """watchdog's inotify emitter asking the kernel only for what permissions depend on."""

    def get_event_mask_from_filter(self) -> Mask:
        return WATCH_MASK


class _PermissionObserver(BaseObserver):
    """watchdog's ``InotifyObserver`` built on the reporting inotify reader."""

    def __init__(self, report: Callable[[Literal["overflow", "watch_limit"], str | None], None]) -> None:
        self._inotify_fd = _TroubleReportingInotifyFD(report)
        self._inotify_fd.start()
        super().__init__(_PermissionEmitter, inotify_fd=self._inotify_fd)

    def on_thread_stop(self) -> None:
        super().on_thread_stop()
        self._inotify_fd.stop()
        self._inotify_fd.join()

    def rewatch(self, root: str) -> None:
        """Watch the directories below ``root`` that have no watch (created while events were lost),
        leaving the existing watches alone: adding a watch that exists queues no event."""
        wanted = os.fsencode(root)
        for emitter in list(self.emitters):
            group = getattr(emitter, "_inotify", None)  # watchdog's InotifyWatchGroup for that root
            if group is not None and group.path == wanted:
                with group._lock:
                    group._add_all_callbacks(group.path)


@dataclass(frozen=True, slots=True)
class RescanRequest:
    """A rescan of every root asked for from outside (the spool, after it lost events and drained)."""

    reason: ScanReason
    at: float


class _InboxHandler(FileSystemEventHandler):
    """Hands every watchdog event to the collector's thread, which does all the work."""

    def __init__(self, inbox: queue.SimpleQueue[FileSystemEvent | WatchTrouble | RescanRequest]) -> None:
        self._inbox = inbox

    def dispatch(self, event: FileSystemEvent) -> None:
        self._inbox.put(event)


# ----------------------------------------------------------------- collector


@dataclass(frozen=True, slots=True)
class _Kinds:
    """The kind to publish for a path not published before, and for one whose state changed."""

    new: FsKind
    changed: FsKind


_SCAN_KINDS = _Kinds(new=FsKind.BASELINE, changed=FsKind.BASELINE)
_LIVE_KINDS = _Kinds(new=FsKind.CREATED, changed=FsKind.CHANGED)


@dataclass(slots=True)
class _Tally:
    seen: int = 0
    changed: int = 0
    progress: Gauge | None = None
    """A scan's paths-seen gauge, kept current once per directory listed."""

    def report(self) -> None:
        if self.progress is not None:
            self.progress.set(self.seen)


@dataclass(slots=True)
class FsCollectorStats:
    """Counters a runner can export as metrics."""

    events_emitted: int = 0
    scans: int = 0
    overflows: int = 0
    watch_limit_hits: int = 0
    unreadable_paths: int = 0


@dataclass(slots=True)
class _RootWatchState:
    watch: ObservedWatch | None = None
    degraded: bool = False
    next_periodic_rescan: float = 0.0
    rescan_requested_at: float | None = None
    rescan_reason: ScanReason = "overflow"
    last_scan_started: float = field(default=float("-inf"))


_Visit = Callable[[str, PathState, PublishedRecord | None], None]


_HANDLED_PER_ROUND = 500
"""Watch events handled before due reads and rescans get their turn."""


class FsCollector:
    """Publishes permission states of the configured roots; see the module docstring.

    One thread drives a collector: :meth:`run`, or :meth:`scan` on its own.
    Overflow rescans use reason ``"overflow"`` and, like live events, publish
    ``created``/``changed``; only the ``"baseline"`` scan publishes ``baseline``.
    """

    def __init__(
        self,
        config: FsCollectorConfig,
        emitter: Emitter,
        *,
        labeller: Labeller | None = None,
        state_path: Path | None = None,
        clock: Callable[[], float] = time.monotonic,
        names: NameCache = DEFAULT_NAMES,
        batch_size: int = 5000,
        degraded_rescan_seconds: float = 300.0,
        metrics: Metrics | None = None,
    ) -> None:
        self._config = config
        self._emitter = emitter
        self._labeller = labeller
        self._clock = clock
        self._names = names
        self._batch_size = batch_size
        """Events between a flush and the store's commit: a crash publishes at most this many again, and
        every commit costs (a scan of 50k folders: 0.55 s of commits at 500, 0.1 s at 5000)."""
        self._degraded_rescan_seconds = degraded_rescan_seconds
        self._coalesce_seconds = config.coalesce_ms / 1000
        self._source = config.collector_id
        self._roots = _distinct_roots(config.roots)
        self._ancestors = {a for root in self._roots for a in ancestors_of(root)} - set(self._roots)
        self._excluder = PathExcluder(config.excludes)
        self._store = PublishedStateStore(state_path if state_path is not None else config.state_path)
        self._inbox: queue.SimpleQueue[FileSystemEvent | WatchTrouble | RescanRequest] = queue.SimpleQueue()
        self._handler = _InboxHandler(self._inbox)
        self._attrib_due: dict[str, tuple[float, datetime]] = {}
        """path → (when to read it, when the change was first noticed: the events' observed_at)"""
        self._observed_at: datetime | None = None
        self._watching: dict[str, _RootWatchState] = {root: _RootWatchState() for root in self._roots}
        self._observer: _PermissionObserver | None = None
        self._stop: threading.Event | None = None
        self._queue_limit = "unknown"
        self._unconfirmed = 0
        self._dropped_since_confirm = False
        """The spool was full for an event since the last confirm: that batch stays out of the store."""
        self._labels_unconfirmed: set[str] = set()
        self._labels_dirty: set[str] = set()
        """Folders whose label event was dropped: their next visit publishes the label, changed or not."""
        self._report_lock = threading.Lock()
        self._watch_limit_reports = 0
        self.stats = FsCollectorStats()
        self._metrics = FsCollectorMetrics(metrics, config.collector_id)
        self._wire = FsWireEncoder(self._source)
        self._emit_encoded = emitter.emit_wire if isinstance(emitter, WireEmitter) else None
        self._scan_workers = config.scan_workers

    @property
    def roots(self) -> tuple[str, ...]:
        return self._roots

    def close(self) -> None:
        """Close the state store; anything not confirmed by a flush is published again next time."""
        self._store.close()

    def __enter__(self) -> FsCollector:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    # ------------------------------------------------------------------ run

    def run(self, stop: threading.Event) -> None:
        """Watch, publish a baseline of every root, then follow changes until ``stop`` is set.

        With ``watch = false`` in the config, returns after the baseline. A scan
        notices ``stop`` between directories, so stopping never waits for a
        whole tree; the next start's baseline finishes the job.
        """
        self._stop = stop
        try:
            if self._config.watch:
                self._start_watching()
            for root in self._roots:
                self.scan(root, "baseline")
            while self._config.watch and not stop.is_set():
                self._follow_once()
            self._confirm()
        except _ScanInterrupted:
            self._confirm()  # what was published so far is exactly what the store records
        except BaseException:
            self._discard_unconfirmed()
            raise
        finally:
            self._stop = None
            self._stop_watching()

    def scan(self, root: str | Path, reason: ScanReason = "manual") -> ScanCompleted:
        """Publish the differences between ``root`` (and its ancestors) and what was published.

        Usable on its own (a one-off or manual scan), but not while :meth:`run`
        drives the collector on another thread.
        """
        root = os.path.normpath(str(root))
        started = self._clock()
        if root in self._watching:
            self._watching[root].last_scan_started = started
        if reason == "overflow" and self._observer is not None:
            self._observer.rewatch(root)  # first, so what changes from here on is seen live or by the walk
        tally = _Tally(progress=self._metrics.scan_started(root))
        kinds = _SCAN_KINDS if reason == "baseline" else _LIVE_KINDS
        try:
            for ancestor in ancestors_of(root):
                self._reconcile_path(ancestor, kinds, tally)
            if not os.path.lexists(root):
                log.warning("root %s does not exist", root)
            elif os.path.islink(root):
                log.warning("root %s is a symlink, which is not followed: configure the path it points to", root)
            self._walk_tree(root, self._settler(kinds, tally), tally, spread=kinds)
            completed = ScanCompleted(
                root=root,
                reason=reason,
                paths_seen=tally.seen,
                paths_changed=tally.changed,
                seconds=max(0.0, self._clock() - started),
                source=self._source,
            )
            self._emit(completed)
            self._confirm()
        except _ScanInterrupted:
            log.info("scan of %s (%s) stopped after %d paths", root, reason, tally.seen)
            raise
        except BaseException:
            self._discard_unconfirmed()
            raise
        finally:
            self._metrics.scan_ended(root)
        self.stats.scans += 1
        self._metrics.scan_completed(root, reason, paths_seen=completed.paths_seen, seconds=completed.seconds)
        log.info(
            "scanned %s (%s): %d paths, %d published, %.2fs",
            root,
            reason,
            completed.paths_seen,
            completed.paths_changed,
            completed.seconds,
        )
        return completed

    # ------------------------------------------------------------- watching

    def _start_watching(self) -> None:
        self._queue_limit = _sysctl("fs/inotify/max_queued_events")  # the kernel reads it once, here
        self._observer = _PermissionObserver(self._report_trouble)
        self._observer.start()
        # The parents of the roots are watched (not recursively) for their own
        # traverse bits, and so that a root which is deleted and made again is noticed.
        for ancestor in sorted(self._ancestors):
            try:
                self._observer.schedule(self._handler, ancestor, recursive=False)
            except FileNotFoundError:
                log.info("ancestor %s does not exist; not watching it", ancestor)
            except OSError as exc:
                for root in self._roots:
                    if root.startswith(ancestor.rstrip("/") + "/"):
                        self._degrade(root, f"cannot watch ancestor {ancestor} ({exc})")
        for root in self._roots:
            self._watch_root(root)

    def _stop_watching(self) -> None:
        if self._observer is not None:
            self._observer.stop()
            self._observer.join()
            self._observer = None

    def _unwatch_root(self, root: str) -> None:
        """Drop a root's watch: after a move its inotify watches would report the new place under the old names."""
        state = self._watching[root]
        if self._observer is not None and state.watch is not None:
            with contextlib.suppress(KeyError):
                self._observer.unschedule(state.watch)
        state.watch = None

    def _watch_root(self, root: str) -> None:
        if self._observer is None:
            return
        self._unwatch_root(root)
        try:
            self._watching[root].watch = self._observer.schedule(self._handler, root, recursive=True)
        except (FileNotFoundError, NotADirectoryError):
            log.warning("root %s does not exist; watching its parent for it to appear", root)
        except OSError as exc:
            self._degrade(root, f"cannot watch it ({exc})")

    def _report_trouble(self, kind: Literal["overflow", "watch_limit"], path: str | None) -> None:
        """Called on watchdog's threads: only queue it, the collector thread acts on it."""
        if kind == "watch_limit":
            with self._report_lock:
                self._watch_limit_reports += 1
        self._inbox.put(WatchTrouble(kind, path, self._clock()))

    def request_spool_rescan(self) -> None:
        """Rescan every root (reason ``spool_overflow``): the spool dropped events and has drained. Thread-safe."""
        self._inbox.put(RescanRequest("spool_overflow", self._clock()))

    def _on_rescan_request(self, request: RescanRequest) -> None:
        log.warning(
            "rescanning %s (%s): events were lost on their way to the bus", ", ".join(self._roots), request.reason
        )
        for state in self._watching.values():
            state.rescan_reason = request.reason
            if state.rescan_requested_at is None:
                state.rescan_requested_at = request.at

    def _on_trouble(self, trouble: WatchTrouble) -> None:
        self._metrics.watch_trouble(trouble.kind)
        if trouble.kind == "overflow":
            self.stats.overflows += 1
            affected = list(self._roots)
            if all(self._watching[root].rescan_requested_at is None for root in affected):
                # Once per rescan: a burst overflows the queue many times before the rescan runs.
                log.warning(
                    "inotify queue overflowed (fs.inotify.max_queued_events was %s when watching began):"
                    " events were lost; rescanning %s",
                    self._queue_limit,
                    ", ".join(affected),
                )
        else:
            self.stats.watch_limit_hits += 1
            root = None if trouble.path is None else self._root_containing(trouble.path)
            affected = [root] if root is not None else list(self._roots)
            why = f"inotify watch limit reached at {trouble.path}"
            why += f" (fs.inotify.max_user_watches={_sysctl('fs/inotify/max_user_watches')})"
            for each in affected:
                self._degrade(each, why)
        for root in affected:
            state = self._watching[root]
            if state.rescan_requested_at is None:
                state.rescan_requested_at = trouble.at

    def _degrade(self, root: str, why: str) -> None:
        state = self._watching[root]
        if not state.degraded:
            log.warning(
                "%s: changes below %s may be missed by inotify; rescanning it now and every %.0fs",
                why,
                root,
                self._degraded_rescan_seconds,
            )
            state.degraded = True
            state.next_periodic_rescan = self._clock() + self._degraded_rescan_seconds
        if state.rescan_requested_at is None:
            state.rescan_requested_at = self._clock()

    # ------------------------------------------------------------ following

    def _follow_once(self) -> None:
        """Handle what arrived (waiting briefly for something), then due reads and rescans."""
        try:
            item: FileSystemEvent | WatchTrouble | RescanRequest | None = self._inbox.get(timeout=self._wait_seconds())
        except queue.Empty:
            item = None
        handled = 0
        while item is not None:
            self._handle(item)
            handled += 1
            if handled >= _HANDLED_PER_ROUND:
                break
            try:
                item = self._inbox.get_nowait()
            except queue.Empty:
                item = None
        self._read_due_attributes()
        self._rescan_where_needed()
        if self._inbox.empty():
            self._confirm()

    def _wait_seconds(self) -> float:
        now = self._clock()
        wait = 0.25  # how quickly ``stop`` is noticed
        if self._attrib_due:
            wait = min(wait, next(iter(self._attrib_due.values()))[0] - now)
        for state in self._watching.values():
            if state.rescan_requested_at is not None:
                return 0.0
            if state.degraded:
                wait = min(wait, state.next_periodic_rescan - now)
        return max(0.0, wait)

    def _handle(self, item: FileSystemEvent | WatchTrouble | RescanRequest) -> None:
        if isinstance(item, WatchTrouble):
            self._on_trouble(item)
            return
        if isinstance(item, RescanRequest):
            self._on_rescan_request(item)
            return
        if item.is_synthetic:
            return  # watchdog's guesses about subtrees; they are walked for real instead
        self._metrics.event_read(item.event_type)
        path = os.fsdecode(item.src_path)
        if isinstance(item, DirAttribEvent | FileAttribEvent):
            watched = path in self._ancestors or self._root_of(path) is not None
            if watched and path not in self._attrib_due:
                self._attrib_due[path] = (self._clock() + self._coalesce_seconds, utcnow())
        elif isinstance(item, DirCreatedEvent | FileCreatedEvent):
            self._on_created(path)
        elif isinstance(item, DirDeletedEvent | FileDeletedEvent):
            self._on_deleted(path)
        elif isinstance(item, DirMovedEvent | FileMovedEvent):
            self._on_moved(path, os.fsdecode(item.dest_path))
        self._relabel_if_marker(path)
        if isinstance(item, DirMovedEvent | FileMovedEvent):
            self._relabel_if_marker(os.fsdecode(item.dest_path))

    def _relabel_if_marker(self, path: str) -> None:
        """A label marker file made, removed or renamed: its folder's label may have changed."""
        if self._labeller is None or os.path.basename(path) != self._labeller.marker_file:
            return
        folder = os.path.dirname(path)
        if self._root_of(folder) is not None:
            self._observe_label(folder)

    def _on_created(self, path: str) -> None:
        root = self._root_of(path)
        if root is None:
            return
        self._attrib_due.pop(path, None)
        if path == root and os.path.isdir(root):
            log.info("root %s appeared; watching it", root)
            self._watch_root(root)  # before the walk, so nothing made meanwhile is missed
        self._walk_tree(path, self._settler(_LIVE_KINDS, _Tally()), _Tally())

    def _on_deleted(self, path: str) -> None:
        root = self._root_of(path)
        if root is None:
            return
        self._attrib_due.pop(path, None)
        # Walking rather than deleting outright: if something is at the path
        # again by now, its current state is what must be published.
        self._walk_tree(path, self._settler(_LIVE_KINDS, _Tally()), _Tally())
        if path == root and not os.path.lexists(root):
            log.warning("root %s was deleted or moved away; watching its parent for it to return", root)
            self._unwatch_root(root)

    def _on_moved(self, old_top: str, new_top: str) -> None:
        old_root, new_root = self._root_of(old_top), self._root_of(new_top)
        if new_root is None:
            self._on_deleted(old_top)
            return
        if old_root is None:
            self._on_created(new_top)
            return
        self._attrib_due.pop(old_top, None)
        self._attrib_due.pop(new_top, None)
        moved_records = {record.path: record for record in self._store.subtree(old_top)}
        settle = self._settler(_LIVE_KINDS, _Tally())

        def visit(path: str, state: PathState, previous: PublishedRecord | None) -> None:
            old_path = old_top + path[len(new_top) :]
            record = moved_records.pop(old_path, None)
            if record is None:
                settle(path, state, previous)
                return
            self._store.delete(old_path)  # committed with the event below, never apart from it
            self._publish(path, state, FsKind.MOVED, old_path=old_path)
            if record.is_dir and self._labeller is not None:
                self._emit_label(self._labeller.forget(old_path))
            if state.is_dir and self._labeller is not None:
                self._observe_label(path)

        self._walk_tree(new_top, visit, _Tally())
        # Published below the old path but not found below the new one: gone meanwhile.
        for record in sorted(moved_records.values(), key=lambda r: r.path, reverse=True):
            self._store.delete(record.path)
            self._publish_deleted(record)

    def _read_due_attributes(self) -> None:
        now = self._clock()
        while self._attrib_due:
            path, (due, noticed) = next(iter(self._attrib_due.items()))
            if due > now:
                break  # deadlines are first-seen + constant, so insertion order is deadline order
            del self._attrib_due[path]
            # The change happened when inotify told us, not when the coalescing window ended.
            self._observed_at = noticed
            try:
                self._reconcile_path(path, _LIVE_KINDS, _Tally())
            finally:
                self._observed_at = None

    def _rescan_where_needed(self) -> None:
        now = self._clock()
        for root, state in self._watching.items():
            if state.degraded and now >= state.next_periodic_rescan:
                state.next_periodic_rescan = now + self._degraded_rescan_seconds
                if state.rescan_requested_at is None:
                    state.rescan_requested_at = now
                self._retry_degraded_watch(root)
            requested = state.rescan_requested_at
            if requested is None:
                continue
            state.rescan_requested_at = None
            reason, state.rescan_reason = state.rescan_reason, "overflow"
            if reason == "spool_overflow":
                self._confirm()  # settle the batch a drop may have hit before comparing with the store
                self.scan(root, reason)
            elif requested >= state.last_scan_started:  # else a scan begun after the trouble covered it
                self.scan(root, reason)

    def _retry_degraded_watch(self, root: str) -> None:
        """Try watching a degraded root afresh: the limit may have been raised since.

        Watches below the root are added on this thread, so a watch-limit
        report during ``_watch_root`` means this attempt failed too.
        """
        with self._report_lock:
            reports_before = self._watch_limit_reports
        self._watch_root(root)
        with self._report_lock:
            failed_again = self._watch_limit_reports != reports_before
        state = self._watching[root]
        if state.watch is not None and not failed_again:
            log.info("root %s is fully watched again", root)
            state.degraded = False

    # ------------------------------------------------------------ reconciling

    def _settler(self, kinds: _Kinds, tally: _Tally) -> _Visit:
        """A visit that publishes ``state`` when it differs from what was published."""

        def settle(path: str, state: PathState, previous: PublishedRecord | None) -> None:
            tally.seen += 1
            if previous is None:
                kind: FsKind | None = kinds.new
            elif previous.fingerprint != state.fingerprint:
                kind = kinds.changed
            else:
                kind = None
            if kind is not None:
                self._publish(path, state, kind)
                tally.changed += 1
            if state.is_dir and self._labeller is not None:
                self._observe_label(path)

        return settle

    def _reconcile_path(self, path: str, kinds: _Kinds, tally: _Tally) -> None:
        """Publish one path (not its subtree) if its state differs; a vanished path is left to its deletion."""
        state = self._read_state(path)
        if state is None or state is _UNREADABLE:
            return
        previous = self._store.get(path)
        self._settler(kinds, tally)(path, state, previous)
        if previous is not None and previous.is_dir and not state.is_dir:
            self._delete_subtree(path, tally, include_self=False)

    def _walk_tree(self, top: str, visit: _Visit, tally: _Tally, *, spread: _Kinds | None = None) -> None:
        """Visit ``top`` and everything below it; publish deletions for what vanished.

        Iterative, never follows symlinks, skips excluded paths and does not
        descend into excluded directories. A directory that cannot be listed
        keeps what was published below it.
        """
        if not publishable(top):
            log.warning("skipping %r: the event schema cannot carry this path", top)
            return
        state = self._read_state(top)
        if state is _UNREADABLE:
            return
        if state is None:
            self._delete_subtree(top, tally)
            return
        previous = self._store.get(top)
        # Nothing recorded below ``top`` (a first scan): no listing can have published children to
        # compare with, since a directory's children are recorded only once it has been listed.
        first_time = not self._store.has_below(top)
        visit(top, state, previous)
        if previous is not None and previous.is_dir and not state.is_dir:
            self._delete_subtree(top, tally, include_self=False)
        pending = [top] if state.is_dir else []
        # A first scan of a scan (``spread``: the kinds it publishes) may go to worker processes once the
        # top's listing shows enough folders to share; what they find is published here, in their order.
        spread_after_top = (
            spread is not None and first_time and self._scan_workers > 0 and self._emit_encoded is not None
        )
        while pending:
            if self._stop is not None and self._stop.is_set():
                raise _ScanInterrupted
            directory = pending.pop()
            try:
                with os.scandir(directory) as listing:
                    entries = [(entry.name, entry.path) for entry in listing]
            except (FileNotFoundError, NotADirectoryError):
                continue  # gone since it was read; its own deletion event follows
            except OSError as exc:
                self.stats.unreadable_paths += 1
                self._metrics.unreadable()
                log.warning("cannot list %s (%s): keeping what was published below it", directory, exc)
                continue
            published = {} if first_time else self._store.children(directory)
            for name, path in entries:
                if self._excluder.excludes(path, name):
                    continue
                if not publishable(path):
                    log.warning("skipping %r: the event schema cannot carry this path", path)
                    continue
                child = self._read_state(path)
                if child is _UNREADABLE:
                    published.pop(name, None)
                    continue
                if child is None:
                    continue
                previous = published.pop(name, None)
                visit(path, child, previous)
                if previous is not None and previous.is_dir and not child.is_dir:
                    self._delete_subtree(path, tally, include_self=False)
                if child.is_dir:
                    pending.append(path)
            for record in published.values():
                self._delete_subtree(record.path, tally)
            tally.report()
            if spread_after_top and spread is not None:
                spread_after_top = False
                if len(pending) >= 2 * self._scan_workers:
                    self._publish_spread(pending, spread, tally)
                    pending = []

    def _publish_spread(self, units: list[str], kinds: _Kinds, tally: _Tally) -> None:
        """Walk below ``units`` (already published themselves) in worker processes; publish what they find."""
        emit = self._emit_encoded
        assert emit is not None  # only an emitter that takes encoded events gets the workers' bytes
        found = walk_units(
            units, workers=self._scan_workers, excludes=self._config.excludes, source=self._source, kind=kinds.new
        )
        try:
            self._publish_found(found, emit, tally)
        except WorkerFailed as exc:
            log.warning("scan workers failed, walking in the collector's thread instead: %s", str(exc).strip())
            for unit in units:  # what the workers found is recorded: these walks compare, they do not republish
                self._walk_tree(unit, self._settler(kinds, tally), tally)
        finally:
            found.close()

    def _publish_found(
        self, found: Iterator[list[Finding]], emit: Callable[[str, bytes, str], None], tally: _Tally
    ) -> None:
        for chunk in found:
            if self._stop is not None and self._stop.is_set():
                raise _ScanInterrupted
            for path, object_type, fingerprint, value, error in chunk:
                if value is None:
                    self.stats.unreadable_paths += 1
                    self._metrics.unreadable()
                    log.warning("skipping %r: %s; keeping what was published", path, error)
                    continue
                tally.seen += 1
                tally.changed += 1
                self._store.put(path, object_type=ObjectType(object_type), fingerprint=fingerprint)
                self._emit_wire(emit, path, value)
                if object_type == "directory" and self._labeller is not None:
                    self._observe_label(path)
            tally.report()

    def _read_state(self, path: str) -> PathState | Literal[_Unreadable.TOKEN] | None:
        """The path's state, ``None`` when it does not exist, ``_UNREADABLE`` (logged) otherwise."""
        try:
            return read_path_state(path, names=self._names)
        except (OSError, MalformedAclError) as exc:
            self.stats.unreadable_paths += 1
            self._metrics.unreadable()
            log.warning("cannot read permissions of %s (%s): keeping what was published", path, exc)
            return _UNREADABLE

    def _delete_subtree(self, path: str, tally: _Tally, *, include_self: bool = True) -> None:
        records = self._store.subtree(path, include_self=include_self)
        for record in reversed(records):  # children before their directory
            self._store.delete(record.path)  # one by one, so a batch commits exactly what it flushed
            self._publish_deleted(record)
        tally.changed += len(records)

    # ------------------------------------------------------------- publishing

    def _publish(self, path: str, state: PathState, kind: FsKind, *, old_path: str | None = None) -> None:
        # Store first: emitting may complete a batch, and the commit after its
        # flush must include the record of the event that completed it.
        self._store.put(path, object_type=state.object_type, fingerprint=state.fingerprint)
        if self._emit_encoded is not None and old_path is None:
            observed = None if self._observed_at is None else time_text(self._observed_at)
            value = self._wire.encode_state(path, kind, state, self._names, observed)
            self._emit_wire(self._emit_encoded, path, value)
            return
        self._emit(
            FsPermissionEvent(
                kind=kind,
                path=path,
                old_path=old_path,
                object_type=state.object_type,
                owner=Identity(id=state.uid, name=self._names.user(state.uid)),
                group=Identity(id=state.gid, name=self._names.group(state.gid)),
                mode=state.mode,
                acl=state.acl,
                default_acl=state.default_acl,
                source=self._source,
                observed_at=self._observed_at or utcnow(),
            )
        )

    def _publish_deleted(self, record: PublishedRecord) -> None:
        deleted = FsPermissionEvent(
            kind=FsKind.DELETED, path=record.path, object_type=record.object_type, source=self._source
        )
        self._emit(deleted)
        if record.is_dir and self._labeller is not None:
            self._emit_label(self._labeller.forget(record.path))

    def _observe_label(self, folder: str) -> None:
        """Publish the folder's label if it changed, or whatever it is now if its last label event was dropped."""
        assert self._labeller is not None
        if folder not in self._labels_dirty:
            self._emit_label(self._labeller.observe(folder))
            return
        self._labels_dirty.discard(folder)
        self._labeller.forget(folder)
        assigned = self._labeller.observe(folder)
        self._emit_label(assigned or LabelAssigned(path=folder, label=None, origin="policy", source=self._source))

    def _emit_label(self, assigned: LabelAssigned | None) -> None:
        if assigned is None:
            return
        if not assigned.source:
            assigned = assigned.model_copy(update={"source": self._source})
        self._labels_unconfirmed.add(assigned.path)
        self._emit(assigned)

    def _emit(self, event: Event) -> None:
        try:
            self._emitter.emit(event)
        except RecordDropped:
            self._dropped_since_confirm = True  # the spool logs and counts it; _confirm keeps the batch out
        self._emitted()

    def _emit_wire(self, emit: Callable[[str, bytes, str], None], path: str, value: bytes) -> None:
        try:
            emit(path, value, self._source)
        except RecordDropped:
            self._dropped_since_confirm = True
        self._emitted()

    def _emitted(self) -> None:
        self.stats.events_emitted += 1
        self._unconfirmed += 1
        if self._unconfirmed >= self._batch_size:
            self._confirm()

    def _confirm(self) -> None:
        """Flush the emitter, then commit the store writes describing what it flushed."""
        if not self._unconfirmed and not self._store.has_uncommitted:
            return
        try:
            self._emitter.flush()
        except RecordDropped:
            self._dropped_since_confirm = True  # a batched event the full spool dropped at the flush
        except BaseException:
            self._discard_unconfirmed()
            raise
        if self._dropped_since_confirm:
            # Some of these events were dropped by the full spool, so the store keeps the states that
            # did reach the bus; the rescan once the spool has drained publishes the differences.
            self._discard_unconfirmed()
            return
        self._store.commit()
        self._labels_unconfirmed.clear()
        self._unconfirmed = 0

    def _discard_unconfirmed(self) -> None:
        """After a failure or a drop: forget store writes whose events may not have reached the bus."""
        self._store.rollback()
        self._labels_dirty |= self._labels_unconfirmed
        self._labels_unconfirmed.clear()
        self._dropped_since_confirm = False
        self._unconfirmed = 0

    # ----------------------------------------------------------------- paths

    def _root_containing(self, path: str) -> str | None:
        for root in self._roots:
            if path == root or path.startswith(root.rstrip("/") + "/"):
                return root
        return None

    def _root_of(self, path: str) -> str | None:
        """The root ``path`` belongs to, or ``None`` when it is outside all roots or excluded."""
        root = self._root_containing(path)
        if root is None or path == root:
            return root
        if not publishable(path):
            log.warning("ignoring %r: the event schema cannot carry this path", path)
            return None
        current = root.rstrip("/")
        for name in path[len(current) + 1 :].split("/"):
            current = f"{current}/{name}"
            if self._excluder.excludes(current, name):
                return None
        return root


class _ScanInterrupted(Exception):
    """``stop`` was set while a scan walked a tree."""


class _Unreadable(enum.Enum):
    """Marks a path whose state could not be read (and was logged)."""

    TOKEN = enum.auto()


_UNREADABLE = _Unreadable.TOKEN


def _distinct_roots(roots: Iterable[Path]) -> tuple[str, ...]:
    """Normalised roots, without duplicates or roots nested in another root."""
    normalised = list(dict.fromkeys(os.path.normpath(str(root)) for root in roots))
    kept = []
    for root in normalised:
        outer = next((o for o in normalised if o != root and (root.startswith(o.rstrip("/") + "/"))), None)
        if outer is not None:
            log.info("root %s is inside root %s; watching it as part of that", root, outer)
            continue
        kept.append(root)
    return tuple(kept)


def _sysctl(name: str) -> str:
    try:
        return Path("/proc/sys", name).read_text(encoding="ascii").strip()
    except OSError:
        return "unknown"
