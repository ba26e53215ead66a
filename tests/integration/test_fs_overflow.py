"""The filesystem collector never silently misses: real inotify overflow and watch-limit exhaustion.

These tests lower kernel limits (``/proc/sys/fs/inotify``), so they need root.
Each limit is lowered only while the collector creates its inotify instance
or adds its watches, and restored in a ``finally`` right after, because the
sysctls are shared by every process of the machine.
"""

from __future__ import annotations

import logging
import os
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from collectors.fs import FsCollector
from collectors.fs.settings import FsCollectorConfig
from permwatch.events import Event, FsKind, FsPermissionEvent, ScanCompleted

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(os.geteuid() != 0, reason="lowers /proc/sys/fs/inotify limits: needs root"),
]

INOTIFY = Path("/proc/sys/fs/inotify")


class ListEmitter:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._events: list[Event] = []

    def emit(self, event: Event) -> None:
        with self._lock:
            self._events.append(event)

    def flush(self) -> None:
        pass

    @property
    def events(self) -> list[Event]:
        with self._lock:
            return list(self._events)

    def last_modes(self) -> dict[str, int | None]:
        return {e.path: e.mode for e in self.events if isinstance(e, FsPermissionEvent)}

    def scans(self, reason: str) -> list[ScanCompleted]:
        return [e for e in self.events if isinstance(e, ScanCompleted) and e.reason == reason]


def wait_for(condition: Callable[[], object], *, what: str, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(0.05)


@contextmanager
def lowered(limit: str, value: int) -> Iterator[None]:
    path = INOTIFY / limit
    original = path.read_text()
    path.write_text(str(value))
    try:
        yield
    finally:
        path.write_text(original)


def start(collector: FsCollector, stop: threading.Event, failures: list[BaseException]) -> threading.Thread:
    def run() -> None:
        try:
            collector.run(stop)
        except BaseException as exc:
            failures.append(exc)

    thread = threading.Thread(target=run, name="fs-collector")
    thread.start()
    return thread


def test_a_queue_overflow_is_detected_and_the_rescan_delivers_every_final_state(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    root = tmp_path / "root"
    files = []
    for d in range(12):
        (root / f"d{d}").mkdir(parents=True)
        for i in range(100):
            path = root / f"d{d}" / f"f{i}"
            path.write_text("x")
            path.chmod(0o644)
            files.append(path)
    final = {str(p): (0o640 if n % 2 else 0o600) for n, p in enumerate(files)}

    emitter = ListEmitter()
    stop, failures = threading.Event(), list[BaseException]()
    config = FsCollectorConfig(collector_id="fs-overflow", roots=[root])
    with FsCollector(config, emitter) as collector, caplog.at_level(logging.WARNING, logger="collectors.fs"):
        with lowered("max_queued_events", 64):  # read once, when the collector's inotify instance is made
            thread = start(collector, stop, failures)
            wait_for(lambda: emitter.scans("baseline") or failures, what="the baseline")
        try:
            # 1200 distinct files, so the kernel cannot merge the events into a few, changed by chmod(1):
            # a loop of os.chmod in this process shares the GIL with the collector's reader, which on two
            # busy cores could keep the queue below its limit (seen once in CI); chmod(1) outruns any reader.
            subprocess.run(["chmod", "600", *map(str, files)], check=True)
            subprocess.run(["chmod", "640", *map(str, files[1::2])], check=True)
            wait_for(
                lambda: all(emitter.last_modes().get(path) == mode for path, mode in final.items()),
                what="the final mode of every file",
            )
        finally:
            stop.set()
            thread.join(timeout=30)
        assert not failures, failures
        assert collector.stats.overflows >= 1
    assert [r.getMessage() for r in caplog.records if "inotify queue overflowed" in r.getMessage()]
    rescans = emitter.scans("overflow")
    assert rescans and all(scan.source == "fs-overflow" for scan in rescans)
    changed = [e for e in emitter.events if isinstance(e, FsPermissionEvent) and e.kind is not FsKind.BASELINE]
    assert {e.kind for e in changed} == {FsKind.CHANGED}
    # Differences only: nothing is published more often than it changed (twice at most per file).
    per_path: dict[str, int] = {}
    for event in changed:
        per_path[event.path] = per_path.get(event.path, 0) + 1
    assert max(per_path.values()) <= 2


def used_inotify_watches() -> int:
    """Watches held by all processes now (all of them run as root here)."""
    count = 0
    for fdinfo in Path("/proc").glob("[0-9]*/fdinfo/*"):
        try:
            count += fdinfo.read_text().count("inotify wd:")
        except OSError:
            continue  # the process or descriptor went away meanwhile
    return count


def test_hitting_the_watch_limit_degrades_to_rescans_until_watches_fit_again(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    root = tmp_path / "root"
    for d in range(20):
        (root / f"d{d:02}").mkdir(parents=True)
    late = root / "d19" / "late"

    emitter = ListEmitter()
    stop, failures = threading.Event(), list[BaseException]()
    config = FsCollectorConfig(collector_id="fs-limit", roots=[root])
    ancestors = len(root.parts) - 1
    collector = FsCollector(config, emitter, degraded_rescan_seconds=0.5)
    with collector, caplog.at_level(logging.INFO, logger="collectors.fs"):
        # Room for the ancestors, the root and three of its twenty directories.
        with lowered("max_user_watches", used_inotify_watches() + ancestors + 4):
            thread = start(collector, stop, failures)
            wait_for(lambda: emitter.scans("baseline") or failures, what="the baseline")
        try:
            assert collector.stats.watch_limit_hits >= 1
            warnings = [r.getMessage() for r in caplog.records if "watch limit reached" in r.getMessage()]
            assert len(warnings) == 1, warnings  # one line, not one per directory
            late.mkdir()  # maybe in an unwatched directory: a periodic rescan must find it
            wait_for(lambda: late.as_posix() in emitter.last_modes(), what="the directory made in d19")
            wait_for(
                lambda: any("fully watched again" in r.getMessage() for r in caplog.records),
                what="watches to be retried once the limit allows",
            )
            os.chmod(root / "d18", 0o700)
            wait_for(lambda: emitter.last_modes().get(str(root / "d18")) == 0o700, what="chmod seen by inotify")
        finally:
            stop.set()
            thread.join(timeout=30)
        assert not failures, failures
    assert emitter.scans("overflow")
