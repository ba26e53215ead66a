"""A second ACL reader, for tests: owner, group, mode and ACL from a table instead of the path's xattrs.

It stands in for a reader of some other source of permissions (an SMB
server's, say). A path must exist on disk (it is listed and typed from there)
but what it grants comes from :data:`TABLE`; a path the table lacks reads as
root's, ``0o755``, with the minimal ACL.
"""

from __future__ import annotations

import os

from collectors.acl import NameCache
from collectors.fs.read import PathState, object_type_of
from permwatch.events import AclEntry, AclTag


def minimal_acl(mode: int) -> tuple[AclEntry, ...]:
    return (
        AclEntry(tag=AclTag.USER_OBJ, perms=(mode >> 6) & 7),
        AclEntry(tag=AclTag.GROUP_OBJ, perms=(mode >> 3) & 7),
        AclEntry(tag=AclTag.OTHER, perms=mode & 7),
    )


ROOTS_OWN = (0, 0, 0o755, minimal_acl(0o755))

TABLE: dict[str, tuple[int, int, int, tuple[AclEntry, ...]]] = {}
"""path → (uid, gid, mode, access ACL)"""


class TableAclReader:
    """Reads what :data:`TABLE` says of a path that exists."""

    def __init__(self, names: NameCache) -> None:
        self._names = names

    def read(self, path: str) -> PathState | None:
        try:
            st = os.lstat(path)
        except (FileNotFoundError, NotADirectoryError):
            return None
        uid, gid, mode, acl = TABLE.get(path, ROOTS_OWN)
        return PathState(object_type_of(st.st_mode), uid, gid, mode, acl, ())
