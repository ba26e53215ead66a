"""A folder's judgement is memoised on what it depends on (issue 21): its signatures and their states, the
directory, the traverse sets and the audience, and not on which paths each signature holds.

Seeded random histories replayed twice on a real embedded log, once as the processor runs and once with every
folder judged afresh at every judgement, give the same verdicts (every field, every outsider's name), the same
timeline entries and the same windows; and at every batch boundary each folder's memoised shape equals a fresh
judgement. The histories move files and subfolders between ACLs, change the ancestors' and the folders' own
traverse bits, delete paths, relabel folders and change group memberships.
"""

from __future__ import annotations

import dataclasses
import random
from collections.abc import Callable
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
    ObjectType,
    encode,
)
from permwatch.transport.base import Record
from permwatch.transport.embedded import EmbeddedBus
from processor.engine import Engine
from processor.forensics import exposure_windows
from processor.replay import ReplayResult, replay
from processor.timeline import build_timeline, timeline_items

ROOT = "/srv/share"
GROUPS = ["ledning", "alla", "hr", "it"]
T0_MS = 1_790_000_000_000


def history(seed: int, n: int = 2500) -> list[Record]:
    rng = random.Random(seed)
    out: list[Record] = []
    ms = T0_MS

    def add(event: Event) -> None:
        event = event.model_copy(
            update={"event_id": f"e{len(out)}", "observed_at": datetime.fromtimestamp(ms / 1000, UTC)}
        )
        out.append(Record(event.topic, 0, len(out) + 1, event.key, encode(event), ms))

    users = [f"u{i}" for i in range(24)]
    for i, name in enumerate(users):
        add(DirectoryUser(name=name, uid=30_000 + i, primary_gid=20_000 + i % len(GROUPS)))
    members = {g: set(rng.sample(users, 5)) for g in GROUPS}
    for j, g in enumerate(GROUPS):
        add(DirectoryGroup(name=g, gid=20_000 + j, member_users=tuple(sorted(members[g]))))
    root = Identity(id=0, name="root")
    folders = [f"{ROOT}/f{i}" for i in range(6)]
    below = [f"{f}/d{d}" for f in folders for d in range(2)]
    files = [f"{p}/x{k}.txt" for p in [*folders, *below] for k in range(2)]

    def acl(grants: list[int], other: int) -> tuple[AclEntry, ...]:
        return (
            AclEntry(tag=AclTag.USER_OBJ, perms=7),
            AclEntry(tag=AclTag.GROUP_OBJ, perms=5),
            *(AclEntry(tag=AclTag.GROUP, qualifier=20_000 + g, name=GROUPS[g], perms=5) for g in sorted(grants)),
            AclEntry(tag=AclTag.MASK, perms=5),
            AclEntry(tag=AclTag.OTHER, perms=other),
        )

    def change(path: str, kind: FsKind = FsKind.CHANGED) -> None:
        is_file = path.endswith(".txt")
        grants = rng.sample(range(len(GROUPS)), rng.choice([0, 0, 0, 0, 0, 1, 1, 2]))
        other = rng.choice([0] * 12 + ([4, 5] if is_file else [1, 4, 5]))
        add(
            FsPermissionEvent(
                kind=kind, path=path, object_type=ObjectType.FILE if is_file else ObjectType.DIRECTORY,
                owner=root, group=Identity(id=20_000), mode=0o640 if is_file else 0o750, acl=acl(grants, other),
            )
        )  # fmt: skip

    for path in ("/", "/srv", ROOT):
        add(FsPermissionEvent(kind=FsKind.BASELINE, path=path, owner=root, group=Identity(id=0), mode=0o755))
    for path in [*folders, *below, *files]:
        change(path, FsKind.BASELINE)
    for folder in folders[:5]:
        add(
            LabelAssigned(
                path=folder,
                label=Label(
                    name=f"l{folder[-1]}", allowed_groups=("ledning", rng.choice(GROUPS)), allowed_users=("root",)
                ),
            )
        )
    for _ in range(n):
        ms += rng.choice([0, 1, 1, 2, 40])  # several records in one batch now and then
        roll = rng.random()
        if roll < 0.05:  # a membership change
            g = rng.choice(GROUPS)
            members[g] ^= {rng.choice(users)}
            add(DirectoryGroup(name=g, gid=20_000 + GROUPS.index(g), member_users=tuple(sorted(members[g]))))
        elif roll < 0.07:  # relabelled
            folder = rng.choice(folders)
            add(
                LabelAssigned(
                    path=folder,
                    label=Label(
                        name=f"l{folder[-1]}", allowed_groups=("ledning", rng.choice(GROUPS)), allowed_users=("root",)
                    ),
                )
            )
        elif roll < 0.10:  # an ancestor's traverse bits
            add(
                FsPermissionEvent(
                    kind=FsKind.CHANGED, path=rng.choice(["/srv", ROOT]), owner=root, group=Identity(id=0),
                    mode=rng.choice([0o755, 0o750, 0o751]),
                )
            )  # fmt: skip
        elif roll < 0.13:  # a path deleted (and later back, by a change)
            add(FsPermissionEvent(kind=FsKind.DELETED, path=rng.choice(files + below)))
        elif roll < 0.30:
            change(rng.choice([*folders, *below]))
        else:
            change(rng.choice(files))
    return out


def replayed(records: list[Record], start: Callable[[Callable[[], datetime]], Engine] | None = None) -> object:
    verdicts_seen: list[str] = []
    checked = [0]

    def boundary(result: ReplayResult) -> None:
        tracker = result.engine.tracker
        for record in tracker.folders.values():
            assert tracker.shape(record) == tracker.judge_shape(record), record.folder
            checked[0] += 1

    result = replay(iter(records), keep=timeline_items(f"{ROOT}/f0"), start=start, boundary=boundary)
    for verdict in result.verdicts:
        verdicts_seen.append(verdict.model_dump_json() + repr(verdict.all_users))
    timeline = build_timeline(f"{ROOT}/f0", result.observed, exposure_windows(result.verdicts))
    windows = [dataclasses.asdict(w) for w in exposure_windows(result.verdicts)]
    assert checked[0] > 1000
    return verdicts_seen, [dataclasses.astuple(e) for e in timeline.entries], windows


def judging_afresh(clock: Callable[[], datetime]) -> Engine:
    """The reference: an engine whose folders are judged afresh every time (no memo)."""
    engine = Engine(source="replay", clock=clock)
    tracker = engine.tracker
    setattr(tracker, "shape", tracker.judge_shape)  # noqa: B010 (an instance's method replaced on purpose)
    return engine


@pytest.mark.parametrize("seed", [1, 2, 3, 4])
def test_memoised_judgements_give_the_answers_of_fresh_ones(tmp_path: Path, seed: int) -> None:
    bus = EmbeddedBus(tmp_path / "events.db")
    bus.append_records(history(seed))
    records = list(bus.history(INPUT_TOPICS))
    bus.close()
    memoised = replayed(records)
    fresh = replayed(records, start=judging_afresh)
    verdicts, entries, windows = memoised  # type: ignore[misc]
    assert len(verdicts) > 150 and len(windows) > 20 and len(entries) > 200
    assert {'"status":"closed"' in v for v in verdicts} == {True, False}
    assert memoised == fresh
