"""Change notifications over SMB: one non-recursive CHANGE_NOTIFY per folder, all answered into one queue.

Measured against Samba 4.17: a recursive watch on the share's root reports ACL changes only one level deep, while a
non-recursive watch on a folder reports both its own changes (an entry with an empty name) and its children's
(their names), whether made over SMB or locally (``setfacl``, ``chmod``). So every folder gets a watch of its own
(`arm`), kept open on a handle of its own; an answered watch is re-armed on the same handle (the server keeps
collecting changes for a handle between two requests).

A walk *parks* the watches it arms: each new folder is opened, watched and read in one related compound (CREATE,
CHANGE_NOTIFY, QUERY_INFO, QUERY_DIRECTORY: `SmbShare.send_watched`), and Samba cancels a CHANGE_NOTIFY that
would wait inside a compound while the rest goes on; the handle keeps collecting the folder's changes from the
watch on, and the next `changes` re-arms it (the server then answers at once with whatever it collected). A walk of
folders already watched parks them first (`park`: a CANCEL each). Why: smbd (4.17 to current master) walks every
request open on a connection each time it frees a file handle of its own (``remove_smb2_chained_fsp``, called by
``file_free``), and reading a folder frees one for each entry listed and each path component opened; with every
folder's watch waiting on the connection a baseline's smbd CPU grew with the number of folders already watched
(profiled: 60 % of its CPU in that one loop; 750-1,150 µs a folder for 5,000 folders against 250-320 µs for the
same walk without watches). Parked, no watch waits while folders are read. A server that lets the compound's
CHANGE_NOTIFY wait (an interim answer) simply keeps it armed.

smbprotocol's own watcher runs a thread per watch; here each watch's request carries a callback of the
connection's `Channel` that puts the answered request in one queue, so one thread serves thousands of watches.
What `changes` returns says what to read again:

- ``Change(path, "changed")``: the folder itself, a child added/modified/renamed (the child's path);
- ``Change(path, "removed")``: a child removed or renamed away; its watches are dropped;
- ``Change(path, "rescan")``: the server gave up listing (STATUS_NOTIFY_ENUM_DIR: more than it buffers, about
  3,000 changes) or the watch ended unexpectedly: the folder and everything below must be read again;
- ``Change("", "lost")``: the connection died; every watch is gone, a reconnect and a full reconcile are due.
"""

from __future__ import annotations

import contextlib
import queue
import struct
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Literal

from smbprotocol.change_notify import CompletionFilter

from collectors.smb import wire
from collectors.smb.channel import ChannelError, Pending
from collectors.smb.share import READ_ACCESS, InFlight, SmbError, SmbShare

# a folder's ACL change needs an attribute bit beside SECURITY (SECURITY alone fires nothing for folders on Samba)
FILTER = (
    CompletionFilter.FILE_NOTIFY_CHANGE_FILE_NAME
    | CompletionFilter.FILE_NOTIFY_CHANGE_DIR_NAME
    | CompletionFilter.FILE_NOTIFY_CHANGE_ATTRIBUTES
    | CompletionFilter.FILE_NOTIFY_CHANGE_SECURITY
)
_BUFFER = 65_536
_ADDED, _REMOVED, _RENAMED_OLD, _RENAMED_NEW, _REMOVED_BY_DELETE = 1, 2, 4, 5, 9

Kind = Literal["changed", "removed", "rescan", "lost"]
Answered = tuple["Watches", Pending]  # an answered request and the watches that sent it


@dataclass(frozen=True)
class Change:
    path: str  # share-relative, "/" separators, "" = the root
    kind: Kind


@dataclass
class _Watch:
    path: str
    file_id: bytes | None = None  # None until the answer of the CREATE that opened it (``opened``) is read
    request: Pending | None = None
    opened: Pending | None = None


class Watches:
    """Every armed folder of one share; `changes` waits for answers and re-arms what answered."""

    def __init__(
        self, share: SmbShare, *, buffer: int = _BUFFER, answered: queue.SimpleQueue[Answered] | None = None
    ) -> None:
        """``answered``: a queue shared with the watches of other connections to the same share, so one `changes`
        serves them all (each answer is taken by the watches that sent it)."""
        self.share = share
        self.buffer = buffer
        self._answered: queue.SimpleQueue[Answered] = answered if answered is not None else queue.SimpleQueue()
        self._by_request: dict[int, _Watch] = {}
        self._by_path: dict[str, _Watch] = {}
        self._put_count = 0  # answers put in the queue (the reader thread alone counts them)
        self._taken_count = 0  # answers taken from it (the thread of `changes` alone counts them)
        self._lost = False

    def __len__(self) -> int:
        return len(self._by_path)

    def __contains__(self, path: str) -> bool:
        return path in self._by_path

    @property
    def parked(self) -> int:
        """Watches the server has answered (a walk's: cancelled, see the module's doc) whose answer `changes` has
        not taken yet: they are re-armed when it is."""
        return self._put_count - self._taken_count

    def arm(self, path: str) -> bool:
        """Watch ``path`` (no-op when watched already; the watch waits, it is not parked); False when the folder
        cannot be opened (gone, denied)."""
        if path not in self._by_path:
            opened = self.share.open_folders([path], READ_ACCESS)[0]
            if not isinstance(opened, bytes):
                return False
            watch = _Watch(path, opened)
            self._by_path[path] = watch
            self._send(watch)
        return True

    def arm_and_send(self, paths: Sequence[str]) -> list[InFlight]:
        """Read each folder through its watch's handle (for `tree.walk`). A folder not watched yet is opened,
        watched and read in one compound (`SmbShare.send_watched`): the server handles its CHANGE_NOTIFY before
        its read, so a change made after the folder was read is collected on its handle and reported once
        `changes` re-arms it. Folders watched already are read through their handles in one compound."""
        sent: dict[str, InFlight] = {}
        kept: list[tuple[str, bytes]] = []
        for path in dict.fromkeys(paths):
            watch = self._by_path.get(path)
            if watch is not None and (file_id := self._handle(watch)) is not None:
                kept.append((path, file_id))
                continue
            if watch is not None:  # its folder could not be opened: try again
                self._forget(watch)
            notify = wire.change_notify(wire.RELATED_FILE, FILTER, self.buffer)
            read, request = self.share.send_watched(path, notify, self._put)
            watch = _Watch(path, request=request, opened=read.opened)
            self._by_path[path] = watch
            self._by_request[id(request)] = watch
            sent[path] = read
        for read in self.share.send_reads(kept):
            sent[read.path] = read
        return [sent[path] for path in paths]

    def park(self) -> None:
        """Cancel every watch's waiting request before a walk of the whole share (see the module's doc): their
        handles keep collecting changes, and the next `changes` re-arms them."""
        self.share.cancel([watch.request for watch in self._by_path.values() if watch.request is not None])

    def release(self, timeout: float = 5.0) -> None:
        """Before the connection is closed: cancel every waiting request and wait (up to ``timeout`` s in all) for
        their answers. smbd frees the connection's handles when it ends, each walking the requests still waiting
        (see the module's doc): measured with 5,001 watches, 0.20 s of its CPU so against 0.91-1.13 s."""
        self.park()
        deadline = time.monotonic() + timeout
        for watch in list(self._by_path.values()):
            if watch.request is not None and not watch.request.done:
                try:
                    self.share.wait(watch.request, timeout=max(0.0, deadline - time.monotonic()))
                except SmbError:
                    return

    def _handle(self, watch: _Watch) -> bytes | None:
        """The watch's file id, once the CREATE that opened it has answered; None when that CREATE failed."""
        if watch.file_id is None and watch.opened is not None:
            answer = self.share.wait(watch.opened)
            watch.opened = None
            if answer.status == wire.STATUS_SUCCESS:
                watch.file_id = answer.file_id
        return watch.file_id

    def _forget(self, watch: _Watch) -> None:
        self._by_path.pop(watch.path, None)
        if watch.request is not None:
            self._by_request.pop(id(watch.request), None)

    def disarm_below(self, path: str) -> None:
        """Drop the watches of ``path`` and everything under it (it was removed or renamed away)."""
        prefix = f"{path}/" if path else ""
        for watched in [p for p in self._by_path if p == path or p.startswith(prefix)]:
            watch = self._by_path[watched]
            self._forget(watch)
            with contextlib.suppress(SmbError):
                file_id = self._handle(watch)
                if file_id is not None:
                    self.share.close_handle(file_id)  # the server answers the waiting notify: NOTIFY_CLEANUP

    def changes(self, timeout: float) -> list[Change]:
        """What changed, after waiting up to ``timeout`` s for a first answer that reports something (a parked
        watch's cancel only re-arms it); every answer waiting is taken."""
        if self._lost:
            return [Change("", "lost")]
        found: list[Change] = []
        deadline = time.monotonic() + timeout
        while not found:
            try:
                owner, request = self._answered.get(timeout=max(0.0, deadline - time.monotonic()))
            except queue.Empty:
                return [Change("", "lost")] if not self._alive() else found
            while True:
                found.extend(owner._answer(request))
                if owner._lost:  # what other connections' watches answered before is kept
                    return [*found, Change("", "lost")]
                try:
                    owner, request = self._answered.get_nowait()
                except queue.Empty:
                    break
        return found

    @property
    def answered(self) -> queue.SimpleQueue[Answered]:
        """The queue these watches answer into (give it to another connection's watches to serve both)."""
        return self._answered

    @property
    def lost(self) -> bool:
        """The connection ended under these watches (or a re-arm could not be sent)."""
        return self._lost or not self._alive()

    def close(self) -> None:
        """Forget every watch; the handles go with the connection (`SmbShare.close`)."""
        self._by_path.clear()
        self._by_request.clear()

    # -- internals ---------------------------------------------------------------------------------------------

    def _alive(self) -> bool:
        try:
            return self.share.channel.alive
        except SmbError:
            return False

    def _send(self, watch: _Watch) -> None:
        assert watch.file_id is not None  # re-armed only once its handle is known (`_answer`)
        notify = wire.change_notify(watch.file_id, FILTER, self.buffer)
        watch.request = self.share.channel.submit([(wire.CHANGE_NOTIFY, notify)], callback=self._put)[0]
        self._by_request[id(watch.request)] = watch

    def _put(self, request: Pending) -> None:
        self._put_count += 1
        self._answered.put((self, request))

    def _answer(self, request: Pending) -> Iterator[Change]:
        self._taken_count += 1
        watch = self._by_request.pop(id(request), None)
        answer = request.answer
        if answer is None:  # the connection ended
            self._lost = True
            return
        if watch is None:  # a disarmed watch's last answer (NOTIFY_CLEANUP)
            return
        if self._handle(watch) is None:  # its folder could not be opened (the read said why): no watch
            self._forget(watch)
            return
        if answer.status == wire.STATUS_CANCELLED:
            pass  # parked for a walk (`park`): re-armed below, the server answers with what it collected meanwhile
        elif answer.status == wire.STATUS_NOTIFY_ENUM_DIR:
            yield Change(watch.path, "rescan")
        elif answer.status != wire.STATUS_SUCCESS:  # the folder went away, or its handle was closed under it
            self._by_path.pop(watch.path, None)
            yield Change(watch.path, "rescan")
            return
        else:
            yield from self._entries(watch.path, answer.buffer)
        try:
            self._send(watch)
        except ChannelError:
            self._lost = True

    def _entries(self, folder: str, buffer: bytes) -> Iterator[Change]:
        """FILE_NOTIFY_INFORMATION entries (MS-FSCC 2.7.1): next offset, action, name length, UTF-16 name."""
        if not buffer:  # a zero-length answer: something changed, no details
            yield Change(folder, "rescan")
            return
        position = 0
        while position + 12 <= len(buffer):
            following, action, size = struct.unpack_from("<III", buffer, position)
            name = buffer[position + 12 : position + 12 + size].decode("utf-16-le").replace("\\", "/")
            if name and all(ord(c) < 0x20 for c in name):
                # Samba names the watched folder itself "" or, at times, one control character (no SMB name may
                # hold one: MS-FSCC 2.1.5.2): either way the change is the folder's own
                name = ""
            path = f"{folder}/{name}" if folder and name else (name or folder)
            if action in (_REMOVED, _RENAMED_OLD, _REMOVED_BY_DELETE):
                self.disarm_below(path)
                yield Change(path, "removed")
            else:
                yield Change(path, "changed")
            if not following:
                return
            position += following
