"""``permwatch demo``: the motivating incident, replayed on real files in a temporary tree.

A management folder that only ``ledningsgrupp`` may read; an "IT update"
that grants the all-staff group read on it; the alert; the revert; the close
with its duration. Everything runs in this process on the embedded event
log, exactly as ``permwatch run`` would, and the real collector watches the
real files. No Kafka, no network, no root needed.
"""

from __future__ import annotations

import getpass
import json
import os
import shutil
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from collectors.directory_settings import DirectoryFileConfig
from collectors.fs.settings import FsCollectorConfig
from permwatch.cli.settings import config_model
from permwatch.config import (
    AlertsConfig,
    Config,
    EmbeddedConfig,
    LabelDefinition,
    LabelRule,
    LabelsConfig,
    SinkConfig,
    TransportConfig,
)
from permwatch.events import AclEntry, AclTag

MGMT_GID, STAFF_GID = 20001, 20002
TIMEOUT = 60.0

DIRECTORY = """\
users:
  - {{name: {me}, uid: {uid}}}
  - {{name: anna, uid: 21001, primary_group: ledningsgrupp}}
  - {{name: bengt, uid: 21002, primary_group: ledningsgrupp}}
  - {{name: cecilia, uid: 21003, primary_group: alla}}
  - {{name: david, uid: 21004, primary_group: alla}}
  - {{name: elin, uid: 21005, primary_group: alla}}
  - {{name: fredrik, uid: 21006, primary_group: alla}}
  - {{name: gunilla, uid: 21007, primary_group: alla}}
groups:
  - {{name: ledningsgrupp, gid: {mgmt}, members: [anna, bengt]}}
  - {{name: alla, gid: {staff}, members: [anna, bengt, cecilia, david, elin, fredrik, gunilla]}}
"""


def _acl(group_entries: list[tuple[int, int]]) -> list[AclEntry]:
    entries = [AclEntry(tag=AclTag.USER_OBJ, perms=7), AclEntry(tag=AclTag.GROUP_OBJ, perms=0)]
    entries += [AclEntry(tag=AclTag.GROUP, qualifier=gid, perms=perms) for gid, perms in group_entries]
    entries += [AclEntry(tag=AclTag.MASK, perms=5), AclEntry(tag=AclTag.OTHER, perms=0)]
    return entries


def _say(text: str) -> None:
    print(f"{time.strftime('%H:%M:%S')}  {text}", flush=True)


def _wait(condition: Callable[[], bool], what: str) -> None:
    deadline = time.monotonic() + TIMEOUT
    while not condition():
        if time.monotonic() > deadline:
            raise TimeoutError(f"demo: gave up waiting for {what}")
        time.sleep(0.05)


def _statuses(alerts: Path) -> list[str]:
    if not alerts.exists():
        return []
    return [json.loads(line)["status"] for line in alerts.read_text(encoding="utf-8").splitlines() if line]


def run_demo(*, keep: bool = False) -> int:
    from permwatch.cli.wiring import start_roles

    base = Path(tempfile.mkdtemp(prefix="permwatch-demo-"))
    tree = _DemoTree.make(base)
    alerts = base / "alerts.jsonl"
    _say(f"demo tree: {tree.share}  (event log: {base / 'events.db'})")
    running = start_roles(_demo_config(base, tree, alerts))
    try:
        processor = running.stages["processor"]
        _wait(
            lambda: str(tree.notes) in processor.engine.labels and str(tree.minutes) in processor.engine.paths.states,
            "baseline",
        )
        _wait(processor.caught_up.is_set, "the processor to catch up")
        _say("baseline: 'ledning' is labelled for ledningsgrupp (anna, bengt); no exposure")

        _say("IT update: a permission reset grants the all-staff group 'alla' read on the folder …")
        tree.open_to_staff(True)
        _wait(lambda: "opened" in _statuses(alerts), "the exposure alert")
        opened_at = time.monotonic()
        _say("… the folder stays open while IT is told (2 s in this demo, days in the incident)")
        time.sleep(2.0)
        _say("IT reverts the permissions")
        tree.open_to_staff(False)
        _wait(lambda: "closed" in _statuses(alerts), "the close")
        _say(f"exposure closed after {time.monotonic() - opened_at:.1f} s; alerts also in {base / 'alerts.jsonl'}")
        return 0
    finally:
        running.shutdown()
        if keep:
            _keep(base, tree.notes)
        else:
            shutil.rmtree(base, ignore_errors=True)


@dataclass(frozen=True)
class _DemoTree:
    """The demo's share: a management folder and its minutes, and whether the filesystem takes POSIX ACLs."""

    share: Path
    notes: Path
    minutes: Path
    acl_supported: bool

    @classmethod
    def make(cls, base: Path) -> _DemoTree:
        from collectors.acl import write_acl

        os.chmod(base, 0o755)  # others must be able to traverse it, as on a real share
        share = base / "share"
        notes = share / "ledning"
        notes.mkdir(parents=True)
        (share / "allmant").mkdir()
        minutes = notes / "protokoll-2026-11-16.txt"
        minutes.write_text("(meeting notes: personal data that must stay in the management group)\n")
        for path in (share, share / "allmant"):
            os.chmod(path, 0o755)
        (base / "directory.yaml").write_text(
            DIRECTORY.format(me=getpass.getuser(), uid=os.getuid(), mgmt=MGMT_GID, staff=STAFF_GID), encoding="utf-8"
        )
        try:
            write_acl(str(notes), _acl([(MGMT_GID, 5)]))
            write_acl(str(minutes), _acl([(MGMT_GID, 4)]))
            acl_supported = True
        except OSError:
            acl_supported = False  # a filesystem without POSIX ACLs: fall back to mode bits
            os.chmod(notes, 0o700)
            os.chmod(minutes, 0o600)
        return cls(share, notes, minutes, acl_supported)

    def open_to_staff(self, opened: bool) -> None:
        """Grant the all-staff group read on the folder and its minutes (an IT reset), or take it back."""
        from collectors.acl import write_acl

        if self.acl_supported:
            staff = [(STAFF_GID, 5)] if opened else []
            write_acl(str(self.notes), _acl([(MGMT_GID, 5), *staff]))
            write_acl(str(self.minutes), _acl([(MGMT_GID, 4), *[(gid, 4) for gid, _ in staff]]))
        else:
            os.chmod(self.notes, 0o755 if opened else 0o700)
            os.chmod(self.minutes, 0o644 if opened else 0o600)


def _demo_config(base: Path, tree: _DemoTree, alerts: Path) -> Config:
    me = getpass.getuser()
    collectors: dict[str, Any] = {
        "fs": [FsCollectorConfig(collector_id="demo-fs", roots=[tree.share])],
        "directory": DirectoryFileConfig(path=base / "directory.yaml"),
    }
    return config_model()(
        **collectors,
        transport=TransportConfig(embedded=EmbeddedConfig(path=base / "events.db")),
        state_dir=base / "state",
        labels=LabelsConfig(
            definitions={"ledning": LabelDefinition(severity="critical", allowed_groups=["ledningsgrupp"])},  # type: ignore[arg-type]
            rules=[LabelRule(glob=str(tree.notes), label="ledning")],
            always_allowed_users=["root", me],
        ),
        alerts=AlertsConfig(
            sinks=[SinkConfig(kind="console"), SinkConfig(kind="jsonl", path=str(alerts))]  # type: ignore[call-arg]
        ),
    )


def _keep(base: Path, notes: Path) -> None:
    replay_config = base / "replay.toml"
    replay_config.write_text(
        f'[transport]\nkind = "embedded"\n[transport.embedded]\npath = "{base / "events.db"}"\n',
        encoding="utf-8",
    )
    _say(f"kept {base}; for the workshop try:")
    print(f"    permwatch exposures --config {replay_config}")
    print(f"    permwatch timeline {notes} --config {replay_config} --format html -o timeline.html")
    print(f"    permwatch who-can-read {notes} --at <a time inside the window> --config {replay_config}")
