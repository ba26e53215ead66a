"""The POSIX ACL reader: mode, owner, group and the access and default ACLs of one path.

ACLs come straight from the ``system.posix_acl_*`` xattrs through
:mod:`collectors.acl`, whose :meth:`NameCache.decoded_acl` hands out one tuple
per distinct xattr (which the fingerprint and wire memos rely on). A symlink
has no permissions of its own on Linux, so it carries empty ACLs.
"""

from __future__ import annotations

import os
import stat

from collectors.acl import DEFAULT_NAMES, NameCache, read_acl, read_default_acl
from collectors.fs.read import PathState, object_type_of
from permwatch.events import AclEntry, ObjectType


class PosixAclReader:
    """Reads paths as a Linux kernel sees their permissions: mode bits and POSIX ACLs."""

    def __init__(self, names: NameCache = DEFAULT_NAMES) -> None:
        self._names = names

    def read(self, path: str) -> PathState | None:
        return read_path_state(path, names=self._names)


def read_path_state(path: str, *, names: NameCache = DEFAULT_NAMES) -> PathState | None:
    """Read ``path`` without following a final symlink; ``None`` when it does not exist.

    Other OS errors and :class:`collectors.acl.MalformedAclError` propagate.
    """
    try:
        st = os.lstat(path)
        object_type = object_type_of(st.st_mode)
        if object_type is ObjectType.SYMLINK:
            acl: tuple[AclEntry, ...] = ()
            default_acl: tuple[AclEntry, ...] = ()
        else:
            acl = read_acl(path, mode=st.st_mode, names=names)
            default_acl = read_default_acl(path, names=names) if object_type is ObjectType.DIRECTORY else ()
    except (FileNotFoundError, NotADirectoryError):
        return None
    return PathState(object_type, st.st_uid, st.st_gid, stat.S_IMODE(st.st_mode), acl, default_acl)
