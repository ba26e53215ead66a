"""Decisions on a real share (issue 19): ``permwatch approve`` silences exactly that exposure's changes, a further
widening alerts anyway, the approval survives a restart, and ``timeline`` and ``report`` show the decisions."""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from tests.integration.pipeline import traversable_tempdir, wait_until
from tests.integration.respond_rig import CECILIA, EXTERN, STAFF, Rig, as_user, make

pytestmark = pytest.mark.integration


@pytest.fixture
def share() -> Iterator[Path]:
    with traversable_tempdir("permwatch-respond-") as base:
        share = base / "share"
        share.mkdir()
        os.chmod(share, 0o755)
        yield share


def labels_for(folder: Path, extra: str = "") -> str:
    return (
        f'[labels.definitions.ledning]\nallowed_groups = ["ledningsgrupp"]\n{extra}\n'
        f'[[labels.rules]]\nglob = "{folder}"\nlabel = "ledning"\n'
    )


def test_approve_silences_its_exposure_until_a_widening_and_survives_a_restart(share: Path, tmp_path: Path) -> None:
    folder = make(share / "ledning", directory=True, mode=0o750)
    notes = make(folder / "protokoll.txt", directory=False, mode=0o640)
    rig = Rig(tmp_path, share, labels_for(folder))
    with rig.running():
        subprocess.run(["setfacl", "-m", f"g:{STAFF}:r-x", str(folder)], check=True)
        opened = rig.wait_recorded("the exposure to open", status="opened")
        wait_until(lambda: [a for a in rig.alerted() if a["event_id"] == opened.event_id], "the opening alert")
        approved = rig.cli("approve", opened.exposure_id, "--reason", "board pack for all", "--until", "+1d")
        assert f"approve: {opened.exposure_id}" in approved.stdout
        ack = rig.cli("ack", opened.exposure_id, "--by", "soc-anna")
        assert "acknowledge" in ack.stdout
        unknown = rig.cli("approve", "exp-nope", "--reason", "x", "--until", "+1d", check=False)
        assert (unknown.returncode, unknown.stderr.strip()) == (1, "permwatch: no exposure exp-nope on the record")
    with rig.running():  # the approval is rebuilt from the decisions topic (or the checkpoint)
        subprocess.run(["setfacl", "-m", f"g:{STAFF}:r--", str(notes)], check=True)  # same people, one more path
        assert as_user(CECILIA, "cat", str(notes))
        silent = rig.wait_recorded("the approved change", status="changed", paths_affected=2)
        assert silent.approval is not None and not silent.approval.widened
        assert silent.approval.reason == "board pack for all"
        subprocess.run(["setfacl", "-m", f"g:{EXTERN}:r-x", str(folder)], check=True)  # new people: erik
        widened = rig.wait_recorded("the widening", status="changed", people=2)
        assert widened.approval is not None and widened.approval.widened
        # the widening is alerted; by then the approved change before it (same key, in order) was skipped
        wait_until(lambda: [a for a in rig.alerted() if a["event_id"] == widened.event_id], "the widening alert")
    alerted = {a["event_id"] for a in rig.alerted()}
    assert silent.event_id not in alerted
    assert alerted == {opened.event_id, widened.event_id}
    assert [d.action.value for d in rig.decisions()] == ["approve", "acknowledge"]
    timeline = rig.cli("timeline", opened.exposure_id).stdout
    assert f"decision  approve {opened.exposure_id} by " in timeline
    assert "board pack for all" in timeline
    assert f"acknowledge {opened.exposure_id} by soc-anna (cli)" in timeline
    report = rig.cli("report", opened.exposure_id).stdout
    assert "## Decisions" in report
    assert "| approve |" in report and "| acknowledge | soc-anna | cli |" in report


def test_an_approval_that_runs_out_is_said_and_the_next_change_alerts(share: Path, tmp_path: Path) -> None:
    folder = make(share / "ledning", directory=True, mode=0o750)
    notes = make(folder / "protokoll.txt", directory=False, mode=0o640)
    rig = Rig(tmp_path, share, labels_for(folder))
    with rig.running():
        subprocess.run(["setfacl", "-m", f"g:{STAFF}:r-x", str(folder)], check=True)
        opened = rig.wait_recorded("the exposure to open", status="opened")
        until = datetime.now(UTC) + timedelta(seconds=6)  # time enough for the change below on a busy machine
        rig.cli("approve", opened.exposure_id, "--reason", "a short while", "--until", until.isoformat())
        subprocess.run(["setfacl", "-m", f"g:{STAFF}:r--", str(notes)], check=True)
        silent = rig.wait_recorded("the approved change", status="changed", paths_affected=2)
        assert silent.approval is not None and silent.approval.until == until
        # still open when it runs out: said once, and alerted
        expired = rig.wait_recorded("the expiry said", cause_event_ids=(f"expiry.{opened.exposure_id}",))
        assert expired.detected_at >= until and expired.approval is None and expired.status.value == "changed"
        wait_until(lambda: expired.event_id in {a["event_id"] for a in rig.alerted()}, "the expiry alerted")
        subprocess.run(["setfacl", "-x", f"g:{STAFF}", str(notes)], check=True)
        later = rig.wait_recorded("the change after expiry", status="changed", paths_affected=1)
        assert later.approval is None
        wait_until(lambda: later.event_id in {a["event_id"] for a in rig.alerted()}, "the change alerted")
    assert silent.event_id not in {a["event_id"] for a in rig.alerted()}
