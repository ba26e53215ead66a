"""Slack interactivity (issue 19): request signatures and their age, payloads to decisions, the buttons' blocks,
and the config that turns them on."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from urllib.parse import urlencode

import pytest
from pydantic import ValidationError

from alerts.grouping import GroupUpdate
from alerts.slack import SlackConfig
from alerts.slack_interactions import (
    SlackInteractions,
    approval_form,
    approval_from,
    clicked,
    decision_for,
    signature,
    verified,
)
from alerts.slack_render import RenderOptions, action_blocks, button_value
from permwatch.events import TOPIC_DECISIONS, DecisionAction, decode
from permwatch.transport.embedded import EmbeddedBus
from tests.unit.alert_samples import opened

SECRET = b"8f14e45fceea167a5a36dedd4bea2543"
NOW = 1_796_000_000.0


def test_the_signature_is_slacks_v0_hmac_and_a_stale_or_forged_request_is_refused() -> None:
    body = b"payload=%7B%7D"
    # Slack's documented example: v0=a2114d57b48eac39b9ad189dd8316235a7b4a8d21a10bd27519666489c69b503
    example = (
        b"token=xyzz0WbapA4vBCDEFasx0q6G&team_id=T1DC2JH3J&team_domain=testteamnow&channel_id=G8PSS9"
        b"T3V&channel_name=foobar&user_id=U2CERLKJA&user_name=roadrunner&command=%2Fwebhook-collect&"
        b"text=&response_url=https%3A%2F%2Fhooks.slack.com%2Fcommands%2FT1DC2JH3J%2F397700885554%2F9"
        b"6rGlfmibIGlgcZRskXaIFfN&trigger_id=398738663015.47445629121.803a0bc887a14d10d2c447fce8b670"
        b"3c"
    )
    expected = "v0=a2114d57b48eac39b9ad189dd8316235a7b4a8d21a10bd27519666489c69b503"
    assert signature(b"8f742231b10e8888abcd99yyyzzz85a5", "1531420618", example) == expected
    good = signature(SECRET, str(int(NOW)), body)
    assert verified(SECRET, str(int(NOW)), good, body, NOW) is None
    assert verified(SECRET, str(int(NOW) - 301), signature(SECRET, str(int(NOW) - 301), body), body, NOW) == (
        "stale timestamp"
    )
    assert verified(SECRET, str(int(NOW) + 301), signature(SECRET, str(int(NOW) + 301), body), body, NOW) == (
        "stale timestamp"
    )
    assert verified(b"another app secret", str(int(NOW)), good, body, NOW) == "bad signature"
    assert verified(SECRET, str(int(NOW)), good, body + b"x", NOW) == "bad signature"
    assert verified(SECRET, None, good, body, NOW) == "unsigned"
    assert verified(SECRET, "soon", good, body, NOW) == "bad timestamp"


def _payload(action_id: str, value: str) -> dict[str, object]:
    return {
        "type": "block_actions",
        "user": {"id": "U0ANNA", "username": "anna"},
        "actions": [{"action_id": action_id, "value": value, "type": "button"}],
    }


def test_a_click_becomes_the_decision_its_button_names_and_approve_asks_first() -> None:
    value = button_value("exp-039558d1668fadf59001", "/srv/share/ledning")
    revert = decision_for(_payload("permwatch_revert:2", value))
    assert revert is not None and revert.action is DecisionAction.REVERT_REQUESTED and revert.until is None
    assert revert.by == "slack:U0ANNA (anna)" and revert.via == "slack"
    assert decision_for(_payload("permwatch_approve:0", value)) is None  # it opens the form
    assert clicked(_payload("permwatch_approve:0", value)) == (
        DecisionAction.APPROVE,
        {"exposure_id": "exp-039558d1668fadf59001", "folder": "/srv/share/ledning"},
    )
    assert decision_for(_payload("someone_elses", value)) is None
    assert decision_for({"type": "view_submission"}) is None


def _submission(reason: str | None, day: str | None, *, callback: str = "permwatch_approve") -> dict[str, object]:
    values: dict[str, object] = {}
    if reason is not None:
        values["reason"] = {"reason": {"type": "plain_text_input", "value": reason}}
    if day is not None:
        values["until"] = {"until": {"type": "datepicker", "selected_date": day}}
    metadata = json.dumps({"exposure_id": "exp-039558d1668fadf59001", "folder": "/srv/share/ledning"})
    return {
        "type": "view_submission",
        "user": {"id": "U0BO", "username": "bo"},
        "view": {"callback_id": callback, "private_metadata": metadata, "state": {"values": values}},
    }


def test_the_approval_form_asks_for_a_reason_and_a_day_and_its_submission_is_the_approval() -> None:
    now = datetime(2026, 12, 7, 4, 0, tzinfo=UTC)
    form = approval_form(
        {"exposure_id": "exp-1", "folder": "/srv/<ledning>"}, suggested=(now + timedelta(days=7)).date()
    )
    assert form["callback_id"] == "permwatch_approve" and json.loads(form["private_metadata"])["exposure_id"] == "exp-1"
    inputs = {b["block_id"]: b["element"] for b in form["blocks"] if b["type"] == "input"}
    assert inputs["reason"]["type"] == "plain_text_input" and inputs["until"]["initial_date"] == "2026-12-14"
    assert "&lt;ledning&gt;" in form["blocks"][0]["text"]["text"]

    approval = approval_from(_submission("  the board meets here this week ", "2026-12-10"), now=now)
    assert not isinstance(approval, dict) and approval is not None
    assert (approval.action, approval.by, approval.reason, approval.folder) == (
        DecisionAction.APPROVE,
        "slack:U0BO (bo)",
        "the board meets here this week",
        "/srv/share/ledning",
    )
    assert approval.until == datetime(2026, 12, 11, tzinfo=UTC)  # through the end of the 10th
    today = approval_from(_submission("today only", "2026-12-07"), now=now)
    assert not isinstance(today, dict) and today is not None and today.until == datetime(2026, 12, 8, tzinfo=UTC)
    assert approval_from(_submission("", "2026-12-10"), now=now) == {"reason": "Say why this access is intended."}
    assert approval_from(_submission("x", "2026-12-06"), now=now) == {"until": "Pick today or a later day."}
    assert approval_from(_submission("x", "2028-01-01"), now=now) == {"until": "At most 366 days ahead."}
    assert approval_from(_submission("x", None), now=now) == {"until": "Pick the last day the approval holds."}
    assert approval_from(_submission("x", "2026-12-10", callback="someone_elses"), now=now) is None


def test_the_endpoint_publishes_only_what_is_signed_and_fresh(tmp_path: object) -> None:
    from pathlib import Path

    assert isinstance(tmp_path, Path)
    bus = EmbeddedBus(tmp_path / "events.db")
    try:
        endpoint = SlackInteractions(bus, SECRET.decode(), "127.0.0.1:0", clock=lambda: NOW)
        value = button_value("exp-039558d1668fadf59001", "/srv/share/ledning")
        body = urlencode({"payload": json.dumps(_payload("permwatch_ack:0", value))}).encode()
        ts = str(int(NOW))
        headers = {"x-slack-request-timestamp": ts, "x-slack-signature": signature(SECRET, ts, body)}
        assert endpoint.answer("/slack/interactions", {**headers, "x-slack-signature": "v0=00"}, body) == (401, None)
        old = str(int(NOW) - 600)
        stale = {"x-slack-request-timestamp": old, "x-slack-signature": signature(SECRET, old, body)}
        assert endpoint.answer("/slack/interactions", stale, body) == (401, None)
        assert list(bus.history([TOPIC_DECISIONS])) == []
        assert endpoint.answer("/elsewhere", headers, body) == (404, None)
        assert endpoint.answer("/slack/interactions", headers, body) == (200, None)
        (record,) = list(bus.history([TOPIC_DECISIONS]))
        decision = decode(record.value)
        assert record.key == "/srv/share/ledning"
        assert decision.type == "decision" and decision.action is DecisionAction.ACKNOWLEDGE
        junk = b"payload=not-json"
        signed = {"x-slack-request-timestamp": ts, "x-slack-signature": signature(SECRET, ts, junk)}
        assert endpoint.answer("/slack/interactions", signed, junk) == (400, None)
        assert SECRET.decode() not in repr(endpoint)
    finally:
        bus.close()


def test_buttons_are_rendered_per_open_exposure_only_when_interactions_are_on() -> None:
    update = GroupUpdate.single(opened())
    event = update.events[0]
    (row,) = action_blocks(update.group, RenderOptions(buttons=True))
    assert row == {
        "type": "actions",
        "block_id": f"permwatch-{event.exposure_id}",
        "elements": [
            {
                "type": "button",
                "action_id": f"{action}:0",
                "text": {"type": "plain_text", "text": text},
                "value": json.dumps({"exposure_id": event.exposure_id, "folder": event.folder}, separators=(",", ":")),
                **({"style": "danger"} if text == "Revert" else {}),
            }
            for action, text in (
                ("permwatch_ack", "Acknowledge"),
                ("permwatch_approve", "Approve"),
                ("permwatch_revert", "Revert"),
            )
        ],
    }


def test_interactions_need_a_signing_secret_and_a_port(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PW_T", "xoxb-1")
    base = {"channel": "C1", "token_env": "PW_T", "interactions_listen": "127.0.0.1:3000"}
    with pytest.raises(ValidationError, match="signing_secret_env"):
        SlackConfig.model_validate(base)
    monkeypatch.setenv("PW_S", "s3cret")
    assert SlackConfig.model_validate({**base, "signing_secret_env": "PW_S"}).approve_days == 7
    with pytest.raises(ValidationError, match="host:port"):
        SlackConfig.model_validate({**base, "signing_secret_env": "PW_S", "interactions_listen": "3000"})


def test_a_port_in_use_is_one_clear_config_error(tmp_path: object) -> None:
    import socket
    from pathlib import Path

    from permwatch.config import ConfigError

    assert isinstance(tmp_path, Path)
    bus = EmbeddedBus(tmp_path / "events.db")
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        try:
            with pytest.raises(ConfigError, match=f"interactions_listen 127.0.0.1:{port}: cannot listen: "):
                SlackInteractions(bus, "s", f"127.0.0.1:{port}").bind()
        finally:
            bus.close()


def test_approve_opens_the_form_and_publishes_only_the_valid_submission(tmp_path: object) -> None:
    from pathlib import Path

    assert isinstance(tmp_path, Path)
    opened_views: list[tuple[str, dict[str, object]]] = []
    bus = EmbeddedBus(tmp_path / "events.db")
    try:
        endpoint = SlackInteractions(
            bus, SECRET.decode(), "127.0.0.1:0", open_view=lambda t, v: opened_views.append((t, v)), clock=lambda: NOW
        )

        def post(payload: dict[str, object]) -> tuple[int, dict[str, object] | None]:
            body = urlencode({"payload": json.dumps(payload)}).encode()
            ts = str(int(NOW))
            headers = {"x-slack-request-timestamp": ts, "x-slack-signature": signature(SECRET, ts, body)}
            return endpoint.answer("/slack/interactions", headers, body)

        click = _payload("permwatch_approve:1", button_value("exp-039558d1668fadf59001", "/srv/share/ledning"))
        assert post({**click, "trigger_id": "123.456.abc"}) == (200, None)
        ((trigger, view),) = opened_views
        assert trigger == "123.456.abc" and view["callback_id"] == "permwatch_approve"
        assert list(bus.history([TOPIC_DECISIONS])) == []  # a click alone approves nothing

        day = (datetime.fromtimestamp(NOW, UTC) + timedelta(days=3)).date().isoformat()
        assert post(_submission("", day)) == (
            200,
            {"response_action": "errors", "errors": {"reason": "Say why this access is intended."}},
        )
        assert list(bus.history([TOPIC_DECISIONS])) == []
        assert post(_submission("the board meets here", day)) == (200, None)
        (record,) = list(bus.history([TOPIC_DECISIONS]))
        approval = decode(record.value)
        assert approval.action is DecisionAction.APPROVE and approval.reason == "the board meets here"

        failing = SlackInteractions(bus, SECRET.decode(), "127.0.0.1:0", open_view=None, clock=lambda: NOW)
        body = urlencode({"payload": json.dumps({**click, "trigger_id": "1.2.3"})}).encode()
        ts = str(int(NOW))
        signed = {"x-slack-request-timestamp": ts, "x-slack-signature": signature(SECRET, ts, body)}
        assert failing.answer("/slack/interactions", signed, body) == (200, None)
        assert len(list(bus.history([TOPIC_DECISIONS]))) == 1  # no form, no approval
    finally:
        bus.close()
