"""The static directory file: parsing, diffs between edits, clear errors."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from collectors.directory_file import DirectoryFileCollector, DirectoryFileError, diff, load_directory
from permwatch.config import DirectoryFileConfig
from permwatch.events import DirectoryGroup, DirectoryUser, Event
from permwatch.transport.spool import RecordDropped

BASE = """
users:
  - {name: anna, uid: 1001, primary_group: ledning}
  - {name: bo, uid: 1002, gid: 2002}
groups:
  - {name: ledning, gid: 2001, members: [anna]}
  - {name: alla, gid: 2002, members: [bo], groups: [enhet]}
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
    assert [e.change for e in snapshot] == ["snapshot"] * 4  # type: ignore[attr-defined]
    assert isinstance(snapshot[0], DirectoryUser)  # users first, so groups' members resolve
    path.write_text(
        BASE.replace("members: [anna]}", "members: [anna], groups: [alla]}").replace(
            "  - {name: bo, uid: 1002, gid: 2002}\n", ""
        )
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
        ("users: [{name: a, primary_group: nope}]", "primary_group 'nope' has no gid"),
        ("users: [", "not valid YAML"),
        ("groups: [{name: g, colour: red}]", "key 'groups.0.colour'"),
    ],
)
def test_errors_name_file_and_key(tmp_path: Path, text: str, expected: str) -> None:
    path = tmp_path / "d.yaml"
    path.write_text(text)
    with pytest.raises(DirectoryFileError) as err:
        load_directory(path)
    assert str(path) in str(err.value) and expected in str(err.value)


def wait_for(condition: Callable[[], bool], timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.02)


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
    stop = threading.Event()
    thread = threading.Thread(target=collector.run, args=(stop,))
    thread.start()
    try:
        wait_for(lambda: len(emitter.events) >= 4)
        assert len(emitter.events) == 4  # the snapshot
        emitter.open.clear()
        path.write_text(BASE.replace("members: [anna]}", "members: [anna], groups: [alla]}"))
        wait_for(lambda: emitter.refused >= 3)  # several polls met the full spool
        assert thread.is_alive() and len(emitter.events) == 4
        emitter.open.set()
        wait_for(lambda: len(emitter.events) >= 5)
    finally:
        stop.set()
        thread.join(10)
    (ledning,) = emitter.events[4:]
    assert isinstance(ledning, DirectoryGroup) and ledning.added == ("alla",)
