"""The filesystem collector's encoder: a path's state as read, straight onto the wire.

:class:`FsWireEncoder` is the contract's :class:`permwatch.wire.FsPermissionEncoder`
fed with a :class:`collectors.fs.read.PathState` and the names of its owner and
group, so the scan and the parallel workers write events without building models.
"""

from __future__ import annotations

from collectors.acl import NameCache
from collectors.fs.read import PathState
from permwatch.events import FsKind
from permwatch.wire import FsPermissionEncoder, time_text

__all__ = ["FsWireEncoder", "time_text"]


class FsWireEncoder(FsPermissionEncoder):
    """Encodes the permission states a collector (``source``) read as ``fs.permission`` events."""

    def encode_state(
        self, path: str, kind: FsKind, state: PathState, names: NameCache, observed_at: str | None = None
    ) -> bytes:
        """:meth:`encode` for a state as read, its owner and group named by ``names``; observed now unless given."""
        return self.encode(
            path,
            kind,
            state.object_type,
            (state.uid, names.user(state.uid)),
            (state.gid, names.group(state.gid)),
            state.mode,
            state.acl,
            state.default_acl,
            self.now() if observed_at is None else observed_at,
            state.acl_kind,
            state.nt_acl,
        )
