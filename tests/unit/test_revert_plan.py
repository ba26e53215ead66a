"""The revert executor's pure part (issue 19): the exact commands a revert prints and makes, from the state
recorded before the exposure and the kernel's state now, and what a failed step reports."""

from __future__ import annotations

import os
import shutil
import stat
import subprocess
from pathlib import Path

import pytest

from collectors.acl import parse_acl_text
from collectors.fs.nt_revert import NtRestore
from collectors.fs.revert import PathRevert, PathState, _bare, acl_text, apply_plan, kernel_state
from permwatch.events import FsKind, FsPermissionEvent, Identity, NtAce, NtAcl


def _event(path: str, mode: int, acl: str, default: str = "") -> FsPermissionEvent:
    return FsPermissionEvent(
        kind=FsKind.BASELINE,
        path=path,
        owner=Identity(id=0, name="root"),
        group=Identity(id=32301),
        mode=mode,
        acl=parse_acl_text(acl),
        default_acl=parse_acl_text(default) if default else (),
    )


def test_acl_text_is_setfacl_short_text_with_numeric_qualifiers() -> None:
    assert acl_text(parse_acl_text("u::rwx,g::r-x,g:32302:r-x,m::r-x,o::---")) == (
        "u::rwx,g::r-x,g:32302:r-x,m::r-x,o::---"
    )


def test_a_named_group_and_a_default_acl_are_taken_back_and_the_mode_restored() -> None:
    before = _event("/srv/share/led ning", 0o2750, "u::rwx,g::r-x,o::---")
    now = PathState(
        0,
        32301,
        0o2750,
        _bare(parse_acl_text("u::rwx,g::r-x,g:32302:r-x,m::r-x,o::---")),
        _bare(parse_acl_text("u::rwx,g::r-x,g:32302:r-x,m::r-x,o::---")),
    )
    assert PathRevert(before.path, before, now).commands() == [
        "setfacl --set u::rwx,g::r-x,o::--- '/srv/share/led ning'",
        "setfacl -k '/srv/share/led ning'",
        "chmod 2750 '/srv/share/led ning'",
    ]


def test_a_chmod_and_a_chgrp_are_taken_back_and_nothing_else() -> None:
    before = _event("/srv/share/ledning", 0o750, "u::rwx,g::r-x,g:32309:r-x,m::r-x,o::---", "u::rwx,g::r-x,o::---")
    now = PathState(0, 32302, 0o755, _bare(before.acl[:-1] + parse_acl_text("o::r-x")[-1:]), _bare(before.default_acl))
    assert PathRevert(before.path, before, now).commands() == [
        "chown -h 0:32301 /srv/share/ledning",
        "setfacl --set u::rwx,g::r-x,g:32309:r-x,m::r-x,o::--- /srv/share/ledning",
        "chmod 0750 /srv/share/ledning",
    ]


def _widened(path: Path, nt: NtRestore | None = None) -> PathRevert:
    """``path`` recorded as 0640 with a plain ACL, then chmodded to 0644: its revert (and ``nt`` after it)."""
    path.write_text("")
    os.chmod(path, 0o640)
    before = _event(str(path), 0o640, "u::rw-,g::r--,o::---")
    before = before.model_copy(update={"owner": Identity(id=os.getuid()), "group": Identity(id=os.getgid())})
    os.chmod(path, 0o644)
    now = kernel_state(str(path))
    assert now is not None
    return PathRevert(str(path), before, now, nt)


def test_a_failed_nt_step_reports_the_posix_side_restored_and_stops_there(tmp_path: Path) -> None:
    stored = NtAcl(source="stored", dacl_present=True, dacl=(NtAce(type="allow", mask=1, trustee="S-1-1-0"),))
    missing = str(tmp_path / "no-python3")
    inner = _widened(tmp_path / "inner")
    folder = _widened(tmp_path / "folder", NtRestore(str(tmp_path / "folder"), stored, "security.NTACL", "c", missing))
    outer = _widened(tmp_path / "outer")
    applied, failed = apply_plan([inner, folder, outer])
    assert failed == (
        f"setting the NT ACL of {tmp_path / 'folder'} through Samba (smb.conf c) failed: {missing} not found "
        "(Debian's python3 and python3-samba); POSIX permissions restored on 2 of 3 path(s), NT ACLs on 0 of 1"
    )
    made = [(f"setfacl --set u::rw-,g::r--,o::--- {p}", f"chmod 0640 {p}") for p in (inner.path, folder.path)]
    assert applied == [*made[0], *made[1]]
    modes = [stat.S_IMODE(os.stat(tmp_path / name).st_mode) for name in ("inner", "folder", "outer")]
    assert modes == [0o640, 0o640, 0o644]  # what the line says: the third was not touched


@pytest.mark.skipif(os.geteuid() != 0 or shutil.which("chattr") is None, reason="chattr +i needs root")
def test_a_failed_posix_step_names_the_path_and_the_kernels_reason(tmp_path: Path) -> None:
    step = _widened(tmp_path / "folder")
    if subprocess.run(["chattr", "+i", step.path], capture_output=True).returncode != 0:
        pytest.skip(f"no immutable flag on the file system of {tmp_path}")
    try:
        applied, failed = apply_plan([step])
    finally:
        subprocess.run(["chattr", "-i", step.path], check=True)
    assert failed == (
        f"restoring the POSIX permissions of {step.path} failed: Operation not permitted; "
        "POSIX permissions restored on 0 of 1 path(s)"
    )
    assert applied == [] and stat.S_IMODE(os.stat(step.path).st_mode) == 0o644
