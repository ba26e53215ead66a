"""A seeded stream of input events whose exposures do not depend on how a processor batches or interleaves them.

For the restart tests (unit and integration): a run killed and restarted at
random points must end with exactly the exposures of an uninterrupted run,
so the stream itself must leave nothing to chance:

- the directory (every principal, ``root`` included) is applied first, then
  the ancestors, the labelled folders with their files and the labels, which
  open no exposure in any order, then the changes. Paths judged before the
  directory knows their owners would expose them to those owners, and an
  owner the directory never names (a local account) is a principal the
  engine makes up on the fly, which a label's audience judged earlier does
  not notice: either would make the setup's exposures depend on the order;
- every change that can open, change or close an exposure is a permission
  change of a *hot* folder's own directory, so one folder's changes share one
  key (one Kafka partition, in order) and no other event touches that folder;
- two changes of one hot folder are at least ``gap`` events apart, so no
  batch smaller than about ``gap / partitions`` holds both (a batch is judged
  as one: two changes in one batch would merge their causes);
- the rest is churn on *quiet* folders' files, inside the label's audience:
  judged, never exposed.

Hot folders move between "closed" and three ways of being open (to the
all-staff group, to the consultants' group, to both, to everyone), so
exposures open, change and close all along.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from permwatch.events import (
    AclEntry,
    AclTag,
    AnyEvent,
    DirectoryGroup,
    DirectoryUser,
    FsKind,
    FsPermissionEvent,
    Identity,
    Label,
    LabelAssigned,
    ObjectType,
)

T0 = datetime(2026, 11, 23, 8, 0, tzinfo=UTC)
STEP = timedelta(milliseconds=10)
LEDNING, ALLA, KONSULT = 51_001, 51_002, 51_003
ROOT = Identity(id=0, name="root")
LABEL = Label(name="ledning", allowed_groups=("ledning",), allowed_users=("root",))


def _acl(*groups: int, other: int = 0) -> tuple[AclEntry, ...]:
    """The folder's access ACL: owner rwx, owning group r-x, and r-x for each named group (masked r-x)."""
    named = tuple(AclEntry(tag=AclTag.GROUP, qualifier=gid, perms=5) for gid in groups)
    mask = (AclEntry(tag=AclTag.MASK, perms=5),) if groups else ()
    owner = (AclEntry(tag=AclTag.USER_OBJ, perms=7), AclEntry(tag=AclTag.GROUP_OBJ, perms=5))
    return (*owner, *named, *mask, AclEntry(tag=AclTag.OTHER, perms=other))


_CLOSED = _acl()
FOLDER_STATES: dict[str, tuple[AclEntry, ...]] = {
    "closed": _CLOSED,
    "alla": _acl(ALLA),
    "konsult": _acl(KONSULT),
    "both": _acl(ALLA, KONSULT),
    "everyone": _acl(other=5),
}


@dataclass(frozen=True)
class Stream:
    directory: list[AnyEvent]
    """Every principal, ``root`` included: published and applied first (see below)."""
    folders: list[AnyEvent]
    """The ancestors, the labelled folders and their files, the labels."""
    changes: list[AnyEvent]
    hot_changes: int

    @property
    def setup(self) -> list[AnyEvent]:
        return self.directory + self.folders

    @property
    def events(self) -> list[AnyEvent]:
        return self.setup + self.changes


def stream(*, hot: int, quiet: int, files: int, total: int, gap: int, seed: int = 7) -> Stream:
    """``total`` events, the setup first; see the module's docstring for what they are."""
    rng = random.Random(seed)
    clock = iter(T0 + STEP * i for i in range(10**9))
    setup: list[AnyEvent] = [DirectoryUser(name="root", uid=0, primary_gid=0, observed_at=next(clock))]
    for i in range(300):
        setup.append(DirectoryUser(name=f"u{i:03d}", uid=50_000 + i, primary_gid=LEDNING if i < 20 else ALLA,
                                   observed_at=next(clock)))  # fmt: skip
    setup.append(DirectoryGroup(name="ledning", gid=LEDNING, observed_at=next(clock)))
    setup.append(DirectoryGroup(name="alla", gid=ALLA, observed_at=next(clock)))
    konsults = tuple(f"u{i:03d}" for i in range(280, 300))
    setup.append(DirectoryGroup(name="konsult", gid=KONSULT, member_users=konsults, observed_at=next(clock)))
    directory = len(setup)
    for path in ("/", "/srv", "/srv/share"):
        setup.append(_fs(path, ObjectType.DIRECTORY, (), 0o755, next(clock), FsKind.BASELINE, group=0))
    hot_folders = [f"/srv/share/hot{i:03d}" for i in range(hot)]
    quiet_files = []
    for folder in hot_folders + [f"/srv/share/quiet{i:03d}" for i in range(quiet)]:
        setup.append(_fs(folder, ObjectType.DIRECTORY, _CLOSED, 0o750, next(clock), FsKind.BASELINE))
        setup.append(LabelAssigned(path=folder, label=LABEL, observed_at=next(clock)))
        for k in range(files):
            path = f"{folder}/doc{k:02d}.txt"
            setup.append(_fs(path, ObjectType.FILE, (), 0o640, next(clock), FsKind.BASELINE))
            if "/quiet" in folder:
                quiet_files.append(path)
    state = dict.fromkeys(hot_folders, "closed")
    last = dict.fromkeys(hot_folders, -gap)
    mode = dict.fromkeys(quiet_files, 0o640)
    out: list[AnyEvent] = []
    hot_changes = 0
    for i in range(total - len(setup)):
        ready = [f for f in hot_folders if i - last[f] >= gap]
        if ready and rng.random() < 0.5:
            folder = rng.choice(ready)
            state[folder] = rng.choice([s for s in FOLDER_STATES if s != state[folder]])
            last[folder] = i
            hot_changes += 1
            out.append(_fs(folder, ObjectType.DIRECTORY, FOLDER_STATES[state[folder]], 0o750, next(clock)))
        else:
            path = rng.choice(quiet_files)
            mode[path] ^= 0o020  # group write on and off: the label's own group, never an outsider
            out.append(_fs(path, ObjectType.FILE, (), mode[path], next(clock)))
    return Stream(setup[:directory], setup[directory:], out, hot_changes)


def _fs(
    path: str,
    object_type: ObjectType,
    acl: tuple[AclEntry, ...],
    mode: int,
    at: datetime,
    kind: FsKind = FsKind.CHANGED,
    *,
    group: int = LEDNING,
) -> FsPermissionEvent:
    return FsPermissionEvent(
        kind=kind,
        path=path,
        object_type=object_type,
        owner=ROOT,
        group=Identity(id=group),
        mode=mode,
        acl=acl,
        observed_at=at,
    )
