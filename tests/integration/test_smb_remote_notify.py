"""SMB change notifications against a real Samba file server (issue 17): one watch per folder sees every change.

Every folder of a real smbd's share is armed (`Watches.arm`); ACL changes at depth 1, 2 and 3 made over SMB
(``smbcacls``), locally (``setfacl``, ``chmod``) and by a raw ``security.NTACL`` xattr write must each come back
as a `Change` naming the changed folder; a new folder and a removed one are reported (the removed one's watches
dropped); a change made while a walk's watches are parked (their requests cancelled) is reported once they are
re-armed; a watch with no buffer gets "rescan" (STATUS_NOTIFY_ENUM_DIR); a killed smbd is "lost".
"""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from collectors.smb.notify import Change, Watches
from collectors.smb.share import SmbShare
from collectors.smb.tree import walk
from tests.integration.servers.samba_clients import smbcacls
from tests.integration.servers.samba_fs import ADMIN_USER, SambaFileServer

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(os.geteuid() != 0, reason="smbd serving other users and useradd need root"),
    pytest.mark.skipif(shutil.which("smbcacls") is None, reason="smbcacls missing: scripts/install.sh --test"),
]

DEPTHS = ("kontor", "kontor/ledning", "kontor/ledning/protokoll")


@pytest.fixture(scope="module")
def samba(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SambaFileServer]:
    with SambaFileServer(tmp_path_factory.mktemp("samba-notify"), {}) as server:
        for branch in (DEPTHS[-1], "kontor/ekonomi", "arkiv"):
            (server.share_path / branch).mkdir(parents=True)
        yield server


def admin_share(samba: SambaFileServer) -> SmbShare:
    account, password = samba.credentials(ADMIN_USER).split("%", 1)
    return SmbShare(samba.host, "share", account, password)


def armed(share: SmbShare, **options: int) -> Watches:
    watches = Watches(share, **options)
    for folder in walk(share, send=watches.arm_and_send):
        assert folder.path in watches
    return watches


def wait_for(watches: Watches, wanted: Change, timeout: float = 30.0) -> list[Change]:
    """Changes until ``wanted`` is among them (a correctness wait with a generous timeout, not a speed limit)."""
    seen: list[Change] = []
    deadline = time.monotonic() + timeout
    while wanted not in seen:
        assert time.monotonic() < deadline, f"{wanted} never reported; saw {seen}"
        seen += watches.changes(timeout=1.0)
    return seen


def test_acl_changes_at_every_depth_over_smb_and_locally_are_reported(samba: SambaFileServer) -> None:
    with admin_share(samba) as share:
        watches = armed(share)
        assert len(watches) == 6
        for path in DEPTHS:
            smbcacls(samba, path, "--add", "ACL:S-1-5-11:ALLOWED/0x0/READ")
            wait_for(watches, Change(path, "changed"))
        local = samba.share_path / DEPTHS[2]
        subprocess.run(["setfacl", "-m", "u:nobody:rx", str(local)], check=True)
        wait_for(watches, Change(DEPTHS[2], "changed"))
        (samba.share_path / DEPTHS[1]).chmod(0o750)
        wait_for(watches, Change(DEPTHS[1], "changed"))
        blob = os.getxattr(samba.share_path / DEPTHS[0], "security.NTACL")
        os.setxattr(samba.share_path / "arkiv", "security.NTACL", blob)
        wait_for(watches, Change("arkiv", "changed"))


def parked(watches: Watches, count: int, timeout: float = 30.0) -> None:
    """Wait until ``count`` watches have been answered (cancelled) and not re-armed (a generous timeout)."""
    deadline = time.monotonic() + timeout
    while watches.parked != count:
        assert time.monotonic() < deadline, f"{watches.parked} watches parked, not {count}"
        time.sleep(0.01)


def test_a_change_made_while_the_watches_are_parked_is_reported_when_they_are_re_armed(
    samba: SambaFileServer,
) -> None:
    """A walk's watches do not wait on the server while folders are read (smbd's CPU per folder read grows with the
    requests waiting on the connection): Samba cancels the CHANGE_NOTIFY inside each folder's compound, and the
    handle keeps collecting, so nothing changed meanwhile is lost."""
    with admin_share(samba) as share:
        watches = armed(share)
        parked(watches, 6)  # each cancelled by the server, nothing re-armed before the first `changes`
        assert len(watches) == 6
        deepest = samba.share_path / DEPTHS[2]
        subprocess.run(["setfacl", "-m", "u:nobody:rwx", str(deepest)], check=True)
        smbcacls(samba, "arkiv", "--add", "ACL:S-1-5-32-545:ALLOWED/0x0/READ")
        seen = wait_for(watches, Change(DEPTHS[2], "changed"))
        if Change("arkiv", "changed") not in seen:
            wait_for(watches, Change("arkiv", "changed"))
        assert watches.parked == 0
        watches.park()  # as before a reconcile: every waiting request cancelled (a CANCEL each)
        parked(watches, 6)
        (samba.share_path / DEPTHS[1]).chmod(0o700)
        wait_for(watches, Change(DEPTHS[1], "changed"))
        assert watches.parked == 0
        watches.release()  # before closing: every waiting request cancelled and answered
        parked(watches, 6)


def test_new_and_removed_folders_are_reported_and_removed_ones_unwatched(samba: SambaFileServer) -> None:
    with admin_share(samba) as share:
        watches = armed(share)
        (samba.share_path / "kontor" / "ny").mkdir()
        wait_for(watches, Change("kontor/ny", "changed"))
        assert watches.arm("kontor/ny")
        shutil.rmtree(samba.share_path / "kontor" / "ny")
        wait_for(watches, Change("kontor/ny", "removed"))
        assert "kontor/ny" not in watches


def test_a_watch_without_room_for_details_asks_for_a_rescan(samba: SambaFileServer) -> None:
    with admin_share(samba) as share:
        watches = armed(share, buffer=0)
        smbcacls(samba, "kontor/ekonomi", "--add", "ACL:S-1-1-0:ALLOWED/0x0/READ")
        wait_for(watches, Change("kontor", "rescan"))


def test_a_killed_server_is_reported_as_lost(tmp_path: Path) -> None:
    with SambaFileServer(tmp_path, {}) as samba:
        (samba.share_path / "kontor").mkdir()
        share = admin_share(samba)
        share.connect()
        try:
            watches = armed(share)
            samba._server.kill()  # SIGKILL: smbd and the connection's child are gone, as in a crash
            wait_for(watches, Change("", "lost"))
        finally:
            share.close()
