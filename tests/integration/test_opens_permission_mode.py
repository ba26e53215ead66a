"""The opens watcher on real files (#18): ``opens = "fanotify_permission"`` names every short-lived reader and holds no
reader forever; and the file-marks design bench/opens.py measures.

Readers are the real ``cat`` run as another uid through ``setpriv``, one after another, each exiting as soon as
it has read; the watcher is the collector's own :class:`collectors.fs.opens.FanotifyOpens` with permission marks.
Where a test needs a stuck watcher, naming a process waits for the test's word: a fault put into the real path
(the kernel, the marks, ``/proc`` are all real), so the failsafe and the shutdown are seen releasing a reader the
kernel is really holding.
"""

from __future__ import annotations

import os
import subprocess
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from collectors.acl import NameCache
from collectors.fanotify import FAN_EVENT_ON_CHILD, FAN_OPEN_PERM, FanEvent, Process, identify
from collectors.fanotify_permission import PermissionGroup
from collectors.fs.opens import FanotifyOpens
from permwatch.events import FsAccessEvent
from tests.integration.held_commands import run_and_hold
from tests.integration.pipeline import traversable_tempdir, wait_until

pytestmark = pytest.mark.integration

READER_UID, READER_GID = 33281, 33281
READERS = 200
CONTENT = "contents the watcher never reads\n"
GENEROUS = 60.0
"""response timeout where the failsafe is not under test: a loaded machine must not turn a slow answer into an
unnamed one (the failsafe has tests of its own below)"""


@pytest.fixture
def folder() -> Iterator[Path]:
    with traversable_tempdir("permwatch-opens-perm-") as base:
        folder = base / "ledning"
        (folder / "2026").mkdir(parents=True)
        for path in (folder / "protokoll.txt", folder / "2026" / "budget.txt"):
            path.write_text(CONTENT)
            os.chmod(path, 0o644)
        os.chmod(folder, 0o755)
        os.chmod(folder / "2026", 0o755)
        yield folder


def cat_as_reader(path: Path) -> subprocess.Popen[str]:
    ident = [f"--reuid={READER_UID}", f"--regid={READER_GID}", "--clear-groups"]
    return subprocess.Popen(["setpriv", *ident, "cat", str(path)], stdout=subprocess.PIPE, text=True)


def test_every_one_of_200_short_lived_readers_is_named(folder: Path) -> None:
    target = folder / "2026" / "budget.txt"
    opens = FanotifyOpens(NameCache(), source="test", permission=True, response_timeout=GENEROUS)
    taken: list[FsAccessEvent] = []
    pids: list[int] = []
    try:
        opens.watch(str(folder))
        for _ in range(READERS):
            reader = cat_as_reader(target)
            out, _ = reader.communicate(timeout=60)
            assert reader.returncode == 0 and out == CONTENT  # allowed, always
            pids.append(reader.pid)

        def all_named() -> bool:
            taken.extend(opens.take())
            return len({e.actor.pid for e in taken if e.path == str(target)}) >= READERS

        wait_until(all_named, "an access record for every reader")
        group = opens.permission_group
        assert group is not None and group.failsafe_allowed == 0
    finally:
        opens.close()
    records = [e for e in taken if e.path == str(target)]
    assert {e.actor.pid for e in records} == set(pids)
    assert all(
        e.actor.uid == READER_UID and e.actor.process == "cat" and e.actor.confidence == "pidfd" for e in records
    )
    assert all(e.folder == str(folder) for e in records)


def test_a_readers_repeated_opens_are_all_allowed_and_recorded_once(folder: Path) -> None:
    target = folder / "protokoll.txt"
    opens = FanotifyOpens(NameCache(), source="test", permission=True, response_timeout=GENEROUS)
    try:
        opens.watch(str(folder))
        group = opens.permission_group
        assert group is not None
        before = group.answered
        ident = [f"--reuid={READER_UID}", f"--regid={READER_GID}", "--clear-groups"]
        loop = f'for i in $(seq 50); do read line < "{target}"; done; echo "$line"'  # one shell, 50 opens
        shell = subprocess.run(["setpriv", *ident, "sh", "-c", loop], capture_output=True, text=True, timeout=60)
        assert shell.returncode == 0 and shell.stdout == CONTENT
        taken: list[FsAccessEvent] = []
        wait_until(lambda: taken.extend(opens.take()) or taken, "the shell's open recorded")
        assert group.answered - before >= 50 and group.failsafe_allowed == 0
        assert [e.actor.process for e in taken if e.path == str(target)] == ["sh"]
    finally:
        opens.close()


def test_the_watchers_own_reads_and_marks_do_not_wait_on_it(folder: Path) -> None:
    opens = FanotifyOpens(NameCache(), source="test", permission=True, response_timeout=GENEROUS)
    finished = threading.Event()
    seen: list[str] = []

    def own_reads() -> None:
        for _ in range(50):
            seen.extend(os.listdir(folder))
            seen.append((folder / "protokoll.txt").read_text())
        (folder / "2027").mkdir()
        (folder / "2027" / "plan.txt").write_text(CONTENT)
        for _ in range(300):  # walks that open marked folders under the marking lock, while others read
            opens.created(str(folder / "2027"))
            opens.watch(str(folder))
        seen.append((folder / "2027" / "plan.txt").read_text())
        finished.set()

    # Other readers all along: the watcher is busy naming them (and telling of them) while it marks.
    ident = [f"--reuid={READER_UID}", f"--regid={READER_GID}", "--clear-groups"]
    others = f'while :; do cat "{folder / "protokoll.txt"}" >/dev/null; done'
    busy = subprocess.Popen(["setpriv", *ident, "sh", "-c", others])
    try:
        opens.watch(str(folder))
        worker = threading.Thread(target=own_reads)
        worker.start()
        wait_until(finished.is_set, "the watcher's own reads of its marked folders")
        worker.join()
        reader = cat_as_reader(folder / "2027" / "plan.txt")
        assert reader.communicate(timeout=60)[0] == CONTENT
        wait_until(lambda: any(e.actor.uid == READER_UID for e in opens.take()), "the new folder's reader named")
        group = opens.permission_group
        assert group is not None and group.failsafe_allowed == 0  # nothing waited for the watchdog's rescue
    finally:
        busy.kill()
        busy.wait()
        opens.close()
    assert seen.count(CONTENT) == 51
    assert all(len(name) < 64 for name in seen if name != CONTENT)


class StuckNaming:
    """Naming a process waits until :meth:`release`: a watcher stuck while the kernel holds a reader's open."""

    def __init__(self) -> None:
        self.entered, self._go = threading.Event(), threading.Event()

    def __call__(self, pid: int, pidfd: int | None) -> Process:
        self.entered.set()
        self._go.wait(120)
        return identify(pid, pidfd)

    def release(self) -> None:
        self._go.set()


def held_reader(folder: Path, group: PermissionGroup, stuck: StuckNaming) -> subprocess.Popen[str]:
    group.mark(str(folder), FAN_OPEN_PERM | FAN_EVENT_ON_CHILD)
    reader = cat_as_reader(folder / "protokoll.txt")
    wait_until(stuck.entered.is_set, "the watcher to hold the reader's open")
    assert reader.poll() is None  # the kernel holds it: cat cannot have read yet
    return reader


def test_shutting_the_watcher_down_releases_a_reader_it_holds(folder: Path) -> None:
    stuck = StuckNaming()
    told: list[FanEvent] = []
    group = PermissionGroup(told.append, response_timeout=60, who=stuck)
    try:
        reader = held_reader(folder, group, stuck)
        group.close()
        out, _ = reader.communicate(timeout=30)
        assert reader.returncode == 0 and out == CONTENT
    finally:
        stuck.release()
        group.close()
        for thread in threading.enumerate():
            if thread.name.startswith("fs-opens-permission"):
                thread.join(30)


def test_a_stuck_watcher_allows_the_open_after_the_response_timeout(folder: Path) -> None:
    stuck = StuckNaming()
    told: list[FanEvent] = []
    group = PermissionGroup(told.append, response_timeout=0.5, who=stuck)
    try:
        reader = held_reader(folder, group, stuck)
        out, _ = reader.communicate(timeout=30)  # without any close: the watchdog answers
        assert reader.returncode == 0 and out == CONTENT
        wait_until(lambda: group.failsafe_allowed == 1, "the watchdog to count its answer")
        second = cat_as_reader(folder / "protokoll.txt")  # queued behind the stuck one: read and allowed unnamed
        assert second.communicate(timeout=30)[0] == CONTENT
        wait_until(lambda: group.failsafe_allowed == 2, "the watchdog to count its second answer")
        stuck.release()
        wait_until(lambda: told, "the stuck watcher to come back")
    finally:
        stuck.release()
        group.close()
    # the first reader had exited, allowed, by the time it was asked: unresolved, never guessed
    assert [(e.process.uid, e.process.confidence) for e in told] == [(None, "unresolved")]


def test_file_marks_name_a_reader_of_a_file_below_and_of_a_file_made_later(folder: Path) -> None:
    """The measured design of bench/opens.py (``mark_files``): each file's own mark, no watch on children."""
    opens = FanotifyOpens(NameCache(), source="test", mark_files=True)
    taken: list[FsAccessEvent] = []
    try:
        opens.watch(str(folder))
        later = folder / "2026" / "later.txt"
        later.write_text(CONTENT)
        os.chmod(later, 0o644)
        opens.created(str(later))
        for path in (folder / "2026" / "budget.txt", later):
            held = run_and_hold(READER_UID, READER_GID, "cat", str(path))  # alive until named: notification mode
            wait_until(
                lambda path=path: taken.extend(opens.take()) or any(e.path == str(path) for e in taken),
                f"the open of {path.name}",
            )
            held.release()
    finally:
        opens.close()
    assert {e.actor.uid for e in taken if e.path.endswith(".txt")} == {READER_UID}
