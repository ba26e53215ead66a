"""Who changed it, on real files: a chmod and a setfacl run by another uid name that user on the exposure (#18).

``permwatch run`` watches a share with ``[[fs]] actors = "fanotify"``; erik, who owns the labelled folder but
whose uid only the directory file names, opens it to everyone with ``chmod`` and later to ``alla`` with
``setfacl``. The commands are the real binaries run with ``setpriv``; each is held alive after its change (see
held_commands.py) until the exposure record has appeared, so the attribution is a fact, not a race.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.integration.held_commands import run_and_hold
from tests.integration.pipeline import traversable_tempdir, wait_until
from tests.integration.run_on_share import permwatch_run, record_saying, records

pytestmark = pytest.mark.integration

MGMT, STAFF = 32261, 32262
ERIK = {"name": "erik", "uid": 33261, "gid": MGMT}
DIRECTORY = {
    "users": [ERIK, {"name": "cecilia", "uid": 33262, "gid": STAFF}],
    "groups": [
        {"name": "ledningsgrupp", "gid": MGMT, "members": ["erik"]},
        {"name": "alla", "gid": STAFF, "members": ["cecilia"]},
    ],
}


@pytest.fixture
def share() -> Iterator[Path]:
    with traversable_tempdir("permwatch-actor-") as base:
        share = base / "share"
        share.mkdir()
        os.chmod(share, 0o755)
        folder = share / "ledning"
        folder.mkdir()
        (folder / "protokoll.txt").write_text("contents permwatch never reads\n")
        for path in (folder, folder / "protokoll.txt"):
            os.chown(path, ERIK["uid"], MGMT)
        os.chmod(folder, 0o750)
        os.chmod(folder / "protokoll.txt", 0o640)
        yield share


def test_a_chmod_and_a_setfacl_by_another_uid_name_that_user_on_the_exposure(share: Path, tmp_path: Path) -> None:
    folder = share / "ledning"
    file = str(folder / "protokoll.txt")
    with permwatch_run(tmp_path, share, folder, DIRECTORY) as alerts:
        held = run_and_hold(ERIK["uid"], MGMT, "chmod", "o+rx", str(folder))
        by_chmod = wait_until(lambda: record_saying(alerts, status="opened"), "the chmod's exposure")
        held.release()
        held = run_and_hold(ERIK["uid"], MGMT, "chmod", "o-rx", str(folder))
        wait_until(lambda: record_saying(alerts, status="closed"), "the close")
        held.release()
        held = run_and_hold(ERIK["uid"], MGMT, "setfacl", "-m", f"g:{STAFF}:rx", str(folder), file)
        by_setfacl = wait_until(
            lambda: next((r for r in records(alerts)[2:] if r["status"] == "opened"), None), "the setfacl's exposure"
        )
        held.release()
    assert (by_chmod["actor"], by_chmod["actor_confidence"]) == ("erik", "pidfd")
    assert "actor_unresolved" not in by_chmod  # every event behind it was attributed
    assert (by_setfacl["actor"], by_setfacl["actor_confidence"]) == ("erik", "pidfd")
    assert by_setfacl["groups"] == ["alla"]
