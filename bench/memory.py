"""Processor memory: resident set size with 1,000,000 folders and 100,000 principals in state.

Feeds the processor engine a directory of 100,000 users in 2,000 groups
(nested) and 1,000,000 folder permission events under 10,000 labelled folders,
with ACLs naming those groups, then reports the process's resident set size
(VmRSS) against the size measured just before the engine was built (the
baseline: interpreter and imports). The last line is one JSON object.
Target ≤ 1.5 GB.

    .venv/bin/python bench/memory.py [--folders 1000000 --principals 100000]
"""

from __future__ import annotations

import argparse
import gc
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
)
from processor.engine import Engine

GROUPS = 2_000


def rss_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("no VmRSS in /proc/self/status")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--folders", type=int, default=1_000_000)
    parser.add_argument("--principals", type=int, default=100_000)
    args = parser.parse_args()
    gc.collect()
    baseline = rss_mb()
    started = time.perf_counter()
    engine = Engine()
    users = args.principals - GROUPS
    for u in range(users):
        engine.apply(DirectoryUser(name=f"u{u}", uid=100_000 + u, primary_gid=60_000 + u % GROUPS))
    for g in range(GROUPS):
        members = tuple(f"u{u}" for u in range(g, users, GROUPS))
        nested = (f"g{g + 1}",) if g % 10 else ()
        engine.apply(DirectoryGroup(name=f"g{g}", gid=60_000 + g, member_users=members, member_groups=nested))
    engine.flush()
    root = Identity(id=0, name="root")
    for path in ("/", "/srv", "/srv/share"):
        engine.apply(FsPermissionEvent(kind=FsKind.BASELINE, path=path, owner=root, group=Identity(id=0), mode=0o755))
    labelled = max(1, args.folders // 100)
    for i in range(args.folders):
        top, sub = divmod(i, 100)
        gid = 60_000 + top % GROUPS
        path = f"/srv/share/c{top:05d}" if sub == 0 else f"/srv/share/c{top:05d}/s{sub:02d}"
        acl = (
            AclEntry(tag=AclTag.USER_OBJ, perms=7),
            AclEntry(tag=AclTag.GROUP_OBJ, perms=5),
            AclEntry(tag=AclTag.GROUP, qualifier=60_000 + (top + sub) % GROUPS, perms=5),
            AclEntry(tag=AclTag.MASK, perms=5),
            AclEntry(tag=AclTag.OTHER, perms=0),
        )
        engine.apply(FsPermissionEvent(kind=FsKind.BASELINE, path=path, owner=root, group=Identity(id=gid),
                                       mode=0o750, acl=acl))  # fmt: skip
        if sub == 0:
            label = Label(name=f"l{top % GROUPS}", allowed_groups=(f"g{top % GROUPS}",), allowed_users=("root",))
            engine.apply(LabelAssigned(path=path, label=label))
        if i % 50_000 == 49_999:
            engine.flush()
    verdicts = len(engine.flush())
    gc.collect()
    seconds = time.perf_counter() - started
    used = rss_mb()
    directory = engine.directory
    print(f"state: {len(engine.paths):,} paths, {labelled:,} labelled folders, {len(directory.users):,} users, "
          f"{len(directory.groups):,} groups (built in {seconds:.0f} s, {verdicts:,} verdicts at the end)")  # fmt: skip
    print(f"RSS before the engine (baseline): {baseline:,.0f} MB; with the state: {used:,.0f} MB "
          f"(+{used - baseline:,.0f} MB); target ≤ 1,536 MB: {'met' if used <= 1536 else 'NOT met'}")  # fmt: skip
    print(json.dumps({"rss_mb": round(used), "baseline_mb": round(baseline), "folders": len(engine.paths),
                      "principals": len(engine.directory.users) + len(engine.directory.groups)}))  # fmt: skip


if __name__ == "__main__":
    main()
