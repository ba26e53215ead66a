"""The filesystem collector's walk: reconcile a path or a whole tree with what was published.

Each path is read with the ACL reader passed in, compared with the store's
fingerprint of what was last published, and published through the
:class:`collectors.fs.publish.Publisher` when it differs; what vanished below a
listed directory is published as deleted. A first scan of a large tree may
spread the reading over worker processes (:mod:`collectors.fs.parallel`),
which read with the same reader. Every read is of the path's current state,
so late or duplicated watch events cannot publish a stale one.
"""

from __future__ import annotations

import enum
import logging
import os
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Literal

from prometheus_client import Gauge

from collectors.acl import MalformedAclError
from collectors.fs.coalesce import Read
from collectors.fs.metrics import FsCollectorMetrics, FsCollectorStats
from collectors.fs.parallel import Finding, WorkerFailed, walk_units
from collectors.fs.publish import Publisher
from collectors.fs.read import PathExcluder, PathState, publishable
from collectors.fs.readers import AclReader
from collectors.fs.state import PublishedRecord, PublishedStateStore
from permwatch.events import Actor, FsKind, ObjectType

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Kinds:
    """The kind to publish for a path not published before, and for one whose state changed."""

    new: FsKind
    changed: FsKind


SCAN_KINDS = Kinds(new=FsKind.BASELINE, changed=FsKind.BASELINE)
LIVE_KINDS = Kinds(new=FsKind.CREATED, changed=FsKind.CHANGED)


@dataclass(slots=True)
class Tally:
    """Paths a scan saw and published."""

    seen: int = 0
    changed: int = 0
    progress: Gauge | None = None
    """A scan's paths-seen gauge, kept current once per directory listed."""

    def report(self) -> None:
        if self.progress is not None:
            self.progress.set(self.seen)


Visit = Callable[[str, PathState, PublishedRecord | None], None]
"""Called for each path read in a walk with its state and what was published for it (``None``: nothing)."""


class ScanInterrupted(Exception):
    """``stop`` was set while a walk was under way."""


class _Unreadable(enum.Enum):
    """Marks a path whose state could not be read (and was logged)."""

    TOKEN = enum.auto()


_UNREADABLE = _Unreadable.TOKEN


@dataclass(frozen=True, slots=True)
class SpreadSettings:
    """How a first scan is spread over worker processes (``workers = 0``: it is not)."""

    workers: int
    excludes: tuple[str, ...]
    source: str
    acl_reader: str
    acl_reader_options: tuple[tuple[str, str], ...] = ()


class TreeWalker:
    """Reads paths with ``reader`` and publishes what differs from ``store`` through ``publisher``."""

    def __init__(
        self,
        store: PublishedStateStore,
        publisher: Publisher,
        reader: AclReader,
        *,
        excluder: PathExcluder,
        spread: SpreadSettings,
        stats: FsCollectorStats,
        metrics: FsCollectorMetrics,
    ) -> None:
        self._store = store
        self._publisher = publisher
        self._reader = reader
        self._excluder = excluder
        self._spread = spread
        self._stats = stats
        self._metrics = metrics
        self.stop: threading.Event | None = None
        """Checked between directories: once set, a walk raises :class:`ScanInterrupted`."""

    def settler(
        self,
        kinds: Kinds,
        tally: Tally,
        *,
        observed_at: datetime | None = None,
        actor: Actor | None = None,
        actor_of: Callable[[str], Actor | None] | None = None,
        observed_of: Mapping[str, datetime] | None = None,
    ) -> Visit:
        """A visit that publishes ``state`` when it differs from what was published, as observed at
        ``observed_at`` (``None``: when it is read), changed by ``actor`` when known, or by whom ``actor_of``
        says changed the path (a rescan after lost events: the actor source may still know). With
        ``observed_of``, a path it names was observed when it says (a coalesced burst: when inotify told)."""
        publisher = self._publisher

        def settle(path: str, state: PathState, previous: PublishedRecord | None) -> None:
            tally.seen += 1
            if previous is None:
                kind: FsKind | None = kinds.new
            elif previous.fingerprint != state.fingerprint:
                kind = kinds.changed
            else:
                kind = None
            if kind is not None:
                by = actor if actor_of is None else actor_of(path)
                at = observed_at if observed_of is None else observed_of.get(path, observed_at)
                publisher.publish(path, state, kind, observed_at=at, actor=by)
                tally.changed += 1
            if state.is_dir:
                publisher.observe_label(path)

        return settle

    def reconcile_path(
        self, path: str, kinds: Kinds, tally: Tally, *, observed_at: datetime | None = None, actor: Actor | None = None
    ) -> None:
        """Publish one path (not its subtree) if its state differs; a vanished path is left to its deletion."""
        state = self._read_state(path)
        if state is None or state is _UNREADABLE:
            return
        previous = self._store.get(path)
        self.settler(kinds, tally, observed_at=observed_at, actor=actor)(path, state, previous)
        if previous is not None and previous.is_dir and not state.is_dir:
            self.delete_subtree(path, tally, include_self=False)

    def reconcile_listing(self, directory: str, visit: Visit, tally: Tally) -> None:
        """Visit what ``directory`` holds now, not below it (one level of a rescan: its listing compared with
        what was published for its children in one query); publish what vanished from it."""
        self._visit_listing(directory, visit, tally, [], first_time=False)
        tally.report()

    def reconcile_backlog(
        self,
        backlog: Mapping[str, datetime],
        reads: Iterable[Read],
        actor_of: Callable[[str], Actor | None],
        go_on: Callable[[], bool],
    ) -> list[Read]:
        """Read a burst's changed paths (``backlog``: each with when its change was noticed) by ``reads``
        (:func:`collectors.fs.coalesce.plan_reads`) and publish what differs, while ``go_on`` says so before
        each read; the reads left when it said no."""
        started, tally = time.monotonic(), Tally()
        settle = self.settler(LIVE_KINDS, tally, actor_of=actor_of, observed_of=backlog)
        listed, todo = 0, list(reads)
        self._stats.coalesced_reads += 1
        for done, read in enumerate(todo):
            if self.stop is not None and self.stop.is_set():
                raise ScanInterrupted  # the next start's baseline reads what is left
            if not go_on():
                return todo[done:]
            if read.how == "listing":
                self.reconcile_listing(read.path, settle, tally)
                listed += 1
            else:
                path = read.path
                self.reconcile_path(path, LIVE_KINDS, tally, observed_at=backlog[path], actor=actor_of(path))
        log.info(
            "read a burst's %d changed paths together (%d listings, %d paths read): %d published in %.2fs",
            *(len(backlog), listed, tally.seen, tally.changed, time.monotonic() - started),
        )
        return []

    def walk_tree(self, top: str, visit: Visit, tally: Tally, *, spread: Kinds | None = None) -> None:
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
            self.delete_subtree(top, tally)
            return
        previous = self._store.get(top)
        # Nothing recorded below ``top`` (a first scan): no listing can have published children to
        # compare with, since a directory's children are recorded only once it has been listed.
        first_time = not self._store.has_below(top)
        visit(top, state, previous)
        if previous is not None and previous.is_dir and not state.is_dir:
            self.delete_subtree(top, tally, include_self=False)
        pending = [top] if state.is_dir else []
        # A first scan of a scan (``spread``: the kinds it publishes) may go to worker processes once the
        # top's listing shows enough folders to share; what they find is published here, in their order.
        workers = self._spread.workers
        spread_after_top = (
            spread is not None and first_time and workers > 0 and self._publisher.encoded_emit is not None
        )
        while pending:
            if self.stop is not None and self.stop.is_set():
                raise ScanInterrupted
            directory = pending.pop()
            self._visit_listing(directory, visit, tally, pending, first_time)
            tally.report()
            if spread_after_top and spread is not None:
                spread_after_top = False
                if len(pending) >= 2 * workers:
                    self._publish_spread(pending, spread, tally)
                    pending = []

    def _visit_listing(self, directory: str, visit: Visit, tally: Tally, pending: list[str], first_time: bool) -> None:
        """Visit what ``directory`` holds, adding its subdirectories to ``pending``; publish what vanished."""
        try:
            with os.scandir(directory) as listing:
                entries = [(entry.name, entry.path) for entry in listing]
        except (FileNotFoundError, NotADirectoryError):
            return  # gone since it was read; its own deletion event follows
        except OSError as exc:
            self._unreadable()
            log.warning("cannot list %s (%s): keeping what was published below it", directory, exc)
            return
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
                self.delete_subtree(path, tally, include_self=False)
            if child.is_dir:
                pending.append(path)
        for record in published.values():
            self.delete_subtree(record.path, tally)

    def _publish_spread(self, units: list[str], kinds: Kinds, tally: Tally) -> None:
        """Walk below ``units`` (already published themselves) in worker processes; publish what they find."""
        settings = self._spread
        found = walk_units(
            units,
            workers=settings.workers,
            excludes=settings.excludes,
            source=settings.source,
            kind=kinds.new,
            acl_reader=settings.acl_reader,
            acl_reader_options=dict(settings.acl_reader_options),
        )
        try:
            self._publish_found(found, tally)
        except WorkerFailed as exc:
            log.warning("scan workers failed, walking in the collector's thread instead: %s", str(exc).strip())
            for unit in units:  # what the workers found is recorded: these walks compare, they do not republish
                self.walk_tree(unit, self.settler(kinds, tally), tally)
        finally:
            found.close()

    def _publish_found(self, found: Iterator[list[Finding]], tally: Tally) -> None:
        for chunk in found:
            if self.stop is not None and self.stop.is_set():
                raise ScanInterrupted
            for path, object_type, fingerprint, value, error in chunk:
                if value is None:
                    self._unreadable()
                    log.warning("skipping %r: %s; keeping what was published", path, error)
                    continue
                tally.seen += 1
                tally.changed += 1
                self._publisher.publish_encoded(path, ObjectType(object_type), fingerprint, value)
                if error is not None:  # published as "ACL unreadable" (the worker warned)
                    self._metrics.acl_unreadable()
            tally.report()

    def _read_state(self, path: str) -> PathState | Literal[_Unreadable.TOKEN] | None:
        """The path's state, ``None`` when it does not exist, ``_UNREADABLE`` (logged) otherwise."""
        try:
            state = self._reader.read(path)
        except (OSError, MalformedAclError) as exc:
            self._unreadable()
            log.warning("cannot read permissions of %s (%s): keeping what was published", path, exc)
            return _UNREADABLE
        if state is not None and state.nt_acl is not None and state.nt_acl.source == "unreadable":
            self._metrics.acl_unreadable()  # published all the same, as "ACL unreadable" (the reader warned)
        return state

    def _unreadable(self) -> None:
        self._stats.unreadable_paths += 1
        self._metrics.unreadable()

    def delete_subtree(self, path: str, tally: Tally, *, include_self: bool = True) -> None:
        """Publish ``path`` (unless not ``include_self``) and everything published below it as deleted."""
        records = self._store.subtree(path, include_self=include_self)
        for record in reversed(records):  # children before their directory
            self._store.delete(record.path)  # one by one, so a batch commits exactly what it flushed
            self._publisher.publish_deleted(record)
        tally.changed += len(records)
