"""The ctypes fanotify binding (collectors/fanotify.py) on real files: chmod, setfacl and cat by another uid."""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from collectors.fanotify import FAN_ATTRIB, FAN_EVENT_ON_CHILD, FAN_ONDIR, FAN_OPEN, FanEvent, Fanotify
from tests.integration.held_commands import run_and_hold
from tests.integration.pipeline import traversable_tempdir, wait_until

pytestmark = pytest.mark.integration

OTHER_UID, OTHER_GID = 33251, 33251


@pytest.fixture
def folder() -> Iterator[Path]:
    with traversable_tempdir("permwatch-fanotify-") as base:
        folder = base / "folder"
        folder.mkdir()
        (folder / "file.txt").write_text("never read by the listener\n")
        for path in (folder, folder / "file.txt"):
            os.chown(path, OTHER_UID, OTHER_GID)
        yield folder


def events_until(fan: Fanotify, wanted: str, mask: int, found: list[FanEvent]) -> FanEvent | None:
    if fan.wait(0.05):
        found.extend(fan.read())
    return next((e for e in found if e.path == wanted and e.mask & mask), None)


def test_chmod_and_setfacl_by_another_uid_are_attributed_through_the_pidfd(folder: Path) -> None:
    target = str(folder / "file.txt")
    with Fanotify() as fan:
        fan.mark(str(folder), FAN_ATTRIB | FAN_ONDIR, filesystem=True)
        for argv in (["chmod", "640", target], ["setfacl", "-m", "u:65534:r", target]):
            held = run_and_hold(OTHER_UID, OTHER_GID, *argv)
            found: list[FanEvent] = []
            event = wait_until(lambda found=found: events_until(fan, target, FAN_ATTRIB, found), f"{argv[0]} event")
            assert held.release() != 0  # the missing operand: the change itself was made
            assert event.process.uid == OTHER_UID
            assert event.process.name == argv[0]
            assert event.process.confidence == "pidfd"
    assert oct(os.stat(target).st_mode & 0o777) == "0o640"


def test_a_directorys_own_change_names_the_directory(folder: Path) -> None:
    with Fanotify() as fan:
        fan.mark(str(folder), FAN_ATTRIB | FAN_ONDIR, filesystem=True)
        held = run_and_hold(OTHER_UID, OTHER_GID, "chmod", "700", str(folder))
        found: list[FanEvent] = []
        event = wait_until(lambda: events_until(fan, str(folder), FAN_ATTRIB, found), "the folder's event")
        held.release()
    assert event.mask & FAN_ONDIR and event.process.uid == OTHER_UID


def test_an_open_by_cat_is_seen_on_an_inode_mark_and_the_listeners_own_opens_are_not(folder: Path) -> None:
    target = str(folder / "file.txt")
    with Fanotify() as fan:
        fan.mark(str(folder), FAN_OPEN | FAN_EVENT_ON_CHILD | FAN_ONDIR)
        os.listdir(folder)  # our own open of the folder: dropped, or resolving handles would loop
        held = run_and_hold(OTHER_UID, OTHER_GID, "cat", target)
        found: list[FanEvent] = []
        event = wait_until(lambda: events_until(fan, target, FAN_OPEN, found), "cat's open")
        held.release()
    assert event.process.name == "cat" and event.process.uid == OTHER_UID
    assert all(e.process.pid != os.getpid() for e in found)


def test_a_process_gone_before_its_event_is_read_is_unresolved_never_guessed(folder: Path) -> None:
    target = str(folder / "file.txt")
    with Fanotify() as fan:
        fan.mark(str(folder), FAN_ATTRIB | FAN_ONDIR, filesystem=True)
        subprocess.run(
            ["setpriv", f"--reuid={OTHER_UID}", f"--regid={OTHER_GID}", "--clear-groups", "chmod", "600", target],
            check=True,
        )
        # exited before we read: the pidfd the kernel makes at read time says so
        events = [e for e in fan.read() if e.path == target]
    assert events and all(e.process.confidence == "unresolved" and e.process.uid is None for e in events)


def test_a_server_acting_for_a_user_is_named_by_its_filesystem_uid_and_a_setuid_program_by_its_real_one() -> None:
    from collectors.fanotify import read_status

    for ids, expected in (
        (["--ruid=0", f"--euid={OTHER_UID}"], OTHER_UID),
        ([f"--ruid={OTHER_UID}", "--euid=0"], OTHER_UID),
    ):
        sleeper = subprocess.Popen(["setpriv", *ids, "sleep", "30"])
        try:
            pid = sleeper.pid
            wait_until(lambda pid=pid: (read_status(pid) or (0, ""))[1] == "sleep", "setpriv to exec sleep")
            assert read_status(sleeper.pid) == (expected, "sleep")
        finally:
            sleeper.kill()
            sleeper.wait()
