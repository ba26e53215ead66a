"""The Teams sink against a local Teams Workflows webhook that validates every Adaptive Card.

- A burst's first card, a change and the close arrive as three valid cards (the
  flow answers 202 only to a message whose Adaptive Card passes the schema
  check), the later ones "Update N of burst X"; the stage started again with
  its consumer position lost posts nothing twice; the webhook URL (a secret)
  and file names below the labelled folder appear in no log line or card, and
  every card holds only allowed fields and values (``alert_allowlist``): with
  ``actor = "omit"`` no user name, with the default the actor as "Changed by".
- 429 with Retry-After and 503 are retried and the card posted once; a flow
  that is down is retried until it is up; a 400 is permanent (dead-lettered).
- The validator itself refuses a card that breaks Microsoft's official Adaptive Card schema (vendored).
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest

from alerts.base import SinkContext
from alerts.dispatch import DeliveryLog, Dispatcher
from alerts.grouping import group_id_for
from alerts.registry import build_sink
from permwatch.transport.embedded import EmbeddedBus
from tests.integration.alert_allowlist import allowed_values, teams_problems
from tests.integration.servers.teams import SCHEMA_FILE, FakeTeamsWorkflow, validation_errors
from tests.integration.test_alerts_delivery import RunningDispatcher, publish, wait_until
from tests.integration.test_alerts_syslog import caught_up
from tests.unit.alert_samples import case_burst, changed, closed, opened

pytestmark = pytest.mark.integration

URL_ENV = "PERMWATCH_IT_TEAMS_URL"


@pytest.fixture
def teams(monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeTeamsWorkflow]:
    with FakeTeamsWorkflow() as flow:
        monkeypatch.setenv(URL_ENV, flow.webhook_url)
        yield flow


def test_a_burst_is_a_first_card_and_numbered_updates_each_valid_and_posted_once(
    tmp_path: Path, teams: FakeTeamsWorkflow, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    now = datetime.now(UTC).replace(microsecond=0)
    burst = [
        opened(
            e.exposure_id, folder=e.folder, label=e.label, at=e.opened_at, causes=("fs-burst",), people=40,
            sample_paths=(e.folder, e.folder + "/Klient Karlsson.docx"), users=("anna.svensson",),
        )
        for e in case_burst(2, at=now)
    ]  # fmt: skip
    settings = {
        "kind": "teams",
        "url_env": URL_ENV,
        "hide_below_label": True,
        "actor": "omit",
        "replay_url": "https://permwatch.example.org/timeline/{exposure_id}?burst={group_id}",
    }
    bus = EmbeddedBus(tmp_path / "events.db")
    delivery_log = DeliveryLog(tmp_path / "alerts.db")
    try:
        sink = build_sink(settings, SinkContext(database=delivery_log.database))
        dispatcher = Dispatcher(bus, [sink], delivery_log, group="teams-1", backoff_initial=0.1)
        with RunningDispatcher(dispatcher):
            publish(bus, burst)
            teams.wait_for(1)
            publish(bus, [changed(burst[0], groups=("alla", "it"), people=45, after=10.0)])
            teams.wait_for(2)
            publish(bus, [closed(burst[0], sequence=2, after=70.0), closed(burst[1], after=70.0)])
            teams.wait_for(3)
            wait_until(lambda: dispatcher.delivered == 5, "five events delivered")
        again = Dispatcher(
            bus, [build_sink(settings, SinkContext(database=delivery_log.database))], delivery_log, group="teams-again"
        )
        with RunningDispatcher(again):
            wait_until(lambda: caught_up(bus, "teams-again"), "the restarted stage reading every record again")
            time.sleep(0.5)
    finally:
        bus.close()
    assert teams.statuses() == [202, 202, 202] and again.delivered == 0
    cards = teams.cards()
    burst_id = group_id_for(burst[0].exposure_id)
    assert [c["body"][1]["text"].split(",")[0] for c in cards] == [
        f"Burst {burst_id}",
        f"Update 1 of burst {burst_id}",
        f"Update 2 of burst {burst_id}",
    ]
    assert cards[0]["body"][0]["text"] == (
        "🚨 High exposure: 2 folders readable by alla (label case-00000, case-00001)"
    )
    assert cards[1]["body"][2]["text"].startswith("Changed: 1 folder")
    replay = f"https://permwatch.example.org/timeline/{burst[0].exposure_id}?burst={burst_id}"
    button = {"type": "Action.OpenUrl", "title": "Replay timeline", "url": replay}  # checked by the flow's schema
    assert [c["actions"] for c in cards] == [[button]] * 3
    assert cards[2]["body"][0]["text"].startswith("✅ Resolved after 1 min 10 s: 2 folders no longer readable")
    everything = "".join(r.raw.decode() for r in teams.requests) + caplog.text
    assert teams.signature not in caplog.text and teams.path not in caplog.text
    assert "Karlsson" not in everything and "svensson" not in everything
    events = [
        *burst,
        changed(burst[0], groups=("alla", "it"), people=45, after=10.0),
        closed(burst[0], sequence=2, after=70.0),
        closed(burst[1], after=70.0),
    ]
    shown = [e.folder + "/…" for e in burst]
    allowed = allowed_values(events, burst_id=burst_id, actor=False, shown_paths=shown, extra=[replay])
    assert [problem for r in teams.requests for problem in teams_problems(r.body, allowed, actor=False)] == []
    assert "it-update" not in everything  # actor = "omit"


def test_429_and_503_are_retried_a_flow_that_is_down_too_and_a_400_is_permanent(
    tmp_path: Path, teams: FakeTeamsWorkflow, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    bus = EmbeddedBus(tmp_path / "events.db")
    delivery_log = DeliveryLog(tmp_path / "alerts.db")
    now = datetime.now(UTC)
    try:
        sink = build_sink({"kind": "teams", "url_env": URL_ENV}, SinkContext(database=delivery_log.database))
        dispatcher = Dispatcher(bus, [sink], delivery_log, group="teams-2", backoff_initial=0.1, backoff_max=0.5)
        with RunningDispatcher(dispatcher):
            teams.fail(429, retry_after=1)
            teams.fail(503)
            first = opened("exp-429", at=now)
            publish(bus, [first])
            teams.wait_for(1)
            wait_until(lambda: dispatcher.delivered == 1, "the delivery recorded")
            assert teams.statuses() == [429, 503, 202] and dispatcher.retries == 2
            gap = teams.requests[1].at - teams.requests[0].at
            assert gap >= 0.95  # Retry-After: 1 honoured

            teams.stop()
            down = opened("exp-down", folder="/srv/share/hr", at=now, causes=("fs-2",), actor="bo")
            publish(bus, [down])
            wait_until(lambda: dispatcher.retries >= 4, "retries while the flow is down")
            teams.start()
            teams.wait_for(2)
            wait_until(lambda: dispatcher.delivered == 2, "the card posted once the flow is back")

            teams.fail(400)
            publish(bus, [opened("exp-400", folder="/srv/share/it", at=now, causes=("fs-3",), actor="cy")])
            wait_until(lambda: dispatcher.failed == 1, "the 400 dead-lettered")
            retries = dispatcher.retries
            time.sleep(0.5)
            assert dispatcher.retries == retries  # not retried
    finally:
        bus.close()
    assert teams.statuses().count(202) == 2 and teams.statuses()[-1] == 400
    accepted = [r.body for r in teams.requests if r.status == 202]
    for body, event in zip(accepted, [first, down], strict=True):
        allowed = allowed_values(
            [event], burst_id=group_id_for(event.exposure_id), actor=True, shown_paths=event.sample_paths
        )
        assert teams_problems(body, allowed, actor=True) == []
        assert {"title": "Changed by", "value": event.actor} in body["attachments"][0]["content"]["body"][2]["facts"]
    assert "answered 429" in caplog.text and "answered 503" in caplog.text and "answered 400" in caplog.text
    assert teams.signature not in caplog.text and teams.path not in caplog.text


def test_the_flow_refuses_a_card_that_breaks_the_official_schema() -> None:
    good = {
        "type": "message",
        "attachments": [
            {
                "contentType": "application/vnd.microsoft.card.adaptive",
                "content": {
                    "type": "AdaptiveCard",
                    "version": "1.4",
                    "body": [{"type": "TextBlock", "text": "x"}, {"type": "Image", "url": "https://x/y.png"}],
                    "msteams": {"width": "Full"},
                },
            }
        ],
    }
    assert validation_errors(good) == []
    card = good["attachments"][0]["content"]  # type: ignore[index]
    for broken, why in (
        ({**card, "version": "1.2"}, "version: '1.4' was expected"),  # envelope: a Workflows card declares 1.4
        ({**card, "body": [{"type": "TextBlock"}]}, "body/0: 'text' is a required property"),  # official from here
        ({**card, "body": [{"type": "TextBlock", "text": "x", "weight": "bold"}]}, "body/0/weight: 'bold' is not"),
        ({**card, "body": [{"type": "TextBlock", "text": "x", "colour": "Good"}]}, "('colour' was unexpected)"),
        ({**card, "body": [{"type": "FactSet", "facts": [{"title": "a", "value": 1}]}]}, "value: 1 is not of type"),
        ({**card, "body": [{"type": "Chart", "data": [1, 2]}]}, "body/0: no element or action has type 'Chart'"),
        ({**card, "actions": [{"type": "Action.Open", "url": "https://x"}]}, "type 'Action.Open'"),
        ({**card, "msteams": {"width": "Wide"}}, "msteams/width: 'Wide' is not one of ['Full']"),
        ({**card, "refreshInterval": 60}, "('refreshInterval' was unexpected)"),
    ):
        message = json.loads(json.dumps(good))
        message["attachments"][0]["content"] = broken
        errors = validation_errors(message)
        assert len(errors) == 1 and why in errors[0], (broken, errors)
    assert validation_errors({"type": "message", "attachments": [{"contentType": "text/plain", "content": "x"}]})
    schema = json.loads(SCHEMA_FILE.read_text(encoding="utf-8"))
    assert schema["id"] == "http://adaptivecards.io/schemas/adaptive-card.json" and "msteams" not in json.dumps(schema)
    assert "MIT License" in (SCHEMA_FILE.parent / "LICENSE").read_text(encoding="utf-8")
