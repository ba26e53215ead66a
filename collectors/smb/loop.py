"""Keep one remote share's folders current: baseline, change notifications, rescans, reconcile, reconnect.

`ShareLoop.run` connects, then walks the share arming each folder's watch *before* reading it (so nothing changed
between the two goes unseen), then serves the watches: a changed folder is read again, a new one walked (it may
arrive with children), a removed one reported with everything under it, a "rescan" walks that folder again.
Every ``reconcile_seconds`` (and after every reconnect) the whole share is walked again. What is reported is
decided by a digest of each folder's descriptor: a reconcile that finds nothing new reports
nothing, and only what changed reaches the sink (and its decoder).

A dropped connection or a dead server is retried with backoff (1 s doubling to ``backoff_max``); the reconcile
after the reconnect reports what changed while it was down, and folders gone meanwhile as removed.
"""

from __future__ import annotations

import hashlib
import logging
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Protocol

from smbprotocol.exceptions import SMBException

from collectors.smb.channel import ChannelError
from collectors.smb.notify import Change, Watches
from collectors.smb.share import RemoteFolder, SmbError, SmbShare
from collectors.smb.tree import walk

log = logging.getLogger(__name__)

_FILE = "STATUS_NOT_A_DIRECTORY"
_GONE = ("STATUS_OBJECT_NAME_NOT_FOUND", "STATUS_OBJECT_PATH_NOT_FOUND", "STATUS_DELETE_PENDING")


class FolderSink(Protocol):
    """Where the loop reports: a walk about to start, a folder read (descriptor or error) and a folder gone, with
    when it was seen."""

    def reconciling(self) -> None: ...

    def folder(self, folder: RemoteFolder, observed_at: float, *, new: bool) -> None: ...

    def removed(self, path: str, observed_at: float) -> None: ...

    def scanned(self, observed_at: float) -> None: ...

    def flush(self) -> None: ...


@dataclass(frozen=True)
class LoopOptions:
    in_flight: int = 8
    reconcile_seconds: float = 3600.0
    backoff_max: float = 30.0
    poll_seconds: float = 1.0
    roots: tuple[str, ...] = ("",)


class ConnectionLost(RuntimeError):
    """The share's connection died; the loop reconnects."""


class ShareLoop:
    """One share, one connection, one sink. ``connect`` makes a fresh, unconnected `SmbShare` for each attempt."""

    def __init__(
        self,
        connect: Callable[[], SmbShare],
        sink: FolderSink,
        options: LoopOptions = LoopOptions(),
        *,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._connect = connect
        self._sink = sink
        self._options = options
        self._clock = clock
        self._digests: dict[str, bytes] = {}
        self._children: dict[str, set[str]] = {}  # reported folders by parent: `_below` without a scan of all
        self.connected = threading.Event()
        self.reconnects = 0

    def run(self, stopping: threading.Event) -> None:
        """Until ``stopping`` is set: connect, reconcile, serve changes; reconnect with backoff on failure."""
        backoff = 1.0
        while not stopping.is_set():
            share = self._connect()
            try:
                share.connect()
                backoff = 1.0
                self._serve(share, stopping)
            except (SmbError, ChannelError, ConnectionLost, SMBException, OSError) as exc:
                log.warning("share %s: %s; reconnecting in %.0f s", share.unc, _one_line(exc), backoff)
                self.reconnects += 1
                stopping.wait(backoff)
                backoff = min(backoff * 2, self._options.backoff_max)
            finally:
                self.connected.clear()
                share.close()

    # -- one connection's life -----------------------------------------------------------------------------------

    def _serve(self, share: SmbShare, stopping: threading.Event) -> None:
        watches = Watches(share)
        self._reconcile(share, watches)
        self.connected.set()
        next_reconcile = time.monotonic() + self._options.reconcile_seconds
        while not stopping.is_set():
            changes = watches.changes(timeout=self._options.poll_seconds)
            if any(change.kind == "lost" for change in changes):
                raise ConnectionLost("the connection was lost")
            self._apply(share, watches, changes)
            if time.monotonic() >= next_reconcile:
                self._reconcile(share, watches)
                next_reconcile = time.monotonic() + self._options.reconcile_seconds

    def _reconcile(self, share: SmbShare, watches: Watches) -> None:
        """Walk every root: what differs from what was reported is reported, what is gone too; then flush."""
        self._sink.reconciling()
        for root in self._options.roots:
            self._walk(share, watches, root)
        self._sink.scanned(self._clock())
        self._sink.flush()

    def _walk(self, share: SmbShare, watches: Watches, root: str) -> None:
        """Walk ``root`` arming what is not watched; report what differs from what was reported, and what is gone."""
        found = set()
        for folder in walk(share, root, in_flight=self._options.in_flight, send=watches.arm_and_send):
            found.add(folder.path)
            self._report(folder)
        self._report_removed(p for p in self._below(root) if p not in found)

    def _apply(self, share: SmbShare, watches: Watches, changes: Iterable[Change]) -> None:
        done: set[tuple[str, str]] = set()
        for change in changes:
            if (change.path, change.kind) in done:
                continue  # one read per folder and kind for a batch of answers
            done.add((change.path, change.kind))
            if change.kind == "removed":
                watches.disarm_below(change.path)
                self._report_removed(self._below(change.path))
            elif change.kind == "rescan" or change.path not in self._digests:
                self._walk(share, watches, change.path)  # new folders may arrive with children
            else:
                folder = share.read_folder(change.path)
                if folder.error in _GONE:
                    watches.disarm_below(change.path)
                    self._report_removed(self._below(change.path))
                else:
                    self._report(folder)
        self._sink.flush()

    # -- reporting -------------------------------------------------------------------------------------------------

    def _report(self, folder: RemoteFolder) -> None:
        if folder.error == _FILE:
            return  # a watch names files too (their ACLs change with a propagation): only folders are followed
        digest = _digest(folder)
        known = self._digests.get(folder.path)
        if known == digest:
            return
        self._digests[folder.path] = digest
        if known is None:
            self._link(folder.path)
        self._sink.folder(folder, self._clock(), new=known is None)

    def _report_removed(self, paths: Iterable[str]) -> None:
        for path in sorted(paths, reverse=True):  # children before their parent
            if self._digests.pop(path, None) is not None:
                self._unlink(path)
                self._sink.removed(path, self._clock())

    def _link(self, path: str) -> None:
        """Index ``path`` under its parent, and an unreported parent under its own (a root below the share's
        root, a folder reported after its parent went): every reported folder is reachable from ``""``."""
        while path:
            parent = _parent(path)
            siblings = self._children.setdefault(parent, set())
            if path in siblings:
                return
            siblings.add(path)
            if parent in self._digests:
                return
            path = parent

    def _unlink(self, path: str) -> None:
        """Drop ``path`` from the index unless it still leads to reported folders; then its unreported parents
        likewise."""
        while path and path not in self._digests and not self._children.get(path):
            self._children.pop(path, None)
            parent = _parent(path)
            siblings = self._children.get(parent)
            if siblings is None:
                return
            siblings.discard(path)
            if not siblings:
                del self._children[parent]
            path = parent

    def _below(self, path: str) -> list[str]:
        """``path`` (when reported) and every reported folder under it, through the index of children: a
        removal or the end of a walk costs what lies below, not a scan of the whole share."""
        found, stack = [], [path]
        while stack:
            current = stack.pop()
            if current in self._digests:
                found.append(current)
            stack.extend(self._children.get(current, ()))
        return found


def _parent(path: str) -> str:
    return path.rpartition("/")[0]


def _digest(folder: RemoteFolder) -> bytes:
    """The descriptor (or the error) only: a new subfolder is reported as itself, not as a change of its parent."""
    return hashlib.blake2b(folder.descriptor or (folder.error or "").encode(), digest_size=16).digest()


def _one_line(exc: BaseException) -> str:
    return " ".join(str(exc).split()) or type(exc).__name__
