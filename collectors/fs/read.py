"""Reading one path's permission state: mode, owner, group and its ACLs, without following a final symlink.

Shared by the collector's own walk and the workers of a parallel first scan
(:mod:`collectors.fs.parallel`). ACLs come from :meth:`NameCache.decoded_acl`,
one tuple per distinct xattr, so fingerprints and wire fragments are
remembered by the tuple's identity.
"""

from __future__ import annotations

import fnmatch
import hashlib
import os
import re
import stat
from collections.abc import Callable, Iterable
from typing import NamedTuple, TypeVar

from collectors.acl import DEFAULT_NAMES, NameCache, read_acl, read_default_acl
from permwatch.events import AclEntry, ObjectType

MAX_PATH_CHARS = 4096

K = TypeVar("K")
V = TypeVar("V")


def memo_by_identity(compute: Callable[[K], V], limit: int = 4096) -> Callable[[K], V]:
    """``compute`` remembered by its argument's identity, for objects handed out again and again (the
    reader gives every path with the same ACL xattr the same tuple). The memo holds each argument, so
    an id is never reused while remembered; past ``limit`` entries it starts again."""
    memo: dict[int, tuple[K, V]] = {}

    def lookup(argument: K) -> V:
        found = memo.get(id(argument))
        if found is None or found[0] is not argument:
            if len(memo) >= limit:
                memo.clear()
            found = memo[id(argument)] = (argument, compute(argument))
        return found[1]

    return lookup


class PathState(NamedTuple):
    """The permission-relevant state of one path as read from the filesystem."""

    object_type: ObjectType
    uid: int
    gid: int
    mode: int
    acl: tuple[AclEntry, ...]
    default_acl: tuple[AclEntry, ...]

    @property
    def is_dir(self) -> bool:
        return self.object_type is ObjectType.DIRECTORY

    @property
    def fingerprint(self) -> bytes:
        """A digest of everything published except resolved names, which may come and go."""
        acl, default_acl = self.acl, self.default_acl
        key = (self.object_type, self.uid, self.gid, self.mode, id(acl), id(default_acl))
        found = _FINGERPRINTS.get(key)
        if found is not None and found[0] is acl and found[1] is default_acl:
            return found[2]
        text = (
            f"{self.object_type.value}|{self.uid}|{self.gid}|{self.mode}"
            f"|{_entries_signature(acl)}|{_entries_signature(default_acl)}"
        )
        digest = hashlib.blake2b(text.encode(), digest_size=16).digest()
        if len(_FINGERPRINTS) >= 4096:
            _FINGERPRINTS.clear()
        _FINGERPRINTS[key] = (acl, default_acl, digest)
        return digest


_FINGERPRINTS: dict[tuple[ObjectType, int, int, int, int, int], tuple[object, object, bytes]] = {}
"""Digests of recurring states, by the identity of their ACL tuples (held, so an id is not reused)."""


def _signature(entries: tuple[AclEntry, ...]) -> str:
    return ",".join(f"{entry.tag.value}:{entry.qualifier}:{entry.perms}" for entry in entries)


_entries_signature = memo_by_identity(_signature)
"""Few distinct ACLs recur across a tree (see :meth:`NameCache.decoded_acl`): their text is remembered."""


def object_type_of(mode: int) -> ObjectType:
    if stat.S_ISDIR(mode):
        return ObjectType.DIRECTORY
    if stat.S_ISREG(mode):
        return ObjectType.FILE
    if stat.S_ISLNK(mode):
        return ObjectType.SYMLINK
    return ObjectType.OTHER


def read_path_state(path: str, *, names: NameCache = DEFAULT_NAMES) -> PathState | None:
    """Read ``path`` without following a final symlink; ``None`` when it does not exist.

    Symlinks have no permissions of their own on Linux, so they carry empty
    ACLs. Other OS errors and :class:`MalformedAclError` propagate.
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


class PathExcluder:
    """fnmatch globs matched against both the full path and the base name."""

    def __init__(self, globs: Iterable[str]) -> None:
        patterns = [fnmatch.translate(glob) for glob in globs]
        self._regex = re.compile("|".join(patterns)) if patterns else None

    def excludes(self, path: str, name: str) -> bool:
        if self._regex is None:
            return False
        return self._regex.match(path) is not None or self._regex.match(name) is not None


def publishable(path: str) -> bool:
    """Whether the wire contract can carry ``path`` (UTF-8, at most 4096 characters)."""
    if len(path) > MAX_PATH_CHARS:
        return False
    if path.isascii():
        return True
    try:
        path.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True
