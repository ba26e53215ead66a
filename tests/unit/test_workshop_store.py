"""Issue 21: answers from the workshop store's snapshots and per-folder index equal a full replay's.

Seeded random histories on a real embedded log: folders below a root, labels,
permission changes granting and revoking groups, directory membership changes,
several records in one millisecond and times that step back. Every question is
asked twice, by a full replay of the log and through the store, and the answers
must be identical; a corrupt, mismatched or missing snapshot must make the store
replay further back, never answer differently.
"""

from __future__ import annotations

import dataclasses
import random
import sqlite3
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest

from permwatch.events import (
    INPUT_TOPICS,
    AclEntry,
    AclTag,
    DirectoryGroup,
    DirectoryUser,
    Event,
    FsKind,
    FsPermissionEvent,
    Identity,
    Label,
    LabelAssigned,
    encode,
)
from permwatch.keys import FsKeys
from permwatch.transport.base import Record
from permwatch.transport.embedded import EmbeddedBus
from processor.forensics import exposure_windows, who_can_read
from processor.replay import replay
from processor.timeline import build_timeline, timeline_items
from processor.workshop_store import StoreUnusable, WorkshopStore, build, windows_from

ROOT = "/srv/share"
GROUPS = ["ledning", "alla", "hr", "it"]
T0_MS = 1_790_000_000_000


def history(seed: int, n: int = 1500) -> list[Record]:
    rng = random.Random(seed)
    keys = FsKeys([ROOT])
    out: list[Record] = []
    ms = T0_MS
    folders = [f"{ROOT}/f{i}" for i in range(12)]

    def add(event: Event) -> None:
        # observed by the collector a little before (or, its clock off, after) the record reached the log
        seen = datetime.fromtimestamp((ms - rng.randrange(-3, 20)) / 1000, UTC)
        event = event.model_copy(update={"observed_at": seen})
        routed = keys.route(event) if isinstance(event, FsPermissionEvent) else None
        key = routed[-1].key if routed else event.key
        out.append(Record(event.topic, 0, len(out) + 1, key, encode(event), ms))

    users = [f"u{i}" for i in range(20)]
    for i, name in enumerate(users):
        add(DirectoryUser(name=name, uid=30_000 + i, primary_gid=20_000 + i % len(GROUPS)))
    members = {g: set(rng.sample(users, 4)) for g in GROUPS}
    for j, g in enumerate(GROUPS):
        add(DirectoryGroup(name=g, gid=20_000 + j, member_users=tuple(sorted(members[g]))))
    root = Identity(id=0, name="root")
    for path in ("/", "/srv", ROOT):
        add(FsPermissionEvent(kind=FsKind.BASELINE, path=path, owner=root, group=Identity(id=0), mode=0o755))
    for folder in folders:
        add(FsPermissionEvent(kind=FsKind.BASELINE, path=folder, owner=root, group=Identity(id=20_000), mode=0o750))
    for folder in folders[:8]:
        label = Label(name=f"l-{folder[-2:]}", allowed_groups=(rng.choice(GROUPS),), allowed_users=("root",))
        add(LabelAssigned(path=folder, label=label))
    for _ in range(n):
        ms += rng.choice([0, 0, 1, 3, 50, -2])  # same millisecond, close, apart, and now and then back in time
        roll = rng.random()
        if roll < 0.08:
            g = rng.choice(GROUPS)
            members[g] ^= {rng.choice(users)}
            add(DirectoryGroup(name=g, gid=20_000 + GROUPS.index(g), member_users=tuple(sorted(members[g]))))
        elif roll < 0.1:
            folder = rng.choice(folders)
            label = Label(name=f"l-{folder[-2:]}", allowed_groups=(rng.choice(GROUPS),), allowed_users=("root",))
            add(LabelAssigned(path=folder, label=label))
        else:
            folder = rng.choice(folders)
            path = folder if rng.random() < 0.3 else f"{folder}/d{rng.randrange(4)}"
            grants = rng.sample(range(len(GROUPS)), rng.randrange(3))
            acl = (
                AclEntry(tag=AclTag.USER_OBJ, perms=7),
                AclEntry(tag=AclTag.GROUP_OBJ, perms=5),
                *(AclEntry(tag=AclTag.GROUP, qualifier=20_000 + g, name=GROUPS[g], perms=5) for g in sorted(grants)),
                AclEntry(tag=AclTag.MASK, perms=5),
                AclEntry(tag=AclTag.OTHER, perms=rng.choice([0, 0, 0, 5])),
            )
            add(
                FsPermissionEvent(
                    kind=FsKind.CHANGED, path=path, owner=root, group=Identity(id=20_000), mode=0o750, acl=acl
                )
            )
    return out


@pytest.fixture(params=[1, 2, 3])
def recorded(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[tuple[EmbeddedBus, WorkshopStore, int]]:
    bus = EmbeddedBus(tmp_path / "events.db")
    bus.append_records(history(request.param))
    built = build(bus, tmp_path / "store.db", every=97)
    assert built.snapshots >= 10
    assert built.path.stat().st_mode & 0o777 == 0o600  # unpickled when used, as a checkpoint is
    store = WorkshopStore(built.path, bus)
    yield bus, store, request.param
    store.close()
    bus.close()


def times(bus: EmbeddedBus, seed: int, count: int = 6) -> list[int]:
    stamps = sorted({r.timestamp_ms for r in bus.history(INPUT_TOPICS)})
    return random.Random(seed).sample(stamps, count)


def readers_of(engine: object, path: str) -> object:
    label, grants = who_can_read(engine, path)  # type: ignore[arg-type]
    return (label, grants)


def test_who_can_read_from_a_snapshot_equals_a_full_replay(recorded: tuple[EmbeddedBus, WorkshopStore, int]) -> None:
    bus, store, seed = recorded
    started_after = []
    for at_ms in times(bus, seed):
        at = datetime.fromtimestamp(at_ms / 1000, UTC)
        full = replay(bus.history(INPUT_TOPICS, until_ms=at_ms), until=at)
        found = store.replay_from_snapshot(until=at)
        started_after.append(found.start_ord)
        assert found.result.events < full.events or found.start_ord == 0
        for path in ["/srv/share", *(f"{ROOT}/f{i}" for i in range(12)), *(f"{ROOT}/f{i}/d1" for i in range(3))]:
            assert readers_of(found.result.engine, path) == readers_of(full.engine, path), (at, path)
        assert dict(found.result.engine.paths.states) == dict(full.engine.paths.states)
    assert any(started_after), "every question replayed from the first record: no snapshot was used"


def test_exposures_since_from_a_snapshot_equal_a_full_replay(recorded: tuple[EmbeddedBus, WorkshopStore, int]) -> None:
    bus, store, seed = recorded
    verdicts = replay(bus.history(INPUT_TOPICS)).verdicts
    assert exposure_windows(verdicts), "the history opens no exposure: the comparison would prove nothing"
    used = []
    for since_ms in times(bus, seed + 100):
        since = datetime.fromtimestamp(since_ms / 1000, UTC)
        expected = [w.to_json() for w in exposure_windows(verdicts, since=since)]
        found = store.replay_from_snapshot(windows_since=since)
        used.append(found.start_ord)
        assert [w.to_json() for w in windows_from(found, since=since)] == expected
        assert [w.to_json() for w in store.exposure_windows(since=since)] == expected  # recorded by the build
        for label in ("l-f0", "l-f3"):
            until = datetime.fromtimestamp((since_ms + 5_000) / 1000, UTC)
            selected = exposure_windows(verdicts, label=label, since=since, until=until)
            assert store.exposure_windows(label=label, since=since, until=until) == selected
    assert any(used), "every question replayed from the first record: no snapshot was used"


def test_a_folders_timeline_from_the_index_equals_a_full_replay(
    recorded: tuple[EmbeddedBus, WorkshopStore, int],
) -> None:
    bus, store, _seed = recorded
    for folder in [f"{ROOT}/f0", f"{ROOT}/f3", f"{ROOT}/f9", f"{ROOT}/f1/d2", ROOT]:
        full = replay(bus.history(INPUT_TOPICS), keep=timeline_items(folder))
        expected = build_timeline(folder, full.observed, exposure_windows(full.verdicts)).to_json()
        indexed = store.folder_replay(folder, keep=timeline_items(folder))
        assert build_timeline(folder, indexed.observed, exposure_windows(indexed.verdicts)).to_json() == expected
        if folder != ROOT:
            assert indexed.events < full.events  # it read the folder's share, not everyone's


def _damage(store: WorkshopStore, sql: str) -> None:
    conn = sqlite3.connect(store.path)
    conn.execute(sql)
    conn.commit()
    conn.close()


@pytest.mark.parametrize(
    ("damage", "why"),
    [
        ("UPDATE snapshots SET data = substr(data, 1, length(data) - 100) WHERE ord = {ord}", "truncated or corrupt"),
        ("UPDATE snapshots SET data = NULL WHERE ord = {ord}", "missing"),
        ("UPDATE records SET off = off + 7 WHERE ord = {ord} - 1", "positions"),
        ("UPDATE snapshots SET data = CAST(replace(data, CAST('\"log\"' AS BLOB), CAST('\"gol\"' AS BLOB)) AS BLOB)"
         " WHERE ord = {ord}", "another log"),
    ],
)  # fmt: skip
def test_a_broken_snapshot_falls_back_to_an_older_one(
    recorded: tuple[EmbeddedBus, WorkshopStore, int], damage: str, why: str
) -> None:
    bus, store, seed = recorded
    at_ms = times(bus, seed, 1)[0]
    at = datetime.fromtimestamp(at_ms / 1000, UTC)
    intact = store.replay_from_snapshot(until=at)
    if intact.start_ord == 0:
        at_ms = max(times(bus, seed, 20))
        at = datetime.fromtimestamp(at_ms / 1000, UTC)
        intact = store.replay_from_snapshot(until=at)
    assert intact.start_ord > 0
    _damage(store, damage.format(ord=intact.start_ord))
    fallen = store.replay_from_snapshot(until=at)
    assert fallen.start_ord < intact.start_ord
    assert len(fallen.rejected) == 1 and why in fallen.rejected[0]
    full = replay(bus.history(INPUT_TOPICS, until_ms=at_ms), until=at)
    assert dict(fallen.result.engine.paths.states) == dict(full.engine.paths.states)
    for i in range(12):
        assert readers_of(fallen.result.engine, f"{ROOT}/f{i}") == readers_of(full.engine, f"{ROOT}/f{i}")


def test_no_snapshot_at_all_replays_from_the_first_record(recorded: tuple[EmbeddedBus, WorkshopStore, int]) -> None:
    bus, store, _seed = recorded
    _damage(store, "DELETE FROM snapshots")
    found = store.replay_from_snapshot()
    assert found.start_ord == 0 and found.rejected == []
    full = replay(bus.history(INPUT_TOPICS))
    assert [w.to_json() for w in windows_from(found)] == [w.to_json() for w in exposure_windows(full.verdicts)]


def _later(records: list[Record], after_ms: int) -> list[Record]:
    """``records`` moved in time to start after ``after_ms``, keeping their spacing (steps back included)."""
    shift = after_ms + 1 - min(r.timestamp_ms for r in records)
    return [dataclasses.replace(r, timestamp_ms=r.timestamp_ms + shift) for r in records]


@pytest.mark.parametrize("seed", [5, 6])
def test_a_store_behind_the_log_answers_with_the_tail_as_a_full_replay(tmp_path: Path, seed: int) -> None:
    whole = history(seed, n=1200)
    cut = random.Random(seed).randrange(400, 1000)
    head = whole[:cut]
    tail = _later(whole[cut:], max(r.timestamp_ms for r in head))
    bus = EmbeddedBus(tmp_path / "events.db")
    bus.append_records(head)
    built = build(bus, tmp_path / "store.db", every=97)
    bus.append_records(tail)
    bus.publish("exposures", "x", b"{}")  # the processor's own output moves the embedded log's end too
    bus.flush()
    store = WorkshopStore(built.path, bus)
    assert (store.stored, len(store.tail), store.record_count) == (cut, len(tail), len(whole))
    full = replay(bus.history(INPUT_TOPICS))
    assert exposure_windows(full.verdicts), "the history opens no exposure: the comparison would prove nothing"

    at_times = [*random.Random(seed).sample([r.timestamp_ms for r in tail], 4), max(r.timestamp_ms for r in head)]
    for at_ms in at_times:
        at = datetime.fromtimestamp(at_ms / 1000, UTC)
        expected = replay(bus.history(INPUT_TOPICS, until_ms=at_ms), until=at)
        found = store.replay_from_snapshot(until=at)
        assert found.start_ord > 0
        assert dict(found.result.engine.paths.states) == dict(expected.engine.paths.states), at
        for i in range(12):
            assert readers_of(found.result.engine, f"{ROOT}/f{i}") == readers_of(expected.engine, f"{ROOT}/f{i}")

    for since_ms in [whole[0].timestamp_ms, *random.Random(seed + 1).sample([r.timestamp_ms for r in tail], 3)]:
        since = datetime.fromtimestamp(since_ms / 1000, UTC)
        expected_windows = [w.to_json() for w in exposure_windows(full.verdicts, since=since)]
        assert [w.to_json() for w in store.exposure_windows(since=since)] == expected_windows
        for label in ("l-f0", "l-f3"):
            selected = exposure_windows(full.verdicts, label=label, since=since)
            assert [w.to_json() for w in store.exposure_windows(label=label, since=since)] == [
                w.to_json() for w in selected
            ]

    for folder in [f"{ROOT}/f0", f"{ROOT}/f7", f"{ROOT}/f2/d1", ROOT]:
        replayed = replay(bus.history(INPUT_TOPICS), keep=timeline_items(folder))
        expected_timeline = build_timeline(folder, replayed.observed, exposure_windows(replayed.verdicts))
        indexed = store.folder_replay(folder, keep=timeline_items(folder))
        got = build_timeline(folder, indexed.observed, exposure_windows(indexed.verdicts))
        assert got.to_json() == expected_timeline.to_json(), folder

    # the tail is batched as a build of the whole log batches it (each record judged at its batch's last time)
    whole_store = build(bus, tmp_path / "whole.db", every=97)
    conn = sqlite3.connect(whole_store.path)
    judged = conn.execute(
        "SELECT ord, end_ts_ms FROM records JOIN batches USING (batch) WHERE ord >= ? ORDER BY ord", [cut]
    ).fetchall()
    conn.close()
    assert any(ts != r.timestamp_ms for (_o, ts), r in zip(judged, tail, strict=True)), "no batch steps back in time"
    assert [(row[0], row[-1]) for row in store._tail_rows(lambda r: True)] == judged
    store.close()
    bus.close()


def test_a_tail_reaching_back_in_time_or_a_log_that_lost_records_is_not_used(tmp_path: Path) -> None:
    whole = history(7, n=300)
    bus = EmbeddedBus(tmp_path / "events.db")
    bus.append_records(whole[:200])
    built = build(bus, tmp_path / "store.db", every=50)
    WorkshopStore(built.path, bus).close()
    last = max(r.timestamp_ms for r in whole[:200])
    bus.append_records(
        [dataclasses.replace(r, timestamp_ms=last) for r in whole[200:210]]
    )  # the store's last millisecond
    bus.flush()
    with pytest.raises(StoreUnusable, match="earlier times"):
        WorkshopStore(built.path, bus)
    bus.close()

    bus = EmbeddedBus(tmp_path / "trimmed.db")
    bus.append_records(whole[:200])
    built = build(bus, tmp_path / "trimmed-store.db", every=50)
    conn = sqlite3.connect(tmp_path / "trimmed.db")
    conn.execute("DELETE FROM log WHERE seq = (SELECT MIN(seq) FROM log)")  # retention, say
    conn.commit()
    conn.close()
    with pytest.raises(StoreUnusable, match="no longer holds"):
        WorkshopStore(built.path, bus)
    bus.close()


def test_a_store_of_another_log_is_not_used(tmp_path: Path) -> None:
    bus = EmbeddedBus(tmp_path / "events.db")
    bus.append_records(history(4, n=200))
    built = build(bus, tmp_path / "store.db", every=50)
    WorkshopStore(built.path, bus).close()
    other = EmbeddedBus(tmp_path / "other.db")
    with pytest.raises(StoreUnusable, match="another log"):
        WorkshopStore(built.path, other)
    other.close()
    bus.close()
