"""The filesystem collector's watch adapter: inotify through watchdog, reporting what watchdog hides.

Every reliance on watchdog's private internals lives here and nowhere else:
the inotify reader's ``handle_event``, ``_add_callback`` and
``_get_or_create_watch``, the emitter's ``_inotify`` watch group with its
``_lock`` and ``_add_all_callbacks``. :data:`WATCHDOG_INTERNALS` lists them,
and tests/unit/test_fs_watch.py fails loudly when a watchdog upgrade removes
one. :class:`PermissionWatcher` watches the roots (recursively) and their
ancestors (not), hands every watchdog event to the collector's loop, and
reports inotify trouble (a queue overflow, a watch the limit refused) the
loop acts on by rescanning.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from watchdog.events import FileSystemEvent, FileSystemEventHandler
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

log = logging.getLogger(__name__)

TroubleKind = Literal["overflow", "watch_limit"]
TroubleReport = Callable[[TroubleKind, "str | None"], None]

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

WATCHDOG_INTERNALS: tuple[tuple[str, str], ...] = (
    ("InotifyFD", "handle_event"),
    ("InotifyFD", "add_callback"),
    ("InotifyFD", "_add_callback"),
    ("InotifyFD", "_get_or_create_watch"),
    ("Watch", "callbacks"),
    ("Watch", "wd"),
    ("InotifyEmitter", "_inotify"),
    ("InotifyEmitter", "get_event_mask_from_filter"),
    ("InotifyWatchGroup", "path"),
    ("InotifyWatchGroup", "_lock"),
    ("InotifyWatchGroup", "_add_all_callbacks"),
)
"""(watchdog class, attribute) this module relies on beyond watchdog's public API (watchdog 7.1)."""


@dataclass(frozen=True, slots=True)
class WatchTrouble:
    """inotify lost events (``overflow``) or could not add a watch (``watch_limit``)."""

    kind: TroubleKind
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
    may be missing (:meth:`PermissionWatcher.rewatch`) and then rescans. A
    failed watch (ENOSPC included) below a watched root, which watchdog
    ignores, is reported too.
    """

    def __init__(self, report: TroubleReport) -> None:
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

    def __init__(self, report: TroubleReport) -> None:
        self._inotify_fd = _TroubleReportingInotifyFD(report)
        self._inotify_fd.start()
        super().__init__(_PermissionEmitter, inotify_fd=self._inotify_fd)

    def on_thread_stop(self) -> None:
        super().on_thread_stop()
        self._inotify_fd.stop()
        self._inotify_fd.join()

    def rewatch(self, root: str) -> bool:
        """Watch the directories below ``root`` that have no watch (created while events were lost),
        leaving the existing watches alone: adding a watch that exists queues no event. Whether
        ``root``'s watch group was found."""
        wanted = os.fsencode(root)
        found = False
        for emitter in list(self.emitters):
            group = getattr(emitter, "_inotify", None)  # watchdog's InotifyWatchGroup for that root
            if group is not None and group.path == wanted:
                with group._lock:
                    group._add_all_callbacks(group.path)
                found = True
        return found


class _DeliveringHandler(FileSystemEventHandler):
    """Hands every watchdog event over as it comes (to the collector's inbox); the loop does the work."""

    def __init__(self, deliver: Callable[[FileSystemEvent], None]) -> None:
        self._deliver = deliver

    def dispatch(self, event: FileSystemEvent) -> None:
        self._deliver(event)


class PermissionWatcher:
    """The collector's inotify watches: started, stopped, and each root's tree watched, dropped or topped up.

    ``deliver`` and ``report`` are called on watchdog's threads; both should
    only queue what they get.
    """

    def __init__(self, deliver: Callable[[FileSystemEvent], None], report: TroubleReport) -> None:
        self._handler = _DeliveringHandler(deliver)
        self._report = report
        self._observer: _PermissionObserver | None = None
        self.queue_limit = "unknown"
        """``fs.inotify.max_queued_events`` when watching began (the kernel reads it once, then)."""

    @property
    def active(self) -> bool:
        return self._observer is not None

    def start(self) -> None:
        self.queue_limit = sysctl("fs/inotify/max_queued_events")
        self._observer = _PermissionObserver(self._report)
        self._observer.start()

    def stop(self) -> None:
        if self._observer is not None:
            self._observer.stop()
            self._observer.join()
            self._observer = None

    def watch_directory(self, path: str) -> None:
        """Watch ``path`` itself, not below it; ``OSError`` (``FileNotFoundError`` included) when it cannot."""
        assert self._observer is not None
        self._observer.schedule(self._handler, path, recursive=False)

    def watch_tree(self, root: str) -> ObservedWatch:
        """Watch ``root`` and everything below it; ``OSError`` when ``root`` itself cannot be watched."""
        assert self._observer is not None
        return self._observer.schedule(self._handler, root, recursive=True)

    def unwatch(self, watch: ObservedWatch) -> None:
        if self._observer is not None:
            with contextlib.suppress(KeyError):
                self._observer.unschedule(watch)

    def rewatch(self, root: str) -> bool:
        """Add the watches missing below ``root`` (see :meth:`_PermissionObserver.rewatch`)."""
        return self._observer is not None and self._observer.rewatch(root)


def sysctl(name: str) -> str:
    """A kernel setting from /proc/sys, as text (``"unknown"`` when it cannot be read)."""
    try:
        return Path("/proc/sys", name).read_text(encoding="ascii").strip()
    except OSError:
        return "unknown"
