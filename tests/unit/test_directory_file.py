"""The static directory file: parsing, diffs between edits, clear errors."""

from __future__ import annotations

from pathlib import Path

import pytest

from collectors.directory_file import DirectoryFileError, diff, load_directory
from permwatch.events import DirectoryGroup, DirectoryUser

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
