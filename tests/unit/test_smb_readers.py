"""Readers of a share read over SMB (``NtAcl.source == "smb"``): the NT check alone, traverse per the server.

A remote server's descriptor comes with no POSIX part, so nothing narrows the NT check; a null DACL is
everybody the directory knows (not an infinite bitset); traverse is everybody under bypass-traverse
(Windows' default) and, where the server enforces it, whom each ancestor's DACL grants FILE_TRAVERSE (0x20).
The contract refuses an SMB event carrying POSIX fields, and one without ``bypass_traverse``.
"""

from __future__ import annotations

import json

import pytest
from pydantic import ValidationError

from permwatch.events import (
    DirectoryGroup,
    DirectoryUser,
    FsKind,
    FsPermissionEvent,
    Identity,
    Label,
    LabelAssigned,
    NtAce,
    NtAceFlag,
    NtAcl,
    decode,
    encode,
)
from processor.engine import Engine

DOMAIN = "S-1-5-21-4444-5555-6666"
READ = 0x001200A9
TRAVERSE_ONLY = 0x00100020
SHARE = "/smb/fileserver/social"
FOLDER = f"{SHARE}/ledning"
LEDNING = Label(name="ledning", allowed_groups=("ledningsgrupp",))


def _engine() -> Engine:
    engine = Engine()
    for i, name in enumerate(("anna", "bo", "cecilia", "david")):
        engine.apply(
            DirectoryUser(name=name, uid=2001 + i, sid=f"{DOMAIN}-{1201 + i}", primary_group_sid=f"{DOMAIN}-513")
        )
    engine.apply(DirectoryGroup(name="ledningsgrupp", gid=4000, sid=f"{DOMAIN}-4000", member_users=("anna",)))
    engine.apply(DirectoryGroup(name="ekonomi", gid=4001, sid=f"{DOMAIN}-4001", member_users=("bo",)))
    return engine


def _remote(path: str, *dacl: NtAce, bypass: bool = True, null: bool = False) -> FsPermissionEvent:
    nt = NtAcl(
        source="smb",
        owner=f"{DOMAIN}-500",
        group=f"{DOMAIN}-513",
        dacl_present=True,
        dacl=None if null else dacl,
        bypass_traverse=bypass,
    )
    return FsPermissionEvent(kind=FsKind.BASELINE, path=path, acl_kind="nt", nt_acl=nt)


def _allow(sid: str, mask: int = READ, *flags: NtAceFlag) -> NtAce:
    return NtAce(type="allow", flags=flags, mask=mask, trustee=sid)


def _readers(engine: Engine) -> tuple[tuple[str, ...], list[str]]:
    engine.apply(LabelAssigned(path=FOLDER, label=LEDNING))
    verdicts = engine.flush()
    if not verdicts:
        return (), []
    return verdicts[-1].all_users, [g.entry for g in verdicts[-1].grants]


def test_the_nt_check_alone_decides_and_names_the_ace() -> None:
    engine = _engine()
    engine.apply(_remote(SHARE, _allow("S-1-1-0")))
    engine.apply(_remote(FOLDER, _allow(f"{DOMAIN}-4000"), _allow(f"{DOMAIN}-4001")))
    users, grants = _readers(engine)
    assert users == ("bo",)  # anna is in the label's group; bo reads through ekonomi's ACE
    assert grants == [f"ekonomi ({DOMAIN}-4001) ALLOW read"]


def test_a_null_dacl_is_everybody_the_directory_knows() -> None:
    engine = _engine()
    engine.apply(_remote(FOLDER, null=True))
    users, grants = _readers(engine)
    assert users == ("bo", "cecilia", "david")
    assert grants == ["NT: no DACL, everyone"]


def test_bypass_traverse_lets_everyone_through_an_ancestor_that_grants_nothing() -> None:
    engine = _engine()
    engine.apply(_remote(SHARE, _allow(f"{DOMAIN}-4000"), bypass=True))
    engine.apply(_remote(FOLDER, _allow("S-1-5-11"), bypass=True))
    assert _readers(engine)[0] == ("bo", "cecilia", "david")


def test_where_traverse_is_enforced_an_ancestor_must_grant_it() -> None:
    engine = _engine()
    traverse_for_ekonomi = _allow(f"{DOMAIN}-4001", TRAVERSE_ONLY)
    engine.apply(_remote(SHARE, _allow(f"{DOMAIN}-4000"), traverse_for_ekonomi, bypass=False))
    engine.apply(_remote(FOLDER, _allow("S-1-5-11"), bypass=False))
    assert _readers(engine)[0] == ("bo",)


def test_the_contract_refuses_posix_fields_or_a_missing_traverse_setting_on_an_smb_acl() -> None:
    event = _remote(FOLDER, _allow("S-1-1-0"))
    assert decode(encode(event)) == event
    wire = json.loads(encode(event))
    assert (wire["mode"], wire["owner"], wire["group"], wire["acl"]) == (None, None, None, [])
    assert wire["nt_acl"]["source"] == "smb" and wire["nt_acl"]["bypass_traverse"] is True
    with pytest.raises(ValidationError, match="without a POSIX part"):
        FsPermissionEvent(
            kind=FsKind.CHANGED,
            path=FOLDER,
            acl_kind="nt",
            nt_acl=event.nt_acl,
            mode=0o755,
            owner=Identity(id=0),
            group=Identity(id=0),
        )
    with pytest.raises(ValidationError, match="bypass_traverse is given exactly when"):
        NtAcl(source="smb", dacl_present=True, dacl=())
    with pytest.raises(ValidationError, match="bypass_traverse is given exactly when"):
        NtAcl(source="stored", dacl_present=True, dacl=(), bypass_traverse=True)
    with pytest.raises(ValidationError, match="needs mode, owner and group"):
        FsPermissionEvent(kind=FsKind.CHANGED, path=FOLDER, acl_kind="nt", nt_acl=NtAcl(source="posix"))
    assert "bypass_traverse" not in NtAcl(source="posix").model_dump_json()


def test_an_acl_the_server_would_not_give_is_everybody_and_says_why() -> None:
    engine = _engine()
    unread = NtAcl(source="smb", error="STATUS_ACCESS_DENIED", bypass_traverse=True)
    engine.apply(FsPermissionEvent(kind=FsKind.BASELINE, path=FOLDER, acl_kind="nt", nt_acl=unread))
    users, grants = _readers(engine)
    assert users == ("bo", "cecilia", "david")
    assert grants == ["NT ACL unreadable over SMB (STATUS_ACCESS_DENIED): everybody"]
    with pytest.raises(ValidationError, match="in place of a descriptor"):
        NtAcl(source="smb", error="x", dacl_present=True, dacl=(), bypass_traverse=True)
    with pytest.raises(ValidationError, match="in place of a descriptor"):
        NtAcl(source="stored", error="x")
