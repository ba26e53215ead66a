"""The LDAP collector where a directory's limits, outages and plain setups used to leave a wrong picture.

Against real OpenLDAP slapd servers: one like the shared fixture but with
the permwatch account left at slapd's default 500-entry size limit (a
truncated directory must be an error naming the account and the limit, and
an exemption must give every entry), one held to an administrative limit
(``size.unchecked``) and one to a time limit its server is slower than (the
same clear error); writes that bypass the accesslog
(``slapmodify`` while slapd is stopped, a log entry removed) must be found
by the reconcile on reconnect and every ``reconcile_seconds``; a batch a kill
left owed to the bus must be published at start even while the server is
down; a rename must
leave group members as the server holds them, with and without the refint
overlay; and after an outage a change is judged within seconds.
"""

from __future__ import annotations

import logging
import re
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from uuid import uuid4

import pytest
from ldap3 import LEVEL, MODIFY_ADD, MODIFY_DELETE, Connection

from collectors.ldap import RECOVERABLE, LdapCollector
from collectors.ldap_session import DirectoryLimitExceeded
from collectors.ldap_settings import LdapCollectorConfig
from permwatch.events import DirectoryGroup, DirectoryUser, Event
from tests.integration.pipeline import wait_until
from tests.integration.servers.slapd import ACCESSLOG, IT_ADMIN_DN, READER_DN, LdapSite, Slapd
from tests.integration.test_ldap_collector import Recorder, by_name, config_for, principals, step

pytestmark = [pytest.mark.integration, pytest.mark.ldap]


def many_users(site: LdapSite, count: int) -> str:
    """LDIF for ``count`` more posixAccount users under the site's people."""
    return "".join(
        f"dn: uid=u{i:04d},{site.people}\nobjectClass: inetOrgPerson\nobjectClass: posixAccount\n"
        f"uid: u{i:04d}\ncn: U{i}\nsn: U{i}\nuidNumber: {40000 + i}\ngidNumber: 30002\n"
        f"homeDirectory: /home/u{i:04d}\n\n"
        for i in range(count)
    )


def users_in(events: list[Event]) -> set[str]:
    return {e.name for e in principals(events) if isinstance(e, DirectoryUser)}


def test_a_size_limit_is_an_error_naming_the_account_and_an_exemption_gives_every_entry(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    with Slapd(tmp_path / "limited", reader_limits=None) as server:  # slapd's default: 500 entries a search
        site = server.add_site("big")
        server.load_ldif(many_users(site, 600))
        server.purge_accesslog()  # else the 600 adds in the log hit the limit first (the same error, for cn=accesslog)
        recorder = Recorder()
        state = tmp_path / "state.json"
        collector = LdapCollector(config_for(server, site, page_size=100), recorder, state_path=state)
        with pytest.raises(DirectoryLimitExceeded) as raised:
            collector.catch_up()
        message = str(raised.value)
        assert READER_DN in message and "size limit" in message and site.people in message, message
        assert "after 500 entries" in message, message
        assert recorder.events == [], "no truncated directory is published"
        assert not state.exists()

        # the running loop says the same, as an error, and keeps trying
        caplog.set_level(logging.INFO)
        stop = threading.Event()
        thread = threading.Thread(target=collector.run, args=(stop,), name="ldap-limited")
        thread.start()
        try:
            wait_until(lambda: "size limit" in caplog.text, "the limit to be logged", timeout=30)
        finally:
            stop.set()
            thread.join(10)
        assert not thread.is_alive()
        [record, *_] = [r for r in caplog.records if "size limit" in r.getMessage()]
        assert record.levelno == logging.ERROR and READER_DN in record.getMessage()
        assert "\n" not in record.getMessage()
        assert recorder.events == []
        assert server.reader_password not in caplog.text

        server.stop()
        server.reader_limits = "size=unlimited"
        server.start()
        exempt = LdapCollector(config_for(server, site, page_size=100), recorder, state_path=state)
        exempt.catch_up()
        exempt.close()
        assert len(users_in(recorder.events)) == 600 + 9


def test_an_administrative_limit_is_an_error_naming_the_account_and_the_limit(tmp_path: Path) -> None:
    """slapd's ``size.unchecked``: a search with more candidates than the account may have examined ends in
    adminLimitExceeded (result 11) with no entry at all; that is a clear error naming the account, the limit and
    the base, never an empty (or partial) directory published."""
    limits = "size=unlimited time=unlimited size.unchecked=100"
    with Slapd(tmp_path / "admin-limited", reader_limits=limits) as server:
        site = server.add_site("wide")
        server.load_ldif(many_users(site, 300))
        server.purge_accesslog()  # (the 300 adds in the log would meet the same limit first, for cn=accesslog)
        recorder = Recorder()
        state = tmp_path / "state.json"
        collector = LdapCollector(config_for(server, site, page_size=100), recorder, state_path=state)
        with pytest.raises(DirectoryLimitExceeded) as raised:
            collector.catch_up()
        collector.close()
        message = str(raised.value)
        assert raised.value.limit == "administrative limit", message
        # the collector reads its accesslog position first: the log's candidates (an ID range in back-mdb, the
        # purged entries' ids included) already exceed the limit there
        assert READER_DN in message and "administrative limit" in message and ACCESSLOG in message, message
        assert "after 0 entries" in message and "size.unchecked=unlimited" in message, message
        assert "\n" not in message and server.reader_password not in message
        assert recorder.events == [], "nothing of an incomplete directory is published"
        assert not state.exists()


def test_a_time_limit_is_an_error_naming_the_account_and_the_limit(tmp_path: Path) -> None:
    """A server slower than the account's time limit (every operation on the data waits 2 s, the account may
    search for 1 s): slapd ends the search with timeLimitExceeded (result 3) before any entry; that is a clear
    error naming the account, the limit and the base, never a partial directory published."""
    with Slapd(tmp_path / "slow") as server:
        site = server.add_site("slow")
        server.stop()  # (loaded at full speed first)
        server.reader_limits, server.slow_seconds = "size=unlimited time=1", 2
        server.start()
        recorder = Recorder()
        state = tmp_path / "state.json"
        collector = LdapCollector(config_for(server, site, timeout_seconds=30), recorder, state_path=state)
        with pytest.raises(DirectoryLimitExceeded) as raised:
            collector.catch_up()
        collector.close()
        message = str(raised.value)
        assert raised.value.limit == "time limit", message
        assert READER_DN in message and "time limit" in message and "time=unlimited" in message, message
        assert site.people in message or site.groups in message, message  # the first search of the data
        assert "\n" not in message and server.reader_password not in message
        assert recorder.events == [], "nothing of an incomplete directory is published"
        assert not state.exists()

        server.stop()  # exempt, the same slow server gives the whole directory: the limit was the cause
        server.reader_limits = "size=unlimited time=unlimited"
        server.start()
        exempt = LdapCollector(config_for(server, site, timeout_seconds=30), recorder, state_path=state)
        exempt.catch_up()
        exempt.close()
        assert {"anna", "hugo"} <= users_in(recorder.events)


def test_an_offline_slapmodify_during_an_outage_is_judged_soon_after_the_server_returns(
    slapd: Slapd, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    site = slapd.add_site(f"o{uuid4().hex[:8]}")
    recorder = Recorder()
    collector = LdapCollector(
        config_for(slapd, site, backoff_max_seconds=5.0), recorder, state_path=tmp_path / "s.json"
    )
    stop = threading.Event()
    thread = threading.Thread(target=collector.run, args=(stop,), name="ldap-outage")
    thread.start()
    try:
        wait_until(lambda: len(recorder.events) >= 14, "the snapshot", timeout=30)
        snapshot = len(recorder.events)
        slapd.stop()
        wait_until(lambda: "unavailable" in caplog.text, "the outage to be noticed", timeout=30)
        slapd.modify_offline(
            f"dn: {site.group('ledningsgrupp')}\nchangetype: modify\nadd: member\nmember: {site.user('hugo')}\n-\n"
        )
        slapd.start()
        back = time.monotonic()
        change = wait_until(
            lambda: next((e for e in principals(recorder.since(snapshot)) if e.name == "ledningsgrupp"), None),
            "the offline change to be published",
            timeout=60,
        )
        took = time.monotonic() - back
    finally:
        stop.set()
        thread.join(10)
        if not slapd.running:
            slapd.start()
    assert not thread.is_alive()
    print(f"offline change published {took:.2f} s after slapd returned")
    assert change.added == ("hugo",)  # type: ignore[union-attr]
    # at most one capped delay (5 s) before the reconnect, whose reconcile publishes at once: 3 s for the rest
    assert took < 5.0 + 3, f"{took:.1f} s: the reconnect should reconcile at once (backoff capped at 5 s)"
    assert [e.name for e in principals(recorder.since(snapshot))] == ["ledningsgrupp"], "only the difference"


class _Killed(Exception):
    """Stands for a SIGKILL between handing a batch to the bus and its flush."""


class DiesAtFlush(Recorder):
    def flush(self) -> None:
        raise _Killed


def test_a_batch_a_kill_left_owed_to_the_bus_is_published_at_start_while_the_server_is_down(
    slapd: Slapd, tmp_path: Path
) -> None:
    """Killed between saving a batch as unconfirmed and its flush, then started while the directory is down: the
    state file holds the batch's last states, and they go to the bus at once, not once the server returns (until
    then the processor would judge with a directory the collector knows is out of date)."""
    site = slapd.add_site(f"k{uuid4().hex[:8]}")
    config = config_for(slapd, site)
    state = tmp_path / "s.json"
    snapshot = Recorder()
    started = LdapCollector(config, snapshot, state_path=state)
    assert step(started, snapshot)  # the snapshot, saved
    started.close()
    first = LdapCollector(config, Recorder(), state_path=state)
    first.catch_up()  # resumed: nothing new
    first.emitter = dying = DiesAtFlush()
    admin = slapd.connect("it-admin")
    try:
        admin.modify(site.group("ledningsgrupp"), {"member": [(MODIFY_ADD, [site.user("hugo")])]})
    finally:
        admin.unbind()
    with pytest.raises(_Killed):
        first.catch_up()
    first.close()
    assert [e.name for e in principals(dying.events)] == ["ledningsgrupp"]  # handed over, never confirmed
    slapd.stop()
    try:
        recorder = Recorder()
        restarted = LdapCollector(config, recorder, state_path=state)
        with pytest.raises(RECOVERABLE):
            restarted.catch_up()
        [owed] = principals(recorder.events)
        assert isinstance(owed, DirectoryGroup) and owed.name == "ledningsgrupp" and "hugo" in owed.member_users
        assert owed.event_id == principals(dying.events)[0].event_id and recorder.flushes == 1
        with pytest.raises(RECOVERABLE):
            restarted.catch_up()
        assert len(recorder.events) == 1  # confirmed: not again
    finally:
        slapd.start()
    try:
        assert step(restarted, recorder) == []  # and the server, back, has nothing more to say
    finally:
        restarted.close()


def test_a_write_the_accesslog_lost_is_found_by_the_periodic_reconcile(slapd: Slapd, tmp_path: Path) -> None:
    site = slapd.add_site(f"r{uuid4().hex[:8]}")
    now = [0.0]
    recorder = Recorder()
    collector = LdapCollector(
        config_for(slapd, site, reconcile_seconds=60),
        recorder,
        state_path=tmp_path / "s.json",
        monotonic=lambda: now[0],
    )
    collector.catch_up()
    admin = slapd.connect("it-admin")
    root = slapd.connect("root")
    try:
        before = _log_entries(root)
        admin.modify(site.group("ledningsgrupp"), {"member": [(MODIFY_ADD, [site.user("cecilia")])]})
        for dn in _log_entries(root) - before:  # as if the write had been made offline: no log entry for it
            root.delete(dn)
    finally:
        admin.unbind()
        root.unbind()
    mark = len(recorder.events)
    collector.catch_up()
    assert principals(recorder.since(mark)) == [], "the log does not have it"
    now[0] += 59
    collector.catch_up()
    assert principals(recorder.since(mark)) == []
    now[0] += 1
    collector.catch_up()
    [found] = principals(recorder.since(mark))
    assert (found.name, found.added, found.actor) == ("ledningsgrupp", ("cecilia",), IT_ADMIN_DN)  # type: ignore[union-attr]
    # nothing changed since: the next reconcile publishes nothing and does not rewrite the saved copy
    saved = (tmp_path / "s.json").stat().st_mtime_ns
    now[0] += 60
    collector.catch_up()
    assert principals(recorder.since(mark + 1)) == []
    assert (tmp_path / "s.json").stat().st_mtime_ns == saved
    collector.close()


def _log_entries(root: Connection) -> set[str]:
    root.search(ACCESSLOG, "(objectClass=auditWriteObject)", LEVEL, attributes=["1.1"], paged_size=1000)
    return {entry["dn"] for entry in root.response if entry.get("type") == "searchResEntry"}


def test_after_an_outage_long_enough_to_reach_the_backoff_cap_a_change_is_judged_within_seconds(
    slapd: Slapd, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    site = slapd.add_site(f"b{uuid4().hex[:8]}")
    recorder = Recorder()
    default_cap = LdapCollectorConfig.model_fields["backoff_max_seconds"].default
    config = config_for(slapd, site, backoff_max_seconds=default_cap)
    collector = LdapCollector(config, recorder, state_path=tmp_path / "s.json")
    stop = threading.Event()
    thread = threading.Thread(target=collector.run, args=(stop,), name="ldap-backoff")
    thread.start()
    try:
        wait_until(lambda: len(recorder.events) >= 14, "the snapshot", timeout=30)
        snapshot = len(recorder.events)
        slapd.stop()
        # down long enough for the delays to reach the cap (0.5, 1, 2, 4, then the cap: ~10 s)
        wait_until(lambda: caplog.text.count("retrying in") >= 6, "six failed reconnects", timeout=90)
        slapd.start()
        admin = slapd.connect("it-admin")
        try:
            admin.modify(site.group("ledningsgrupp"), {"member": [(MODIFY_ADD, [site.user("hugo")])]})
        finally:
            admin.unbind()
        changed = time.monotonic()
        change = wait_until(
            lambda: next((e for e in principals(recorder.since(snapshot)) if e.name == "ledningsgrupp"), None),
            "the change made right after the outage",
            timeout=60,
        )
        took = time.monotonic() - changed
    finally:
        stop.set()
        thread.join(10)
        if not slapd.running:
            slapd.start()
    assert not thread.is_alive()
    print(f"change after the outage published in {took:.2f} s (backoff cap {default_cap} s)")
    assert isinstance(change, DirectoryGroup) and change.added == ("hugo",) and change.actor == IT_ADMIN_DN
    assert took < default_cap + 3, f"{took:.1f} s: the cap should bound the wait"
    delays = [float(m) for m in re.findall(r"retrying in ([0-9.]+) s", caplog.text)]
    assert max(delays) <= default_cap, delays


@pytest.fixture(scope="module")
def slapd_without_refint(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Slapd]:
    """A slapd like Debian's default: no refint overlay, so a rename leaves member DNs as they were."""
    with Slapd(tmp_path_factory.mktemp("slapd-no-refint"), refint=False) as server:
        yield server


@pytest.mark.parametrize("refint", [True, False], ids=["refint", "no-refint"])
def test_a_renamed_member_is_what_the_server_holds_with_and_without_refint(
    refint: bool, request: pytest.FixtureRequest, tmp_path: Path
) -> None:
    server: Slapd = request.getfixturevalue("slapd" if refint else "slapd_without_refint")
    site = server.add_site(f"n{uuid4().hex[:8]}")
    recorder = Recorder()
    collector = LdapCollector(config_for(server, site), recorder, state_path=tmp_path / "s.json")
    collector.catch_up()
    admin = server.connect("it-admin")
    try:
        admin.modify_dn(site.user("gunilla"), "uid=gun")
        renamed = by_name(step(collector, recorder))
        unit = renamed["enhet-vard"]
        assert isinstance(unit, DirectoryGroup) and unit.actor == IT_ADMIN_DN
        if refint:  # the server rewrote the member DN: the same person under the new name
            assert (unit.added, unit.removed, unit.member_users) == (("gun",), ("gunilla",), ("gun", "ivar"))
        else:  # the member DN names nobody now: gun is not a member, whatever the old name was
            assert (unit.added, unit.removed, unit.member_users) == ((), ("gunilla",), ("ivar",))
            # taking the left-over DN out changes nobody's access
            admin.modify(site.group("enhet-vard"), {"member": [(MODIFY_DELETE, [site.user("gunilla")])]})
            assert step(collector, recorder) == []
        # adding and removing the person under the new name is followed exactly
        if not refint:
            admin.modify(site.group("enhet-vard"), {"member": [(MODIFY_ADD, [site.user("gun")])]})
            [added] = step(collector, recorder)
            assert isinstance(added, DirectoryGroup) and added.added == ("gun",)
        admin.modify(site.group("enhet-vard"), {"member": [(MODIFY_DELETE, [site.user("gun")])]})
        [removed] = step(collector, recorder)
        assert isinstance(removed, DirectoryGroup) and removed.removed == ("gun",)
        assert removed.member_users == ("ivar",), "a removed member is no longer a reader"
    finally:
        admin.unbind()
        collector.close()
    # a fresh read of the whole directory agrees with what was followed
    fresh = Recorder()
    reader = LdapCollector(config_for(server, site), fresh, state_path=tmp_path / "fresh.json")
    reader.catch_up()
    reader.close()
    assert by_name(fresh.events)["enhet-vard"].member_users == ("ivar",)  # type: ignore[union-attr]
