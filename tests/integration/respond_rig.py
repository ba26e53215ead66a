"""A real-files rig for the respond tests (issue 19): a share, a directory file, ``permwatch run`` on the embedded
log with a JSONL sink, and helpers to read the record and ask the kernel (``setpriv``) who can read."""

from __future__ import annotations

import json
import os
import signal
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import yaml

from permwatch.events import TOPIC_DECISIONS, TOPIC_EXPOSURES, Decision, ExposureEvent, decode
from permwatch.transport.embedded import EmbeddedBus
from tests.integration.pipeline import permwatch_exe, wait_until

MGMT, STAFF, EXTERN = 32301, 32302, 32303
ANNA = {"name": "anna", "uid": 33301, "gid": MGMT}
CECILIA = {"name": "cecilia", "uid": 33303, "gid": STAFF}
ERIK = {"name": "erik", "uid": 33305, "gid": EXTERN}
DIRECTORY = {
    "users": [ANNA, CECILIA, ERIK],
    "groups": [
        {"name": "ledningsgrupp", "gid": MGMT, "members": ["anna"]},
        {"name": "alla", "gid": STAFF, "members": ["cecilia"]},
        {"name": "extern", "gid": EXTERN, "members": ["erik"]},
    ],
}


def as_user(user: dict[str, Any], *command: str) -> bool:
    """Whether ``command`` succeeds run as ``user``: the kernel's own access check."""
    ident = [f"--reuid={user['uid']}", f"--regid={user['gid']}", f"--groups={user['gid']}"]
    return subprocess.run(["setpriv", *ident, *command], capture_output=True).returncode == 0


def make(path: Path, *, directory: bool, mode: int) -> Path:
    if directory:
        path.mkdir()
    else:
        path.write_text("contents permwatch never reads\n")
    os.chown(path, 0, MGMT)
    os.chmod(path, mode)
    return path


class Rig:
    """``permwatch run`` over ``share``: ``labels`` and ``extra`` are TOML added to the config, ``fs`` to its
    ``[[fs]]`` table (an ACL reader), ``directory`` the directory file's content (the respond users by default)."""

    def __init__(
        self,
        tmp_path: Path,
        share: Path,
        labels: str,
        *,
        extra: str = "",
        fs: str = "",
        directory: dict[str, Any] | None = None,
    ) -> None:
        self.tmp_path = tmp_path
        self.share = share
        self.alerts = tmp_path / "alerts.jsonl"
        self.config = tmp_path / "permwatch.toml"
        self.log = tmp_path / "permwatch.log"
        self.events_db = tmp_path / "state" / "events.db"
        directory_file = tmp_path / "directory.yaml"
        directory_file.write_text(yaml.safe_dump(DIRECTORY if directory is None else directory))
        self.config.write_text(
            f"""
state_dir = "{tmp_path / "state"}"
[transport.embedded]
path = "{self.events_db}"
[[fs]]
collector_id = "respond"
roots = ["{share}"]
{fs}
[directory]
path = "{directory_file}"
{labels}
[[alerts.sinks]]
kind = "jsonl"
path = "{self.alerts}"
{extra}
"""
        )

    @contextmanager
    def running(self) -> Iterator[None]:
        starts = self.log.read_text().count("processor restart: state rebuilt") if self.log.exists() else 0
        scans = self.log.read_text().count(f"scanned {self.share}") if self.log.exists() else 0
        with self.log.open("ab") as out:
            proc = subprocess.Popen(
                [permwatch_exe(), "run", "--config", str(self.config)], stdout=out, stderr=subprocess.STDOUT
            )
        try:
            wait_until(lambda: self.log.read_text().count("processor restart: state rebuilt") > starts, "processor")
            wait_until(lambda: self.log.read_text().count(f"scanned {self.share}") > scans, "the scan")
            yield
        finally:
            proc.send_signal(signal.SIGTERM)
            proc.wait(60)
        text = self.log.read_text()
        assert proc.returncode == 0, text[-3000:]
        assert "Traceback" not in text

    def cli(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        done = subprocess.run(
            [permwatch_exe(), *args, "--config", str(self.config)], capture_output=True, text=True, timeout=120
        )
        if check:
            assert done.returncode == 0, done.stderr
        return done

    def alerted(self) -> list[dict[str, Any]]:
        return [json.loads(line) for line in self.alerts.read_text().splitlines()] if self.alerts.exists() else []

    def _history(self, topic: str) -> list[Any]:
        bus = EmbeddedBus(self.events_db)
        try:
            return [decode(r.value) for r in bus.history([topic])]
        finally:
            bus.close()

    def recorded(self) -> list[ExposureEvent]:
        return [e for e in self._history(TOPIC_EXPOSURES) if isinstance(e, ExposureEvent)]

    def decisions(self) -> list[Decision]:
        return [e for e in self._history(TOPIC_DECISIONS) if isinstance(e, Decision)]

    def wait_recorded(self, what: str, **expected: Any) -> ExposureEvent:
        def found() -> ExposureEvent | None:
            for event in reversed(self.recorded()):
                if all(getattr(event, key) == value for key, value in expected.items()):
                    return event
            return None

        result: ExposureEvent = wait_until(found, what)
        return result
