"""Opens while exposed, on real files: an outsider's ``cat`` during an exposure is in the breach report (#18).

``permwatch run`` watches a share with ``[[fs]] actors`` and ``opens = "fanotify"`` (and again with
``"fanotify_permission"``, whose marks hold every open, the collector's own walks included). erik, who owns the labelled
folder, opens it to everyone with ``chmod -R``; cecilia, outside the label, reads a file with ``cat`` (the real
binary, as her uid, via ``setpriv``); erik closes it again; then cecilia's second ``cat`` is refused by the kernel,
and erik's own, after the close, is recorded on the ``access`` topic but is no open *while exposed*. The report
``permwatch breach-report`` writes names cecilia's open, once, and the counts of Art. 33(3)(c). The processor
marks her open live (``exposure.opened_by``) while the exposure is still open, and marks nothing else.
"""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from permwatch.events import TOPIC_ACCESS, TOPIC_EXPOSURES, ExposureOpenedBy, FsAccessEvent, decode
from permwatch.transport.embedded import EmbeddedBus
from tests.integration.held_commands import run_and_hold
from tests.integration.pipeline import permwatch_exe, traversable_tempdir, wait_until
from tests.integration.run_on_share import permwatch_run, record_saying

pytestmark = pytest.mark.integration

MGMT, STAFF = 32271, 32272
ERIK = {"name": "erik", "uid": 33271, "gid": MGMT}
CECILIA = {"name": "cecilia", "uid": 33272, "gid": STAFF}
DIRECTORY = {
    "users": [ERIK, CECILIA],
    "groups": [
        {"name": "ledningsgrupp", "gid": MGMT, "members": ["erik"]},
        {"name": "alla", "gid": STAFF, "members": ["cecilia"]},
    ],
}
LABEL = """
[labels.definitions.ledning.personal_data]
data_categories = ["board minutes"]
subject_categories = ["employees"]
approx_subjects = 40
data_owner = "CEO"
[breach_report.dpo]
name = "Dana Dataskydd"
email = "dpo@verkstad.example"
"""


@pytest.fixture
def share() -> Iterator[Path]:
    with traversable_tempdir("permwatch-opens-") as base:
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


def opens_recorded(events_db: Path) -> list[FsAccessEvent]:
    bus = EmbeddedBus(events_db)
    try:
        found = [decode(record.value) for record in bus.history([TOPIC_ACCESS])]
    finally:
        bus.close()
    return [e for e in found if isinstance(e, FsAccessEvent)]


def marked_live(events_db: Path) -> list[ExposureOpenedBy]:
    """The live processor's marks of outsiders' opens while exposed, on the ``exposures`` topic."""
    bus = EmbeddedBus(events_db)
    try:
        found = [decode(record.value) for record in bus.history([TOPIC_EXPOSURES])]
    finally:
        bus.close()
    return [e for e in found if isinstance(e, ExposureOpenedBy)]


def processor_read_all_opens(events_db: Path) -> bool:
    bus = EmbeddedBus(events_db)
    try:
        lag = bus.lag_probe([TOPIC_ACCESS], "permwatch-processor").lag()
    finally:
        bus.close()
    return lag is not None and not any(lag.values())


def opened_by(events_db: Path, uid: int, path: str) -> FsAccessEvent | None:
    return next((e for e in opens_recorded(events_db) if e.actor.uid == uid and e.path == path), None)


@pytest.mark.parametrize("opens", ["fanotify", "fanotify_permission"])
def test_an_outsiders_cat_while_exposed_is_in_the_report_and_opens_after_the_close_are_not(
    share: Path, tmp_path: Path, opens: str
) -> None:
    folder = share / "ledning"
    file = str(folder / "protokoll.txt")
    events_db = tmp_path / "state" / "events.db"
    with permwatch_run(tmp_path, share, folder, DIRECTORY, extra=LABEL.replace("[[fs]]", ""), opens=opens) as alerts:
        held = run_and_hold(ERIK["uid"], MGMT, "chmod", "o+rX", str(folder), file)
        opened = wait_until(lambda: record_saying(alerts, status="opened"), "the exposure")
        held.release()
        assert opened["actor"] == "erik" and opened["users"] == ["cecilia"]

        reader = run_and_hold(CECILIA["uid"], STAFF, "cat", file)
        during = wait_until(lambda: opened_by(events_db, CECILIA["uid"], file), "cecilia's open on the access topic")
        reader.release()
        assert during.actor.process == "cat" and during.actor.confidence == "pidfd" and during.folder == str(folder)
        # marked live by the processor while the exposure is still open (issue 18)
        live = wait_until(lambda: marked_live(events_db), "the processor's live mark of cecilia's open")
        assert [(m.who, m.exposure_id, m.path, m.outsider) for m in live] == [
            ("cecilia", opened["exposure_id"], file, True)
        ]
        assert live[0].access_event_id == during.event_id and live[0].observed_at == during.observed_at
        assert record_saying(alerts, status="closed") is None

        held = run_and_hold(ERIK["uid"], MGMT, "chmod", "o-rwx", str(folder), file)
        wait_until(lambda: record_saying(alerts, status="closed"), "the close")
        held.release()

        refused = subprocess.run(
            ["setpriv", f"--reuid={CECILIA['uid']}", f"--regid={STAFF}", "--clear-groups", "cat", file],
            capture_output=True,
        )
        assert refused.returncode != 0  # closed: the kernel refuses her, so there is no open to record
        owner = run_and_hold(ERIK["uid"], MGMT, "cat", file)
        wait_until(lambda: opened_by(events_db, ERIK["uid"], file), "erik's open after the close")
        owner.release()
        wait_until(lambda: processor_read_all_opens(events_db), "the processor to read erik's open")
    assert [e.actor.uid for e in opens_recorded(events_db) if e.path == file].count(CECILIA["uid"]) == 1
    # erik's open after the close is on the access topic and the processor read it (a clean stop judges what it
    # read), and it is not marked: the exposure had closed
    assert [m.who for m in marked_live(events_db)] == ["cecilia"]

    config = tmp_path / "permwatch.toml"
    for fmt in ("markdown", "html"):
        done = subprocess.run(
            [permwatch_exe(), "breach-report", opened["exposure_id"], "--config", str(config), "--format", fmt],
            capture_output=True,
            text=True,
        )
        assert done.returncode == 0, done.stderr
        report = done.stdout
        if fmt == "html":
            assert report.startswith("<!DOCTYPE html>") and "cecilia" in report
            continue
        lines = report.splitlines()
        assert "- **Outsiders who opened files while exposed:** 1 person, 1 open, first at " in "\n".join(lines)
        rows = [line for line in lines if line.startswith("| 20")]
        assert len(rows) == 1 and "| cecilia |" in rows[0] and "protokoll.txt" in rows[0]
        assert "- **Opens by people the label allows, in the same window:** 0 (not a breach)" in lines
        assert "- **Change made by:** erik (uid from fanotify, pidfd)" in lines
        assert any(
            line.startswith("- **Permissions restored (exposure closed):** ") and "by erik" in line for line in lines
        )
        assert "- **Categories of personal data:** board minutes" in lines
        assert "- **Data protection officer:** Dana Dataskydd, dpo@verkstad.example" in lines
