"""Every sink says which kind an exposure is: names only (a folder outsiders can list) or contents."""

from __future__ import annotations

import io
import json
from pathlib import Path

import pytest

from alerts.alertmanager import AlertmanagerConfig, AlertmanagerSink
from alerts.console import ConsoleConfig, ConsoleSink
from alerts.grouping import BurstGrouper, GroupUpdate
from alerts.jsonl import JsonlConfig, JsonlSink
from alerts.mail import EmailConfig, EmailSink
from alerts.slack import SlackConfig, SlackSink
from alerts.syslog import SyslogConfig, SyslogSink
from alerts.teams import TeamsConfig, TeamsSink
from permwatch.events import ExposureEvent, ExposureKind
from tests.unit.alert_samples import case_burst, changed, opened
from tests.unit.test_slack_render import grouped


def names_only() -> ExposureEvent:
    return opened().model_copy(update={"kind": ExposureKind.NAMES})


def test_console_says_names_only_and_keeps_its_words_for_contents() -> None:
    console = ConsoleSink(ConsoleConfig(), stream=io.StringIO())
    names = console.render(GroupUpdate.single(names_only()))
    assert "5 people outside the label can list its names (no file in it readable)" in names
    assert "5 people outside the label can read it" in console.render(GroupUpdate.single(opened()))


def test_alertmanager_carries_the_kind_and_says_it_in_the_summary() -> None:
    sink = AlertmanagerSink(AlertmanagerConfig(url="http://am:9093"))
    (alert,) = sink.render(GroupUpdate.single(names_only()))
    assert alert["annotations"]["kind"] == "names"
    assert alert["annotations"]["summary"] == (
        "/srv/share/ledning (label ledning) listable (names only, no file readable) by 5 people outside the label "
        "via alla"
    )
    assert "kind" not in alert["labels"]  # a label change would be another alert: names → contents stays one


def test_slack_says_names_only_in_the_folder_text_and_a_widening_to_contents_in_the_thread(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("PERMWATCH_TEST_SLACK_TOKEN", "xoxb-unit-test-token-0000")
    sink = SlackSink(
        SlackConfig.model_validate({"kind": "slack", "channel": "C0SOC", "token_env": "PERMWATCH_TEST_SLACK_TOKEN"})
    )
    first = names_only()
    (item,) = sink.render(GroupUpdate.single(first))
    assert "_Names only: outsiders can list it, but read no file in it_" in item.root.blocks[2]["text"]["text"]
    wider = changed(first, groups=("alla",), people=5).model_copy(update={"kind": ExposureKind.CONTENTS})
    narrower = changed(first, sequence=2, groups=("alla",), people=5, after=120)
    grouper = BurstGrouper()
    for event in (first, wider):
        group_id, _ = grouper.assign(event)
    (update,) = sink.render(GroupUpdate(grouper.snapshot(group_id), (wider,)))
    assert update.reply is not None and "now readable by alla" in update.reply.blocks[0]["text"]["text"]
    assert "Names only" not in update.root.blocks[2]["text"]["text"]
    grouper.assign(narrower)
    (update,) = sink.render(GroupUpdate(grouper.snapshot(group_id), (narrower,)))
    assert update.reply is not None and "now listable (names only) by alla" in update.reply.blocks[0]["text"]["text"]


def test_jsonl_writes_the_kind_as_on_the_bus(tmp_path: Path) -> None:
    sink = JsonlSink(JsonlConfig(kind="jsonl", path=tmp_path / "alerts.jsonl"))
    (line,) = sink.render(GroupUpdate.single(names_only()))
    assert json.loads(json.dumps(line))["kind"] == "names"


def test_email_says_names_only_in_the_subject_the_kind_row_and_a_burst_line() -> None:
    sink = EmailSink(EmailConfig(host="smtp.example", sender="pw@kommun.example", to=["soc@kommun.example"]))
    [mail] = sink.render(GroupUpdate.single(names_only()))
    assert mail.subject == "[permwatch] Critical exposure: 1 folder listable (names only) by alla (label ledning)"
    assert "Kind: Names only: outsiders can list the names in it (no file in it readable)\n" in mail.text
    assert '<th align="left" style="padding-right:1em">Kind</th><td>Names only: outsiders can list' in mail.html
    [mail] = sink.render(GroupUpdate.single(opened()))
    assert "readable by alla" in mail.subject and "Kind: Contents: outsiders can read files in it\n" in mail.text
    burst = case_burst(3)
    names_case = burst[0].model_copy(update={"kind": ExposureKind.NAMES})
    [mail] = sink.render(grouped(names_case, *burst[1:]))
    assert "Kind: Contents in 2 folders; names only (no file readable) in 1\n" in mail.text
    assert f"  {names_case.folder}: {names_case.paths_affected} paths, " in mail.text
    assert mail.text.count(", names only\n") == 1 and "readable by" in mail.subject


def test_email_says_a_names_only_folder_changed_as_listable() -> None:
    first = names_only()
    update = grouped(first, changed(first, groups=("alla", "it"), people=7), new=1)
    sink = EmailSink(EmailConfig(host="smtp.example", sender="pw@kommun.example", to=["soc@kommun.example"]))
    [mail] = sink.render(update)
    assert "  /srv/share/ledning now listable (names only) by alla, it (7 people)\n" in mail.text


def test_teams_says_names_only_in_the_title_and_the_kind_fact(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PW_KINDS_TEAMS_URL", "https://teams.example/workflows/x?sig=UNIT")
    [card] = TeamsSink(TeamsConfig(url_env="PW_KINDS_TEAMS_URL")).render(GroupUpdate.single(names_only()))
    body = card.body["attachments"][0]["content"]["body"]
    assert body[0]["text"] == "🚨 Critical exposure: 1 folder listable (names only) by alla (label ledning)"
    assert {"title": "Kind", "value": "Names only: outsiders can list the names in it (no file in it readable)"} in (
        body[2]["facts"]
    )


@pytest.mark.parametrize("kind", list(ExposureKind))
def test_syslog_carries_the_kind_in_ecs_and_cef_and_words_names_only(kind: ExposureKind) -> None:
    event = opened().model_copy(update={"kind": kind})
    ecs = SyslogSink(SyslogConfig(host="siem.example", format="ecs"))
    [message] = ecs.render(GroupUpdate.single(event))
    document = json.loads(message.split("] ", 1)[1])
    assert document["permwatch"]["exposure"]["kind"] == kind.value
    cef = SyslogSink(SyslogConfig(host="siem.example", format="cef"))
    [message] = cef.render(GroupUpdate.single(event))
    assert f" cs5Label=exposureKind cs5={kind.value} " in message
    if kind is ExposureKind.NAMES:
        summary = "/srv/share/ledning (label ledning) listable (names only, no file readable) by 5 people"
        assert document["message"].startswith(summary) and f"msg={summary}" in message
        assert "|Restricted folder listable (names only) outside its label|" in message
        assert document["event"]["reason"] == "label ledning does not allow the groups that can list its names"
    else:
        assert document["message"].startswith("/srv/share/ledning (label ledning) readable by 5 people")
        assert "|Restricted folder readable outside its label|" in message
