"""Slack buttons on a real share (issue 19): the alert carries Acknowledge / Approve / Revert; the fake Slack
clicks them the way Slack does (form-encoded ``block_actions``, signed with the configured secret). A bad signature
or a timestamp older than five minutes gets 401 and no decision; a valid click publishes one. Approve opens a form
(``views.open``): its submission, with a reason and the last day, is the approval, which silences that exposure's
changes; an empty reason is answered with the form's own error and approves nothing. The signing secret appears
in no log line."""

from __future__ import annotations

import os
import re
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.integration.pipeline import traversable_tempdir, wait_until
from tests.integration.respond_rig import CECILIA, ERIK, EXTERN, STAFF, Rig, as_user, make
from tests.integration.servers.fake_slack import FakeSlack

pytestmark = pytest.mark.integration

TOKEN, CHANNEL = "xoxb-respond-test", "C0SOC"
SECRET = "8f14e45fceea167a5a36dedd4bea2543"
SERVING = re.compile(r"slack interactions: serving (http://127\.0\.0\.1:\d+/slack/interactions)")


@pytest.fixture
def fake_slack(monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeSlack]:
    monkeypatch.setenv("PW_RESPOND_SLACK_TOKEN", TOKEN)
    monkeypatch.setenv("PW_RESPOND_SIGNING_SECRET", SECRET)
    with FakeSlack(TOKEN, channels=(CHANNEL,)) as server:
        yield server


@pytest.fixture
def share() -> Iterator[Path]:
    with traversable_tempdir("permwatch-slack-buttons-") as base:
        share = base / "share"
        share.mkdir()
        os.chmod(share, 0o755)
        yield share


def test_signed_clicks_become_decisions_and_unsigned_or_stale_ones_change_nothing(
    share: Path, tmp_path: Path, fake_slack: FakeSlack
) -> None:
    folder = make(share / "ledning", directory=True, mode=0o750)
    notes = make(folder / "protokoll.txt", directory=False, mode=0o640)
    labels = (
        f'[labels.definitions.ledning]\nallowed_groups = ["ledningsgrupp"]\nremediation = "on-command"\n'
        f'[[labels.rules]]\nglob = "{folder}"\nlabel = "ledning"\n'
    )
    slack = f"""
[[alerts.sinks]]
kind = "slack"
channel = "{CHANNEL}"
token_env = "PW_RESPOND_SLACK_TOKEN"
api_url = "{fake_slack.base_url}"
interactions_listen = "127.0.0.1:0"
signing_secret_env = "PW_RESPOND_SIGNING_SECRET"
"""
    rig = Rig(tmp_path, share, labels, extra=slack)
    with rig.running():
        url = wait_until(lambda: SERVING.search(rig.log.read_text()), "the interactions endpoint").group(1)
        subprocess.run(["setfacl", "-m", f"g:{STAFF}:r-x", str(folder)], check=True)
        opened = rig.wait_recorded("the exposure to open", status="opened")
        (root,) = wait_until(lambda: fake_slack.root_messages(CHANNEL), "the Slack alert")
        actions = [b for b in root["blocks"] if b["type"] == "actions"]
        assert [[e["text"]["text"] for e in b["elements"]] for b in actions] == [["Acknowledge", "Approve", "Revert"]]
        assert actions[0]["block_id"] == f"permwatch-{opened.exposure_id}"

        bad = fake_slack.click(url, root, "permwatch_ack", secret="not-the-secret")
        stale = fake_slack.click(url, root, "permwatch_ack", secret=SECRET, timestamp=int(time.time()) - 301)
        forged = fake_slack.click(url, root, "permwatch_approve", secret=SECRET, signature="v0=" + "0" * 64)
        assert (bad, stale, forged) == (401, 401, 401)
        assert rig.decisions() == []

        assert fake_slack.click(url, root, "permwatch_ack", secret=SECRET) == 200
        # Approve asks first: the click opens a form (views.open, checked by the fake against Slack's limits)
        assert fake_slack.click(url, root, "permwatch_approve", secret=SECRET, user=("U0BO", "bo")) == 200
        (form,) = wait_until(lambda: fake_slack.views, "the approval form to open")
        until = next(b for b in form["blocks"] if b.get("block_id") == "until")["element"]
        assert until["type"] == "datepicker" and until["initial_date"] > time.strftime("%Y-%m-%d", time.gmtime())
        day = time.strftime("%Y-%m-%d", time.gmtime(time.time() + 3 * 86400))
        empty = {"reason": {"reason": {"type": "plain_text_input", "value": " "}}}
        empty["until"] = {"until": {"type": "datepicker", "selected_date": day}}
        status, answer = fake_slack.submit_view(url, form, empty, secret=SECRET, user=("U0BO", "bo"))
        assert (status, answer) == (
            200,
            {"response_action": "errors", "errors": {"reason": "Say why this access is intended."}},
        )
        values = {**empty, "reason": {"reason": {"type": "plain_text_input", "value": "styrelsen granskar i veckan"}}}
        assert fake_slack.submit_view(url, form, values, secret=SECRET, user=("U0BO", "bo")) == (200, None)
        ack, approve = wait_until(lambda: len(rig.decisions()) == 2 and rig.decisions(), "two decisions")
        assert (ack.action.value, ack.by, ack.via, ack.exposure_id) == (
            "acknowledge",
            "slack:U0ANNA (anna)",
            "slack",
            opened.exposure_id,
        )
        assert (approve.action.value, approve.by, approve.folder, approve.exposure_id) == (
            "approve",
            "slack:U0BO (bo)",
            str(folder),
            opened.exposure_id,
        )
        assert approve.reason == "styrelsen granskar i veckan"
        assert approve.until is not None and approve.until.date().isoformat() > day  # through the end of that day

        subprocess.run(["setfacl", "-m", f"g:{STAFF}:r--", str(notes)], check=True)
        silent = rig.wait_recorded("the approved change", status="changed", paths_affected=2)
        assert silent.approval is not None and silent.approval.by == "slack:U0BO (bo)"
        subprocess.run(["setfacl", "-m", f"g:{EXTERN}:r-x", str(folder)], check=True)  # erik: a widening
        widened = rig.wait_recorded("the widening", status="changed", people=2)
        wait_until(lambda: widened.event_id in {a["event_id"] for a in rig.alerted()}, "the widening alerted")

        # Revert: the collector role's executor carries it out; the kernel agrees; the exposure closes
        (root,) = fake_slack.root_messages(CHANNEL)
        assert fake_slack.click(url, root, "permwatch_revert", secret=SECRET) == 200
        closed = rig.wait_recorded("the revert to close the exposure", status="closed")
        assert closed.exposure_id == opened.exposure_id
        assert not as_user(CECILIA, "ls", str(folder)) and not as_user(ERIK, "ls", str(folder))
    # by then the dispatcher had read the approved change before it (same key, in order) and skipped it
    assert silent.event_id not in {a["event_id"] for a in rig.alerted()}
    actions = [(d.action.value, d.by, d.via) for d in rig.decisions()][2:]
    assert actions == [
        ("revert_requested", "slack:U0ANNA (anna)", "slack"),
        ("reverted", "slack:U0ANNA (anna)", "slack"),
    ]
    assert SECRET not in rig.log.read_text()
    assert "refused a request (bad signature)" in rig.log.read_text()
    assert "refused a request (stale timestamp)" in rig.log.read_text()
