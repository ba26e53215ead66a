"""The LDAP collector against a real OpenLDAP slapd, publishing into an in-memory list.

Each test loads its own site (users, groups, nested units, a posixGroup, a
disabled account) under its own base, then changes it through ldap3 bound
as the non-root ``it-admin`` and checks exactly which directory events the
collector publishes, with which author. Most tests step the collector with
``catch_up()``; the outage test runs it as the real loop in a thread, and the
LDAPS refusal test runs ``permwatch run --role collector`` (on the embedded
log), to read what an operator would.
"""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import threading
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from uuid import uuid4

import pytest
from ldap3 import MODIFY_ADD, MODIFY_DELETE, MODIFY_REPLACE, Connection

import collectors.ldap
from collectors.ldap import RECOVERABLE, LdapCollector
from collectors.ldap_settings import LdapCollectorConfig
from collectors.spool import RecordDropped
from permwatch.events import DirectoryGroup, DirectoryUser, Event
from tests.integration.pipeline import permwatch_exe, wait_until
from tests.integration.servers.slapd import IT_ADMIN_DN, READER_DN, LdapSite, Slapd

pytestmark = [pytest.mark.integration, pytest.mark.ldap]


class Recorder:
    """An emitter that keeps what it is given."""

    def __init__(self) -> None:
        self.events: list[Event] = []
        self.flushes = 0
        self._lock = threading.Lock()

    def emit(self, event: Event) -> None:
        with self._lock:
            self.events.append(event)

    def flush(self) -> None:
        self.flushes += 1

    def since(self, mark: int) -> list[Event]:
        with self._lock:
            return self.events[mark:]


Principal = DirectoryUser | DirectoryGroup


def principals(events: list[Event]) -> list[Principal]:
    return [e for e in events if isinstance(e, DirectoryUser | DirectoryGroup)]


def by_name(events: list[Event]) -> dict[str, Principal]:
    return {e.name: e for e in principals(events)}


@pytest.fixture
def site(slapd: Slapd) -> LdapSite:
    return slapd.add_site(f"s{uuid4().hex[:8]}")


@pytest.fixture
def admin(slapd: Slapd) -> Iterator[Connection]:
    connection = slapd.connect("it-admin")
    yield connection
    connection.unbind()


def config_for(slapd: Slapd, site: LdapSite, **overrides: Any) -> LdapCollectorConfig:
    settings: dict[str, Any] = {
        "collector_id": "it-ldap",
        "uri": slapd.uri,
        "bind_dn": READER_DN,
        "password_file": slapd.reader_password_file,
        "user_base": site.people,
        "group_base": site.groups,
        "poll_seconds": 0.05,
        "backoff_max_seconds": 0.5,
        "timeout_seconds": 5,
    }
    return LdapCollectorConfig.model_validate(settings | overrides)


@pytest.fixture
def state_path(tmp_path: Path) -> Path:
    return tmp_path / "state" / "ldap-it.json"


@pytest.fixture
def recorder() -> Recorder:
    return Recorder()


@pytest.fixture
def collector(slapd: Slapd, site: LdapSite, recorder: Recorder, state_path: Path) -> Iterator[LdapCollector]:
    running = LdapCollector(config_for(slapd, site), recorder, state_path=state_path)
    running.catch_up()
    yield running
    running.close()


def step(collector: LdapCollector, recorder: Recorder) -> list[Principal]:
    """Run the collector once and return what it published."""
    mark = len(recorder.events)
    collector.catch_up()
    return principals(recorder.since(mark))


def add_user(admin: Connection, site: LdapSite, uid: str, number: int, gid: int, **extra: Any) -> str:
    dn = site.user(uid)
    attributes = {
        "uid": uid,
        "cn": uid.title(),
        "sn": uid.title(),
        "uidNumber": number,
        "gidNumber": gid,
        "homeDirectory": f"/home/{uid}",
        **extra,
    }
    admin.add(dn, ["inetOrgPerson", "posixAccount", "shadowAccount"], attributes)
    return dn


def test_snapshot_has_users_groups_nesting_ids_and_disabled_accounts(
    slapd: Slapd, site: LdapSite, recorder: Recorder, collector: LdapCollector, state_path: Path
) -> None:
    events = principals(recorder.events)
    kinds = [type(e).__name__ for e in events]
    assert kinds == sorted(kinds, key=lambda k: k != "DirectoryUser"), "users before groups"
    assert all(e.change == "snapshot" and e.actor is None and e.source == "it-ldap" for e in events)
    state = by_name(events)
    assert set(state) == {
        *("anna", "bengt", "cecilia", "david", "elin", "fredrik", "gunilla", "hugo", "ivar"),
        *("ledningsgrupp", "alla", "enhet-ekonomi", "enhet-vard", "gaster"),
    }
    anna = state["anna"]
    assert isinstance(anna, DirectoryUser)
    assert (anna.uid, anna.primary_gid, anna.disabled) == (31001, 30001, False)
    assert anna.dn == site.user("anna")
    assert anna.key == site.user("anna")
    ivar = state["ivar"]
    assert isinstance(ivar, DirectoryUser) and ivar.disabled, "shadowExpire in the past"
    alla = state["alla"]
    assert isinstance(alla, DirectoryGroup)
    assert alla.gid == 30002
    assert alla.member_users == ("cecilia", "david")
    assert alla.member_groups == ("enhet-ekonomi", "enhet-vard")
    gaster = state["gaster"]
    assert isinstance(gaster, DirectoryGroup)
    assert (gaster.gid, gaster.member_users) == (30003, ("hugo",)), "posixGroup memberUid"
    management = state["ledningsgrupp"]
    assert isinstance(management, DirectoryGroup)
    assert (management.member_users, management.member_groups) == (("anna", "bengt"), ())
    assert recorder.flushes >= 1
    # the bind password is nowhere in what was published
    assert all(slapd.reader_password not in e.model_dump_json() for e in events)
    # nothing changed: nothing published, and the saved state is not rewritten
    saved = state_path.stat().st_mtime_ns
    assert step(collector, recorder) == []
    assert state_path.stat().st_mtime_ns == saved


def test_nesting_all_staff_into_management_names_group_actor_and_time(
    site: LdapSite, recorder: Recorder, collector: LdapCollector, admin: Connection
) -> None:
    before = datetime.now(UTC) - timedelta(seconds=1)
    admin.modify(site.group("ledningsgrupp"), {"member": [(MODIFY_ADD, [site.group("alla")])]})
    [nested] = step(collector, recorder)
    assert isinstance(nested, DirectoryGroup)
    assert (nested.name, nested.change, nested.added, nested.removed) == ("ledningsgrupp", "members", ("alla",), ())
    assert nested.member_groups == ("alla",)
    assert nested.member_users == ("anna", "bengt")
    assert nested.actor == IT_ADMIN_DN
    assert nested.changed_at is not None and before <= nested.changed_at <= datetime.now(UTC) + timedelta(seconds=1)

    admin.modify(site.group("ledningsgrupp"), {"member": [(MODIFY_DELETE, [site.group("alla")])]})
    [unnested] = step(collector, recorder)
    assert isinstance(unnested, DirectoryGroup)
    assert (unnested.name, unnested.added, unnested.removed) == ("ledningsgrupp", (), ("alla",))
    assert unnested.member_groups == ()
    assert unnested.actor == IT_ADMIN_DN


def test_user_created_disabled_locked_and_deleted(
    site: LdapSite, recorder: Recorder, collector: LdapCollector, admin: Connection
) -> None:
    dn = add_user(admin, site, "jonas", 31020, 30002)
    [created] = step(collector, recorder)
    assert isinstance(created, DirectoryUser)
    assert (created.name, created.change, created.uid, created.primary_gid) == ("jonas", "created", 31020, 30002)
    assert created.actor == IT_ADMIN_DN and created.changed_at is not None

    admin.modify(dn, {"shadowExpire": [(MODIFY_REPLACE, [1])]})
    [disabled] = step(collector, recorder)
    assert isinstance(disabled, DirectoryUser)
    assert (disabled.change, disabled.disabled) == ("disabled", True)

    admin.modify(site.user("hugo"), {"pwdAccountLockedTime": [(MODIFY_REPLACE, ["000001010000Z"])]})
    [locked] = step(collector, recorder)
    assert (locked.name, locked.change) == ("hugo", "disabled")

    admin.modify(site.group("alla"), {"member": [(MODIFY_ADD, [dn])]})
    step(collector, recorder)
    admin.delete(dn)
    deleted = by_name(step(collector, recorder))
    assert deleted["jonas"].deleted and deleted["jonas"].change == "deleted"
    # slapd's refint overlay dropped the member value; the collector publishes the same
    alla = deleted["alla"]
    assert isinstance(alla, DirectoryGroup)
    assert alla.removed == ("jonas",) and "jonas" not in alla.member_users
    assert {e.actor for e in deleted.values()} == {IT_ADMIN_DN}


def test_group_created_renamed_and_deleted(
    site: LdapSite, recorder: Recorder, collector: LdapCollector, admin: Connection
) -> None:
    new_group = site.group("projekt")
    admin.add(
        new_group,
        ["groupOfNames", "extensibleObject"],
        {"cn": "projekt", "gidNumber": 30050, "member": [site.user("anna"), site.group("gaster")]},
    )
    [created] = step(collector, recorder)
    assert isinstance(created, DirectoryGroup)
    assert (created.name, created.change, created.gid) == ("projekt", "created", 30050)
    assert (created.member_users, created.member_groups) == (("anna",), ("gaster",))

    admin.modify_dn(site.group("enhet-vard"), "cn=enhet-omsorg")
    renamed = by_name(step(collector, recorder))
    assert set(renamed) == {"enhet-omsorg", "enhet-vard", "alla"}
    new, old, parent = renamed["enhet-omsorg"], renamed["enhet-vard"], renamed["alla"]
    assert (new.change, new.deleted, new.dn) == ("renamed", False, site.group("enhet-omsorg"))
    assert isinstance(new, DirectoryGroup) and new.member_users == ("gunilla", "ivar")
    assert (old.change, old.deleted) == ("renamed", True)
    assert isinstance(parent, DirectoryGroup)
    assert (parent.added, parent.removed) == (("enhet-omsorg",), ("enhet-vard",))
    assert {e.actor for e in renamed.values()} == {IT_ADMIN_DN}

    admin.delete(new_group)
    [deleted] = step(collector, recorder)
    assert (deleted.name, deleted.deleted, deleted.change, deleted.actor) == ("projekt", True, "deleted", IT_ADMIN_DN)


class FullSpool(Recorder):
    """A recorder whose spool is full after ``room`` more events, until it is emptied."""

    def __init__(self) -> None:
        super().__init__()
        self.room: int | None = None

    def emit(self, event: Event) -> None:
        if self.room is not None:
            if self.room == 0:
                raise RecordDropped("spool full")
            self.room -= 1
        super().emit(event)


def test_changes_a_full_spool_drops_are_published_once_it_takes_records_again(
    slapd: Slapd, site: LdapSite, state_path: Path, admin: Connection
) -> None:
    spool = FullSpool()
    collector = LdapCollector(config_for(slapd, site), spool, state_path=state_path)
    collector.catch_up()
    admin.modify(site.group("ledningsgrupp"), {"member": [(MODIFY_ADD, [site.group("alla")])]})
    add_user(admin, site, "karin", 31031, 30001)
    mark = len(spool.events)
    spool.room = 1  # the first change gets in, the second meets a full spool
    with pytest.raises(RecordDropped):
        collector.catch_up()
    assert [e.name for e in principals(spool.since(mark))] == ["ledningsgrupp"]
    with pytest.raises(RecordDropped):
        collector.catch_up()  # still full: nothing more, nothing lost
    spool.room = None
    collector.catch_up()
    again = principals(spool.since(mark + 1))
    # from the last commit on: the change that got in comes again (at least once), then the dropped one
    assert [(e.name, e.change) for e in again] == [("ledningsgrupp", "members"), ("karin", "created")]
    assert step(collector, spool) == []
    collector.close()
    # and what was committed accounts for both: a restart publishes nothing
    restarted = LdapCollector(config_for(slapd, site), spool, state_path=state_path)
    assert restarted.catch_up() == 0
    restarted.close()


def test_restart_mid_stream_misses_nothing_and_repeats_nothing(
    slapd: Slapd, site: LdapSite, recorder: Recorder, state_path: Path, admin: Connection
) -> None:
    config = config_for(slapd, site)
    first = LdapCollector(config, recorder, state_path=state_path)
    first.catch_up()
    snapshot_size = len(recorder.events)
    admin.modify(site.group("ledningsgrupp"), {"member": [(MODIFY_ADD, [site.group("alla")])]})
    assert [e.name for e in step(first, recorder)] == ["ledningsgrupp"]
    first.close()

    # while the collector is down
    admin.modify(site.group("ledningsgrupp"), {"member": [(MODIFY_DELETE, [site.group("alla")])]})
    add_user(admin, site, "karin", 31030, 30001)
    admin.modify(site.group("ledningsgrupp"), {"member": [(MODIFY_ADD, [site.user("karin")])]})
    admin.modify(site.user("david"), {"shadowExpire": [(MODIFY_REPLACE, [1])]})

    mark = len(recorder.events)
    second = LdapCollector(config, recorder, state_path=state_path)
    second.catch_up()
    resumed = principals(recorder.since(mark))
    assert [(e.name, e.change) for e in resumed] == [
        ("ledningsgrupp", "members"),
        ("karin", "created"),
        ("ledningsgrupp", "members"),
        ("david", "disabled"),
    ], "each change once, in order, and no second snapshot"
    removed_alla, _, added_karin, _ = resumed
    assert isinstance(removed_alla, DirectoryGroup) and removed_alla.removed == ("alla",)
    assert isinstance(added_karin, DirectoryGroup) and added_karin.added == ("karin",)
    assert all(e.actor == IT_ADMIN_DN for e in resumed)
    assert step(second, recorder) == []
    second.close()

    # a restart with nothing changed publishes nothing
    third = LdapCollector(config, recorder, state_path=state_path)
    assert third.catch_up() == 0
    third.close()
    assert len(recorder.events) == snapshot_size + 1 + 4


def test_writes_made_while_a_restart_reads_the_directory_are_published_one_by_one_with_their_author(
    slapd: Slapd,
    site: LdapSite,
    recorder: Recorder,
    state_path: Path,
    admin: Connection,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    config = config_for(slapd, site)
    first = LdapCollector(config, recorder, state_path=state_path)
    first.catch_up()
    first.close()

    read_directory = collectors.ldap.read_directory
    raced: list[str] = []

    def read_while_written(session: Any, schema: Any) -> Any:
        if not raced:  # the restart's look at the whole directory, while an admin nests and un-nests
            for op, group, member in (
                (MODIFY_ADD, "ledningsgrupp", site.group("alla")),
                (MODIFY_ADD, "alla", site.user("hugo")),
                (MODIFY_DELETE, "ledningsgrupp", site.group("alla")),
            ):
                admin.modify(site.group(group), {"member": [(op, [member])]})
                raced.append(group)
        return read_directory(session, schema)

    monkeypatch.setattr(collectors.ldap, "read_directory", read_while_written)
    mark = len(recorder.events)
    second = LdapCollector(config, recorder, state_path=state_path)
    second.catch_up()
    resumed = principals(recorder.since(mark))
    assert [(e.name, e.added, e.removed) for e in resumed if isinstance(e, DirectoryGroup)] == [
        ("ledningsgrupp", ("alla",), ()),
        ("alla", ("hugo",), ()),
        ("ledningsgrupp", (), ("alla",)),
    ], "each write once, in order: the nesting is not lost in the snapshot, which no longer shows it"
    assert len(resumed) == 3
    assert all(e.actor == IT_ADMIN_DN and e.changed_at is not None for e in resumed), "the writer, not a guess"
    assert step(second, recorder) == []
    second.close()
    third = LdapCollector(config, recorder, state_path=state_path)
    assert third.catch_up() == 0
    third.close()


class ProcessDied(BaseException):
    """Stands for SIGKILL: nothing after it runs, and the collector object is thrown away."""


class Dies(Recorder):
    """A bus the process dies on: after ``room`` more events got out, or right after a flush."""

    def __init__(self, *, room: int | None = None, at_flush: bool = False) -> None:
        super().__init__()
        self.room, self.at_flush = room, at_flush

    def emit(self, event: Event) -> None:
        if self.room is not None:
            if self.room == 0:
                raise ProcessDied
            self.room -= 1
        super().emit(event)

    def flush(self) -> None:
        super().flush()
        if self.at_flush:
            raise ProcessDied


@pytest.mark.parametrize("dies", ["after the first event", "after the flush, before the save"])
def test_a_batch_cut_off_on_its_way_to_the_bus_is_published_again_as_its_last_states_only(
    dies: str, slapd: Slapd, site: LdapSite, state_path: Path, admin: Connection
) -> None:
    """Replaying the batch from the cursor before it would take a consumer that had it back through its older
    states: here alla nested into ledningsgrupp again after it was taken out, an exposure opened twice."""
    config = config_for(slapd, site)
    baseline = LdapCollector(config, Recorder(), state_path=state_path)
    baseline.catch_up()
    baseline.close()
    for op, group, member in (
        (MODIFY_ADD, "ledningsgrupp", site.group("alla")),
        (MODIFY_ADD, "alla", site.user("hugo")),
        (MODIFY_DELETE, "ledningsgrupp", site.group("alla")),
    ):
        admin.modify(site.group(group), {"member": [(op, [member])]})
    bus = Dies(room=1) if dies == "after the first event" else Dies(at_flush=True)
    dying = LdapCollector(config, bus, state_path=state_path)
    with pytest.raises(ProcessDied):
        dying.catch_up()
    dying.close()
    got_out = principals(bus.events)
    assert [e.name for e in got_out] == (
        ["ledningsgrupp"] if dies == "after the first event" else ["ledningsgrupp", "alla", "ledningsgrupp"]
    )

    after = Recorder()
    restarted = LdapCollector(config, after, state_path=state_path)
    restarted.catch_up()
    again = principals(after.events)
    alla, management = again
    assert isinstance(alla, DirectoryGroup) and isinstance(management, DirectoryGroup)
    assert (alla.name, alla.member_users) == ("alla", ("cecilia", "david", "hugo"))
    assert (management.name, management.member_groups) == ("ledningsgrupp", ())
    assert all(e.actor == IT_ADMIN_DN for e in again)
    if dies == "after the flush, before the save":
        assert again == got_out[1:], "the very events that got out, ids and all: nothing a consumer has not seen"
    # on the bus, ledningsgrupp only ever moves forward: nested, then not, and not nested again
    nested = [
        e.member_groups for e in [*got_out, *again] if isinstance(e, DirectoryGroup) and e.name == "ledningsgrupp"
    ]
    assert nested == [("alla",)] + [()] * (len(nested) - 1)
    assert step(restarted, after) == []
    restarted.close()
    third = LdapCollector(config, after, state_path=state_path)
    assert third.catch_up() == 0
    third.close()


def test_accesslog_purged_past_the_cursor_resnapshots_only_differences(
    slapd: Slapd, site: LdapSite, recorder: Recorder, collector: LdapCollector, admin: Connection, state_path: Path
) -> None:
    # purged while running: the next poll finds its cursor gone
    admin.modify(site.group("gaster"), {"memberUid": [(MODIFY_ADD, ["cecilia"])]})
    assert slapd.purge_accesslog() > 0
    changed = step(collector, recorder)
    assert [(e.name, e.change) for e in changed] == [("gaster", "members")]
    [gaster] = changed
    assert isinstance(gaster, DirectoryGroup) and gaster.added == ("cecilia",)
    assert gaster.actor == IT_ADMIN_DN, "from the entry's modifiersName, as the log is gone"
    assert step(collector, recorder) == []
    collector.close()

    # purged while stopped: the restart resnapshots, publishing only what differs
    admin.modify(site.group("alla"), {"member": [(MODIFY_DELETE, [site.group("enhet-ekonomi")])]})
    admin.delete(site.user("bengt"))
    slapd.purge_accesslog()
    mark = len(recorder.events)
    restarted = LdapCollector(config_for(slapd, site), recorder, state_path=state_path)
    restarted.catch_up()
    differences = by_name(recorder.since(mark))
    assert set(differences) == {"alla", "bengt", "ledningsgrupp"}
    assert differences["bengt"].deleted
    alla, management = differences["alla"], differences["ledningsgrupp"]
    assert isinstance(alla, DirectoryGroup) and alla.removed == ("enhet-ekonomi",)
    assert isinstance(management, DirectoryGroup) and management.removed == ("bengt",)
    assert step(restarted, recorder) == []
    restarted.close()


def test_snapshot_mode_finds_changes_renames_and_deletions(
    slapd: Slapd, site: LdapSite, recorder: Recorder, state_path: Path, admin: Connection
) -> None:
    collector = LdapCollector(config_for(slapd, site, mode="snapshot"), recorder, state_path=state_path)
    collector.catch_up()
    assert len(principals(recorder.events)) == 14
    admin.modify(site.group("ledningsgrupp"), {"member": [(MODIFY_ADD, [site.group("alla")])]})
    [nested] = step(collector, recorder)
    assert isinstance(nested, DirectoryGroup)
    assert (nested.name, nested.added, nested.actor) == ("ledningsgrupp", ("alla",), IT_ADMIN_DN)
    assert nested.changed_at is not None

    admin.modify_dn(site.group("gaster"), "cn=besokare")
    renamed = by_name(step(collector, recorder))
    assert (renamed["besokare"].change, renamed["gaster"].change, renamed["gaster"].deleted) == (
        "renamed",
        "renamed",
        True,
    )
    admin.delete(site.user("hugo"))
    assert [(e.name, e.deleted) for e in step(collector, recorder)] == [("hugo", True)]
    assert step(collector, recorder) == []
    collector.close()


def test_outage_is_retried_with_backoff_and_resumes_without_repeats(
    slapd: Slapd, site: LdapSite, recorder: Recorder, state_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    collector = LdapCollector(config_for(slapd, site), recorder, state_path=state_path)
    stop = threading.Event()
    thread = threading.Thread(target=collector.run, args=(stop,), name="ldap-collector")
    thread.start()
    try:
        wait_until(lambda: len(recorder.events) >= 14, "the snapshot", timeout=30)
        snapshot = len(recorder.events)
        slapd.stop()
        wait_until(lambda: "unavailable" in caplog.text and "retrying" in caplog.text, "a retry warning", timeout=30)
        slapd.start()
        admin = slapd.connect("it-admin")
        try:
            admin.modify(site.group("ledningsgrupp"), {"member": [(MODIFY_ADD, [site.user("hugo")])]})
        finally:
            admin.unbind()
        change = wait_until(
            lambda: next((e for e in principals(recorder.since(snapshot)) if e.name == "ledningsgrupp"), None),
            "the change made after the outage",
            timeout=30,
        )
        assert isinstance(change, DirectoryGroup) and change.added == ("hugo",) and change.actor == IT_ADMIN_DN
        wait_until(lambda: "reachable again" in caplog.text, "the reconnect to be logged", timeout=30)
    finally:
        stop.set()
        thread.join(10)
        if not slapd.running:
            slapd.start()
    assert not thread.is_alive()
    assert [e.name for e in principals(recorder.since(snapshot))] == ["ledningsgrupp"], "no re-snapshot"
    for secret in (slapd.reader_password, slapd.it_admin_password, slapd.root_password):
        assert secret not in caplog.text


def test_wrong_password_is_retried_and_never_logged(
    slapd: Slapd, site: LdapSite, recorder: Recorder, state_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    wrong = "not-the-password-" + uuid4().hex
    config = config_for(slapd, site, password_file=None, password_env="PERMWATCH_TEST_LDAP_PASSWORD")
    collector = LdapCollector(config, recorder, state_path=state_path, environ={"PERMWATCH_TEST_LDAP_PASSWORD": wrong})
    stop = threading.Event()
    thread = threading.Thread(target=collector.run, args=(stop,), name="ldap-collector")
    thread.start()
    try:
        wait_until(lambda: caplog.text.count("invalidCredentials") >= 2, "two failed binds", timeout=30)
    finally:
        stop.set()
        thread.join(10)
    assert recorder.events == []
    assert wrong not in caplog.text
    assert not state_path.exists()


def test_writes_racing_the_snapshot_are_neither_lost_nor_doubled(
    slapd: Slapd, site: LdapSite, recorder: Recorder, tmp_path: Path
) -> None:
    """Memberships flip while the collector snapshots and polls; replaying its events gives the server's state."""
    uids = ("anna", "bengt", "cecilia")
    stop = threading.Event()
    flips: list[tuple[str, str]] = []

    def flip_memberships() -> None:
        admin = slapd.connect("it-admin")
        try:
            for i in range(60):
                if stop.is_set():
                    break
                uid = uids[i % len(uids)]
                op = MODIFY_ADD if (i // len(uids)) % 2 == 0 else MODIFY_DELETE
                admin.modify(site.group("gaster"), {"memberUid": [(op, [uid])]})
                flips.append(("+" if op == MODIFY_ADD else "-", uid))
        finally:
            admin.unbind()

    writer = threading.Thread(target=flip_memberships, name="ldap-writer")
    collector = LdapCollector(config_for(slapd, site), recorder, state_path=tmp_path / "racing.json")
    writer.start()
    try:
        while writer.is_alive():
            collector.catch_up()
    finally:
        stop.set()
        writer.join(30)
    collector.catch_up()
    collector.close()
    assert len(flips) == 60

    # every flip after the snapshot is published once, in order: the events are exactly a suffix of the flips
    gaster = [e for e in principals(recorder.events) if isinstance(e, DirectoryGroup) and e.name == "gaster"]
    assert gaster[0].change == "snapshot"
    published = [op for e in gaster[1:] for op in [*(("+", u) for u in e.added), *(("-", u) for u in e.removed)]]
    assert all(len(e.added) + len(e.removed) == 1 for e in gaster[1:]), "one event per write"
    assert published == flips[len(flips) - len(published) :]
    assert len(published) > 0

    fresh = Recorder()
    reader = LdapCollector(config_for(slapd, site), fresh, state_path=tmp_path / "fresh.json")
    reader.catch_up()
    reader.close()
    truth = {e.key: e for e in principals(fresh.events)}
    latest = {e.key: e for e in principals(recorder.events)}
    state = {"name", "member_users", "member_groups", "disabled"}
    assert {k: e.model_dump(include=state) for k, e in latest.items()} == {
        k: e.model_dump(include=state) for k, e in truth.items()
    }


def test_start_tls_verifies_the_server_certificate(
    slapd: Slapd, site: LdapSite, recorder: Recorder, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    if slapd.ca_file is None:
        pytest.skip("no openssl to make a certificate")
    trusted = LdapCollector(
        config_for(slapd, site, start_tls=True, ca_file=slapd.ca_file), recorder, state_path=tmp_path / "tls.json"
    )
    trusted.catch_up()
    trusted.close()
    assert len(principals(recorder.events)) == 14

    # the system's CAs did not sign it: the connection is refused (and run() would retry), nothing published
    system_cas = Path("/etc/ssl/certs/ca-certificates.crt")
    if not system_cas.exists():
        return
    untrusted = LdapCollector(
        config_for(slapd, site, start_tls=True, ca_file=system_cas), Recorder(), state_path=tmp_path / "no.json"
    )
    with pytest.raises(RECOVERABLE) as refused:
        untrusted.catch_up()
    untrusted.close()
    assert "certificate" in str(refused.value).lower()
    assert not (tmp_path / "no.json").exists()


def test_ldaps_with_the_ca_takes_the_snapshot_and_follows_changes_with_their_author(
    slapd: Slapd, site: LdapSite, recorder: Recorder, tmp_path: Path, admin: Connection
) -> None:
    if slapd.ldaps_uri is None or slapd.ca_file is None:
        pytest.skip("no openssl to make a certificate")
    config = config_for(slapd, site, uri=slapd.ldaps_uri, ca_file=slapd.ca_file)
    collector = LdapCollector(config, recorder, state_path=tmp_path / "ldaps.json")
    try:
        collector.catch_up()
        assert collector.session.use_ssl and collector.session.where == slapd.ldaps_uri
        snapshot = principals(recorder.events)
        assert len(snapshot) == 14 and all(e.change == "snapshot" for e in snapshot)

        admin.modify(site.group("ledningsgrupp"), {"member": [(MODIFY_ADD, [site.group("alla")])]})
        [nested] = step(collector, recorder)
        assert isinstance(nested, DirectoryGroup)
        assert (nested.name, nested.added, nested.actor) == ("ledningsgrupp", ("alla",), IT_ADMIN_DN)
        assert nested.changed_at is not None
    finally:
        collector.close()


def _run_collector_role(slapd: Slapd, site: LdapSite, workdir: Path, ca_file: Path) -> subprocess.Popen[bytes]:
    """``permwatch run --role collector`` on the embedded log, following slapd's LDAPS port with ``ca_file``."""
    config = workdir / "permwatch.toml"
    config.write_text(
        f"""
log_level = "debug"
state_dir = "{workdir / "state"}"
[transport.embedded]
path = "{workdir / "events.db"}"
[[ldap]]
collector_id = "it-ldaps"
uri = "{slapd.ldaps_uri}"
bind_dn = "{READER_DN}"
password_file = "{slapd.reader_password_file}"
ca_file = "{ca_file}"
user_base = "{site.people}"
group_base = "{site.groups}"
backoff_max_seconds = 0.5
""",
        encoding="utf-8",
    )
    exe = permwatch_exe()
    with (workdir / "collector.log").open("ab") as log:
        return subprocess.Popen(
            [exe, "run", "--config", str(config), "--role", "collector"],
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )


def _stop(proc: subprocess.Popen[bytes], sig: int = signal.SIGTERM) -> int:
    if proc.poll() is None:
        os.killpg(proc.pid, sig)
    try:
        return proc.wait(30)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        return proc.wait(30)


def test_ldaps_refuses_a_ca_that_did_not_sign_the_server_certificate_with_a_clear_error(
    slapd: Slapd, site: LdapSite, tmp_path: Path
) -> None:
    if slapd.ldaps_uri is None or slapd.ca_file is None:
        pytest.skip("no openssl to make a certificate")
    system_cas = Path("/etc/ssl/certs/ca-certificates.crt")
    if not system_cas.exists():
        pytest.skip("no system CA bundle to stand for the wrong CA")
    log_path = tmp_path / "collector.log"

    def log() -> str:
        return log_path.read_text(encoding="utf-8", errors="replace") if log_path.exists() else ""

    proc = _run_collector_role(slapd, site, tmp_path, system_cas)
    try:
        # refused, said so, and retried (the server may be given a certificate the CA did sign)
        wait_until(lambda: log().count("retrying in") >= 2 or proc.poll() is not None, "two refused connections")
        assert proc.poll() is None, f"the collector role stopped:\n{log()[-3000:]}"
    finally:
        code = _stop(proc)
    assert code == 0
    refused = [line for line in log().splitlines() if "retrying in" in line]
    assert all(slapd.ldaps_uri in line and "certificate verify failed" in line for line in refused), refused
    assert all(" WARNING " in line for line in refused), "a warning, not an error with a traceback"
    assert "Traceback" not in log()
    for secret in (slapd.reader_password, slapd.it_admin_password, slapd.root_password):
        assert secret not in log()
    assert not list((tmp_path / "state").glob("ldap-*.json")), "nothing was committed"

    # a CA file that is not there is a mistake in the config: said so at start, no retries, no traceback
    missing = tmp_path / "no-such-ca.pem"
    proc = _run_collector_role(slapd, site, tmp_path, missing)
    try:
        code = proc.wait(60)
    finally:
        _stop(proc, signal.SIGKILL)
    assert code == 2
    assert f"config error: ldap collector 'it-ldaps': key 'ca_file': {missing} does not exist" in log()
    assert "Traceback" not in log()
