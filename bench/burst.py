"""The IT-update burst: a recursive setfacl over 100,000 folders under 50 labelled folders, judged end to end.

Builds the share on real files, runs the collector and processor as
``permwatch run`` processes on a real Kafka broker (the default kafka-python
transport), waits for the baseline, then runs ``setfacl -R -m g:alla:rX``
over the case folders (the kernel's default inotify queue overflows within a
fraction of a second). Prints the time from the end of the burst (setfacl
returning) to the last exposure event, the number of inotify overflows and
rescans (the collector may keep up and overflow never: the bench finishes either way and says which),
and as its last line one JSON object. Target ≤ 10 s. With ``--max-queued-events N`` the kernel's inotify
queue is set to N while the collector starts (it is read then) and put back afterwards: a low N (1024) takes
the overflow path, a high one (1000000) the live path, where the collector reads a burst's changes together
once it goes quiet (issue 21; the JSON says how many such coalesced reads there were).

    .venv/bin/python bench/burst.py [--folders 100000 --labelled 50] [--max-queued-events N]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import subprocess
import time

from _rig import kafka_broker, traversable_tempdir  # also puts the repository on sys.path

from tests.integration.burst_share import DIRECTORY, STAFF, build, inotify_limit
from tests.integration.pipeline import Pipeline, wait_until


def fs_settled(pipe: Pipeline, *, quiet_seconds: float, timeout: float) -> float:
    """When the fs topic last grew, once it has not grown for ``quiet_seconds`` (whether or not inotify overflowed:
    a collector that kept up publishes every change live and no rescan ever comes)."""
    deadline = time.perf_counter() + timeout
    count, grew = len(pipe.fs_events()), time.perf_counter()
    while time.perf_counter() - grew < quiet_seconds:
        if time.perf_counter() > deadline:
            raise AssertionError(f"the fs topic still growing after {timeout:.0f} s")
        time.sleep(0.2)
        now = len(pipe.fs_events())
        if now != count:
            count, grew = now, time.perf_counter()
    return grew


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--folders", type=int, default=100_000)
    parser.add_argument("--labelled", type=int, default=50)
    parser.add_argument("--max-queued-events", type=int, default=None, help="inotify queue while the collector starts")
    args = parser.parse_args()
    per_folder = args.folders // args.labelled

    with kafka_broker() as broker, traversable_tempdir("permwatch-bench-burst-") as base:
        share = base / "share"
        started = time.perf_counter()
        cases, _ = build(share, labelled=args.labelled, untouched=0, subfolders=per_folder)
        print(f"built {args.labelled * per_folder:,} folders under {args.labelled} labelled folders "
              f"in {time.perf_counter() - started:.1f} s")  # fmt: skip
        workdir = base / "run"
        workdir.mkdir()
        pipe = Pipeline(workdir, broker.bootstrap, "burst.", share=share)
        pipe.directory_path.write_text(DIRECTORY)
        pipe.write_config(
            f'[labels.definitions.case]\nallowed_groups = ["ledningsgrupp"]\n'
            f'[[labels.rules]]\nglob = "{share}/cases/case-*"\nlabel = "case"\n'
        )
        pipe.start("processor")
        queue = args.max_queued_events
        limit = contextlib.nullcontext() if queue is None else inotify_limit("max_queued_events", queue)
        try:
            started = time.perf_counter()
            with limit:  # the kernel reads it when the collector makes its inotify instance, before the baseline
                pipe.start("collector")
                wait_until(lambda: any(e["type"] == "fs.scan_completed" for e in pipe.fs_events()), "baseline", 1800)
            pipe.wait_quiet()
            print(f"baseline published and judged in {time.perf_counter() - started:.1f} s")
            burst_started = time.perf_counter()
            subprocess.run(["setfacl", "-R", "-m", f"g:{STAFF}:rX", str(share / "cases")], check=True)
            burst_end = time.perf_counter()
            wanted = {str(c) for c in cases}
            wait_until(
                lambda: {e["folder"] for e in pipe.exposures() if e["status"] == "opened"} >= wanted,
                "every labelled folder exposed",
                timeout=1800,
            )
            pipe.wait_quiet()
            last_exposure = time.perf_counter()

            def rescans() -> list[dict[str, object]]:
                return [e for e in pipe.fs_events() if e["type"] == "fs.scan_completed" and e["reason"] == "overflow"]

            # every path's new state (not only the labelled folders') published and judged: through the overflow
            # rescan when inotify overflowed, else live; either way the fs topic stops growing
            rescanned = fs_settled(pipe, quiet_seconds=3.0, timeout=1800)
            pipe.wait_quiet()
            scans = rescans()
            overflows = pipe.log("collector").count("inotify queue overflowed: events were lost")
            coalesced = pipe.log("collector").count("changed paths together")
        finally:
            pipe.stop()

    seconds = last_exposure - burst_end
    print(f"setfacl -R took {burst_end - burst_started:.1f} s; inotify overflows: {overflows}, "
          f"rescans: {len(scans)}, coalesced reads: {coalesced}, "
          f"every change published {rescanned - burst_end:.1f} s after the burst")  # fmt: skip
    verdict = "met" if seconds <= 10 else "NOT met"
    print(f"end of burst → last exposure event: {seconds:.1f} s for {len(wanted)} labelled folders "
          f"({args.labelled * per_folder:,} folders); target ≤ 10 s: {verdict}")  # fmt: skip
    print(json.dumps({"seconds": round(seconds, 2), "folders": args.labelled * per_folder,
                      "labelled": args.labelled, "overflowed": overflows > 0, "overflow_rescans": len(scans),
                      "rescan_judged_seconds": round(rescanned - burst_end, 2), "coalesced_reads": coalesced,
                      "max_queued_events": queue}))  # fmt: skip


if __name__ == "__main__":
    main()
