"""The incident, end to end, with the directory in a real OpenLDAP slapd.

Collector (files + LDAP accesslog), processor and alerts run as separate
``permwatch run`` processes on a real Kafka broker; the directory lives in a
real slapd and is changed through ldap3 bound as the non-root ``it-admin``.
Nesting the all-staff group into the management group must open an exposure
on every folder labelled for the management group — and only those — naming
the group, the head count and the admin; undoing it closes them. Hiring into
an allowed group is no exposure; growing a broad group that can already read
a labelled folder changes the open exposure instead of opening another.

Issue 3's acceptance runs on a pipeline of its own: a stream of a few hundred
membership writes during which the collector is SIGKILLed and started again,
after which the bus must hold every write once and in order and end with
slapd's state, and the exposures must be neither doubled nor moved by what a
restart published again.
"""

from __future__ import annotations

import contextlib
import json
import os
import random
import signal
import subprocess
import time
from collections import Counter
from collections.abc import Iterator, Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from uuid import uuid4

import pytest
from ldap3 import LEVEL, MODIFY_ADD, MODIFY_DELETE, Connection

from processor.exposures import MAX_CAUSES
from tests.integration.pipeline import Pipeline, TopicReader, traversable_tempdir, wait_until
from tests.integration.servers.kafka import KafkaBroker
from tests.integration.servers.slapd import ACCESSLOG, IT_ADMIN_DN, READER_DN, LdapSite, Slapd

pytestmark = [pytest.mark.integration, pytest.mark.ldap]

MGMT, STAFF, ECONOMY = 30001, 30002, 30010  # gids in tests/integration/fixtures/ldap/site.ldif
STAFF_PEOPLE = 5  # cecilia, david (listed), elin, fredrik (enhet-ekonomi), gunilla (enhet-vard); ivar is disabled
MANAGEMENT_FOLDERS = ("ledning-protokoll", "ledning-personal", "ledning-budget")
ACL_FOLDER = "ledning-acl"


def accesslog_collector(slapd: Slapd, site: LdapSite) -> str:
    """The [[ldap]] section of a collector that follows ``site`` on slapd through the accesslog overlay."""
    return f"""[[ldap]]
collector_id = "it-ldap"
uri = "{slapd.uri}"
bind_dn = "{READER_DN}"
password_file = "{slapd.reader_password_file}"
user_base = "{site.people}"
group_base = "{site.groups}"
mode = "accesslog"
poll_seconds = 0.1
"""


@pytest.fixture(scope="module")
def share() -> Iterator[Path]:
    with traversable_tempdir("permwatch-ldap-it-") as base:
        yield base / "share"


def make_folder(path: Path, gid: int) -> None:
    path.mkdir()
    os.chown(path, 0, gid)
    os.chmod(path, 0o750)
    notes = path / "protokoll.txt"
    notes.write_text("personal data\n")
    os.chown(notes, 0, gid)
    os.chmod(notes, 0o640)


@pytest.fixture(scope="module")
def site(slapd: Slapd) -> LdapSite:
    return slapd.add_site(f"p{uuid4().hex[:8]}")


@pytest.fixture(scope="module")
def pipeline(
    kafka_broker: KafkaBroker, slapd: Slapd, site: LdapSite, share: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Pipeline]:
    share.mkdir()
    os.chmod(share, 0o755)
    for name in (*MANAGEMENT_FOLDERS, ACL_FOLDER):
        make_folder(share / name, MGMT)
    make_folder(share / "ekonomi", ECONOMY)

    workdir = tmp_path_factory.mktemp("ldap-pipeline")
    ldap_section = accesslog_collector(slapd, site)
    pipe = Pipeline(workdir, kafka_broker.bootstrap, f"l{os.getpid()}.", share=share, directory_section=ldap_section)
    pipe.write_config(
        f"""
[labels.definitions.ledning]
severity = "critical"
allowed_groups = ["ledningsgrupp"]
[labels.definitions.ekonomi]
severity = "high"
allowed_groups = ["enhet-ekonomi"]
[[labels.rules]]
glob = "{share}/ledning-*"
label = "ledning"
[[labels.rules]]
glob = "{share}/ekonomi"
label = "ekonomi"
"""
    )
    pipe.start_all()
    try:
        wait_until(lambda: len(pipe.reader("labels").read()) >= len(MANAGEMENT_FOLDERS) + 2, "every folder's label")
        wait_until(lambda: len(pipe.reader("directory").read()) >= 14, "the directory snapshot from slapd")
        pipe.wait_fs_event(share / "ekonomi" / "protokoll.txt")
        pipe.wait_quiet()
        assert pipe.exposures() == [], "the baseline must not be exposed"
        yield pipe
    finally:
        pipe.stop()
        for role in ("collector", "processor", "alerts"):
            log = pipe.log(role)
            assert "Traceback" not in log, f"{role} log:\n{log[-3000:]}"
            for secret in (slapd.reader_password, slapd.it_admin_password, slapd.root_password):
                assert secret not in log, f"a password in the {role} log"


def new_exposures(pipe: Pipeline, since: int) -> list[dict[str, Any]]:
    return pipe.exposures()[since:]


def modify_group(slapd: Slapd, dn: str, op: str, member: str) -> None:
    admin = slapd.connect("it-admin")
    try:
        admin.modify(dn, {"member": [(op, [member])]})
    finally:
        admin.unbind()


def wait_directory_event(pipe: Pipeline, name: str, predicate: Any, since: int) -> dict[str, Any]:
    """The first directory event on the bus from index ``since`` on for ``name`` that ``predicate`` accepts."""

    def first() -> dict[str, Any] | None:
        events = pipe.reader("directory").read()[since:]
        return next((v for v in events if v["name"] == name and predicate(v)), None)

    return wait_until(first, f"the directory event for {name}")


def test_nesting_all_staff_into_management_exposes_every_management_folder(
    pipeline: Pipeline, slapd: Slapd, site: LdapSite, share: Path
) -> None:
    mark = len(pipeline.exposures())
    modify_group(slapd, site.group("ledningsgrupp"), MODIFY_ADD, site.group("alla"))
    management = {str(share / name) for name in (*MANAGEMENT_FOLDERS, ACL_FOLDER)}
    opened = wait_until(
        lambda: (
            {e["folder"]: e for e in new_exposures(pipeline, mark) if e["status"] == "opened"}
            if {e["folder"] for e in new_exposures(pipeline, mark) if e["status"] == "opened"} >= management
            else None
        ),
        "an exposure on every management folder",
    )
    pipeline.wait_quiet()
    assert set(opened) == management, "the economy folder is not exposed"
    for event in opened.values():
        assert event["label"]["name"] == "ledning"
        assert "alla" in event["groups"]
        assert event["people"] == STAFF_PEOPLE
        assert event["actor"] == IT_ADMIN_DN
        alla = next(g for g in event["grants"] if g["group"] == "alla" or "alla" in g["chain"])
        assert alla["chain"][-1] == "ledningsgrupp"

    modify_group(slapd, site.group("ledningsgrupp"), MODIFY_DELETE, site.group("alla"))
    closed = wait_until(
        lambda: (
            {e["folder"]: e for e in new_exposures(pipeline, mark) if e["status"] == "closed"}
            if {e["folder"] for e in new_exposures(pipeline, mark) if e["status"] == "closed"} >= management
            else None
        ),
        "every exposure closed",
    )
    pipeline.wait_quiet()
    for folder, event in closed.items():
        assert event["exposure_id"] == opened[folder]["exposure_id"]
        assert event["duration_seconds"] is not None and event["duration_seconds"] > 0
    assert len(new_exposures(pipeline, mark)) == 2 * len(management), "one open and one close per folder"


def test_hiring_into_the_allowed_group_is_not_an_exposure(pipeline: Pipeline, slapd: Slapd, site: LdapSite) -> None:
    mark = len(pipeline.exposures())
    published = len(pipeline.reader("directory").read())
    modify_group(slapd, site.group("ledningsgrupp"), MODIFY_ADD, site.user("hugo"))
    wait_directory_event(pipeline, "ledningsgrupp", lambda v: "hugo" in v["added"], published)
    pipeline.wait_quiet()
    assert new_exposures(pipeline, mark) == []
    modify_group(slapd, site.group("ledningsgrupp"), MODIFY_DELETE, site.user("hugo"))
    wait_directory_event(pipeline, "ledningsgrupp", lambda v: "hugo" in v["removed"], published)
    pipeline.wait_quiet()
    assert new_exposures(pipeline, mark) == []


def test_growing_a_broad_group_that_can_already_read_changes_the_exposure(
    pipeline: Pipeline, slapd: Slapd, site: LdapSite, share: Path
) -> None:
    folder = share / ACL_FOLDER
    mark = len(pipeline.exposures())
    subprocess.run(["setfacl", "-m", f"g:{STAFF}:rx", str(folder)], check=True)
    opened = wait_until(
        lambda: next((e for e in new_exposures(pipeline, mark) if e["folder"] == str(folder)), None),
        "the exposure through the ACL",
    )
    assert (opened["status"], opened["people"], opened["groups"]) == ("opened", STAFF_PEOPLE, ["alla"])

    modify_group(slapd, site.group("alla"), MODIFY_ADD, site.user("hugo"))
    changed = wait_until(
        lambda: next((e for e in new_exposures(pipeline, mark) if e["status"] == "changed"), None),
        "the exposure to grow",
    )
    pipeline.wait_quiet()
    assert changed["exposure_id"] == opened["exposure_id"]
    assert changed["folder"] == str(folder)
    assert changed["people"] == STAFF_PEOPLE + 1
    assert changed["actor"] == IT_ADMIN_DN
    assert [e["status"] for e in new_exposures(pipeline, mark)] == ["opened", "changed"], "no new exposure"

    modify_group(slapd, site.group("alla"), MODIFY_DELETE, site.user("hugo"))
    wait_until(
        lambda: any(e["status"] == "changed" and e["people"] == STAFF_PEOPLE for e in new_exposures(pipeline, mark)),
        "the exposure to shrink back",
    )
    subprocess.run(["setfacl", "-b", str(folder)], check=True)
    closed = wait_until(
        lambda: next((e for e in new_exposures(pipeline, mark) if e["status"] == "closed"), None),
        "the exposure to close",
    )
    # closed by a filesystem change, which names nobody: not the directory admin who grew the group (issue 13 D5)
    assert (closed["exposure_id"], closed["folder"], closed["actor"]) == (opened["exposure_id"], str(folder), None)


def test_a_change_right_after_a_directory_outage_is_judged_within_seconds(
    pipeline: Pipeline, slapd: Slapd, site: LdapSite, share: Path
) -> None:
    mark = len(pipeline.exposures())
    management = {str(share / name) for name in (*MANAGEMENT_FOLDERS, ACL_FOLDER)}

    def folders(status: str) -> set[str]:
        return {e["folder"] for e in new_exposures(pipeline, mark) if e["status"] == status}

    retries = pipeline.log("collector").count("unavailable")
    slapd.stop()
    try:
        # down long enough for the reconnect delays to reach their cap (0.5, 1, 2, 4, then the cap)
        wait_until(lambda: pipeline.log("collector").count("unavailable") >= retries + 6, "six failed reconnects", 90)
    finally:
        slapd.start()
    modify_group(slapd, site.group("ledningsgrupp"), MODIFY_ADD, site.group("alla"))
    changed = time.monotonic()
    wait_until(lambda: folders("opened") >= management, "an exposure on every management folder", 60)
    took = time.monotonic() - changed
    print(f"change right after the outage judged (exposures on the bus) in {took:.2f} s")
    # measured: about 3 s with the 5 s cap; 12.7 s with the old 60 s cap (the exact figure depends on where in
    # its wait the collector was). The deterministic check of the cap is in test_ldap_faults.py.
    assert took < 15, f"{took:.1f} s from the change to its exposures after the outage"

    modify_group(slapd, site.group("ledningsgrupp"), MODIFY_DELETE, site.group("alla"))
    wait_until(lambda: folders("closed") >= management, "every exposure closed")
    pipeline.wait_quiet()
    assert len(new_exposures(pipeline, mark)) == 2 * len(management), "one open and one close per folder"


def test_collector_killed_and_restarted_resumes_the_directory_stream(
    pipeline: Pipeline, slapd: Slapd, site: LdapSite
) -> None:
    pipeline.wait_quiet()
    published = len(pipeline.reader("directory").read())
    mark = len(pipeline.exposures())
    pipeline.kill("collector")
    modify_group(slapd, site.group("ledningsgrupp"), MODIFY_ADD, site.user("hugo"))  # while the collector is down
    pipeline.start("collector")
    event = wait_directory_event(pipeline, "ledningsgrupp", lambda v: "hugo" in v["added"], published)
    assert event["actor"] == IT_ADMIN_DN
    modify_group(slapd, site.group("ledningsgrupp"), MODIFY_DELETE, site.user("hugo"))
    wait_directory_event(pipeline, "ledningsgrupp", lambda v: "hugo" in v["removed"], published)
    pipeline.wait_quiet()
    after = pipeline.reader("directory").read()[published:]
    assert [(v["name"], v["added"], v["removed"]) for v in after] == [
        ("ledningsgrupp", ["hugo"], []),
        ("ledningsgrupp", [], ["hugo"]),
    ], "each change once, and no second snapshot"
    assert new_exposures(pipeline, mark) == []


LONELY_GID = 30950
"""A gid no group entry in site.ldif has: only a user's primary gid."""


def kernel_outsiders(folder: Path, slapd: Slapd, site: LdapSite) -> set[str]:
    """Who lists ``folder`` as the kernel decides (``setpriv`` as each of slapd's users, with their primary gid and
    the gids of the groups the directory puts them in, nesting included), and is not in ledningsgrupp."""
    connection = slapd.connect("reader")
    try:
        connection.search(site.people, "(uidNumber=*)", LEVEL, attributes=["uid", "uidNumber", "gidNumber"])
        people = [e["attributes"] for e in connection.response if e.get("type") == "searchResEntry"]
    finally:
        connection.unbind()
    groups = slapd_groups(slapd, site)
    _, group_gids = slapd_gids(slapd, site)

    def groups_of(user: str) -> set[str]:
        found = {group for group, members in groups.items() if ("user", user) in members}
        pending = list(found)
        while pending:  # nesting: a group inside another gives its members that one's gid too
            inner = pending.pop()
            for group, members in groups.items():
                if ("group", inner) in members and group not in found:
                    found.add(group)
                    pending.append(group)
        return found

    outsiders = set()
    for person in people:
        name, uid, gid = person["uid"][0], int(person["uidNumber"]), int(person["gidNumber"])
        member_of = groups_of(name)
        gids = sorted({gid} | {group_gids[g] for g in member_of if g in group_gids})
        ident = [f"--reuid={uid}", f"--regid={gid}", f"--groups={','.join(map(str, gids))}"]
        probe = subprocess.run(["setpriv", *ident, "--", "ls", str(folder)], capture_output=True)
        allowed = "ledningsgrupp" in member_of or gid == group_gids["ledningsgrupp"]
        if probe.returncode == 0 and not allowed and name not in DISABLED:
            outsiders.add(name)
    return outsiders


def test_a_primary_gid_without_a_group_entry_reads_as_the_kernel_says(
    pipeline: Pipeline, slapd: Slapd, site: LdapSite, share: Path
) -> None:
    """Issue 13 D4 on slapd: a user whose gidNumber no group entry has, and an ACL entry naming that gid."""
    folder = share / "ledning-gid"
    make_folder(folder, MGMT)
    pipeline.wait_fs_event(folder / "protokoll.txt")
    published = len(pipeline.reader("directory").read())
    admin = slapd.connect("root")
    try:
        admin.add(
            site.user("ulla"),
            ["inetOrgPerson", "posixAccount"],
            {"uid": "ulla", "cn": "Ulla Ulf", "sn": "Ulf", "uidNumber": 31050, "gidNumber": LONELY_GID}
            | {"homeDirectory": "/home/ulla"},
        )
    finally:
        admin.unbind()
    wait_directory_event(pipeline, "ulla", lambda v: v["type"] == "directory.user", published)
    pipeline.wait_quiet()
    mark = len(pipeline.exposures())
    subprocess.run(["setfacl", "-m", f"g:{LONELY_GID}:rx", str(folder)], check=True)
    opened = wait_until(
        lambda: next((e for e in new_exposures(pipeline, mark) if e["folder"] == str(folder)), None),
        "the exposure through the lone gid",
    )
    verdict = kernel_outsiders(folder, slapd, site)
    assert verdict == {"ulla"}, "the kernel lets the user of the lone gid list the folder, and nobody else"
    assert (opened["status"], opened["users"], opened["people"]) == ("opened", sorted(verdict), len(verdict))

    subprocess.run(["setfacl", "-b", str(folder)], check=True)
    closed = wait_until(
        lambda: next((e for e in new_exposures(pipeline, mark) if e["status"] == "closed"), None),
        "the exposure to close",
    )
    assert closed["exposure_id"] == opened["exposure_id"] and kernel_outsiders(folder, slapd, site) == set()


# ------------------------------------------------------------------ a restart in the middle of a stream

STREAM_WRITES = 300
STREAM_SEED = 20_261_201
WRITE_LIMIT = 1_500
CAUGHT_LIMIT = 30
"""Writes, and kills caught between handing a batch to the bus and saving that it did, after which a stream in
which no restart published anything again fails the test (it would prove nothing about that)."""
DISABLED = frozenset({"ivar"})  # shadowExpire in the past in site.ldif: reads nothing
STREAM_FOLDERS = ("ledning-protokoll", "ledning-budget")
NESTING = ("ledningsgrupp", "member", "group", "alla")
"""The write that opens (and, undone, closes) an exposure on every management folder."""
TOGGLES = (
    *[NESTING] * 4,
    ("ledningsgrupp", "member", "user", "hugo"),  # hiring into the allowed group: no exposure
    ("ledningsgrupp", "member", "user", "david"),
    ("alla", "member", "user", "david"),  # grows or shrinks an open exposure
    ("alla", "member", "user", "hugo"),
    ("alla", "member", "user", "ivar"),
    ("alla", "member", "group", "enhet-vard"),
    ("enhet-ekonomi", "member", "user", "elin"),
    ("enhet-ekonomi", "member", "user", "hugo"),
    ("gaster", "memberUid", "user", "cecilia"),
    ("gaster", "memberUid", "user", "david"),
)
"""(group, attribute, kind, member) flipped by the stream; cecilia stays in alla and fredrik in enhet-ekonomi, so
alla always has someone the label does not allow (an exposure is open exactly while alla is nested) and no
groupOfNames ever loses its last member."""

Member = tuple[str, str]  # ("user" | "group", name)
Groups = dict[str, frozenset[Member]]
Tip = tuple[frozenset[Member], datetime | None]
"""A group's members and the time of the write that left them (None: from before the stream)."""


def members_of(attrs: Mapping[str, Any]) -> frozenset[Member]:
    """A group entry's members by kind and name, from its raw ``member`` DNs and ``memberUid`` values."""
    lower = {name.lower(): values for name, values in attrs.items()}
    found: set[Member] = set()
    for dn in lower.get("member", ()):
        attr, _, name = dn.split(",", 1)[0].partition("=")
        found.add(("user" if attr.lower() == "uid" else "group", name))
    found.update(("user", uid) for uid in lower.get("memberuid", ()))
    return frozenset(found)


def csn_time(csn: str) -> datetime:
    """The time in an OpenLDAP change sequence number, ``20261201183054.676852Z#000000#000#000000``."""
    return datetime.strptime(csn.split("#", 1)[0], "%Y%m%d%H%M%S.%fZ").replace(tzinfo=UTC)


def slapd_groups(slapd: Slapd, site: LdapSite) -> Groups:
    """What slapd holds now, read with plain ldap3: the oracle the bus is compared with."""
    connection = slapd.connect("reader")
    try:
        connection.search(site.groups, "(objectClass=*)", LEVEL, attributes=["cn", "member", "memberUid"])
        entries = [e["attributes"] for e in connection.response if e.get("type") == "searchResEntry"]
    finally:
        connection.unbind()
    return {attrs["cn"][0]: members_of(attrs) for attrs in entries}


def slapd_gids(slapd: Slapd, site: LdapSite) -> tuple[dict[str, int], dict[str, int]]:
    """Every user's primary gid and every group's gid, by name, as slapd holds them."""
    connection = slapd.connect("reader")
    try:
        found: list[dict[str, int]] = []
        for base, name in ((site.people, "uid"), (site.groups, "cn")):
            connection.search(base, "(gidNumber=*)", LEVEL, attributes=[name, "gidNumber"])
            entries = [e["attributes"] for e in connection.response if e.get("type") == "searchResEntry"]
            found.append({attrs[name][0]: int(attrs["gidNumber"]) for attrs in entries})
        return found[0], found[1]
    finally:
        connection.unbind()


def slapd_write_times(slapd: Slapd, site: LdapSite) -> dict[str, list[datetime]]:
    """The change time (entryCSN) of every modification of the site's groups, from slapd's accesslog, in order."""
    connection = slapd.connect("reader")
    try:
        connection.search(ACCESSLOG, "(objectClass=auditModify)", LEVEL, attributes=["reqStart", "reqDN", "entryCSN"])
        records = [e["attributes"] for e in connection.response if e.get("type") == "searchResEntry"]
    finally:
        connection.unbind()
    times: dict[str, list[datetime]] = {}
    suffix = "," + site.groups.lower()
    for record in sorted(records, key=lambda r: r["reqStart"]):
        if record["reqDN"].lower().endswith(suffix):
            name = record["reqDN"].split(",", 1)[0].partition("=")[2]
            times.setdefault(name, []).append(csn_time(str(record["entryCSN"])))  # single-valued: ldap3 gives a str
    return times


def saved_tips(state_file: Path, site: LdapSite) -> tuple[dict[str, Tip], bool]:
    """The groups in the collector's saved copy, and whether it lists events it has not seen reach the bus."""
    try:
        saved = json.loads(state_file.read_text(encoding="utf-8"))  # replaced by rename: always whole
    except FileNotFoundError:
        return {}, False
    suffix = "," + site.groups.lower()
    tips: dict[str, Tip] = {
        entry["attrs"]["cn"][0]: (members_of(entry["attrs"]), csn_time(entry["attrs"]["entrycsn"][0]))
        for entry in saved["entries"]
        if entry["dn"].lower().endswith(suffix)
    }
    return tips, bool(saved.get("unconfirmed"))


def event_members(value: Mapping[str, Any]) -> frozenset[Member]:
    users = {("user", name) for name in value["member_users"]}
    return frozenset(users | {("group", name) for name in value["member_groups"]})


def event_time(value: Mapping[str, Any]) -> datetime | None:
    return None if value["changed_at"] is None else datetime.fromisoformat(value["changed_at"])


def bus_tips(values: list[dict[str, Any]]) -> dict[str, Tip]:
    """The last state of every group on the directory topic."""
    return {v["name"]: (event_members(v), event_time(v)) for v in values if v["type"] == "directory.group"}


def outsiders_of(groups: Groups, primary_gids: Mapping[str, int], group_gids: Mapping[str, int]) -> set[str]:
    """Who can read a folder of group ledningsgrupp though the label does not allow them (the audience rule).

    A group's readers are its listed users, the users whose primary group it is, and the readers of the groups
    nested into it; the label allows ledningsgrupp's listed users and those whose primary group it is.
    """

    def users_of(group: str) -> set[str]:
        listed = {name for kind, name in groups[group] if kind == "user"}
        return listed | {user for user, gid in primary_gids.items() if gid == group_gids.get(group)}

    readers: set[str] = set()
    pending, seen = ["ledningsgrupp"], set()
    while pending:
        group = pending.pop()
        if group not in seen:
            seen.add(group)
            readers |= users_of(group)
            pending += [name for kind, name in groups[group] if kind == "group"]
    return readers - users_of("ledningsgrupp") - DISABLED


def drained(reader: TopicReader) -> list[dict[str, Any]]:
    """Everything on the reader's topic now; call when nothing more is coming (one read may bring a part)."""
    seen = -1
    while len(reader.read()) != seen:  # each read waits a moment for more
        seen = len(reader.values)
    return reader.values


def republished(values: list[dict[str, Any]]) -> list[int]:
    """Where events equal to one before them in all but their id and when they were observed are: published
    again."""
    seen: set[str] = set()
    again = []
    for at, value in enumerate(values):
        key = json.dumps({k: v for k, v in value.items() if k not in ("event_id", "observed_at")}, sort_keys=True)
        if key in seen:
            again.append(at)
        seen.add(key)
    return again


@pytest.fixture
def stream_pipeline(
    kafka_broker: KafkaBroker, slapd: Slapd, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[Pipeline, LdapSite, Path]]:
    """Collector and processor on Kafka, the directory from a site of its own, two folders of ledningsgrupp."""
    site = slapd.add_site(f"r{uuid4().hex[:8]}")
    with traversable_tempdir("permwatch-ldap-restart-") as base:
        share = base / "share"
        share.mkdir()
        os.chmod(share, 0o755)
        for name in STREAM_FOLDERS:
            make_folder(share / name, MGMT)
        workdir = tmp_path_factory.mktemp("ldap-restart")
        ldap_section = accesslog_collector(slapd, site)
        pipe = Pipeline(
            workdir, kafka_broker.bootstrap, f"r{uuid4().hex[:8]}.", share=share, directory_section=ldap_section
        )
        pipe.label_one_folder(share / "ledning-*", "ledningsgrupp")
        try:
            pipe.start_and_settle(labels=len(STREAM_FOLDERS))
            wait_until(lambda: len(pipe.reader("directory").read()) >= 14, "the directory snapshot from slapd")
            pipe.wait_quiet()
            assert pipe.exposures() == [], "the baseline must not be exposed"
            yield pipe, site, workdir / "state" / "ldap-it-ldap.json"
        finally:
            for proc in pipe.procs.values():  # a collector a failed test left frozen would not stop
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGCONT)
            pipe.stop()
            for role in ("collector", "processor"):
                log = pipe.log(role)
                assert "Traceback" not in log, f"{role} log:\n{log[-3000:]}"
                for secret in (slapd.reader_password, slapd.it_admin_password, slapd.root_password):
                    assert secret not in log, f"a password in the {role} log"


def test_collector_sigkilled_mid_stream_misses_no_change_and_duplicates_no_exposure(
    stream_pipeline: tuple[Pipeline, LdapSite, Path], slapd: Slapd
) -> None:
    """Issue 3: a few hundred membership writes, and the collector SIGKILLed while they are made and published,
    then started again: once at a random write, and then (frozen with SIGSTOP at a write, looked at, let go
    again until it is so caught) between handing a batch to the bus and saving that it did, until a restart
    has published something the bus had already. Every kill is made frozen, so what the bus and the state file
    held at that moment is known. The bus must end with slapd's groups and hold every write, with its author,
    in order, never an older state after a newer one; and the processor's exposures must be those of the
    writes: none opened twice, none moved by what was published twice, and the open ones those of the end."""
    pipe, site, state_file = stream_pipeline
    rng = random.Random(STREAM_SEED)
    plain_kill_at = rng.randrange(STREAM_WRITES // 5, STREAM_WRITES * 2 // 5)
    probe_from = rng.randrange(STREAM_WRITES // 2, STREAM_WRITES * 3 // 5)
    directory = pipe.reader("directory")
    snapshot = len(drained(directory))
    model = {name: set(members) for name, members in slapd_groups(slapd, site).items()}
    history: dict[str, list[frozenset[Member]]] = {name: [] for name in model}  # each group after each write
    nestings = {"+": 0, "-": 0}
    kills: list[tuple[dict[str, Tip], dict[str, Tip]]] = []  # (saved, on the bus) at each kill
    caught: list[int] = []
    probes = 0

    def write(admin: Connection, toggle: tuple[str, str, str, str]) -> None:
        group, attr, kind, name = toggle
        member = (kind, name)
        sign = "-" if member in model[group] else "+"
        value = name if attr == "memberUid" else (site.user(name) if kind == "user" else site.group(name))
        admin.modify(site.group(group), {attr: [(MODIFY_DELETE if sign == "-" else MODIFY_ADD, [value])]})
        (model[group].discard if sign == "-" else model[group].add)(member)
        history[group].append(frozenset(model[group]))
        if toggle == NESTING:
            nestings[sign] += 1

    def kill_frozen(*, only_if_caught: bool) -> bool:
        """SIGSTOP the collector and look; SIGKILL it (if caught: its state file does not say that the bus has
        what it was given: the copy there differs from the bus, or lists events as unconfirmed)."""
        collector = pipe.procs["collector"]
        os.killpg(collector.pid, signal.SIGSTOP)
        try:
            saved, unconfirmed = saved_tips(state_file, site)
            on_bus = bus_tips(drained(directory))  # frozen: nothing more is coming
            agree = all(on_bus.get(name, (None,))[0] == tip[0] for name, tip in saved.items())
            if only_if_caught and not unconfirmed and agree:
                return False
            pipe.kill("collector")
            kills.append((saved, on_bus))
            return True
        finally:
            if collector.poll() is None:
                os.killpg(collector.pid, signal.SIGCONT)

    def done_probing() -> bool:
        return bool(caught) and bool(republished(directory.values[snapshot:]))

    def caught_up() -> bool:
        """The collector has published and saved every write so far (with none coming, they agree)."""
        saved, unconfirmed = saved_tips(state_file, site)
        on_bus = bus_tips(directory.read())
        return not unconfirmed and all(
            saved.get(n, (None,))[0] == on_bus.get(n, (None,))[0] == m for n, m in model.items()
        )

    admin = slapd.connect("it-admin")
    try:
        i = 0
        while True:
            streaming = i < STREAM_WRITES or not done_probing()
            if not streaming and ("group", "alla") in model["ledningsgrupp"]:
                break  # ends nested, so there is an open exposure to compare with the end state
            if i >= WRITE_LIMIT or len(caught) >= CAUGHT_LIMIT:
                raise AssertionError(f"no restart published anything again after {len(caught)} kill(s) caught")
            write(admin, rng.choice(TOGGLES) if streaming else NESTING)
            if i == plain_kill_at:
                wait_until(lambda: len(directory.read()) > snapshot, "the collector to publish the stream")
                kill_frozen(only_if_caught=False)
                pipe.start("collector")  # and the stream goes on while it starts
            elif i >= probe_from and not done_probing():
                if probes == 0:  # look at a collector that is running, not one still starting
                    wait_until(caught_up, "the restarted collector to catch up", timeout=180)
                probes += 1
                if kill_frozen(only_if_caught=True):
                    caught.append(i)
                    pipe.start("collector")
                    wait_until(caught_up, "the restarted collector to catch up", timeout=180)
            i += 1
    finally:
        admin.unbind()

    # The bus ends with what slapd holds, for every group the stream touched
    final = slapd_groups(slapd, site)
    assert {name: frozenset(members) for name, members in model.items()} == final

    def ended() -> bool:
        return {name: tip[0] for name, tip in bus_tips(directory.read()).items()} == final

    wait_until(ended, "the bus to end with slapd's groups", timeout=180)
    pipe.wait_quiet()
    values = drained(directory)[snapshot:]
    anonymous = [v for v in values if v["actor"] != IT_ADMIN_DN]
    assert not anonymous, f"every change with its author, after restarts too: {anonymous}"

    # Every event is one of the writes (found by its change time) with the state that write left, and a
    # group's events never go back to an older write: what came twice is the same state again
    times: dict[str, list[datetime]] = {name: [] for name in model} | slapd_write_times(slapd, site)
    assert {name: len(t) for name, t in times.items()} == {name: len(h) for name, h in history.items()}
    published: dict[str, list[int]] = {name: [] for name in model}
    for value in values:
        assert value["type"] == "directory.group", value
        name, at = value["name"], event_time(value)
        assert at is not None and at in times[name], f"an event no single write explains: {value}"
        write_no = times[name].index(at)
        assert event_members(value) == history[name][write_no], f"{name} after write {write_no}: {value}"
        assert not published[name] or write_no >= published[name][-1], f"{name} went back to write {write_no}"
        published[name].append(write_no)

    # ... and none is missing, but at most the older states of a batch a kill stopped on its way to the bus
    def write_of(tip: Tip | None, name: str) -> int:
        at = None if tip is None else tip[1]
        return times[name].index(at) if at is not None and at in times[name] else -1  # -1: before the stream

    for name, writes in history.items():
        may_miss = set()
        for saved, on_bus in kills:
            may_miss |= set(range(write_of(on_bus.get(name), name) + 1, write_of(saved.get(name), name)))
        missing = set(range(len(writes))) - set(published[name])
        assert missing <= may_miss, f"{name}: writes {sorted(missing - may_miss)} never published"

    # The exposures: none doubled, none moved by events published again, and what the final state implies
    exposures = drained(pipe.reader("exposures"))
    ids = Counter((e["exposure_id"], e["sequence"]) for e in exposures)
    assert [key for key, n in ids.items() if n > 1] == [], "an exposure event published twice"
    again = republished(values)
    # (an event published again under its first id cannot be told apart in the causes; the bus checks above hold)
    copies = {values[at]["event_id"] for at in again} - {
        v["event_id"] for at, v in enumerate(values) if at not in again
    }
    causes = [e["cause_event_ids"] for e in exposures]
    moved = [e for e, ids in zip(exposures, causes, strict=True) if 0 < len(ids) < MAX_CAUSES and set(ids) <= copies]
    assert moved == [], "events published again moved an exposure"
    by_folder: dict[str, list[dict[str, Any]]] = {str(pipe.share / name): [] for name in STREAM_FOLDERS}
    for event in exposures:
        by_folder[event["folder"]].append(event)
    outsiders = sorted(outsiders_of(final, *slapd_gids(slapd, site)))
    for folder, events in by_folder.items():
        open_id, sequence = None, 0
        for event in events:  # one folder's events are on one partition, in order
            if event["status"] == "opened":
                assert open_id is None, f"{folder}: opened {event['exposure_id']} while {open_id} was open"
                open_id, sequence = event["exposure_id"], 0
            else:
                assert event["exposure_id"] == open_id, f"{folder}: {event['status']} of an exposure not open"
                sequence += 1
                if event["status"] == "closed":
                    open_id = None
            assert event["sequence"] == sequence
        opened = sum(1 for e in events if e["status"] == "opened")
        closed = sum(1 for e in events if e["status"] == "closed")
        # the processor may judge a nesting and its undoing together, but never opens more often than nested
        assert 0 < opened <= nestings["+"] and closed <= nestings["-"], (folder, opened, closed, nestings)
        last = events[-1]
        assert last["status"] != "closed", f"{folder}: alla is nested at the end"
        assert (last["people"], last["users"], last["groups"]) == (len(outsiders), outsiders, ["alla"])
    print(
        f"\nstream: {sum(map(len, history.values()))} writes ({nestings['+']} nestings of alla), plain kill at "
        f"write {plain_kill_at}, kill(s) caught at write(s) {caught} after {probes} probes, {len(again)} event(s) "
        f"published again, {len(exposures)} exposure events"
    )
