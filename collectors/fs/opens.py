"""Who opened what in labelled folders: access records from fanotify ``FAN_OPEN``, chosen by ``[[fs]] opens``.

Only labelled folders are watched: each directory at or below one gets an
inode mark for opens of itself and its entries (a filesystem-wide mark would
cost every open on the disk). The marks are notification marks unless the
operator wants every reader named (``opens = "fanotify_permission"``): then
permission marks hold each open until its process is named, and the
collector's own opens (it walks these folders) are answered at once, so it
never waits on itself (:mod:`collectors.fanotify_permission`). Its own opens
are dropped. A thread reads the events as they come (a process can be asked who
it is only while it lives) and queues one :class:`permwatch.events.FsAccessEvent`
per (process, path) a minute; the collector's loop publishes them on the ``access``
topic (:meth:`OpenSource.take`). Nothing of a file's contents is ever read.
Adding a source is one class and one line in :data:`OPEN_SOURCES`.
"""

from __future__ import annotations

import contextlib
import logging
import os
import queue
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Sequence
from typing import Generic, Protocol, TypeVar

from collectors.acl import NameCache
from collectors.fanotify import (
    FAN_EVENT_ON_CHILD,
    FAN_ONDIR,
    FAN_OPEN,
    FAN_OPEN_PERM,
    FanEvent,
    Fanotify,
    FanotifyUnavailable,
    Listener,
)
from collectors.fanotify_permission import RESPONSE_TIMEOUT, PermissionGroup
from collectors.fs.actors import actor_from
from collectors.fs.settings import FsCollectorConfig
from permwatch.events import FsAccessEvent, LabelAssigned

log = logging.getLogger(__name__)

K = TypeVar("K")
OPEN_MASK = FAN_OPEN | FAN_EVENT_ON_CHILD | FAN_ONDIR
OPEN_PERM_MASK = FAN_OPEN_PERM | FAN_EVENT_ON_CHILD | FAN_ONDIR
OWN_OPEN_MASK = FAN_OPEN | FAN_ONDIR
"""with ``mark_files``: on each directory and file itself, no events on children (see :class:`FanotifyOpens`)"""
SETTLE_SECONDS = 0.02
"""Pause after reading a busy batch of opens, for the kernel to merge a busy reader's repeats."""
BUSY_BATCH = 8
"""Events in one read that mark a busy reader (sequential one-off readers give one or two)."""
MAX_SEEN = 65_536
REPEAT_SECONDS = 60.0
"""One process's repeated opens of a path within this long are one record; a long-lived process (an editor,
smbd) opening it again later, maybe in another exposure, is recorded again."""


class RecentlySeen(Generic[K]):
    """Keys noted within the last ``seconds`` (at most ``limit`` of them, the oldest forgotten first)."""

    def __init__(self, seconds: float, limit: int, clock: Callable[[], float] = time.monotonic) -> None:
        self._seconds, self._limit, self._clock = seconds, limit, clock
        self._when: OrderedDict[K, float] = OrderedDict()

    def __contains__(self, key: K) -> bool:
        noted = self._when.get(key)
        return noted is not None and self._clock() - noted < self._seconds

    def note(self, key: K) -> None:
        self._when.pop(key, None)
        self._when[key] = self._clock()
        if len(self._when) > self._limit:
            self._when.popitem(last=False)


class _Marks(Protocol):
    def mark(self, path: str, mask: int, *, remove: bool = False) -> None: ...


class OpenSource(Protocol):
    """Watches labelled folders for opens; :meth:`take` hands over the access events read so far."""

    def watch(self, folder: str) -> None: ...

    def unwatch(self, folder: str) -> None: ...

    def created(self, directory: str) -> None: ...

    def take(self) -> list[FsAccessEvent]: ...

    def close(self) -> None: ...


class FanotifyOpens:
    """Access records of labelled folders from fanotify; see the module docstring.

    ``permission=True`` (``[[fs]] opens = "fanotify_permission"``) uses permission marks instead
    (:mod:`collectors.fanotify_permission`): each open waits until its process is named, so even a reader that
    exits at once is named, at a round trip per open; every open is allowed, after at most ``response_timeout``.
    """

    def __init__(
        self,
        names: NameCache,
        *,
        source: str,
        settle_seconds: float = SETTLE_SECONDS,
        permission: bool = False,
        response_timeout: float = RESPONSE_TIMEOUT,
        mark_files: bool = False,
    ) -> None:
        """``mark_files`` (notification mode; bench/opens.py only): mark every file's own inode and every
        directory's, without ``FAN_EVENT_ON_CHILD``. The kernel's work per open is then less than a directory's
        watch on its children costs (0.6-0.8 against 1.0-1.1 µs, bench/README.md), but a file made or moved in
        later is watched only once :meth:`created` is told of it, and the collector's loop tells of directories
        only: until that is closed (a file opened in the moment between its creation and its mark is missed),
        this is a measured design, not a setting."""
        self._settle_seconds = settle_seconds
        self._names = names
        self._source = source
        self._folders: set[str] = set()
        self._marked: set[str] = set()
        self._seen: RecentlySeen[tuple[int, str]] = RecentlySeen(REPEAT_SECONDS, MAX_SEEN)
        self._out: queue.SimpleQueue[FsAccessEvent] = queue.SimpleQueue()
        self._listener = Listener("fs-opens")
        self._permission, self._response_timeout = permission, response_timeout
        self._group: PermissionGroup | None = None
        # A permission group's reader must never wait for a lock a marking thread holds while it opens a marked
        # folder (it would wait on itself): it gets a lock of its own, which that reader never takes.
        self._lock = threading.Lock() if permission else self._listener.lock
        self._mask = OPEN_PERM_MASK if permission else OWN_OPEN_MASK if mark_files else OPEN_MASK
        self._mark_files = mark_files and not permission
        self._repeats = 0
        """events of the batch being read that repeat an open recorded within the minute"""
        self._failed = False

    @property
    def permission_group(self) -> PermissionGroup | None:
        """The permission group when ``permission`` is on and started (its counters: answered, failsafe)."""
        return self._group

    def _marks(self) -> _Marks | None:
        return self._group if self._permission else self._listener.fan

    def _started(self) -> _Marks | None:
        if self._marks() is None and not self._failed:
            try:
                if self._permission:
                    self._group = PermissionGroup(
                        self._record, response_timeout=self._response_timeout, skip=self._already_recorded
                    )
                else:
                    fan = Fanotify(dir_names=False)  # an open's own file handle names it, at less cost
                    self._listener.start(fan, self._read)
            except FanotifyUnavailable as exc:
                self._failed = True
                log.warning("opens: fanotify unavailable (%s); opens in labelled folders are not recorded", exc)
                return None
        return self._marks()

    def watch(self, folder: str) -> None:
        """Record opens in ``folder`` and everything below it."""
        with self._lock:
            marks = self._started()
            if marks is None:
                return
            self._folders.add(folder)
            self._mark_tree(marks, folder)

    def created(self, directory: str) -> None:
        """A directory appeared: mark it (and what it holds) if it lies in a watched folder (with ``mark_files``,
        a file too)."""
        with self._lock:
            marks = self._marks()
            if marks is None or self._folder_of(directory) is None:
                return
            if self._mark_files and not os.path.isdir(directory):
                self._mark_each(marks, [directory], directory)
                return
            self._mark_tree(marks, directory)

    def _mark_tree(self, marks: _Marks, top: str) -> None:
        """Mark every directory at or below ``top`` (os.walk follows no symlink; with ``mark_files`` every regular
        file too); one warning for what failed."""
        found: list[str] = []
        for directory, _subdirs, files in os.walk(top):
            found.append(directory)
            if self._mark_files:
                found += [p for p in (os.path.join(directory, f) for f in files) if not os.path.islink(p)]
        self._mark_each(marks, found, top)

    def _mark_each(self, marks: _Marks, paths: list[str], top: str) -> None:
        failed: list[tuple[str, FanotifyUnavailable]] = []
        for path in paths:
            if path in self._marked:
                continue
            try:
                marks.mark(path, self._mask)
            except FanotifyUnavailable as exc:  # gone meanwhile, or the marks limit (fs.fanotify.max_user_marks)
                failed.append((path, exc))
                continue
            self._marked.add(path)
        if failed:
            first, error = failed[0]
            log.warning("opens: cannot watch %d folder(s) below %s, e.g. %s (%s)", len(failed), top, first, error)

    def unwatch(self, folder: str) -> None:
        """Stop recording opens in ``folder`` (its label was removed)."""
        with self._lock:
            self._folders.discard(folder)
            prefix = folder.rstrip("/") + "/"
            for directory in [d for d in self._marked if d == folder or d.startswith(prefix)]:
                if self._folder_of(directory) is not None:
                    continue  # a nested labelled folder still wants it
                self._marked.discard(directory)
                marks = self._marks()
                if marks is not None:
                    with contextlib.suppress(FanotifyUnavailable):  # gone already: its mark went with it
                        marks.mark(directory, self._mask, remove=True)

    def _folder_of(self, path: str) -> str | None:
        while True:
            if path in self._folders:
                return path
            if path == "/" or not path:
                return None
            path = os.path.dirname(path)

    def _read(self, fan: Fanotify) -> float:
        fan.events_read = 0
        self._repeats = 0
        for event in fan.read(self._already_recorded):
            self._record(event)
        # Opens are read as they come: a process can be asked who it is only while it lives (one-off
        # readers like cat live a millisecond or two). But when a batch shows a busy reader (many events, or
        # any repeat of an open already recorded), a pause, so the kernel merges its repeated opens of one file
        # into one queued event rather than this thread waking for each: once merging works a busy reader's
        # batches hold one or two events, so their size alone stops telling (bench/opens.py: the watcher's CPU
        # per open 4.2 µs with the size test alone, 0.3 µs with repeats too).
        busy = fan.events_read >= BUSY_BATCH or self._repeats > 0
        return self._settle_seconds if busy else 0.0

    def _already_recorded(self, pid: int, path: str | None) -> bool:
        if (pid, path or "") in self._seen:
            self._repeats += 1
            return True
        return False

    def _record(self, event: FanEvent) -> None:
        if event.path is None or not event.is_open:
            return
        folder = self._folder_of(event.path)
        if folder is None:
            return
        seen = (event.process.pid, event.path)
        if seen in self._seen:
            return
        self._seen.note(seen)
        actor = actor_from(event.process, self._names)
        self._out.put(FsAccessEvent(path=event.path, folder=folder, actor=actor, source=self._source))

    def take(self) -> list[FsAccessEvent]:
        out = []
        while True:
            try:
                out.append(self._out.get_nowait())
            except queue.Empty:
                return out

    def close(self) -> None:
        self._listener.close()
        if self._group is not None:
            self._group.close()


class NoOpens:
    """No open source: opens are not recorded (the default)."""

    def watch(self, folder: str) -> None:
        return None

    def unwatch(self, folder: str) -> None:
        return None

    def created(self, directory: str) -> None:
        return None

    def take(self) -> list[FsAccessEvent]:
        return []

    def close(self) -> None:
        return None


class AllOf:
    """Several open sources at once (``"fanotify,smb_audit"``: local opens and SMB opens)."""

    def __init__(self, sources: Sequence[OpenSource]) -> None:
        self.sources = tuple(sources)

    def watch(self, folder: str) -> None:
        for source in self.sources:
            source.watch(folder)

    def unwatch(self, folder: str) -> None:
        for source in self.sources:
            source.unwatch(folder)

    def created(self, directory: str) -> None:
        for source in self.sources:
            source.created(directory)

    def take(self) -> list[FsAccessEvent]:
        return [event for source in self.sources for event in source.take()]

    def close(self) -> None:
        for source in self.sources:
            source.close()


def _smb_audit(config: FsCollectorConfig, names: NameCache, source: str) -> OpenSource:
    from collectors.fs.smb_audit import SmbAuditOpens

    if config.smb_audit_log is None:
        raise UnknownOpenSourceError("[[fs]] opens names smb_audit, but [[fs]] smb_audit_log is not set")
    return SmbAuditOpens(config.smb_audit_log, source=source)


OPEN_SOURCES: dict[str, Callable[[FsCollectorConfig, NameCache, str], OpenSource]] = {
    "none": lambda config, names, source: NoOpens(),
    "fanotify": lambda config, names, source: FanotifyOpens(names, source=source),
    "fanotify_permission": lambda config, names, source: FanotifyOpens(
        names, source=source, permission=True, response_timeout=config.opens_response_timeout_seconds
    ),
    "smb_audit": _smb_audit,
}
"""``[[fs]] opens`` names one, or several joined by commas, all of which record."""


def label_follower(opens: OpenSource) -> Callable[[LabelAssigned], None]:
    """What the publisher tells of every label it publishes, so ``opens`` watches the labelled folders (opens are
    recorded there only, and only while the collector follows changes)."""

    def follow(assigned: LabelAssigned) -> None:
        if assigned.label is None:
            opens.unwatch(assigned.path)
        else:
            opens.watch(assigned.path)

    return follow


class UnknownOpenSourceError(ValueError):
    """``[[fs]] opens`` names no source in :data:`OPEN_SOURCES`."""


def open_source_named(config: FsCollectorConfig, names: NameCache) -> OpenSource:
    """The source ``[[fs]] opens`` selects (several, comma-separated, all record)."""
    sources = []
    for name in (part.strip() for part in config.opens.split(",") if part.strip()):
        make = OPEN_SOURCES.get(name)
        if make is None:
            known = ", ".join(sorted(OPEN_SOURCES))
            raise UnknownOpenSourceError(
                f"[[fs]] opens = {config.opens!r} names no open source {name!r} (known: {known})"
            )
        sources.append(make(config, names, config.collector_id))
    return sources[0] if len(sources) == 1 else AllOf(sources)
