"""The README's first command and the default deployment, on real files and the embedded event log.

``permwatch demo`` is what the quick start runs; ``permwatch run`` with no
``[transport]`` section is the all-in-one process on the embedded log, the
default for a single file server. Both are run as a user would, as processes,
against real files changed with real ``setfacl``; no Kafka.
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

MGMT, STAFF = 32001, 32002
CONTENT = "Protokoll: klient 19121212-1212 Tolvan Tolvansson"
"""A file's contents, standing for personal data: never in an alert, a log line or the event log."""


def test_the_demo_runs_the_incident_to_its_close() -> None:
    done = subprocess.run([permwatch_exe(), "demo"], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout + done.stderr
    out = done.stdout
    opened, closed = out.index("EXPOSURE OPENED"), out.index("EXPOSURE CLOSED")
    assert opened < closed
    assert "5 people outside the label can read it" in out[opened:closed]
    assert "5 via group:alla (alla)" in out[opened:closed]
    assert "exposure closed after" in out[closed:]
    assert "Traceback" not in out + done.stderr


@pytest.fixture
def share() -> Iterator[Path]:
    with traversable_tempdir("permwatch-qs-") as base:
        yield base / "share"


def test_the_all_in_one_process_on_the_embedded_log(share: Path, tmp_path: Path) -> None:
    folder = share / "ledning"
    folder.mkdir(parents=True)
    os.chmod(share, 0o755)
    os.chown(folder, 0, MGMT)
    os.chmod(folder, 0o750)
    notes = folder / "protokoll.txt"
    notes.write_text(CONTENT + "\n")
    os.chown(notes, 0, MGMT)
    os.chmod(notes, 0o640)
    directory = tmp_path / "directory.yaml"
    directory.write_text(
        yaml.safe_dump(
            {
                "users": [
                    {"name": "anna", "uid": 33001, "primary_group": "ledningsgrupp"},
                    *({"name": f"staff{i}", "uid": 33010 + i, "primary_group": "alla"} for i in range(4)),
                ],
                "groups": [
                    {"name": "ledningsgrupp", "gid": MGMT, "members": ["anna"]},
                    {"name": "alla", "gid": STAFF, "members": [f"staff{i}" for i in range(4)]},
                ],
            }
        )
    )
    alerts = tmp_path / "alerts.jsonl"
    config = tmp_path / "permwatch.toml"
    config.write_text(
        f"""
state_dir = "{tmp_path / "state"}"
[[fs]]
collector_id = "qs"
roots = ["{share}"]
[directory]
path = "{directory}"
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
    log = tmp_path / "permwatch.log"

    def lines() -> list[dict[str, Any]]:
        return [json.loads(line) for line in alerts.read_text().splitlines()] if alerts.exists() else []

    with log.open("wb") as out:
        proc = subprocess.Popen([permwatch_exe(), "run", "--config", str(config)], stdout=out, stderr=subprocess.STDOUT)
    try:
        # the baseline is judged (no exposure), then the "IT update" grants the all-staff group read
        wait_until(lambda: "processor restart: state rebuilt" in log.read_text(), "the processor to start")
        wait_until(lambda: f"scanned {share} (baseline)" in log.read_text(), "the baseline scan")
        subprocess.run(["setfacl", "-R", "-m", f"g:{STAFF}:rX", str(folder)], check=True)
        # opened as soon as the folder is judged, changed if its file is judged in a later batch: the
        # record follows until it counts both paths
        wait_until(lambda: lines() and lines()[-1]["paths_affected"] == 2, "the exposure to count both paths")
        subprocess.run(["setfacl", "-R", "-x", f"g:{STAFF}", str(folder)], check=True)
        wait_until(lambda: lines()[-1]["status"] == "closed", "the exposure to close")
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(60)
    assert proc.returncode == 0, log.read_text()[-3000:]

    opened, *changed, closed = lines()
    assert opened["status"] == "opened" and {c["status"] for c in changed} <= {"changed"}
    assert opened["kind"] == "contents" or changed[-1]["kind"] == "contents"
    assert opened["folder"] == str(folder) and opened["label"]["name"] == "ledning"
    assert opened["groups"] == ["alla"] and opened["people"] == 4
    assert closed["exposure_id"] == opened["exposure_id"] and closed["duration_seconds"] > 0
    # the default transport is the embedded log in the state dir, which keeps the history for a workshop
    assert (tmp_path / "state" / "events.db").exists()
    for where in (log, alerts, tmp_path / "state" / "events.db"):
        assert CONTENT.encode() not in where.read_bytes(), where
