"""The cost of watching opens: reads/s of a tight open/read/close loop on a labelled folder, unwatched and watched.

A reader process (another uid, as a user's would be) opens, reads 4 KiB of and closes one file in a labelled
folder as fast as it can, for ``--seconds``. Each round measures it unwatched and watched (the collector's own
:class:`collectors.fs.opens.FanotifyOpens` on the folder: fanotify notification marks, a thread that reads
every event as it comes and identifies its process), back to back in alternating order, so both see the same
machine; the figure is the median of the rounds' own ratios (watched / unwatched). Target ≥ 0.9 in
notification mode. Needs root (CAP_SYS_ADMIN). The last line is one JSON object.

    .venv/bin/python bench/opens.py [--seconds 2 --rounds 5]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time

from _rig import traversable_tempdir  # also puts the repository on sys.path

from collectors.acl import NameCache
from collectors.fs.opens import SETTLE_SECONDS, FanotifyOpens

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


def reads_per_second(path: str, seconds: float) -> float:
    ident = [f"--reuid={READER_UID}", f"--regid={READER_UID}", "--clear-groups"]
    done = subprocess.run(
        ["setpriv", *ident, sys.executable, "-c", LOOP, path, str(seconds)], capture_output=True, text=True, check=True
    )
    return float(done.stdout)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--seconds", type=float, default=2.0)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--settle", type=float, default=SETTLE_SECONDS, help="the reader's pause after a batch")
    args = parser.parse_args()
    with traversable_tempdir("permwatch-bench-opens-") as base:
        folder = base / "ledning"
        folder.mkdir()
        os.chmod(folder, 0o755)
        target = folder / "protokoll.txt"
        target.write_bytes(b"x" * 4096)
        os.chmod(target, 0o644)
        unwatched: list[float] = []
        watched: list[float] = []
        recorded = 0
        for round_ in range(args.rounds):
            # each round measures both, in alternating order, so load that drifts (a shared machine) cancels
            if round_ % 2 == 0:
                unwatched.append(reads_per_second(str(target), args.seconds))
            opens = FanotifyOpens(NameCache(), source="bench", settle_seconds=args.settle)
            try:
                opens.watch(str(folder))
                watched.append(reads_per_second(str(target), args.seconds))
                time.sleep(0.3)  # let the reader thread drain what the loop queued
                recorded += len(opens.take())
            finally:
                opens.close()
            if round_ % 2 == 1:
                unwatched.append(reads_per_second(str(target), args.seconds))
    base_rate, watched_rate = statistics.median(unwatched), statistics.median(watched)
    ratio = statistics.median(w / u for w, u in zip(watched, unwatched, strict=True))
    print(f"unwatched: {', '.join(f'{r:,.0f}' for r in unwatched)} reads/s (median {base_rate:,.0f})")
    print(f"watched:   {', '.join(f'{r:,.0f}' for r in watched)} reads/s (median {watched_rate:,.0f})")
    verdict = "met" if ratio >= 0.9 else "NOT met"
    print(f"ratio, median of the rounds' own {ratio:.3f} (target >= 0.9: {verdict}); access records: {recorded}")
    print(
        json.dumps(
            {
                "bench": "opens",
                "unwatched_reads_per_s": round(base_rate),
                "watched_reads_per_s": round(watched_rate),
                "ratio": round(ratio, 3),
                "target": 0.9,
                "met": ratio >= 0.9,
                "access_records": recorded,
                "rounds": args.rounds,
                "seconds": args.seconds,
                "settle_seconds": args.settle,
            }
        )
    )


if __name__ == "__main__":
    main()
