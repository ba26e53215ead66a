"""Issue 7: the collector needs only read access, as the systemd unit runs it.

The collector runs as an unprivileged user (``nobody``) holding one capability,
``CAP_DAC_READ_SEARCH`` (read any file and list any directory, change
nothing), as ``deploy/systemd/permwatch-collector.service`` grants it; the
processor and the alerts stage run as that user with no capability at all.
The share is root's, with a folder only root may enter and a file only root
may read. The baseline scan still reads every path's ACL, a real ``setfacl``
still opens the exposure and its revert closes it, and the collector's
process holds no other capability while it does.
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

from permwatch.events import FsPermissionEvent, decode, unbatched
from permwatch.transport.embedded import EmbeddedBus
from tests.integration.pipeline import permwatch_exe, traversable_tempdir, wait_until

pytestmark = pytest.mark.integration

NOBODY = 65534
MGMT, STAFF = 34001, 34002
CAP_DAC_READ_SEARCH = 1 << 2
ROLES = ("collector", "processor", "alerts")


def unprivileged(role: str) -> list[str]:
    """``setpriv`` to nobody; the collector keeps CAP_DAC_READ_SEARCH (ambient, so it survives the exec)."""
    caps = ["--inh-caps=+dac_read_search", "--ambient-caps=+dac_read_search"] if role == "collector" else []
    return ["setpriv", f"--reuid={NOBODY}", f"--regid={NOBODY}", "--clear-groups", *caps]


@pytest.fixture
def base() -> Iterator[Path]:
    if os.geteuid() != 0:
        pytest.skip("needs root to make root-only files and to start processes as another user")
    with traversable_tempdir("permwatch-ro-") as path:
        yield path


def test_the_collector_reads_a_root_only_share_with_one_read_capability(base: Path) -> None:
    share = base / "share"
    folder = share / "ledning"
    hidden = folder / "styrelse"
    for directory, mode in ((share, 0o755), (folder, 0o750), (hidden, 0o700)):
        directory.mkdir()
        os.chmod(directory, mode)
    os.chown(folder, 0, MGMT)
    notes = hidden / "protokoll.txt"
    notes.write_text("personal data\n")
    os.chmod(notes, 0o600)

    work = base / "work"
    state = work / "state"
    state.mkdir(parents=True)
    os.chmod(work, 0o755)
    os.chown(state, NOBODY, NOBODY)
    directory_file = work / "directory.yaml"
    directory_file.write_text(
        yaml.safe_dump(
            {
                "users": [
                    {"name": "anna", "uid": 35001, "primary_group": "ledningsgrupp"},
                    *({"name": f"staff{i}", "uid": 35010 + i, "primary_group": "alla"} for i in range(3)),
                ],
                "groups": [
                    {"name": "ledningsgrupp", "gid": MGMT, "members": ["anna"]},
                    {"name": "alla", "gid": STAFF, "members": [f"staff{i}" for i in range(3)]},
                ],
            }
        )
    )
    alerts = state / "alerts.jsonl"
    config = work / "permwatch.toml"
    config.write_text(
        f"""
state_dir = "{state}"
[[fs]]
collector_id = "ro"
roots = ["{share}"]
[directory]
path = "{directory_file}"
[labels.definitions.ledning]
allowed_groups = ["ledningsgrupp"]
[[labels.rules]]
glob = "{folder}"
label = "ledning"
[[alerts.sinks]]
kind = "jsonl"
path = "{alerts}"
"""
    )
    for made in (directory_file, config):
        os.chmod(made, 0o644)
    exe = permwatch_exe()
    procs: dict[str, subprocess.Popen[bytes]] = {}

    def log(role: str) -> str:
        return (work / f"{role}.log").read_text(errors="replace")

    def lines() -> list[dict[str, Any]]:
        return [json.loads(line) for line in alerts.read_text().splitlines()] if alerts.exists() else []

    try:
        for role in ROLES:
            with (work / f"{role}.log").open("wb") as out:
                procs[role] = subprocess.Popen(
                    [*unprivileged(role), exe, "run", "--config", str(config), "--role", role],
                    stdout=out,
                    stderr=subprocess.STDOUT,
                )
        wait_until(lambda: f"scanned {share} (baseline)" in log("collector"), "the collector's baseline scan")
        status = Path(f"/proc/{procs['collector'].pid}/status").read_text()
        fields = dict(line.split(":\t", 1) for line in status.splitlines() if ":\t" in line)
        assert fields["Uid"].split()[1] == str(NOBODY)  # the effective uid
        assert int(fields["CapEff"], 16) == CAP_DAC_READ_SEARCH

        # the baseline read the ACL of the folder only root may enter and of the file only root may read
        def scanned() -> set[str]:
            bus = EmbeddedBus(state / "events.db")
            try:
                events = [one for r in bus.history(["fs"]) for one in unbatched(decode(r.value))]
            finally:
                bus.close()
            return {e.path for e in events if isinstance(e, FsPermissionEvent)}

        wait_until(lambda: {str(hidden), str(notes)} <= scanned(), "the root-only paths in the baseline")

        subprocess.run(["setfacl", "-R", "-m", f"g:{STAFF}:rX", str(folder)], check=True)
        # opened when the folder is judged; changed as the paths beneath are, until it counts all three
        wait_until(lambda: lines() and lines()[-1]["paths_affected"] == 3, "the exposure to count every path")
        subprocess.run(["setfacl", "-R", "-x", f"g:{STAFF}", str(folder)], check=True)
        wait_until(lambda: lines()[-1]["status"] == "closed", "the exposure to close")
    finally:
        for proc in procs.values():
            proc.send_signal(signal.SIGTERM)
        for proc in procs.values():
            proc.wait(60)
    for role, proc in procs.items():
        assert proc.returncode == 0, f"{role}: {log(role)[-2000:]}"
        assert "Traceback" not in log(role) and "Permission denied" not in log(role), log(role)[-2000:]
    opened, *changed, _ = lines()
    assert opened["status"] == "opened" and {c["status"] for c in changed} <= {"changed"}
    assert opened["groups"] == ["alla"] and opened["people"] == 3
    widest = ([opened, *changed])[-1]
    assert str(notes) in widest["sample_paths"] and widest["paths_affected"] == 3
