"""How a failed NT-ACL step of a revert reads, with Samba's own Python bindings doing the failing (no server).

The revert executor sets a recorded Windows ACL through Samba's VFS (:mod:`collectors.fs.samba_set_nt_acl`, run
with Debian's ``python3`` and ``python3-samba``). Each way that fails on a real machine (an smb.conf that does not
load, no share holding the path, Samba refusing the write) is one line naming the path, the smb.conf and Samba's
reason, raised as :class:`NtRestoreFailed`, never a traceback; the descriptor is left as it was.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

from collectors.fs.nt_revert import SYSTEM_PYTHON, NtRestore, NtRestoreFailed
from permwatch.events import NtAce, NtAcl

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(
        subprocess.run([SYSTEM_PYTHON, "-c", "import samba.ntacls"], capture_output=True).returncode != 0,
        reason="Debian's python3-samba missing: scripts/install.sh --test",
    ),
]

EVERYONE_READS = NtAcl(
    source="stored", dacl_present=True, dacl=(NtAce(type="allow", mask=0x001200A9, trustee="S-1-1-0"),)
)


def smb_conf(tmp_path: Path, share: Path) -> Path:
    """A file server's smb.conf with one ``acl_xattr`` share at ``share``, its databases under ``tmp_path``."""
    private = tmp_path / "private"
    private.mkdir()
    dirs = "\n".join(f"{key} = {private}" for key in ("private dir", "state directory", "cache directory"))
    conf = tmp_path / "smb.conf"
    conf.write_text(f"[global]\n{dirs}\nlock directory = {private}\n[share]\npath = {share}\nvfs objects = acl_xattr\n")
    return conf


def failure(step: NtRestore) -> str:
    with pytest.raises(NtRestoreFailed) as failed:
        step.apply()
    return str(failed.value)


def test_an_smb_conf_that_does_not_load_is_named(tmp_path: Path) -> None:
    missing = tmp_path / "smb.conf"
    assert failure(NtRestore(str(tmp_path), EVERYONE_READS, "security.NTACL", str(missing))) == (
        f"setting the NT ACL of {tmp_path} through Samba (smb.conf {missing}) failed: "
        f"Samba cannot load {missing} (missing, unreadable or not an smb.conf)"
    )


def test_a_path_no_share_holds_is_named(tmp_path: Path) -> None:
    share, elsewhere = tmp_path / "share", tmp_path / "elsewhere"
    share.mkdir()
    elsewhere.mkdir()
    conf = smb_conf(tmp_path, share)
    assert failure(NtRestore(str(elsewhere), EVERYONE_READS, "security.NTACL", str(conf))) == (
        f"setting the NT ACL of {elsewhere} through Samba (smb.conf {conf}) failed: "
        f"no share in {conf} holds {elsewhere}"
    )


@pytest.mark.skipif(os.geteuid() != 0 or shutil.which("chattr") is None, reason="chattr +i needs root")
def test_samba_refusing_the_write_is_its_status_in_one_line_and_the_descriptor_stays(tmp_path: Path) -> None:
    share = tmp_path / "share"
    folder = share / "ledning"
    folder.mkdir(parents=True)
    conf = smb_conf(tmp_path, share)
    if subprocess.run(["chattr", "+i", str(folder)], capture_output=True).returncode != 0:
        pytest.skip(f"no immutable flag on the file system of {tmp_path}")
    try:
        why = failure(NtRestore(str(folder), EVERYONE_READS, "security.NTACL", str(conf)))
        assert "security.NTACL" not in os.listxattr(folder)
    finally:
        subprocess.run(["chattr", "-i", str(folder)], check=True)
    prefix = f"setting the NT ACL of {folder} through Samba (smb.conf {conf}) failed: NT status 0xC0000022: "
    assert why.startswith(prefix) and "Access Denied" in why and "\n" not in why, why
