"""A share shaped like the motivating incident's, for the burst test and bench/burst.py.

``cases/`` holds labelled case folders full of subfolders (an IT update's
``setfacl -R`` lands there); ``other/`` holds labelled folders the update does
not touch. Which labelled folders an outsider can read afterwards is asked
of the kernel itself: a child process with the outsider's uid, gid and
groups (``setpriv``) tries to list each folder.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

MGMT, STAFF = 36001, 36002
OUTSIDER_UID, OUTSIDER_GID = 37010, 36099  # a member of the all-staff group, nobody's manager

DIRECTORY = f"""
users:
  - {{name: chef, uid: 37001, gid: {MGMT}}}
  - {{name: outsider, uid: {OUTSIDER_UID}, gid: {OUTSIDER_GID}}}
  - {{name: staff2, uid: 37011, gid: {OUTSIDER_GID}}}
  - {{name: staff3, uid: 37012, gid: {OUTSIDER_GID}}}
groups:
  - {{name: ledningsgrupp, gid: {MGMT}, members: [chef]}}
  - {{name: alla, gid: {STAFF}, members: [outsider, staff2, staff3]}}
"""


def build(share: Path, *, labelled: int, untouched: int, subfolders: int) -> tuple[list[Path], list[Path]]:
    """Make the tree; return (labelled folders under cases/, labelled folders under other/)."""
    cases, other = share / "cases", share / "other"
    made: tuple[list[Path], list[Path]] = ([], [])
    for parent, count, out in ((cases, labelled, made[0]), (other, untouched, made[1])):
        parent.mkdir(parents=True)
        os.chmod(parent, 0o755)
        for i in range(count):
            folder = parent / f"case-{i:03d}"
            folder.mkdir()
            os.chown(folder, 0, MGMT)
            os.chmod(folder, 0o750)
            for j in range(subfolders):
                sub = folder / f"sub-{j:04d}"
                sub.mkdir()
                os.chown(sub, 0, MGMT)
                os.chmod(sub, 0o750)
            out.append(folder)
    os.chmod(share, 0o755)
    return made


def outsider_can_read(folder: Path) -> bool:
    """The kernel's answer: can the all-staff outsider list this folder?"""
    probe = subprocess.run(
        ["setpriv", f"--reuid={OUTSIDER_UID}", f"--regid={OUTSIDER_GID}", f"--groups={STAFF}", "--",
         "ls", "-d", str(folder) + "/."],
        capture_output=True,
    )  # fmt: skip
    listing = subprocess.run(
        ["setpriv", f"--reuid={OUTSIDER_UID}", f"--regid={OUTSIDER_GID}", f"--groups={STAFF}", "--",
         "ls", str(folder)],
        capture_output=True,
    )  # fmt: skip
    return probe.returncode == 0 and listing.returncode == 0


@contextlib.contextmanager
def inotify_limit(name: str, value: int) -> Iterator[None]:
    """Lower /proc/sys/fs/inotify/<name> (root only) and put it back."""
    path = Path("/proc/sys/fs/inotify") / name
    before = path.read_text().strip()
    path.write_text(str(value))
    try:
        yield
    finally:
        path.write_text(before)
