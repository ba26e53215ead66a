"""Coalescing a burst of permission changes: when to stop reading changed paths one by one, and how to read them.

A ``setfacl -R`` over a large share changes every path below it within
seconds. Read one by one as inotify reports them, each change costs a read,
a lookup of what was published and a store write of its own, while watchdog's
threads parse the next events beside the reads (issue 21: 100,051 changes
published and judged 11.7 s after the burst, where a rescan of all of them
took 3.7 s). So once more changed paths are waiting than a live read keeps up
with (:class:`BurstMode`), the loop stops reading them as they come, lets the
burst go quiet (or a bound pass), and then reads them together
(:func:`plan_reads`): a directory with many changed entries is listed once and
compared with what was published for all of its children in one query, as a
rescan does; the rest are read one by one. Shallow paths are read first, so
the folders a burst starts from (often the labelled ones) are published first.
Every path is read after the change that put it in the backlog was taken from
the watch events, so no change is lost; a change made while the backlog is
read comes as a new event and is read again. A read begun on a quiet moment
stops when the burst goes on (the rest waits for the next quiet); one held
:data:`MAX_DEFER_SECONDS` is read to its end. An inotify overflow is a burst
too: its rescan waits for the same quiet, so one rescan reads it all.
"""

from __future__ import annotations

import logging
from collections import defaultdict
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from datetime import datetime
from typing import Literal

from permwatch.events import utcnow

log = logging.getLogger(__name__)

BURST_PATHS = 2000
"""Changed paths waiting to be read (taken from the watch events or still queued) that start a burst."""

QUIET_SECONDS = 0.05
"""No new change for this long: the burst is over (for now), read what it changed."""

MAX_DEFER_SECONDS = 30.0
"""A burst longer than this is read in rounds, so its first changes are not held back for its whole length.
Long, because a round read while the burst goes on is slow (measured: 18,000 paths in 17 s, setfacl -R
beside it 2.7 times slower than alone) and holds back the rest, the burst's last folders included."""

MAX_PENDING = 500_000
"""Paths held in the backlog before it is read whatever the burst does (a bound on the collector's memory)."""

LISTING_MIN = 8
"""Changed entries of one directory from which listing it is cheaper than reading them one by one."""


@dataclass(frozen=True, slots=True)
class Read:
    """One read of a coalesced backlog: ``listing`` of a directory's entries, or one ``path``."""

    how: Literal["listing", "path"]
    path: str


class BurstMode:
    """Whether changes arrive faster than they are read, and when to read what a burst changed.

    Times are the caller's clock (seconds); nothing here reads one.
    """

    def __init__(
        self,
        *,
        threshold: int = BURST_PATHS,
        quiet_seconds: float = QUIET_SECONDS,
        max_defer_seconds: float = MAX_DEFER_SECONDS,
        max_pending: int = MAX_PENDING,
    ) -> None:
        self.threshold = threshold
        self.quiet_seconds = quiet_seconds
        self.max_defer_seconds = max_defer_seconds
        self.max_pending = max_pending
        self.active = False
        self._since = 0.0
        """When the backlog began to be held (the burst was noticed, or the last coalesced read ended)."""
        self._last_change = float("-inf")

    def changed(self, now: float) -> None:
        """A change came in (a watch event that adds a path to the backlog)."""
        self._last_change = now

    def overflowed(self, now: float) -> None:
        """inotify lost events: changes come faster than they are read, a burst whatever the backlog says."""
        self.changed(now)
        if not self.active:
            self.active, self._since = True, now

    def update(self, pending: int, now: float) -> bool:
        """Note how many changed paths are waiting; True when this starts a burst."""
        if self.active or pending < self.threshold:
            return False
        self.active = True
        self._since = now
        return True

    def read_due(self, pending: int, now: float) -> bool:
        """In a burst: whether to read the backlog now (it went quiet, waited long enough or grew too big)."""
        return self.active and (
            now - self._last_change >= self.quiet_seconds
            or now - self._since >= self.max_defer_seconds
            or pending >= self.max_pending
        )

    def holding(self, pending: int, now: float) -> bool:
        """In a burst whose backlog is not due yet (an overflow's rescan waits for it too)."""
        return self.active and not self.read_due(pending, now)

    def must_finish(self, pending: int, now: float) -> bool:
        """Whether a backlog read now must be read to its end (held the longest or too big), even if the burst
        goes on meanwhile; otherwise the read stops once it does, and the rest waits for the next quiet."""
        return now - self._since >= self.max_defer_seconds or pending >= self.max_pending

    def read_done(self, pending: int, now: float) -> bool:
        """The backlog was read; ``pending`` changes came meanwhile. True when the burst goes on (so many)."""
        self._since = now
        self.active = pending >= self.threshold
        return self.active

    def wait_seconds(self, now: float, wait: float) -> float:
        """``wait``, or less if the backlog will be due sooner."""
        if not self.active:
            return wait
        quiet_at = self._last_change + self.quiet_seconds
        return max(0.0, min(wait, quiet_at - now, self._since + self.max_defer_seconds - now))


class ChangedPaths:
    """Paths an attribute change was noticed on, waiting to be read: each on its own once its coalescing window
    (``coalesce_ms``) ends, or, in a burst, all together once it goes quiet (``burst``). Times are the caller's."""

    def __init__(self, *, coalesce_seconds: float, burst: BurstMode) -> None:
        self.burst = burst
        self._coalesce_seconds = coalesce_seconds
        self._waiting: dict[str, tuple[float, datetime]] = {}
        """path → (when to read it on its own, when the change was first noticed: the events' observed_at)"""

    def __len__(self) -> int:
        return len(self._waiting)

    def note(self, path: str, now: float) -> None:
        """A change on ``path`` (a repeated one adds nothing: the read after the first sees it)."""
        if path not in self._waiting:
            self._waiting[path] = (now + self._coalesce_seconds, utcnow())
            self.burst.changed(now)

    def discard(self, *paths: str) -> None:
        """``paths`` are read another way (walked as created, deleted or moved)."""
        for path in paths:
            self._waiting.pop(path, None)

    def discard_covered_by(self, root: str, ancestors: Iterable[str]) -> None:
        """A scan of ``root`` and its ``ancestors`` begins: it reads whatever waits there, after its change."""
        below, above = root.rstrip("/") + "/", set(ancestors)
        for path in [p for p in self._waiting if p == root or p.startswith(below) or p in above]:
            del self._waiting[path]

    def update(self, queued: int, now: float) -> None:
        """Note the backlog: waiting here, and ``queued`` as watch events not handled yet."""
        if self.burst.update(len(self._waiting) + queued, now):
            log.info("a burst: %d changed paths waiting; reading them together once it goes quiet", len(self) + queued)

    def read_done(self, backlog: dict[str, datetime], unread: list[Read], queued: int, now: float) -> None:
        """A backlog was read up to ``unread`` (stopped: the burst went on). What was not read waits again, for
        the next quiet; after a whole read the burst goes on if many changes came meanwhile (``queued``)."""
        if unread:
            dirs = {read.path for read in unread if read.how == "listing"}
            paths = {read.path for read in unread if read.how == "path"}
            for path, noticed in backlog.items():
                if path in paths or (path.rsplit("/", 1)[0] or "/") in dirs:
                    self._waiting.setdefault(path, (now, noticed))
            log.info("a burst went on while its backlog was read: %d paths wait for it to go quiet", len(self))
        elif self.burst.read_done(len(self._waiting) + queued, now):
            log.info("%d changes came while a burst's backlog was read: the burst goes on", len(self) + queued)

    def wait_seconds(self, now: float, wait: float) -> float:
        """``wait``, or less if something is due sooner."""
        if self.burst.active:
            return self.burst.wait_seconds(now, wait)
        if self._waiting:
            wait = min(wait, next(iter(self._waiting.values()))[0] - now)
        return wait

    def take_due(self, now: float) -> Iterator[tuple[str, datetime]]:
        """Outside a burst: each path whose window has ended, with when its change was noticed, oldest first."""
        while self._waiting and not self.burst.active:
            path, (due, noticed) = next(iter(self._waiting.items()))
            if due > now:
                break  # deadlines are first-seen + constant, so insertion order is deadline order
            del self._waiting[path]
            yield path, noticed

    def take_backlog(self, now: float, queued: int) -> dict[str, datetime] | None:
        """In a burst, once its backlog is due: every waiting path, with when its change was noticed."""
        if not self.burst.read_due(len(self._waiting), now):
            return None
        if not self._waiting:  # a rescan read it all
            self.burst.read_done(queued, now)
            return None
        backlog = {path: noticed for path, (_, noticed) in self._waiting.items()}
        self._waiting.clear()
        return backlog


def plan_reads(paths: Iterable[str], listable: Callable[[str], bool], *, listing_min: int = LISTING_MIN) -> list[Read]:
    """The reads that cover ``paths``, shallowest first: a listing of each directory ``listable`` allows that
    holds at least ``listing_min`` of them, each remaining path on its own."""
    by_parent: defaultdict[str, list[str]] = defaultdict(list)
    for path in paths:
        parent = path.rsplit("/", 1)[0] or "/"
        by_parent[parent].append(path)
    reads: list[tuple[int, Read]] = []
    for parent, changed in by_parent.items():
        if len(changed) >= listing_min and listable(parent):
            reads.append((_depth(parent) + 1, Read("listing", parent)))
        else:
            reads.extend((_depth(path), Read("path", path)) for path in changed)
    reads.sort(key=lambda item: (item[0], item[1].path))
    return [read for _, read in reads]


def _depth(path: str) -> int:
    return path.rstrip("/").count("/")
