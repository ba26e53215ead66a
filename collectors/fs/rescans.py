"""When the filesystem collector rescans a root, and why: trouble, a degraded watch, the spool.

A rescan is asked for with the time the trouble happened; it is due at the
loop's next round, and skipped when a scan of that root began after the
trouble (that scan covered it), except after the spool dropped events, which
always rescans. A *degraded* root (some directory below it cannot be watched)
is rescanned every ``degraded_rescan_seconds`` until it can be watched whole.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Literal

log = logging.getLogger(__name__)

ScanReason = Literal["baseline", "overflow", "spool_overflow", "manual"]


@dataclass(slots=True)
class _RootRescans:
    degraded: bool = False
    next_periodic_rescan: float = 0.0
    requested_at: float | None = None
    reason: ScanReason = "overflow"
    last_scan_started: float = field(default=float("-inf"))


class RescanSchedule:
    """The rescans due for each root, on ``clock``'s time."""

    def __init__(self, roots: Iterable[str], *, clock: Callable[[], float], degraded_rescan_seconds: float) -> None:
        self._roots = {root: _RootRescans() for root in roots}
        self._clock = clock
        self._degraded_rescan_seconds = degraded_rescan_seconds

    def scan_started(self, root: str, at: float) -> None:
        if root in self._roots:
            self._roots[root].last_scan_started = at

    def request(self, root: str, at: float) -> None:
        """Rescan ``root`` for trouble at ``at`` (a rescan already asked for keeps its earlier time)."""
        state = self._roots[root]
        if state.requested_at is None:
            state.requested_at = at

    def request_all(self, reason: ScanReason, at: float) -> None:
        for root, state in self._roots.items():
            state.reason = reason
            self.request(root, at)

    def none_requested(self, roots: Iterable[str]) -> bool:
        return all(self._roots[root].requested_at is None for root in roots)

    def degrade(self, root: str, why: str) -> None:
        """Some changes below ``root`` may be missed (``why``): rescan it now and periodically."""
        state = self._roots[root]
        if not state.degraded:
            log.warning(
                "%s: changes below %s may be missed by inotify; rescanning it now and every %.0fs",
                why,
                root,
                self._degraded_rescan_seconds,
            )
            state.degraded = True
            state.next_periodic_rescan = self._clock() + self._degraded_rescan_seconds
        self.request(root, self._clock())

    def restored(self, root: str) -> None:
        """``root`` is watched whole again."""
        self._roots[root].degraded = False

    def wait_seconds(self, now: float, wait: float) -> float:
        """``wait``, or less if a rescan is due sooner."""
        for state in self._roots.values():
            if state.requested_at is not None:
                return 0.0
            if state.degraded:
                wait = min(wait, state.next_periodic_rescan - now)
        return wait

    def periodic_due(self, root: str, now: float) -> bool:
        """Whether a degraded ``root``'s periodic rescan is due (it is then asked for, and the next one set)."""
        state = self._roots[root]
        if not (state.degraded and now >= state.next_periodic_rescan):
            return False
        state.next_periodic_rescan = now + self._degraded_rescan_seconds
        self.request(root, now)
        return True

    def take(self, root: str, *, hold_overflow: bool = False) -> ScanReason | None:
        """The reason to rescan ``root`` now, if one is due; the request is taken either way, except one for
        an overflow while ``hold_overflow`` (a burst goes on: one rescan once it is quiet reads it all)."""
        state = self._roots[root]
        requested = state.requested_at
        if requested is None or (hold_overflow and state.reason == "overflow"):
            return None
        state.requested_at = None
        reason, state.reason = state.reason, "overflow"
        if reason == "spool_overflow" or requested >= state.last_scan_started:
            return reason
        return None  # a scan begun after the trouble covered it
