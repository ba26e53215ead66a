"""Revert on a Samba share (issue 19 item 3 with NT ACLs): Samba itself is the oracle.

A real smbd (`SambaFileServer`, ``vfs objects = acl_xattr``) serves a folder whose Windows ACL admits only the admin
and alice. ``permwatch run`` watches the share with the ``ntacl`` reader. An ``smbcacls --add`` of Everyone READ
over SMB opens an exposure (bob, carol and dave can now list the folder: an SMB login per user says so). ``permwatch
revert`` restores the POSIX side and then the recorded NT ACL through Samba's own VFS (the dry run prints the exact
commands, the SDDL included); afterwards Samba serves the descriptor it served before, only the admin and alice get
in over SMB, and the exposure closes through the normal path. A revert is refused, changing nothing, when the NT ACL
changed after the exposure's latest record. A revert Samba cannot carry out (the smb.conf it is given no longer holds
the folder's share) is one line on standard error naming the folder, the smb.conf and Samba's reason, and saying the
POSIX side was restored and the NT ACL not; exit status 1, no traceback, a ``revert_failed`` decision.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from permwatch.events import (
    DirectoryUser,
)
from tests.integration.pipeline import permwatch_exe, wait_until
from tests.integration.respond_rig import Rig
from tests.integration.servers.samba_clients import directory_events, samba_admits, served_over_smb, smbcacls
from tests.integration.servers.samba_fs import ADMIN_USER, SambaFileServer

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(os.geteuid() != 0, reason="smbd serving other users and useradd need root"),
    pytest.mark.skipif(shutil.which("smbcacls") is None, reason="smbcacls missing: scripts/install.sh --test"),
    pytest.mark.skipif(
        subprocess.run(["/usr/bin/python3", "-c", "import samba.ntacls"], capture_output=True).returncode != 0,
        reason="Debian's python3-samba missing: scripts/install.sh --test",
    ),
]

USERS = {"alice": "Alice-pw-19r", "bob": "Bob-pw-19r", "carol": "Carol-pw-19r", "dave": "Dave-pw-19r"}
FOLDER = "ledning"


@pytest.fixture(scope="module")
def samba(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SambaFileServer]:
    with SambaFileServer(tmp_path_factory.mktemp("samba-revert"), USERS) as server:
        yield server


def directory_yaml(samba: SambaFileServer) -> dict[str, Any]:
    users, groups = [], []
    for event in directory_events(samba):
        if isinstance(event, DirectoryUser):
            users.append(
                {"name": event.name, "uid": event.uid, "gid": event.primary_gid, "sid": event.sid}
                | {"primary_group_sid": event.primary_group_sid}
            )
        else:
            group: dict[str, Any] = {"name": event.name, "members": list(event.member_users)}
            group |= {key: value for key, value in (("gid", event.gid), ("sid", event.sid)) if value is not None}
            groups.append(group)
    return {"users": users, "groups": groups}


def run_on(samba: SambaFileServer, tmp_path: Path, folder: str = FOLDER) -> Rig:
    """``permwatch run`` on the share, read with the ``ntacl`` reader; the label allows the admin and alice."""
    allowed = json.dumps([ADMIN_USER, samba.account("alice")])
    labels = (
        f'[labels.definitions.ledning]\nallowed_users = {allowed}\nremediation = "on-command"\n'
        f'[[labels.rules]]\nglob = "{samba.share_path / folder}"\nlabel = "ledning"\n'
    )
    reader = f'acl_reader = "ntacl"\nsmb_conf = "{samba.conf_path}"'
    return Rig(tmp_path, samba.share_path, labels, fs=reader, directory=directory_yaml(samba))


def over_smb(samba: SambaFileServer) -> set[str]:
    """Who an SMB login lets list the folder."""
    return {samba.account(user) for user in USERS if samba_admits(samba, user, FOLDER, True)}


def settled_dry_run(run: Rig, exposure_id: str) -> subprocess.CompletedProcess[str]:
    """The dry run once the record has caught up with the last of Samba's writes (it sets the xattr last)."""

    def planned() -> subprocess.CompletedProcess[str] | None:
        done = run.cli("revert", exposure_id, "--dry-run", check=False)
        return done if done.returncode == 0 else None

    return wait_until(planned, "a revert plan the record agrees with", timeout=60)


def test_revert_puts_back_the_nt_acl_samba_served_and_samba_agrees(samba: SambaFileServer, tmp_path: Path) -> None:
    folder = samba.share_path / FOLDER
    folder.mkdir()
    (folder / "protokoll.txt").write_text("contents permwatch never reads\n")
    admin, alice = (f"PWNTACL\\{name}" for name in (ADMIN_USER, samba.account("alice")))
    grant = f"ACL:{admin}:ALLOWED/OI|CI/FULL,ACL:{alice}:ALLOWED/OI|CI/FULL"
    smbcacls(samba, FOLDER, "--set", grant)
    smbcacls(samba, f"{FOLDER}/protokoll.txt", "--set", grant.replace("OI|CI", "0x0"))
    before = served_over_smb(samba, FOLDER)
    assert over_smb(samba) == {samba.account("alice")}

    run = run_on(samba, tmp_path)
    with run.running():
        assert run.recorded() == []  # the admin and alice only: nothing to say
        smbcacls(samba, FOLDER, "--add", "ACL:S-1-1-0:ALLOWED/0x0/READ")
        widened = over_smb(samba)
        assert widened == {samba.account(u) for u in USERS}
        opened = run.wait_recorded("the exposure to open", status="opened")
        assert set(opened.users) >= widened - {samba.account("alice")}

        dry = settled_dry_run(run, opened.exposure_id)
        commands = [line for line in dry.stdout.splitlines() if not line.startswith("#")]
        assert commands and "samba_set_nt_acl.py" in commands[-1], commands
        assert str(samba.conf_path) in commands[-1] and str(folder) in commands[-1]
        assert "(A;OICI;0x001f01ff;;;" in commands[-1] and "S-1-1-0" not in commands[-1], commands[-1]
        assert over_smb(samba) == widened  # a dry run changes nothing

        done = run.cli("revert", opened.exposure_id, "--by", "soc-anna")
        assert f"reverted {opened.exposure_id}" in done.stdout
        assert over_smb(samba) == {samba.account("alice")}  # Samba's own check
        after = served_over_smb(samba, FOLDER)
        assert (after.owner, after.group, after.dacl) == (before.owner, before.group, before.dacl)
        closed = run.wait_recorded("the close through the normal path", status="closed")
        assert closed.exposure_id == opened.exposure_id
        requested, reverted = run.decisions()[-2:]
        assert (requested.action.value, reverted.action.value, reverted.by) == (
            "revert_requested",
            "reverted",
            "soc-anna",
        )
        assert list(reverted.changes) == commands

        # widened again, then changed once more over SMB before anyone reverts: the record's latest state of the
        # folder is newer than the exposure's latest event, so the revert refuses and changes nothing
        smbcacls(samba, FOLDER, "--add", "ACL:S-1-1-0:ALLOWED/0x0/READ")
        again = wait_until(
            lambda: next(
                (e for e in run.recorded() if e.status == "opened" and e.exposure_id != opened.exposure_id), None
            ),
            "the second exposure",
            timeout=60,
        )
        settled_dry_run(run, again.exposure_id)
        smbcacls(samba, FOLDER, "--add", f"ACL:{alice}:ALLOWED/0x0/READ")  # alice may read anyway: same exposure

        def refused() -> subprocess.CompletedProcess[str] | None:
            done = run.cli("revert", again.exposure_id, "--dry-run", check=False)
            return done if done.returncode == 1 and "not reverting" in done.stderr else None

        why = wait_until(refused, "the revert to be refused", timeout=60).stderr
        assert "changed after the exposure's latest record" in why or "differs from its latest record" in why
        assert over_smb(samba) == {samba.account(u) for u in USERS}


def test_a_revert_samba_cannot_carry_out_is_one_line_saying_what_was_restored(
    samba: SambaFileServer, tmp_path: Path
) -> None:
    name = "ekonomi"
    folder = samba.share_path / name
    folder.mkdir()
    admin, alice = (f"PWNTACL\\{user}" for user in (ADMIN_USER, samba.account("alice")))
    smbcacls(samba, name, "--set", f"ACL:{admin}:ALLOWED/OI|CI/FULL,ACL:{alice}:ALLOWED/OI|CI/FULL")

    run = run_on(samba, tmp_path, name)
    with run.running():
        smbcacls(samba, name, "--add", "ACL:S-1-1-0:ALLOWED/0x0/READ")
        opened = run.wait_recorded("the exposure to open", status="opened")
        dry = settled_dry_run(run, opened.exposure_id)
        planned = [line for line in dry.stdout.splitlines() if not line.startswith("#")]
        assert "samba_set_nt_acl.py" in planned[-1], planned
        # the operator's smb.conf as the revert finds it: the share moved elsewhere, nothing holds the folder now
        moved = tmp_path / "smb-moved.conf"
        text = samba.conf_path.read_text()
        assert f"\tpath = {samba.share_path}\n" in text
        moved.write_text(text.replace(f"\tpath = {samba.share_path}\n", f"\tpath = {tmp_path / 'moved'}\n"))
        config = tmp_path / "permwatch-moved.toml"
        config.write_text(run.config.read_text().replace(f'"{samba.conf_path}"', f'"{moved}"'))

        done = subprocess.run(
            [permwatch_exe(), "revert", opened.exposure_id, "--by", "soc-anna", "--config", str(config)],
            capture_output=True,
            text=True,
            timeout=120,
        )
        why = (
            f"setting the NT ACL of {folder} through Samba (smb.conf {moved}) failed: no share in {moved} holds "
            f"{folder}; POSIX permissions restored on 1 of 1 path(s), NT ACLs on 0 of 1"
        )
        assert (done.returncode, done.stdout) == (1, "")
        assert done.stderr == f"permwatch: revert of {opened.exposure_id} failed: {why}\n"
        requested, failed = run.decisions()[-2:]
        assert (requested.action.value, failed.action.value, failed.by, failed.reason) == (
            "revert_requested",
            "revert_failed",
            "soc-anna",
            why,
        )
        assert list(failed.changes) == planned[:-1]  # the POSIX side's commands, all made; Samba's step not
