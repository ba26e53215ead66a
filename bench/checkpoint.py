"""Processor checkpoints: what a snapshot of a large state costs, against rebuilding it by replay.

Builds the processor's state from a history of input events (a directory of
300 users, 1,000 labelled folders of 100 files each: 100,000 paths, a tenth
of the folders exposed to the all-staff group), then times, on that state in
the same run:

- the baseline: rebuilding it from the encoded history the way a restart
  without a checkpoint does (decode, apply, judge per batch of 5,000; no
  transport);
- the snapshot, which holds up the processor's loop (pickling the state);
- framing and writing it (checksum, atomic write with fsync; on the
  checkpoint's own thread);
- loading it (read, verify, unpickle, rebuild caches), what a restart pays
  instead of the replay.

Prints each figure and the file's size; the last line is one JSON object.

    .venv/bin/python bench/checkpoint.py [--folders 1000] [--files 100]
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from permwatch.events import (
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
    decode,
    encode,
)
from processor.checkpoint import Checkpoints, snapshot
from processor.engine import Engine

IDENTITY = {"group": "bench", "topics": "bench."}


def history(folders: int, files: int) -> list[Event]:
    root = Identity(id=0, name="root")
    events: list[Event] = [
        DirectoryUser(name=f"u{i}", uid=40_000 + i, primary_gid=41_001 if i < 20 else 41_002) for i in range(300)
    ]
    events += [DirectoryGroup(name="ledning", gid=41_001), DirectoryGroup(name="alla", gid=41_002)]
    events += [
        FsPermissionEvent(kind=FsKind.BASELINE, path=p, owner=root, group=Identity(id=0), mode=0o755)
        for p in ("/", "/srv", "/srv/share")
    ]
    label = Label(name="ledning", allowed_groups=("ledning",), allowed_users=("root",))
    plain = (AclEntry(tag=AclTag.USER_OBJ, perms=6), AclEntry(tag=AclTag.GROUP_OBJ, perms=4),
             AclEntry(tag=AclTag.MASK, perms=4), AclEntry(tag=AclTag.OTHER, perms=0))  # fmt: skip
    opened = (*plain[:2], AclEntry(tag=AclTag.GROUP, qualifier=41_002, perms=4), *plain[2:])
    for f in range(folders):
        folder = f"/srv/share/f{f:04d}"
        events.append(
            FsPermissionEvent(kind=FsKind.BASELINE, path=folder, owner=root, group=Identity(id=41_001), mode=0o751)
        )
        events.append(LabelAssigned(path=folder, label=label))
        for i in range(files):
            events.append(
                FsPermissionEvent(
                    kind=FsKind.BASELINE,
                    path=f"{folder}/doc{i:03d}.txt",
                    object_type=ObjectType.FILE,
                    owner=root,
                    group=Identity(id=41_001),
                    mode=0o640,
                    acl=opened if f % 10 == 0 and i == 0 else plain,
                )
            )
    return events


def replay(encoded: list[bytes], batch: int = 5000) -> tuple[Engine, float]:
    engine = Engine()
    started = time.perf_counter()
    for i in range(0, len(encoded), batch):
        for raw in encoded[i : i + batch]:
            engine.apply(decode(raw))
        engine.flush()
    return engine, time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--folders", type=int, default=1000)
    parser.add_argument("--files", type=int, default=100)
    args = parser.parse_args()
    encoded = [encode(e) for e in history(args.folders, args.files)]
    engine, replay_s = replay(encoded)
    paths = len(engine.paths)
    exposed = sum(1 for r in engine.tracker.folders.values() if r.open is not None)
    print(f"state: {paths:,} paths, {len(engine.tracker.folders):,} labelled folders, {exposed} exposed")
    print(f"baseline: replaying {len(encoded):,} events (decode + apply + judge) took {replay_s:.2f} s")
    with tempfile.TemporaryDirectory(prefix="permwatch-bench-checkpoint-") as tmp:
        store = Checkpoints(Path(tmp) / "processor.checkpoint", IDENTITY)
        offsets = {("fs", 0): len(encoded)}
        pauses = []
        for _ in range(3):
            started = time.perf_counter()
            snapshot(engine)
            pauses.append(time.perf_counter() - started)
        started = time.perf_counter()
        store.save(engine, offsets, records=len(encoded), wait=True)
        save_s = time.perf_counter() - started
        size = store.path.stat().st_size
        started = time.perf_counter()
        restored = store.load(source="processor")
        load_s = time.perf_counter() - started
    assert restored is not None and len(restored.engine.paths) == paths
    pause = sorted(pauses)[1]
    print(f"snapshot (holds up the processor): {pause * 1000:.0f} ms (median of 3)")
    print(f"snapshot + checksum + atomic write with fsync: {save_s * 1000:.0f} ms; file {size / 1e6:.1f} MB")
    print(f"load (read, verify, unpickle): {load_s * 1000:.0f} ms, {replay_s / load_s:.0f}× faster than replaying")
    print(
        json.dumps(
            {
                "paths": paths,
                "events": len(encoded),
                "replay_s": round(replay_s, 3),
                "snapshot_pause_s": round(pause, 3),
                "save_s": round(save_s, 3),
                "bytes": size,
                "load_s": round(load_s, 3),
            }
        )
    )


if __name__ == "__main__":
    main()
