"""Slack interactivity: the Acknowledge / Approve / Revert buttons on an alert, as decisions on the bus.

Part of the alerts role: a small HTTP endpoint (stdlib ``http.server``, one
thread per request) on the Slack sink's ``interactions_listen`` address, where
Slack posts a ``block_actions`` payload (``application/x-www-form-urlencoded``,
one field ``payload`` holding JSON) when someone clicks a button. Every request
is checked before anything is read from it: Slack's signature
``X-Slack-Signature = v0=HMAC-SHA256(signing secret, "v0:{X-Slack-Request-Timestamp}:{body}")``,
compared in constant time, and a timestamp older (or further ahead) than five
minutes is refused, so a captured request cannot be replayed. A refused request
gets 401 and changes nothing. A valid Acknowledge or Revert click publishes one
:class:`~permwatch.events.Decision` on the ``decisions`` topic (keyed by the
folder) and answers 200 at once; the processor does the rest.

Approve asks first: the click opens a form (Slack's ``views.open`` with the
click's ``trigger_id``: a modal with the reason, required, and the last day
the approval holds, ``approve_days`` ahead by default). Its submission (a
``view_submission``, signed the same way) publishes the approval: by whom,
why, until the end of that day (UTC). A date not after today, or more than a
year ahead, is answered with the form's own error message (``response_action:
errors``) and publishes nothing. When the form cannot be opened (Slack's API
refused or unreachable) nothing is approved and the log says why. The signing
secret lives only in this object: never in a log line, an error or a response.

Button values are ``{"exposure_id": …, "folder": …}`` as JSON (see
:func:`alerts.slack_render.button_value`).
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import threading
import time
from collections.abc import Callable, Iterable
from datetime import UTC, date, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs

from pydantic import ValidationError

from alerts.secrets import read_secret
from permwatch.config import ConfigError
from permwatch.events import TOPIC_DECISIONS, Decision, DecisionAction, encode
from permwatch.transport.base import Bus

log = logging.getLogger("permwatch.alerts.slack")

MAX_AGE_SECONDS = 300
MAX_BODY = 64 * 1024
PATH = "/slack/interactions"
ACTIONS = {
    "permwatch_ack": DecisionAction.ACKNOWLEDGE,
    "permwatch_approve": DecisionAction.APPROVE,
    "permwatch_revert": DecisionAction.REVERT_REQUESTED,
}
"""A button's ``action_id`` is one of these, then ``:`` and its place in the message (Slack wants them unique)."""
APPROVE_FORM = "permwatch_approve"
"""The ``callback_id`` of the approval form."""
MAX_APPROVE_DAYS = 366
OpenView = Callable[[str, dict[str, Any]], object]
"""Slack's ``views.open``: (trigger_id, view)."""


def signature(secret: bytes, timestamp: str, body: bytes) -> str:
    """Slack's v0 request signature of ``body`` sent at ``timestamp``."""
    base = b"v0:" + timestamp.encode() + b":" + body
    return "v0=" + hmac.new(secret, base, hashlib.sha256).hexdigest()


def verified(secret: bytes, timestamp: str | None, sent: str | None, body: bytes, now: float) -> str | None:
    """None when the request is Slack's and fresh; else why not, in a few words (for the log, no secret)."""
    if not timestamp or not sent:
        return "unsigned"
    try:
        at = int(timestamp)
    except ValueError:
        return "bad timestamp"
    if abs(now - at) > MAX_AGE_SECONDS:
        return "stale timestamp"
    if not hmac.compare_digest(signature(secret, timestamp, body), sent):
        return "bad signature"
    return None


def _who(payload: dict[str, Any]) -> str:
    user = payload.get("user") or {}
    if not isinstance(user, dict):
        raise TypeError("user is no object")
    return f"slack:{user.get('id', '?')} ({user.get('username') or user.get('name') or '?'})"[:256]


def clicked(payload: dict[str, Any]) -> tuple[DecisionAction, dict[str, str]] | None:
    """The button a ``block_actions`` payload reports and its value (exposure id and folder), or None when it is
    none of permwatch's buttons."""
    if payload.get("type") != "block_actions":
        return None
    actions = payload.get("actions") or []
    if not actions or not isinstance(actions, list):
        return None
    action = actions[0]
    kind = ACTIONS.get(str(action.get("action_id", "")).partition(":")[0])
    if kind is None:
        return None
    value = json.loads(str(action.get("value") or "{}"))
    return kind, {"exposure_id": str(value.get("exposure_id", "")), "folder": str(value.get("folder", ""))}


def decision_for(payload: dict[str, Any]) -> Decision | None:
    """The decision an Acknowledge or Revert click asks for (None for Approve, which opens a form, and for what
    is none of permwatch's buttons)."""
    found = clicked(payload)
    if found is None or found[0] is DecisionAction.APPROVE:
        return None
    kind, value = found
    return Decision(
        action=kind,
        exposure_id=value["exposure_id"],
        folder=value["folder"],
        by=_who(payload),
        via="slack",
        reason=None,
        until=None,
        source="alerts.slack",
    )


def approval_form(value: dict[str, str], *, suggested: date) -> dict[str, Any]:
    """The modal the Approve button opens (Block Kit): the folder, a reason, and the last day it holds."""
    folder = value["folder"].replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
    return {
        "type": "modal",
        "callback_id": APPROVE_FORM,
        "private_metadata": json.dumps(value),
        "title": {"type": "plain_text", "text": "Approve exposure"},
        "submit": {"type": "plain_text", "text": "Approve"},
        "close": {"type": "plain_text", "text": "Cancel"},
        "blocks": [
            {
                "type": "section",
                "text": {
                    "type": "mrkdwn",
                    "text": f"*{folder[:2800]}*\nApproved as intended: no alert again until the end of the day "
                    "below, unless more groups or people can read.",
                },
            },
            {
                "type": "input",
                "block_id": "reason",
                "label": {"type": "plain_text", "text": "Why is this access intended?"},
                "element": {"type": "plain_text_input", "action_id": "reason", "multiline": True, "max_length": 1000},
            },
            {
                "type": "input",
                "block_id": "until",
                "label": {"type": "plain_text", "text": "Approved until the end of (UTC)"},
                "element": {"type": "datepicker", "action_id": "until", "initial_date": suggested.isoformat()},
            },
        ],
    }


def approval_from(payload: dict[str, Any], *, now: datetime) -> Decision | dict[str, str] | None:
    """What a submitted approval form says: the approval, or the form's errors by block (the date), or None when
    the payload is no submission of permwatch's form."""
    view = payload.get("view") or {}
    if payload.get("type") != "view_submission" or view.get("callback_id") != APPROVE_FORM:
        return None
    value = json.loads(str(view.get("private_metadata") or "{}"))
    values = (view.get("state") or {}).get("values") or {}
    reason = str(((values.get("reason") or {}).get("reason") or {}).get("value") or "").strip()
    picked = ((values.get("until") or {}).get("until") or {}).get("selected_date")
    if not reason:
        return {"reason": "Say why this access is intended."}
    if not picked:
        return {"until": "Pick the last day the approval holds."}
    day = date.fromisoformat(str(picked))
    if day < now.date():
        return {"until": "Pick today or a later day."}
    until = datetime(day.year, day.month, day.day, tzinfo=UTC) + timedelta(days=1)
    if until - now > timedelta(days=MAX_APPROVE_DAYS):
        return {"until": f"At most {MAX_APPROVE_DAYS} days ahead."}
    return Decision(
        action=DecisionAction.APPROVE,
        exposure_id=str(value.get("exposure_id", "")),
        folder=str(value.get("folder", "")),
        by=_who(payload),
        via="slack",
        reason=reason[:1000],
        until=until,
        source="alerts.slack",
    )


class SlackInteractions:
    """The endpoint, run like a stage: ``run(stop)`` serves until ``stop`` is set."""

    def __init__(
        self,
        bus: Bus,
        secret: str,
        listen: str,
        *,
        approve_for: timedelta = timedelta(days=7),
        open_view: OpenView | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._bus = bus
        self._open_view = open_view
        self._secret = secret.encode()
        host, _, port = listen.rpartition(":")
        self._address = (host or "127.0.0.1", int(port))
        self._approve_for = approve_for
        self._clock = clock
        self._lock = threading.Lock()
        self.published = 0
        self.refused = 0
        self._server: ThreadingHTTPServer | None = None

    def __repr__(self) -> str:  # the secret is not part of it
        return f"SlackInteractions(listen={self._address[0]}:{self._address[1]})"

    def bind(self) -> None:
        """Take the port now (start-up), so a port in use is one clear line, not a stage dying later."""
        endpoint = self

        class Handler(_Handler):
            owner = endpoint

        try:
            server = ThreadingHTTPServer(self._address, Handler)
        except OSError as exc:
            host, port = self._address
            raise ConfigError(f"slack interactions_listen {host}:{port}: cannot listen: {exc.strerror}") from None
        server.daemon_threads = True
        self._server = server

    def run(self, stop: threading.Event) -> None:
        if self._server is None:
            self.bind()
        server = self._server
        assert server is not None
        host, port = server.server_address[:2]
        log.info("slack interactions: serving http://%s:%s%s", host, port, PATH)
        thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.2}, daemon=True)
        thread.start()
        try:
            stop.wait()
        finally:
            server.shutdown()
            server.server_close()
            thread.join(10)

    def answer(self, path: str, headers: dict[str, str], body: bytes) -> tuple[int, dict[str, Any] | None]:
        """Handle one request; the HTTP status to answer, and a JSON body when Slack wants one (form errors)."""
        if path != PATH:
            return 404, None
        timestamp, sent = headers.get("x-slack-request-timestamp"), headers.get("x-slack-signature")
        why = verified(self._secret, timestamp, sent, body, self._clock())
        if why is not None:
            self.refused += 1
            log.warning("slack interactions: refused a request (%s)", why)
            return 401, None
        now = datetime.fromtimestamp(self._clock(), UTC)
        try:
            payload = json.loads(parse_qs(body.decode(), strict_parsing=True)["payload"][0])
            submitted = approval_from(payload, now=now)
            decision = submitted if submitted is not None else decision_for(payload)
            approve = clicked(payload) if submitted is None and decision is None else None
        except (ValueError, KeyError, TypeError, AttributeError, ValidationError):
            log.warning("slack interactions: a signed request that is no interaction payload permwatch knows")
            return 400, None
        if isinstance(decision, dict):
            return 200, {"response_action": "errors", "errors": decision}
        if approve is not None and approve[0] is DecisionAction.APPROVE:
            self._ask(payload, approve[1], now)
            return 200, None
        if decision is None:
            return 200, None  # someone else's button, or a kind of interaction permwatch does not handle
        self._publish(decision)
        return 200, None

    def _ask(self, payload: dict[str, Any], value: dict[str, str], now: datetime) -> None:
        """Open the approval form for the one who clicked Approve."""
        trigger = str(payload.get("trigger_id") or "")
        if self._open_view is None or not trigger:
            log.warning("slack interactions: Approve on %s: no form can be opened; nothing approved", value["folder"])
            return
        form = approval_form(value, suggested=(now + self._approve_for).date())
        try:
            self._open_view(trigger, form)
        except Exception as exc:  # Slack's API refused or is unreachable: the click approves nothing
            log.warning(
                "slack interactions: Approve on %s: the form did not open (%s); nothing approved",
                value["folder"],
                type(exc).__name__,
            )
            return
        log.info("slack interactions: approval form opened for %s by %s", value["exposure_id"], _who(payload))

    def _publish(self, decision: Decision) -> None:
        with self._lock:
            self._bus.publish(TOPIC_DECISIONS, decision.key, encode(decision))
            self._bus.flush()
            self.published += 1
        log.info("slack interactions: %s %s by %s", decision.action.value, decision.exposure_id, decision.by)


def endpoints_for(sinks: Iterable[object], bus: Bus) -> list[SlackInteractions]:
    """An endpoint for every Slack sink with ``interactions_listen`` set (the alerts role starts them)."""
    from alerts.slack import SlackSink

    found = []
    for sink in sinks:
        listen = sink.config.interactions_listen if isinstance(sink, SlackSink) else None
        if isinstance(sink, SlackSink) and listen is not None:
            config = sink.config
            secret = read_secret(config.signing_secret_env, config.signing_secret_file, what="signing_secret")
            approve_for = timedelta(days=config.approve_days)
            endpoint = SlackInteractions(bus, secret, listen, approve_for=approve_for, open_view=sink.open_view)
            endpoint.bind()
            found.append(endpoint)
    return found


class _Handler(BaseHTTPRequestHandler):
    owner: SlackInteractions
    protocol_version = "HTTP/1.1"

    def do_POST(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        if length > MAX_BODY:
            self._reply(413, None)
            return
        body = self.rfile.read(length) if length else b""
        headers = {k.lower(): v for k, v in self.headers.items()}
        self._reply(*self.owner.answer(self.path, headers, body))

    def _reply(self, status: int, answer: dict[str, Any] | None = None) -> None:
        body = json.dumps(answer).encode() if answer is not None else b""
        self.send_response(status)
        if answer is not None:
            self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:  # requests are logged by answer(), without headers
        return
