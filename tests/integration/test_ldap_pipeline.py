"""The incident, end to end, with the directory in a real OpenLDAP slapd.

Collector (files + LDAP accesslog), processor and alerts run as separate
``permwatch run`` processes on a real Kafka broker; the directory lives in a
real slapd and is changed through ldap3 bound as the non-root ``it-admin``.
Nesting the all-staff group into the management group must open an exposure
on every folder labelled for the management group — and only those — naming
the group, the head count and the admin; undoing it closes them. Hiring into
an allowed group is no exposure; growing a broad group that can already read
a labelled folder changes the open exposure instead of opening another.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from uuid import uuid4

import pytest
from ldap3 import MODIFY_ADD, MODIFY_DELETE

from tests.integration.pipeline import Pipeline, wait_until
from tests.integration.servers.kafka import KafkaBroker
from tests.integration.servers.slapd import IT_ADMIN_DN, READER_DN, LdapSite, Slapd

pytestmark = [pytest.mark.integration, pytest.mark.ldap]

MGMT, STAFF, ECONOMY = 30001, 30002, 30010  # gids in tests/integration/fixtures/ldap/site.ldif
STAFF_PEOPLE = 5  # cecilia, david (listed), elin, fredrik (enhet-ekonomi), gunilla (enhet-vard); ivar is disabled
MANAGEMENT_FOLDERS = ("ledning-protokoll", "ledning-personal", "ledning-budget")
ACL_FOLDER = "ledning-acl"


@pytest.fixture(scope="module")
def share() -> Iterator[Path]:
    # Not under pytest's tmp dir: that one is 0700, and others must be able to traverse the ancestors.
    base = Path(tempfile.mkdtemp(prefix="permwatch-ldap-it-"))
    os.chmod(base, 0o755)
    try:
        yield base / "share"
    finally:
        shutil.rmtree(base, ignore_errors=True)


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
    ldap_section = f"""[[ldap]]
collector_id = "it-ldap"
uri = "{slapd.uri}"
bind_dn = "{READER_DN}"
password_file = "{slapd.reader_password_file}"
user_base = "{site.people}"
group_base = "{site.groups}"
mode = "accesslog"
poll_seconds = 0.1
"""
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
    subprocess.run(["setfacl", "-b", str(folder)], check=True)
    wait_until(
        lambda: any(e["status"] == "closed" and e["folder"] == str(folder) for e in new_exposures(pipeline, mark)),
        "the exposure to close",
    )


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
