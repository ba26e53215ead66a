"""First scan: the filesystem collector's baseline of 1,000,000 folders with ACLs, against ``getfacl -R``.

Builds a share on real files: ``--folders`` leaf folders spread over top
folders of ``--per-top`` each (1,000 × 1,000 by default), every top folder
owned by one of eight local groups with mode 0750. A tenth of the top folders
are shared folders whose whole subtree carries named-group access ACLs, a
mask and default ACLs; another fifth carry named-group access ACLs on their
whole subtree; in the rest one leaf in fifty has a named-group ACL. The ACLs
are set by the real ``setfacl`` (``-R`` on many subtrees per call, or many
paths per call); the build is timed on its own.

Caches cannot be dropped here, so every walk runs twice on a warm cache and
the faster run is reported (both are printed). Measured in the same run:

1. the baselines: ``find <root> -type d | wc -l`` (for scale) and
   ``getfacl -R -p <root> > /dev/null``, a walk reading every ACL in C;
2. the collector's first scan (``collectors.fs.FsCollector``, ``watch =
   false``, ``scan_workers`` = one per core, a fresh state file) into an emitter that only encodes each event as
   a bus would (``permwatch.events.encode``): from start to the
   ``ScanCompleted`` event;
3. the same scan into the default transport, the embedded log
   (``EmbeddedBus`` through ``collectors.runner.BusEmitter``): from start to
   the ``ScanCompleted`` event flushed to the log.

Prints folders/s for each and the ratio to ``getfacl -R``; targets: ≤ 60 s and
≤ 1× ``getfacl -R``. The last line is one JSON object. The tree needs about
5 KB of disk per folder; the script checks before it builds and removes
everything afterwards, also when it fails or is interrupted (SIGINT, SIGTERM).

    .venv/bin/python bench/baseline_scan.py [--folders 1000000 --per-top 1000]
"""

from __future__ import annotations

import argparse
import contextlib
import grp
import json
import os
import shlex
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import FrameType

from _rig import traversable_tempdir  # also puts the repository on sys.path
from prometheus_client import CollectorRegistry

from collectors.fs import FsCollector
from collectors.fs.settings import FsCollectorConfig
from collectors.runner import BusEmitter
from permwatch.events import Event, ScanCompleted, decode, encode, unbatched
from permwatch.keys import FsKeys
from permwatch.metrics import Metrics
from permwatch.transport.embedded import EmbeddedBus

# Groups every Debian system has (base-passwd), so getfacl and the collector both resolve names.
SCAN_WORKERS = os.cpu_count() or 2
"""``[[fs]] scan_workers``: the first scan reads the tree in one process per core beside the collector."""
GROUPS = ("staff", "users", "audio", "video", "plugdev", "backup", "operator", "src")
BYTES_PER_FOLDER = 5 * 1024  # an ext4 directory block, plus the state file and one copy of the event log
PATHS_PER_CALL = 500  # paths per setfacl call: far below ARG_MAX
TARGET_SECONDS = 60.0
TARGET_RATIO = 1.0


# ------------------------------------------------------------------ the share


@dataclass(frozen=True, slots=True)
class Share:
    root: Path
    tops: int
    with_default_acl: int
    """Folders carrying a default ACL as well as an access ACL."""
    with_access_acl: int


def check_space(base: Path, folders: int) -> None:
    fs = os.statvfs(base)
    free_bytes, free_inodes = fs.f_bavail * fs.f_frsize, fs.f_favail
    need_bytes, need_inodes = folders * BYTES_PER_FOLDER, folders * 11 // 10
    if free_bytes < need_bytes or free_inodes < need_inodes:
        sys.exit(
            f"not enough room under {base}: {free_bytes / 1e9:.1f} GB and {free_inodes:,} inodes free, "
            f"{folders:,} folders need about {need_bytes / 1e9:.1f} GB and {need_inodes:,} inodes"
        )


def setfacl_batched(options: Sequence[str], paths: Iterable[Path]) -> None:
    batch: list[str] = []
    for path in paths:
        batch.append(str(path))
        if len(batch) == PATHS_PER_CALL:
            subprocess.run(["setfacl", *options, *batch], check=True)
            batch = []
    if batch:
        subprocess.run(["setfacl", *options, *batch], check=True)


def build(root: Path, folders: int, per_top: int) -> Share:
    """Make the tree; see the module docstring for its shape."""
    gids = {name: grp.getgrnam(name).gr_gid for name in GROUPS}
    root.mkdir()
    os.chmod(root, 0o755)
    tops = -(-folders // per_top)
    shared: dict[str, list[Path]] = {name: [] for name in GROUPS}
    restricted: dict[str, list[Path]] = {name: [] for name in GROUPS}
    scattered: dict[str, list[Path]] = {name: [] for name in GROUPS}
    with_default = with_access = 0
    old_umask = os.umask(0o022)
    try:
        for t in range(tops):
            group = GROUPS[t % len(GROUPS)]
            top = root / f"dept-{t:04d}"
            os.mkdir(top, 0o750)
            os.chown(top, 0, gids[group])
            leaves = min(per_top, folders - t * per_top)
            top_text = str(top)
            for j in range(leaves):
                os.mkdir(f"{top_text}/case-{j:04d}", 0o750)
            if t % 10 == 0:
                shared[group].append(top)
                with_default += leaves + 1
            elif t % 10 in (1, 2):
                restricted[group].append(top)
                with_access += leaves + 1
            else:
                picked = [top / f"case-{j:04d}" for j in range(0, leaves, 50)]
                scattered[GROUPS[(t + 3) % len(GROUPS)]].extend(picked)
                with_access += len(picked)
    finally:
        os.umask(old_umask)
    for group, paths in shared.items():
        other = GROUPS[(GROUPS.index(group) + 1) % len(GROUPS)]
        entries = f"g:{group}:rwx,g:{other}:r-x,m::rwx"
        defaults = f"d:u::rwx,d:g::r-x,d:g:{group}:rwx,d:g:{other}:r-x,d:m::rwx,d:o::---"
        setfacl_batched(["-R", "-m", f"{entries},{defaults}"], paths)
    for group, paths in restricted.items():
        setfacl_batched(["-R", "-m", f"g:{group}:r-x,m::r-x"], paths)
    for group, paths in scattered.items():
        setfacl_batched(["-m", f"g:{group}:rwx,m::rwx"], paths)
    return Share(root, tops, with_default, with_access + with_default)


# --------------------------------------------------------------------- walks


def disk_read_bytes() -> int:
    """Bytes this process and its reaped children made the kernel read from disk (not from the page cache)."""
    for line in Path("/proc/self/io").read_text().splitlines():
        if line.startswith("read_bytes:"):
            return int(line.split()[1])
    raise RuntimeError("no read_bytes in /proc/self/io")


@dataclass(frozen=True, slots=True)
class Walk:
    seconds: float
    read_bytes: int
    """What the walk read from disk: directory and inode blocks the page cache no longer held."""


def runs_text(walks: Sequence[Walk]) -> str:
    return ", ".join(f"{w.seconds:.2f} s / {w.read_bytes / 1e6:,.0f} MB read from disk" for w in walks)


def fastest(walks: Sequence[Walk]) -> Walk:
    return min(walks, key=lambda w: w.seconds)


def timed_command(command: Sequence[str]) -> Walk:
    read_before, started = disk_read_bytes(), time.perf_counter()
    subprocess.run(command, stdout=subprocess.DEVNULL, check=True)
    return Walk(time.perf_counter() - started, disk_read_bytes() - read_before)


def count_directories(root: Path) -> tuple[int, Walk]:
    read_before, started = disk_read_bytes(), time.perf_counter()
    out = subprocess.run(
        ["bash", "-c", f"find {shlex.quote(str(root))} -type d | wc -l"], capture_output=True, text=True, check=True
    )
    return int(out.stdout), Walk(time.perf_counter() - started, disk_read_bytes() - read_before)


class CountingEmitter:
    """Encodes every event as a bus would, counts them and notes when the scan completed."""

    def __init__(self) -> None:
        self.events = 0
        self.bytes = 0
        self.types: Counter[str] = Counter()
        self.completed: ScanCompleted | None = None
        self.completed_at: float | None = None

    def emit(self, event: Event) -> None:
        self.bytes += len(encode(event))
        self.events += 1
        self.types[type(event).__name__] += 1
        if isinstance(event, ScanCompleted):
            self.completed, self.completed_at = event, time.perf_counter()

    def emit_wire(self, path: str, value: bytes, source: str) -> None:
        self.bytes += len(value)
        self.events += 1
        self.types["FsPermissionEvent"] += 1

    def flush(self) -> None:
        pass


class TimedBusEmitter(BusEmitter):
    """The runner's emitter (batching like a running collector's), noting when the flush that carried
    ``ScanCompleted`` to the log returned."""

    def __init__(self, bus: EmbeddedBus, metrics: Metrics, router: FsKeys) -> None:
        super().__init__(bus, metrics, router=router, batch=True)
        self.events = 0
        self.completed: ScanCompleted | None = None
        self.completed_at: float | None = None

    def emit(self, event: Event) -> None:
        super().emit(event)
        self.events += 1
        if isinstance(event, ScanCompleted):
            self.completed = event

    def emit_wire(self, path: str, value: bytes, source: str) -> None:
        super().emit_wire(path, value, source)
        self.events += 1

    def flush(self) -> None:
        super().flush()
        if self.completed is not None and self.completed_at is None:
            self.completed_at = time.perf_counter()


def remove_sqlite(path: Path) -> None:
    for suffix in ("", "-wal", "-shm"):
        Path(f"{path}{suffix}").unlink(missing_ok=True)


def scan(root: Path, workdir: Path, emitter: CountingEmitter | TimedBusEmitter, metrics: Metrics) -> Walk:
    """One first scan with a fresh state file, timed from start to ``ScanCompleted`` (emitted or flushed)."""
    state = workdir / "fs-state.db"
    remove_sqlite(state)
    read_before, started = disk_read_bytes(), time.perf_counter()
    config = FsCollectorConfig(roots=[root], watch=False, scan_workers=SCAN_WORKERS)
    with FsCollector(config, emitter, state_path=state, metrics=metrics) as collector:
        collector.run(threading.Event())
    read = disk_read_bytes() - read_before
    remove_sqlite(state)
    if emitter.completed is None or emitter.completed_at is None:
        raise RuntimeError("the scan ended without a ScanCompleted event")
    return Walk(emitter.completed_at - started, read)


def scan_counting(root: Path, workdir: Path) -> tuple[Walk, CountingEmitter]:
    emitter = CountingEmitter()
    return scan(root, workdir, emitter, Metrics.create(CollectorRegistry())), emitter


def scan_into_bus(root: Path, workdir: Path) -> tuple[Walk, int]:
    """The scan into a fresh embedded log; also the number of events the log holds afterwards."""
    path = workdir / "bus.db"
    remove_sqlite(path)
    bus = EmbeddedBus(path)
    metrics = Metrics.create(CollectorRegistry())
    emitter = TimedBusEmitter(bus, metrics, FsKeys([root]))
    try:
        walk = scan(root, workdir, emitter, metrics)
    finally:
        bus.close()
    with contextlib.closing(sqlite3.connect(path)) as log:
        records = log.execute("SELECT count(*) FROM log").fetchone()[0]
        events = sum(1 for (value,) in log.execute("SELECT value FROM log") for _ in unbatched(decode(value)))
    if events != emitter.events:
        raise RuntimeError(f"the log holds {events:,} events, the collector emitted {emitter.events:,}")
    print(f"  the log holds {events:,} events in {records:,} records (permission events batched per unit)")
    remove_sqlite(path)
    return walk, events


# ---------------------------------------------------------------------- main


def _interrupted(signum: int, frame: FrameType | None) -> None:
    raise SystemExit(128 + signum)  # unwinds through the clean-up of the temporary share


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--folders", type=int, default=1_000_000)
    parser.add_argument("--per-top", type=int, default=1_000, help="leaf folders per top folder")
    parser.add_argument("--runs", type=int, default=2, help="runs of each walk; the fastest is reported")
    args = parser.parse_args()
    signal.signal(signal.SIGTERM, _interrupted)

    with traversable_tempdir("permwatch-bench-scan-") as base:
        check_space(base, args.folders)
        started = time.perf_counter()
        share = build(base / "share", args.folders, args.per_top)
        built = time.perf_counter() - started
        os.sync()  # so writeback of the build does not run during the walks
        synced = time.perf_counter() - started - built
        print(f"built {args.folders:,} folders under {share.tops:,} top folders in {built:.1f} s "
              f"(then sync {synced:.1f} s): {share.with_access_acl:,} with extended access ACLs, "
              f"{share.with_default_acl:,} of them with default ACLs too")  # fmt: skip
        workdir = base / "run"
        workdir.mkdir()

        directories, warming = count_directories(share.root)
        finds = [count_directories(share.root)[1] for _ in range(args.runs)]
        print(f"find -type d | wc -l: {directories:,} directories, {fastest(finds).seconds:.2f} s "
              f"(runs {runs_text(finds)}; a first, cache-warming run {warming.seconds:.2f} s)")  # fmt: skip
        getfacls = [timed_command(["getfacl", "-R", "-p", str(share.root)]) for _ in range(args.runs)]
        getfacl = fastest(getfacls)
        print(f"getfacl -R -p > /dev/null: {getfacl.seconds:.2f} s, {directories / getfacl.seconds:,.0f} folders/s "
              f"(runs {runs_text(getfacls)})")  # fmt: skip

        countings = []
        for _ in range(args.runs):
            walk, emitter = scan_counting(share.root, workdir)
            countings.append(walk)
        counting = fastest(countings)
        types = ", ".join(f"{n:,} {t}" for t, n in emitter.types.most_common())
        print(f"collector first scan, events encoded only: {counting.seconds:.2f} s, "
              f"{directories / counting.seconds:,.0f} folders/s, {counting.seconds / getfacl.seconds:.1f}× getfacl -R "
              f"(runs {runs_text(countings)}; {types}, "
              f"{emitter.bytes / emitter.events:.0f} bytes per event)")  # fmt: skip

        into_bus = [scan_into_bus(share.root, workdir) for _ in range(args.runs)]
        bus = fastest([walk for walk, _ in into_bus])
        records = into_bus[0][1]
        print(f"collector first scan into the embedded log: {bus.seconds:.2f} s, "
              f"{directories / bus.seconds:,.0f} folders/s, {bus.seconds / getfacl.seconds:.1f}× getfacl -R "
              f"(runs {runs_text([walk for walk, _ in into_bus])}; {records:,} events in the log)")  # fmt: skip
        print("removing the share …")

    for name, walk in (("events encoded only", counting), ("into the embedded log", bus)):
        ratio = walk.seconds / getfacl.seconds
        verdicts = [
            f"≤ {TARGET_SECONDS:.0f} s {'met' if walk.seconds <= TARGET_SECONDS else 'NOT met'}",
            f"≤ {TARGET_RATIO:.0f}× getfacl -R {'met' if ratio <= TARGET_RATIO else 'NOT met'}",
        ]
        print(f"{name}: {walk.seconds:.1f} s for {directories:,} folders, {ratio:.1f}× getfacl -R "
              f"(fastest of {args.runs} runs after the build and a find); targets: {'; '.join(verdicts)}")  # fmt: skip
    print(json.dumps({"folders": args.folders, "directories": directories, "build_seconds": round(built, 1),
                      "find_seconds": round(fastest(finds).seconds, 2), "getfacl_seconds": round(getfacl.seconds, 2),
                      "scan_seconds": round(counting.seconds, 2), "scan_bus_seconds": round(bus.seconds, 2),
                      "ratio": round(counting.seconds / getfacl.seconds, 2),
                      "ratio_bus": round(bus.seconds / getfacl.seconds, 2), "events": records,
                      "getfacl_read_mb": round(getfacl.read_bytes / 1e6),
                      "scan_read_mb": round(counting.read_bytes / 1e6),
                      "scan_bus_read_mb": round(bus.read_bytes / 1e6)}))  # fmt: skip


if __name__ == "__main__":
    main()
