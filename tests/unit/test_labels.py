"""Label assignment: policy globs, xattr and marker file, the always-allowed, announcing only changes."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from collectors.labels import LabelPolicy, path_glob_matches
from permwatch.config import LabelDefinition, LabelRule, LabelsConfig
from permwatch.events import Severity


def policy(tmp_path: Path) -> LabelPolicy:
    return LabelPolicy(
        LabelsConfig(
            definitions={
                "ledning": LabelDefinition(severity=Severity.CRITICAL, allowed_groups=["ledningsgrupp"]),
                "hr": LabelDefinition(allowed_groups=["hr"], allowed_users=["payroll"]),
            },
            rules=[LabelRule(glob=f"{tmp_path}/ledning", label="ledning")],
            always_allowed_groups=["it-admins"],
            always_allowed_users=["root", "backup"],
        )
    )


def test_policy_glob_adds_always_allowed(tmp_path: Path) -> None:
    (tmp_path / "ledning").mkdir()
    event = policy(tmp_path).observe(str(tmp_path / "ledning"))
    assert event is not None and event.label is not None
    assert event.label.allowed_groups == ("ledningsgrupp", "it-admins")
    assert event.label.allowed_users == ("root", "backup")
    assert event.origin == "policy"


def test_marker_file_and_announce_once(tmp_path: Path) -> None:
    folder = tmp_path / "case-17"
    folder.mkdir()
    (folder / ".sensitivity").write_text("hr\n")
    labels = policy(tmp_path)
    first = labels.observe(str(folder))
    assert first is not None and first.label is not None and first.label.name == "hr" and first.origin == "marker"
    assert labels.observe(str(folder)) is None
    (folder / ".sensitivity").unlink()
    removed = labels.observe(str(folder))
    assert removed is not None and removed.label is None
    assert labels.forget(str(folder)) is None


def test_xattr_with_unknown_label_is_strictest(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    folder = tmp_path / "secret"
    folder.mkdir()
    try:
        os.setxattr(folder, "user.sensitivity", b"hemlig")
    except OSError:
        pytest.skip("filesystem without user xattrs")
    event = policy(tmp_path).observe(str(folder))
    assert event is not None and event.label is not None
    assert event.origin == "xattr"
    assert event.label.severity is Severity.CRITICAL
    assert event.label.allowed_groups == ("it-admins",)
    assert "unknown label 'hemlig'" in caplog.text


@pytest.mark.parametrize(
    ("path", "glob", "expected"),
    [
        ("/srv/share/ledning-a", "/srv/share/ledning-*", True),
        ("/srv/share/ledning-a/sub", "/srv/share/ledning-*", False),
        ("/srv/share/hr/cases/17", "/srv/**/cases/*", True),
        ("/srv/share/hr/cases/17/x", "/srv/**/cases/*", False),
        ("/srv/a.b", "/srv/a?b", True),
        ("/srv/a/b", "/srv/a?b", False),
    ],
)
def test_path_globs_keep_star_within_a_component(path: str, glob: str, expected: bool) -> None:
    assert path_glob_matches(path, glob) is expected
