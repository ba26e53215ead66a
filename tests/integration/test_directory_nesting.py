"""The directory file's nesting on real files: what permwatch judges against what the kernel lets people read.

The incident of issue 14: the all-staff group is nested into the management group by writing it under the
management group's ``members`` (instead of its ``groups``). The kernel resolves nested groups into each
person's supplementary groups, so everyone in all-staff can now read the management folder; permwatch must
open an exposure naming exactly those people, not drop the nesting. Each person's verdict is the kernel's own:
``setpriv`` runs ``ls`` and ``cat`` as them, with the groups the directory gives them. A directory file that
resolves to nothing refuses to start with one line naming the file, the line and the entry.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.integration.pipeline import permwatch_exe, traversable_tempdir, wait_until

pytestmark = pytest.mark.integration

MGMT, STAFF = 32101, 32102
USERS = [
    {"name": "anna", "uid": 33101, "gid": "ledningsgrupp"},
    {"name": "bengt", "uid": 33102, "gid": MGMT},  # the primary group by number: allowed as anna is
    {"name": "cecilia", "uid": 33103, "gid": "alla"},
    {"name": "david", "uid": 33104, "gid": STAFF},
]


def directory(nested_under_members: bool) -> dict[str, Any]:
    management = ["anna", "alla"] if nested_under_members else ["anna"]
    return {
        "users": USERS,
        "groups": [
            {"name": "ledningsgrupp", "gid": MGMT, "members": management},
            {"name": "alla", "gid": STAFF, "members": ["cecilia", "david"]},
        ],
    }


def supplementary_gids(doc: dict[str, Any], user: str) -> list[int]:
    """The gids the operating system gives ``user``: groups listing them, and every group those are nested
    into (here, as the file says it: a group named under ``members`` is nested)."""
    groups = {g["name"]: g for g in doc["groups"]}
    names = {u["name"] for u in doc["users"]}
    parents: dict[str, set[str]] = {}
    for g in doc["groups"]:
        for child in [*g.get("groups", []), *(m for m in g.get("members", []) if m not in names)]:
            parents.setdefault(child, set()).add(g["name"])
    member_of = [g["name"] for g in doc["groups"] if user in g.get("members", [])]
    seen: set[str] = set()
    while member_of:
        name = member_of.pop()
        if name not in seen:
            seen.add(name)
            member_of.extend(parents.get(name, ()))
    return sorted(groups[name]["gid"] for name in seen)


def kernel_lets_read(doc: dict[str, Any], user: dict[str, Any], folder: Path, file: Path) -> bool:
    """``ls`` the folder and ``cat`` the file as ``user``, by the kernel's own permission check."""
    gids = {g["name"]: g["gid"] for g in doc["groups"]}
    primary = user["gid"] if isinstance(user["gid"], int) else gids[user["gid"]]
    groups = supplementary_gids(doc, user["name"])
    ident = [f"--reuid={user['uid']}", f"--regid={primary}"]
    ident += [f"--groups={','.join(map(str, groups))}"] if groups else ["--clear-groups"]
    listed = subprocess.run(["setpriv", *ident, "ls", str(folder)], capture_output=True)
    read = subprocess.run(["setpriv", *ident, "cat", str(file)], capture_output=True)
    assert (listed.returncode == 0) == (read.returncode == 0), (listed, read)  # rX on both or on neither, here
    return read.returncode == 0


def line_of(path: Path, text: str) -> int:
    """The 1-based number of the line of ``path`` that holds ``text``."""
    return next(n for n, line in enumerate(path.read_text().splitlines(), 1) if text in line)


@pytest.fixture
def share() -> Iterator[Path]:
    with traversable_tempdir("permwatch-nest-") as base:
        yield base / "share"


def write_config(tmp_path: Path, share: Path, folder: Path, directory_file: Path) -> Path:
    config = tmp_path / "permwatch.toml"
    config.write_text(
        f"""
state_dir = "{tmp_path / "state"}"
[[fs]]
collector_id = "nest"
roots = ["{share}"]
[directory]
path = "{directory_file}"
[labels.definitions.ledning]
allowed_groups = ["ledningsgrupp"]
[labels.definitions.personal]
allowed_groups = ["hr"]
[[labels.rules]]
glob = "{folder}"
label = "ledning"
[[alerts.sinks]]
kind = "jsonl"
path = "{tmp_path / "alerts.jsonl"}"
"""
    )
    return config


def test_nesting_all_staff_via_members_opens_an_exposure_for_whom_the_kernel_lets_read(
    share: Path, tmp_path: Path
) -> None:
    folder = share / "ledning"
    folder.mkdir(parents=True)
    os.chmod(share, 0o755)
    os.chown(folder, 0, MGMT)
    os.chmod(folder, 0o750)
    notes = folder / "protokoll.txt"
    notes.write_text("Protokoll\n")
    os.chown(notes, 0, MGMT)
    os.chmod(notes, 0o640)
    directory_file = tmp_path / "directory.yaml"
    before = directory(nested_under_members=False)
    directory_file.write_text(yaml.safe_dump(before))
    config = write_config(tmp_path, share, folder, directory_file)
    alerts = tmp_path / "alerts.jsonl"
    log = tmp_path / "permwatch.log"

    def lines() -> list[dict[str, Any]]:
        return [json.loads(line) for line in alerts.read_text().splitlines()] if alerts.exists() else []

    readers = {u["name"] for u in USERS if kernel_lets_read(before, u, folder, notes)}
    assert readers == {"anna", "bengt"}  # the management group only: no exposure to begin with

    with log.open("wb") as out:
        proc = subprocess.Popen([permwatch_exe(), "run", "--config", str(config)], stdout=out, stderr=subprocess.STDOUT)
    try:
        wait_until(lambda: "processor restart: state rebuilt" in log.read_text(), "the processor to start")
        wait_until(lambda: f"scanned {share} (baseline)" in log.read_text(), "the baseline scan")
        after = directory(nested_under_members=True)
        staged = directory_file.with_suffix(".tmp")
        staged.write_text(yaml.safe_dump(after))
        staged.replace(directory_file)
        wait_until(lambda: [a["status"] for a in lines()] == ["opened"], "the exposure to open")
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(60)
    text = log.read_text()
    assert proc.returncode == 0, text[-3000:]

    readers = {u["name"] for u in USERS if kernel_lets_read(after, u, folder, notes)}
    assert readers == {"anna", "bengt", "cecilia", "david"}  # the kernel: all-staff now reads the minutes
    (opened,) = lines()
    # outside the label: every reader but anna (a direct member) and bengt (primary group by number)
    assert opened["users"] == ["cecilia", "david"] == sorted(readers - {"anna", "bengt"})
    assert opened["people"] == 2 and opened["folder"] == str(folder)
    assert [(g["entry"], g["chain"]) for g in opened["grants"]] == [("group::", ["alla", "ledningsgrupp"])]
    line = line_of(directory_file, "- alla")
    assert f"{directory_file}:{line}: key 'groups.0.members.1': 'alla' is a group: nested into 'ledningsgrupp'" in text
    # said, with the line, so the file can be written the plain way
    assert (
        f"{config}: key 'labels.definitions.personal.allowed_groups': group 'hr' is not in the directory file"
        f" {directory_file}, so it allows nobody" in text
    )  # run says it too, not only check-config
    assert "Traceback" not in text


def test_a_directory_file_naming_nobody_refuses_to_start_with_one_line(share: Path, tmp_path: Path) -> None:
    folder = share / "ledning"
    folder.mkdir(parents=True)
    doc = directory(nested_under_members=False)
    doc["groups"][1]["members"] = ["cecilia", "davdi"]
    directory_file = tmp_path / "directory.yaml"
    directory_file.write_text(yaml.safe_dump(doc))
    config = write_config(tmp_path, share, folder, directory_file)
    for command in ("check-config", "run"):
        args = [str(config)] if command == "check-config" else ["--config", str(config)]
        done = subprocess.run([permwatch_exe(), command, *args], capture_output=True, text=True, timeout=120)
        assert done.returncode == 2, (command, done.stdout, done.stderr)
        line = next(x for x in done.stderr.splitlines() if "davdi" in x)
        at = line_of(directory_file, "- davdi")
        expected = f"{directory_file}:{at}: key 'groups.1.members.1': 'davdi' names no user or group in this file"
        assert line.endswith(expected), line
        assert "Traceback" not in done.stderr
