"""The first run on a share that already has folders open (issue 19 item 1): one entitlement report and one alert
that points to it, not one alert per folder; later, a new exposure alerts on its own and a widening of a
pre-existing one is told in the first run's thread."""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.integration.pipeline import traversable_tempdir, wait_until
from tests.integration.respond_rig import CECILIA, EXTERN, STAFF, Rig, as_user, make
from tests.integration.servers.fake_slack import FakeSlack

pytestmark = pytest.mark.integration

TOKEN, CHANNEL = "xoxb-first-run", "C0SOC"


@pytest.fixture
def fake_slack(monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeSlack]:
    monkeypatch.setenv("PW_FIRST_RUN_TOKEN", TOKEN)
    with FakeSlack(TOKEN, channels=(CHANNEL,)) as server:
        yield server


@pytest.fixture
def share() -> Iterator[Path]:
    with traversable_tempdir("permwatch-first-run-") as base:
        share = base / "share"
        share.mkdir()
        os.chmod(share, 0o755)
        yield share


def test_a_tree_with_preexisting_exposures_gives_one_report_and_one_alert(
    share: Path, tmp_path: Path, fake_slack: FakeSlack
) -> None:
    ledning = make(share / "ledning", directory=True, mode=0o750)
    styrelse = make(share / "styrelse", directory=True, mode=0o754)  # other r--: everyone lists its names only
    hr = make(share / "hr", directory=True, mode=0o750)
    ekonomi = make(share / "ekonomi", directory=True, mode=0o750)  # closed: nothing to report
    for folder in (ledning, hr, ekonomi):
        make(folder / "notes.txt", directory=False, mode=0o640)
    subprocess.run(["setfacl", "-R", "-m", f"g:{STAFF}:rX", str(ledning)], check=True)
    subprocess.run(["setfacl", "-m", f"g:{STAFF}:r-x", str(hr)], check=True)
    assert as_user(CECILIA, "cat", str(ledning / "notes.txt")) and as_user(CECILIA, "ls", str(styrelse))
    labels = f"""
[labels.definitions.ledning]
allowed_groups = ["ledningsgrupp"]
[labels.definitions.hr]
severity = "critical"
allowed_groups = ["ledningsgrupp"]
[[labels.rules]]
glob = "{share}/hr"
label = "hr"
[[labels.rules]]
glob = "{share}/*"
label = "ledning"
"""
    slack = f"""
[[alerts.sinks]]
kind = "slack"
channel = "{CHANNEL}"
token_env = "PW_FIRST_RUN_TOKEN"
api_url = "{fake_slack.base_url}"
"""
    rig = Rig(tmp_path, share, labels, extra=slack)
    with rig.running():
        opened = wait_until(
            lambda: len(found := [a for a in rig.alerted() if a["status"] == "opened"]) == 3 and found,
            "three pre-existing exposures alerted",
        )
        assert {a["folder"] for a in opened} == {str(ledning), str(styrelse), str(hr)}
        assert all(a["preexisting"] for a in opened)
        assert len({a["group_id"] for a in opened}) == 1  # one alert
        (root,) = wait_until(lambda: fake_slack.root_messages(CHANNEL), "the Slack alert")
        wait_until(lambda: "3 folders" in (fake_slack.root_messages(CHANNEL)[0]["text"] or ""), "all three in it")
        (root,) = fake_slack.root_messages(CHANNEL)
        assert root["text"].startswith("First run: 3 folders already open to people outside their label")
        assert "permwatch entitlements" in str(root["blocks"])
        assert fake_slack.replies(CHANNEL, root["ts"]) == []  # no reply per folder

        report = rig.cli("entitlements").stdout
        assert "3 pre-existing exposure(s) still open" in report
        assert "## Label `hr` (severity critical): 1 folder(s), up to 1 people" in report
        assert "## Label `ledning` (severity high): 2 folder(s)" in report
        assert f"| `{ledning}` | 1 | alla | group:alla | contents |" in report
        assert f"| `{styrelse}` | 2 | - | other:: | names |" in report  # everyone: cecilia and erik

        # later: a new exposure is an alert of its own; a widening of a pre-existing one is told in its thread
        subprocess.run(["setfacl", "-m", f"g:{STAFF}:r-x", str(ekonomi)], check=True)
        wait_until(lambda: len(fake_slack.root_messages(CHANNEL)) == 2, "the new exposure's own alert")
        new = next(a for a in rig.alerted() if a["folder"] == str(ekonomi))
        assert "preexisting" not in new and new["group_id"] != opened[0]["group_id"]
        subprocess.run(["setfacl", "-m", f"g:{EXTERN}:r-x", str(ledning)], check=True)
        reply = wait_until(lambda: fake_slack.replies(CHANNEL, root["ts"]), "the widening told in the thread")
        assert "Changed" in reply[0]["text"] and str(ledning) in str(reply[0]["blocks"])
    assert len(fake_slack.root_messages(CHANNEL)) == 2
