"""The remote SMB collector's settings: what a user may write in ``[[smb]]`` and what each mistake says."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import ValidationError

from collectors.smb.settings import SmbCollectorConfig

BASE = {"server": "fileserver", "share": "social", "username": "PERMWATCH\\svc", "path_prefix": "/smb/fs/social"}


def test_defaults_and_published_paths(tmp_path: Path) -> None:
    secret = tmp_path / "password"
    secret.write_text("Secret-1\n", encoding="utf-8")
    config = SmbCollectorConfig(**BASE, password_file=secret)
    assert (config.port, config.in_flight, config.reconcile_seconds, config.traverse) == (445, 8, 3600.0, "bypass")
    assert config.roots == [""]
    assert config.connections == 2
    assert config.password() == "Secret-1"
    assert config.published_path("") == "/smb/fs/social"
    assert config.published_path("ledning/protokoll") == "/smb/fs/social/ledning/protokoll"


def test_password_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    config = SmbCollectorConfig(**BASE, password_env="PW_SMB_TEST")
    with pytest.raises(ValueError, match="PW_SMB_TEST"):
        config.password()
    monkeypatch.setenv("PW_SMB_TEST", "Secret-2")
    assert config.password() == "Secret-2"


@pytest.mark.parametrize(
    ("change", "says"),
    [
        ({"share": "\\\\fileserver\\social"}, "share's name only"),
        ({"path_prefix": "smb/fs"}, "absolute path"),
        ({"path_prefix": "/smb/fs/"}, "absolute path"),
        ({"roots": ["../etc"]}, "without '.' or '..'"),
        ({"in_flight": 0}, "greater than or equal to 1"),
        ({"connections": 0}, "greater than or equal to 1"),
        ({"connections": 17}, "less than or equal to 16"),
        ({"reconcile_seconds": 5}, "greater than or equal to 60"),
        ({"password_env": None}, "exactly one of password_file and password_env"),
        ({"password_file": "/run/pw"}, "exactly one of password_file and password_env"),
    ],
)
def test_mistakes_are_named(change: dict[str, object], says: str) -> None:
    with pytest.raises(ValidationError, match=says):
        SmbCollectorConfig(**{**BASE, "password_env": "PW", **change})


def test_missing_password_file_says_which(tmp_path: Path) -> None:
    config = SmbCollectorConfig(**BASE, password_file=tmp_path / "nope")
    with pytest.raises(ValueError, match="cannot read password_file"):
        config.password()


def test_roots_are_share_relative_with_forward_slashes() -> None:
    config = SmbCollectorConfig(**BASE, password_env="PW", roots=["\\ledning\\", "/ekonomi/2026/"])
    assert config.roots == ["ledning", "ekonomi/2026"]
