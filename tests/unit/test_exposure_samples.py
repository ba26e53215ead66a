"""A folder's sample paths kept in sort order as its paths move (processor/exposures.py, issue 21) say what sorting
every path of the exposing signatures each time said: the count and the first few, after every step of random
moves between signatures, removals and re-adds, in folders of a few paths and of hundreds."""

from __future__ import annotations

import heapq
import random

import pytest

from permwatch.events import Label, ObjectType
from processor.exposures import MAX_SAMPLE_PATHS, ExposureTracker, FolderExposure
from processor.state import PathState


def state(acl: int) -> PathState:
    return PathState(object_type=ObjectType.FILE, acl=acl)  # (paths are grouped by the key alone here)


def sorted_answer(record: FolderExposure, exposing: list[tuple[int, str, ObjectType]]) -> tuple[int, tuple[str, ...]]:
    groups = [record.groups[s] for s in exposing]
    members = [p for g in groups for p in ((g,) if isinstance(g, str) else g)]
    return len(members), tuple(heapq.nsmallest(MAX_SAMPLE_PATHS, members))


@pytest.mark.parametrize(("paths", "seed"), [(4, 1), (12, 2), (60, 3), (400, 4), (400, 5)])
def test_the_kept_sample_says_what_sorting_every_path_says(paths: int, seed: int) -> None:
    rng = random.Random(seed)
    acls = [900_001, 900_002, 900_003]
    states = {acl: state(acl) for acl in acls}
    record = FolderExposure("/srv/a", Label(name="a"))
    where: dict[str, int | None] = {f"/srv/a/f{i:04d}": None for i in range(paths)}
    asked, kept = 0, False
    for step in range(3_000):
        path = rng.choice(sorted(where))
        old = where[path]
        new = rng.choice([*acls, None] if step % 7 else acls)
        if step % 500 < 250:  # runs in path order too, as a recursive setfacl or a replay of one makes them
            path = f"/srv/a/f{step % paths:04d}"
            old, new = where[path], acls[(step // paths) % 2]
        if old == new:
            continue
        record.set_path(path, None if new is None else states[new], "/srv/a", None if old is None else states[old])
        where[path] = new
        for acl in rng.sample(acls, rng.randint(1, 3)):
            exposing = [s for s in record.groups if s[0] == acl] + [s for s in record.groups if s[0] != acl][:1]
            if exposing:
                assert ExposureTracker.paths(record, exposing) == sorted_answer(record, exposing)
                asked += 1
                kept |= bool(record.samples)
        if step % 1_000 == 999:
            record.clear_paths()
            where = dict.fromkeys(where)
    assert asked > 2_000
    if paths > 2 * MAX_SAMPLE_PATHS:
        assert kept  # the many-path case kept samples (it is the case this is for)
