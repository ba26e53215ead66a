"""A small stand-in for the Slack Web API, for tests: stdlib ``http.server`` in a thread on a free loopback port.

It speaks the methods permwatch's Slack sink uses, as slack-sdk sends them
(JSON or form bodies, ``Authorization: Bearer``): ``chat.postMessage`` (posts
keep their thread and metadata), ``chat.update``, ``conversations.history``
and ``conversations.replies`` (with ``include_all_metadata``), and ``views.open``
(a modal checked against the Block Kit limits Slack enforces, :func:`_modal_problems`). It checks the
token (``invalid_auth``) and the channel (``channel_not_found``) like Slack.
A test can make it answer a method with an HTTP status N times (429 with
``Retry-After``, 500) or *hold* a method: the message is posted (as Slack
would) but the answer waits until released, so the client can be killed in
between. Every request is recorded without its Authorization header. Any
path outside ``/api/`` is a generic webhook receiver that records the raw
body and headers.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit

from tests.integration.servers.http_server import LoopbackHTTPServer
from tests.integration.servers.started import StartedInWith


@dataclass
class RecordedRequest:
    path: str
    method: str
    """The API method (``chat.postMessage``) or, for a webhook, the path."""
    body: dict[str, Any]
    raw: bytes
    headers: dict[str, str]
    """Request headers without Authorization."""
    authorized: bool
    at: float = field(default_factory=time.monotonic)
    status: int = 0
    answer: dict[str, Any] = field(default_factory=dict)
    delivered: bool = False
    """The client read the whole answer (False when it was gone before the answer was written)."""


@dataclass
class _Failure:
    status: int
    times: int
    retry_after: int | None


class FakeSlack(StartedInWith):
    def __init__(self, token: str, channels: tuple[str, ...] = ("C0SOC",)) -> None:
        self.token = token
        self.channels = set(channels)
        self.requests: list[RecordedRequest] = []
        self.messages: list[dict[str, Any]] = []
        self.views: list[dict[str, Any]] = []
        """modals opened with ``views.open``, in order"""
        self._failures: dict[str, list[_Failure]] = {}
        self._holds: dict[str, int] = {}
        self._release = threading.Event()
        self._lock = threading.Lock()
        self._received = threading.Condition(self._lock)
        self._ts = 0
        self._http = LoopbackHTTPServer("fake-slack")

    # -- control ------------------------------------------------------------------

    def start(self) -> None:
        fake = self

        class Handler(_Handler):
            server_fake = fake

        self._http.start(Handler)

    def stop(self) -> None:
        self._release.set()
        self._http.stop()

    @property
    def port(self) -> int:
        return self._http.port

    @property
    def base_url(self) -> str:
        return self._http.url("/api/")

    def fail(self, method: str, status: int, times: int = 1, *, retry_after: int | None = None) -> None:
        """Answer the next ``times`` calls of ``method`` with HTTP ``status`` (and do nothing)."""
        with self._lock:
            self._failures.setdefault(method, []).append(_Failure(status, times, retry_after))

    def clear_failures(self) -> None:
        with self._lock:
            self._failures.clear()

    def hold(self, method: str, times: int = 1) -> None:
        """Do the next ``times`` calls of ``method`` but keep the answer until :meth:`release`."""
        with self._lock:
            self._release.clear()
            self._holds[method] = self._holds.get(method, 0) + times

    def release(self) -> None:
        self._release.set()

    def wait_for(self, method: str, count: int, timeout: float = 30.0) -> None:
        """Block until ``count`` calls of ``method`` have arrived."""
        with self._received:
            if not self._received.wait_for(lambda: len(self.calls(method, locked=True)) >= count, timeout):
                raise AssertionError(f"fake Slack: fewer than {count} calls of {method} within {timeout} s")

    # -- inspection ---------------------------------------------------------------

    def calls(self, method: str, *, locked: bool = False) -> list[RecordedRequest]:
        if locked:
            return [r for r in self.requests if r.method == method]
        with self._lock:
            return [r for r in self.requests if r.method == method]

    def root_messages(self, channel: str) -> list[dict[str, Any]]:
        with self._lock:
            return [m for m in self.messages if m["channel"] == channel and m.get("thread_ts") is None]

    def replies(self, channel: str, thread_ts: str) -> list[dict[str, Any]]:
        with self._lock:
            return [m for m in self.messages if m["channel"] == channel and m.get("thread_ts") == thread_ts]

    def all_recorded_text(self) -> Iterator[str]:
        with self._lock:
            for request in self.requests:
                yield request.raw.decode("utf-8", "replace")
                yield json.dumps(request.headers)
                yield json.dumps(request.answer)

    # -- interactivity (respond, issue 19) -----------------------------------------

    def click(
        self,
        url: str,
        message: dict[str, Any],
        action_id_prefix: str,
        *,
        secret: str,
        user: tuple[str, str] = ("U0ANNA", "anna"),
        timestamp: int | None = None,
        signature: str | None = None,
    ) -> int:
        """Click a button of a posted ``message`` as Slack does: POST a ``block_actions`` payload (form-encoded
        ``payload=`` JSON) to the app's interactivity ``url``, signed with ``secret`` (v0 HMAC-SHA256 of
        ``v0:{timestamp}:{body}``) unless ``signature`` is given. Returns the HTTP status."""
        block, button = next(
            (block, element)
            for block in message.get("blocks") or []
            if block.get("type") == "actions"
            for element in block["elements"]
            if element["action_id"].startswith(action_id_prefix)
        )
        now = time.time()
        payload = {
            "type": "block_actions",
            "user": {"id": user[0], "username": user[1], "name": user[1], "team_id": "T0PERMW"},
            "api_app_id": "A0PERMW",
            "token": "legacy-verification-token-unused",
            "container": {
                "type": "message",
                "message_ts": message["ts"],
                "channel_id": message["channel"],
                "is_ephemeral": False,
            },
            "trigger_id": f"{int(now)}.1.abc",
            "team": {"id": "T0PERMW", "domain": "kommun"},
            "channel": {"id": message["channel"], "name": "soc"},
            "message": {"type": "message", "ts": message["ts"], "text": message["text"], "blocks": message["blocks"]},
            "response_url": self._http.url("/actions/response"),
            "actions": [
                {
                    "action_id": button["action_id"],
                    "block_id": block["block_id"],
                    "text": button["text"],
                    "value": button["value"],
                    "type": "button",
                    "action_ts": f"{now:.6f}",
                }
            ],
        }
        status, _answer = self._post_signed(url, payload, secret=secret, timestamp=timestamp, signature=signature)
        return status

    def submit_view(
        self,
        url: str,
        view: dict[str, Any],
        values: dict[str, dict[str, dict[str, Any]]],
        *,
        secret: str,
        user: tuple[str, str] = ("U0ANNA", "anna"),
    ) -> tuple[int, dict[str, Any] | None]:
        """Submit an opened modal as Slack does: a signed ``view_submission`` with the form's ``state.values``
        (block id → action id → the element's value). Returns the status and the JSON answer, if any."""
        payload = {
            "type": "view_submission",
            "team": {"id": "T0PERMW", "domain": "kommun"},
            "user": {"id": user[0], "username": user[1], "name": user[1], "team_id": "T0PERMW"},
            "api_app_id": "A0PERMW",
            "trigger_id": f"{int(time.time())}.2.def",
            "view": {**view, "id": "V0FORM", "state": {"values": values}},
        }
        return self._post_signed(url, payload, secret=secret)

    def _post_signed(
        self,
        url: str,
        payload: dict[str, Any],
        *,
        secret: str,
        timestamp: int | None = None,
        signature: str | None = None,
    ) -> tuple[int, dict[str, Any] | None]:
        """POST ``payload`` form-encoded to the app's interactivity ``url`` as Slack does, signed with ``secret``
        (v0 HMAC-SHA256 of ``v0:{timestamp}:{body}``) unless ``signature`` is given."""
        body = urlencode({"payload": json.dumps(payload)}).encode()
        sent_at = str(int(time.time()) if timestamp is None else timestamp)
        digest = hmac.new(secret.encode(), b"v0:" + sent_at.encode() + b":" + body, hashlib.sha256).hexdigest()
        request = urllib.request.Request(
            url,
            data=body,
            method="POST",
            headers={
                "Content-Type": "application/x-www-form-urlencoded",
                "X-Slack-Request-Timestamp": sent_at,
                "X-Slack-Signature": signature or f"v0={digest}",
            },
        )
        try:
            with urllib.request.urlopen(request, timeout=10) as response:
                raw = response.read()
                return int(response.status), json.loads(raw) if raw else None
        except urllib.error.HTTPError as exc:
            exc.close()
            return int(exc.code), None

    def _open_view(self, body: dict[str, Any]) -> dict[str, Any]:
        """``views.open`` as Slack checks it: a trigger id, and a modal whose blocks Slack would accept."""
        view = body.get("view")
        if isinstance(view, str):
            view = json.loads(view)
        if not body.get("trigger_id"):
            return {"ok": False, "error": "invalid_trigger_id"}
        problems = _modal_problems(view)
        if problems:
            return {"ok": False, "error": "invalid_arguments", "response_metadata": {"messages": problems}}
        self.views.append(view)
        return {"ok": True, "view": {**view, "id": f"V{len(self.views):04d}"}}

    # -- the API ------------------------------------------------------------------

    def _handle(self, request: RecordedRequest) -> tuple[int, dict[str, str], dict[str, Any], bool]:
        """Status, extra headers, JSON answer, and whether to hold the answer."""
        with self._received:
            self.requests.append(request)
            self._received.notify_all()
            failures = self._failures.get(request.method, [])
            if failures:
                failure = failures[0]
                failure.times -= 1
                if failure.times <= 0:
                    failures.pop(0)
                headers = {"Retry-After": str(failure.retry_after)} if failure.retry_after is not None else {}
                error = "ratelimited" if failure.status == 429 else "internal_error"
                return failure.status, headers, {"ok": False, "error": error}, False
            if not request.path.startswith("/api/"):
                return 200, {}, {"ok": True}, False
            if not request.authorized:
                return 200, {}, {"ok": False, "error": "invalid_auth"}, False
            answer = self._api(request.method, request.body)
            hold = self._holds.get(request.method, 0) > 0 and answer.get("ok") is True
            if hold:
                self._holds[request.method] -= 1
            return 200, {}, answer, hold

    def _api(self, method: str, body: dict[str, Any]) -> dict[str, Any]:
        if method == "views.open":
            return self._open_view(body)
        channel = body.get("channel")
        if channel not in self.channels:
            return {"ok": False, "error": "channel_not_found"}
        if method == "chat.postMessage":
            # like Slack: epoch seconds with microseconds, unique and increasing
            self._ts = max(self._ts + 1, int(time.time() * 1_000_000))
            ts = f"{self._ts // 1_000_000}.{self._ts % 1_000_000:06d}"
            message = {
                "channel": channel,
                "ts": ts,
                "thread_ts": body.get("thread_ts"),
                "text": body.get("text"),
                "blocks": body.get("blocks"),
                "metadata": body.get("metadata"),
                "updates": 0,
            }
            self.messages.append(message)
            return {"ok": True, "channel": channel, "ts": ts, "message": {"text": message["text"]}}
        if method == "chat.update":
            for message in self.messages:
                if message["channel"] == channel and message["ts"] == body.get("ts"):
                    message.update(text=body.get("text"), blocks=body.get("blocks"), updates=message["updates"] + 1)
                    return {"ok": True, "channel": channel, "ts": message["ts"], "text": message["text"]}
            return {"ok": False, "error": "message_not_found"}
        if method in ("conversations.history", "conversations.replies"):
            oldest = float(body.get("oldest") or 0)
            with_metadata = str(body.get("include_all_metadata")) in ("1", "true", "True")
            if method == "conversations.history":
                found = [m for m in self.messages if m["channel"] == channel and m["thread_ts"] is None]
            else:
                parent = body.get("ts")
                found = [m for m in self.messages if m["channel"] == channel and parent in (m["ts"], m["thread_ts"])]
            messages = [
                {
                    "type": "message",
                    "ts": m["ts"],
                    "text": m["text"],
                    **({"metadata": m["metadata"]} if with_metadata and m["metadata"] else {}),
                }
                for m in reversed(found)
                if float(m["ts"]) >= oldest
            ]
            return {"ok": True, "messages": messages, "has_more": False}
        return {"ok": False, "error": "unknown_method"}


def _modal_problems(view: object) -> list[str]:
    """What Slack would refuse in a modal (its documented limits for the parts permwatch uses), or nothing."""
    if not isinstance(view, dict) or view.get("type") != "modal":
        return ["view must be a modal"]
    problems = []
    for key in ("title", "submit", "close"):
        text = view.get(key)
        if not isinstance(text, dict) or text.get("type") != "plain_text" or not 0 < len(text.get("text", "")) <= 24:
            problems.append(f"{key} must be plain_text of 1-24 characters")
    if len(str(view.get("callback_id", ""))) > 255 or len(str(view.get("private_metadata", ""))) > 3000:
        problems.append("callback_id at most 255, private_metadata at most 3000 characters")
    blocks = view.get("blocks")
    if not isinstance(blocks, list) or not 0 < len(blocks) <= 100:
        return [*problems, "blocks must be 1-100 blocks"]
    for block in blocks:
        kind = block.get("type")
        if kind == "section":
            text = block.get("text") or {}
            if text.get("type") not in ("mrkdwn", "plain_text") or not 0 < len(text.get("text", "")) <= 3000:
                problems.append("a section needs a text of 1-3000 characters")
        elif kind == "input":
            label, element = block.get("label") or {}, block.get("element") or {}
            if label.get("type") != "plain_text" or not 0 < len(label.get("text", "")) <= 2000:
                problems.append("an input needs a plain_text label of 1-2000 characters")
            if element.get("type") not in ("plain_text_input", "datepicker") or not element.get("action_id"):
                problems.append("an input needs a plain_text_input or datepicker element with an action_id")
            if element.get("type") == "plain_text_input" and not 0 < element.get("max_length", 3000) <= 3000:
                problems.append("plain_text_input max_length is 1-3000")
        else:
            problems.append(f"block type {kind!r} is not used by permwatch's forms")
    return problems


class _Handler(BaseHTTPRequestHandler):
    server_fake: FakeSlack
    protocol_version = "HTTP/1.1"

    def do_POST(self) -> None:
        fake = self.server_fake
        url = urlsplit(self.path)
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length) if length else b""
        body: dict[str, Any] = dict(parse_qsl(url.query))
        content_type = self.headers.get("Content-Type", "")
        if raw and content_type.startswith("application/json"):
            parsed = json.loads(raw)
            if isinstance(parsed, dict):
                body.update(parsed)
        elif raw and content_type.startswith("application/x-www-form-urlencoded"):
            body.update(parse_qsl(raw.decode()))
        api = url.path.startswith("/api/")
        request = RecordedRequest(
            path=url.path,
            method=url.path[len("/api/") :] if api else url.path,
            body=body,
            raw=raw,
            headers={k: v for k, v in self.headers.items() if k.lower() != "authorization"},
            authorized=self.headers.get("Authorization") == f"Bearer {fake.token}",
        )
        status, headers, answer, hold = fake._handle(request)
        request.status, request.answer = status, answer
        if hold:
            fake._release.wait()
        data = json.dumps(answer).encode()
        try:
            self.send_response(status)
            self.send_header("Content-Type", "application/json; charset=utf-8")
            self.send_header("Content-Length", str(len(data)))
            for name, value in headers.items():
                self.send_header(name, value)
            self.end_headers()
            self.wfile.write(data)
            self.wfile.flush()
            request.delivered = True
        except (BrokenPipeError, ConnectionResetError):
            request.delivered = False  # the client is gone (killed while we held the answer)

    def log_message(self, format: str, *args: Any) -> None:  # the test output stays quiet
        return
