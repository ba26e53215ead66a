"""Slack interactivity: the Acknowledge / Approve / Revert buttons on an alert, as decisions on the bus.

Part of the alerts role: a small HTTP endpoint (stdlib ``http.server``, one
thread per request) on the Slack sink's ``interactions_listen`` address, where
Slack posts a ``block_actions`` payload (``application/x-www-form-urlencoded``,
one field ``payload`` holding JSON) when someone clicks a button. Every request
is checked before anything is read from it: Slack's signature
``X-Slack-Signature = v0=HMAC-SHA256(signing secret, "v0:{X-Slack-Request-Timestamp}:{body}")``,
compared in constant time, and a timestamp older (or further ahead) than five
minutes is refused, so a captured request cannot be replayed. A refused request
gets 401 and changes nothing. A valid click publishes one
:class:`~permwatch.events.Decision` on the ``decisions`` topic (keyed by the
folder) and answers 200 at once; the processor does the rest. An approval from
Slack lasts ``approve_days`` (no form to ask for a date) and its reason says it
came from the button. The signing secret lives only in this object: never in a
log line, an error or a response.

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
from datetime import UTC, datetime, timedelta
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


def decision_for(payload: dict[str, Any], *, now: datetime, approve_for: timedelta) -> Decision | None:
    """The decision a ``block_actions`` payload asks for, or None when it is none of permwatch's buttons."""
    if payload.get("type") != "block_actions":
        return None
    actions = payload.get("actions") or []
    user = payload.get("user") or {}
    if not actions or not isinstance(actions, list) or not isinstance(user, dict):
        return None
    action = actions[0]
    kind = ACTIONS.get(str(action.get("action_id", "")).partition(":")[0])
    if kind is None:
        return None
    value = json.loads(str(action.get("value") or "{}"))
    who = f"slack:{user.get('id', '?')} ({user.get('username') or user.get('name') or '?'})"
    approving = kind is DecisionAction.APPROVE
    return Decision(
        action=kind,
        exposure_id=str(value.get("exposure_id", "")),
        folder=str(value.get("folder", "")),
        by=who[:256],
        via="slack",
        reason="approved with the Slack button" if approving else None,
        until=now + approve_for if approving else None,
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
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._bus = bus
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

    def answer(self, path: str, headers: dict[str, str], body: bytes) -> int:
        """Handle one request; the HTTP status to answer."""
        if path != PATH:
            return 404
        timestamp, sent = headers.get("x-slack-request-timestamp"), headers.get("x-slack-signature")
        why = verified(self._secret, timestamp, sent, body, self._clock())
        if why is not None:
            self.refused += 1
            log.warning("slack interactions: refused a request (%s)", why)
            return 401
        try:
            payload = json.loads(parse_qs(body.decode(), strict_parsing=True)["payload"][0])
            decision = decision_for(
                payload, now=datetime.fromtimestamp(self._clock(), UTC), approve_for=self._approve_for
            )
        except (ValueError, KeyError, TypeError, AttributeError, ValidationError):
            log.warning("slack interactions: a signed request that is no block_actions payload permwatch knows")
            return 400
        if decision is None:
            return 200  # someone else's button, or a kind of interaction permwatch does not handle
        with self._lock:
            self._bus.publish(TOPIC_DECISIONS, decision.key, encode(decision))
            self._bus.flush()
            self.published += 1
        log.info("slack interactions: %s %s by %s", decision.action.value, decision.exposure_id, decision.by)
        return 200


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
            endpoint = SlackInteractions(bus, secret, listen, approve_for=approve_for)
            endpoint.bind()
            found.append(endpoint)
    return found


class _Handler(BaseHTTPRequestHandler):
    owner: SlackInteractions
    protocol_version = "HTTP/1.1"

    def do_POST(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        if length > MAX_BODY:
            self._reply(413)
            return
        body = self.rfile.read(length) if length else b""
        headers = {k.lower(): v for k, v in self.headers.items()}
        self._reply(self.owner.answer(self.path, headers, body))

    def _reply(self, status: int) -> None:
        self.send_response(status)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, format: str, *args: Any) -> None:  # requests are logged by answer(), without headers
        return
