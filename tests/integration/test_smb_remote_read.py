"""The remote SMB collector's reads against a real Samba file server (issue 17): descriptors and folders over SMB.

A real smbd (`SambaFileServer`) serves a temporary tree three levels deep with a folder of 1,200 entries (more
than one listing answer holds). ACLs are changed over SMB with ``smbcacls`` at depth 1, 2 and 3. `walk` must
yield every folder exactly once, and each descriptor, decoded by `collectors.ntacl`, must equal what
``smbcacls --numeric`` shows Samba serving. A folder the account may not open is reported with its NTSTATUS and
not descended into; a wrong password is a one-line error that does not contain the password.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from collectors.ntacl import decode_security_descriptor
from collectors.smb.share import SmbError, SmbShare
from collectors.smb.tree import walk
from tests.integration.servers.samba_clients import served_over_smb, smbcacls
from tests.integration.servers.samba_fs import ADMIN_USER, SambaFileServer

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(os.geteuid() != 0, reason="smbd serving other users and useradd need root"),
    pytest.mark.skipif(shutil.which("smbcacls") is None, reason="smbcacls missing: scripts/install.sh --test"),
]

USERS = {"reader": "Reader-pw-17"}
CHANGED = ("socialkontoret", "socialkontoret/ledning", "socialkontoret/ledning/protokoll")


@pytest.fixture(scope="module")
def samba(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SambaFileServer]:
    with SambaFileServer(tmp_path_factory.mktemp("samba-remote"), USERS) as server:
        tree(server.share_path)
        yield server


def tree(root: Path) -> None:
    for branch in ("socialkontoret/ledning/protokoll", "socialkontoret/ekonomi/2026", "it/skript/gammalt"):
        (root / branch).mkdir(parents=True)
    many = root / "arkiv"
    many.mkdir()
    for number in range(1_150):
        (many / f"arende-{number:05d}.txt").write_bytes(b"")
    for number in range(50):
        (many / f"mapp-{number:03d}").mkdir()
    private = root / "it" / "privat"
    private.mkdir(mode=0o700)
    (private / "inre").mkdir()


def share_as(samba: SambaFileServer, user: str) -> SmbShare:
    account, password = samba.credentials(user).split("%", 1)
    return SmbShare(samba.host, "share", account, password)


def local_folders(root: Path) -> set[str]:
    found = {""}
    for folder, subfolders, _ in os.walk(root):
        relative = os.path.relpath(folder, root)
        found.update(subfolder if relative == "." else f"{relative}/{subfolder}" for subfolder in subfolders)
    return found


def test_walk_reads_every_folder_once_with_the_descriptor_samba_serves(samba: SambaFileServer) -> None:
    smbcacls(samba, CHANGED[0], "--add", "ACL:S-1-5-11:ALLOWED/OI|CI/READ")
    smbcacls(samba, CHANGED[1], "--add", "ACL:S-1-1-0:DENIED/0x0/FULL")
    smbcacls(samba, CHANGED[2], "--add", f"ACL:S-1-22-1-{samba.uid('reader')}:ALLOWED/0x0/READ")
    with share_as(samba, ADMIN_USER) as share:
        folders = list(walk(share, in_flight=8))
    paths = [f.path for f in folders]
    assert len(paths) == len(set(paths))
    assert set(paths) == local_folders(samba.share_path)
    assert all(f.error is None and f.descriptor for f in folders)
    by_path = {f.path: f for f in folders}
    assert len(by_path["arkiv"].subfolders) == 50  # listed past the first answer's 65,536 bytes
    for path in (*CHANGED, "it/skript/gammalt", "arkiv/mapp-049"):
        served = served_over_smb(samba, path)
        descriptor = decode_security_descriptor(by_path[path].descriptor or b"")
        assert (descriptor.owner, descriptor.group, descriptor.dacl) == (served.owner, served.group, served.dacl)
        assert descriptor.control == served.control


def test_a_folder_the_account_cannot_open_is_reported_and_not_descended(samba: SambaFileServer) -> None:
    with share_as(samba, "reader") as share:
        folders = {f.path: f for f in walk(share, "it")}
    assert folders["it/privat"].descriptor is None
    assert folders["it/privat"].error == "STATUS_ACCESS_DENIED"
    assert "it/privat/inre" not in folders
    assert folders["it/skript/gammalt"].error is None


def test_a_wrong_password_is_a_one_line_error_without_the_password(samba: SambaFileServer) -> None:
    share = SmbShare(samba.host, "share", samba.account("reader"), "Not-the-password-17")
    with pytest.raises(SmbError) as raised:
        share.connect()
    assert "Not-the-password-17" not in str(raised.value) and "\n" not in str(raised.value)
    assert samba.account("reader") in str(raised.value)
    with pytest.raises(SmbError, match="cannot reach"):
        SmbShare("127.0.0.1", "share", "x", "y", port=1, timeout=2).connect()


def test_an_encrypted_session_and_a_narrow_credit_window_read_the_same(samba: SambaFileServer) -> None:
    """SMB3 encryption (the channel's transform through smbprotocol's ciphers) and a window of 8 credits (two
    folders in flight, each send taking the credits the last answers granted) read what a signed session reads."""
    account, password = samba.credentials(ADMIN_USER).split("%", 1)
    with SmbShare(samba.host, "share", account, password) as share:
        signed = {f.path: f for f in walk(share, in_flight=8)}
    with SmbShare(samba.host, "share", account, password, encrypt=True, credits=8) as share:
        encrypted = {f.path: f for f in walk(share, in_flight=16)}
    assert encrypted == signed and len(signed) == len(local_folders(samba.share_path))
