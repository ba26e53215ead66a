"""``permwatch run`` on the embedded log over a real share, for the actor and open tests (#18)."""

from __future__ import annotations

import json
import signal
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import yaml

from tests.integration.pipeline import permwatch_exe, wait_until


@contextmanager
def permwatch_run(
    tmp_path: Path, share: Path, folder: Path, directory: dict[str, Any], extra: str = ""
) -> Iterator[Path]:
    """An all-in-one run labelling ``folder`` for ``ledningsgrupp``, alerts to JSONL; yields the alerts file."""
    directory_file = tmp_path / "directory.yaml"
    directory_file.write_text(yaml.safe_dump(directory))
    alerts = tmp_path / "alerts.jsonl"
    config = tmp_path / "permwatch.toml"
    config.write_text(
        f"""
state_dir = "{tmp_path / "state"}"
[[fs]]
collector_id = "actors"
roots = ["{share}"]
actors = "fanotify"
opens = "fanotify"
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
{extra}
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
    assert "fanotify unavailable" not in text


def records(alerts: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in alerts.read_text().splitlines()] if alerts.exists() else []


def record_saying(alerts: Path, **expected: Any) -> dict[str, Any] | None:
    """The first record saying ``expected``, once there is one."""
    return next((r for r in records(alerts) if all(r.get(k) == v for k, v in expected.items())), None)
