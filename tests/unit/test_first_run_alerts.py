"""What the first scan finds is one alert in every sink, worded as such and pointing to the entitlement report
(issue 19 item 1); a live change of the same moment is a burst of its own and keeps the usual words."""

from __future__ import annotations

import io
import json

import pytest

from alerts.alertmanager import AlertmanagerConfig, AlertmanagerSink
from alerts.console import ConsoleConfig, ConsoleSink
from alerts.digest import FIRST_RUN_NOTE, digest
from alerts.grouping import BurstGrouper, GroupUpdate
from alerts.mail import EmailConfig, EmailSink
from alerts.slack import SlackConfig, SlackSink
from alerts.syslog import SyslogConfig, SyslogSink
from alerts.teams import TeamsConfig, TeamsSink
from alerts.webhook import WebhookConfig, WebhookSink
from permwatch.events import ExposureEvent
from tests.unit.alert_samples import case_burst


def first_run(count: int = 3) -> tuple[GroupUpdate, list[ExposureEvent]]:
    found = [e.model_copy(update={"preexisting": True}) for e in case_burst(count)]
    grouper = BurstGrouper()
    (group_id,) = {grouper.assign(e)[0] for e in found}
    return GroupUpdate(grouper.snapshot(group_id), tuple(found)), found


def test_the_digest_knows_a_first_run_and_says_it_one_way() -> None:
    update, _ = first_run()
    d = digest(update.group)
    assert d.first_run and d.first_run_headline == "First run: 3 folders already open to people outside their label"
    live = GroupUpdate.single(case_burst(1)[0])
    assert not digest(live.group).first_run


def test_console_writes_one_first_run_block_with_the_report_however_few_folders() -> None:
    update, _ = first_run(2)
    text = ConsoleSink(ConsoleConfig(), stream=io.StringIO()).render(update)
    assert text.count("FIRST RUN") == 1 and "First run: 2 folders already open" in text
    assert FIRST_RUN_NOTE in text and "permwatch entitlements" in text
    single = ConsoleSink(ConsoleConfig(), stream=io.StringIO()).render(GroupUpdate.single(case_burst(1)[0]))
    assert "FIRST RUN" not in single and "OPENED" in single.upper()


def test_webhook_and_alertmanager_mark_it_and_say_where_the_report_is(monkeypatch: pytest.MonkeyPatch) -> None:
    update, found = first_run()
    monkeypatch.setenv("PW_FIRST_RUN_SECRET", "whsec-first-run-0123456789")
    (request,) = WebhookSink(WebhookConfig(url="http://127.0.0.1:1/h", secret_env="PW_FIRST_RUN_SECRET")).render(update)
    group = json.loads(request.body)["group"]
    assert group["first_run"] is True and group["summary"].startswith("First run: 3 folders already open")
    assert all(event["preexisting"] for event in json.loads(request.body)["events"])
    alerts = AlertmanagerSink(AlertmanagerConfig(url="http://am:9093")).render(update)
    assert len(alerts) == len(found)
    for alert in alerts:
        assert alert["labels"]["preexisting"] == "true"
        assert alert["annotations"]["summary"].startswith("First run (pre-existing): ")
        assert alert["annotations"]["description"] == FIRST_RUN_NOTE
    live = AlertmanagerSink(AlertmanagerConfig(url="http://am:9093")).render(GroupUpdate.single(case_burst(1)[0]))
    assert "preexisting" not in live[0]["labels"] and "description" not in live[0]["annotations"]


def test_slack_words_it_with_the_same_headline(monkeypatch: pytest.MonkeyPatch) -> None:
    update, _ = first_run()
    monkeypatch.setenv("PW_FIRST_RUN_TOKEN", "xoxb-first-run")
    sink = SlackSink(SlackConfig(channel="C0SOC", token_env="PW_FIRST_RUN_TOKEN"))
    (thread,) = sink.render(update)
    assert thread.root.text.startswith("First run: 3 folders already open to people outside their label")


def test_mail_teams_and_syslog_word_it_too(monkeypatch: pytest.MonkeyPatch) -> None:
    update, found = first_run()
    config = {"host": "smtp.example", "sender": "permwatch@kommun.example", "to": ["soc@kommun.example"]}
    [mail] = EmailSink(EmailConfig.model_validate(config)).render(update)
    assert "First run: 3 folders already open to people outside their label" in mail.subject
    assert FIRST_RUN_NOTE in mail.text and "permwatch entitlements" in mail.html

    monkeypatch.setenv("PW_FIRST_RUN_TEAMS", "https://kommun.webhook.office.com/workflows/first-run")
    [card] = TeamsSink(TeamsConfig(url_env="PW_FIRST_RUN_TEAMS")).render(update)
    texts = [block.get("text", "") for block in card.body["attachments"][0]["content"]["body"]]
    assert "First run: 3 folders already open" in texts[0] and any("permwatch entitlements" in t for t in texts)

    settings = {"host": "siem.example", "hostname": "fs01"}
    cef = SyslogSink(SyslogConfig.model_validate({**settings, "format": "cef"})).render(update)
    assert len(cef) == len(found) and all("cs6Label=preexisting cs6=true" in m for m in cef)
    assert all("msg=First run (pre-existing): " in m for m in cef)
    ecs = SyslogSink(SyslogConfig.model_validate({**settings, "format": "ecs"})).render(update)
    document = json.loads(ecs[0].split("] ", 1)[1])
    assert document["permwatch"]["exposure"]["preexisting"] is True
    live = SyslogSink(SyslogConfig.model_validate({**settings, "format": "cef"})).render(
        GroupUpdate.single(case_burst(1)[0])
    )
    assert "preexisting" not in live[0] and "First run" not in live[0]
