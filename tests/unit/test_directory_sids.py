"""SIDs on directory events: from AD's binary ``objectSid`` and ``primaryGroupID``, and from the YAML directory.

The binary SIDs are what a Samba AD DC returned (see tests/integration/test_samba_dirsync.py for the server);
Domain Users is RID 513 of the user's domain and lists nobody as ``member``, so it comes from the primary group.
"""

from __future__ import annotations

import struct
from pathlib import Path

import pytest

from collectors.directory_file import DirectoryFileError, parse_directory
from collectors.ldap_entries import EntrySchema, RawEntry, attribute_text, sid_text
from collectors.ldap_mirror import DirectoryMirror
from collectors.ldap_settings import LdapAttributeNames, LdapCollectorConfig
from permwatch.events import DirectoryUser


def binary_sid(text: str) -> bytes:
    parts = text.split("-")
    subs = [int(p) for p in parts[3:]]
    return struct.pack("<BB", 1, len(subs)) + int(parts[2]).to_bytes(6, "big") + struct.pack(f"<{len(subs)}I", *subs)


def test_binary_sids_read_as_windows_writes_them() -> None:
    for text in ("S-1-1-0", "S-1-5-11", "S-1-5-32-545", "S-1-5-21-1910055072-128734736-2038691243-1104"):
        assert sid_text(binary_sid(text)) == text
    assert sid_text(b"\x01\x02\x00") is None and sid_text(binary_sid("S-1-5-11")[:-1]) is None
    assert attribute_text("objectSid", binary_sid("S-1-5-11")) == "S-1-5-11"
    assert attribute_text("cn", b"anna") == "anna"
    assert attribute_text("objectSid", b"\xff") == "\ufffd"  # not a SID: decoded like any other value


def test_ad_users_get_their_sid_and_domain_users_through_primary_group_id() -> None:
    domain = "S-1-5-21-1910055072-128734736-2038691243"
    config = LdapCollectorConfig(
        uri="ldap://127.0.0.1",
        user_base="cn=Users,dc=example,dc=test",
        group_base="cn=Users,dc=example,dc=test",
        user_object_classes=["user"],
        group_object_classes=["group"],
        attributes=LdapAttributeNames(user_name="cn", group_name="cn"),
    )
    mirror = DirectoryMirror(
        EntrySchema.from_config(config), source="t", referential_integrity=True, today=lambda: 20000
    )
    user = RawEntry(
        "cn=anna,cn=Users,dc=example,dc=test",
        {
            "objectclass": ("top", "user"),
            "cn": ("anna",),
            "objectsid": (attribute_text("objectsid", binary_sid(f"{domain}-1104")),),
            "primarygroupid": ("513",),
        },
    )
    group = RawEntry(
        "cn=socialsekreterare,cn=Users,dc=example,dc=test",
        {"objectclass": ("top", "group"), "cn": ("socialsekreterare",), "objectsid": (f"{domain}-1105",)},
    )
    mirror.load([user, group])
    by_name = {e.name: e for e in mirror.states.values()}
    anna = by_name["anna"]
    assert isinstance(anna, DirectoryUser)
    assert (anna.sid, anna.primary_group_sid) == (f"{domain}-1104", f"{domain}-513")
    assert by_name["socialsekreterare"].sid == f"{domain}-1105"


def test_the_yaml_directory_takes_sids_and_derives_the_primary_groups(tmp_path: Path) -> None:
    path = tmp_path / "directory.yaml"
    path.write_text(
        "users:\n"
        "  - {name: anna, uid: 1001, gid: domain_users, sid: S-1-5-21-1-2-3-1104}\n"
        "  - {name: bo, uid: 1002, primary_group_sid: S-1-5-21-1-2-3-1200}\n"
        "groups:\n"
        "  - {name: domain_users, gid: 100, sid: S-1-5-21-1-2-3-513}\n",
        encoding="utf-8",
    )
    states = parse_directory(path).states
    anna = states["user:anna"]
    assert isinstance(anna, DirectoryUser)
    assert (anna.sid, anna.primary_group_sid) == ("S-1-5-21-1-2-3-1104", "S-1-5-21-1-2-3-513")
    bo = states["user:bo"]
    assert isinstance(bo, DirectoryUser) and (bo.sid, bo.primary_group_sid) == (None, "S-1-5-21-1-2-3-1200")
    assert states["group:domain_users"].sid == "S-1-5-21-1-2-3-513"  # type: ignore[union-attr]


def test_a_malformed_sid_in_the_yaml_directory_is_an_error_naming_file_and_line(tmp_path: Path) -> None:
    path = tmp_path / "directory.yaml"
    path.write_text("users:\n  - {name: anna, uid: 1001, sid: Everyone}\n", encoding="utf-8")
    with pytest.raises(DirectoryFileError, match=rf"{path}:2.*sid"):
        parse_directory(path)
