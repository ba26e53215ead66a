"""The static directory file: parsing, diffs between edits, clear errors."""

from __future__ import annotations

import logging
import threading
from pathlib import Path

import pytest

from collectors.directory_file import (
    DirectoryFileCollector,
    DirectoryFileError,
    diff,
    load_directory,
    parse_directory,
)
from collectors.directory_settings import DirectoryFileConfig
from collectors.spool import RecordDropped
from permwatch.events import DirectoryGroup, DirectoryUser, Event

BASE = """
users:
  - {name: anna, uid: 1001, primary_group: ledning}
  - {name: bo, uid: 1002, gid: 2002}
groups:
  - {name: ledning, gid: 2001, members: [anna]}
  - {name: alla, gid: 2002, members: [bo], groups: [enhet]}
  - {name: enhet, gid: 2003}
"""


def test_load_resolves_primary_group(tmp_path: Path) -> None:
    path = tmp_path / "d.yaml"
    path.write_text(BASE)
    states = load_directory(path)
    anna = states["user:anna"]
    assert isinstance(anna, DirectoryUser) and anna.primary_gid == 2001
    alla = states["group:alla"]
    assert isinstance(alla, DirectoryGroup) and alla.member_groups == ("enhet",)


def test_diff_reports_only_changes_and_deletions(tmp_path: Path) -> None:
    path = tmp_path / "d.yaml"
    path.write_text(BASE)
    old = load_directory(path)
    snapshot = diff({}, old, source="s")
    assert [e.change for e in snapshot] == ["snapshot"] * 5  # type: ignore[attr-defined]
    assert isinstance(snapshot[0], DirectoryUser)  # users first, so groups' members resolve
    path.write_text(
        BASE.replace("members: [anna]}", "members: [anna], groups: [alla]}")
        .replace("  - {name: bo, uid: 1002, gid: 2002}\n", "")
        .replace("members: [bo]", "members: []")
    )
    new = load_directory(path)
    changes = diff(old, new, source="s")
    ledning = next(e for e in changes if isinstance(e, DirectoryGroup) and e.name == "ledning")
    assert ledning.change == "members" and ledning.added == ("alla",)
    deleted = [e for e in changes if getattr(e, "deleted", False)]
    assert [e.key for e in deleted] == ["user:bo"]
    assert diff(new, new, source="s") == []


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("users: [{name: a, uid: x}]", "key 'users.0.uid'"),
        ("users: [{name: a, primary_group: nope}]", "primary group 'nope' names no group"),
        ("users: [", "not valid YAML"),
        ("groups: [{name: g, colour: red}]", "key 'groups.0.colour'"),
        ("- just a list", "key '<top>': Input should be a valid dictionary"),
        ("users: [{name: s\xf6ren}]", "not UTF-8 (byte 16)"),
    ],
)
def test_errors_name_file_and_key(tmp_path: Path, text: str, expected: str) -> None:
    path = tmp_path / "d.yaml"
    path.write_bytes(text.encode("latin-1"))
    with pytest.raises(DirectoryFileError) as err:
        load_directory(path)
    assert str(path) in str(err.value) and expected in str(err.value)


class FullSpoolFor:
    """An emitter whose spool is full until ``open`` is set: each event then raises RecordDropped."""

    def __init__(self) -> None:
        self.events: list[Event] = []
        self.refused = 0
        self.open = threading.Event()

    def emit(self, event: Event) -> None:
        if not self.open.is_set():
            self.refused += 1
            raise RecordDropped("spool full")
        self.events.append(event)

    def flush(self) -> None:
        pass


def test_an_edit_dropped_by_a_full_spool_is_published_once_the_spool_takes_records(tmp_path: Path) -> None:
    path = tmp_path / "d.yaml"
    path.write_text(BASE)
    emitter = FullSpoolFor()
    emitter.open.set()
    collector = DirectoryFileCollector(DirectoryFileConfig(path=path), emitter)
    collector.load()
    assert len(emitter.events) == 5  # the snapshot
    emitter.open.clear()
    path.write_text(BASE.replace("members: [anna]}", "members: [anna], groups: [alla]}"))
    for _ in range(3):  # several polls meet the full spool, each tries again
        collector.poll()
    assert emitter.refused == 3 and len(emitter.events) == 5
    emitter.open.set()
    collector.poll()
    (ledning,) = emitter.events[5:]
    assert isinstance(ledning, DirectoryGroup) and ledning.added == ("alla",)


def test_run_publishes_the_directory_and_returns_when_stopped(tmp_path: Path) -> None:
    path = tmp_path / "d.yaml"
    path.write_text(BASE)
    emitter = FullSpoolFor()
    emitter.open.set()
    stop = threading.Event()
    stop.set()  # the first wait returns at once: run loads, then stops
    DirectoryFileCollector(DirectoryFileConfig(path=path), emitter).run(stop)
    assert len(emitter.events) == 5


INCIDENT = """\
users:
  - {name: anna, uid: 21001, gid: ledningsgrupp}
  - {name: cecilia, uid: 21003, gid: 20002}
groups:
  - {name: ledningsgrupp, gid: 20001, members: [anna, alla]}
  - {name: alla, gid: 20002, members: [cecilia]}
"""


def test_a_group_written_under_members_is_nested_and_noted_with_its_line(tmp_path: Path) -> None:
    path = tmp_path / "d.yaml"
    path.write_text(INCIDENT)
    parsed = parse_directory(path)
    ledning = parsed.states["group:ledningsgrupp"]
    assert isinstance(ledning, DirectoryGroup)
    assert ledning.member_users == ("anna",) and ledning.member_groups == ("alla",)  # the nesting is kept
    assert parsed.notes == (
        f"{path}:5: key 'groups.0.members.1': 'alla' is a group: nested into 'ledningsgrupp'"
        " as if listed under its `groups`",
    )
    path.write_text(INCIDENT.replace("members: [anna, alla]}", "members: [anna], groups: [alla]}"))
    spelled_out = parse_directory(path)
    assert spelled_out.notes == ()
    assert diff(parsed.states, spelled_out.states, source="s") == []  # both spellings mean one thing


def test_a_name_that_is_a_user_and_a_group_means_the_user_under_members(tmp_path: Path) -> None:
    path = tmp_path / "d.yaml"
    path.write_text(INCIDENT + "  - {name: cecilia, gid: 20099, members: [cecilia]}\n")  # a user private group
    parsed = parse_directory(path)
    alla = parsed.states["group:alla"]
    assert isinstance(alla, DirectoryGroup) and (alla.member_users, alla.member_groups) == (("cecilia",), ())
    assert len(parsed.notes) == 1  # only 'alla' under ledningsgrupp's members is read as a group


@pytest.mark.parametrize(
    ("edit", "expected"),
    [
        (("members: [cecilia]", "members: [cecila]"), ":6: key 'groups.1.members.0': 'cecila' names no user or group"),
        (("members: [cecilia]}", "members: [], groups: [anna]}"), ":6: key 'groups.1.groups.0': 'anna' is a user,"),
        (("members: [cecilia]}", "groups: [enhet]}"), ":6: key 'groups.1.groups.0': 'enhet' names no group"),
        (("uid: 21003", "uid: 21001"), ":3: key 'users.1.uid': uid 21001 of 'cecilia' is also the uid of 'anna'"),
        (("gid: 20002, members", "gid: 20001, members"), ":6: key 'groups.1.gid': gid 20001 of 'alla' is also"),
        (("name: cecilia", "name: anna"), ":3: key 'users.1.name': user 'anna' is listed twice"),
        (("name: alla", "name: ledningsgrupp"), ":6: key 'groups.1.name': group 'ledningsgrupp' is listed twice"),
        (("gid: ledningsgrupp", "gid: ledning"), ":2: key 'users.0.gid': primary group 'ledning' names no group"),
        (("gid: ledningsgrupp}", "gid: 20002, primary_group: ledningsgrupp}"), ":2: key 'users.0.gid': gid 20002"),
        (("uid: 21003", "uid: many"), ":3: key 'users.1.uid': Input should be a valid integer"),
        (("members: [cecilia]", "member: [cecilia]"), ":6: key 'groups.1.member': unknown key"),
        (("uid: 21003", "uid: 21003, uid: 21004"), ":3: key 'users.1.uid': given twice; only one can count"),
        (("users:\n", "users: []\nusers:\n"), ":2: key 'users': given twice; only one can count"),
    ],
)
def test_mistakes_name_file_line_and_entry(tmp_path: Path, edit: tuple[str, str], expected: str) -> None:
    path = tmp_path / "d.yaml"
    assert edit[0] in INCIDENT
    path.write_text(INCIDENT.replace(*edit))
    with pytest.raises(DirectoryFileError) as err:
        parse_directory(path)
    assert str(err.value).startswith(f"{path}{expected}")
    assert len(str(err.value).splitlines()) == 1


@pytest.mark.parametrize("gid", ["ledningsgrupp", "20001", "'20001'"])
def test_a_users_primary_group_is_a_name_or_a_number(tmp_path: Path, gid: str) -> None:
    path = tmp_path / "d.yaml"
    path.write_text(INCIDENT.replace("gid: ledningsgrupp", f"gid: {gid}"))
    anna = load_directory(path)["user:anna"]
    assert isinstance(anna, DirectoryUser) and anna.primary_gid == 20001


def test_a_bad_edit_keeps_the_last_good_directory_and_is_logged_once(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="permwatch.collectors.directory")
    path = tmp_path / "d.yaml"
    path.write_text(INCIDENT)
    emitter = FullSpoolFor()
    emitter.open.set()
    collector = DirectoryFileCollector(DirectoryFileConfig(path=path), emitter)
    collector.load()
    good = dict(collector.current)
    bad = INCIDENT.replace("members: [cecilia]", "members: [cecila]")
    for saved in ("#\n", "##\n"):  # the same mistake saved twice: said once
        path.write_text(bad + saved)
        collector.poll()
    assert collector.current == good and len(emitter.events) == 4
    errors = [r.getMessage() for r in caplog.records if r.levelname == "ERROR"]
    assert errors == [
        f"{path}:6: key 'groups.1.members.0': 'cecila' names no user or group in this file;"
        " keeping the last good directory"
    ]
    path.write_text(INCIDENT.replace("members: [cecilia]", "members: []"))
    collector.poll()
    assert len(emitter.events) == 5 and "good again" in caplog.text


def test_the_example_directory_gives_primary_groups_by_name_and_by_number() -> None:
    parsed = parse_directory(Path(__file__).resolve().parents[2] / "deploy" / "directory.example.yaml")
    assert parsed.notes == ()
    primary = {s.name: s.primary_gid for s in parsed.states.values() if isinstance(s, DirectoryUser)}
    assert primary == {"anna": 20001, "bengt": 20002, "cecilia": 20002, "backup": None}
