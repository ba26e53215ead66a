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
from alerts.slack_interactions import SlackInteractions, decision_for, signature, verified
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


def test_a_click_becomes_the_decision_its_button_names() -> None:
    value = button_value("exp-039558d1668fadf59001", "/srv/share/ledning")
    now = datetime(2026, 12, 7, 4, 0, tzinfo=UTC)
    approve = decision_for(_payload("permwatch_approve:0", value), now=now, approve_for=timedelta(days=7))
    assert approve is not None
    assert (approve.action, approve.by, approve.via, approve.until) == (
        DecisionAction.APPROVE,
        "slack:U0ANNA (anna)",
        "slack",
        now + timedelta(days=7),
    )
    revert = decision_for(_payload("permwatch_revert:2", value), now=now, approve_for=timedelta(days=7))
    assert revert is not None and revert.action is DecisionAction.REVERT_REQUESTED and revert.until is None
    assert decision_for(_payload("someone_elses", value), now=now, approve_for=timedelta(days=1)) is None
    assert decision_for({"type": "view_submission"}, now=now, approve_for=timedelta(days=1)) is None


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
        assert endpoint.answer("/slack/interactions", {**headers, "x-slack-signature": "v0=00"}, body) == 401
        old = str(int(NOW) - 600)
        stale = {"x-slack-request-timestamp": old, "x-slack-signature": signature(SECRET, old, body)}
        assert endpoint.answer("/slack/interactions", stale, body) == 401
        assert list(bus.history([TOPIC_DECISIONS])) == []
        assert endpoint.answer("/elsewhere", headers, body) == 404
        assert endpoint.answer("/slack/interactions", headers, body) == 200
        (record,) = list(bus.history([TOPIC_DECISIONS]))
        decision = decode(record.value)
        assert record.key == "/srv/share/ledning"
        assert decision.type == "decision" and decision.action is DecisionAction.ACKNOWLEDGE
        junk = b"payload=not-json"
        signed = {"x-slack-request-timestamp": ts, "x-slack-signature": signature(SECRET, ts, junk)}
        assert endpoint.answer("/slack/interactions", signed, junk) == 400
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
