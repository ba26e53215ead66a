"""Directory fan-out: one group change reaching 100,000 labelled folders, judged by the processor engine.

100,000 labelled folders (one path each, plus their parents) whose ACLs name
1,000 groups: folder i is root's, its POSIX ACL has a named entry
``group:g<i % 1000>:r-x`` and its label allows that group. The all-staff
group ``alla`` is nested into every one of the 1,000 groups, as an
over-eager IT admin might. The measured change adds 50 people
to ``alla``: every folder is now readable by people outside its label. The
figure is the time from applying that directory event until every exposure
event is encoded for the bus (the bytes the processor publishes); the time to
the last verdict alone is printed beside it. For contrast, a change that only one folder depends
on is timed too: the group index finds it without judging the other 99,999.

    .venv/bin/python bench/fanout.py [--folders 100000 --groups 1000]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from permwatch.events import (
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
from processor.engine import Engine

BASE_GID = 50_000


def named_group_acl(gid: int) -> tuple[AclEntry, ...]:
    return (
        AclEntry(tag=AclTag.USER_OBJ, perms=7),
        AclEntry(tag=AclTag.GROUP_OBJ, perms=5),
        AclEntry(tag=AclTag.GROUP, qualifier=gid, perms=5),
        AclEntry(tag=AclTag.MASK, perms=5),
        AclEntry(tag=AclTag.OTHER, perms=0),
    )


def build(folders: int, groups: int) -> Engine:
    engine = Engine()
    engine.apply(DirectoryUser(name="root", uid=0))
    for i in range(200):
        engine.apply(DirectoryUser(name=f"staff{i}", uid=60_000 + i, primary_gid=59_990))
    engine.apply(DirectoryGroup(name="alla", gid=59_999))
    for g in range(groups):
        engine.apply(DirectoryGroup(name=f"g{g}", gid=BASE_GID + g, member_users=(), member_groups=("alla",)))
    engine.apply(DirectoryGroup(name="lonely", gid=59_998, member_users=("staff0",)))
    engine.flush()
    for path in ("/", "/srv", "/srv/share"):
        engine.apply(
            FsPermissionEvent(kind=FsKind.BASELINE, path=path, owner=Identity(id=0), group=Identity(id=0), mode=0o755)
        )
    for i in range(folders):
        gid = 59_998 if i == 0 else BASE_GID + i % groups
        path = f"/srv/share/d{i // 1000}/f{i}"
        if i % 1000 == 0:
            engine.apply(
                FsPermissionEvent(
                    kind=FsKind.BASELINE,
                    path=f"/srv/share/d{i // 1000}",
                    owner=Identity(id=0),
                    group=Identity(id=0),
                    mode=0o755,
                )
            )
        engine.apply(
            FsPermissionEvent(
                kind=FsKind.BASELINE,
                path=path,
                owner=Identity(id=0),
                group=Identity(id=0),
                mode=0o750,
                acl=named_group_acl(gid),
            )
        )
        group = "lonely" if i == 0 else f"g{i % groups}"
        engine.apply(
            LabelAssigned(
                path=path, label=Label(name=f"label-{group}", allowed_groups=(group,), allowed_users=("root",))
            )
        )
    engine.flush()
    return engine


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--folders", type=int, default=100_000)
    parser.add_argument("--groups", type=int, default=1_000)
    args = parser.parse_args()

    started = time.perf_counter()
    engine = build(args.folders, args.groups)
    print(f"set-up: {args.folders:,} labelled folders, {args.groups:,} groups in {time.perf_counter() - started:.1f} s")

    judged = engine.folders_judged
    wide = DirectoryGroup(
        name="alla", gid=59_999, member_users=tuple(f"staff{i}" for i in range(50)), actor="cn=it-admin"
    )
    start = time.perf_counter()
    engine.apply(wide)
    verdicts = engine.flush()
    judged_seconds = time.perf_counter() - start
    wire = [encode(verdict) for verdict in verdicts]
    seconds = time.perf_counter() - start
    opened = sum(1 for v in verdicts if v.status == "opened")
    print(
        f"alla (nested into all {args.groups:,} groups) gains 50 people: {opened:,} exposures opened, "
        f"{engine.folders_judged - judged:,} folders judged in {judged_seconds:.3f} s, "
        f"{len(wire):,} exposure events encoded for the bus after {seconds:.3f} s "
        f"({args.folders / seconds:,.0f} folders/s)"
    )

    judged = engine.folders_judged
    narrow = DirectoryGroup(name="lonely", gid=59_998, member_users=("staff0", "staff1"))
    start = time.perf_counter()
    engine.apply(narrow)
    narrow_verdicts = engine.flush()
    narrow_seconds = time.perf_counter() - start
    print(
        f"a group only one folder depends on changes: {engine.folders_judged - judged} folder judged, "
        f"{len(narrow_verdicts)} verdict(s) in {narrow_seconds * 1000:.2f} ms (the index, not a full scan)"
    )
    print(f"target ≤ 1 s: {'met' if seconds <= 1.0 else 'NOT met'}")
    print(
        json.dumps(
            {
                "seconds": round(seconds, 3),
                "judged_seconds": round(judged_seconds, 3),
                "folders": args.folders,
                "groups": args.groups,
                "exposures_opened": opened,
                "narrow_change_ms": round(narrow_seconds * 1000, 3),
            }
        )
    )


if __name__ == "__main__":
    main()
