"""The LDAP collector's "dirsync" mode against a real Samba AD domain controller.

Each test loads its own site under its own OU (users with RFC 2307 uid and gid
numbers, groups with ``member`` DNs and a nested group) and changes it as
Administrator while the collector, bound as Administrator too, publishes into
an in-memory list. Names are ``sAMAccountName`` values, which must be unique in
the domain the tests share, so each carries the site's tag. Samba holds port
389 for the whole session: these tests run serially.
"""

from __future__ import annotations

import base64
import logging
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any
from uuid import uuid4

import pytest
from ldap3 import MODIFY_ADD, MODIFY_DELETE, MODIFY_REPLACE, Connection

from collectors.ldap import LdapCollector
from collectors.ldap_dirsync import merge_delta, split_extended_dn
from collectors.ldap_entries import normalize_dn
from collectors.ldap_settings import LdapCollectorConfig
from permwatch.events import DirectoryGroup, DirectoryUser, Event
from tests.integration.ldap_rig import Principal, Recorder, ad_dirsync, caught_up, principals
from tests.integration.servers.samba_ad import ENABLED_ACCOUNT, SambaAD

pytestmark = [pytest.mark.integration, pytest.mark.directory_servers]

ENABLED, DISABLED = ENABLED_ACCOUNT, ENABLED_ACCOUNT | 0x0002


class Site:
    """One test's OU with ``OU=people`` and ``OU=groups``; ``name("anna")`` is anna's sAMAccountName."""

    def __init__(self, server: SambaAD) -> None:
        self.tag = uuid4().hex[:5]
        self.root = f"OU=t{self.tag},{server.base_dn}"
        self.people = f"OU=people,{self.root}"
        self.groups = f"OU=groups,{self.root}"

    def name(self, short: str) -> str:
        return f"{short}-{self.tag}"

    def user(self, short: str) -> str:
        return f"CN={short},{self.people}"

    def group(self, short: str) -> str:
        return f"CN={short},{self.groups}"

    def new_user(self, short: str, number: int, gid: int) -> tuple[str, list[str], dict[str, Any]]:
        attributes = {"sAMAccountName": self.name(short), "userAccountControl": ENABLED}
        return self.user(short), ["user"], attributes | {"uidNumber": number, "gidNumber": gid}

    def new_group(self, short: str, gid: int, members: list[str]) -> tuple[str, list[str], dict[str, Any]]:
        attributes: dict[str, Any] = {"sAMAccountName": self.name(short), "gidNumber": gid}
        return self.group(short), ["group"], attributes | ({"member": members} if members else {})


@pytest.fixture
def site(samba_ad: SambaAD) -> Site:
    site = Site(samba_ad)
    samba_ad.add_entries(
        [
            (site.root, ["organizationalUnit"], {}),
            (site.people, ["organizationalUnit"], {}),
            (site.groups, ["organizationalUnit"], {}),
            site.new_user("anna", 51001, 50001),
            site.new_user("bengt", 51002, 50001),
            site.new_user("cecilia", 51003, 50002),
            site.new_user("david", 51004, 50002),
            site.new_user("hugo", 51005, 50003),
            site.new_group("ledningsgrupp", 50001, [site.user("anna"), site.user("bengt")]),
            site.new_group("enhet-vard", 50004, [site.user("hugo")]),
            site.new_group("alla", 50002, [site.user("cecilia"), site.user("david"), site.group("enhet-vard")]),
            site.new_group("gaster", 50003, [site.user("hugo")]),
        ]
    )
    return site


@pytest.fixture
def admin(samba_ad: SambaAD) -> Iterator[Connection]:
    connection = samba_ad.connect()
    yield connection
    connection.unbind()


@pytest.fixture
def password_file(samba_ad: SambaAD, tmp_path: Path) -> Path:
    path = tmp_path / "ad-password"
    path.write_text(samba_ad.password, encoding="utf-8")
    return path


def config_for(samba_ad: SambaAD, site: Site, password_file: Path) -> LdapCollectorConfig:
    return ad_dirsync(
        samba_ad,
        password_file,
        collector_id="it-ad",
        people=site.people,
        groups=site.groups,
        poll_seconds=0.05,
        backoff_max_seconds=0.5,
        timeout_seconds=5,
    )


@pytest.fixture
def recorder() -> Recorder:
    return Recorder()


@pytest.fixture
def state_path(tmp_path: Path) -> Path:
    return tmp_path / "state" / "ldap-ad.json"


@pytest.fixture
def collector(
    samba_ad: SambaAD, site: Site, password_file: Path, recorder: Recorder, state_path: Path
) -> Iterator[LdapCollector]:
    yield from caught_up(config_for(samba_ad, site, password_file), recorder, state_path)


def step(collector: LdapCollector, recorder: Recorder) -> list[Principal]:
    """Run the collector once (a DirSync answer holds every write that returned) and return what it published."""
    mark = len(recorder.events)
    collector.catch_up()
    return principals(recorder.since(mark))


def by_name(events: Sequence[Event], site: Site) -> dict[str, Principal]:
    """Principals by their short name (the tag taken off)."""
    return {e.name.removesuffix(f"-{site.tag}"): e for e in principals(events)}


def test_extended_dns_and_incremental_values_merge_into_the_held_entry() -> None:
    guid, dn = split_extended_dn("<GUID=0F3D-AB>;<SID=S-1-5-21-1-2-3-1104>;CN=eng,OU=t,DC=example,DC=org")
    assert (guid, dn) == ("0f3d-ab", "CN=eng,OU=t,DC=example,DC=org")
    assert split_extended_dn("CN=plain,DC=org") == (None, "CN=plain,DC=org")
    held = {"member": ("CN=alice,DC=org", "CN=bob,DC=org"), "gidnumber": ("7",), "cn": ("eng",)}
    delta = {
        "member;range=1-1": [b"<GUID=1>;<SID=S-1>;CN=carol,DC=org", b"<GUID=2>;CN=Bob,DC=org"],
        "member;range=0-0": [b"<GUID=3>;<SID=S-3>;CN=alice,DC=org"],
        "gidNumber": None,  # cleared
        "instanceType": [b"4"],  # not wanted
    }
    merged = merge_delta(held, delta, frozenset({"member", "gidnumber", "cn"}), frozenset({"member"}))
    assert merged == {"member": ("CN=bob,DC=org", "CN=carol,DC=org"), "cn": ("eng",)}


def test_snapshot_has_users_groups_nesting_ids_and_disabled_accounts(
    samba_ad: SambaAD, site: Site, recorder: Recorder, collector: LdapCollector, admin: Connection
) -> None:
    events = principals(recorder.events)
    kinds = [type(e).__name__ for e in events]
    assert kinds == sorted(kinds, key=lambda k: k != "DirectoryUser"), "users before groups"
    assert all(e.change == "snapshot" and e.actor is None and e.source == "it-ad" for e in events)
    state = by_name(events, site)
    assert set(state) == {"anna", "bengt", "cecilia", "david", "hugo", "ledningsgrupp", "enhet-vard", "alla", "gaster"}
    anna = state["anna"]
    assert isinstance(anna, DirectoryUser)
    assert (anna.uid, anna.primary_gid, anna.disabled, anna.dn) == (
        51001,
        50001,
        False,
        normalize_dn(site.user("anna")),
    )
    alla = state["alla"]
    assert isinstance(alla, DirectoryGroup)
    assert (alla.gid, alla.member_users, alla.member_groups) == (
        50002,
        (site.name("cecilia"), site.name("david")),
        (site.name("enhet-vard"),),
    )
    assert step(collector, recorder) == [], "nothing changed, nothing published"


def test_all_staff_nested_into_management_and_removed(
    site: Site, recorder: Recorder, collector: LdapCollector, admin: Connection
) -> None:
    assert admin.modify(site.group("ledningsgrupp"), {"member": [(MODIFY_ADD, [site.group("alla")])]}), admin.result
    [nested] = step(collector, recorder)
    assert isinstance(nested, DirectoryGroup)
    assert (nested.name, nested.change, nested.added, nested.removed) == (
        site.name("ledningsgrupp"),
        "members",
        (site.name("alla"),),
        (),
    )
    assert nested.member_users == (site.name("anna"), site.name("bengt"))
    assert nested.actor is None, "DirSync does not say who"

    assert admin.modify(site.group("ledningsgrupp"), {"member": [(MODIFY_DELETE, [site.group("alla")])]}), admin.result
    [unnested] = step(collector, recorder)
    assert isinstance(unnested, DirectoryGroup)
    assert (unnested.added, unnested.removed, unnested.member_groups) == ((), (site.name("alla"),), ())
    assert step(collector, recorder) == []


def test_user_disabled_created_and_deleted(
    site: Site, recorder: Recorder, collector: LdapCollector, admin: Connection
) -> None:
    assert admin.modify(site.user("david"), {"userAccountControl": [(MODIFY_REPLACE, [DISABLED])]}), admin.result
    [disabled] = step(collector, recorder)
    assert isinstance(disabled, DirectoryUser)
    assert (disabled.name, disabled.change, disabled.disabled) == (site.name("david"), "disabled", True)

    dn, classes, attributes = site.new_user("karin", 51010, 50003)
    assert admin.add(dn, classes, attributes), admin.result
    assert admin.modify(site.group("gaster"), {"member": [(MODIFY_ADD, [dn])]}), admin.result
    created = by_name(step(collector, recorder), site)
    assert {name: e.change for name, e in created.items()} == {"karin": "created", "gaster": "members"}
    karin = created["karin"]
    assert isinstance(karin, DirectoryUser) and (karin.uid, karin.disabled) == (51010, False)
    gaster = created["gaster"]
    assert isinstance(gaster, DirectoryGroup) and gaster.added == (site.name("karin"),)

    assert admin.delete(dn), admin.result
    deleted = by_name(step(collector, recorder), site)
    assert set(deleted) == {"karin", "gaster"}
    assert (deleted["karin"].change, deleted["karin"].deleted) == ("deleted", True), "from the tombstone"
    gaster = deleted["gaster"]
    assert isinstance(gaster, DirectoryGroup) and gaster.removed == (site.name("karin"),)
    assert step(collector, recorder) == []


def test_group_renamed(site: Site, recorder: Recorder, collector: LdapCollector, admin: Connection) -> None:
    assert admin.modify_dn(site.group("enhet-vard"), "CN=enhet-omsorg"), admin.result
    new_dn = site.group("enhet-omsorg")
    assert admin.modify(new_dn, {"sAMAccountName": [(MODIFY_REPLACE, [site.name("enhet-omsorg")])]}), admin.result
    renamed = by_name(step(collector, recorder), site)
    assert set(renamed) == {"enhet-omsorg", "enhet-vard", "alla"}
    new, old, parent = renamed["enhet-omsorg"], renamed["enhet-vard"], renamed["alla"]
    assert (new.change, new.deleted, new.dn) == ("renamed", False, normalize_dn(new_dn))
    assert isinstance(new, DirectoryGroup) and new.member_users == (site.name("hugo"),)
    assert (old.change, old.deleted) == ("renamed", True)
    # AD keeps the member link; the collector rewrites its copy the same way
    assert isinstance(parent, DirectoryGroup)
    assert (parent.added, parent.removed) == ((site.name("enhet-omsorg"),), (site.name("enhet-vard"),))
    assert step(collector, recorder) == []


def test_restart_resumes_from_the_cookie_each_change_once(
    samba_ad: SambaAD,
    site: Site,
    password_file: Path,
    recorder: Recorder,
    state_path: Path,
    admin: Connection,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO)
    config = config_for(samba_ad, site, password_file)
    first = LdapCollector(config, recorder, state_path=state_path)
    first.catch_up()
    snapshot_size = len(recorder.events)
    admin.modify(site.group("ledningsgrupp"), {"member": [(MODIFY_ADD, [site.group("alla")])]})
    assert [e.name for e in step(first, recorder)] == [site.name("ledningsgrupp")]
    first.close()

    # while the collector is down
    admin.modify(site.group("ledningsgrupp"), {"member": [(MODIFY_DELETE, [site.group("alla")])]})
    dn, classes, attributes = site.new_user("karin", 51030, 50001)
    admin.add(dn, classes, attributes)
    admin.modify(site.group("gaster"), {"member": [(MODIFY_ADD, [dn])]})
    admin.modify(site.user("david"), {"userAccountControl": [(MODIFY_REPLACE, [DISABLED])]})
    admin.delete(site.user("bengt"))
    admin.modify_dn(site.group("enhet-vard"), "CN=enhet-omsorg")  # found through the GUIDs saved with the cookie
    admin.modify(site.group("enhet-omsorg"), {"sAMAccountName": [(MODIFY_REPLACE, [site.name("enhet-omsorg")])]})

    caplog.clear()
    mark = len(recorder.events)
    second = LdapCollector(config, recorder, state_path=state_path)
    second.catch_up()
    resumed = principals(recorder.since(mark))

    def described(event: Principal) -> tuple[str, str, tuple[str, ...], tuple[str, ...]]:
        added, removed = (event.added, event.removed) if isinstance(event, DirectoryGroup) else ((), ())
        return event.name, event.change, added, removed

    # DirSync reports each object once, ordered by its last change, not each write in order: compare as a set
    assert sorted(described(e) for e in resumed) == sorted(
        [
            (site.name("ledningsgrupp"), "members", (), (site.name("alla"),)),
            (site.name("karin"), "created", (), ()),
            (site.name("gaster"), "members", (site.name("karin"),), ()),
            (site.name("david"), "disabled", (), ()),
            (site.name("bengt"), "deleted", (), ()),
            (site.name("ledningsgrupp"), "members", (), (site.name("bengt"),)),  # AD dropped the deleted member
            (site.name("enhet-omsorg"), "renamed", (), ()),
            (site.name("enhet-vard"), "renamed", (), ()),
            (site.name("alla"), "members", (site.name("enhet-omsorg"),), (site.name("enhet-vard"),)),
        ]
    ), "each change once"
    assert "DirSync cookie taken" not in caplog.text and "resnapshotting" not in caplog.text, "resumed from the cookie"
    assert step(second, recorder) == []
    second.close()

    third = LdapCollector(config, recorder, state_path=state_path)
    assert third.catch_up() == 0
    third.close()
    assert len(recorder.events) == snapshot_size + 1 + 9
    assert samba_ad.password not in caplog.text


def test_refused_cookie_resnapshots_and_publishes_only_differences(
    site: Site, recorder: Recorder, collector: LdapCollector, admin: Connection, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING)
    collector.mode.cursor["cookie"] = base64.b64encode(b"not a cookie the server made").decode()
    admin.modify(site.group("gaster"), {"member": [(MODIFY_ADD, [site.user("anna")])]})
    [changed] = step(collector, recorder)
    assert isinstance(changed, DirectoryGroup)
    assert (changed.name, changed.added) == (site.name("gaster"), (site.name("anna"),))
    assert "refused the DirSync cookie" in caplog.text and "resnapshotting" in caplog.text
    admin.modify(site.group("gaster"), {"member": [(MODIFY_DELETE, [site.user("anna")])]})
    [again] = step(collector, recorder)
    assert isinstance(again, DirectoryGroup) and again.removed == (site.name("anna"),), "following again"


def test_tombstone_without_a_saved_guid_is_found_by_its_last_known_parent(
    site: Site, recorder: Recorder, collector: LdapCollector, admin: Connection
) -> None:
    collector.mode.cursor["ids"].clear()  # as if the GUID map were lost: only the tombstone itself is left
    assert admin.delete(site.user("hugo")), admin.result
    deleted = by_name(step(collector, recorder), site)
    assert {name: (e.change, e.deleted) for name, e in deleted.items()} == {
        "hugo": ("deleted", True),
        "enhet-vard": ("members", False),
        "gaster": ("members", False),
    }
