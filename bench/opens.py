"""The cost of watching opens: reads/s of a tight open/read/close loop on a labelled folder, by how it is watched.

A reader process (another uid, as a user's would be) opens, reads 4 KiB of and closes one file in a labelled
folder as fast as it can, for ``--seconds``. Each round measures it, in an order that turns from round to round
so drifting load on a shared machine falls on every mode alike:

- ``unwatched``: no mark;
- ``notification``: the collector's :class:`collectors.fs.opens.FanotifyOpens` (``opens = "fanotify"``:
  notification marks, a thread that reads every event as it comes and names its process); target ≥ 0.9;
- ``permission``: the same with ``opens = "fanotify_permission"`` (``FAN_OPEN_PERM``: each open waits until its
  process is named and allowed);
- ``kernel_floor``: a fanotify group marked exactly as ``notification`` marks, which nothing ever reads: the
  kernel's own work per open on a marked inode, the floor no listener design can go below with these marks;
- ``file_marks``: ``notification`` with a mark on every file's own inode instead of the directories' watch on
  their children (``FanotifyOpens(mark_files=True)``, a design measured here, not a setting), and
  ``file_marks_floor``, its own floor (a group marked that way, never read).

Besides the wall-clock ratio (the issue's figure, at the mercy of a shared machine's load: the watcher's thread
competes with the reader for the cores), each mode's *CPU* ratio: the reader process's own CPU time per open
(user + system, where the kernel's fsnotify work lands), unwatched over watched; and the watcher's CPU per open.

Each mode's figure is the median of the rounds' own ratios (mode / unwatched of the same round). Then, per
watched mode, ``--readers`` sequential short-lived ``cat`` processes (another uid) read a file, and the bench
counts how many of them the access records name (a uid, not ``unresolved``). Needs root (CAP_SYS_ADMIN). The
last line is one JSON object.

    .venv/bin/python bench/opens.py [--seconds 2 --rounds 5 --readers 200]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

from _rig import traversable_tempdir  # also puts the repository on sys.path

from collectors.acl import NameCache
from collectors.fanotify import Fanotify
from collectors.fs.opens import OPEN_MASK, OWN_OPEN_MASK, SETTLE_SECONDS, FanotifyOpens

READER_UID = 33291
LOOP = """
import os, sys, time
path, seconds = sys.argv[1], float(sys.argv[2])
n, end = 0, time.perf_counter() + seconds
while time.perf_counter() < end:
    for _ in range(100):
        fd = os.open(path, os.O_RDONLY)
        os.read(fd, 4096)
        os.close(fd)
    n += 100
print(n / seconds)
"""
IDENT = [f"--reuid={READER_UID}", f"--regid={READER_UID}", "--clear-groups"]
MODES = ("unwatched", "notification", "permission", "kernel_floor", "file_marks", "file_marks_floor")
WATCHED = ("notification", "permission", "file_marks")


def reads_per_second(path: str, seconds: float) -> tuple[float, float]:
    """Reads/s of the loop, and its CPU time (user + system) in µs per open."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    done = subprocess.run(
        ["setpriv", *IDENT, sys.executable, "-c", LOOP, path, str(seconds)], capture_output=True, text=True, check=True
    )
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    rate = float(done.stdout)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return rate, cpu / (rate * seconds) * 1e6


class Watch:
    """One mode's watcher on ``folder``: started by the constructor, ended by :meth:`close`."""

    def __init__(self, mode: str, folder: Path, settle: float) -> None:
        self.opens: FanotifyOpens | None = None
        self.floor: Fanotify | None = None
        if mode in WATCHED:
            self.opens = FanotifyOpens(
                NameCache(),
                source="bench",
                settle_seconds=settle,
                permission=mode == "permission",
                mark_files=mode == "file_marks",
            )
            self.opens.watch(str(folder))
        elif mode == "kernel_floor":
            self.floor = Fanotify(dir_names=False)  # the group FanotifyOpens opens, marked the same way
            self.floor.mark(str(folder), OPEN_MASK)
        elif mode == "file_marks_floor":
            self.floor = Fanotify(dir_names=False)
            self.floor.mark(str(folder), OWN_OPEN_MASK)
            for name in os.listdir(folder):
                self.floor.mark(str(folder / name), OWN_OPEN_MASK)

    def records(self) -> int:
        return 0 if self.opens is None else len(self.opens.take())

    def close(self) -> None:
        if self.opens is not None:
            self.opens.close()
        if self.floor is not None:
            self.floor.close()


def named_readers(mode: str, folder: Path, target: Path, readers: int, settle: float) -> tuple[int, int]:
    """(named, records) of ``readers`` sequential ``cat``s of ``target`` while ``mode`` watches."""
    watch = Watch(mode, folder, settle)
    assert watch.opens is not None
    found = []
    try:
        for _ in range(readers):
            subprocess.run(["setpriv", *IDENT, "cat", str(target)], stdout=subprocess.DEVNULL, check=True)
        time.sleep(0.5)  # let the reader thread drain what is queued
        found = [e for e in watch.opens.take() if e.path == str(target)]
    finally:
        watch.close()
    return sum(1 for e in found if e.actor.uid is not None), len(found)


def measure(
    rounds: int, seconds: float, settle: float, folder: Path, target: Path, say: Callable[[str], None]
) -> tuple[dict[str, list[float]], dict[str, list[float]], dict[str, list[float]]]:
    """Per mode and round: reads/s, the reader's CPU per open, the watcher's (this process: its threads), in µs."""
    rates: dict[str, list[float]] = {mode: [] for mode in MODES}
    reader_us: dict[str, list[float]] = {mode: [] for mode in MODES}
    cpu_us: dict[str, list[float]] = {mode: [] for mode in MODES}
    for round_ in range(rounds):
        order = MODES[round_ % len(MODES) :] + MODES[: round_ % len(MODES)]
        for mode in order:
            watch = Watch(mode, folder, settle)
            try:
                cpu_before = time.process_time()
                rate, reader_cpu = reads_per_second(str(target), seconds)
                rates[mode].append(rate)
                reader_us[mode].append(reader_cpu)
                time.sleep(0.3)  # let the reader thread drain what the loop queued
                watch.records()
                cpu_us[mode].append((time.process_time() - cpu_before) / (rates[mode][-1] * seconds) * 1e6)
            finally:
                watch.close()
        say(f"round {round_ + 1}: " + ", ".join(f"{mode} {rates[mode][-1]:,.0f}/s" for mode in MODES))
    return rates, reader_us, cpu_us


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--seconds", type=float, default=2.0)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--readers", type=int, default=200, help="short-lived cat readers per watched mode")
    parser.add_argument("--settle", type=float, default=SETTLE_SECONDS, help="the reader's pause after a batch")
    args = parser.parse_args()
    with traversable_tempdir("permwatch-bench-opens-") as base:
        folder = base / "ledning"
        folder.mkdir()
        os.chmod(folder, 0o755)
        target = folder / "protokoll.txt"
        target.write_bytes(b"x" * 4096)
        os.chmod(target, 0o644)
        rates, reader_us, cpu_us = measure(args.rounds, args.seconds, args.settle, folder, target, print)
        named = {mode: named_readers(mode, folder, target, args.readers, args.settle) for mode in WATCHED}
    ratios = {
        mode: statistics.median(w / u for w, u in zip(rates[mode], rates["unwatched"], strict=True))
        for mode in MODES[1:]
    }
    cpu_ratios = {
        mode: statistics.median(u / w for w, u in zip(reader_us[mode], reader_us["unwatched"], strict=True))
        for mode in MODES[1:]
    }
    for mode in MODES:
        spread = ", ".join(f"{r:,.0f}" for r in rates[mode])
        ratio = "" if mode == "unwatched" else f"; ratio {ratios[mode]:.3f}, CPU ratio {cpu_ratios[mode]:.3f}"
        cpu = (
            f"reader CPU {statistics.median(reader_us[mode]):.2f} µs/open, "
            f"watcher CPU {statistics.median(cpu_us[mode]):.2f} µs/open"
        )
        print(f"{mode:13s} {spread} reads/s (median {statistics.median(rates[mode]):,.0f}{ratio}; {cpu})")
    for mode, (ok, records) in named.items():
        print(f"{mode:13s} named {ok} of {args.readers} short-lived cat readers ({records} access records)")
    met = ratios["notification"] >= 0.9
    print(f"notification ratio {ratios['notification']:.3f} (target >= 0.9: {'met' if met else 'NOT met'})")
    print(
        json.dumps(
            {
                "bench": "opens",
                "unwatched_reads_per_s": round(statistics.median(rates["unwatched"])),
                "watched_reads_per_s": round(statistics.median(rates["notification"])),
                "permission_reads_per_s": round(statistics.median(rates["permission"])),
                "kernel_floor_reads_per_s": round(statistics.median(rates["kernel_floor"])),
                "ratio": round(ratios["notification"], 3),
                "permission_ratio": round(ratios["permission"], 3),
                "kernel_floor_ratio": round(ratios["kernel_floor"], 3),
                "file_marks_ratio": round(ratios["file_marks"], 3),
                "file_marks_floor_ratio": round(ratios["file_marks_floor"], 3),
                "cpu_ratio": {mode: round(value, 3) for mode, value in cpu_ratios.items()},
                "reader_cpu_us_per_open": {mode: round(statistics.median(reader_us[mode]), 2) for mode in MODES},
                "target": 0.9,
                "met": met,
                "readers": args.readers,
                "named_notification": named["notification"][0],
                "named_permission": named["permission"][0],
                "named_file_marks": named["file_marks"][0],
                "rounds": args.rounds,
                "seconds": args.seconds,
                "settle_seconds": args.settle,
                "watcher_cpu_us_per_open": {mode: round(statistics.median(cpu_us[mode]), 2) for mode in MODES},
            }
        )
    )


if __name__ == "__main__":
    main()
