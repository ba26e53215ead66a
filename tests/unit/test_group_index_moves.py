"""The path table's group indexes (gid → paths, SID → paths) are moved by what differs between a path's old and
new ACL (issue 21); after every one of thousands of random changes they equal indexes built afresh from the
paths' states. The states name owning groups, named groups, and NT ACEs naming SIDs and Samba's S-1-22-2-gid."""

from __future__ import annotations

import random

import pytest

from permwatch.events import AclEntry, AclTag, FsKind, FsPermissionEvent, Identity, NtAce, NtAcl, ObjectType
from processor.state import PathState, PathTable, group_ids, path_state, trustees

SIDS = ["S-1-5-11", "S-1-5-21-1-2-3-513", "S-1-22-2-20001", "S-1-22-2-20003"]


def _event(rng: random.Random, path: str) -> FsPermissionEvent:
    named = rng.sample([20_001, 20_002, 20_003], rng.randrange(3))
    acl = (
        AclEntry(tag=AclTag.USER_OBJ, perms=7),
        AclEntry(tag=AclTag.GROUP_OBJ, perms=5),
        *(AclEntry(tag=AclTag.GROUP, qualifier=gid, name=f"g{gid}", perms=5) for gid in sorted(named)),
        *((AclEntry(tag=AclTag.MASK, perms=5),) if named else ()),
        AclEntry(tag=AclTag.OTHER, perms=0),
    )
    nt = None
    if rng.random() < 0.4:
        aces = tuple(NtAce(type="allow", mask=0x1200A9, trustee=sid) for sid in rng.sample(SIDS, rng.randrange(3)))
        nt = NtAcl(source="stored", owner="S-1-22-1-0", group="S-1-22-2-0", dacl_present=True, dacl=aces)
    return FsPermissionEvent(
        kind=FsKind.CHANGED, path=path, object_type=ObjectType.DIRECTORY, owner=Identity(id=0),
        group=Identity(id=rng.choice([0, 20_001, 20_004])), mode=0o770, acl=acl,
        acl_kind="posix" if nt is None else "nt", nt_acl=nt,
    )  # fmt: skip


def _afresh(states: dict[str, PathState]) -> tuple[dict[int, set[str]], dict[str, set[str]]]:
    by_gid: dict[int, set[str]] = {}
    by_sid: dict[str, set[str]] = {}
    for path, state in states.items():
        for gid in group_ids(state.acl):
            by_gid.setdefault(gid, set()).add(path)
        for sid in trustees(state.acl):
            by_sid.setdefault(sid, set()).add(path)
    return by_gid, by_sid


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_indexes_follow_every_change_as_if_built_afresh(seed: int) -> None:
    rng = random.Random(seed)
    table = PathTable()
    paths = [f"/srv/share/f{i}" for i in range(12)]
    moved = 0
    for _ in range(3000):
        path = rng.choice(paths)
        old = table.put(path, path_state(_event(rng, path)))
        moved += old is not None and old.acl != table.states[path].acl
        if rng.random() < 0.05:
            table.remove_subtree(rng.choice(paths))
        assert (table.by_gid, table.by_sid) == _afresh(table.states)
    assert moved > 1000 and table.by_sid and len(table.by_gid) >= 4
