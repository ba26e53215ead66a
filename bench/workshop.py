"""Workshop questions on a long history: from snapshots and the per-folder index vs a full replay (issue 21).

Records a history into an embedded event log (what ``permwatch archive``
writes): 200 users and 52 groups, 100,000 folders below one root (one in a
hundred labelled), then ``--events`` permission changes spread over
``--days`` (each folder's ACL granting the all-staff group or a department
group, or not: exposures open, change and close all along) with a directory
change (a member added to or removed from a group) every 500th event. It builds
the workshop store (``permwatch snapshot``: the records indexed by key, a
snapshot every ``--every`` records) and then asks, in the same run, each
question twice — by a full replay of the log (the baseline: what every
command did before) and through the store — and checks the answers are equal:

- ``who-can-read FOLDER --at T`` (a labelled folder, T 61.8 % through the history);
- ``timeline FOLDER`` (another labelled folder: its changes, the directory's, its exposure windows);
- ``exposures --since -30d`` (30 days before the last record): the windows the store's build replay found.

With ``--behind N`` the store is built before the last N records reach the log,
as a nightly ``permwatch snapshot`` leaves it by the afternoon: each question
then also replays that tail, read from the log by position.

Targets: ≤ 1 s, ≤ 1 s and ≤ 2 s from the store. The last line is one JSON object.

    .venv/bin/python bench/workshop.py [--events 1000000] [--folders 100000] [--days 730] [--every 5000] [--behind 0]
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import tempfile
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
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
from processor.forensics import exposure_windows, who_can_read
from processor.replay import replay
from processor.timeline import build_timeline, timeline_items
from processor.workshop_store import DEFAULT_EVERY, WorkshopStore, build

ROOT = "/srv/share"
USERS, DEPARTMENTS = 200, 50
STAFF_GID, MGMT_GID, DEPT_GID = 20_002, 20_001, 21_000
SENTINEL = "2000-01-01T00:00:00Z"


def folder_name(i: int) -> str:
    return f"{ROOT}/f{i:06d}"


def members_of(rng: random.Random, count: int) -> set[str]:
    return {f"u{u}" for u in rng.sample(range(USERS), count)}


def records(events: int, folders: int, days: float, seed: int = 21) -> list[Record]:
    rng = random.Random(seed)
    out: list[Record] = []
    start_ms = 1_790_000_000_000
    step_ms = days * 86_400_000 / events
    ms: float = start_ms

    def at(when_ms: float) -> datetime:
        return datetime.fromtimestamp(when_ms / 1000, UTC)

    def add(event: DirectoryUser | DirectoryGroup | FsPermissionEvent | LabelAssigned, key: str | None) -> None:
        out.append(Record(event.topic, 0, len(out) + 1, key, encode(event), int(ms)))

    for u in range(USERS):
        user = DirectoryUser(name=f"u{u}", uid=30_000 + u, primary_gid=MGMT_GID if u < 10 else STAFF_GID)
        add(user.model_copy(update={"observed_at": at(ms)}), user.key)
    groups = {"ledningsgrupp": {f"u{u}" for u in range(10)}, "alla": members_of(rng, 120)}
    groups |= {f"dept{d}": members_of(rng, 8) for d in range(DEPARTMENTS)}
    gids = {"ledningsgrupp": MGMT_GID, "alla": STAFF_GID} | {f"dept{d}": DEPT_GID + d for d in range(DEPARTMENTS)}
    for name, members in groups.items():
        group = DirectoryGroup(name=name, gid=gids[name], member_users=tuple(sorted(members)), observed_at=at(ms))
        add(group, group.key)
    root = Identity(id=0, name="root")
    for path in ("/", "/srv", ROOT):
        add(FsPermissionEvent(kind=FsKind.BASELINE, path=path, owner=root, group=Identity(id=0), mode=0o755), None)
    for i in range(folders):
        path = folder_name(i)
        add(
            FsPermissionEvent(
                kind=FsKind.BASELINE, path=path, owner=root, group=Identity(id=MGMT_GID), mode=0o750,
                observed_at=at(ms),
            ),
            path,
        )  # fmt: skip
        if i % 100 == 0:
            label = Label(name=f"l{i}", allowed_groups=("ledningsgrupp",), allowed_users=("root",))
            add(LabelAssigned(path=path, label=label, observed_at=at(ms)), path)
    # one template per grant (none, the all-staff group, a department); path, id and time filled in per event
    grants: list[tuple[str, int] | None] = [None, ("alla", STAFF_GID)]
    grants += [(f"dept{d}", DEPT_GID + d) for d in range(DEPARTMENTS)]
    templates = []
    for grant in grants:
        named = (AclEntry(tag=AclTag.GROUP, qualifier=grant[1], name=grant[0], perms=5),) if grant else ()
        acl = (
            AclEntry(tag=AclTag.USER_OBJ, perms=7), AclEntry(tag=AclTag.GROUP_OBJ, perms=5), *named,
            AclEntry(tag=AclTag.MASK, perms=5), AclEntry(tag=AclTag.OTHER, perms=0),
        )  # fmt: skip
        event = FsPermissionEvent(
            event_id="EVENTID", kind=FsKind.CHANGED, path=f"{ROOT}/PATHX", owner=root,
            group=Identity(id=MGMT_GID, name="ledningsgrupp"), mode=0o750, acl=acl,
            observed_at=SENTINEL,  # type: ignore[arg-type]
        )  # fmt: skip
        templates.append(encode(event).decode())
    for n in range(events - len(out)):
        ms += step_ms
        stamp = at(ms).isoformat(timespec="milliseconds").replace("+00:00", "Z")
        if n % 500 == 499:
            name = rng.choice(sorted(groups))
            who = f"u{rng.randrange(USERS)}"
            change = ("-" if who in groups[name] else "+") + who
            groups[name] ^= {who}
            group = DirectoryGroup(
                name=name, gid=gids[name], member_users=tuple(sorted(groups[name])), change="members",
                added=(who,) if change[0] == "+" else (), removed=(who,) if change[0] == "-" else (),
                observed_at=at(ms),
            )  # fmt: skip
            add(group, group.key)
            continue
        i = rng.randrange(folders)
        # labelled folders are changed more often than the rest, and grant the all-staff group now and then
        if rng.random() < 0.1:
            i -= i % 100
        chosen = rng.choice([0, 0, 0, 1]) if i % 100 == 0 else rng.randrange(len(grants))
        value = templates[chosen].replace("EVENTID", f"e{n:09d}", 1).replace(SENTINEL, stamp, 1)
        path = folder_name(i)
        out.append(Record("fs", 0, len(out) + 1, path, value.replace(f"{ROOT}/PATHX", path, 1).encode(), int(ms)))
    return out


def timed(action: Callable[[], tuple[object, int]]) -> tuple[tuple[object, int], float]:
    started = time.perf_counter()
    answer = action()
    return answer, time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=1_000_000)
    parser.add_argument("--folders", type=int, default=100_000)
    parser.add_argument("--days", type=float, default=730)
    parser.add_argument("--every", type=int, default=DEFAULT_EVERY)
    parser.add_argument("--behind", type=int, default=0, help="records appended after the store is built")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="permwatch-bench-workshop-") as tmp:
        bus = EmbeddedBus(Path(tmp) / "history.db")
        started = time.perf_counter()
        history = records(args.events, args.folders, args.days)
        later = history[len(history) - args.behind :] if args.behind else []
        bus.append_records(history[: len(history) - len(later)])
        end_ms = history[-1].timestamp_ms
        at_ms = history[int(len(history) * 0.618)].timestamp_ms
        del history
        print(f"recorded {args.events:,} events over {args.folders:,} folders in {time.perf_counter() - started:.1f} s")

        built = build(bus, Path(tmp) / "workshop" / "store.db", every=args.every)
        print(
            f"workshop store: {built.records:,} records, {built.snapshots:,} snapshots, {built.bytes / 1e6:,.0f} MB, "
            f"built in {built.seconds:.1f} s (one replay, once per history; the log itself "
            f"{Path(bus.path).stat().st_size / 1e6:,.0f} MB)"
        )
        if later:
            bus.append_records(later)
            print(f"then {len(later):,} more records reached the log: the store is that far behind")
        del later

        asked_at = datetime.fromtimestamp(at_ms / 1000, UTC)
        since = datetime.fromtimestamp(end_ms / 1000, UTC) - timedelta(days=30)
        who = folder_name(args.folders // 2 - (args.folders // 2) % 100)
        line = folder_name(args.folders // 3 - (args.folders // 3) % 100)

        def full_who() -> tuple[object, int]:
            result = replay(bus.history(INPUT_TOPICS, until_ms=at_ms), until=asked_at)
            return who_can_read(result.engine, who), result.events

        def store_who() -> tuple[object, int]:
            store = WorkshopStore(built.path, bus)
            found = store.replay_from_snapshot(until=asked_at)
            store.close()
            tails["who_can_read"] = found.result.seconds
            return who_can_read(found.result.engine, who), found.result.events

        def full_timeline() -> tuple[object, int]:
            result = replay(bus.history(INPUT_TOPICS), keep=timeline_items(line))
            return build_timeline(line, result.observed, exposure_windows(result.verdicts)).to_json(), result.events

        def store_timeline() -> tuple[object, int]:
            store = WorkshopStore(built.path, bus)
            result = store.folder_replay(line, keep=timeline_items(line))
            store.close()
            return build_timeline(line, result.observed, exposure_windows(result.verdicts)).to_json(), result.events

        def full_exposures() -> tuple[object, int]:
            result = replay(bus.history(INPUT_TOPICS))
            return [w.to_json() for w in exposure_windows(result.verdicts, since=since)], result.events

        def store_exposures() -> tuple[object, int]:
            store = WorkshopStore(built.path, bus)
            windows = store.exposure_windows(since=since)  # what the build's replay found (and the tail's)
            store.close()
            return [w.to_json() for w in windows], len(store.tail)

        figures = {}
        tails: dict[str, float] = {}
        targets = {"who_can_read": 1.0, "timeline": 1.0, "exposures_30d": 2.0}
        questions = {
            "who_can_read": (f"who-can-read {who} --at {asked_at.isoformat()}", full_who, store_who),
            "timeline": (f"timeline {line}", full_timeline, store_timeline),
            "exposures_30d": (f"exposures --since {since.isoformat()}", full_exposures, store_exposures),
        }
        for name, (asked, full, fast) in questions.items():
            (full_answer, full_events), full_s = timed(full)
            (answer, events), fast_s = timed(fast)
            same = answer == full_answer
            met = fast_s <= targets[name]
            print(
                f"{asked}\n  full replay: {full_events:>9,} events {full_s:7.2f} s   "
                f"from the store: {events:>9,} events {fast_s:6.2f} s   ({full_s / fast_s:,.0f}× faster)   "
                f"same answer: {'yes' if same else 'NO'}   "
                f"target ≤ {targets[name]:.0f} s: {'met' if met else 'NOT met'}"
            )
            if name in tails:
                print(f"  of which replaying the tail after the snapshot: {tails[name]:.2f} s (the rest: loading it)")
            figures[name] = {
                "full_s": round(full_s, 2),
                "store_s": round(fast_s, 3),
                "store_events": events,
                "same": same,
                "met": met,
            }
        bus.close()

    print(
        json.dumps(
            {
                "events": args.events,
                "folders": args.folders,
                "days": args.days,
                "every": args.every,
                "behind": args.behind,
                "store_build_s": round(built.seconds, 1),
                "store_mb": round(built.bytes / 1e6),
                "snapshots": built.snapshots,
                **figures,
            }
        )
    )


if __name__ == "__main__":
    main()
