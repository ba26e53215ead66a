"""Read and write POSIX ACLs through their extended attributes, without libacl.

The kernel exposes a path's access ACL as the ``system.posix_acl_access``
xattr and a directory's default ACL as ``system.posix_acl_default``, both in
one binary layout: a little-endian u32 version (2) followed by 8-byte entries
``(u16 tag, u16 perm, u32 id)``. A path without an extended ACL has no access
xattr; its ACL is the minimal one implied by the mode, exactly as ``getfacl``
shows it. Entries come back in canonical order (user_obj, users by id,
group_obj, groups by id, mask, other) with qualifiers resolved to names
through a small cache, since name service lookups can be slow.
"""

from __future__ import annotations

import errno
import grp
import os
import pwd
import re
import struct
import time
from collections.abc import Callable, Iterable

from permwatch.events import AclEntry, AclTag

ACCESS_XATTR = "system.posix_acl_access"
DEFAULT_XATTR = "system.posix_acl_default"

XATTR_VERSION = 2
UNDEFINED_ID = 0xFFFFFFFF
_HEADER = struct.Struct("<I")
_ENTRY = struct.Struct("<HHI")

TAG_CODES: dict[AclTag, int] = {
    AclTag.USER_OBJ: 0x01,
    AclTag.USER: 0x02,
    AclTag.GROUP_OBJ: 0x04,
    AclTag.GROUP: 0x08,
    AclTag.MASK: 0x10,
    AclTag.OTHER: 0x20,
}
_TAGS_BY_CODE = {code: tag for tag, code in TAG_CODES.items()}
_CANONICAL_RANK = {tag: rank for rank, tag in enumerate(TAG_CODES)}
_NAMED_TAGS = (AclTag.USER, AclTag.GROUP)
_REQUIRED_TAGS = (AclTag.USER_OBJ, AclTag.GROUP_OBJ, AclTag.OTHER)
_PERMS_TEXT = re.compile(r"[r-][w-][x-]|(?=.)r?w?x?")
# The path has no ACL of that kind, or its filesystem keeps none.
_NO_ACL_ERRNOS = frozenset({errno.ENODATA, errno.ENOTSUP, errno.EOPNOTSUPP})


class MalformedAclError(ValueError):
    """An ACL xattr (or a list of entries to write) that is not a valid POSIX ACL."""

    def __init__(self, reason: str, *, path: str | None = None) -> None:
        super().__init__(reason if path is None else f"{path}: {reason}")
        self.reason = reason
        self.path = path


MAX_REMEMBERED_ACLS = 4096


class NameCache:
    """uid → user name and gid → group name, remembered for ``ttl_seconds``, and the ACL
    xattrs decoded with those names (:meth:`decoded_acl`).

    Unknown ids are remembered too (as ``None``) so a path full of orphaned
    ids does not hit the name service once per entry.
    """

    def __init__(self, *, ttl_seconds: float = 600.0, clock: Callable[[], float] = time.monotonic) -> None:
        self._ttl = ttl_seconds
        self._clock = clock
        self._users: dict[int, tuple[str | None, float]] = {}
        self._groups: dict[int, tuple[str | None, float]] = {}
        self._acls: dict[bytes, tuple[AclEntry, ...]] = {}
        self._acls_until = 0.0

    def decoded_acl(self, raw: bytes, *, path: str | None = None) -> tuple[AclEntry, ...]:
        """:func:`decode_acl` of ``raw``, remembered for as long as the names in it are.

        A tree has few distinct ACLs, so a walk decodes each once, and every path with the
        same xattr gets the very same tuple (callers may memoise by identity).
        """
        now = self._clock()
        if now >= self._acls_until or len(self._acls) >= MAX_REMEMBERED_ACLS:
            self._acls.clear()
            self._acls_until = now + self._ttl
        found = self._acls.get(raw)
        if found is None:
            found = self._acls[raw] = decode_acl(raw, names=self, path=path)
        return found

    def user(self, uid: int) -> str | None:
        return self._lookup(self._users, uid, _user_name)

    def group(self, gid: int) -> str | None:
        return self._lookup(self._groups, gid, _group_name)

    def clear(self) -> None:
        self._users.clear()
        self._groups.clear()
        self._acls.clear()

    def _lookup(
        self, cache: dict[int, tuple[str | None, float]], ident: int, resolve: Callable[[int], str | None]
    ) -> str | None:
        now = self._clock()
        cached = cache.get(ident)
        if cached is not None and cached[1] > now:
            return cached[0]
        name = resolve(ident)
        cache[ident] = (name, now + self._ttl)
        return name


def _user_name(uid: int) -> str | None:
    try:
        return pwd.getpwuid(uid).pw_name
    except KeyError:
        return None


def _group_name(gid: int) -> str | None:
    try:
        return grp.getgrgid(gid).gr_name
    except KeyError:
        return None


DEFAULT_NAMES = NameCache()


# ------------------------------------------------------------------ decoding


def decode_acl(raw: bytes, *, names: NameCache | None = None, path: str | None = None) -> tuple[AclEntry, ...]:
    """Parse one ACL xattr value into entries in canonical order.

    Raises :class:`MalformedAclError` for a wrong version or length, an unknown
    tag, permission bits beyond rwx, a named entry without an id, duplicates,
    or a missing required entry. An xattr with no entries decodes to ``()``.
    """
    names = DEFAULT_NAMES if names is None else names
    if len(raw) < _HEADER.size or (len(raw) - _HEADER.size) % _ENTRY.size:
        raise MalformedAclError(f"ACL xattr has invalid length {len(raw)}", path=path)
    (version,) = _HEADER.unpack_from(raw)
    if version != XATTR_VERSION:
        raise MalformedAclError(f"unsupported ACL xattr version {version}", path=path)
    entries = []
    for code, perms, ident in _ENTRY.iter_unpack(raw[_HEADER.size :]):
        tag = _TAGS_BY_CODE.get(code)
        if tag is None:
            raise MalformedAclError(f"unknown ACL tag 0x{code:x}", path=path)
        if perms & ~0o7:
            raise MalformedAclError(f"invalid permission bits 0x{perms:x} in {tag.value} entry", path=path)
        if tag in _NAMED_TAGS:
            if ident == UNDEFINED_ID:
                raise MalformedAclError(f"{tag.value} entry without an id", path=path)
            name = names.user(ident) if tag is AclTag.USER else names.group(ident)
            entries.append(AclEntry(tag=tag, qualifier=ident, name=name, perms=perms))
        else:
            entries.append(AclEntry(tag=tag, perms=perms))
    if not entries:
        return ()
    ordered = canonical_order(entries)
    _check_complete(ordered, path=path)
    return ordered


def canonical_order(entries: Iterable[AclEntry]) -> tuple[AclEntry, ...]:
    """user_obj, users by id, group_obj, groups by id, mask, other (getfacl's order)."""
    return tuple(sorted(entries, key=_canonical_key))


def _canonical_key(entry: AclEntry) -> tuple[int, int]:
    return _CANONICAL_RANK[entry.tag], -1 if entry.qualifier is None else entry.qualifier


def _check_complete(ordered: tuple[AclEntry, ...], *, path: str | None) -> None:
    seen: set[tuple[AclTag, int | None]] = set()
    for entry in ordered:
        key = (entry.tag, entry.qualifier)
        if key in seen:
            who = "" if entry.qualifier is None else f" {entry.qualifier}"
            raise MalformedAclError(f"duplicate {entry.tag.value}{who} entry", path=path)
        seen.add(key)
    tags = {tag for tag, _ in seen}
    for required in _REQUIRED_TAGS:
        if required not in tags:
            raise MalformedAclError(f"ACL has no {required.value} entry", path=path)
    if tags & set(_NAMED_TAGS) and AclTag.MASK not in tags:
        raise MalformedAclError("ACL has named entries but no mask", path=path)


def acl_from_mode(mode: int) -> tuple[AclEntry, ...]:
    """The minimal ACL a path without an extended ACL has: user_obj, group_obj and other."""
    return _MINIMAL_ACLS[mode & 0o777]


_MINIMAL_ACLS = tuple(
    (
        AclEntry(tag=AclTag.USER_OBJ, perms=(mode >> 6) & 0o7),
        AclEntry(tag=AclTag.GROUP_OBJ, perms=(mode >> 3) & 0o7),
        AclEntry(tag=AclTag.OTHER, perms=mode & 0o7),
    )
    for mode in range(0o1000)
)


# ------------------------------------------------------------------- reading


def read_acl(path: str, *, mode: int | None = None, names: NameCache | None = None) -> tuple[AclEntry, ...]:
    """The access ACL of ``path`` (not following a final symlink).

    Without an access xattr the ACL is derived from ``mode`` (``lstat`` when
    not given). OS errors other than "no such ACL" propagate.
    """
    raw = _get_xattr(path, ACCESS_XATTR)
    if raw is None:
        return acl_from_mode(os.lstat(path).st_mode if mode is None else mode)
    return (DEFAULT_NAMES if names is None else names).decoded_acl(raw, path=path)


def read_default_acl(path: str, *, names: NameCache | None = None) -> tuple[AclEntry, ...]:
    """The default ACL of directory ``path``; ``()`` when it has none."""
    raw = _get_xattr(path, DEFAULT_XATTR)
    if raw is None:
        return ()
    return (DEFAULT_NAMES if names is None else names).decoded_acl(raw, path=path)


def _get_xattr(path: str, attribute: str) -> bytes | None:
    try:
        return os.getxattr(path, attribute, follow_symlinks=False)
    except OSError as exc:
        if exc.errno in _NO_ACL_ERRNOS:
            return None
        raise


# ------------------------------------------------------------------- writing


def encode_acl(entries: Iterable[AclEntry]) -> bytes:
    """The xattr value for ``entries`` (any order; written canonically).

    Raises :class:`MalformedAclError` when the entries do not form a valid ACL.
    """
    ordered = canonical_order(entries)
    for entry in ordered:
        if entry.tag in _NAMED_TAGS and entry.qualifier is None:
            raise MalformedAclError(f"{entry.tag.value} entry needs a qualifier")
        if entry.tag not in _NAMED_TAGS and entry.qualifier is not None:
            raise MalformedAclError(f"{entry.tag.value} entry cannot have a qualifier")
        if entry.qualifier is not None and not 0 <= entry.qualifier < UNDEFINED_ID:
            raise MalformedAclError(f"{entry.tag.value} qualifier {entry.qualifier} out of range")
    _check_complete(ordered, path=None)
    parts = [_HEADER.pack(XATTR_VERSION)]
    for entry in ordered:
        ident = UNDEFINED_ID if entry.qualifier is None else entry.qualifier
        parts.append(_ENTRY.pack(TAG_CODES[entry.tag], entry.perms, ident))
    return b"".join(parts)


def write_acl(path: str, entries: Iterable[AclEntry], *, default: bool = False) -> None:
    """Set the access (or, with ``default``, the default) ACL of ``path``.

    Writing an access ACL also updates the mode, as ``setfacl`` does. Writing
    an empty default ACL removes it.
    """
    entries = tuple(entries)
    if default and not entries:
        try:
            os.removexattr(path, DEFAULT_XATTR, follow_symlinks=False)
        except OSError as exc:
            if exc.errno not in _NO_ACL_ERRNOS:
                raise
        return
    os.setxattr(path, DEFAULT_XATTR if default else ACCESS_XATTR, encode_acl(entries), follow_symlinks=False)


def parse_acl_text(text: str) -> tuple[AclEntry, ...]:
    """Entries from short text such as ``"u::rwx,u:1001:r-x,g::r-x,m::rwx,o::---"``.

    Qualifiers must be numeric; meant for tests and demos, not for user input.
    """
    tags = {"u": AclTag.USER, "user": AclTag.USER, "g": AclTag.GROUP, "group": AclTag.GROUP}
    fixed = {"m": AclTag.MASK, "mask": AclTag.MASK, "o": AclTag.OTHER, "other": AclTag.OTHER}
    entries = []
    for item in filter(None, (part.strip() for part in text.split(","))):
        try:
            kind, who, perms_text = item.split(":")
        except ValueError:
            raise MalformedAclError(f"not an ACL entry: {item!r}") from None
        if not _PERMS_TEXT.fullmatch(perms_text):
            raise MalformedAclError(f"invalid permissions in ACL entry: {item!r}")
        perms = sum(bit for ch, bit in (("r", 4), ("w", 2), ("x", 1)) if ch in perms_text)
        if kind in fixed and not who:
            entries.append(AclEntry(tag=fixed[kind], perms=perms))
        elif kind in tags and who.isdigit():
            entries.append(AclEntry(tag=tags[kind], qualifier=int(who), perms=perms))
        elif kind in tags and not who:
            tag = AclTag.USER_OBJ if tags[kind] is AclTag.USER else AclTag.GROUP_OBJ
            entries.append(AclEntry(tag=tag, perms=perms))
        else:
            raise MalformedAclError(f"not an ACL entry (qualifiers must be numeric): {item!r}")
    return canonical_order(entries)
