"""ACL readers: how the filesystem collector reads one path, one reader per kind of ACL, chosen by name.

A reader takes a path and returns its :class:`collectors.fs.read.PathState`
(type, owner, group, mode and the ACL of the kind it reads), or ``None`` when
nothing is there; it raises ``OSError`` or :class:`MalformedAclError` when the
path cannot be read. ``[[fs]] acl_reader`` names the one a collector uses, and
the parallel scan workers build the same one; ``[[fs]] acl_reader_options``
are handed to it as keyword arguments (the ``ntacl`` reader's ``xattr_name``).
Adding a reader is one module and one line in :data:`ACL_READERS`.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any, Protocol

from collectors.acl import MalformedAclError, NameCache
from collectors.fs.read import PathState
from collectors.fs.readers.ntacl import NtAclReader
from collectors.fs.readers.posix import PosixAclReader

__all__ = ["ACL_READERS", "AclReader", "MalformedAclError", "UnknownAclReaderError", "acl_reader_named"]


class AclReader(Protocol):
    """Reads one path without following a final symlink; ``None`` when it does not exist."""

    def read(self, path: str) -> PathState | None: ...


ACL_READERS: dict[str, Callable[..., AclReader]] = {
    "posix": PosixAclReader,
    "ntacl": NtAclReader,
}
"""Reader name (the ``[[fs]] acl_reader`` setting) → the reader, built with the collector's name cache and
the ``[[fs]] acl_reader_options`` as keyword arguments."""


class UnknownAclReaderError(ValueError):
    """``[[fs]] acl_reader`` names no reader in :data:`ACL_READERS`."""


def acl_reader_named(name: str, names: NameCache, options: Mapping[str, Any] | None = None) -> AclReader:
    """The reader ``name`` selects, resolving owners and groups through ``names``, built with ``options``."""
    try:
        make = ACL_READERS[name]
    except KeyError:
        known = ", ".join(sorted(ACL_READERS))
        raise UnknownAclReaderError(f"[[fs]] acl_reader = {name!r} names no ACL reader (known: {known})") from None
    try:
        return make(names, **dict(options or {}))
    except (TypeError, ValueError) as exc:
        raise UnknownAclReaderError(f"[[fs]] acl_reader_options for {name!r}: {exc}") from None
