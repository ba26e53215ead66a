"""SIDs from a real Samba AD DC reach the NT check: a nested AD group and Domain Users through the primary group.

The LDAP collector (mode ``dirsync``) reads a site of users and groups under an OU of its own on the session's
Samba AD DC (`samba_ad`): every user and group must carry its ``objectSid``, and every user the SID of Domain
Users (its domain's SID and ``primaryGroupID`` 513), a group no entry lists as ``member``. The engine then judges
a folder whose NT ACL allows the all-staff group by SID, into which a unit's group is nested, and one allowing
Domain Users: the nested group's member reads through the chain, and Domain Users reaches every user.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any
from uuid import uuid4

import pytest

from collectors.ldap import LdapCollector
from permwatch.events import (
    AclEntry,
    AclTag,
    DirectoryGroup,
    DirectoryUser,
    FsKind,
    FsPermissionEvent,
    Identity,
    Label,
    LabelAssigned,
    NtAce,
    NtAcl,
    ObjectType,
)
from processor.engine import Engine
from processor.forensics import who_can_read
from tests.integration.ldap_rig import Recorder, ad_dirsync
from tests.integration.servers.samba_ad import ENABLED_ACCOUNT, SambaAD

pytestmark = [pytest.mark.integration, pytest.mark.directory_servers]

READ = 0x001200A9


@pytest.fixture
def site(samba_ad: SambaAD) -> Iterator[tuple[str, str]]:
    tag = uuid4().hex[:5]
    root = f"OU=n{tag},{samba_ad.base_dn}"
    people, groups = f"OU=people,{root}", f"OU=groups,{root}"

    def user(short: str, number: int) -> tuple[str, list[str], dict[str, Any]]:
        attributes = {"sAMAccountName": f"{short}-{tag}", "userAccountControl": ENABLED_ACCOUNT}
        return f"CN={short},{people}", ["user"], attributes | {"uidNumber": number, "gidNumber": 60001}

    def group(short: str, gid: int, members: list[str]) -> tuple[str, list[str], dict[str, Any]]:
        return (
            f"CN={short},{groups}",
            ["group"],
            {"sAMAccountName": f"{short}-{tag}", "gidNumber": gid, "member": members},
        )

    samba_ad.add_entries(
        [
            (root, ["organizationalUnit"], {}),
            (people, ["organizationalUnit"], {}),
            (groups, ["organizationalUnit"], {}),
            user("anna", 61001),
            user("cecilia", 61002),
            user("hugo", 61003),
            group("ledningsgrupp", 60001, [f"CN=anna,{people}"]),
            group("enhet-vard", 60003, [f"CN=hugo,{people}"]),
            group("alla", 60002, [f"CN=cecilia,{people}", f"CN=enhet-vard,{groups}"]),
        ]
    )
    yield tag, root


def test_ad_sids_resolve_a_nested_group_and_domain_users_in_the_nt_check(
    samba_ad: SambaAD, site: tuple[str, str], tmp_path: Path
) -> None:
    tag, root = site
    password_file = tmp_path / "ad-password"
    password_file.write_text(samba_ad.password, encoding="utf-8")
    people, groups = f"OU=people,{root}", f"OU=groups,{root}"
    config = ad_dirsync(
        samba_ad, password_file, collector_id="it-ad-sids", people=people, groups=groups, timeout_seconds=5
    )
    recorder = Recorder()
    collector = LdapCollector(config, recorder, state_path=tmp_path / "ldap-state.json")
    try:
        collector.catch_up()
    finally:
        collector.close()
    principals = {
        e.name.removesuffix(f"-{tag}"): e for e in recorder.events if isinstance(e, DirectoryUser | DirectoryGroup)
    }
    users = [e for e in principals.values() if isinstance(e, DirectoryUser)]
    assert len(users) == 3 and all(u.sid is not None and u.sid.startswith("S-1-5-21-") for u in users), users
    domain = {u.sid.rsplit("-", 1)[0] for u in users if u.sid}
    assert len(domain) == 1
    domain_users = f"{domain.pop()}-513"
    assert {u.primary_group_sid for u in users} == {domain_users}
    alla = principals["alla"]
    assert isinstance(alla, DirectoryGroup) and alla.sid is not None and alla.sid.startswith("S-1-5-21-")

    engine = Engine()
    for event in recorder.events:
        engine.apply(event)
    folder = "/srv/share/ledning"
    open_posix = (
        AclEntry(tag=AclTag.USER_OBJ, perms=7),
        AclEntry(tag=AclTag.GROUP_OBJ, perms=7),
        AclEntry(tag=AclTag.OTHER, perms=5),
    )

    def readers(trustee: str) -> dict[str, tuple[str, tuple[str, ...]]]:
        nt = NtAcl(source="stored", dacl_present=True, dacl=(NtAce(type="allow", mask=READ, trustee=trustee),))
        engine.apply(
            FsPermissionEvent(
                kind=FsKind.CHANGED,
                path=folder,
                object_type=ObjectType.DIRECTORY,
                owner=Identity(id=0),
                group=Identity(id=0),
                mode=0o775,
                acl=open_posix,
                acl_kind="nt",
                nt_acl=nt,
            )
        )
        engine.flush()
        _label, grants = who_can_read(engine, folder)
        return {g.user.removesuffix(f"-{tag}"): (g.entry, g.chain) for g in grants if g.user.endswith(f"-{tag}")}

    engine.apply(LabelAssigned(path=folder, label=Label(name="ledning", allowed_groups=(f"ledningsgrupp-{tag}",))))
    by_alla = readers(alla.sid)
    assert set(by_alla) == {"cecilia", "hugo"}
    assert by_alla["hugo"] == (f"alla-{tag} ({alla.sid}) ALLOW read", (f"enhet-vard-{tag}", f"alla-{tag}"))
    by_domain_users = readers(domain_users)
    assert set(by_domain_users) == {"anna", "cecilia", "hugo"}
    assert by_domain_users["anna"][0] == f"Domain Users ({domain_users}) ALLOW read"
