"""fanotify permission events (``FAN_OPEN_PERM``): every reader named, none ever refused.

A notification group hears of an open after the fact, and a one-off reader (``cat`` lives a millisecond or two)
may have exited before it is asked who it is: issue 18 measured 175 of 200 short-lived readers named that way. A
permission group (``FAN_CLASS_CONTENT``) makes the kernel hold each open until the listener answers, so the
reader is alive while ``/proc/<pid>/status`` is read and every reader is named, at the cost of one round trip to
this process per open (bench/opens.py).

permwatch observes and never denies: every event is answered ``FAN_ALLOW``, also when naming the process fails.
Three things keep a reader from waiting on us for long:

- Our own opens (walking a folder to mark it) are answered at once, and the thread that answers takes no lock
  another thread of ours may hold while it opens a marked folder: a listener that waits on itself deadlocks.
- A watchdog answers ``FAN_ALLOW`` for every event read but not answered within ``response_timeout`` seconds,
  and when events wait unread that long it reads and allows them itself (they are counted, not recorded).
- Closing the group makes the kernel allow every event still pending (``fanotify_release``).

Permission events come in fd mode (the kernel refuses ``FAN_REPORT_FID`` for a permission class): each carries
an fd on the opened file, which names its path (``/proc/self/fd``) and is closed once the event is answered. The
pidfd (``FAN_REPORT_PIDFD``) still confirms the process, as in :func:`collectors.fanotify.identify`. Needs
``CAP_SYS_ADMIN``.
"""

from __future__ import annotations

import errno
import itertools
import logging
import os
import select
import struct
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

from collectors.fanotify import (
    _INFO_HEADER,
    _METADATA,
    FAN_CLOEXEC,
    FAN_MARK_ADD,
    FAN_MARK_INODE,
    FAN_MARK_REMOVE,
    FAN_NONBLOCK,
    FAN_Q_OVERFLOW,
    FAN_REPORT_PIDFD,
    INFO_PIDFD,
    FanEvent,
    Process,
    _check,
    _libc,
    identify,
)

log = logging.getLogger(__name__)

FAN_CLASS_CONTENT = 0x4
FAN_ALLOW = 0x01
_RESPONSE = struct.Struct("=iI")  # struct fanotify_response: fd, response
_BUFFER = 64 * 1024
RESPONSE_TIMEOUT = 2.0
"""Seconds an open may wait for our answer before the watchdog allows it unnamed."""


@dataclass(slots=True)
class _Held:
    """One open the kernel holds for our answer."""

    fd: int
    """the event's fd on the opened file: what the answer names"""
    read_at: float


@dataclass(frozen=True, slots=True)
class _Read:
    token: int
    mask: int
    pid: int
    pidfd: int | None
    path: str | None


class PermissionGroup:
    """A fanotify permission group: ``on_open`` is told of every open by another process, after it was allowed."""

    def __init__(
        self,
        on_open: Callable[[FanEvent], None],
        *,
        response_timeout: float = RESPONSE_TIMEOUT,
        name: str = "fs-opens-permission",
        who: Callable[[int, int | None], Process] = identify,
        skip: Callable[[int, str | None], bool] | None = None,
    ) -> None:
        """``who(pid, pidfd)`` names a held process (:func:`collectors.fanotify.identify`; a test may slow it);
        an open ``skip(pid, path)`` is true for is allowed at once, unnamed and untold (a repeat already told)."""
        flags = FAN_CLASS_CONTENT | FAN_CLOEXEC | FAN_NONBLOCK | FAN_REPORT_PIDFD
        self.fd = _check(_libc.fanotify_init(flags, os.O_RDONLY | os.O_LARGEFILE), "fanotify_init")
        self._on_open, self._who, self._skip, self._timeout = on_open, who, skip, response_timeout
        self._own_pid = os.getpid()
        self._held: dict[int, _Held] = {}
        """token → an open read and not yet answered"""
        self._held_lock = threading.Lock()
        """held only to answer or note an open (never while opening a file or asking /proc)"""
        self._read_lock = threading.Lock()
        """held while reading the queue, by the reader or by the watchdog when the reader is stuck"""
        self._tokens = itertools.count()
        self._progress = time.monotonic()
        self._stop = threading.Event()
        self.answered = 0
        self.failsafe_allowed = 0
        """opens the watchdog allowed for a stuck reader (read late or never by it): not recorded"""
        self.overflows = 0
        self._threads = [
            threading.Thread(target=self._follow, name=name, daemon=True),
            threading.Thread(target=self._watchdog, name=f"{name}-watchdog", daemon=True),
        ]
        for thread in self._threads:
            thread.start()

    def mark(self, path: str, mask: int, *, remove: bool = False) -> None:
        """Add (or remove) ``mask`` on ``path``'s inode."""
        flags = (FAN_MARK_REMOVE if remove else FAN_MARK_ADD) | FAN_MARK_INODE
        _check(_libc.fanotify_mark(self.fd, flags, mask, -100, os.fsencode(path)), f"fanotify_mark {path}")

    def _follow(self) -> None:
        while not self._stop.is_set():
            try:
                ready, _, _ = select.select([self.fd], [], [], 0.25)
            except (OSError, ValueError):
                return  # closed under us
            if not ready:
                self._progress = time.monotonic()
                continue
            with self._read_lock:
                batch = self._take()
            for event in batch:
                self._handle(event)
            self._progress = time.monotonic()

    def _take(self) -> list[_Read]:
        """Every event queued now, each noted as held; our own are answered at once (see the docstring)."""
        out: list[_Read] = []
        while True:
            try:
                data = os.read(self.fd, _BUFFER)
            except BlockingIOError:
                return out
            except OSError as exc:
                if exc.errno == errno.EINTR:
                    continue
                if exc.errno == errno.EBADF:
                    return out
                raise
            if not data:
                return out
            out += self._parse(data)

    def _parse(self, data: bytes) -> list[_Read]:
        out: list[_Read] = []
        offset = 0
        now = time.monotonic()
        while offset + _METADATA.size <= len(data):
            event_len, _vers, _res, metadata_len, mask, fd, pid = _METADATA.unpack_from(data, offset)
            if event_len < _METADATA.size:
                break
            pidfd: int | None = None
            cursor, end = offset + metadata_len, offset + event_len
            while cursor + _INFO_HEADER.size <= end:
                info_type, _pad, info_len = _INFO_HEADER.unpack_from(data, cursor)
                if info_len == 0:
                    break
                if info_type == INFO_PIDFD:
                    (pidfd,) = struct.unpack_from("=i", data, cursor + _INFO_HEADER.size)
                cursor += info_len
            offset += event_len
            if mask & FAN_Q_OVERFLOW or fd < 0:
                self.overflows += bool(mask & FAN_Q_OVERFLOW)
                continue
            token = next(self._tokens)
            with self._held_lock:
                self._held[token] = _Held(fd, now)
            path = None if pid == self._own_pid else _path_of(fd)
            if pid == self._own_pid or (self._skip is not None and self._skip(pid, path)):
                self._answer(token)  # our own open, or a repeat: at once, and nothing asked
                if pidfd is not None and pidfd >= 0:
                    os.close(pidfd)
                continue
            out.append(_Read(token, mask, pid, pidfd, path))
        return out

    def _handle(self, event: _Read) -> None:
        """Name the process while the kernel holds it, allow the open, then tell ``on_open``."""
        try:
            process = self._who(event.pid, event.pidfd)
        finally:
            self._answer(event.token)
            if event.pidfd is not None and event.pidfd >= 0:
                os.close(event.pidfd)
        self._on_open(FanEvent(event.mask, event.path, process))

    def _answer(self, token: int) -> bool:
        """Allow a held open (once: False when the watchdog or a close already did)."""
        with self._held_lock:
            held = self._held.pop(token, None)
            if held is None:
                return False
            try:
                if self.fd >= 0:
                    os.write(self.fd, _RESPONSE.pack(held.fd, FAN_ALLOW))
            except OSError as exc:  # ENOENT: the kernel no longer holds it (the reader was killed)
                log.debug("opens: answering an open failed: %s", exc)
            finally:
                os.close(held.fd)
            self.answered += 1
            return True

    def _watchdog(self) -> None:
        period = max(0.01, self._timeout / 4)
        warned = False
        while not self._stop.wait(period):
            now = time.monotonic()
            with self._held_lock:
                overdue = [token for token, held in self._held.items() if now - held.read_at >= self._timeout]
            allowed = sum(self._answer(token) for token in overdue)
            if now - self._progress >= self._timeout and self._read_lock.acquire(blocking=False):
                try:  # the reader is stuck with events queued: read them and allow them unnamed
                    batch = self._take()
                finally:
                    self._read_lock.release()
                allowed += sum(self._answer(event.token) for event in batch)
                for event in batch:
                    if event.pidfd is not None and event.pidfd >= 0:
                        os.close(event.pidfd)
            if allowed:
                self.failsafe_allowed += allowed
                if not warned:
                    log.warning(
                        "opens: %d open(s) waited over %.1f s for the watcher; allowed without naming who",
                        allowed,
                        self._timeout,
                    )
                    warned = True

    def close(self) -> None:
        """Stop; every open still held is allowed (by us, then by the kernel as the group closes)."""
        self._stop.set()
        for thread in self._threads:
            thread.join(timeout=1.0)  # a healthy one ends within a select period; a stuck one must not hold us
        with self._held_lock:
            tokens = list(self._held)
        for token in tokens:
            self._answer(token)
        with self._held_lock:
            if self.fd >= 0:
                os.close(self.fd)
                self.fd = -1


def _path_of(fd: int) -> str | None:
    try:
        where = os.readlink(f"/proc/self/fd/{fd}")
    except OSError:
        return None
    if where.endswith(" (deleted)") or not where.startswith("/"):
        return None
    return where
