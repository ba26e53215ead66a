"""Unit tests for the ``security.NTACL`` decoder and Samba's stale-blob rule (`collectors.ntacl`).

Fixed blobs come from a real Samba 4.17.12 (Debian): ``SMBD_V4_FOLDER`` is what smbd with ``vfs objects =
acl_xattr`` wrote on a folder after ``smbcacls --add`` of an Authenticated Users READ ACE (OI|CI) and an Everyone
deny ACE; versions 1–3, which 4.17 no longer writes, are Samba's own NDR (``ndr_pack(xattr.NTACL(...))`` from
Debian's python3-samba) around that blob's descriptor; ``SMBD_V4_FILE`` is a file smbd created on a ``put``
into a folder with inheritable ACEs. Hypothesis round-trips descriptors through an encoder kept
here, and 10,000 mutated blobs must each decode or raise `NtAclError`, nothing else.
"""

from __future__ import annotations

import contextlib
import random
import struct

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from collectors.ntacl import (
    HASH_SIZE,
    HASH_TYPE_SHA256,
    SE_DACL_PRESENT,
    SE_SELF_RELATIVE,
    Ace,
    AceFlags,
    AceType,
    NtAcl,
    NtAclError,
    PosixState,
    SecurityDescriptor,
    Served,
    decode_ntacl,
    decode_security_descriptor,
    is_stale,
    posix_acl_hash,
    served_descriptor,
)

# fmt: off
SAMBA_V1 = bytes.fromhex(
    "0100010000000200010004801c0000002c000000000000003c0000000102000000000016010000000000000001020000"
    "0000001602000000000000000200b00008000000010014000100000001010000000000010000000000001400a9001200"
    "010100000000000100000000000b1400a9001200010100000000000100000000000b1400ff011f000101000000000003"
    "00000000000b1400a900120001010000000000030100000000031400a900120001010000000000050b00000000001800"
    "ff011f000102000000000016010000000000000000001800a900120001020000000000160200000000000000"
)
SAMBA_V2 = bytes.fromhex(
    "020002000000020004000200000102030405060708090a0b0c0d0e0f0100048030000000400000000000000050000000"
    "01020000000000160100000000000000010200000000001602000000000000000200b000080000000100140001000000"
    "01010000000000010000000000001400a9001200010100000000000100000000000b1400a90012000101000000000001"
    "00000000000b1400ff011f00010100000000000300000000000b1400a900120001010000000000030100000000031400"
    "a900120001010000000000050b00000000001800ff011f000102000000000016010000000000000000001800a9001200"
    "01020000000000160200000000000000"
)
SAMBA_V3 = bytes.fromhex(
    "0300030000000200040002000100000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f2021"
    "22232425262728292a2b2c2d2e2f303132333435363738393a3b3c3d3e3f000001000480640000007400000000000000"
    "8400000001020000000000160100000000000000010200000000001602000000000000000200b0000800000001001400"
    "0100000001010000000000010000000000001400a9001200010100000000000100000000000b1400a900120001010000"
    "0000000100000000000b1400ff011f00010100000000000300000000000b1400a9001200010100000000000301000000"
    "00031400a900120001010000000000050b00000000001800ff011f000102000000000016010000000000000000001800"
    "a900120001020000000000160200000000000000"
)
SMBD_V4_FOLDER = bytes.fromhex(
    "0400040000000200040002000100bbdff5b95b617c376f79581b51a280c1d1cb13482bb642066c7728dd3b1c10bf0000"
    "000000000000000000000000000000000000000000000000000000000000706f7369785f61636c0044484990e985dd01"
    "d8bbaaaa5834d43d2ce4291474d4e695f5bc95dab49b8f5e3db75bacbb8c71b300000000000000000000000000000000"
    "0000000000000000000000000000000001000480b4000000c400000000000000d4000000010200000000001601000000"
    "00000000010200000000001602000000000000000200b000080000000100140001000000010100000000000100000000"
    "00001400a9001200010100000000000100000000000b1400a9001200010100000000000100000000000b1400ff011f00"
    "010100000000000300000000000b1400a900120001010000000000030100000000031400a90012000101000000000005"
    "0b00000000001800ff011f000102000000000016010000000000000000001800a9001200010200000000001602000000"
    "00000000"
)
# A file put over SMB into a folder with Authenticated Users READ (OI|CI) and a deny of 0x1 (OI) for a user.
SMBD_V4_FILE = bytes.fromhex(
    "040004000000020004000200010091172e5c4f8e81e43003260a1120a060e23ecd689af8b52d0a0324d91050c0580000"
    "000000000000000000000000000000000000000000000000000000000000706f7369785f61636c0002ffd753eb85dd01"
    "5c91c6565fe405b35dcf3c9f79e0fad9a2c2fb54b6913843f4dfdfce7798f6d900000000000000000000000000000000"
    "0000000000000000000000000000000001000480b4000000d000000000000000ec000000010500000000000515000000"
    "a020d9711056ac07abf58379e8030000010500000000000515000000a020d9711056ac07abf583790102000002009c00"
    "050000000100240001000000010500000000000515000000a020d9711056ac07abf58379e903000000001400a9001200"
    "01010000000000010000000000002400ff011f00010500000000000515000000a020d9711056ac07abf58379e8030000"
    "00002400a9001200010500000000000515000000a020d9711056ac07abf583790102000000001400a900120001010000"
    "000000050b000000"
)
FILE_ACCESS_ACL = bytes.fromhex(
    "0200000001000700ffffffff02000700e903000002000100ea03000004000500ffffffff08000500e903000010000700ffffffff"
    "20000500ffffffff"
)
# The folder's POSIX side when smbd wrote SMBD_V4_FOLDER (root:root, drwxrwx--x plus ACLs Samba set).
FOLDER_ACCESS_ACL = bytes.fromhex(
    "0200000001000700ffffffff020007000000000004000500ffffffff080005000000000010000700ffffffff20000100ffffffff"
)
FOLDER_DEFAULT_ACL = bytes.fromhex(
    "0200000001000700ffffffff020007000000000004000500ffffffff080005000000000010000700ffffffff20000500ffffffff"
)
# fmt: on
FOLDER_POSIX = PosixState(
    access_acl=FOLDER_ACCESS_ACL, default_acl=FOLDER_DEFAULT_ACL, is_directory=True, uid=0, gid=0, mode=0o40771
)

FILE_POSIX = PosixState(
    access_acl=FILE_ACCESS_ACL, default_acl=None, is_directory=False, uid=1001, gid=1001, mode=0o100775
)

READ = 0x001200A9  # what smbcacls calls READ: FILE_GENERIC_READ | FILE_EXECUTE
FULL = 0x001F01FF
OI_CI_IO = AceFlags.OBJECT_INHERIT | AceFlags.CONTAINER_INHERIT | AceFlags.INHERIT_ONLY
# What `smbcacls --get --numeric` printed for the folder, in the stored order.
FOLDER_DACL = (
    Ace(AceType.ACCESS_DENIED, AceFlags(0), 0x00000001, "S-1-1-0"),
    Ace(AceType.ACCESS_ALLOWED, AceFlags(0), READ, "S-1-1-0"),
    Ace(AceType.ACCESS_ALLOWED, OI_CI_IO, READ, "S-1-1-0"),
    Ace(AceType.ACCESS_ALLOWED, OI_CI_IO, FULL, "S-1-3-0"),
    Ace(AceType.ACCESS_ALLOWED, OI_CI_IO, READ, "S-1-3-1"),
    Ace(AceType.ACCESS_ALLOWED, AceFlags.OBJECT_INHERIT | AceFlags.CONTAINER_INHERIT, READ, "S-1-5-11"),
    Ace(AceType.ACCESS_ALLOWED, AceFlags(0), FULL, "S-1-22-1-0"),
    Ace(AceType.ACCESS_ALLOWED, AceFlags(0), READ, "S-1-22-2-0"),
)
FOLDER_SD = SecurityDescriptor(
    revision=1,
    control=SE_SELF_RELATIVE | SE_DACL_PRESENT,
    owner="S-1-22-1-0",
    group="S-1-22-2-0",
    dacl=FOLDER_DACL,
    sacl_present=False,
)


# -- an encoder, for round trips ---------------------------------------------------------------------------------


def encode_sid(sid: str) -> bytes:
    parts = sid.split("-")
    authority = int(parts[2], 16) if parts[2].startswith("0x") else int(parts[2])
    subs = [int(p) for p in parts[3:]]
    return struct.pack("<BB", 1, len(subs)) + authority.to_bytes(6, "big") + struct.pack(f"<{len(subs)}I", *subs)


def encode_ace(ace: Ace) -> bytes:
    assert ace.trustee is not None
    body = struct.pack("<I", ace.access_mask) + encode_sid(ace.trustee)
    return struct.pack("<BBH", ace.ace_type, int(ace.flags), 4 + len(body)) + body


def encode_sd(sd: SecurityDescriptor, base: int) -> bytes:
    """A self-relative descriptor that will sit at offset ``base`` of its blob (offsets count from the blob's
    start), laid out as Samba's NDR lays it out: header, owner, group, DACL."""
    body = b""
    offsets = []
    for sid in (sd.owner, sd.group):
        offsets.append(base + 20 + len(body) if sid else 0)
        body += encode_sid(sid) if sid else b""
    dacl_offset = 0
    if sd.dacl is not None:
        dacl_offset = base + 20 + len(body)
        aces = b"".join(encode_ace(ace) for ace in sd.dacl)
        body += struct.pack("<BBHHH", 2, 0, 8 + len(aces), len(sd.dacl), 0) + aces
    header = struct.pack("<BBHIIII", sd.revision, 0, sd.control, offsets[0], offsets[1], 0, dacl_offset)
    return header + body


def encode_ntacl(ntacl: NtAcl) -> bytes:
    """The NDR of ``xattr_NTACL`` (librpc/idl/xattr.idl) as libndr pushes it."""
    out = struct.pack("<HHI", ntacl.version, ntacl.version, 0x00020000)
    if ntacl.version == 1:
        return out + encode_sd(ntacl.descriptor, len(out))
    out += struct.pack("<I", 0x00020004)
    if ntacl.version == 2:
        out += ntacl.hash[:16]
        return out + encode_sd(ntacl.descriptor, len(out))
    out += struct.pack("<H", ntacl.hash_type) + ntacl.hash
    if ntacl.version == 4:
        out += (ntacl.description or "").encode() + b"\0"
        out += bytes(-len(out) % 4) + struct.pack("<Q", ntacl.time) + ntacl.sys_acl_hash
    out += bytes(-len(out) % 4)
    return out + encode_sd(ntacl.descriptor, len(out))


# -- fixed blobs from Samba ----------------------------------------------------------------------------------------


def test_smbd_v4_blob_decodes_to_what_smbcacls_reported() -> None:
    ntacl = decode_ntacl(SMBD_V4_FOLDER)
    assert ntacl.version == 4
    assert ntacl.hash_type == HASH_TYPE_SHA256
    assert ntacl.description == "posix_acl"
    assert ntacl.time == 0x01DD85E990494844  # 2026-12-07, when smbd stored it
    assert ntacl.descriptor == FOLDER_SD
    assert not ntacl.descriptor.null_dacl
    assert [ace.inherit_only for ace in FOLDER_DACL] == [False, False, True, True, True, False, False, False]


def test_smbd_v4_file_blob_decodes_to_what_smbcacls_reported_and_is_served() -> None:
    domain = "S-1-5-21-1910055072-128734736-2038691243"
    ntacl = decode_ntacl(SMBD_V4_FILE)
    assert (ntacl.descriptor.owner, ntacl.descriptor.group) == (f"{domain}-1000", f"{domain}-513")
    assert ntacl.descriptor.dacl == (
        Ace(AceType.ACCESS_DENIED, AceFlags(0), 0x00000001, f"{domain}-1001"),
        Ace(AceType.ACCESS_ALLOWED, AceFlags(0), READ, "S-1-1-0"),
        Ace(AceType.ACCESS_ALLOWED, AceFlags(0), FULL, f"{domain}-1000"),
        Ace(AceType.ACCESS_ALLOWED, AceFlags(0), READ, f"{domain}-513"),
        Ace(AceType.ACCESS_ALLOWED, AceFlags(0), READ, "S-1-5-11"),
    )
    # a file: Samba hashes a null default-ACL pointer
    assert served_descriptor(ntacl, FILE_POSIX) is Served.STORED
    assert is_stale(ntacl, PosixState(FILE_ACCESS_ACL, None, False, 1001, 1001, 0o100755))


@pytest.mark.parametrize(("blob", "version"), [(SAMBA_V1, 1), (SAMBA_V2, 2), (SAMBA_V3, 3)])
def test_samba_v1_to_v3_blobs_decode(blob: bytes, version: int) -> None:
    ntacl = decode_ntacl(blob)
    assert ntacl.version == version
    assert ntacl.descriptor == FOLDER_SD
    if version == 2:
        assert ntacl.hash == bytes(range(16)) + bytes(HASH_SIZE - 16)
    if version == 3:
        assert (ntacl.hash_type, ntacl.hash) == (HASH_TYPE_SHA256, bytes(range(64)))


@pytest.mark.parametrize("blob", [SAMBA_V1, SAMBA_V2, SAMBA_V3, SMBD_V4_FOLDER, SMBD_V4_FILE])
def test_encoder_reproduces_samba_bytes(blob: bytes) -> None:
    """The test encoder is Samba's layout, byte for byte, so round trips below exercise the real format."""
    assert encode_ntacl(decode_ntacl(blob)) == blob


def test_sliced_descriptor_is_refused_not_decoded_as_garbage() -> None:
    """The trap from issue 16: the descriptor's offsets count from the blob's start."""
    start = 160
    with pytest.raises(NtAclError):
        decode_security_descriptor(SMBD_V4_FOLDER[start:])
    assert decode_security_descriptor(SMBD_V4_FOLDER, start) == FOLDER_SD


# -- the stale-blob rule -------------------------------------------------------------------------------------------


def test_v4_hash_equals_the_one_smbd_stored() -> None:
    assert posix_acl_hash(FOLDER_POSIX) == decode_ntacl(SMBD_V4_FOLDER).sys_acl_hash
    assert served_descriptor(decode_ntacl(SMBD_V4_FOLDER), FOLDER_POSIX) is Served.STORED
    assert not is_stale(decode_ntacl(SMBD_V4_FOLDER), FOLDER_POSIX)


@pytest.mark.parametrize(
    "changed",
    [
        # setfacl -m u:1000:r-x: one more named-user entry
        FOLDER_POSIX.__class__(
            access_acl=FOLDER_ACCESS_ACL[:20] + bytes.fromhex("02000500e8030000") + FOLDER_ACCESS_ACL[20:],
            default_acl=FOLDER_DEFAULT_ACL,
            is_directory=True,
            uid=0,
            gid=0,
            mode=0o40771,
        ),
        PosixState(FOLDER_ACCESS_ACL, FOLDER_DEFAULT_ACL, True, 0, 0, 0o40775),  # chmod o+r
        PosixState(FOLDER_ACCESS_ACL, FOLDER_DEFAULT_ACL, True, 1000, 0, 0o40771),  # chown
        PosixState(FOLDER_ACCESS_ACL, None, True, 0, 0, 0o40771),  # setfacl -k
    ],
)
def test_any_change_on_the_posix_side_makes_the_v4_blob_stale(changed: PosixState) -> None:
    ntacl = decode_ntacl(SMBD_V4_FOLDER)
    assert served_descriptor(ntacl, changed) is Served.IF_MAPPED_HASH_MATCHES
    assert is_stale(ntacl, changed)


def test_versions_1_and_2_and_ignore_system_acls_are_served_unchecked() -> None:
    changed = PosixState(None, None, True, 5, 5, 0o40700)
    assert served_descriptor(decode_ntacl(SAMBA_V1), changed) is Served.STORED
    assert served_descriptor(decode_ntacl(SAMBA_V2), changed) is Served.STORED
    assert served_descriptor(decode_ntacl(SMBD_V4_FOLDER), changed, ignore_system_acls=True) is Served.STORED


def test_unknown_hash_type_means_samba_serves_posix() -> None:
    ntacl = decode_ntacl(SMBD_V4_FOLDER)
    blob = SMBD_V4_FOLDER[:12] + struct.pack("<H", 2) + SMBD_V4_FOLDER[14:]
    assert served_descriptor(decode_ntacl(blob), FOLDER_POSIX) is Served.FROM_POSIX
    assert ntacl.hash_type == HASH_TYPE_SHA256


def test_file_without_acl_xattr_hashes_its_mode_entries() -> None:
    """libacl gives a file without the xattr USER_OBJ/GROUP_OBJ/OTHER from its mode; Samba hashes that."""
    from_mode = PosixState(None, None, False, 1000, 100, 0o100640)
    explicit = PosixState(
        bytes.fromhex("0200000001000600ffffffff04000400ffffffff20000000ffffffff"), None, False, 1000, 100, 0o100640
    )
    assert posix_acl_hash(from_mode) == posix_acl_hash(explicit)


@pytest.mark.parametrize(
    "xattr", [b"", b"\x02\0\0", bytes.fromhex("01000000"), bytes.fromhex("0200000040000700ffffffff"), b"\x02\0\0\0\0"]
)
def test_malformed_posix_acl_xattr_raises(xattr: bytes) -> None:
    with pytest.raises(NtAclError):
        posix_acl_hash(PosixState(xattr, None, False, 0, 0, 0o100600))


# -- malformed blobs -----------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("blob", "reason"),
    [
        (b"", "truncated"),
        (SMBD_V4_FOLDER[:1], "truncated"),
        (SMBD_V4_FOLDER[:100], "truncated"),
        (SMBD_V4_FOLDER[:170], "truncated"),
        (SMBD_V4_FOLDER[:-4], "past"),
        (struct.pack("<HH", 5, 5) + SMBD_V4_FOLDER[4:], "unknown NTACL version 5"),
        (struct.pack("<HH", 0, 0) + SMBD_V4_FOLDER[4:], "unknown NTACL version 0"),
        (struct.pack("<HH", 4, 3) + SMBD_V4_FOLDER[4:], "union level"),
        (SMBD_V4_FOLDER[:4] + bytes(4) + SMBD_V4_FOLDER[8:], "null info pointer"),
        (SMBD_V4_FOLDER[:164] + struct.pack("<I", 10_000) + SMBD_V4_FOLDER[168:], "owner offset 10000 outside"),
        (SMBD_V4_FOLDER[:176] + struct.pack("<I", 100) + SMBD_V4_FOLDER[180:], "DACL offset 100 outside"),
        (SMBD_V4_FOLDER[:78] + b"\xff" + SMBD_V4_FOLDER[79:], "not UTF-8"),
        (SMBD_V4_FOLDER[:78] + b"x" * (len(SMBD_V4_FOLDER) - 78), "no terminating NUL"),
    ],
)
def test_malformed_blob_raises_ntaclerror_with_reason(blob: bytes, reason: str) -> None:
    with pytest.raises(NtAclError, match=reason):
        decode_ntacl(blob)


def test_ten_thousand_mutated_blobs_decode_or_raise_ntaclerror() -> None:
    """Byte flips, truncations, insertions, deletions and splices of real blobs, plus random bytes with a valid
    version: each decodes, or raises NtAclError; no other exception, ever."""
    rng = random.Random(16)
    seeds = [SAMBA_V1, SAMBA_V2, SAMBA_V3, SMBD_V4_FOLDER, SMBD_V4_FILE]
    outcomes = {"decoded": 0, "refused": 0}
    for _ in range(10_000):
        blob = bytearray(rng.choice(seeds))
        for _ in range(rng.randint(1, 4)):
            op = rng.randrange(6)
            at = rng.randrange(len(blob) + 1)
            if op == 0 and blob:
                blob[min(at, len(blob) - 1)] = rng.randrange(256)
            elif op == 1:
                del blob[at:]
            elif op == 2:
                blob[at:at] = rng.randbytes(rng.randint(1, 8))
            elif op == 3:
                del blob[at : at + rng.randint(1, 8)]
            elif op == 4 and len(blob) >= at + 4:
                # an offset or count field set to something near a boundary
                blob[at : at + 4] = struct.pack("<I", rng.choice([0, 1, len(blob) - 1, len(blob), 0xFFFFFFFF]))
            else:
                blob = bytearray(struct.pack("<HH", v := rng.randint(1, 4), v) + rng.randbytes(rng.randint(0, 300)))
        try:
            decode_ntacl(bytes(blob))
        except NtAclError:
            outcomes["refused"] += 1
        else:
            outcomes["decoded"] += 1
    # both paths were exercised, so the loop tested something
    assert outcomes["decoded"] > 100 and outcomes["refused"] > 100, outcomes


@settings(max_examples=500, deadline=None)
@given(st.binary(max_size=400))
def test_arbitrary_bytes_decode_or_raise_ntaclerror(blob: bytes) -> None:
    with contextlib.suppress(NtAclError):
        decode_ntacl(blob)


# -- round trips ---------------------------------------------------------------------------------------------------

_sid_strategy = st.builds(
    lambda authority, subs: "-".join(
        ["S", "1", str(authority) if authority < 2**32 else f"0x{authority:012X}", *map(str, subs)]
    ),
    st.one_of(st.sampled_from([0, 1, 3, 5, 22]), st.integers(0, 2**48 - 1)),
    st.lists(st.integers(0, 2**32 - 1), max_size=15),
)
_ace_strategy = st.builds(
    Ace,
    st.sampled_from([AceType.ACCESS_ALLOWED, AceType.ACCESS_DENIED, AceType.ACCESS_ALLOWED_CALLBACK]),
    st.integers(0, 255).map(AceFlags),
    st.integers(0, 2**32 - 1),
    _sid_strategy,
)
_sd_strategy = st.builds(
    SecurityDescriptor,
    revision=st.just(1),
    control=st.integers(0, 0xFFFF).map(lambda c: c | SE_SELF_RELATIVE),
    owner=st.none() | _sid_strategy,
    group=st.none() | _sid_strategy,
    dacl=st.none() | st.lists(_ace_strategy, max_size=12).map(tuple),
    sacl_present=st.just(False),
)


@settings(max_examples=300, deadline=None)
@given(
    sd=_sd_strategy,
    version=st.integers(1, 4),
    hash_bytes=st.binary(min_size=HASH_SIZE, max_size=HASH_SIZE),
    description=st.text(st.characters(blacklist_characters="\0", blacklist_categories=["Cs"]), max_size=20),
    time=st.integers(0, 2**64 - 1),
)
def test_descriptors_round_trip_through_every_version(
    sd: SecurityDescriptor, version: int, hash_bytes: bytes, description: str, time: int
) -> None:
    ntacl = NtAcl(
        version=version,
        descriptor=sd,
        hash_type=HASH_TYPE_SHA256 if version >= 3 else 0,
        hash=hash_bytes[:16] + bytes(48) if version == 2 else hash_bytes if version >= 3 else bytes(HASH_SIZE),
        description=description if version == 4 else None,
        time=time if version == 4 else 0,
        sys_acl_hash=hash_bytes[::-1] if version == 4 else bytes(HASH_SIZE),
    )
    assert decode_ntacl(encode_ntacl(ntacl)) == ntacl
