"""A small ctypes binding of Linux fanotify in FID mode with pidfds: who touched which path.

No maintained Python binding reports pidfds (pyfanotify 0.3.0 reads ``fd`` mode
only; butter's last release is from 2021), so this module calls
``fanotify_init``/``fanotify_mark`` itself. It opens a *notification* group
(``FAN_CLASS_NOTIF``): a permission class would make the kernel wait for our
answer, and a listener that opens a folder it marks would then wait on itself.
Events come with ``FAN_REPORT_DFID_NAME | FAN_REPORT_FID | FAN_REPORT_PIDFD``:
the directory's file handle and the entry's name (resolved to a path with
``open_by_handle_at``, which needs ``CAP_DAC_READ_SEARCH``), and a pidfd of
the process that caused the event. Initialising needs ``CAP_SYS_ADMIN``.

:func:`identify` turns an event's pid (and pidfd) into a :class:`Process`: the
uid read from ``/proc/<pid>/status``, with how sure that is: ``"pidfd"`` when
the pidfd shows the process was still the one behind the event after the read,
``"proc"`` (best effort) when only the pid was there to go on, and
``"unresolved"`` when the process had gone. Events our own process causes
(resolving a handle opens its directory) are dropped, or reading would loop.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import errno
import os
import select
import signal
import struct
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Literal

# fanotify_init flags (include/uapi/linux/fanotify.h)
FAN_CLOEXEC = 0x1
FAN_NONBLOCK = 0x2
FAN_CLASS_NOTIF = 0x0
FAN_UNLIMITED_QUEUE = 0x10
FAN_REPORT_PIDFD = 0x80
FAN_REPORT_FID = 0x200
FAN_REPORT_DIR_FID = 0x400
FAN_REPORT_NAME = 0x800
FAN_REPORT_DFID_NAME = FAN_REPORT_DIR_FID | FAN_REPORT_NAME

# fanotify_mark flags
FAN_MARK_ADD = 0x1
FAN_MARK_REMOVE = 0x2
FAN_MARK_INODE = 0x0
FAN_MARK_FILESYSTEM = 0x100

# event bits
FAN_ATTRIB = 0x4
FAN_OPEN = 0x20
FAN_OPEN_PERM = 0x10000
FAN_Q_OVERFLOW = 0x4000
FAN_EVENT_ON_CHILD = 0x08000000
FAN_ONDIR = 0x40000000

FAN_NOFD = -1
FAN_NOPIDFD = -1
FAN_EPIDFD = -2

INFO_FID, INFO_DFID_NAME, INFO_DFID, INFO_PIDFD = 1, 2, 3, 4

_METADATA = struct.Struct("=IBBHQii")  # event_len, vers, reserved, metadata_len, mask, fd, pid
_INFO_HEADER = struct.Struct("=BBH")
_FSID = struct.Struct("=ii")
_HANDLE_HEAD = struct.Struct("=Ii")  # handle_bytes, handle_type
_BUFFER = 64 * 1024

Confidence = Literal["pidfd", "proc", "unresolved"]

_libc = ctypes.CDLL(ctypes.util.find_library("c"), use_errno=True)
_libc.fanotify_init.argtypes = [ctypes.c_uint, ctypes.c_uint]
_libc.fanotify_init.restype = ctypes.c_int
_libc.fanotify_mark.argtypes = [ctypes.c_int, ctypes.c_uint, ctypes.c_uint64, ctypes.c_int, ctypes.c_char_p]
_libc.fanotify_mark.restype = ctypes.c_int
_libc.open_by_handle_at.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int]
_libc.open_by_handle_at.restype = ctypes.c_int


class FanotifyUnavailable(OSError):
    """fanotify cannot be used here (no CAP_SYS_ADMIN, an old kernel, a filesystem without file handles)."""


def _check(result: int, what: str) -> int:
    if result < 0:
        code = ctypes.get_errno()
        raise FanotifyUnavailable(code, f"{what}: {os.strerror(code)}")
    return result


@dataclass(frozen=True, slots=True)
class Process:
    """Who a process was: its uid (see :func:`read_status`; None when unknown), its name, and how sure that is."""

    pid: int
    uid: int | None
    name: str | None
    confidence: Confidence


@dataclass(frozen=True, slots=True)
class FanEvent:
    """One event: the mask, the path (directory + name; None when it could not be resolved), the process."""

    mask: int
    path: str | None
    process: Process

    @property
    def is_attrib(self) -> bool:
        return bool(self.mask & FAN_ATTRIB)

    @property
    def is_open(self) -> bool:
        return bool(self.mask & (FAN_OPEN | FAN_OPEN_PERM))


def read_status(pid: int) -> tuple[int, str] | None:
    """(uid, process name) from ``/proc/<pid>/status``, or None when the process is gone.

    The uid is the real one, which names the user behind a setuid program; when that is root but the
    filesystem uid is not (a server acting for a user: smbd switches only its effective and filesystem ids),
    the filesystem uid, the one the kernel checked the change against.
    """
    try:
        with open(f"/proc/{pid}/status", "rb") as status:
            text = status.read().decode(errors="replace")
    except (FileNotFoundError, ProcessLookupError):
        return None
    uid: int | None = None
    name = ""
    for line in text.splitlines():
        if line.startswith("Name:"):
            name = line.split(":", 1)[1].strip()
        elif line.startswith("Uid:"):
            ids = line.split()[1:]
            uid = int(ids[0]) if ids[0] != "0" or len(ids) < 4 else int(ids[3])
            break
    return None if uid is None else (uid, name)


def _alive(pidfd: int) -> bool:
    try:
        signal.pidfd_send_signal(pidfd, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # alive, and not ours to signal
        return True
    return True


def identify(pid: int, pidfd: int | None) -> Process:
    """The process behind an event; see the module docstring for the confidence levels.

    ``pidfd`` is the event's pidfd (None when the group reports none): when it is
    ``FAN_EPIDFD`` the process exited before the event was read, so its pid may
    already name another process and nothing is claimed.
    """
    if pidfd == FAN_EPIDFD:
        return Process(pid, None, None, "unresolved")
    found = read_status(pid)
    if found is None:
        return Process(pid, None, None, "unresolved")
    if pidfd is not None and pidfd >= 0:
        # Read first, then ask the pidfd: alive afterwards means the pid still named the event's process.
        if _alive(pidfd):
            return Process(pid, found[0], found[1], "pidfd")
        return Process(pid, None, None, "unresolved")
    return Process(pid, found[0], found[1], "proc")


class Fanotify:
    """One fanotify notification group; :meth:`read` yields its events, :meth:`close` ends it."""

    def __init__(self, *, pidfd: bool = True, unlimited_queue: bool = False, dir_names: bool = True) -> None:
        """``dir_names``: report the directory and entry name (needed to name a path whose own handle cannot be
        opened, e.g. a file chmod made unreadable is still fine; a deleted one is not); False reports only the
        object's own handle, which the kernel encodes more cheaply per event (opens: bench/opens.py)."""
        flags = FAN_CLASS_NOTIF | FAN_CLOEXEC | FAN_NONBLOCK | FAN_REPORT_FID
        if dir_names:
            flags |= FAN_REPORT_DFID_NAME
        if pidfd:
            flags |= FAN_REPORT_PIDFD
        if unlimited_queue:
            flags |= FAN_UNLIMITED_QUEUE
        self.fd = _check(_libc.fanotify_init(flags, os.O_RDONLY | os.O_LARGEFILE), "fanotify_init")
        self.reports_pidfd = pidfd
        self._mounts: dict[tuple[int, int], int] = {}
        """fsid → an fd on that filesystem, for open_by_handle_at"""
        self._own_pid = os.getpid()
        self.overflows = 0
        self.events_read = 0
        """events parsed since the caller last set it to 0 (skipped ones included): how busy the queue was"""

    def mark(self, path: str, mask: int, *, filesystem: bool = False, remove: bool = False) -> None:
        """Add (or remove) ``mask`` on ``path``'s inode, or on its whole filesystem."""
        flags = (FAN_MARK_REMOVE if remove else FAN_MARK_ADD) | (FAN_MARK_FILESYSTEM if filesystem else FAN_MARK_INODE)
        _check(_libc.fanotify_mark(self.fd, flags, mask, -100, os.fsencode(path)), f"fanotify_mark {path}")
        if not remove:
            self._remember_mount(path)

    def _remember_mount(self, path: str) -> None:
        fsid = _fsid_of(path)
        if fsid not in self._mounts:
            self._mounts[fsid] = os.open(
                path if os.path.isdir(path) else os.path.dirname(path), os.O_RDONLY | os.O_DIRECTORY
            )

    def wait(self, timeout: float) -> bool:
        """Whether events are waiting, after at most ``timeout`` seconds."""
        ready, _, _ = select.select([self.fd], [], [], timeout)
        return bool(ready)

    def read(self, skip: Callable[[int, str | None], bool] | None = None) -> Iterator[FanEvent]:
        """Every event queued now (none when the queue is empty); never blocks.

        ``skip(pid, path)``: events it is true for are dropped before their process is asked who it is (a
        busy reader's thousandth open of one file costs a handle lookup, not a /proc read).
        """
        while True:
            try:
                data = os.read(self.fd, _BUFFER)
            except BlockingIOError:
                return
            except OSError as exc:
                if exc.errno == errno.EINTR:
                    continue
                raise
            if not data:
                return
            yield from self._parse(data, skip)

    def _parse(self, data: bytes, skip: Callable[[int, str | None], bool] | None = None) -> Iterator[FanEvent]:
        # Within one buffer, read at one moment: the same directory handle names the same directory, and a pid
        # whose pidfd was valid names the process an earlier event of it was identified as (both were alive at
        # the read, and two live processes never share a pid).
        paths: dict[bytes, str | None] = {}
        processes: dict[int, Process] = {}
        offset = 0
        while offset + _METADATA.size <= len(data):
            event_len, _vers, _res, metadata_len, mask, fd, pid = _METADATA.unpack_from(data, offset)
            if event_len < _METADATA.size:
                return
            if fd >= 0:
                os.close(fd)  # FID mode reports no fd; close one defensively rather than leak it
            pidfd: int | None = None
            handle: tuple[tuple[int, int], bytes] | None = None
            name = ""
            cursor, end = offset + metadata_len, offset + event_len
            while cursor + _INFO_HEADER.size <= end:
                info_type, _pad, info_len = _INFO_HEADER.unpack_from(data, cursor)
                if info_len == 0:
                    break
                body = cursor + _INFO_HEADER.size
                if info_type == INFO_PIDFD:
                    (pidfd,) = struct.unpack_from("=i", data, body)
                elif info_type in (INFO_DFID_NAME, INFO_DFID, INFO_FID) and (handle is None or info_type != INFO_FID):
                    fsid = _FSID.unpack_from(data, body)
                    handle_at = body + _FSID.size
                    handle_bytes, _type = _HANDLE_HEAD.unpack_from(data, handle_at)
                    handle_end = handle_at + _HANDLE_HEAD.size + handle_bytes
                    handle = (fsid, data[handle_at:handle_end])
                    if info_type == INFO_DFID_NAME:
                        raw_name = data[handle_end : cursor + info_len].split(b"\0", 1)[0]
                        name = os.fsdecode(raw_name)
                cursor += info_len
            offset += event_len
            self.events_read += 1
            try:
                if mask & FAN_Q_OVERFLOW:
                    self.overflows += 1
                    continue
                if pid == self._own_pid:
                    continue  # our own reads (resolving a handle opens its directory)
                path = None
                if handle is not None:
                    where = paths.get(handle[1], _UNKNOWN)
                    if where is _UNKNOWN:
                        where = paths[handle[1]] = self._path(handle[0], handle[1], "")
                    path = _joined(where, name) if isinstance(where, str) else None
                if skip is not None and skip(pid, path):
                    continue
                process = processes.get(pid) if pidfd is not None and pidfd >= 0 else None
                if process is None:
                    process = identify(pid, pidfd if self.reports_pidfd else None)
                    if process.confidence == "pidfd":
                        processes[pid] = process
                yield FanEvent(mask, path, process)
            finally:
                if pidfd is not None and pidfd >= 0:
                    os.close(pidfd)

    def _path(self, fsid: tuple[int, int], handle: bytes, name: str) -> str | None:
        mount_fd = self._mounts.get(fsid)
        if mount_fd is None:
            return None
        fd = _libc.open_by_handle_at(mount_fd, handle, os.O_PATH)
        if fd < 0:
            return None  # gone, or no CAP_DAC_READ_SEARCH
        try:
            where = os.readlink(f"/proc/self/fd/{fd}")
        finally:
            os.close(fd)
        if where.endswith(" (deleted)") or not where.startswith("/"):
            return None
        return _joined(where, name)

    def close(self) -> None:
        for fd in self._mounts.values():
            os.close(fd)
        self._mounts.clear()
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1

    def __enter__(self) -> Fanotify:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


_UNKNOWN = object()


def _joined(directory: str, name: str) -> str:
    if not name or name == ".":
        return directory
    return directory.rstrip("/") + "/" + name if directory != "/" else "/" + name


class _Statfs(ctypes.Structure):
    _fields_ = [
        ("f_type", ctypes.c_long),
        ("f_bsize", ctypes.c_long),
        ("f_blocks", ctypes.c_ulong),
        ("f_bfree", ctypes.c_ulong),
        ("f_bavail", ctypes.c_ulong),
        ("f_files", ctypes.c_ulong),
        ("f_ffree", ctypes.c_ulong),
        ("f_fsid", ctypes.c_int * 2),
        ("f_namelen", ctypes.c_long),
        ("f_frsize", ctypes.c_long),
        ("f_flags", ctypes.c_long),
        ("f_spare", ctypes.c_long * 4),
    ]


_libc.statfs.argtypes = [ctypes.c_char_p, ctypes.POINTER(_Statfs)]
_libc.statfs.restype = ctypes.c_int


def _fsid_of(path: str) -> tuple[int, int]:
    """The filesystem id fanotify reports for ``path`` (statfs's ``f_fsid``, as two ints)."""
    buf = _Statfs()
    _check(_libc.statfs(os.fsencode(path), ctypes.byref(buf)), f"statfs {path}")
    return (buf.f_fsid[0], buf.f_fsid[1])


class Listener:
    """A fanotify group and the thread that reads it: the one lifecycle both the actor and the open sources use.

    ``start(fan, on_ready)`` hands over an open group; the thread calls ``on_ready(fan)`` under :attr:`lock`
    whenever events wait, and pauses as long as it returns (seconds; 0 for none). Callers read the group under
    the same lock (:meth:`locked`); :meth:`close` stops the thread, then closes the group.
    """

    def __init__(self, name: str) -> None:
        self.lock = threading.Lock()
        self.fan: Fanotify | None = None
        self._name = name
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self, fan: Fanotify, on_ready: Callable[[Fanotify], float]) -> None:
        self.fan = fan
        self._thread = threading.Thread(target=self._follow, args=(fan, on_ready), name=self._name, daemon=True)
        self._thread.start()

    def _follow(self, fan: Fanotify, on_ready: Callable[[Fanotify], float]) -> None:
        while not self._stop.is_set():
            if fan.wait(0.25):
                with self.lock:
                    pause = on_ready(fan)
                if pause:
                    self._stop.wait(pause)

    def close(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
            self._thread = None
        with self.lock:
            if self.fan is not None:
                self.fan.close()
                self.fan = None
