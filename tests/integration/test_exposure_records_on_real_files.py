"""Exposure records on real files, checked against the kernel's own verdict.

An all-in-one ``permwatch run`` on the embedded log watches a share whose management folder is labelled for
``ledningsgrupp``; the alerts go to a JSONL file. After each permission change the test asks the kernel who
can read what: ``setpriv`` runs ``test -r`` (and ``ls`` for a folder's names, ``ls -l`` or ``cat`` for
contents) as an outsider, with the groups the directory file gives them, and the latest record of the exposure
must say the same: as many paths as the kernel lets the outsider read, the first of them as the sample, and the
kind the kernel allows: ``names`` when ``ls`` works and neither ``ls -l`` nor ``cat`` does, else ``contents``.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.integration.pipeline import permwatch_exe, traversable_tempdir, wait_until

pytestmark = pytest.mark.integration

MGMT, STAFF = 32201, 32202
ANNA = {"name": "anna", "uid": 33201, "gid": MGMT}
CECILIA = {"name": "cecilia", "uid": 33203, "gid": STAFF}
DAVID = {"name": "david", "uid": 33204, "gid": STAFF}
OUTSIDERS = [CECILIA, DAVID]
DIRECTORY = {
    "users": [ANNA, CECILIA, DAVID],
    "groups": [
        {"name": "ledningsgrupp", "gid": MGMT, "members": ["anna"]},
        {"name": "alla", "gid": STAFF, "members": ["cecilia", "david"]},
    ],
}


def as_user(user: dict[str, Any], *command: str) -> bool:
    """Whether ``command`` succeeds run as ``user`` (its primary group and its one supplementary group)."""
    ident = [f"--reuid={user['uid']}", f"--regid={user['gid']}", f"--groups={user['gid']}"]
    return subprocess.run(["setpriv", *ident, *command], capture_output=True).returncode == 0


def readable_by(user: dict[str, Any], folder: Path) -> list[str]:
    """Every path at or under ``folder`` the kernel lets ``user`` read (access(2): ancestors' x included)."""
    paths = [folder, *sorted(folder.rglob("*"))]
    return sorted(str(p) for p in paths if as_user(user, "test", "-r", str(p)))


@pytest.fixture
def share() -> Iterator[Path]:
    with traversable_tempdir("permwatch-records-") as base:
        share = base / "share"
        share.mkdir()
        os.chmod(share, 0o755)
        yield share


def make(path: Path, *, directory: bool, mode: int) -> Path:
    if directory:
        path.mkdir()
    else:
        path.write_text("contents permwatch never reads\n")
    os.chown(path, 0, MGMT)
    os.chmod(path, mode)
    return path


@contextmanager
def permwatch_run(
    tmp_path: Path, share: Path, folder: Path, *, label_extra: str = "", processor: str = ""
) -> Iterator[Path]:
    """``permwatch run`` on the embedded log, until the block ends; yields the JSONL alerts file."""
    directory_file = tmp_path / "directory.yaml"
    directory_file.write_text(yaml.safe_dump(DIRECTORY))
    alerts = tmp_path / "alerts.jsonl"
    config = tmp_path / "permwatch.toml"
    config.write_text(
        f"""
state_dir = "{tmp_path / "state"}"
[[fs]]
collector_id = "records"
roots = ["{share}"]
[directory]
path = "{directory_file}"
[labels.definitions.ledning]
allowed_groups = ["ledningsgrupp"]
{label_extra}
[[labels.rules]]
glob = "{folder}"
label = "ledning"
[[alerts.sinks]]
kind = "jsonl"
path = "{alerts}"
[processor]
{processor}
"""
    )
    log = tmp_path / "permwatch.log"
    with log.open("wb") as out:
        proc = subprocess.Popen([permwatch_exe(), "run", "--config", str(config)], stdout=out, stderr=subprocess.STDOUT)
    try:
        wait_until(lambda: "processor restart: state rebuilt" in log.read_text(), "the processor to start")
        wait_until(lambda: f"scanned {share} (baseline)" in log.read_text(), "the baseline scan")
        yield alerts
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(60)
    text = log.read_text()
    assert proc.returncode == 0, text[-3000:]
    assert "Traceback" not in text


def records(alerts: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in alerts.read_text().splitlines()] if alerts.exists() else []


def latest_saying(alerts: Path, **expected: Any) -> dict[str, Any] | None:
    """The latest record, once it says ``expected`` (the processor may take a few batches to get there)."""
    found = records(alerts)
    if found and all(found[-1].get(key) == value for key, value in expected.items()):
        return found[-1]
    return None


def test_a_recursive_setfacl_opens_an_exposure_counting_every_path_the_kernel_lets_an_outsider_read(
    share: Path, tmp_path: Path
) -> None:
    folder = make(share / "ledning", directory=True, mode=0o750)
    make(folder / "protokoll 2026-01.txt", directory=False, mode=0o640)
    make(folder / "protokoll 2026-02.txt", directory=False, mode=0o640)
    arkiv = make(folder / "arkiv", directory=True, mode=0o750)
    make(arkiv / "2025.txt", directory=False, mode=0o640)
    make(arkiv / "2024.txt", directory=False, mode=0o600)
    personal = make(arkiv / "personal", directory=True, mode=0o750)
    make(personal / "lönelista.ods", directory=False, mode=0o640)
    assert all(readable_by(user, folder) == [] for user in OUTSIDERS)  # nothing exposed to begin with

    with permwatch_run(tmp_path, share, folder, processor="max_users_listed = 1") as alerts:
        subprocess.run(["setfacl", "-R", "-m", f"g:{STAFF}:rX", str(folder)], check=True)
        kernel = readable_by(CECILIA, folder)
        assert kernel == readable_by(DAVID, folder)
        assert len(kernel) == 8  # the folder, 2 subfolders, 5 files: the case had 7
        latest = wait_until(
            lambda: latest_saying(alerts, paths_affected=len(kernel)), f"the record to count {len(kernel)} paths"
        )
    statuses = [r["status"] for r in records(alerts)]
    assert statuses[0] == "opened" and set(statuses[1:]) <= {"changed"}, statuses
    assert latest["paths_affected"] == len(kernel)
    assert latest["sample_paths"] == kernel[:5]
    # the record names one outsider (max_users_listed = 1) and says it cut the list; the workshop names both
    assert latest["users"] == ["cecilia"] and latest["users_truncated"] is True and latest["people"] == 2
    config = tmp_path / "permwatch.toml"
    for recorded in ([], ["--recorded"]):
        done = subprocess.run(
            [permwatch_exe(), "exposures", "--config", str(config), "--json", *recorded],
            capture_output=True,
            text=True,
            check=True,
        )
        (window,) = json.loads(done.stdout)
        if recorded:
            assert (window["users"], window["users_complete"]) == (["cecilia"], False)
        else:
            assert (window["users"], window["users_complete"]) == (["cecilia", "david"], True)
            assert window["max_paths_affected"] == len(kernel)
    assert {r["exposure_id"] for r in records(alerts)} == {latest["exposure_id"]}
    # the kernel's verdict path by path, for every path the record counts: contents, each file read with cat
    # and each folder entered with ls -l, by each outsider
    assert latest["kind"] == "contents"
    counted_files = [p for p in kernel if Path(p).is_file()]
    assert len(counted_files) == 5 and str(personal / "lönelista.ods") in counted_files
    for user in OUTSIDERS:
        assert all(as_user(user, "cat", p) for p in counted_files), user["name"]
        assert all(as_user(user, "ls", "-l", p) for p in kernel if Path(p).is_dir()), user["name"]
    assert as_user(ANNA, "cat", str(arkiv / "2025.txt"))  # the audience reads too, and is not on the record


def kernel_view(folder: Path, file: Path) -> dict[str, tuple[bool, bool, bool]]:
    """Per outsider, by the kernel: (can ``ls`` the folder: its names; can ``ls -l`` it: enter it and see each
    file's size, owner and times; can ``cat`` the file: its contents). The folder holds the file, so ``ls -l``
    has an entry to stat: on an empty folder it would succeed without ``x``."""
    return {
        u["name"]: (as_user(u, "ls", str(folder)), as_user(u, "ls", "-l", str(folder)), as_user(u, "cat", str(file)))
        for u in OUTSIDERS
    }


def kind_by_kernel(view: dict[str, tuple[bool, bool, bool]]) -> str | None:
    """The kind the kernel's answers make of it: contents if an outsider may ``ls -l`` or ``cat``, names if one
    may only ``ls``, None if none may do anything."""
    if any(long or read for _, long, read in view.values()):
        return "contents"
    return "names" if any(names for names, _, _ in view.values()) else None


def names_then_contents(share: Path) -> tuple[Path, Path]:
    folder = make(share / "ledning", directory=True, mode=0o750)
    notes = make(folder / "klient 4711 protokoll.txt", directory=False, mode=0o640)
    return folder, notes


def test_a_folder_listable_but_not_enterable_is_an_exposure_of_names_and_of_contents_once_enterable(
    share: Path, tmp_path: Path
) -> None:
    folder, notes = names_then_contents(share)
    assert kernel_view(folder, notes) == {"cecilia": (False, False, False), "david": (False, False, False)}
    assert kind_by_kernel(kernel_view(folder, notes)) is None
    with permwatch_run(tmp_path, share, folder) as alerts:
        subprocess.run(["setfacl", "-m", f"g:{STAFF}:r--", str(folder)], check=True)  # r without x
        view = kernel_view(folder, notes)
        assert view == {"cecilia": (True, False, False), "david": (True, False, False)}  # ls only
        names = wait_until(lambda: latest_saying(alerts, status="opened"), "the exposure to open")
        assert names["kind"] == kind_by_kernel(view) == "names"
        assert names["users"] == ["cecilia", "david"]
        assert names["paths_affected"] == len(readable_by(CECILIA, folder)) == 1

        subprocess.run(["setfacl", "-m", f"g:{STAFF}:r-x", str(folder)], check=True)  # can enter now
        view = kernel_view(folder, notes)
        assert view == {"cecilia": (True, True, False), "david": (True, True, False)}  # ls -l, no cat
        entered = wait_until(lambda: latest_saying(alerts, kind="contents"), "the change to contents")
        assert entered["kind"] == kind_by_kernel(view) == "contents"
        assert entered["paths_affected"] == len(readable_by(CECILIA, folder)) == 1  # the file is still closed

        subprocess.run(["setfacl", "-m", f"g:{STAFF}:r--", str(notes)], check=True)
        view = kernel_view(folder, notes)
        assert view == {"cecilia": (True, True, True), "david": (True, True, True)}
        readable = wait_until(lambda: latest_saying(alerts, paths_affected=2), "the file to be counted")
        assert readable["kind"] == kind_by_kernel(view) == "contents"
    assert [(r["status"], r["kind"]) for r in records(alerts)] == [
        ("opened", "names"),
        ("changed", "contents"),
        ("changed", "contents"),
    ]
    assert {r["exposure_id"] for r in records(alerts)} == {names["exposure_id"]}
    assert (entered["sequence"], readable["sequence"]) == (1, 2)
    assert readable["paths_affected"] == len(readable_by(CECILIA, folder)) == 2
    assert readable["sample_paths"] == readable_by(DAVID, folder)


def test_a_label_without_alerts_on_names_records_them_and_alerts_the_contents(share: Path, tmp_path: Path) -> None:
    folder, notes = names_then_contents(share)
    with permwatch_run(tmp_path, share, folder, label_extra="alert_on_names = false") as alerts:
        subprocess.run(["setfacl", "-m", f"g:{STAFF}:r--", str(folder)], check=True)
        assert kind_by_kernel(kernel_view(folder, notes)) == "names"
        config = tmp_path / "permwatch.toml"

        def recorded() -> list[dict[str, Any]]:
            done = subprocess.run(
                [permwatch_exe(), "exposures", "--config", str(config), "--recorded", "--json"],
                capture_output=True,
                text=True,
                check=True,
            )
            return json.loads(done.stdout) or []

        (window,) = wait_until(recorded, "the names exposure on the record")
        assert window["kind"] == "names" and window["users"] == ["cecilia", "david"]
        subprocess.run(["setfacl", "-m", f"g:{STAFF}:r-x", str(folder)], check=True)
        assert kind_by_kernel(kernel_view(folder, notes)) == "contents"  # ls -l works, cat does not
        wait_until(lambda: latest_saying(alerts, kind="contents"), "the contents alert")
        subprocess.run(["setfacl", "-x", f"g:{STAFF}", str(folder)], check=True)
        wait_until(lambda: latest_saying(alerts, status="closed"), "the close alert")
    # the alerts: what was of contents, from the widening on, and its close; the record: every step
    assert [(r["status"], r["kind"]) for r in records(alerts)] == [("changed", "contents"), ("closed", "contents")]
    (window,) = recorded()
    assert [(c["status"], c["kind"]) for c in window["changes"]] == [
        ("opened", "names"),
        ("changed", "contents"),
        ("closed", "contents"),
    ]
