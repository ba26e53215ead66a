"""The recorded NT ACL as SDDL for the revert executor, what it refuses to put back, and how a failed step reads."""

from __future__ import annotations

import importlib.util
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from collectors.fs.nt_revert import SET_SCRIPT, NotRestorable, NtRestore, NtRestoreFailed, restorable, sddl_of
from permwatch.events import NtAce, NtAceFlag, NtAcl

ALICE = "S-1-5-21-1-2-3-1001"


def test_a_stored_descriptor_becomes_sddl_in_dacl_order_with_numeric_masks_and_inheritance_flags() -> None:
    nt = NtAcl(
        source="stored",
        owner="S-1-22-1-0",
        group="S-1-22-2-0",
        dacl_present=True,
        dacl=(
            NtAce(type="deny", mask=0x001200A9, trustee="S-1-5-21-1-2-3-1002"),
            NtAce(
                type="allow",
                flags=(NtAceFlag.OBJECT_INHERIT, NtAceFlag.CONTAINER_INHERIT),
                mask=0x001F01FF,
                trustee=ALICE,
            ),
            NtAce(type="allow", flags=(NtAceFlag.INHERITED, NtAceFlag.INHERIT_ONLY), mask=0x1, trustee="S-1-5-11"),
        ),
    )
    assert sddl_of(nt) == (
        "O:S-1-22-1-0G:S-1-22-2-0"
        "D:(D;;0x001200a9;;;S-1-5-21-1-2-3-1002)(A;OICI;0x001f01ff;;;S-1-5-21-1-2-3-1001)(A;IOID;0x00000001;;;S-1-5-11)"
    )


def test_a_null_dacl_and_an_empty_one_differ() -> None:
    assert sddl_of(NtAcl(source="stored", dacl_present=True, dacl=None)) == "D:NO_ACCESS_CONTROL"
    assert sddl_of(NtAcl(source="stored", dacl_present=True, dacl=())) == "D:"


@pytest.mark.parametrize(
    ("nt", "why"),
    [
        (NtAcl(source="unreadable", error="truncated"), "recorded as 'unreadable'"),
        (NtAcl(source="smb", error="denied", bypass_traverse=True), "recorded as 'smb'"),
        (NtAcl(source="stored"), "no DACL"),
        (
            NtAcl(
                source="stored",
                dacl_present=True,
                dacl=(NtAce(type="allow", mask=1, trustee=ALICE, conditional=True),),
            ),
            "conditional ACE",
        ),
    ],
)
def test_what_cannot_be_put_back_says_why(nt: NtAcl, why: str) -> None:
    with pytest.raises(NotRestorable, match=why):
        sddl_of(nt)
    assert why in (restorable(nt) or "")


def test_posix_sourced_acls_are_restored_by_removing_the_blob() -> None:
    assert restorable(NtAcl(source="posix")) is None
    step = NtRestore("/srv/share/a b", NtAcl(source="posix"), "security.NTACL", "/etc/samba/smb.conf")
    assert step.command() == "setfattr -x security.NTACL '/srv/share/a b'"
    stored = NtAcl(source="stored", dacl_present=True, dacl=(NtAce(type="allow", mask=1, trustee=ALICE),))
    command = NtRestore("/srv/share/a", stored, "security.NTACL", "/etc/samba/smb.conf").command()
    assert command == f"/usr/bin/python3 {SET_SCRIPT} /etc/samba/smb.conf /srv/share/a 'D:(A;;0x00000001;;;{ALICE})'"


STORED = NtAcl(source="stored", dacl_present=True, dacl=(NtAce(type="allow", mask=1, trustee=ALICE),))


def test_a_missing_interpreter_is_one_line_naming_the_path_and_what_is_missing(tmp_path: Path) -> None:
    step = NtRestore(str(tmp_path), STORED, "security.NTACL", "/etc/samba/smb.conf", python=str(tmp_path / "py3"))
    with pytest.raises(NtRestoreFailed) as failed:
        step.apply()
    assert str(failed.value) == (
        f"setting the NT ACL of {tmp_path} through Samba (smb.conf /etc/samba/smb.conf) failed: "
        f"{tmp_path / 'py3'} not found (Debian's python3 and python3-samba)"
    )


@pytest.mark.skipif(importlib.util.find_spec("samba") is not None, reason="this interpreter has Samba's bindings")
def test_an_interpreter_without_samba_bindings_says_so_in_one_line(tmp_path: Path) -> None:
    step = NtRestore(str(tmp_path), STORED, "security.NTACL", "/etc/samba/smb.conf", python=sys.executable)
    with pytest.raises(NtRestoreFailed, match=r"failed: Samba's Python bindings are missing for .*python3-samba\)$"):
        step.apply()


@pytest.mark.skipif(os.geteuid() != 0 or shutil.which("chattr") is None, reason="chattr +i needs root")
def test_a_blob_that_cannot_be_removed_names_the_path_and_the_kernels_reason(tmp_path: Path) -> None:
    target = tmp_path / "f"
    target.write_text("")
    os.setxattr(target, "user.ntacl-test", b"blob")
    if subprocess.run(["chattr", "+i", str(target)], capture_output=True).returncode != 0:
        pytest.skip(f"no immutable flag on the file system of {tmp_path}")
    try:
        with pytest.raises(NtRestoreFailed) as failed:
            NtRestore(str(target), NtAcl(source="posix"), "user.ntacl-test", "/etc/samba/smb.conf").apply()
    finally:
        subprocess.run(["chattr", "-i", str(target)], check=True)
    assert (
        str(failed.value) == f"removing the NT ACL blob (user.ntacl-test) of {target} failed: Operation not permitted"
    )
    assert os.getxattr(target, "user.ntacl-test") == b"blob"
