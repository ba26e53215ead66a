"""Processor checkpoints (processor/checkpoint.py): the state survives the round trip, a file that does not fit
is ignored with one log line, and a restart from a checkpoint plus the records after it ends exactly where a
full replay of the history does, publishing what one uninterrupted run publishes."""

from __future__ import annotations

import hashlib
import json
import logging
import os
import stat
import struct
import threading
from collections.abc import Callable, Iterable
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from prometheus_client import CollectorRegistry

from permwatch.cli.settings import load_config
from permwatch.cli.wiring import processor_checkpoints
from permwatch.config import ProcessorConfig
from permwatch.events import (
    TOPIC_EXPOSURES,
    TOPIC_FS,
    TOPIC_LABELS,
    AnyEvent,
    Event,
    ExposureEvent,
    FsKind,
    FsPermissionEvent,
    Identity,
    ObjectType,
    decode,
    encode,
)
from permwatch.metrics import Metrics
from permwatch.transport.base import Record, checkpoint_starts
from permwatch.transport.embedded import EmbeddedBus
from processor import checkpoint
from processor import state as state_module
from processor.checkpoint import Checkpoints
from processor.checkpoint import decode as decode_checkpoint
from processor.checkpoint import encode as encode_checkpoint
from processor.engine import Engine
from processor.exposures import Verdict
from processor.runner import ProcessorRunner
from processor.state import PathState, acl_tuple
from tests.permission_stream import FOLDER_STATES, LEDNING, ROOT, T0, Stream, stream

IDENTITY = {"group": "g", "topics": "embedded /tmp/log.db"}
LOGGER = "permwatch.processor"


def clock() -> datetime:
    return T0 + timedelta(days=1)


def small_stream() -> Stream:
    """357 setup events, then changes of 6 hot folders at least 60 events apart (batches here are ≤ 20)."""
    return stream(hot=6, quiet=4, files=3, total=1200, gap=60)


def built(events: Iterable[AnyEvent], batch: int = 20) -> tuple[Engine, list[Verdict]]:
    engine, verdicts = Engine(clock=clock), []
    pending = list(events)
    for i in range(0, len(pending), batch):
        for event in pending[i : i + batch]:
            engine.apply(event)
        verdicts += engine.flush()
    return engine, verdicts


def fingerprint(engine: Engine) -> dict[str, Any]:
    """Everything the engine knows, with interned ACL numbers spelt out (numbering differs between processes)."""

    def state(s: PathState) -> tuple[Any, ...]:
        return (s.object_type, acl_tuple(s.acl), s.owner_name, s.group_name, s.qualifier_names)

    folders = {}
    for folder, record in engine.tracker.folders.items():
        opened = record.open
        folders[folder] = (
            record.label,
            {
                (acl_tuple(acl), parent, contents): sorted(members) if isinstance(members, set) else [members]
                for (acl, parent, contents), members in record.groups.items()
            },
            {acl_tuple(acl): state(s) for acl, s in record.states.items()},
            None
            if opened is None
            else (
                opened.exposure_id,
                opened.sequence,
                opened.opened_at,
                opened.shape,
                opened.paths,
                opened.kind,
                opened.contents_seen,
            ),
        )
    directory = engine.directory
    return {
        "users": {n: (u.bit, u.uid, u.primary_gid, u.disabled, u.in_directory) for n, u in directory.users.items()},
        "groups": {n: (g.gid, g.member_users, g.member_groups) for n, g in directory.groups.items()},
        "uids": dict(directory._by_uid),
        "gids": dict(directory._by_gid),
        "paths": {path: state(s) for path, s in engine.paths.states.items()},
        "children": {path: sorted(c) for path, c in engine.paths.children.items()},
        "by_gid": {gid: sorted(paths) for gid, paths in engine.paths.by_gid.items()},
        "labels": dict(engine.labels),
        "labelled": list(engine._labelled_sorted),
        "allowing": {group: sorted(f) for group, f in engine._allowing.items()},
        "folders": folders,
    }


def as_events(verdicts: Iterable[Verdict | ExposureEvent]) -> set[tuple[Any, ...]]:
    """Exposure events without the detection time (the one field a rerun may change)."""
    return {
        (v.event_id, v.status, v.folder, v.people, v.groups, v.users, v.opened_at, v.closed_at, v.cause_event_ids)
        for v in verdicts
    }


# ------------------------------------------------------------------ the state


def test_every_engine_attribute_is_captured_rebuilt_or_empty_between_batches() -> None:
    known = checkpoint.CAPTURED | checkpoint.REBUILT | checkpoint.BETWEEN_FLUSHES
    assert set(vars(Engine())) == known, "a new Engine attribute: say in processor/checkpoint.py what becomes of it"


def test_round_trip_keeps_the_state_and_what_follows_from_it() -> None:
    events = small_stream().events
    engine, _ = built(events[:800])
    assert any(record.open is not None for record in engine.tracker.folders.values())
    offsets = {(TOPIC_FS, 0): 801, (TOPIC_LABELS, 0): 700}
    restored = decode_checkpoint(encode_checkpoint(engine, offsets, IDENTITY, records=800), IDENTITY, source="p")
    assert restored.offsets == offsets and restored.records == 800
    assert fingerprint(restored.engine) == fingerprint(engine)
    # the same events after it give the same exposures, ids and sequences included
    _, before = built_on(engine, events[800:])
    _, after = built_on(restored.engine, events[800:])
    assert before and as_events(after) == as_events(before)


def built_on(engine: Engine, events: list[AnyEvent], batch: int = 20) -> tuple[Engine, list[Verdict]]:
    verdicts = []
    for i in range(0, len(events), batch):
        for event in events[i : i + batch]:
            engine.apply(event)
        verdicts += engine.flush()
    return engine, verdicts


def test_a_process_that_numbered_other_acls_first_renumbers_the_restored_state(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    events = small_stream().events
    engine, _ = built(events[:800])
    expected = fingerprint(engine)
    data = encode_checkpoint(engine, {(TOPIC_FS, 0): 801}, IDENTITY, records=800)
    # a fresh interning table that already numbers other ACLs: the saved numbers mean other ACLs here
    monkeypatch.setattr(state_module, "_ACL_IDS", {})
    monkeypatch.setattr(state_module, "_ACL_TUPLES", [])
    monkeypatch.setattr(state_module, "_GROUP_IDS", {})
    monkeypatch.setattr(state_module, "_STATES", {})
    for other in range(7):
        state_module.intern_acl((99, 99, ((0, 0, other),)))
    restored = decode_checkpoint(data, IDENTITY, source="p").engine
    assert fingerprint(restored) == expected
    assert min(s.acl for s in restored.paths.states.values()) >= 7  # renumbered past the others
    _, after = built_on(restored, events[800:])
    reference, _ = built(events[:800])
    _, before = built_on(reference, events[800:])
    assert before and as_events(after) == as_events(before)


# ------------------------------------------------------------------ the file


def split(data: bytes) -> tuple[dict[str, Any], bytes]:
    start = len(checkpoint.MAGIC) + 4
    (length,) = struct.unpack_from(">I", data, len(checkpoint.MAGIC))
    return json.loads(data[start : start + length]), data[start + length :]


def joined(header: dict[str, Any], payload: bytes) -> bytes:
    head = json.dumps(header).encode()
    return checkpoint.MAGIC + struct.pack(">I", len(head)) + head + payload


def edited(**changes: Any) -> Callable[[bytes], bytes]:
    def edit(data: bytes) -> bytes:
        header, payload = split(data)
        return joined({**header, **changes}, payload)

    return edit


def unpicklable(data: bytes) -> bytes:
    header, _ = split(data)
    payload = b"\x80\x05not a pickle"
    return joined(
        {**header, "payload_bytes": len(payload), "payload_sha256": hashlib.sha256(payload).hexdigest()}, payload
    )


@pytest.mark.parametrize(
    ("damage", "reason"),
    [
        (lambda data: b"garbage" * 10, "not a checkpoint file"),
        (lambda data: data[: len(data) // 2], "truncated or corrupt"),
        (lambda data: data[:-10] + bytes(b ^ 0xFF for b in data[-10:]), "truncated or corrupt"),
        (lambda data: data[: len(checkpoint.MAGIC) + 5] + b"#" + data[len(checkpoint.MAGIC) + 6 :], "unreadable"),
        (edited(identity={"group": "another", "topics": IDENTITY["topics"]}), "written for"),
        (edited(format=checkpoint.FORMAT + 1), "format"),
        (edited(code="0123456789abcdef"), "another release"),
        (unpicklable, "does not load"),
    ],
    ids=["garbage", "truncated", "flipped", "header", "identity", "format", "release", "unpicklable"],
)
def test_a_checkpoint_that_does_not_fit_is_ignored_with_one_log_line(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, damage: Callable[[bytes], bytes], reason: str
) -> None:
    engine, _ = built(small_stream().events[:500])
    path = tmp_path / "p.checkpoint"
    path.write_bytes(damage(encode_checkpoint(engine, {(TOPIC_FS, 0): 501}, IDENTITY, records=500)))
    with caplog.at_level(logging.INFO, logger=LOGGER):
        assert Checkpoints(path, IDENTITY).load(source="p") is None
    [line] = [r for r in caplog.records if r.name == LOGGER]
    assert line.levelno == logging.WARNING and "replaying all history" in line.getMessage()
    assert reason in line.getMessage()


def test_no_checkpoint_yet_says_so_once(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.INFO, logger=LOGGER):
        assert Checkpoints(tmp_path / "none.checkpoint", IDENTITY).load(source="p") is None
    assert [r.getMessage() for r in caplog.records if r.name == LOGGER] == [
        f"no checkpoint at {tmp_path / 'none.checkpoint'}: replaying all history"
    ]


def test_the_file_is_private_replaced_whole_and_stale_temporaries_go(tmp_path: Path) -> None:
    engine, _ = built(small_stream().events[:500])
    store = Checkpoints(tmp_path / "state" / "p.checkpoint", IDENTITY, interval_seconds=3600)
    store.save(engine, {(TOPIC_FS, 0): 400}, records=400, wait=True)
    store.save(engine, {(TOPIC_FS, 0): 501}, records=500, wait=True)
    assert stat.S_IMODE(store.path.stat().st_mode) == 0o600
    assert sorted(p.name for p in store.path.parent.iterdir()) == ["p.checkpoint"]
    stale = store.path.parent / ".p.checkpoint.4242.tmp"
    stale.write_bytes(b"half a checkpoint")
    restored = Checkpoints(store.path, IDENTITY).load(source="p")
    assert restored is not None and restored.offsets == {(TOPIC_FS, 0): 501} and restored.records == 500
    assert not stale.exists()
    assert store.written == 2 and store.last_bytes == store.path.stat().st_size


def test_one_is_due_after_the_interval_when_the_state_moved_on(tmp_path: Path) -> None:
    now = [100.0]
    store = Checkpoints(tmp_path / "p.checkpoint", IDENTITY, interval_seconds=30, monotonic=lambda: now[0])
    engine, _ = built(small_stream().events[:400])
    assert not store.due({(TOPIC_FS, 0): 10})
    now[0] += 30
    assert store.due({(TOPIC_FS, 0): 10})
    store.save(engine, {(TOPIC_FS, 0): 10}, records=10, wait=True)
    now[0] += 60
    assert not store.due({(TOPIC_FS, 0): 10})  # nothing new since
    assert store.due({(TOPIC_FS, 0): 11})


# ------------------------------------------------------------------ the transport


def test_embedded_replay_starts_each_topic_at_its_checkpoint_offset(tmp_path: Path) -> None:
    bus = EmbeddedBus(tmp_path / "log.db")
    for i in range(10):  # seq 1..20: fs on odd, labels on even
        bus.publish(TOPIC_FS, f"f{i}", b"fs%d" % i)
        bus.publish(TOPIC_LABELS, f"l{i}", b"label%d" % i)
    bus.flush()
    first = bus.consumer([TOPIC_FS, TOPIC_LABELS], "g")
    assert len(first.poll(1.0, max_records=14)) == 14  # up to seq 14
    first.commit()
    first.close()
    # the checkpoint covers fs up to seq 11 and labels up to seq 6 (labels went quiet before fs)
    rebuilt = bus.consumer(
        [TOPIC_FS, TOPIC_LABELS], "g", replay_history=True, replay_from={("fs", 0): 12, ("labels", 0): 7}
    )
    assert rebuilt.replay_pending()
    records = rebuilt.poll(1.0, max_records=3)
    assert [(r.topic, r.offset) for r in records] == [("labels", 8), ("labels", 10), ("labels", 12)]
    assert rebuilt.replay_pending()
    records += rebuilt.poll(1.0, max_records=100)
    assert [(r.topic, r.offset, r.replayed) for r in records[3:]] == [
        ("fs", 13, True), ("labels", 14, True), ("fs", 15, False), ("labels", 16, False),
        ("fs", 17, False), ("labels", 18, False), ("fs", 19, False), ("labels", 20, False),
    ]  # fmt: skip
    assert not rebuilt.replay_pending()
    rebuilt.close()
    # a topic the checkpoint does not name starts at the beginning
    partial = bus.consumer([TOPIC_FS, TOPIC_LABELS], "g", replay_history=True, replay_from={("fs", 0): 12})
    got = [(r.topic, r.offset) for r in partial.poll(1.0, max_records=100)]
    assert got[:3] == [("labels", 2), ("labels", 4), ("labels", 6)] and ("fs", 11) not in got and ("fs", 13) in got
    partial.close()
    bus.close()


# ------------------------------------------------------------------ the runner


def publish(bus: EmbeddedBus, events: Iterable[Event]) -> None:
    for event in events:
        bus.publish(event.topic, event.key, encode(event))
    bus.flush()


def run_until_idle(runner: ProcessorRunner) -> None:
    stop = threading.Event()
    thread = threading.Thread(target=runner.run, args=(stop,))
    thread.start()
    assert runner.caught_up.wait(30), "the processor did not catch up"
    stop.set()
    thread.join(30)
    assert not thread.is_alive()


def published(bus: EmbeddedBus) -> list[ExposureEvent]:
    events = [decode(r.value) for r in bus.history([TOPIC_EXPOSURES])]
    assert all(isinstance(e, ExposureEvent) for e in events)
    return events  # type: ignore[return-value]


@pytest.mark.parametrize("usable", [True, False], ids=["checkpoint", "corrupt-checkpoint"])
def test_a_restart_from_a_checkpoint_and_the_tail_ends_where_a_full_replay_does(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, usable: bool
) -> None:
    caplog.set_level(logging.INFO, logger=LOGGER)
    events = small_stream().events
    first_part, tail, last_part = events[:600], events[600:900], events[900:]
    bus = EmbeddedBus(tmp_path / "log.db")
    config = ProcessorConfig(group="g", batch_max=20)
    path = tmp_path / "processor.checkpoint"

    def checkpoints(metrics: Metrics | None = None) -> Checkpoints:
        return Checkpoints(path, IDENTITY, interval_seconds=3600, metrics=metrics)

    publish(bus, first_part)
    run_until_idle(ProcessorRunner(bus, config, clock=clock, checkpoints=checkpoints()))  # a clean stop checkpoints
    publish(bus, tail)
    run_until_idle(ProcessorRunner(bus, config, clock=clock))  # handles the tail and commits; no checkpoint
    if not usable:
        path.write_bytes(path.read_bytes()[:-1])
    publish(bus, last_part)
    metrics = Metrics.create(CollectorRegistry())
    restarted = ProcessorRunner(bus, config, clock=clock, checkpoints=checkpoints(metrics), metrics=metrics)
    run_until_idle(restarted)

    reference = ProcessorRunner(bus, config, clock=clock)  # the same group, all committed: a full replay
    run_until_idle(reference)
    assert reference.replayed == len(events)
    assert fingerprint(restarted.engine) == fingerprint(reference.engine)
    if usable:
        assert restarted.restored is not None and restarted.restored.records == len(first_part)
        assert restarted.replayed == len(tail)
    else:
        assert restarted.restored is None and restarted.replayed == len(first_part) + len(tail)
    assert metrics.registry.get_sample_value("permwatch_processor_restart_replayed_records") == restarted.replayed
    assert restarted.restart_seconds == metrics.registry.get_sample_value("permwatch_processor_restart_seconds")
    still_open = sum(1 for r in reference.engine.tracker.folders.values() if r.open is not None)
    assert metrics.registry.get_sample_value("permwatch_exposures_open", {"label": "ledning", "severity": "high"}) == (
        still_open
    )
    rebuilt = [r.getMessage() for r in caplog.records if "processor restart: state rebuilt" in r.getMessage()]
    assert len(rebuilt) == 4
    assert ("on top of the checkpoint" in rebuilt[2]) is usable
    assert f"{restarted.replayed:,} records replayed" in rebuilt[2]

    # what the three runs published is what one uninterrupted run publishes, each event once
    uninterrupted_bus = EmbeddedBus(tmp_path / "uninterrupted.db")
    publish(uninterrupted_bus, events)
    run_until_idle(ProcessorRunner(uninterrupted_bus, config, clock=clock))
    got, expected = published(bus), published(uninterrupted_bus)
    assert len({e.event_id for e in got}) == len(got)
    assert len(expected) > 50 and as_events(got) == as_events(expected)
    bus.close()
    uninterrupted_bus.close()


def test_the_checkpoint_is_written_after_a_commit_at_most_every_interval(tmp_path: Path) -> None:
    bus = EmbeddedBus(tmp_path / "log.db")
    events = small_stream().events
    publish(bus, events)
    now = [0.0]
    store = Checkpoints(tmp_path / "p.checkpoint", IDENTITY, interval_seconds=10, monotonic=lambda: now[0])
    runner = ProcessorRunner(bus, ProcessorConfig(group="g", batch_max=100), clock=clock, checkpoints=store)
    consumer = bus.consumer(["fs", "directory", "labels"], "g", replay_history=True)
    saves = []
    original = store.save

    def counting_save(*args: Any, **kwargs: Any) -> None:
        saves.append(kwargs["records"])
        original(*args, **kwargs)

    store.save = counting_save  # type: ignore[method-assign]
    stop = threading.Event()
    real_poll = consumer.poll

    def poll(timeout: float, max_records: int = 500) -> list[Any]:
        now[0] += 4  # four seconds a batch, time enough to write a checkpoint
        store.wait()
        return real_poll(timeout, max_records)

    consumer.poll = poll  # type: ignore[method-assign]
    runner.bus = _Handing(bus, consumer)
    thread = threading.Thread(target=runner.run, args=(stop,))
    thread.start()
    assert runner.caught_up.wait(30)
    stop.set()
    thread.join(30)
    # every third batch of 100 (12 s); none at the clean stop, as the last one covers everything
    assert len(events) == 1200 and saves == [300, 600, 900, 1200]
    header, _ = split(store.path.read_bytes())
    assert header["records"] == len(events) and os.stat(store.path).st_size == store.last_bytes
    bus.close()


def test_a_restart_that_replayed_records_checkpoints_as_soon_as_it_is_rebuilt(tmp_path: Path) -> None:
    events = small_stream().events
    bus = EmbeddedBus(tmp_path / "log.db")
    config = ProcessorConfig(group="g", batch_max=50)
    path = tmp_path / "p.checkpoint"
    publish(bus, events[:600])
    run_until_idle(ProcessorRunner(bus, config, clock=clock, checkpoints=Checkpoints(path, IDENTITY)))
    publish(bus, events[600:])
    run_until_idle(ProcessorRunner(bus, config, clock=clock))  # handles the rest and commits; no checkpoint
    store = Checkpoints(path, IDENTITY, interval_seconds=3600)  # none due by the interval
    restarted = ProcessorRunner(bus, config, clock=clock, checkpoints=store)
    stop = threading.Event()
    thread = threading.Thread(target=restarted.run, args=(stop,))
    thread.start()
    try:
        assert restarted.caught_up.wait(30)
        assert restarted.replayed == len(events) - 600
        store.wait()  # written while running, not at the stop
        header, _ = split(path.read_bytes())
        assert header["records"] == len(events)
    finally:
        stop.set()
        thread.join(30)
    bus.close()


def test_a_checkpoint_fits_a_first_assignment_holding_all_its_partitions() -> None:
    saved = {("fs", 0): 10, ("fs", 3): 4, ("directory", 0): 7}
    assert checkpoint_starts(saved, {("fs", 0), ("fs", 3), ("directory", 0)}) == saved
    # more partitions than were saved: those start at the beginning, the saved ones where they were
    assert checkpoint_starts(saved, {("fs", 0), ("fs", 1), ("fs", 3), ("directory", 0)}) == saved
    # fs 3's saved paths are another processor's now: fs starts over; the directory still fits
    assert checkpoint_starts(saved, {("fs", 0), ("fs", 1), ("directory", 0)}) == {("directory", 0): 7}
    assert checkpoint_starts({}, {("fs", 0)}) == {}


class _Handing:
    """A bus that hands out one prepared consumer (and passes everything else on)."""

    def __init__(self, bus: EmbeddedBus, consumer: Any) -> None:
        self._bus, self._consumer = bus, consumer

    def consumer(self, *args: Any, **kwargs: Any) -> Any:
        return self._consumer

    def __getattr__(self, name: str) -> Any:
        return getattr(self._bus, name)


def test_the_config_places_and_names_the_checkpoint(tmp_path: Path) -> None:
    (tmp_path / "permwatch.toml").write_text(
        'state_dir = "state"\n[transport.embedded]\npath = "events.db"\n'
        '[processor]\ngroup = "proc/1"\ncheckpoint_interval_seconds = 5\n',
        encoding="utf-8",
    )
    config = load_config(tmp_path / "permwatch.toml", environ={})
    store = processor_checkpoints(config)
    assert store is not None and store.interval_seconds == 5
    assert store.path == tmp_path / "state" / "processor-proc_1.checkpoint"
    assert store.identity == {"group": "proc/1", "topics": f"embedded {(tmp_path / 'events.db').resolve()}"}
    kafka = load_config(
        tmp_path / "permwatch.toml",
        environ={
            "PERMWATCH__TRANSPORT__KIND": "kafka",
            "PERMWATCH__TRANSPORT__KAFKA__BOOTSTRAP_SERVERS": "k:9092",
            "PERMWATCH__PROCESSOR__CHECKPOINT_PATH": "elsewhere/p.ckpt",
        },
    )
    store = processor_checkpoints(kafka)
    assert store is not None and store.identity["topics"] == "kafka permwatch."
    assert store.path == tmp_path / "elsewhere" / "p.ckpt"  # relative to the config file, as every path
    off = load_config(tmp_path / "permwatch.toml", environ={"PERMWATCH__PROCESSOR__CHECKPOINT": "false"})
    assert processor_checkpoints(off) is None


class _Committing:
    def commit(self) -> None:
        pass


@pytest.mark.parametrize("live_first", [True, False])
def test_a_batch_mixing_live_and_replayed_partitions_publishes_what_the_live_ones_moved(
    tmp_path: Path, live_first: bool
) -> None:
    bus = EmbeddedBus(tmp_path / "log.db")
    runner = ProcessorRunner(bus, ProcessorConfig(), clock=clock)

    def record(event: AnyEvent, partition: int, offset: int, replayed: bool) -> Record:
        return Record(event.topic, partition, offset, event.key, encode(event), 0, replayed)

    setup = small_stream().setup
    runner.handle([record(e, 0, i, False) for i, e in enumerate(setup)], _Committing())  # type: ignore[arg-type]
    live = record(_opened("/srv/share/hot000"), 0, len(setup), False)
    replayed = record(_opened("/srv/share/hot001"), 1, 0, True)  # a partition still being replayed
    batch = [live, replayed] if live_first else [replayed, live]
    published = runner.handle(batch, _Committing())  # type: ignore[arg-type]
    assert [(e.status.value, e.folder) for e in published] == [("opened", "/srv/share/hot000")]
    folders = runner.engine.tracker.folders
    assert folders["/srv/share/hot000"].open is not None and folders["/srv/share/hot001"].open is not None
    bus.close()


def _opened(folder: str) -> AnyEvent:
    return FsPermissionEvent(
        kind=FsKind.CHANGED,
        path=folder,
        object_type=ObjectType.DIRECTORY,
        owner=ROOT,
        group=Identity(id=LEDNING),
        mode=0o750,
        acl=FOLDER_STATES["alla"],
        observed_at=T0 + timedelta(hours=1),
    )
