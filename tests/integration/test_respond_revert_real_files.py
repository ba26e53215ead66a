"""Revert on real files (issue 19 item 3), checked by the kernel: ``setpriv`` as an outsider reads before and cannot
after. The dry run prints the exact commands and changes nothing; a folder changed since the exposure's latest record
is refused and left alone; ``remediation = "off"`` refuses; ``"automatic"`` reverts a new exposure by itself. Every
step is a decision on the record, and the exposure closes through the normal path."""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from permwatch.events import TOPIC_FS, FsPermissionEvent, unbatched
from tests.integration.pipeline import traversable_tempdir, wait_until
from tests.integration.respond_rig import ANNA, CECILIA, STAFF, Rig, as_user, make

pytestmark = pytest.mark.integration


@pytest.fixture
def share() -> Iterator[Path]:
    with traversable_tempdir("permwatch-revert-") as base:
        share = base / "share"
        share.mkdir()
        os.chmod(share, 0o755)
        yield share


def labels_for(folder: Path, remediation: str | None) -> str:
    setting = f'remediation = "{remediation}"' if remediation else ""
    return (
        f'[labels.definitions.ledning]\nallowed_groups = ["ledningsgrupp"]\n{setting}\n'
        f'[[labels.rules]]\nglob = "{folder}"\nlabel = "ledning"\n'
    )


def outsider_reads(folder: Path, notes: Path) -> tuple[bool, bool]:
    return as_user(CECILIA, "ls", str(folder)), as_user(CECILIA, "cat", str(notes))


def test_revert_restores_mode_and_acl_and_the_kernel_agrees(share: Path, tmp_path: Path) -> None:
    folder = make(share / "ledning", directory=True, mode=0o750)
    notes = make(folder / "protokoll.txt", directory=False, mode=0o640)
    rig = Rig(tmp_path, share, labels_for(folder, "on-command"))
    with rig.running():
        subprocess.run(["setfacl", "-R", "-m", f"g:{STAFF}:rX", str(folder)], check=True)
        assert outsider_reads(folder, notes) == (True, True)
        exposure = rig.wait_recorded("the exposure to cover both paths", paths_affected=2)

        dry = rig.cli("revert", exposure.exposure_id, "--dry-run")
        lines = [line for line in dry.stdout.splitlines() if not line.startswith("#")]
        assert lines == [
            f"setfacl --set u::rw-,g::r--,o::--- {notes}",
            f"chmod 0640 {notes}",
            f"setfacl --set u::rwx,g::r-x,o::--- {folder}",
            f"chmod 0750 {folder}",
        ]
        assert outsider_reads(folder, notes) == (True, True)  # a dry run changes nothing
        assert rig.decisions() == []

        done = rig.cli("revert", exposure.exposure_id, "--by", "soc-anna")
        assert f"reverted {exposure.exposure_id}" in done.stdout
        assert outsider_reads(folder, notes) == (False, False)  # the kernel's own check
        getfacl = subprocess.run(["getfacl", "-cp", str(folder)], capture_output=True, text=True, check=True)
        assert getfacl.stdout.split() == ["user::rwx", "group::r-x", "other::---"]
        closed = rig.wait_recorded("the close through the normal path", status="closed")
        assert closed.exposure_id == exposure.exposure_id
    requested, reverted = rig.decisions()
    assert (requested.action.value, requested.by, requested.via) == ("revert_requested", "soc-anna", "cli")
    assert (reverted.action.value, list(reverted.changes)) == ("reverted", lines)
    timeline = rig.cli("timeline", exposure.exposure_id).stdout
    assert f"reverted {exposure.exposure_id} by soc-anna (cli) [setfacl --set" in timeline


def test_revert_is_refused_when_the_folder_changed_since_and_when_remediation_is_off(
    share: Path, tmp_path: Path
) -> None:
    folder = make(share / "ledning", directory=True, mode=0o750)
    notes = make(folder / "protokoll.txt", directory=False, mode=0o640)
    rig = Rig(tmp_path, share, labels_for(folder, "on-command"))
    with rig.running():
        subprocess.run(["setfacl", "-m", f"g:{STAFF}:r-x", str(folder)], check=True)
        exposure = rig.wait_recorded("the exposure to open", status="opened")
        # someone else is at work on the folder: anna (allowed) gets an entry; the exposure does not change
        subprocess.run(["setfacl", "-m", f"u:{ANNA['uid']}:rwx", str(folder)], check=True)

        def anna_recorded() -> bool:
            for event in rig._history(TOPIC_FS):
                for one in unbatched(event):
                    if isinstance(one, FsPermissionEvent) and any(e.qualifier == ANNA["uid"] for e in one.acl):
                        return True
            return False

        wait_until(anna_recorded, "the collector to record anna's entry")
        refused = rig.cli("revert", exposure.exposure_id, check=False)
        assert refused.returncode == 1
        assert refused.stderr.strip() == (
            f"permwatch: revert of {exposure.exposure_id} refused: {folder} changed after the exposure's latest "
            f"record ({exposure.event_id}): not reverting"
        )
        assert as_user(CECILIA, "ls", str(folder)) and as_user(ANNA, "ls", str(folder))  # untouched
        assert [d.action.value for d in rig.decisions()] == ["revert_requested", "revert_refused"]
    assert notes.exists()
    (tmp_path / "off").mkdir()
    rig_off = Rig(tmp_path / "off", share, labels_for(folder, None))  # a fresh log: the exposure is found again
    with rig_off.running():
        exposure = rig_off.wait_recorded("the exposure, found again", status="opened")
        off = rig_off.cli("revert", exposure.exposure_id, "--dry-run", check=False)
        assert off.returncode == 1
        assert 'has remediation = "off"' in off.stderr
    # the same exposure on a label that allows reverts: found by the first scan, it has no earlier state
    (tmp_path / "on").mkdir()
    rig_on = Rig(tmp_path / "on", share, labels_for(folder, "on-command"))
    with rig_on.running():
        exposure = rig_on.wait_recorded("the exposure, found again", status="opened")
        assert exposure.preexisting
        first = rig_on.cli("revert", exposure.exposure_id, check=False)
        assert first.returncode == 1
        assert "there before permwatch's first scan: no earlier state is recorded" in first.stderr
    assert as_user(CECILIA, "ls", str(folder))


def test_automatic_remediation_reverts_a_new_exposure_by_itself(share: Path, tmp_path: Path) -> None:
    folder = make(share / "ledning", directory=True, mode=0o750)
    notes = make(folder / "protokoll.txt", directory=False, mode=0o640)
    rig = Rig(tmp_path, share, labels_for(folder, "automatic"))
    with rig.running():
        subprocess.run(["chmod", "o+rx", str(folder)], check=True)  # one change: outsiders list the names
        assert as_user(CECILIA, "ls", str(folder))
        opened = rig.wait_recorded("the exposure to open", status="opened")
        closed = rig.wait_recorded("the automatic revert to close it", status="closed")
        assert closed.exposure_id == opened.exposure_id
        assert outsider_reads(folder, notes) == (False, False)
    actions = [(d.action.value, d.by, d.via) for d in rig.decisions()]
    assert actions[:2] == [("revert_requested", "automatic", "automatic"), ("reverted", "automatic", "automatic")]
