"""Replay speed: 1,000,000 recorded events replayed into one folder's timeline.

Records a history into an embedded event log (the same format ``permwatch
archive`` writes): a directory snapshot, the ancestors and a labelled folder
with 1,000 files, then 1,000,000 permission changes inside it, a millisecond
apart, that grant and revoke the all-staff group (so exposures open, change
and close all along). It then times, on the same log in the same run:

- the baseline: a raw read of every record (no decoding), and a read that
  parses each record's JSON;
- the replay: ``permwatch timeline``'s path, i.e. decode + the live engine +
  keeping the folder's timeline entries.

Prints events/s for each; the last line is one JSON object. Target ≤ 10 s.

    .venv/bin/python bench/replay.py [--events 1000000]
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
    INPUT_TOPICS,
    AclEntry,
    AclTag,
    DirectoryGroup,
    DirectoryUser,
    FsKind,
    FsPermissionEvent,
    Identity,
    Label,
    LabelAssigned,
    encode,
)
from permwatch.transport.base import Record
from permwatch.transport.embedded import EmbeddedBus
from processor.forensics import exposure_windows
from processor.replay import replay
from processor.timeline import build_timeline, timeline_items

FOLDER = "/srv/share/ledning"
FILES = 1000
T0_MS = 1_790_000_000_000


def acl(with_staff: bool) -> tuple[AclEntry, ...]:
    staff = (AclEntry(tag=AclTag.GROUP, qualifier=20002, name="alla", perms=4),) if with_staff else ()
    return (
        AclEntry(tag=AclTag.USER_OBJ, perms=6),
        AclEntry(tag=AclTag.GROUP_OBJ, perms=4),
        *staff,
        AclEntry(tag=AclTag.MASK, perms=4),
        AclEntry(tag=AclTag.OTHER, perms=0),
    )


def records(n: int) -> list[Record]:
    out: list[Record] = []
    ms = T0_MS

    def add(event: DirectoryUser | DirectoryGroup | FsPermissionEvent | LabelAssigned) -> None:
        out.append(Record(event.topic, 0, len(out), event.key, encode(event), ms))

    for i in range(200):
        add(DirectoryUser(name=f"u{i}", uid=30_000 + i, primary_gid=20002 if i >= 10 else 20001))
    add(DirectoryGroup(name="ledningsgrupp", gid=20001))
    add(DirectoryGroup(name="alla", gid=20002))
    root = Identity(id=0, name="root")
    for path in ("/", "/srv", "/srv/share"):
        add(FsPermissionEvent(kind=FsKind.BASELINE, path=path, owner=root, group=Identity(id=0), mode=0o755))
    add(FsPermissionEvent(kind=FsKind.BASELINE, path=FOLDER, owner=root, group=Identity(id=20001), mode=0o751))
    add(
        LabelAssigned(
            path=FOLDER, label=Label(name="ledning", allowed_groups=("ledningsgrupp",), allowed_users=("root",))
        )
    )
    # one template per (file, state); each change gets its own event id and time
    templates = {}
    for f in range(FILES):
        for state in (False, True):
            event = FsPermissionEvent(
                event_id="EVENTID", kind=FsKind.CHANGED, path=f"{FOLDER}/f{f:04d}.txt", owner=root,
                group=Identity(id=20001, name="ledningsgrupp"), mode=0o640, acl=acl(state),
                observed_at="2026-11-16T09:00:00Z",  # type: ignore[arg-type]
            )  # fmt: skip
            templates[f, state] = encode(event).decode()
    for i in range(n - len(out)):
        ms += 1
        f, state = i % FILES, (i // FILES) % 2 == 0
        value = templates[f, state].replace("EVENTID", f"e{i:09d}", 1).encode()
        out.append(Record("fs", 0, len(out), f"{FOLDER}/f{f:04d}.txt", value, ms))
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=1_000_000)
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="permwatch-bench-replay-") as tmp:
        bus = EmbeddedBus(Path(tmp) / "history.db")
        started = time.perf_counter()
        bus.append_records(records(args.events))
        print(f"recorded {args.events:,} events in {time.perf_counter() - started:.1f} s")

        start = time.perf_counter()
        raw = sum(1 for _ in bus.history(INPUT_TOPICS))
        raw_seconds = time.perf_counter() - start
        start = time.perf_counter()
        parsed = sum(1 for r in bus.history(INPUT_TOPICS) if json.loads(r.value or b"{}"))
        parse_seconds = time.perf_counter() - start

        start, cpu_start = time.perf_counter(), time.process_time()
        result = replay(bus.history(INPUT_TOPICS), keep=timeline_items(FOLDER))
        timeline = build_timeline(FOLDER, result.observed, exposure_windows(result.verdicts))
        seconds, cpu_seconds = time.perf_counter() - start, time.process_time() - cpu_start
        bus.close()

    print(f"baseline, raw read:           {raw:,} records in {raw_seconds:.2f} s ({raw / raw_seconds:,.0f} /s)")
    print(
        f"baseline, read + JSON parse:  {parsed:,} records in {parse_seconds:.2f} s ({parsed / parse_seconds:,.0f} /s)"
    )
    print(
        f"replay into the timeline:     {result.events:,} events in {seconds:.2f} s "
        f"({result.events / seconds:,.0f} /s; {cpu_seconds:.2f} s of CPU); "
        f"{len(timeline.windows):,} exposure windows, {len(timeline.entries):,} timeline entries"
    )
    print(
        f"replay / JSON-parse baseline: {seconds / parse_seconds:.2f}×; "
        f"target ≤ 10 s: {'met' if seconds <= 10 else 'NOT met'}"
    )
    print(
        json.dumps(
            {
                "seconds": round(seconds, 2),
                "cpu_s": round(cpu_seconds, 2),
                "events": result.events,
                "events_per_s": round(result.events / seconds),
                "raw_read_s": round(raw_seconds, 2),
                "json_parse_s": round(parse_seconds, 2),
                "windows": len(timeline.windows),
            }
        )
    )


if __name__ == "__main__":
    main()
