"""Decode Samba's ``security.NTACL`` xattr and tell whether Samba still serves it (pure, no I/O).

Samba's ``vfs_acl_xattr`` keeps a file's Windows ACL in an NDR blob (``librpc/idl/xattr.idl``: ``xattr_NTACL``, a
``uint16`` version, the union level again, a unique pointer, then per version 1–4 the hashes and a self-relative
security descriptor). The descriptor's owner/group/SACL/DACL offsets count from the start of the *blob*, not of
the descriptor (NDR's relative base is the blob), so the descriptor is decoded in place and never sliced out.
`decode_ntacl` turns a blob into an `NtAcl` (owner, group, DACL with every ACE's kind, flags, mask and trustee) or
raises `NtAclError` with the reason: a truncated blob, an unknown version, an offset or size pointing outside it.
`served_descriptor` applies Samba's stale-blob rule (``source3/modules/vfs_acl_common.c``,
``validate_nt_acl_blob``): a version 3/4 blob is served only while the hashes it stores match the file's current
POSIX ACL; `posix_acl_hash` computes the version-4 hash exactly as Samba does
(``source3/smbd/posix_acls.c``, ``posix_sys_acl_blob_get_fd``: SHA-256 over the NDR of ``smb_acl_wrapper`` from
``librpc/idl/smb_acl.idl``).
"""

from __future__ import annotations

import functools
import hashlib
import struct
from dataclasses import dataclass
from enum import IntEnum, IntFlag, StrEnum

XATTR_NAME = "security.NTACL"
HASH_SIZE = 64  # XATTR_SD_HASH_SIZE: SHA-256 in the first 32 bytes, zeros after
HASH_TYPE_NONE = 0
HASH_TYPE_SHA256 = 1

_SD_HEADER_SIZE = 20
_ACL_HEADER_SIZE = 8
_ACE_HEADER_SIZE = 4
_MAX_SUB_AUTHORITIES = 15  # MS-DTYP 2.4.2.2
_MAX_ACES = 2000  # Samba's security.idl: [range(0,2000)] uint32 num_aces
SE_DACL_PRESENT = 0x0004
SE_SACL_PRESENT = 0x0010
SE_DACL_PROTECTED = 0x1000
SE_SELF_RELATIVE = 0x8000


class NtAclError(ValueError):
    """A ``security.NTACL`` blob (or POSIX ACL xattr) that does not decode; the message says why and where."""


class AceType(IntEnum):
    """ACE types of MS-DTYP 2.4.4.1. Only the two basic ones are judged; the others are kept and marked."""

    ACCESS_ALLOWED = 0x00
    ACCESS_DENIED = 0x01
    SYSTEM_AUDIT = 0x02
    SYSTEM_ALARM = 0x03
    ACCESS_ALLOWED_COMPOUND = 0x04
    ACCESS_ALLOWED_OBJECT = 0x05
    ACCESS_DENIED_OBJECT = 0x06
    SYSTEM_AUDIT_OBJECT = 0x07
    SYSTEM_ALARM_OBJECT = 0x08
    ACCESS_ALLOWED_CALLBACK = 0x09
    ACCESS_DENIED_CALLBACK = 0x0A
    ACCESS_ALLOWED_CALLBACK_OBJECT = 0x0B
    ACCESS_DENIED_CALLBACK_OBJECT = 0x0C
    SYSTEM_AUDIT_CALLBACK = 0x0D
    SYSTEM_ALARM_CALLBACK = 0x0E
    SYSTEM_AUDIT_CALLBACK_OBJECT = 0x0F
    SYSTEM_ALARM_CALLBACK_OBJECT = 0x10
    SYSTEM_MANDATORY_LABEL = 0x11
    SYSTEM_RESOURCE_ATTRIBUTE = 0x12
    SYSTEM_SCOPED_POLICY_ID = 0x13


_OBJECT_TYPES = frozenset(
    {
        AceType.ACCESS_ALLOWED_OBJECT,
        AceType.ACCESS_DENIED_OBJECT,
        AceType.SYSTEM_AUDIT_OBJECT,
        AceType.SYSTEM_ALARM_OBJECT,
        AceType.ACCESS_ALLOWED_CALLBACK_OBJECT,
        AceType.ACCESS_DENIED_CALLBACK_OBJECT,
        AceType.SYSTEM_AUDIT_CALLBACK_OBJECT,
        AceType.SYSTEM_ALARM_CALLBACK_OBJECT,
    }
)
_DENY_TYPES = frozenset(
    {
        AceType.ACCESS_DENIED,
        AceType.ACCESS_DENIED_OBJECT,
        AceType.ACCESS_DENIED_CALLBACK,
        AceType.ACCESS_DENIED_CALLBACK_OBJECT,
    }
)
_ALLOW_TYPES = frozenset(
    {
        AceType.ACCESS_ALLOWED,
        AceType.ACCESS_ALLOWED_COMPOUND,
        AceType.ACCESS_ALLOWED_OBJECT,
        AceType.ACCESS_ALLOWED_CALLBACK,
        AceType.ACCESS_ALLOWED_CALLBACK_OBJECT,
    }
)


class AceFlags(IntFlag):
    """ACE header flags (MS-DTYP 2.4.4.1)."""

    OBJECT_INHERIT = 0x01
    CONTAINER_INHERIT = 0x02
    NO_PROPAGATE_INHERIT = 0x04
    INHERIT_ONLY = 0x08
    INHERITED = 0x10
    SUCCESSFUL_ACCESS = 0x40
    FAILED_ACCESS = 0x80


@dataclass(frozen=True, slots=True)
class Ace:
    """One ACE. ``ace_type`` is the raw type (an `AceType` when known); ``trustee`` is None only for a type whose
    body this decoder does not know (``basic`` is then false too)."""

    ace_type: int
    flags: AceFlags
    access_mask: int
    trustee: str | None

    @property
    def basic(self) -> bool:
        """A plain ACCESS_ALLOWED or ACCESS_DENIED ACE: the only kinds an access check may judge as they are."""
        return self.ace_type in (AceType.ACCESS_ALLOWED, AceType.ACCESS_DENIED)

    @property
    def allows(self) -> bool:
        return self.ace_type in _ALLOW_TYPES

    @property
    def denies(self) -> bool:
        return self.ace_type in _DENY_TYPES

    @property
    def inherit_only(self) -> bool:
        return bool(self.flags & AceFlags.INHERIT_ONLY)

    @property
    def inherited(self) -> bool:
        return bool(self.flags & AceFlags.INHERITED)


@dataclass(frozen=True, slots=True)
class SecurityDescriptor:
    """A decoded self-relative security descriptor.

    ``dacl`` is None when the descriptor has no DACL offset: with ``dacl_present`` set that is a *null* DACL
    (everyone has every right); an empty tuple is an empty DACL (nobody has any). The SACL is not decoded
    (Samba does not serve it for access), only whether one is there.
    """

    revision: int
    control: int
    owner: str | None
    group: str | None
    dacl: tuple[Ace, ...] | None
    sacl_present: bool

    @property
    def dacl_present(self) -> bool:
        return bool(self.control & SE_DACL_PRESENT)

    @property
    def null_dacl(self) -> bool:
        """Windows grants everything when the DACL is absent (not present) or present but null."""
        return not self.dacl_present or self.dacl is None


@dataclass(frozen=True, slots=True)
class NtAcl:
    """A decoded ``security.NTACL`` blob. Hashes are the stored 64-byte fields (all zero when the version has none);
    ``description`` is what created a version-4 blob (Samba 4.17 writes ``posix_acl``)."""

    version: int
    descriptor: SecurityDescriptor
    hash_type: int = HASH_TYPE_NONE
    hash: bytes = bytes(HASH_SIZE)
    description: str | None = None
    time: int = 0  # v4's NTTIME: Samba 4.17 writes when it stored the blob, newer Samba 0
    sys_acl_hash: bytes = bytes(HASH_SIZE)


# -- decoding ---------------------------------------------------------------------------------------------------


class _Reader:
    """Bounds-checked little-endian reads from one blob; every failure is an `NtAclError` naming the offset."""

    def __init__(self, data: bytes) -> None:
        self.data = data

    def take(self, offset: int, size: int, what: str) -> bytes:
        if offset < 0 or offset + size > len(self.data):
            raise NtAclError(f"truncated: {what} needs bytes {offset}..{offset + size} of a {len(self.data)}-byte blob")
        return self.data[offset : offset + size]

    def u8(self, offset: int, what: str) -> int:
        return self.take(offset, 1, what)[0]

    def u16(self, offset: int, what: str) -> int:
        value: int = struct.unpack("<H", self.take(offset, 2, what))[0]
        return value

    def u32(self, offset: int, what: str) -> int:
        value: int = struct.unpack("<I", self.take(offset, 4, what))[0]
        return value


def _align(offset: int, size: int) -> int:
    return (offset + size - 1) & ~(size - 1)


def _sid(reader: _Reader, offset: int, limit: int, what: str) -> tuple[str, int]:
    """The SID at ``offset`` as ``S-1-…`` and its length; it must end at or before ``limit``."""
    revision = reader.u8(offset, f"{what} revision")
    count = reader.u8(offset + 1, f"{what} sub-authority count")
    if revision != 1:
        raise NtAclError(f"{what} at offset {offset}: SID revision {revision}, expected 1")
    if count > _MAX_SUB_AUTHORITIES:
        raise NtAclError(f"{what} at offset {offset}: {count} sub-authorities, at most {_MAX_SUB_AUTHORITIES}")
    size = 8 + 4 * count
    if offset + size > limit:
        raise NtAclError(f"{what} at offset {offset}: {size} bytes run past its end at {limit}")
    authority = int.from_bytes(reader.take(offset + 2, 6, f"{what} authority"), "big")
    subs = struct.unpack(f"<{count}I", reader.take(offset + 8, 4 * count, f"{what} sub-authorities"))
    # MS-DTYP 2.4.2.1: the authority is decimal below 2**32, else hexadecimal
    authority_text = str(authority) if authority < 2**32 else f"0x{authority:012X}"
    return "-".join(["S", "1", authority_text, *map(str, subs)]), size


def _ace(reader: _Reader, offset: int, limit: int, index: int) -> tuple[Ace, int]:
    what = f"ACE {index}"
    ace_type = reader.u8(offset, f"{what} type")
    flags = reader.u8(offset + 1, f"{what} flags")
    size = reader.u16(offset + 2, f"{what} size")
    if size < _ACE_HEADER_SIZE + 4 or size % 4 or offset + size > limit:
        raise NtAclError(f"{what} at offset {offset}: size {size} invalid or past the ACL's end at {limit}")
    end = offset + size
    mask = reader.u32(offset + 4, f"{what} access mask")
    body = offset + 8
    trustee: str | None = None
    try:
        kind = AceType(ace_type)
    except ValueError:
        kind = None
    if kind in _OBJECT_TYPES:
        if body + 4 > end:
            raise NtAclError(f"{what} at offset {offset}: object ACE without its flags")
        object_flags = reader.u32(body, f"{what} object flags")
        body += 4 + 16 * bin(object_flags & 0x3).count("1")  # object type / inherited object type GUIDs
    # an unknown type's body, and the compound ACE's (two SIDs after a type field), are kept undecoded
    if kind is not None and kind is not AceType.ACCESS_ALLOWED_COMPOUND:
        trustee, _ = _sid(reader, body, end, f"{what} trustee")
    return Ace(ace_type=ace_type, flags=AceFlags(flags), access_mask=mask, trustee=trustee), size


def _acl(reader: _Reader, offset: int, what: str) -> tuple[Ace, ...]:
    revision = reader.u8(offset, f"{what} revision")
    size = reader.u16(offset + 2, f"{what} size")
    count = reader.u16(offset + 4, f"{what} ACE count")
    if revision not in (2, 3, 4):  # winnt.h ACL_REVISION2..4; smbcacls --set writes 3, Windows accepts it
        raise NtAclError(f"{what} at offset {offset}: ACL revision {revision}, expected 2 to 4")
    if size < _ACL_HEADER_SIZE or offset + size > len(reader.data):
        raise NtAclError(f"{what} at offset {offset}: size {size} runs past the blob's {len(reader.data)} bytes")
    if count > _MAX_ACES:
        raise NtAclError(f"{what} at offset {offset}: {count} ACEs, Samba accepts at most {_MAX_ACES}")
    limit = offset + size
    position = offset + _ACL_HEADER_SIZE
    aces = []
    for index in range(count):
        ace, ace_size = _ace(reader, position, limit, index)
        aces.append(ace)
        position += ace_size
    return tuple(aces)


def decode_security_descriptor(blob: bytes, start: int = 0) -> SecurityDescriptor:
    """Decode the self-relative descriptor at ``start`` of ``blob``, its offsets counted from the blob's start
    (as in ``security.NTACL``; pass ``start=0`` for a descriptor on its own)."""
    reader = _Reader(blob)
    header = reader.take(start, _SD_HEADER_SIZE, "security descriptor header")
    revision, _sbz1, control, owner_at, group_at, sacl_at, dacl_at = struct.unpack("<BBHIIII", header)
    if revision != 1:
        raise NtAclError(f"security descriptor at offset {start}: revision {revision}, expected 1")
    body = start + _SD_HEADER_SIZE
    for name, at in (("owner", owner_at), ("group", group_at), ("SACL", sacl_at), ("DACL", dacl_at)):
        if at and not body <= at < len(blob):
            raise NtAclError(
                f"security descriptor {name} offset {at} outside the blob's descriptor area {body}..{len(blob)}"
            )
    owner = _sid(reader, owner_at, len(blob), "owner SID")[0] if owner_at else None
    group = _sid(reader, group_at, len(blob), "group SID")[0] if group_at else None
    dacl = _acl(reader, dacl_at, "DACL") if dacl_at else None
    return SecurityDescriptor(
        revision=revision, control=control, owner=owner, group=group, dacl=dacl, sacl_present=bool(sacl_at)
    )


def decode_ntacl(blob: bytes) -> NtAcl:
    """Decode a ``security.NTACL`` blob of version 1–4; anything else raises `NtAclError`."""
    reader = _Reader(blob)
    version = reader.u16(0, "version")
    level = reader.u16(2, "union level")
    if version not in (1, 2, 3, 4):
        raise NtAclError(f"unknown NTACL version {version} (Samba writes 1 to 4)")
    if level != version:
        raise NtAclError(f"union level {level} differs from version {version}")
    if reader.u32(4, "info pointer") == 0:
        raise NtAclError(f"version {version} blob with a null info pointer")
    if version == 1:
        return NtAcl(version=1, descriptor=_pointed_sd(reader, 8, 8))
    if reader.u32(8, "descriptor pointer") == 0:
        raise NtAclError(f"version {version} blob with a null descriptor pointer")
    if version == 2:
        hash16 = reader.take(12, 16, "v2 hash")
        return NtAcl(version=2, descriptor=_pointed_sd(reader, 28, 28), hash=hash16 + bytes(HASH_SIZE - 16))
    hash_type = reader.u16(12, "hash type")
    stored_hash = reader.take(14, HASH_SIZE, "hash")
    position = 14 + HASH_SIZE
    if version == 3:
        return NtAcl(version=3, descriptor=_pointed_sd(reader, position), hash_type=hash_type, hash=stored_hash)
    # utf8string: NUL-terminated UTF-8, no length prefix
    end = blob.find(b"\0", position)
    if end < 0:
        raise NtAclError("truncated: v4 description has no terminating NUL")
    try:
        description = blob[position:end].decode("utf-8")
    except UnicodeDecodeError as exc:
        raise NtAclError(f"v4 description is not UTF-8 ({exc.reason})") from None
    position = _align(end + 1, 4)  # NTTIME is an NDR udlong: 4-aligned
    time = struct.unpack("<Q", reader.take(position, 8, "v4 time"))[0]
    position += 8
    sys_acl_hash = reader.take(position, HASH_SIZE, "sys ACL hash")
    return NtAcl(
        version=4,
        descriptor=_pointed_sd(reader, position + HASH_SIZE),
        hash_type=hash_type,
        hash=stored_hash,
        description=description,
        time=time,
        sys_acl_hash=sys_acl_hash,
    )


def _pointed_sd(reader: _Reader, position: int, aligned: int | None = None) -> SecurityDescriptor:
    start = _align(position, 4) if aligned is None else aligned
    if start > len(reader.data):
        raise NtAclError(f"truncated: no security descriptor at offset {start}")
    return decode_security_descriptor(reader.data, start)


# -- Samba's stale-blob rule ------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class PosixState:
    """What Samba hashes of a file's POSIX side: both ACL xattrs as the kernel stores them (None when absent),
    whether it is a directory, and ``st_uid``, ``st_gid`` and the whole ``st_mode`` (file type bits included)."""

    access_acl: bytes | None
    default_acl: bytes | None
    is_directory: bool
    uid: int
    gid: int
    mode: int


# kernel xattr tag (linux/posix_acl_xattr.h) -> smb_acl_tag_t (librpc/idl/smb_acl.idl)
_USER_OBJ, _USER, _GROUP_OBJ, _GROUP, _MASK, _OTHER = 0x01, 0x02, 0x04, 0x08, 0x10, 0x20
_SMB_TAG = {_USER_OBJ: 2, _USER: 1, _GROUP_OBJ: 4, _GROUP: 3, _OTHER: 5, _MASK: 6}
_POSIX_ACL_XATTR_VERSION = 2


def _posix_entries(xattr: bytes) -> list[tuple[int, int | None, int]]:
    """The kernel's ``system.posix_acl_*`` bytes as (smb tag, uid/gid or None, rwx bits), in stored order."""
    if len(xattr) < 4 or (len(xattr) - 4) % 8:
        raise NtAclError(f"POSIX ACL xattr of {len(xattr)} bytes is not a header plus 8-byte entries")
    if struct.unpack_from("<I", xattr)[0] != _POSIX_ACL_XATTR_VERSION:
        raise NtAclError("POSIX ACL xattr version is not 2")
    entries = []
    for offset in range(4, len(xattr), 8):
        tag, perm, ident = struct.unpack_from("<HHI", xattr, offset)
        if tag not in _SMB_TAG:
            raise NtAclError(f"POSIX ACL xattr entry with unknown tag {tag:#x}")
        smb_tag = _SMB_TAG[tag]
        entries.append((smb_tag, ident if tag in (_USER, _GROUP) else None, perm & 0o7))
    return entries


class _NdrWriter:
    """Just enough NDR (32-bit, little-endian) to push ``smb_acl_wrapper`` byte for byte as Samba does."""

    def __init__(self) -> None:
        self.out = bytearray()
        self.pointers = 0

    def align(self, size: int) -> None:
        self.out += bytes(-len(self.out) % size)

    def u16(self, value: int) -> None:
        self.align(2)
        self.out += struct.pack("<H", value)

    def u32(self, value: int) -> None:
        self.align(4)
        self.out += struct.pack("<I", value)

    def hyper(self, value: int) -> None:
        self.align(8)
        self.out += struct.pack("<Q", value)

    def unique_pointer(self, present: bool) -> None:
        # libndr's referent ids: 0x00020000, 0x00020004, …
        if present:
            self.u32(0x00020000 + 4 * self.pointers)
            self.pointers += 1
        else:
            self.u32(0)

    def smb_acl_t(self, entries: list[tuple[int, int | None, int]]) -> None:
        self.u32(len(entries))  # conformant array size first
        self.align(8)  # the struct holds uid_t/gid_t, which NDR pushes as hyper
        self.u32(len(entries))  # count
        self.u32(0)  # next: [value(0)]
        for tag, ident, perm in entries:
            self.align(8)
            self.u16(tag)  # a_type (enum: uint16 in NDR32)
            self.u16(tag)  # the union's switch level
            if ident is not None:
                self.hyper(ident)
            self.u32(perm)


@functools.lru_cache(maxsize=4096)  # a share repeats few POSIX states; the collector asks for each path it reads
def posix_acl_hash(state: PosixState) -> bytes:
    """The 64-byte field Samba stores as ``sys_acl_hash`` in a version-4 blob, for the file as it is now.

    As ``posix_sys_acl_blob_get_fd`` (source3/smbd/posix_acls.c) builds it: the access ACL as libacl returns it
    (a file without the xattr gets USER_OBJ/GROUP_OBJ/OTHER from its mode), for a directory also the default ACL
    (an empty list when absent; a file's is a null pointer), then ``st_uid``, ``st_gid``, ``st_mode``; pushed as
    NDR ``smb_acl_wrapper`` and hashed with SHA-256 (``hash_blob_sha256`` in vfs_acl_common.c), zero-padded to 64.
    """
    access: list[tuple[int, int | None, int]]
    if state.access_acl is None:
        mode = state.mode
        access = [(2, None, (mode >> 6) & 7), (4, None, (mode >> 3) & 7), (5, None, mode & 7)]
    else:
        access = _posix_entries(state.access_acl)
    default: list[tuple[int, int | None, int]] | None = None
    if state.is_directory:
        default = [] if state.default_acl is None else _posix_entries(state.default_acl)
    writer = _NdrWriter()
    writer.unique_pointer(True)
    writer.unique_pointer(default is not None)
    writer.hyper(state.uid)
    writer.hyper(state.gid)
    writer.u32(state.mode)
    writer.smb_acl_t(access)
    if default is not None:
        writer.smb_acl_t(default)
    return hashlib.sha256(bytes(writer.out)).digest() + bytes(HASH_SIZE - 32)


class Served(StrEnum):
    """Which descriptor Samba serves for a file with a blob, by ``validate_nt_acl_blob``'s rule."""

    STORED = "stored"  # the blob's descriptor
    FROM_POSIX = "from_posix"  # the descriptor Samba maps from the POSIX ACL; the blob is stale
    IF_MAPPED_HASH_MATCHES = "if_mapped_hash_matches"  # decided by a hash of Samba's own POSIX->NT mapping


def served_descriptor(ntacl: NtAcl, posix: PosixState, *, ignore_system_acls: bool = False) -> Served:
    """Samba's stale-blob rule, as ``validate_nt_acl_blob`` in source3/modules/vfs_acl_common.c applies it.

    Versions 1 and 2 are served as stored, unchecked. Versions 3 and 4 too under
    ``acl_xattr:ignore system acls = yes``. Otherwise a hash type other than SHA-256 means the blob is ignored
    (served from POSIX). Version 4: if ``sys_acl_hash`` equals `posix_acl_hash` of the file now, the blob is
    served. If not (and always for version 3), Samba compares the blob's ``hash`` with the SHA-256 of a v3 blob
    holding the descriptor *it maps from the POSIX ACL* (``hash_sd_sha256`` of ``SMB_VFS_NEXT_FGET_NT_ACL``);
    that mapping (posix_acls.c) is not reproduced here, so the answer is `Served.IF_MAPPED_HASH_MATCHES`. After a
    real change of the POSIX ACL, owner or permissions the mapped descriptor changes too and Samba serves it;
    a change the mapping cannot see (a setgid bit, say) leaves the blob served.

    Read in samba-team/samba at 4614f04b: vfs_acl_common.c ``validate_nt_acl_blob`` (lines 407-571) and
    ``hash_blob_sha256`` (83-99), posix_acls.c ``posix_sys_acl_blob_get_fd`` (4504-4556), smb_acl.idl; the hash
    was checked against smbd 4.17.12's stored blobs and its ``ndr_push_smb_acl_wrapper``.
    """
    if ntacl.version in (1, 2) or ignore_system_acls:
        return Served.STORED
    if ntacl.hash_type != HASH_TYPE_SHA256:
        return Served.FROM_POSIX
    if ntacl.version == 4 and ntacl.sys_acl_hash == posix_acl_hash(posix):
        return Served.STORED
    return Served.IF_MAPPED_HASH_MATCHES


def is_stale(ntacl: NtAcl, posix: PosixState) -> bool:
    """Whether Samba may no longer serve the stored descriptor: anything but `Served.STORED`. The caller reads
    the POSIX ACL as the truth then. Taking an undecided blob as stale can only over-count readers: on Samba a
    reader needs the kernel's POSIX check too, and the descriptor Samba would map from POSIX admits no more."""
    return served_descriptor(ntacl, posix) is not Served.STORED
