"""The watch adapter's hold on watchdog's private internals (collectors/fs/watch.py).

watchdog gives no public way to hear of a queue overflow or a refused watch, nor
to top up a tree's watches without tearing them down, so the adapter leans on
a few private names. These tests fail, loudly and by name, when a watchdog
upgrade removes one, rather than the collector silently missing overflows.
"""

from __future__ import annotations

import dataclasses
import os
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from watchdog.events import FileSystemEvent
from watchdog.observers import inotify, inotify_c

from collectors.fs.watch import WATCHDOG_INTERNALS, PermissionWatcher, TroubleKind

OWNERS = {
    "InotifyFD": inotify_c.InotifyFD,
    "Watch": inotify_c.Watch,
    "InotifyEmitter": inotify.InotifyEmitter,
    "InotifyWatchGroup": inotify.InotifyWatchGroup,
}


class Recorder:
    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.events: list[FileSystemEvent] = []
        self.troubles: list[tuple[TroubleKind, str | None]] = []

    def deliver(self, event: FileSystemEvent) -> None:
        with self.lock:
            self.events.append(event)

    def report(self, kind: TroubleKind, path: str | None) -> None:
        with self.lock:
            self.troubles.append((kind, path))


def _declares(owner: type, attribute: str) -> bool:
    """A method or class attribute, a dataclass field, or an attribute its ``__init__`` sets."""
    if hasattr(owner, attribute):
        return True
    if dataclasses.is_dataclass(owner) and attribute in {f.name for f in dataclasses.fields(owner)}:
        return True
    init = getattr(owner, "__init__", None)
    code = getattr(init, "__code__", None)
    return code is not None and attribute in code.co_names


@pytest.mark.parametrize(("owner", "attribute"), WATCHDOG_INTERNALS, ids=[".".join(i) for i in WATCHDOG_INTERNALS])
def test_watchdog_still_has_each_internal_the_adapter_relies_on(owner: str, attribute: str) -> None:
    assert _declares(OWNERS[owner], attribute), (
        f"watchdog {owner}.{attribute} is gone: collectors/fs/watch.py relies on it (see its docstring)"
    )


@pytest.fixture
def watcher() -> Iterator[tuple[PermissionWatcher, Recorder]]:
    recorder = Recorder()
    watcher = PermissionWatcher(recorder.deliver, recorder.report)
    watcher.start()
    yield watcher, recorder
    watcher.stop()


def _wait(condition: Callable[[], bool], what: str) -> None:
    deadline = time.monotonic() + 10
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.02)


def test_a_watched_tree_delivers_events_and_its_watches_can_be_topped_up(
    tmp_path: Path, watcher: tuple[PermissionWatcher, Recorder]
) -> None:
    adapter, recorder = watcher
    adapter.watch_tree(str(tmp_path))
    assert adapter.rewatch(str(tmp_path)), "the emitter's _inotify watch group was not found"
    os.chmod(tmp_path, 0o750)
    _wait(lambda: any(os.fsdecode(e.src_path) == str(tmp_path) for e in recorder.events), "the chmod's event")
    assert not adapter.rewatch(str(tmp_path / "not-watched"))


def test_an_overflow_is_reported_not_recovered_by_watchdog(watcher: tuple[PermissionWatcher, Recorder]) -> None:
    adapter, recorder = watcher
    reader = adapter._observer._inotify_fd  # type: ignore[union-attr]
    overflow_mask = inotify_c.Mask(inotify_c.InotifyConstants.IN_Q_OVERFLOW)
    overflow = inotify_c.InotifyEvent(inotify_c.WatchDescriptor(-1), overflow_mask, 0, b"")
    reader.handle_event(overflow)
    assert recorder.troubles == [("overflow", None)]
