"""The key rule of the bus: which Kafka key an event travels under, so processors can share the work.

Part of the wire contract (with :mod:`permwatch.events` and :mod:`permwatch.wire`):
:meth:`FsKeys.route` is the one place a key is chosen. An event that is not a
filesystem event travels under its own ``key`` property (principal, labelled
path, labelled folder, root). A filesystem event's key needs the watched
roots, which the event does not carry, so :class:`FsKeys` holds them; its
``key`` property (the path) is never a bus key.

A folder's exposure depends on every path beneath its labelled folder and on
the traverse bits of every directory above it. So that one processor of a
consumer group sees all of that, filesystem events are keyed by their *unit*:
the watched root plus the first component below it (``/srv/share/ledning/a/b``
travels as ``/srv/share/ledning``), and one unit's events stay on one partition,
in order. The roots themselves and their ancestors gate every unit: their
events are broadcast, one copy on every partition.

A path moved from one unit to another is announced to the old unit as a
deletion (its processor drops it), then to the new one as the move.

Labels belong below a root's top level for this to split cleanly: a label on a
root itself spans all units, so only a single processor judges it right.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from dataclasses import dataclass

from permwatch.events import Event, FsKind, FsPermissionEvent, SambaShare


@dataclass(frozen=True, slots=True)
class Keyed:
    event: Event
    key: str | None
    broadcast: bool = False


class FsKeys:
    """The fs topic's key rule for one set of watched roots (one collector process's)."""

    def __init__(self, roots: Iterable[str | os.PathLike[str]]) -> None:
        longest_first = sorted({os.path.normpath(os.fspath(root)) for root in roots}, key=len, reverse=True)
        self._prefixes = [(root.rstrip("/") + "/", len(root.rstrip("/")) + 1) for root in longest_first]

    def unit_of(self, path: str) -> str | None:
        """The unit ``path`` travels in; ``None`` for a root or anything above one (broadcast)."""
        for prefix, length in self._prefixes:  # longest first: a root inside another root wins
            if path.startswith(prefix):
                end = path.find("/", length)
                return path if end < 0 else path[:end]
        return None

    def route(self, event: Event) -> list[Keyed]:
        """``event`` with its key, as the records to send, in order (two for a move across units)."""
        if isinstance(event, SambaShare):  # gates its path and all beneath: with that path's unit
            share_unit = self.unit_of(event.path)
            return [Keyed(event, share_unit, share_unit is None)]
        if not isinstance(event, FsPermissionEvent):
            return [Keyed(event, event.key)]
        unit = self.unit_of(event.path)
        routed = []
        if event.kind is FsKind.MOVED and event.old_path and event.old_path != event.path:
            old_unit = self.unit_of(event.old_path)
            if old_unit != unit:
                gone = FsPermissionEvent(
                    kind=FsKind.DELETED,
                    path=event.old_path,
                    object_type=event.object_type,
                    source=event.source,
                    observed_at=event.observed_at,
                )
                routed.append(Keyed(gone, old_unit, old_unit is None))
        routed.append(Keyed(event, unit, unit is None))
        return routed
