"""POSIX ACLs read from xattrs agree with the real ``getfacl`` on real files."""

from __future__ import annotations

import os
import shutil
import struct
import subprocess
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from collectors.acl import (
    ACCESS_XATTR,
    DEFAULT_XATTR,
    MalformedAclError,
    NameCache,
    acl_from_mode,
    decode_acl,
    encode_acl,
    parse_acl_text,
    read_acl,
    read_default_acl,
    write_acl,
)
from permwatch.events import AclEntry, AclTag

needs_acl_tools = pytest.mark.skipif(
    shutil.which("setfacl") is None or shutil.which("getfacl") is None,
    reason="setfacl/getfacl missing: apt-get install -y acl (scripts/install.sh does)",
)

Triple = tuple[str, int | None, int]


def triples(entries: tuple[AclEntry, ...]) -> list[Triple]:
    return [(entry.tag.value, entry.qualifier, entry.perms) for entry in entries]


def getfacl(path: Path, *, default: bool = False) -> list[Triple]:
    """What ``getfacl --numeric -cp`` prints, as (tag, qualifier, perms), in its order."""
    out = subprocess.run(["getfacl", "--numeric", "-cp", str(path)], check=True, capture_output=True, text=True)
    found: list[Triple] = []
    for line in out.stdout.splitlines():
        text = line.split("#", 1)[0].strip()  # drop "#effective:" remarks
        if not text:
            continue
        is_default = text.startswith("default:")
        if is_default != default:
            continue
        kind, who, perms = text.removeprefix("default:").split(":")
        bits = sum(bit for ch, bit in zip("rwx", (4, 2, 1), strict=True) if ch in perms)
        if kind in ("user", "group") and who:
            found.append((kind, int(who), bits))
        elif kind in ("user", "group"):
            found.append((f"{kind}_obj", None, bits))
        else:
            found.append((kind, None, bits))
    return found


def setfacl(*args: str) -> None:
    subprocess.run(["setfacl", *args], check=True, capture_output=True)


def raw_acl(*entries: tuple[int, int, int], version: int = 2) -> bytes:
    return struct.pack("<I", version) + b"".join(struct.pack("<HHI", *entry) for entry in entries)


UNDEF = 0xFFFFFFFF
MINIMAL = ((0x01, 7, UNDEF), (0x04, 5, UNDEF), (0x20, 0, UNDEF))


# ------------------------------------------------------------ encode / decode


@st.composite
def valid_acls(draw: st.DrawFn) -> tuple[AclEntry, ...]:
    perms = st.integers(0, 7)
    ids = st.lists(st.integers(0, 0xFFFFFFFE), unique=True, max_size=5)
    users, groups = draw(ids), draw(ids)
    entries = [
        AclEntry(tag=AclTag.USER_OBJ, perms=draw(perms)),
        AclEntry(tag=AclTag.GROUP_OBJ, perms=draw(perms)),
        AclEntry(tag=AclTag.OTHER, perms=draw(perms)),
    ]
    entries += [AclEntry(tag=AclTag.USER, qualifier=uid, perms=draw(perms)) for uid in users]
    entries += [AclEntry(tag=AclTag.GROUP, qualifier=gid, perms=draw(perms)) for gid in groups]
    wants_mask = draw(st.booleans())
    if users or groups or wants_mask:
        entries.append(AclEntry(tag=AclTag.MASK, perms=draw(perms)))
    return tuple(draw(st.permutations(entries)))


CANONICAL_RANK = {"user_obj": 0, "user": 1, "group_obj": 2, "group": 3, "mask": 4, "other": 5}


@given(valid_acls())
def test_encode_then_decode_gives_the_entries_in_canonical_order(entries: tuple[AclEntry, ...]) -> None:
    decoded = decode_acl(encode_acl(entries), names=NameCache())
    expected = sorted(triples(entries), key=lambda t: (CANONICAL_RANK[t[0]], -1 if t[1] is None else t[1]))
    assert triples(decoded) == expected


def test_decode_resolves_names_of_qualifiers_and_leaves_unknown_ones_empty() -> None:
    raw = raw_acl((0x01, 7, UNDEF), (0x02, 5, 0), (0x02, 4, 4000123), (0x04, 5, UNDEF))
    raw += struct.pack("<HHI", 0x08, 5, 0) + struct.pack("<HHI", 0x10, 7, UNDEF) + struct.pack("<HHI", 0x20, 0, UNDEF)
    decoded = decode_acl(raw, names=NameCache())
    named = {(e.tag, e.qualifier): e.name for e in decoded if e.qualifier is not None}
    assert named == {(AclTag.USER, 0): "root", (AclTag.USER, 4000123): None, (AclTag.GROUP, 0): "root"}
    assert [e.text() for e in decoded][:3] == ["user::rwx", "user:root:r-x", "user:4000123:r--"]


def test_name_cache_remembers_until_its_ttl_runs_out() -> None:
    now = [0.0]
    names = NameCache(ttl_seconds=10, clock=lambda: now[0])
    assert names.user(0) == "root"
    names._users[0] = ("cached", 10.0)  # what a later lookup would return while fresh
    now[0] = 9.0
    assert names.user(0) == "cached"
    now[0] = 11.0
    assert names.user(0) == "root"


@pytest.mark.parametrize(
    ("raw", "reason"),
    [
        (b"\x02\x00\x00", "invalid length"),
        (raw_acl(*MINIMAL)[:-1], "invalid length"),
        (raw_acl(*MINIMAL, version=1), "version 1"),
        (raw_acl((0x01, 7, UNDEF), (0x40, 5, UNDEF), (0x20, 0, UNDEF)), "unknown ACL tag 0x40"),
        (raw_acl((0x01, 8, UNDEF), (0x04, 5, UNDEF), (0x20, 0, UNDEF)), "invalid permission bits"),
        (raw_acl((0x01, 7, UNDEF), (0x04, 5, UNDEF)), "no other entry"),
        (raw_acl(*MINIMAL, (0x02, 5, 1000)), "no mask"),
        (raw_acl(*MINIMAL, (0x02, 5, UNDEF), (0x10, 7, UNDEF)), "without an id"),
        (raw_acl(*MINIMAL, (0x02, 5, 7), (0x02, 4, 7), (0x10, 7, UNDEF)), "duplicate user 7"),
        (raw_acl(*MINIMAL, (0x20, 0, UNDEF)), "duplicate other"),
    ],
)
def test_malformed_xattrs_raise_a_clear_error(raw: bytes, reason: str) -> None:
    with pytest.raises(MalformedAclError, match=reason) as caught:
        decode_acl(raw, path="/srv/x")
    assert str(caught.value).startswith("/srv/x: ")


def test_an_xattr_without_entries_is_no_acl() -> None:
    assert decode_acl(raw_acl()) == ()


@pytest.mark.parametrize(
    ("entries", "reason"),
    [
        ((AclEntry(tag=AclTag.USER_OBJ, perms=7), AclEntry(tag=AclTag.OTHER, perms=0)), "no group_obj"),
        ((*acl_from_mode(0o750), AclEntry(tag=AclTag.USER, perms=5)), "needs a qualifier"),
        ((*acl_from_mode(0o750), AclEntry(tag=AclTag.MASK, qualifier=3, perms=5)), "cannot have a qualifier"),
        ((*acl_from_mode(0o750), AclEntry(tag=AclTag.GROUP, qualifier=9, perms=5)), "no mask"),
    ],
)
def test_encode_refuses_what_is_not_an_acl(entries: tuple[AclEntry, ...], reason: str) -> None:
    with pytest.raises(MalformedAclError, match=reason):
        encode_acl(entries)


def test_acl_from_mode_is_the_minimal_acl() -> None:
    assert triples(acl_from_mode(0o40751)) == [("user_obj", None, 7), ("group_obj", None, 5), ("other", None, 1)]


def test_parse_acl_text() -> None:
    parsed = parse_acl_text("o::---, g:20:r-x, u::rwx, m::rx, g::r, u:1001:rw-")
    assert triples(parsed) == [
        ("user_obj", None, 7),
        ("user", 1001, 6),
        ("group_obj", None, 4),
        ("group", 20, 5),
        ("mask", None, 5),
        ("other", None, 0),
    ]
    for bad in ("u:alice:rwx", "x::rwx", "u::rwz", "m:3:rwx", "u:rwx"):
        with pytest.raises(MalformedAclError):
            parse_acl_text(bad)


# ------------------------------------------------------- against real getfacl


@needs_acl_tools
def test_plain_mode_reads_like_getfacl(tmp_path: Path) -> None:
    path = tmp_path / "plain"
    path.write_text("x")
    path.chmod(0o640)
    assert not os.listxattr(path)
    assert triples(read_acl(str(path))) == getfacl(path)
    assert read_default_acl(str(path)) == ()


@needs_acl_tools
def test_named_user_group_and_mask_read_like_getfacl(tmp_path: Path) -> None:
    path = tmp_path / "shared"
    path.mkdir(mode=0o750)
    setfacl("-m", "u:1001:rwx,u:0:r,g:1002:r-x,g:20:w,m::r-x", str(path))
    acl = read_acl(str(path))
    assert triples(acl) == getfacl(path)
    assert ("user", 1001, 7) in triples(acl) and ("mask", None, 5) in triples(acl)
    assert os.stat(path).st_mode & 0o070 == 0o050  # the mode's group bits show the mask


@needs_acl_tools
def test_default_acls_on_a_directory_read_like_getfacl(tmp_path: Path) -> None:
    path = tmp_path / "inherits"
    path.mkdir(mode=0o755)
    setfacl("-d", "-m", "u:1003:r-x,g:1004:rwx,o::-", str(path))
    assert triples(read_default_acl(str(path))) == getfacl(path, default=True)
    assert triples(read_acl(str(path))) == getfacl(path)  # no access ACL: derived from the mode
    child = path / "child"
    child.mkdir()
    assert triples(read_acl(str(child))) == getfacl(child)
    assert ("user", 1003, 5) in triples(read_acl(str(child)))  # inherited


@needs_acl_tools
def test_chmod_that_changes_the_mask_reads_like_getfacl(tmp_path: Path) -> None:
    path = tmp_path / "masked"
    path.write_text("x")
    setfacl("-m", "u:1001:rwx,g:1002:rwx", str(path))
    os.chmod(path, 0o604)
    acl = read_acl(str(path))
    assert triples(acl) == getfacl(path)
    assert ("mask", None, 0) in triples(acl) and ("user", 1001, 7) in triples(acl)


@needs_acl_tools
def test_write_acl_is_what_getfacl_then_shows(tmp_path: Path) -> None:
    path = tmp_path / "written"
    path.mkdir(mode=0o700)
    write_acl(str(path), parse_acl_text("u::rwx,u:1001:r-x,g::---,g:1002:r-x,m::r-x,o::---"))
    write_acl(str(path), parse_acl_text("u::rwx,g::r-x,o::---,g:1005:r-x,m::rwx"), default=True)
    assert getfacl(path) == [
        ("user_obj", None, 7),
        ("user", 1001, 5),
        ("group_obj", None, 0),
        ("group", 1002, 5),
        ("mask", None, 5),
        ("other", None, 0),
    ]
    assert getfacl(path, default=True) == triples(read_default_acl(str(path)))
    assert os.stat(path).st_mode & 0o777 == 0o750  # the kernel keeps the mode in step
    write_acl(str(path), (), default=True)
    assert getfacl(path, default=True) == []
    assert DEFAULT_XATTR not in os.listxattr(path) and ACCESS_XATTR in os.listxattr(path)


def test_read_acl_propagates_other_os_errors(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError):
        read_acl(str(tmp_path / "missing"))
