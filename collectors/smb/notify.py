"""Change notifications over SMB: one non-recursive CHANGE_NOTIFY per folder, all answered into one queue.

Measured against Samba 4.17: a recursive watch on the share's root reports ACL changes only one level deep, while a
non-recursive watch on a folder reports both its own changes (an entry with an empty name) and its children's
(their names), whether made over SMB or locally (``setfacl``, ``chmod``). So every folder gets a watch of its own
(`arm`), kept open on a handle of its own; an answered watch is re-armed on the same handle (the server keeps
collecting changes for a handle between two requests).

smbprotocol's own watcher runs a thread per watch; here each watch's request gets a `_Signal` in place of its
response event, which puts the answered request in one queue, so one thread serves thousands of watches. What
`changes` returns says what to read again:

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
import threading
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Literal

from smbprotocol.change_notify import CompletionFilter, SMB2ChangeNotifyRequest
from smbprotocol.exceptions import NotifyEnumDir, SMBException, SMBResponseException
from smbprotocol.header import NtStatus

from collectors.smb.share import READ_ACCESS, InFlight, SmbError, SmbShare, status_name

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


@dataclass(frozen=True)
class Change:
    path: str  # share-relative, "/" separators, "" = the root
    kind: Kind


class _Signal(threading.Event):
    """A request's response event that also reports the request into the watches' queue when set."""

    def __init__(self, answered: queue.SimpleQueue[object], request: object) -> None:
        super().__init__()
        self._answered = answered
        self._request = request

    def set(self) -> None:
        super().set()
        self._answered.put(self._request)


@dataclass
class _Watch:
    path: str
    file_id: bytes
    request: object | None = None


class Watches:
    """Every armed folder of one share; `changes` waits for answers and re-arms what answered."""

    def __init__(self, share: SmbShare, *, buffer: int = _BUFFER) -> None:
        self.share = share
        self.buffer = buffer
        self._answered: queue.SimpleQueue[object] = queue.SimpleQueue()
        self._by_request: dict[int, _Watch] = {}
        self._by_path: dict[str, _Watch] = {}
        self._lost = False

    def __len__(self) -> int:
        return len(self._by_path)

    def __contains__(self, path: str) -> bool:
        return path in self._by_path

    def arm(self, path: str) -> bool:
        """Watch ``path`` (no-op when watched already); False when the folder cannot be opened (gone, denied)."""
        self._arm([path])
        return path in self._by_path

    def arm_and_send(self, paths: Sequence[str]) -> list[InFlight]:
        """Arm each folder's watch, then send its read through the watch's handle (for `tree.walk`): the reads
        follow the CHANGE_NOTIFYs on the same connection, which the server handles in order, so a change made
        after a folder was read is reported by its watch. Three sends for the whole batch: the opens (one
        compound), the notifies, the reads (one compound)."""
        failed = self._arm(paths)
        reads = self.share.send_reads([(p, self._by_path[p].file_id) for p in paths if p in self._by_path])
        by_path = {sent.path: sent for sent in reads}
        return [by_path.get(p) or InFlight(p, error=failed.get(p, "STATUS_OBJECT_NAME_NOT_FOUND")) for p in paths]

    def _arm(self, paths: Sequence[str]) -> dict[str, str]:
        """Open the folders not watched yet in one compound and send each its CHANGE_NOTIFY; the NTSTATUS of
        each that could not be opened (gone, denied)."""
        wanted = list(dict.fromkeys(p for p in paths if p not in self._by_path))
        failed = {}
        for path, opened in zip(wanted, self.share.open_folders(wanted, READ_ACCESS), strict=True):
            if isinstance(opened, bytes):
                watch = _Watch(path, opened)
                self._by_path[path] = watch
                self._send(watch)
            else:
                failed[path] = status_name(opened)
        return failed

    def disarm_below(self, path: str) -> None:
        """Drop the watches of ``path`` and everything under it (it was removed or renamed away)."""
        prefix = f"{path}/" if path else ""
        for watched in [p for p in self._by_path if p == path or p.startswith(prefix)]:
            watch = self._by_path.pop(watched)
            if watch.request is not None:
                self._by_request.pop(id(watch.request), None)
            with contextlib.suppress(SMBException, OSError):
                self.share.close_handle(watch.file_id)  # the server answers the pending notify: NOTIFY_CLEANUP

    def changes(self, timeout: float) -> list[Change]:
        """What changed, after waiting up to ``timeout`` s for a first answer; every answer waiting is taken."""
        if self._lost:
            return [Change("", "lost")]
        found: list[Change] = []
        try:
            request = self._answered.get(timeout=timeout)
        except queue.Empty:
            return [Change("", "lost")] if not self._alive() else found
        while True:
            found.extend(self._answer(request))
            if self._lost:
                return [Change("", "lost")]
            try:
                request = self._answered.get_nowait()
            except queue.Empty:
                return found

    def close(self) -> None:
        """Forget every watch; the handles go with the connection (`SmbShare.close`)."""
        self._by_path.clear()
        self._by_request.clear()

    # -- internals ---------------------------------------------------------------------------------------------

    def _alive(self) -> bool:
        try:
            return bool(self.share.connection.transport.connected)
        except SmbError:
            return False

    def _send(self, watch: _Watch) -> None:
        connection, session, tree = self.share.connection, self.share.session, self.share.tree
        notify = SMB2ChangeNotifyRequest()
        notify["output_buffer_length"] = self.buffer
        notify["file_id"] = watch.file_id
        notify["completion_filter"] = FILTER
        request = connection.send(notify, session.session_id, tree.tree_connect_id)
        with request.response_event_lock:  # the worker sets the event under this lock: no answer slips between
            answered_already = request.response_event.is_set()
            request.response_event = _Signal(self._answered, request)
            if answered_already:
                request.response_event.set()
        watch.request = request
        self._by_request[id(request)] = watch

    def _answer(self, request: object) -> Iterator[Change]:
        with request.response_event_lock:  # type: ignore[attr-defined]
            response = request.response  # type: ignore[attr-defined]
            if response is not None and response["status"].get_value() == NtStatus.STATUS_PENDING:
                # the interim answer, or, when the connection died, smbprotocol waking every waiter on its way out
                request.response_event.clear()  # type: ignore[attr-defined]
                self._lost = self._lost or not self._alive()
                return
        watch = self._by_request.pop(id(request), None)
        if watch is None:  # a disarmed watch's last answer (NOTIFY_CLEANUP): taken so the connection forgets it
            with contextlib.suppress(SMBException, OSError):
                self.share.connection.receive(request, timeout=5)
            return
        try:
            answer = self.share.connection.receive(request, timeout=5)
        except NotifyEnumDir:
            yield Change(watch.path, "rescan")
        except SMBResponseException:  # the folder went away, or its handle was closed under it
            self._by_path.pop(watch.path, None)
            yield Change(watch.path, "rescan")
            return
        except (SMBException, OSError):
            self._lost = True
            return
        else:
            yield from self._entries(watch.path, answer["data"].get_value())
        try:
            self._send(watch)
        except (SMBException, OSError):
            self._lost = True

    def _entries(self, folder: str, data: bytes) -> Iterator[Change]:
        """FILE_NOTIFY_INFORMATION entries (MS-FSCC 2.7.1): next offset, action, name length, UTF-16 name; the
        answer's buffer offset counts from the SMB2 header (64 bytes before ``data``)."""
        offset, length = struct.unpack_from("<HI", data, 2)
        buffer = data[offset - 64 : offset - 64 + length]
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
