"""Slack: which answers are retried (and after how long), which are permanent, and that no message names the token."""

from __future__ import annotations

from typing import Any

import pytest
from slack_sdk.web import SlackResponse

from alerts.base import PermanentSinkError, RetryableSinkError
from alerts.slack import SlackRefused, error_for


def answer(status: int, data: Any, headers: dict[str, Any] | None = None) -> SlackResponse:
    return SlackResponse(
        client=None,
        http_verb="POST",
        api_url="https://slack.com/api/chat.postMessage",
        req_args={"headers": {"Authorization": "Bearer xoxb-secret"}},
        data=data,
        headers=headers or {},
        status_code=status,
    )


def test_429_is_refused_and_retried_after_retry_after() -> None:
    error = error_for("chat.postMessage", answer(429, {"ok": False, "error": "ratelimited"}, {"Retry-After": "7"}))
    assert isinstance(error, SlackRefused) and isinstance(error.error, RetryableSinkError)
    assert error.error.retry_after == 7.0  # nothing was posted, so the pending post can be dropped


def test_5xx_and_internal_errors_are_retryable_but_may_have_happened() -> None:
    html = {"ok": False, "error": "Received a response in a non-JSON format: <html>Bad gateway</html>"}
    for error in (
        error_for("chat.postMessage", answer(502, html)),
        error_for("chat.postMessage", answer(200, {"ok": False, "error": "internal_error"})),
    ):
        assert isinstance(error, RetryableSinkError) and not isinstance(error, SlackRefused)
    assert str(error_for("chat.postMessage", answer(502, html))) == "slack chat.postMessage: http_502 (HTTP 502)"


@pytest.mark.parametrize(
    "code", ["invalid_auth", "channel_not_found", "not_in_channel", "invalid_blocks", "token_revoked"]
)
def test_slack_refusals_are_permanent_and_name_no_secret(code: str) -> None:
    error = error_for("chat.postMessage", answer(200, {"ok": False, "error": code}))
    assert isinstance(error, SlackRefused) and isinstance(error.error, PermanentSinkError)
    assert str(error.error) == f"slack chat.postMessage: {code}"
    assert "xoxb" not in str(error.error)
