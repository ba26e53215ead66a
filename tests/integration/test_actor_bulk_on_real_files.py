"""A bulk change of 10,000 real paths by one process: one burst, naming its actor, every event attributed (#18).

erik runs one ``chmod -R o+rX`` over 100 labelled case folders of 100 paths each (the real binary, as his uid,
held alive after its last change so the attribution is a fact, not a race). Every exposure it opens names erik
with the pidfd's confidence, none counts an event whose actor could not be resolved, and the alerts stage puts
all 100 in one group: the single grouped alert.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.integration.held_commands import run_and_hold
from tests.integration.pipeline import traversable_tempdir, wait_until
from tests.integration.run_on_share import permwatch_run, records

pytestmark = pytest.mark.integration

MGMT, STAFF = 32281, 32282
ERIK = {"name": "erik", "uid": 33281, "gid": MGMT}
DIRECTORY = {
    "users": [ERIK, {"name": "cecilia", "uid": 33282, "gid": STAFF}],
    "groups": [
        {"name": "ledningsgrupp", "gid": MGMT, "members": ["erik"]},
        {"name": "alla", "gid": STAFF, "members": ["cecilia"]},
    ],
}
FOLDERS, FILES = 100, 99  # 100 x (the folder + 99 files) = 10,000 paths


@pytest.fixture
def share() -> Iterator[Path]:
    with traversable_tempdir("permwatch-bulk-") as base:
        share = base / "share"
        cases = share / "cases"
        cases.mkdir(parents=True)
        os.chmod(share, 0o755)
        os.chown(cases, ERIK["uid"], MGMT)  # his whole tree: an error on any operand would hold chmod early
        os.chmod(cases, 0o755)
        for n in range(FOLDERS):
            folder = cases / f"case-{n:03d}"
            folder.mkdir()
            os.chown(folder, ERIK["uid"], MGMT)
            os.chmod(folder, 0o750)
            for i in range(FILES):
                path = folder / f"doc-{i:02d}.txt"
                path.write_text("contents permwatch never reads\n")
                os.chown(path, ERIK["uid"], MGMT)
                os.chmod(path, 0o640)
        yield share


def test_one_process_changing_10000_paths_is_one_burst_naming_it(share: Path, tmp_path: Path) -> None:
    cases = share / "cases"
    with permwatch_run(tmp_path, share, cases / "*", DIRECTORY) as alerts:
        held = run_and_hold(ERIK["uid"], MGMT, "chmod", "-R", "o+rX", str(cases))

        def all_read() -> list[dict[str, object]] | None:
            # every folder opened, and every path of the burst read (a burst is read shallowest first, so a
            # folder's exposure opens before its files are counted: issue 21's coalesced reads)
            found = records(alerts)
            opened = [r for r in found if r["status"] == "opened"]
            latest = {r["exposure_id"]: r for r in found}
            complete = len(latest) == FOLDERS and all(r["paths_affected"] == FILES + 1 for r in latest.values())
            return opened if len({r["exposure_id"] for r in opened}) == FOLDERS and complete else None

        try:
            opened = wait_until(all_read, f"{FOLDERS} exposures of {FILES + 1} paths each", timeout=180)
        finally:
            held.release()
        latest = {r["exposure_id"]: r for r in records(alerts)}
    assert {(r["actor"], r["actor_confidence"]) for r in opened} == {("erik", "pidfd")}
    assert all("actor_unresolved" not in r for r in latest.values())  # every event of the burst was attributed
    assert len({r["group_id"] for r in records(alerts)}) == 1  # one burst: the single grouped alert
    assert all(r["paths_affected"] == FILES + 1 for r in latest.values())
