"""The LDAP collector's "persistent_search" mode against a real 389 Directory Server.

Each test loads its own site (users, posix groups with ``member`` DNs, a
nested unit) under its own subtree, then changes it through ldap3 bound as the
site's ``it-admin`` (allowed to write the subtree by an ACI) while the
collector, bound as Directory Manager, publishes into an in-memory list.
Notifications arrive asynchronously, so a step runs the collector until the
expected number of events came, then once more after a short pause to see
that nothing else follows. 389's referint plugin is off (its default), so the
collector is told the server keeps no referential integrity.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterator, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from uuid import uuid4

import pytest
from ldap3 import MODIFY_ADD, MODIFY_DELETE, MODIFY_REPLACE, NONE, Connection, Server
from ldap3.strategy.asynchronous import AsyncStrategy

from collectors.ldap import LdapCollector
from collectors.ldap_entries import EntrySchema, RawEntry, normalize_dn
from collectors.ldap_mirror import DirectoryMirror
from collectors.ldap_psearch import PersistentSearchMode, search_bases
from collectors.ldap_settings import LdapCollectorConfig
from permwatch.events import DirectoryGroup, DirectoryUser, Event
from tests.integration.ldap_rig import Principal, Recorder, caught_up, principals
from tests.integration.pipeline import wait_until
from tests.integration.servers.dirsrv import ROOT_DN, DirSrv

pytestmark = [pytest.mark.integration, pytest.mark.directory_servers]

ADMIN_PASSWORD = "It-Admin-Secret-7"
SETTLE_SECONDS = 0.3


def by_name(events: Sequence[Event]) -> dict[str, Principal]:
    return {e.name: e for e in principals(events)}


class Site:
    """One test's subtree: ``ou=people`` and ``ou=groups`` under ``ou=t<random>``."""

    def __init__(self, server: DirSrv) -> None:
        self.root = f"ou=t{uuid4().hex[:10]},{server.base_dn}"
        self.people = f"ou=people,{self.root}"
        self.groups = f"ou=groups,{self.root}"
        self.admin = self.user("it-admin")

    def user(self, uid: str) -> str:
        return f"uid={uid},{self.people}"

    def group(self, cn: str) -> str:
        return f"cn={cn},{self.groups}"


def posix_user(site: Site, uid: str, number: int, gid: int) -> tuple[str, list[str], dict[str, Any]]:
    attributes = {"cn": uid.title(), "sn": uid.title(), "uidNumber": number, "gidNumber": gid}
    return site.user(uid), ["inetOrgPerson", "posixAccount"], attributes | {"homeDirectory": f"/home/{uid}"}


def posix_group(site: Site, cn: str, gid: int, members: list[str]) -> tuple[str, list[str], dict[str, Any]]:
    return site.group(cn), ["groupOfNames", "posixGroup"], {"cn": cn, "gidNumber": gid, "member": members}


@pytest.fixture
def site(dirsrv: DirSrv) -> Site:
    site = Site(dirsrv)
    may_write = f'(version 3.0; acl "it-admin"; allow (all) userdn="ldap:///{site.admin}";)'
    dirsrv.add_entries(
        [
            (
                site.root,
                ["organizationalUnit"],
                {"aci": [f'(targetattr="*"){may_write}', f'(targetattr="nsAccountLock"){may_write}']},
            ),
            (site.people, ["organizationalUnit"], {}),
            (site.groups, ["organizationalUnit"], {}),
            (site.admin, ["inetOrgPerson"], {"cn": "IT", "sn": "Admin", "userPassword": ADMIN_PASSWORD}),
            posix_user(site, "anna", 41001, 40001),
            posix_user(site, "bengt", 41002, 40001),
            posix_user(site, "cecilia", 41003, 40002),
            posix_user(site, "david", 41004, 40002),
            posix_user(site, "hugo", 41005, 40003),
            posix_group(site, "ledningsgrupp", 40001, [site.user("anna"), site.user("bengt")]),
            posix_group(site, "enhet-vard", 40004, [site.user("hugo")]),
            posix_group(site, "alla", 40002, [site.user("cecilia"), site.user("david"), site.group("enhet-vard")]),
            posix_group(site, "gaster", 40003, [site.user("hugo")]),
        ]
    )
    return site


@pytest.fixture
def admin(dirsrv: DirSrv, site: Site) -> Iterator[Connection]:
    connection = Connection(Server(dirsrv.uri, get_info=NONE), site.admin, ADMIN_PASSWORD, auto_bind=True)
    yield connection
    connection.unbind()


@pytest.fixture
def password_file(dirsrv: DirSrv, tmp_path: Path) -> Path:
    path = tmp_path / "dm-password"
    path.write_text(dirsrv.password, encoding="utf-8")
    return path


def config_for(dirsrv: DirSrv, site: Site, password_file: Path, **overrides: Any) -> LdapCollectorConfig:
    settings: dict[str, Any] = {
        "collector_id": "it-389",
        "uri": dirsrv.uri,
        "bind_dn": ROOT_DN,
        "password_file": password_file,
        "user_base": site.people,
        "group_base": site.groups,
        "mode": "persistent_search",
        "referential_integrity": False,  # 389's referint plugin is off by default
        "attributes": {"unique_id": "nsUniqueId", "change_sequence": ""},
        "poll_seconds": 0.05,
        "backoff_max_seconds": 0.5,
        "timeout_seconds": 5,
    }
    return LdapCollectorConfig.model_validate(settings | overrides)


@pytest.fixture
def recorder() -> Recorder:
    return Recorder()


@pytest.fixture
def state_path(tmp_path: Path) -> Path:
    return tmp_path / "state" / "ldap-389.json"


@pytest.fixture
def collector(
    dirsrv: DirSrv, site: Site, password_file: Path, recorder: Recorder, state_path: Path
) -> Iterator[LdapCollector]:
    yield from caught_up(config_for(dirsrv, site, password_file), recorder, state_path)


def step(collector: LdapCollector, recorder: Recorder, expected: int, timeout: float = 15.0) -> list[Principal]:
    """Run the collector until ``expected`` events came (or ``timeout``), then once more; return them all."""
    mark = len(recorder.events)
    deadline = time.monotonic() + timeout
    while len(principals(recorder.since(mark))) < expected and time.monotonic() < deadline:
        collector.catch_up()
        time.sleep(0.02)
    time.sleep(SETTLE_SECONDS)
    collector.catch_up()
    return principals(recorder.since(mark))


def same_dn(a: str | None, b: str) -> bool:
    return a is not None and normalize_dn(a) == normalize_dn(b)


def test_snapshot_has_users_groups_nesting_and_ids(site: Site, recorder: Recorder, collector: LdapCollector) -> None:
    events = principals(recorder.events)
    kinds = [type(e).__name__ for e in events]
    assert kinds == sorted(kinds, key=lambda k: k != "DirectoryUser"), "users before groups"
    assert all(e.change == "snapshot" and e.actor is None and e.source == "it-389" for e in events)
    state = by_name(events)
    assert set(state) == {
        *("anna", "bengt", "cecilia", "david", "hugo"),
        *("ledningsgrupp", "enhet-vard", "alla", "gaster"),
    }, "it-admin is no posixAccount: not a user"
    anna = state["anna"]
    assert isinstance(anna, DirectoryUser)
    assert (anna.uid, anna.primary_gid, anna.disabled) == (41001, 40001, False)
    alla = state["alla"]
    assert isinstance(alla, DirectoryGroup)
    assert (alla.gid, alla.member_users, alla.member_groups) == (40002, ("cecilia", "david"), ("enhet-vard",))
    assert step(collector, recorder, expected=0) == [], "nothing changed, nothing published"


def test_all_staff_nested_into_management_and_removed_names_group_and_actor(
    site: Site, recorder: Recorder, collector: LdapCollector, admin: Connection
) -> None:
    before = datetime.now(UTC) - timedelta(seconds=2)  # modifyTimestamp has whole seconds
    assert admin.modify(site.group("ledningsgrupp"), {"member": [(MODIFY_ADD, [site.group("alla")])]}), admin.result
    [nested] = step(collector, recorder, expected=1)
    assert isinstance(nested, DirectoryGroup)
    assert (nested.name, nested.change, nested.added, nested.removed) == ("ledningsgrupp", "members", ("alla",), ())
    assert (nested.member_users, nested.member_groups) == (("anna", "bengt"), ("alla",))
    assert same_dn(nested.actor, site.admin)
    assert nested.changed_at is not None and before <= nested.changed_at <= datetime.now(UTC) + timedelta(seconds=2)

    assert admin.modify(site.group("ledningsgrupp"), {"member": [(MODIFY_DELETE, [site.group("alla")])]}), admin.result
    [unnested] = step(collector, recorder, expected=1)
    assert isinstance(unnested, DirectoryGroup)
    assert (unnested.name, unnested.added, unnested.removed, unnested.member_groups) == (
        "ledningsgrupp",
        (),
        ("alla",),
        (),
    )
    assert same_dn(unnested.actor, site.admin)


def test_user_disabled_created_and_deleted(
    site: Site, recorder: Recorder, collector: LdapCollector, admin: Connection
) -> None:
    assert admin.modify(site.user("david"), {"nsAccountLock": [(MODIFY_REPLACE, ["TRUE"])]}), admin.result
    [disabled] = step(collector, recorder, expected=1)
    assert isinstance(disabled, DirectoryUser)
    assert (disabled.name, disabled.change, disabled.disabled) == ("david", "disabled", True)
    assert same_dn(disabled.actor, site.admin)

    dn, classes, attributes = posix_user(site, "karin", 41010, 40003)
    assert admin.add(dn, classes, attributes), admin.result
    [created] = step(collector, recorder, expected=1)
    assert (created.name, created.change, created.deleted) == ("karin", "created", False)
    assert same_dn(created.actor, site.admin)

    assert admin.delete(dn), admin.result
    [deleted] = step(collector, recorder, expected=1)
    assert (deleted.name, deleted.change, deleted.deleted) == ("karin", "deleted", True)
    assert deleted.actor is None, "a delete notification shows the last modifier, not who deleted"


def test_group_renamed_by_modrdn(site: Site, recorder: Recorder, collector: LdapCollector, admin: Connection) -> None:
    assert admin.modify_dn(site.group("enhet-vard"), "cn=enhet-omsorg"), admin.result
    renamed = by_name(step(collector, recorder, expected=3))
    assert set(renamed) == {"enhet-omsorg", "enhet-vard", "alla"}
    new, old, parent = renamed["enhet-omsorg"], renamed["enhet-vard"], renamed["alla"]
    assert (new.change, new.deleted, new.dn) == ("renamed", False, normalize_dn(site.group("enhet-omsorg")))
    assert isinstance(new, DirectoryGroup) and new.member_users == ("hugo",)
    assert (old.change, old.deleted) == ("renamed", True)
    # without referint, alla still names cn=enhet-vard, which is no entry any more
    assert isinstance(parent, DirectoryGroup)
    assert (parent.added, parent.removed, parent.member_groups) == ((), ("enhet-vard",), ())
    assert all(same_dn(e.actor, site.admin) for e in (new, old))


def test_rename_without_previous_dn_is_found_by_unique_id(dirsrv: DirSrv, site: Site, password_file: Path) -> None:
    """389 sends previousDN; a server that leaves it out is handled through the held entry's nsUniqueId."""
    config = config_for(dirsrv, site, password_file)
    schema = EntrySchema.from_config(config)
    mirror = DirectoryMirror(schema, source="t", referential_integrity=False, today=lambda: 20_000)
    attrs = {"objectclass": ("groupOfNames", "posixGroup"), "cn": ("gaster",), "nsuniqueid": ("u-1",)}
    mirror.load([RawEntry(site.group("gaster"), attrs)])
    mode = PersistentSearchMode(config, schema)
    notification = {
        "type": "searchResEntry",
        "changeType": "modify dn",
        "previousDN": None,
        "dn": site.group("besokare"),
        "raw_attributes": {
            "objectClass": [b"groupOfNames", b"posixGroup"],
            "cn": [b"besokare"],
            "nsUniqueId": [b"u-1"],
        },
    }
    change = mode._change_for(notification, mirror)
    assert change is not None and change.dn == site.group("gaster") and change.entry is not None
    assert change.entry.dn == site.group("besokare")
    assert search_bases(schema) == [normalize_dn(site.root)], "one search over both bases"


def test_restart_publishes_only_what_changed_while_down(
    dirsrv: DirSrv, site: Site, password_file: Path, recorder: Recorder, state_path: Path, admin: Connection
) -> None:
    config = config_for(dirsrv, site, password_file)
    first = LdapCollector(config, recorder, state_path=state_path)
    first.catch_up()
    snapshot_size = len(recorder.events)
    admin.modify(site.group("ledningsgrupp"), {"member": [(MODIFY_ADD, [site.group("alla")])]})
    assert [e.name for e in step(first, recorder, expected=1)] == ["ledningsgrupp"]
    first.close()

    # while the collector is down
    admin.modify(site.group("ledningsgrupp"), {"member": [(MODIFY_DELETE, [site.group("alla")])]})
    dn, classes, attributes = posix_user(site, "karin", 41030, 40001)
    admin.add(dn, classes, attributes)
    admin.modify(site.group("gaster"), {"member": [(MODIFY_ADD, [dn])]})
    admin.modify(site.user("david"), {"nsAccountLock": [(MODIFY_REPLACE, ["TRUE"])]})
    admin.modify_dn(site.group("enhet-vard"), "cn=enhet-omsorg")

    mark = len(recorder.events)
    second = LdapCollector(config, recorder, state_path=state_path)
    started = time.monotonic()
    second.catch_up()
    resync_seconds = time.monotonic() - started
    resumed = by_name(recorder.since(mark))
    assert len(principals(recorder.since(mark))) == len(resumed), "no principal twice"
    assert {name: e.change for name, e in resumed.items()} == {
        "ledningsgrupp": "members",
        "karin": "created",
        "gaster": "members",
        "david": "disabled",
        "enhet-omsorg": "renamed",
        "enhet-vard": "renamed",
        "alla": "members",  # its member cn=enhet-vard is gone (no referint)
    }
    ledning, gaster = resumed["ledningsgrupp"], resumed["gaster"]
    assert isinstance(ledning, DirectoryGroup) and (ledning.added, ledning.removed) == ((), ("alla",))
    assert isinstance(gaster, DirectoryGroup) and (gaster.added, gaster.removed) == (("karin",), ())
    assert all(same_dn(resumed[n].actor, site.admin) for n in ("ledningsgrupp", "karin", "gaster", "david"))
    assert step(second, recorder, expected=0) == []
    second.close()
    assert resync_seconds < 10

    # a restart with nothing changed publishes nothing
    third = LdapCollector(config, recorder, state_path=state_path)
    assert third.catch_up() == 0
    third.close()
    assert len(recorder.events) == snapshot_size + 1 + 7
    wait_until(
        lambda: not any(isinstance(t, AsyncStrategy.ReceiverSocketThread) for t in threading.enumerate()),
        "the persistent searches' receiver threads to end with their collectors",
        timeout=10,
    )


def test_dropped_search_resnapshots_and_publishes_each_change_once(
    dirsrv: DirSrv,
    site: Site,
    password_file: Path,
    recorder: Recorder,
    state_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)
    collector = LdapCollector(config_for(dirsrv, site, password_file), recorder, state_path=state_path)
    stop = threading.Event()
    thread = threading.Thread(target=collector.run, args=(stop,), name="ldap-389-collector")
    thread.start()
    try:
        wait_until(lambda: len(recorder.events) >= 9, "the snapshot", timeout=30)
        snapshot = len(recorder.events)
        admin = Connection(Server(dirsrv.uri, get_info=NONE), site.admin, ADMIN_PASSWORD, auto_bind=True)
        admin.modify(site.group("gaster"), {"member": [(MODIFY_ADD, [site.user("anna")])]})
        admin.unbind()
        wait_until(lambda: len(recorder.events) > snapshot, "the change before the drop", timeout=30)

        dirsrv.stop()  # ends the persistent search and the session
        dirsrv.start()
        admin = Connection(Server(dirsrv.uri, get_info=NONE), site.admin, ADMIN_PASSWORD, auto_bind=True)
        admin.modify(site.group("ledningsgrupp"), {"member": [(MODIFY_ADD, [site.user("hugo")])]})
        admin.unbind()
        wait_until(
            lambda: any(e.name == "ledningsgrupp" for e in principals(recorder.since(snapshot))),
            "the change after the drop",
            timeout=30,
        )
        time.sleep(SETTLE_SECONDS)
    finally:
        stop.set()
        thread.join(10)
        if not dirsrv.running:
            dirsrv.start()
    assert not thread.is_alive()
    after = principals(recorder.since(snapshot))
    assert [(e.name, e.change) for e in after] == [("gaster", "members"), ("ledningsgrupp", "members")]
    gaster, ledning = after
    assert isinstance(gaster, DirectoryGroup) and gaster.added == ("anna",)
    assert isinstance(ledning, DirectoryGroup) and ledning.added == ("hugo",)
    assert same_dn(ledning.actor, site.admin), "from the entry's modifiersName, found by the resnapshot"
    assert "resnapshotting" in caplog.text
    assert dirsrv.password not in caplog.text and ADMIN_PASSWORD not in caplog.text
