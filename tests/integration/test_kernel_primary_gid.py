"""A gid no directory group has, named by an ACL entry: the processor's readers against the kernel's.

The folder is real (``setfacl -m g:<gid>:rx``), read by the fs collector's
own reader, and judged by the processor with a directory in which the gid is
only some users' primary gid. The kernel is asked the same question with
``setpriv``: a process with that uid and gid and no supplementary groups
lists the folder; one with another gid does not. Needs root.
"""

from __future__ import annotations

import os
import subprocess
from datetime import UTC, datetime
from pathlib import Path

import pytest

from collectors.fs.readers.posix import read_path_state
from permwatch.events import (
    DirectoryGroup,
    DirectoryUser,
    ExposureStatus,
    FsKind,
    FsPermissionEvent,
    Identity,
    Label,
    LabelAssigned,
)
from processor.engine import Engine
from tests.integration.pipeline import traversable_tempdir

pytestmark = pytest.mark.integration

ULF, BO = 47101, 47102
LONELY_GID, OTHER_GID = 47199, 47198  # no group entry has either


def kernel_lets_read(folder: Path, uid: int, gid: int) -> bool:
    probe = subprocess.run(
        ["setpriv", f"--reuid={uid}", f"--regid={gid}", "--clear-groups", "--", "ls", str(folder)],
        capture_output=True,
    )
    return probe.returncode == 0


def event_for(path: Path) -> FsPermissionEvent:
    state = read_path_state(str(path))
    assert state is not None
    return FsPermissionEvent(
        kind=FsKind.CHANGED,
        path=str(path),
        object_type=state.object_type,
        owner=Identity(id=state.uid, name="root" if state.uid == 0 else None),
        group=Identity(id=state.gid),
        mode=state.mode,
        acl=state.acl,
        default_acl=state.default_acl,
        observed_at=datetime.now(UTC),
    )


@pytest.mark.skipif(os.geteuid() != 0, reason="setpriv and chown need root")
def test_a_primary_gid_without_a_group_entry_reads_as_the_kernel_says() -> None:
    with traversable_tempdir("pw-gid-") as base:
        folder = base / "ledning"
        folder.mkdir()
        os.chown(folder, 0, 0)
        os.chmod(folder, 0o750)
        engine = Engine()
        engine.apply(DirectoryUser(name="ulf", uid=ULF, primary_gid=LONELY_GID))
        engine.apply(DirectoryUser(name="bo", uid=BO, primary_gid=OTHER_GID))
        engine.apply(DirectoryGroup(name="ledningsgrupp", gid=0, member_users=()))
        engine.flush()
        label = Label(name="ledning", allowed_groups=("ledningsgrupp",), allowed_users=("root",))
        engine.step(event_for(folder))
        assert engine.step(LabelAssigned(path=str(folder), label=label)) == []

        subprocess.run(["setfacl", "-m", f"g:{LONELY_GID}:rx", str(folder)], check=True)
        assert kernel_lets_read(folder, ULF, LONELY_GID)
        assert not kernel_lets_read(folder, BO, OTHER_GID)
        [opened] = engine.step(event_for(folder))
        assert opened.status is ExposureStatus.OPENED
        assert (opened.users, opened.people) == (("ulf",), 1), "the kernel's readers, no more, no fewer"
