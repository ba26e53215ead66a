"""Keep one remote share's folders current: baseline, change notifications, rescans, reconcile, reconnect.

`ShareLoop.run` connects, then walks the share arming each folder's watch *before* reading it (so nothing changed
between the two goes unseen), then serves the watches: a changed folder is read again, a new one walked (it may
arrive with children), a removed one reported with everything under it, a "rescan" walks that folder again.
Every ``reconcile_seconds`` (and after every reconnect) the whole share is walked again. A walk parks the watches
(their requests cancelled, their handles still collecting changes: `notify.py`), which the next wait for changes
re-arms. What is reported is
decided by a digest of each folder's descriptor: a reconcile that finds nothing new reports
nothing, and only what changed reaches the sink (and its decoder).

A dropped connection or a dead server is retried with backoff (1 s doubling to ``backoff_max``); the reconcile
after the reconnect reports what changed while it was down, and folders gone meanwhile as removed.

With ``connections`` above 1 the share is read over that many connections (`Lane`), the root's children dealt
among them: a folder's watch and its reads stay on one connection, and one thread reports for all, so what is
reported and in which order per folder is the same as over one. Another connection than the first lost while
serving changes is connected again alone and walks again what it owns; the first lost, or any lost during a
walk, closes them all and the reconnect walks the whole share.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import queue
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Protocol

from smbprotocol.exceptions import SMBException

from collectors.smb.channel import ChannelError
from collectors.smb.notify import Answered, Change, Watches
from collectors.smb.share import RemoteFolder, SmbError, SmbShare, one_line
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
    connections: int = 1


class ConnectionLost(RuntimeError):
    """The share's connection died; the loop reconnects."""


@dataclass
class Lane:
    """One of the share's connections and the watches armed on it: every read of a folder it owns goes through
    it, after that folder's watch, so the server answers a folder's watch and reads in order."""

    share: SmbShare
    watches: Watches


class ShareLoop:
    """One share, ``connections`` connections, one sink. ``connect`` makes a fresh, unconnected `SmbShare` for each
    connection of each attempt.

    smbd serves each connection in a process of its own, and arming a watch costs it more CPU than reading the
    folder: the walks are spread over the connections by subtree. The root's children (of each of ``roots``) are
    dealt to the connections in turn as they are first seen, for the life of the loop; a folder belongs to the
    connection of the child it lies under (a root itself to the first). One thread walks each connection's part;
    what they read is reported by the loop's own thread, which alone holds the digests and the sink."""

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
        self._owners: dict[str, int] = {}  # a root's child -> its connection's index
        self._lanes: list[Lane] = []
        self.connected = threading.Event()
        self.reconnects = 0

    @property
    def parked(self) -> int:
        """Watches parked for a walk and not re-armed yet, over every connection (0: every folder is watched)."""
        return sum(lane.watches.parked for lane in list(self._lanes))

    def run(self, stopping: threading.Event) -> None:
        """Until ``stopping`` is set: connect, reconcile, serve changes; reconnect with backoff on failure (a
        connection lost closes all of them, and the reconcile after the reconnect walks the whole share)."""
        backoff = 1.0
        while not stopping.is_set():
            shares = [self._connect() for _ in range(max(1, self._options.connections))]
            try:
                for share in shares:
                    share.connect()
                backoff = 1.0
                self._serve(shares, stopping)
            except (SmbError, ChannelError, ConnectionLost, SMBException, OSError) as exc:
                log.warning("share %s: %s; reconnecting in %.0f s", shares[0].unc, one_line(exc), backoff)
                self.reconnects += 1
                stopping.wait(backoff)
                backoff = min(backoff * 2, self._options.backoff_max)
            finally:
                self.connected.clear()
                for lane in self._lanes:
                    if lane.share.connected:
                        with contextlib.suppress(SmbError, ChannelError):
                            lane.watches.release()  # closing with every watch waiting costs smbd far more CPU
                for share in {id(share): share for share in [*shares, *(lane.share for lane in self._lanes)]}.values():
                    share.close()  # a connection reconnected alone (`_rejoin`) is a share of its own
                self._lanes = []

    # -- one connection's life -----------------------------------------------------------------------------------

    def _serve(self, shares: list[SmbShare], stopping: threading.Event) -> None:
        answered: queue.SimpleQueue[Answered] = queue.SimpleQueue()  # every connection's watches answer here
        self._lanes = [Lane(share, Watches(share, answered=answered)) for share in shares]
        self._reconcile()
        self.connected.set()
        next_reconcile = time.monotonic() + self._options.reconcile_seconds
        while not stopping.is_set():
            changes = self._lanes[0].watches.changes(timeout=self._options.poll_seconds)
            lost = [lane for lane in self._lanes if lane.watches.lost]
            if self._lanes[0] in lost:
                raise ConnectionLost("the connection was lost")
            self._apply([change for change in changes if change.kind != "lost" and self._lane(change.path) not in lost])
            for lane in lost:
                self._rejoin(lane)
            if time.monotonic() >= next_reconcile:
                self._reconcile()
                next_reconcile = time.monotonic() + self._options.reconcile_seconds

    def _rejoin(self, lane: Lane) -> None:
        """Another connection than the first was lost while the others serve: connect it again (once; a failure
        reconnects them all, with backoff) and walk again the folders it owns. The first connection's watch on
        the root reports the root's children made or removed meanwhile."""
        log.warning("share %s: a connection was lost; reconnecting it", lane.share.unc)
        self.reconnects += 1
        lane.share.close()
        lane.share = self._connect()
        lane.share.connect()
        lane.watches = Watches(lane.share, answered=self._lanes[0].watches.answered)
        for child in [child for child, owner in self._owners.items() if self._lanes[owner] is lane]:
            self._walk(child)
        self._sink.flush()

    def _reconcile(self) -> None:
        """Walk every root: what differs from what was reported is reported, what is gone too; then flush. The
        watches are parked for the walk (`Watches.park`: smbd's CPU per folder read grows with the requests open on
        the connection) and re-armed by the next `Watches.changes`, which reports what changed meanwhile."""
        for lane in self._lanes:
            lane.watches.park()
        self._sink.reconciling()
        for root in self._options.roots:
            self._walk(root)
        self._sink.scanned(self._clock())
        self._sink.flush()

    def _lane(self, path: str) -> Lane:
        """The connection owning ``path``: that of the root's child it lies under (a root's own: the first)."""
        if len(self._lanes) == 1:
            return self._lanes[0]
        for root in sorted(self._options.roots, key=len):
            if root and path != root and not path.startswith(f"{root}/"):
                continue
            rest = path[len(root) :].lstrip("/")
            if not rest:
                return self._lanes[0]
            child = f"{root}/{rest.split('/', 1)[0]}" if root else rest.split("/", 1)[0]
            owner = self._owners.setdefault(child, len(self._owners) % len(self._lanes))
            return self._lanes[owner]
        return self._lanes[0]

    def _walk(self, root: str) -> None:
        """Walk ``root`` arming what is not watched; report what differs from what was reported, and what is gone.
        The root is read first; its subfolders are walked by their connections, each in a thread of its own."""
        lane = self._lane(root)
        first = lane.share.receive_folder(lane.watches.arm_and_send([root])[0])
        if first.error in _GONE:  # removed since it was reported (or never there)
            self._disarm_below(root)
            self._report_removed(self._below(root))
            return
        found = {first.path}
        self._report(first)
        parts: dict[int, list[str]] = {}
        for sub in first.subfolders:
            parts.setdefault(id(self._lane(sub)), []).append(sub)
        for folder in self._walk_parts([(self._lane(subs[0]), subs) for subs in parts.values()]):
            found.add(folder.path)
            self._report(folder)
        self._report_removed(p for p in self._below(root) if p not in found)

    def _walk_parts(self, parts: list[tuple[Lane, list[str]]]) -> Iterator[RemoteFolder]:
        """Every folder under each part's folders, read through its connection; one part is walked here, several
        each in a thread, their folders handed over as they come (a failure in one stops them all, then raises)."""
        if len(parts) <= 1:
            for lane, subs in parts:
                yield from walk(lane.share, subs, in_flight=self._options.in_flight, send=lane.watches.arm_and_send)
            return
        read: queue.SimpleQueue[RemoteFolder | BaseException | None] = queue.SimpleQueue()
        abort = threading.Event()

        def walk_part(lane: Lane, subs: list[str]) -> None:
            try:
                for folder in walk(lane.share, subs, in_flight=self._options.in_flight, send=lane.watches.arm_and_send):
                    if abort.is_set():
                        return
                    read.put(folder)
            except Exception as exc:  # handed to the loop's thread, which raises it
                read.put(exc)
            finally:
                read.put(None)

        threads = [threading.Thread(target=walk_part, args=part, name="smb-walk", daemon=True) for part in parts]
        for thread in threads:
            thread.start()
        try:
            running = len(threads)
            while running:
                item = read.get()
                if item is None:
                    running -= 1
                elif isinstance(item, BaseException):
                    raise item
                else:
                    yield item
        finally:
            abort.set()  # each thread stops at its next folder (or its connection's timeout)
            for thread in threads:
                thread.join()

    def _apply(self, changes: Iterable[Change]) -> None:
        done: set[tuple[str, str]] = set()
        for change in changes:
            if (change.path, change.kind) in done:
                continue  # one read per folder and kind for a batch of answers
            done.add((change.path, change.kind))
            lane = self._lane(change.path)
            if change.kind == "removed":
                self._disarm_below(change.path)
                self._report_removed(self._below(change.path))
            elif change.kind == "rescan" or change.path not in self._digests:
                self._walk(change.path)  # new folders may arrive with children
            else:
                folder = lane.share.read_folder(change.path)
                if folder.error in _GONE:
                    self._disarm_below(change.path)
                    self._report_removed(self._below(change.path))
                else:
                    self._report(folder)
        self._sink.flush()

    def _disarm_below(self, path: str) -> None:
        for lane in self._lanes:
            lane.watches.disarm_below(path)

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
