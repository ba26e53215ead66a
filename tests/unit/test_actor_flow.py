"""Who changed it: a filesystem event's actor reaches the exposure, the grouped alert and its text (#18)."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import pytest

from alerts.console import ConsoleConfig, ConsoleSink
from alerts.digest import digest
from alerts.grouping import BurstGrouper, GroupUpdate
from alerts.slack_render import RenderOptions, root_message
from collectors.fs import FsCollector
from collectors.fs.actors import ACTOR_SOURCES
from collectors.fs.settings import FsCollectorConfig
from permwatch.events import Actor, ExposureStatus, FsPermissionEvent, Label, LabelAssigned, ObjectType
from processor.engine import Engine
from tests.unit.test_engine import ALLA, T0, Clock, entry, fs, setup, users
from tests.unit.test_fs_collector import ListEmitter

CIA = Actor(name=None, uid=1003, process="setfacl", pid=4242, confidence="pidfd")
GONE = Actor(pid=4242, confidence="unresolved")


def exposing(
    path: str, actor: Actor | None, *, obj: ObjectType = ObjectType.DIRECTORY, minutes: int = 0
) -> FsPermissionEvent:
    event = fs(
        path,
        entry("user_obj", "rwx"),
        entry("group_obj", "rx"),
        entry("group", "rx", ALLA),
        entry("mask", "rx"),
        entry("other", ""),
        obj=obj,
        at=T0 + timedelta(minutes=minutes),
    )
    return event.model_copy(update={"actor": actor})


def test_the_actor_of_a_filesystem_change_is_named_on_the_exposure_by_the_directorys_name_for_the_uid() -> None:
    engine = setup()
    (opened,) = engine.step(exposing("/srv/share/ledning", CIA))
    assert opened.status is ExposureStatus.OPENED
    assert (opened.actor, opened.actor_confidence, opened.actor_unresolved) == ("cia", "pidfd", 0)
    event = opened.to_event()
    assert (event.actor, event.actor_confidence) == ("cia", "pidfd")
    closed = engine.step(fs("/srv/share/ledning", mode=0o750, at=T0 + timedelta(minutes=5)))
    assert closed[0].actor is None and closed[0].actor_confidence is None  # the close named nobody


def test_an_uid_the_directory_does_not_know_is_named_as_the_collector_named_it() -> None:
    engine = setup()
    stranger = Actor(name="localadmin", uid=4711, process="chmod", pid=7, confidence="proc")
    (opened,) = engine.step(exposing("/srv/share/ledning", stranger))
    assert (opened.actor, opened.actor_confidence) == ("localadmin", "proc")


def test_unresolved_actors_are_counted_not_guessed() -> None:
    engine = setup()
    engine.apply(exposing("/srv/share/ledning", GONE))
    (opened,) = engine.flush()
    assert (opened.actor, opened.actor_confidence, opened.actor_unresolved) == (None, None, 1)
    assert b"actor_unresolved" in opened.to_event().model_dump_json().encode()


def test_an_exposure_without_actors_is_encoded_as_before() -> None:
    engine = setup()
    (opened,) = engine.step(exposing("/srv/share/ledning", None))
    wire = opened.to_event().model_dump_json()
    assert '"actor":null' in wire and "actor_confidence" not in wire and "actor_unresolved" not in wire


def test_a_bulk_change_of_10000_paths_by_one_process_is_one_burst_naming_it_with_the_unresolved_count() -> None:
    engine = Engine(clock=Clock())
    users(engine)
    label = Label(name="ärende", allowed_groups=("ledningsgrupp",), allowed_users=("root",))
    for path in ("/", "/srv", "/srv/cases"):
        engine.apply(fs(path, mode=0o755))
    folders = [f"/srv/cases/c{n:03d}" for n in range(100)]
    for folder in folders:
        engine.apply(fs(folder, mode=0o750))
        for i in range(99):
            engine.apply(fs(f"{folder}/f{i:02d}", mode=0o640, obj=ObjectType.FILE))
        engine.apply(LabelAssigned(path=folder, label=label))
    assert engine.flush() == []
    # one setfacl -R over 10,000 paths; the collector could not resolve the process for 37 of its events
    unresolved = 0
    for n, folder in enumerate(folders):
        for i, path in enumerate([folder, *(f"{folder}/f{i:02d}" for i in range(99))]):
            gone = (n * 100 + i) % 271 == 0
            unresolved += gone
            engine.apply(exposing(path, GONE if gone else CIA, obj=ObjectType.FILE if i else ObjectType.DIRECTORY))
    verdicts = engine.flush()
    assert len(verdicts) == 100 and unresolved == 37
    grouper = BurstGrouper()
    events = [v.to_event() for v in verdicts]
    group_ids = {grouper.assign(event)[0] for event in events}
    assert len(group_ids) == 1  # one process, one burst, one alert
    group = grouper.snapshot(group_ids.pop())
    d = digest(group)
    assert (d.folders, d.actor, d.actor_confidence, d.actor_unresolved) == (100, "cia", "pidfd", 37)
    text = ConsoleSink(ConsoleConfig(kind="console")).render(GroupUpdate(group, tuple(events)))
    assert "  changed by: cia (pidfd); 37 events whose actor could not be resolved" in text.splitlines()
    slack = root_message(group, RenderOptions(), post_key="k")
    assert slack.text.endswith("; changed by cia (pidfd); 37 events whose actor could not be resolved")


def test_the_timeline_says_who_made_a_filesystem_change_and_how_sure_that_is() -> None:
    from processor.timeline import build_timeline

    attributed = exposing("/srv/share/ledning", Actor(name="cia", uid=1003, confidence="pidfd"))
    gone = exposing("/srv/share/ledning", GONE, minutes=1)
    timeline = build_timeline("/srv/share/ledning", [attributed, gone], [])
    summaries = [entry.summary for entry in timeline.entries]
    assert summaries[0].endswith(" by cia (pidfd)")
    assert summaries[1].endswith(" by an unresolved process (unresolved)")


def test_a_restart_that_takes_over_an_open_exposure_keeps_counting_its_unresolved_events() -> None:
    from processor.exposures import FolderExposure

    engine = setup()
    engine.apply(exposing("/srv/share/ledning", GONE))
    (opened,) = engine.flush()
    record = opened.to_event().model_copy(update={"actor_unresolved": 5})
    folder = FolderExposure("/srv/share/ledning", record.label)
    assert folder.adopt(record, {record.exposure_id})
    assert folder.open is not None and folder.open.actor_unresolved == 5


class TableActors:
    """An actor source plugged in by name (one module, one registry line): who changed which path, from a table."""

    def __init__(self, table: dict[str, Actor]) -> None:
        self.table = table

    def start(self, roots: object) -> None:
        return None

    def actor_of(self, path: str) -> Actor | None:
        return self.table.pop(path, None)

    def close(self) -> None:
        return None


def test_a_rescan_after_lost_events_asks_the_actor_source_and_a_baseline_does_not(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    share = tmp_path / "share"
    (share / "ledning").mkdir(parents=True)
    table = {str(share / "ledning"): CIA}
    monkeypatch.setitem(ACTOR_SOURCES, "table", lambda config, names: TableActors(table))
    config = FsCollectorConfig(roots=[share], watch=False, actors="table", state_path=tmp_path / "state.db")
    emitter = ListEmitter()
    with FsCollector(config, emitter) as collector:
        collector.scan(share, "baseline")
        assert all(e.actor is None for e in emitter.fs()) and table  # a baseline names nobody
        (share / "ledning").chmod(0o750)
        collector.scan(share, "overflow")
    (changed,) = [e for e in emitter.fs(share / "ledning") if e.kind.value == "changed"]
    assert changed.actor == CIA and table == {}
