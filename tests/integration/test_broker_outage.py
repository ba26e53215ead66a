"""Issue 7: the Kafka broker stopped for 30 s while 10,000 permission changes happen, then started:
every change reaches the processor, in order per path.

Ten labelled folders (ten units, so ten keys spread over the partitions) hold 2,800 files, each owned by
root and by one of two broad groups. While the broker is down, 2,000 files are changed once and 800 ten
times each, alternating between modes that let the file's group read and modes that do not (all distinct
per file), in 20 rounds over the first 25 s of the outage: 10,000 changes that open and close exposures.
The collector's flush gets no acknowledgement within 10 s, so it spools to local disk
(:mod:`collectors.spool`); what the producer already held it keeps retrying, and the spool is
drained after it, in order, once the broker is back. Then:

1. every changed file's final mode is on the fs topic;
2. per file, the modes published after the baseline are the modes it was given, in that order, ending with
   the final one (the collector reads a path's current state, so changes close together may be coalesced;
   while its first flush waits out flush_timeout_seconds it reads nothing, so changes in those first 2 s are
   coalesced too), and none made once the collector spools is left out;
3. the processor's last exposure event for each folder is what the final modes imply: closed (or none) where
   no file is readable by a broad group, else open naming exactly those groups and their members;
4. the collector's metrics said it was spooling during the outage and that it drained after, with nothing
   dropped, and its log says both.

Outages longer than the producer's delivery timeout and a spool that fills up are tested in
``test_collector_spool.py``.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.integration.pipeline import Pipeline, tracebacks, traversable_tempdir, wait_until
from tests.integration.servers.kafka import KafkaBroker

pytestmark = pytest.mark.integration

OUTAGE = 30.0
CHANGING = 25.0
"""The rounds of changes are spread over this much of the outage."""
ROUNDS = 20
FOLDERS, SINGLES, MULTIS = 10, 200, 80
"""Per folder: files changed once, files changed once every other round (ten times)."""
STEPS = ROUNDS // 2
INITIAL = 0o400
EXPOSING = (0o640, 0o650, 0o660, 0o670, 0o740)
"""Modes that let the file's group read."""
HIDDEN = (0o600, 0o610, 0o620, 0o630, 0o700)
"""Modes that do not (and none lets others read)."""
MEMBERS = {"alla": ("bo", "cecilia"), "ekonomi": ("dora",)}
GIDS = {"ledningsgrupp": 38001, "alla": 38002, "ekonomi": 38003}
DIRECTORY = """users:
  - {name: anna, uid: 38101, gid: 38001}
  - {name: bo, uid: 38102, gid: 38002}
  - {name: cecilia, uid: 38103, gid: 38002}
  - {name: dora, uid: 38104, gid: 38003}
groups:
  - {name: ledningsgrupp, gid: 38001, members: [anna]}
  - {name: alla, gid: 38002, members: [bo, cecilia]}
  - {name: ekonomi, gid: 38003, members: [dora]}
"""
# Which broad groups may read some file of each folder once the outage is over.
FINALLY_EXPOSED_TO = [
    (),
    (),
    (),
    ("alla",),
    ("alla",),
    ("alla",),
    ("ekonomi",),
    ("ekonomi",),
    *[("alla", "ekonomi")] * 2,
]


@dataclass(frozen=True)
class File:
    path: Path
    group: str
    modes: tuple[int, ...]
    """The modes it is given during the outage, in order."""


def plan(share: Path) -> tuple[list[Path], list[File]]:
    """The folders, and the files with their changes: singles first in each folder, then the multis."""
    folders, files = [], []
    for f in range(FOLDERS):
        folder = share / f"dept-{f:02d}"
        folders.append(folder)
        for j in range(SINGLES + MULTIS):
            group = ("alla", "ekonomi")[j % 2]
            exposed = group in FINALLY_EXPOSED_TO[f] and j % 3 == 0
            first, then = (HIDDEN, EXPOSING) if exposed else (EXPOSING, HIDDEN)
            if j < SINGLES:
                modes: tuple[int, ...] = (then[j % 5],)
            else:  # grant, revoke, grant... (or the reverse): five pairs of modes, all different, ending as planned
                modes = tuple(mode for k in range(STEPS // 2) for mode in (first[(j + k) % 5], then[(j + k) % 5]))
            files.append(File(folder / f"doc-{j:03d}.txt", group, modes))
    return folders, files


def rounds(files: list[File]) -> list[list[tuple[Path, int]]]:
    """The changes of each round: a twentieth of the singles, and every other multi's next mode."""
    schedule: list[list[tuple[Path, int]]] = [[] for _ in range(ROUNDS)]
    singles = [file for file in files if len(file.modes) == 1]
    multis = [file for file in files if len(file.modes) > 1]
    for i, file in enumerate(singles):
        schedule[i * ROUNDS // len(singles)].append((file.path, file.modes[0]))
    for i, file in enumerate(multis):
        for step, mode in enumerate(file.modes):
            schedule[2 * step + i % 2].append((file.path, mode))
    return schedule


@pytest.fixture
def share() -> Iterator[Path]:
    with traversable_tempdir("permwatch-outage-") as base:
        yield base / "share"


def published(pipe: Pipeline, before: set[str], paths: set[str]) -> dict[str, list[tuple[str, int]]]:
    """Each path's (event id, mode) on the fs topic after the baseline, in bus order."""
    by_path: dict[str, list[tuple[str, int]]] = {}
    for event in pipe.fs_events():
        if event["event_id"] not in before and event.get("path") in paths:
            by_path.setdefault(event["path"], []).append((event["event_id"], event["mode"]))
    return by_path


def last_exposures(pipe: Pipeline) -> dict[str, dict[str, Any]]:
    """The last exposure event of each folder (one folder's events share a key, so a partition: in order)."""
    return {event["folder"]: event for event in pipe.exposures()}


def test_broker_outage_loses_and_reorders_nothing(kafka_broker: KafkaBroker, share: Path, tmp_path: Path) -> None:
    folders, files = plan(share)
    schedule = rounds(files)
    assert sum(len(changes) for changes in schedule) == 10_000
    assert all(len(set(file.modes)) == len(file.modes) and INITIAL not in file.modes for file in files)
    share.mkdir(parents=True)
    os.chmod(share, 0o755)
    for folder in folders:
        folder.mkdir()
        os.chown(folder, 0, GIDS["ledningsgrupp"])
        os.chmod(folder, 0o751)  # others may pass through, not list
    for file in files:
        file.path.write_text("x")
        os.chown(file.path, 0, GIDS[file.group])
        os.chmod(file.path, INITIAL)
    pipe = Pipeline(
        tmp_path,
        kafka_broker.bootstrap,
        f"outage{os.getpid()}.",
        share=share,
        config_extra='[metrics]\nlisten = "127.0.0.1:0"\n',
    )
    pipe.directory_path.write_text(DIRECTORY)
    pipe.write_config(
        '[labels.definitions.ledning]\nallowed_groups = ["ledningsgrupp"]\n'
        f'[[labels.rules]]\nglob = "{share}/dept-*"\nlabel = "ledning"\n'
    )
    try:
        pipe.start_and_settle(labels=FOLDERS)
        assert pipe.exposures() == []  # the baseline exposes nothing
        before = {e["event_id"] for e in pipe.fs_events()}
        pipe.close_readers()  # no client of the test's own keeps knocking while the broker is down
        kafka_broker.stop()
        down_at = time.monotonic()
        spooling_from = None
        for r, changes in enumerate(schedule):
            time.sleep(max(0.0, down_at + r * CHANGING / ROUNDS - time.monotonic()))  # the planned pace
            for path, mode in changes:
                os.chmod(path, mode)
            if spooling_from is None and pipe.spool_metrics().get("permwatch_spool_spooling") == 1:
                spooling_from = r
        spooling = wait_until(
            lambda: (m := pipe.spool_metrics()).get("permwatch_spool_spooling") == 1 and m,
            "the collector to spool",
        )
        time.sleep(max(0.0, OUTAGE - (time.monotonic() - down_at)))  # the outage lasts 30 s, as the issue asks
        spooled = pipe.spool_metrics()["permwatch_spool_records"]
        kafka_broker.start()

        # (1) every file's final mode reaches the bus
        final = {str(file.path): file.modes[-1] for file in files}
        wait_until(
            lambda: {p: seen[-1][1] for p, seen in published(pipe, before, set(final)).items()} == final,
            "every file's final mode on the bus",
            timeout=300,
        )
        pipe.wait_quiet()

        # (2) in the order the changes were made
        on_bus = published(pipe, before, set(final))
        repeated = 0
        for file in files:
            seen = on_bus[str(file.path)]
            last_copy = {event_id: i for i, (event_id, _) in enumerate(seen)}
            # a record can come twice (at least once); where it counts for the processor is its last copy
            modes = [mode for i, (event_id, mode) in enumerate(seen) if last_copy[event_id] == i]
            repeated += len(seen) - len(modes)
            at = [file.modes.index(mode) if mode in file.modes else -1 for mode in modes]
            assert -1 not in at, f"{file.path}: a mode that was never set, {[oct(m) for m in modes]}"
            assert at == sorted(set(at)) and at[-1] == len(file.modes) - 1, f"{file.path}: out of order, {at}"
        coalesced = sum(len(file.modes) for file in files) - sum(len(seen) for seen in on_bus.values()) + repeated
        # Until its first flush has waited flush_timeout_seconds (2 s) for Kafka, the collector reads nothing,
        # so a file changed twice meanwhile shows only its later mode. Once it spools it reads each change as
        # it comes: every mode set from two rounds (2.5 s) after it was seen spooling is on the bus.
        # (rounds are 1.25 s apart: with the 2 s default it spools within the first few)
        assert spooling_from is not None and spooling_from <= 4, spooling_from
        modes_on_bus = {path: {mode for _, mode in seen} for path, seen in on_bus.items()}
        missing = [
            (r, str(path), oct(mode))
            for r, changes in enumerate(schedule[spooling_from + 2 :], start=spooling_from + 2)
            for path, mode in changes
            if mode not in modes_on_bus[str(path)]
        ]
        assert not missing, f"{len(missing)} changes made while spooling never reached the bus: {missing[:10]}"

        # (3) the processor got them all: its exposures are those of the final state
        exposures = last_exposures(pipe)
        for f, folder in enumerate(folders):
            readable = {
                file.group for file in files if file.path.parent == folder and file.modes[-1] & 0o040
            }  # what the file system says now, whatever was planned
            assert readable == set(FINALLY_EXPOSED_TO[f])
            last = exposures.get(str(folder))
            if not readable:
                assert last is None or last["status"] == "closed", (folder, last)
                continue
            users = sorted(user for group in readable for user in MEMBERS[group])
            assert last is not None and last["status"] in ("opened", "changed"), (folder, last)
            assert (last["groups"], last["users"], last["people"]) == (sorted(readable), users, len(users)), last
        opened = {e["exposure_id"] for e in pipe.exposures() if e["status"] == "opened"}

        # (4) it spooled and drained, and says so
        assert spooling["permwatch_spool_records"] > 0 and spooled > 0
        after = pipe.spool_metrics()
        assert after["permwatch_spool_spooling"] == 0 and after["permwatch_spool_records"] == 0
        assert after["permwatch_spool_drained_total"] >= spooled
        assert after['permwatch_spool_dropped_total{reason="full"}'] == 0
        assert after['permwatch_spool_dropped_total{reason="rejected"}'] == 0
        log = pipe.log("collector")
        assert "kafka unreachable" in log and "spooling to" in log and "spool drained:" in log
        for role in ("collector", "processor"):
            assert pipe.procs[role].poll() is None, f"the {role} stopped during the outage"
            assert not tracebacks(pipe.log(role)), tracebacks(pipe.log(role))
        print(
            f"\n{spooled:.0f} records spooled, {after['permwatch_spool_drained_total']:.0f} drained; "
            f"{coalesced} of 10,000 changes coalesced by the collector (it was seen spooling after round "
            f"{spooling_from} of {ROUNDS}), {repeated} records repeated; "
            f"{len(opened)} exposures opened"
        )
    finally:
        pipe.stop()
        if not kafka_broker.running:
            kafka_broker.start()
