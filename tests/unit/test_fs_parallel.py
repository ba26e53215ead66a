"""A first scan spread over worker processes (collectors/fs/parallel.py) publishes and records exactly what
the collector's own walk does, keeps each unit's order, and falls back to that walk when workers fail."""

from __future__ import annotations

import os
import sqlite3
import subprocess
import threading
from pathlib import Path
from typing import Any

import pytest
from prometheus_client import CollectorRegistry

import collectors.fs.walk
from collectors.fs import FsCollector, ancestors_of
from collectors.fs.parallel import WorkerFailed, walk_units
from collectors.fs.settings import FsCollectorConfig
from collectors.labels import LabelPolicy
from collectors.runner import BusEmitter
from permwatch.config import LabelDefinition, LabelsConfig
from permwatch.events import FsPermissionEvent, LabelAssigned, ScanCompleted, decode, unbatched
from permwatch.keys import FsKeys
from permwatch.metrics import Metrics
from permwatch.transport.embedded import EmbeddedBus


@pytest.fixture(scope="module")
def share(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Ten units of folders and files, ACLs on some, a default ACL, a symlink, an excluded folder, a label."""
    root = tmp_path_factory.mktemp("parallel") / "share"
    root.mkdir()
    for u in range(10):
        unit = root / f"unit{u}"
        for d in range(6):
            sub = unit / f"d{d}" / "deeper"
            sub.mkdir(parents=True)
            (sub / "notes.txt").write_text("x")
        (unit / "cache.tmp").mkdir()  # excluded
        (unit / "link").symlink_to("/etc")
    subprocess.run(["setfacl", "-R", "-m", "g:0:r-x", str(root / "unit3")], check=True)
    subprocess.run(["setfacl", "-m", "d:g:0:rwx", str(root / "unit5" / "d1")], check=True)
    (root / "unit7" / ".sensitivity").write_text("hr\n")
    return root


def first_scan(share: Path, work: Path, workers: int) -> tuple[list[Any], list[tuple[str, bytes]]]:
    """What a first scan published (events without their ids and times) and what it recorded."""
    bus = EmbeddedBus(work / "bus.db")
    emitter = BusEmitter(bus, Metrics.create(CollectorRegistry()), router=FsKeys([share]), batch=True)
    config = FsCollectorConfig(roots=[share], watch=False, scan_workers=workers, excludes=["*.tmp"])
    labels = LabelPolicy(LabelsConfig(definitions={"hr": LabelDefinition(allowed_groups=["hr"])}))
    with FsCollector(config, emitter, labeller=labels, state_path=work / "state.db") as collector:
        collector.run(threading.Event())
    bus.close()
    published: list[Any] = []
    with sqlite3.connect(work / "bus.db") as log:
        for (value,) in log.execute("SELECT value FROM log ORDER BY seq"):
            for event in unbatched(decode(value)):
                if isinstance(event, FsPermissionEvent | LabelAssigned):
                    published.append(event.model_copy(update={"event_id": "x", "observed_at": event.observed_at.min}))
                elif isinstance(event, ScanCompleted):
                    published.append(("scan", event.paths_seen, event.paths_changed))
    with sqlite3.connect(work / "state.db") as state:
        recorded = [(os.fsdecode(p), fp) for p, fp in state.execute("SELECT path, fingerprint FROM published")]
    return published, sorted(recorded)


def test_workers_publish_and_record_what_the_collectors_own_walk_does(
    share: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    spread_units: list[str] = []

    def spy(units: list[str], **kwargs: Any) -> Any:
        spread_units.extend(units)
        return walk_units(units, **kwargs)

    monkeypatch.setattr(collectors.fs.walk, "walk_units", spy)
    (tmp_path / "one").mkdir()
    (tmp_path / "two").mkdir()
    alone, alone_recorded = first_scan(share, tmp_path / "one", workers=0)
    assert spread_units == []
    spread, spread_recorded = first_scan(share, tmp_path / "two", workers=2)
    assert sorted(spread_units) == [str(share / f"unit{u}") for u in range(10)]
    assert spread_recorded == alone_recorded
    assert len(alone_recorded) == 1 + 10 * (1 + 6 * 3 + 1) + 1 + len(ancestors_of(str(share)))
    assert not any("cache.tmp" in path for path, _ in spread_recorded)

    def key(e: Any) -> Any:
        return (type(e).__name__, getattr(e, "path", ""), repr(e))

    assert sorted(spread, key=key) == sorted(alone, key=key)
    labelled = [e for e in spread if isinstance(e, LabelAssigned)]
    assert [(e.path, e.label.name if e.label else None) for e in labelled] == [(str(share / "unit7"), "hr")]
    # each unit's paths come parent before children, as the walk found them
    order = [e.path for e in spread if isinstance(e, FsPermissionEvent)]
    for path in order:
        parent = os.path.dirname(path)
        if parent.startswith(str(share)) and parent != str(share):
            assert order.index(parent) < order.index(path)


def test_failing_workers_leave_the_walk_to_the_collector(
    share: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    def broken(*args: object, **kwargs: object) -> Any:
        yield from ()
        raise WorkerFailed("Traceback: a worker could not start")

    monkeypatch.setattr(collectors.fs.walk, "walk_units", broken)
    (tmp_path / "one").mkdir()
    (tmp_path / "two").mkdir()
    _, alone_recorded = first_scan(share, tmp_path / "one", workers=0)
    _, fallen_back = first_scan(share, tmp_path / "two", workers=2)
    assert fallen_back == alone_recorded
    assert "scan workers failed, walking in the collector's thread instead" in caplog.text
