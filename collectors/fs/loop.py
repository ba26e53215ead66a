"""The filesystem collector's loop: baseline scans, then watch events turned into published states.

On start it watches the roots (:mod:`collectors.fs.watch`), then runs a
baseline scan: the root's ancestor directories first (the processor needs
their traverse bits), then every path below the root (:mod:`collectors.fs.walk`),
publishing only what differs from what was last published
(:mod:`collectors.fs.state`) through one publisher
(:mod:`collectors.fs.publish`). Afterwards it takes watch events from its
inbox: attribute changes are coalesced per path for ``coalesce_ms`` and read
once, observed when inotify first told of them; when more changes wait than
are read as they come (a recursive ``setfacl``), they are held until the
burst goes quiet and then read together, by directory listing where many
share one (:mod:`collectors.fs.coalesce`); created and moved-in
directories are walked, because inotify cannot report what was made inside
them before their watch existed. When inotify loses events (queue overflow)
or cannot watch a directory (watch limit), or the spool dropped events and
has drained, the loop says so in the log and rescans the affected roots; a
degraded root is rescanned periodically until it can be watched whole again.
Paths are read with the ACL reader ``[[fs]] acl_reader`` names
(:mod:`collectors.fs.readers`); who made a change comes from the actor source
``[[fs]] actors`` names (:mod:`collectors.fs.actors`), asked when the change is read.
"""

from __future__ import annotations

import logging
import os
import queue
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

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
)
from watchdog.observers.api import ObservedWatch

from collectors.acl import DEFAULT_NAMES, NameCache
from collectors.fs.actors import actor_source_named
from collectors.fs.coalesce import BurstMode, ChangedPaths, plan_reads
from collectors.fs.metrics import FsCollectorMetrics, FsCollectorStats
from collectors.fs.opens import label_follower, open_source_named
from collectors.fs.paths import CoveredPaths, ancestors_of
from collectors.fs.publish import Emitter, Labeller, Publisher
from collectors.fs.read import PathExcluder, PathState
from collectors.fs.readers import acl_reader_named
from collectors.fs.rescans import RescanSchedule, ScanReason
from collectors.fs.settings import FsCollectorConfig
from collectors.fs.state import PublishedRecord, PublishedStateStore
from collectors.fs.walk import LIVE_KINDS, SCAN_KINDS, ScanInterrupted, SpreadSettings, Tally, TreeWalker
from collectors.fs.watch import PermissionWatcher, TroubleKind, WatchTrouble, sysctl
from permwatch.events import FsKind, ScanCompleted
from permwatch.metrics import Metrics

__all__ = ["FsCollector", "FsCollectorStats", "ScanReason", "ancestors_of"]

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class RescanRequest:
    """A rescan of every root asked for from outside (the spool, after it lost events and drained)."""

    reason: ScanReason
    at: float


InboxItem = FileSystemEvent | WatchTrouble | RescanRequest


_HANDLED_PER_ROUND = 500
"""Watch events handled before due reads and rescans get their turn."""

_HANDLED_PER_BURST_ROUND = 20_000
"""The same in a burst, where handling an attribute change only notes its path."""


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
        self._clock = clock
        self._source = config.collector_id
        self._paths = CoveredPaths(config.roots, PathExcluder(config.excludes))
        self._roots = self._paths.roots
        self.stats = FsCollectorStats()
        self._metrics = FsCollectorMetrics(metrics, config.collector_id)
        reader = acl_reader_named(config.acl_reader, names, config.acl_reader_options)
        self._actors = actor_source_named(config, names)
        self._opens = open_source_named(config, names)
        self._store = PublishedStateStore(state_path if state_path is not None else config.state_path)
        self._publisher = Publisher(
            self._store,
            emitter,
            source=self._source,
            names=names,
            labeller=labeller,
            batch_size=batch_size,
            stats=self.stats,
            label_listener=label_follower(self._opens) if config.watch else None,
        )
        options = tuple(config.acl_reader_options.items())
        spread = SpreadSettings(config.scan_workers, tuple(config.excludes), self._source, config.acl_reader, options)
        self._walker = TreeWalker(
            self._store,
            self._publisher,
            reader,
            excluder=PathExcluder(config.excludes),
            spread=spread,
            stats=self.stats,
            metrics=self._metrics,
        )
        self._inbox: queue.SimpleQueue[InboxItem] = queue.SimpleQueue()
        self._watcher = PermissionWatcher(self._inbox.put, self._report_trouble)
        burst = BurstMode(threshold=config.burst_paths, quiet_seconds=config.burst_quiet_ms / 1000)
        self._changed = ChangedPaths(coalesce_seconds=config.coalesce_ms / 1000, burst=burst)
        self._root_watches: dict[str, ObservedWatch | None] = dict.fromkeys(self._roots)
        self._rescans = RescanSchedule(self._roots, clock=clock, degraded_rescan_seconds=degraded_rescan_seconds)
        self._report_lock = threading.Lock()
        self._watch_limit_reports = 0

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
        self._walker.stop = stop
        try:
            if self._config.watch:
                self._start_watching()
                self._actors.start(self._roots)
            for root in self._roots:
                self.scan(root, "baseline")
            while self._config.watch and not stop.is_set():
                self._follow_once()
            self._publisher.confirm()
        except ScanInterrupted:
            self._publisher.confirm()  # what was published so far is exactly what the store records
        except BaseException:
            self._publisher.discard_unconfirmed()
            raise
        finally:
            self._walker.stop = None
            self._watcher.stop()
            self._actors.close()
            self._opens.close()

    def scan(self, root: str | Path, reason: ScanReason = "manual") -> ScanCompleted:
        """Publish the differences between ``root`` (and its ancestors) and what was published.

        Usable on its own (a one-off or manual scan), but not while :meth:`run`
        drives the collector on another thread.
        """
        root = os.path.normpath(str(root))
        started = self._clock()
        self._rescans.scan_started(root, started)
        self._changed.discard_covered_by(root, ancestors_of(root))
        if reason == "overflow":
            self._watcher.rewatch(root)  # first, so what changes from here on is seen live or by the walk
        tally = Tally(progress=self._metrics.scan_started(root))
        kinds = SCAN_KINDS if reason == "baseline" else LIVE_KINDS
        try:
            for ancestor in ancestors_of(root):
                self._walker.reconcile_path(ancestor, kinds, tally)
            if not os.path.lexists(root):
                log.warning("root %s does not exist", root)
            elif os.path.islink(root):
                log.warning("root %s is a symlink, which is not followed: configure the path it points to", root)
            # a rescan after lost events asks the actor source who changed what it finds changed
            actor_of = None if reason == "baseline" else self._actors.actor_of
            self._walker.walk_tree(root, self._walker.settler(kinds, tally, actor_of=actor_of), tally, spread=kinds)
            completed = ScanCompleted(
                root=root,
                reason=reason,
                paths_seen=tally.seen,
                paths_changed=tally.changed,
                seconds=max(0.0, self._clock() - started),
                source=self._source,
            )
            self._publisher.emit(completed)
            self._publisher.confirm()
        except ScanInterrupted:
            log.info("scan of %s (%s) stopped after %d paths", root, reason, tally.seen)
            raise
        except BaseException:
            self._publisher.discard_unconfirmed()
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
        self._watcher.start()
        # The parents of the roots are watched (not recursively) for their own
        # traverse bits, and so that a root which is deleted and made again is noticed.
        for ancestor in sorted(self._paths.ancestors):
            try:
                self._watcher.watch_directory(ancestor)
            except FileNotFoundError:
                log.info("ancestor %s does not exist; not watching it", ancestor)
            except OSError as exc:
                for root in self._roots:
                    if root.startswith(ancestor.rstrip("/") + "/"):
                        self._rescans.degrade(root, f"cannot watch ancestor {ancestor} ({exc})")
        for root in self._roots:
            self._watch_root(root)

    def _unwatch_root(self, root: str) -> None:
        """Drop a root's watch: after a move its inotify watches would report the new place under the old names."""
        watch = self._root_watches[root]
        if watch is not None:
            self._watcher.unwatch(watch)
        self._root_watches[root] = None

    def _watch_root(self, root: str) -> None:
        if not self._watcher.active:
            return
        self._unwatch_root(root)
        try:
            self._root_watches[root] = self._watcher.watch_tree(root)
        except (FileNotFoundError, NotADirectoryError):
            log.warning("root %s does not exist; watching its parent for it to appear", root)
        except OSError as exc:
            self._rescans.degrade(root, f"cannot watch it ({exc})")

    def _report_trouble(self, kind: TroubleKind, path: str | None) -> None:
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
        self._rescans.request_all(request.reason, request.at)

    def _on_trouble(self, trouble: WatchTrouble) -> None:
        self._metrics.watch_trouble(trouble.kind)
        if trouble.kind == "overflow":
            self.stats.overflows += 1
            self._changed.burst.overflowed(trouble.at)  # its rescan waits for the burst to go quiet
            affected = list(self._roots)
            if self._rescans.none_requested(affected):
                # Once per rescan: a burst overflows the queue many times before the rescan runs.
                log.warning(
                    "inotify queue overflowed (fs.inotify.max_queued_events was %s when watching began):"
                    " events were lost; rescanning %s",
                    self._watcher.queue_limit,
                    ", ".join(affected),
                )
        else:
            self.stats.watch_limit_hits += 1
            root = None if trouble.path is None else self._paths.root_containing(trouble.path)
            affected = [root] if root is not None else list(self._roots)
            why = f"inotify watch limit reached at {trouble.path}"
            why += f" (fs.inotify.max_user_watches={sysctl('fs/inotify/max_user_watches')})"
            for each in affected:
                self._rescans.degrade(each, why)
        for root in affected:
            self._rescans.request(root, trouble.at)

    # ------------------------------------------------------------ following

    def _follow_once(self) -> None:
        """Handle what arrived (waiting briefly for something), then due reads and rescans."""
        try:
            item: InboxItem | None = self._inbox.get(timeout=self._wait_seconds())
        except queue.Empty:
            item = None
        handled = 0
        while item is not None:
            self._handle(item)
            handled += 1
            if handled >= (_HANDLED_PER_BURST_ROUND if self._changed.burst.active else _HANDLED_PER_ROUND):
                break
            try:
                item = self._inbox.get_nowait()
            except queue.Empty:
                item = None
        self._changed.update(self._inbox.qsize(), self._clock())
        # Rescans first: a rescan of a root reads every path below it, so what waits there need not be read.
        self._rescan_where_needed()
        self._read_due_attributes()
        for access in self._opens.take():
            self._publisher.emit(access)
        if self._inbox.empty():
            self._publisher.confirm()

    def _wait_seconds(self) -> float:
        now = self._clock()
        wait = self._changed.wait_seconds(now, 0.25)  # 0.25: how quickly ``stop`` is noticed
        return max(0.0, wait if self._changed.burst.active else self._rescans.wait_seconds(now, wait))

    def _handle(self, item: InboxItem) -> None:
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
            watched = path in self._paths.ancestors or self._paths.root_of(path) is not None
            if watched:
                self._changed.note(path, self._clock())
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
        marker = self._publisher.marker_file
        if marker is None or os.path.basename(path) != marker:
            return
        folder = os.path.dirname(path)
        if self._paths.root_of(folder) is not None:
            self._publisher.observe_label(folder)

    def _on_created(self, path: str) -> None:
        root = self._paths.root_of(path)
        if root is None:
            return
        self._changed.discard(path)
        if path == root and os.path.isdir(root):
            log.info("root %s appeared; watching it", root)
            self._watch_root(root)  # before the walk, so nothing made meanwhile is missed
        if os.path.isdir(path):
            self._opens.created(path)
        self._walker.walk_tree(path, self._walker.settler(LIVE_KINDS, Tally()), Tally())

    def _on_deleted(self, path: str) -> None:
        root = self._paths.root_of(path)
        if root is None:
            return
        self._changed.discard(path)
        # Walking rather than deleting outright: if something is at the path
        # again by now, its current state is what must be published.
        self._walker.walk_tree(path, self._walker.settler(LIVE_KINDS, Tally()), Tally())
        if path == root and not os.path.lexists(root):
            log.warning("root %s was deleted or moved away; watching its parent for it to return", root)
            self._unwatch_root(root)

    def _on_moved(self, old_top: str, new_top: str) -> None:
        old_root, new_root = self._paths.root_of(old_top), self._paths.root_of(new_top)
        if new_root is None:
            self._on_deleted(old_top)
            return
        if old_root is None:
            self._on_created(new_top)
            return
        self._changed.discard(old_top, new_top)
        moved_records = {record.path: record for record in self._store.subtree(old_top)}
        settle = self._walker.settler(LIVE_KINDS, Tally())
        publisher = self._publisher

        def visit(path: str, state: PathState, previous: PublishedRecord | None) -> None:
            old_path = old_top + path[len(new_top) :]
            record = moved_records.pop(old_path, None)
            if record is None:
                settle(path, state, previous)
                return
            self._store.delete(old_path)  # committed with the event below, never apart from it
            publisher.publish(path, state, FsKind.MOVED, observed_at=None, old_path=old_path)
            if record.is_dir:
                publisher.forget_label(old_path)
            if state.is_dir:
                publisher.observe_label(path)

        self._walker.walk_tree(new_top, visit, Tally())
        # Published below the old path but not found below the new one: gone meanwhile.
        for record in sorted(moved_records.values(), key=lambda r: r.path, reverse=True):
            self._store.delete(record.path)
            publisher.publish_deleted(record)

    def _read_due_attributes(self) -> None:
        now = self._clock()
        backlog = self._changed.take_backlog(now, self._inbox.qsize())
        if backlog is not None:  # a burst's changes, read together; one made meanwhile comes as an event, read after
            reads = plan_reads(backlog, lambda directory: self._paths.root_of(directory) is not None)
            forced = self._changed.burst.must_finish(len(backlog), now)  # else stopped if the burst goes on
            go_on = lambda: forced or self._inbox.qsize() < self._changed.burst.threshold  # noqa: E731
            unread = self._walker.reconcile_backlog(backlog, reads, self._actors.actor_of, go_on)
            self._publisher.confirm()
            self._changed.read_done(backlog, unread, self._inbox.qsize(), self._clock())
        for path, noticed in self._changed.take_due(now):
            # The change happened when inotify told us, not when the coalescing window ended.
            actor = self._actors.actor_of(path)
            self._walker.reconcile_path(path, LIVE_KINDS, Tally(), observed_at=noticed, actor=actor)

    def _rescan_where_needed(self) -> None:
        now = self._clock()
        for root in self._roots:
            if self._rescans.periodic_due(root, now):
                self._retry_degraded_watch(root)
            reason = self._rescans.take(root, hold_overflow=self._changed.burst.holding(len(self._changed), now))
            if reason == "spool_overflow":
                self._publisher.confirm()  # settle the batch a drop may have hit before comparing with the store
            if reason is not None:
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
        if self._root_watches[root] is not None and not failed_again:
            log.info("root %s is fully watched again", root)
            self._rescans.restored(root)
