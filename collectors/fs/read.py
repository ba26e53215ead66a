"""One path's permission state as an ACL reader hands it over, and the path rules every reader shares.

A :class:`PathState` is what a reader (:mod:`collectors.fs.readers`) read
of one path: type, owner, group, mode and its ACL of one kind (``acl_kind``,
``"posix"`` for now). Its fingerprint is what the collector compares with what
it published. Readers return the same ACL tuple for every path with the same
ACL, so fingerprints and wire fragments are remembered by the tuple's
identity. :class:`PathExcluder` and :func:`publishable` decide which paths are
published at all.
"""

from __future__ import annotations

import fnmatch
import hashlib
import re
import stat
from collections.abc import Iterable
from typing import NamedTuple

from permwatch.events import AclEntry, AclKind, NtAcl, ObjectType
from permwatch.wire import memo_by_identity

MAX_PATH_CHARS = 4096


class PathState(NamedTuple):
    """The permission-relevant state of one path as read from the filesystem."""

    object_type: ObjectType
    uid: int
    gid: int
    mode: int
    acl: tuple[AclEntry, ...]
    default_acl: tuple[AclEntry, ...]
    acl_kind: AclKind = "posix"
    """Which kind of ACL the state holds (the contract's ``FsPermissionEvent.acl_kind``): ``nt`` adds ``nt_acl``."""
    nt_acl: NtAcl | None = None
    """With ``acl_kind`` ``nt``: the Windows ACL Samba serves (readers hand out one object per distinct one)."""

    @property
    def is_dir(self) -> bool:
        return self.object_type is ObjectType.DIRECTORY

    @property
    def fingerprint(self) -> bytes:
        """A digest of everything published except resolved names, which may come and go."""
        acl, default_acl = self.acl, self.default_acl
        key = (
            self.object_type,
            self.uid,
            self.gid,
            self.mode,
            id(acl),
            id(default_acl),
            self.acl_kind,
            id(self.nt_acl),
        )
        found = _FINGERPRINTS.get(key)
        if found is not None and found[0] is acl and found[1] is default_acl and found[3] is self.nt_acl:
            return found[2]
        text = (
            f"{self.object_type.value}|{self.uid}|{self.gid}|{self.mode}"
            f"|{_entries_signature(acl)}|{_entries_signature(default_acl)}"
        )
        if self.acl_kind != "posix":  # POSIX states keep the fingerprints stores already hold
            text += f"|{self.acl_kind}"
        if self.nt_acl is not None:
            text += f"|{_nt_signature(self.nt_acl)}"
        digest = hashlib.blake2b(text.encode(), digest_size=16).digest()
        if len(_FINGERPRINTS) >= 4096:
            _FINGERPRINTS.clear()
        _FINGERPRINTS[key] = (acl, default_acl, digest, self.nt_acl)
        return digest


_FINGERPRINTS: dict[tuple[ObjectType, int, int, int, int, int, str, int], tuple[object, object, bytes, object]] = {}
"""Digests of recurring states, by the identity of their ACL tuples (held, so an id is not reused)."""


def _signature(entries: tuple[AclEntry, ...]) -> str:
    return ",".join(f"{entry.tag.value}:{entry.qualifier}:{entry.perms}" for entry in entries)


_entries_signature = memo_by_identity(_signature)


def _nt_text(nt_acl: NtAcl) -> str:
    return nt_acl.model_dump_json()


_nt_signature = memo_by_identity(_nt_text)
"""Few distinct ACLs recur across a tree (see :meth:`NameCache.decoded_acl`): their text is remembered."""


def object_type_of(mode: int) -> ObjectType:
    if stat.S_ISDIR(mode):
        return ObjectType.DIRECTORY
    if stat.S_ISREG(mode):
        return ObjectType.FILE
    if stat.S_ISLNK(mode):
        return ObjectType.SYMLINK
    return ObjectType.OTHER


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
