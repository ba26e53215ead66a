"""A local stand-in for a Teams Workflows webhook ("When a Teams webhook request is received"), validating cards.

It listens on a free loopback port and accepts POSTs only at its secret
path and ``sig`` query (like a real flow's URL); a body that is not a Teams
message with an Adaptive Card is refused with 400 and the reason. The check
is a JSON Schema (validated with ``jsonschema``) of the message envelope and
of the Adaptive Card 1.4+ elements permwatch uses (``TextBlock``,
``FactSet``, ``Action.OpenUrl``, Teams' ``msteams.width``), with their required
fields, types and enumerated values taken from the Adaptive Cards schema
explorer. No package on PyPI or npm ships Microsoft's schema file, so this is
a structural check of those elements, not the full schema: an element type
it does not know is refused. Accepted cards are answered with 202 (as the
flow does) and kept; a test can make the next answers fail (429 with
``Retry-After``, 5xx, 4xx).
"""

from __future__ import annotations

import json
import secrets
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler
from typing import Any
from urllib.parse import parse_qs, urlsplit

import jsonschema

from tests.integration.servers.http_server import LoopbackHTTPServer
from tests.integration.servers.started import StartedInWith

_TEXT_BLOCK = {
    "type": "object",
    "required": ["type", "text"],
    "additionalProperties": False,
    "properties": {
        "type": {"const": "TextBlock"},
        "text": {"type": "string", "minLength": 1},
        "wrap": {"type": "boolean"},
        "isSubtle": {"type": "boolean"},
        "maxLines": {"type": "integer", "minimum": 1},
        "weight": {"enum": ["Default", "Lighter", "Bolder"]},
        "size": {"enum": ["Default", "Small", "Medium", "Large", "ExtraLarge"]},
        "color": {"enum": ["Default", "Dark", "Light", "Accent", "Good", "Warning", "Attention"]},
        "horizontalAlignment": {"enum": ["Left", "Center", "Right"]},
        "spacing": {"enum": ["None", "Small", "Default", "Medium", "Large", "ExtraLarge", "Padding"]},
        "separator": {"type": "boolean"},
        "id": {"type": "string"},
    },
}
_FACT_SET = {
    "type": "object",
    "required": ["type", "facts"],
    "additionalProperties": False,
    "properties": {
        "type": {"const": "FactSet"},
        "facts": {
            "type": "array",
            "items": {
                "type": "object",
                "required": ["title", "value"],
                "additionalProperties": False,
                "properties": {"title": {"type": "string"}, "value": {"type": "string"}},
            },
        },
        "spacing": {"enum": ["None", "Small", "Default", "Medium", "Large", "ExtraLarge", "Padding"]},
        "separator": {"type": "boolean"},
        "id": {"type": "string"},
    },
}
_OPEN_URL = {
    "type": "object",
    "required": ["type", "url"],
    "additionalProperties": False,
    "properties": {
        "type": {"const": "Action.OpenUrl"},
        "url": {"type": "string", "pattern": "^https?://"},
        "title": {"type": "string"},
    },
}
ADAPTIVE_CARD_SCHEMA: dict[str, Any] = {
    "$schema": "https://json-schema.org/draft/2020-12/schema",
    "type": "object",
    "required": ["type", "version", "body"],
    "additionalProperties": False,
    "properties": {
        "type": {"const": "AdaptiveCard"},
        "$schema": {"type": "string"},
        "version": {"type": "string", "pattern": r"^1\.([4-9]|[1-9][0-9])$"},  # 1.4 or newer
        "body": {
            "type": "array",
            "minItems": 1,
            "items": {
                "type": "object",
                "required": ["type"],
                "properties": {"type": {"enum": ["TextBlock", "FactSet"]}},
                "allOf": [
                    {"if": {"properties": {"type": {"const": "TextBlock"}}}, "then": _TEXT_BLOCK},
                    {"if": {"properties": {"type": {"const": "FactSet"}}}, "then": _FACT_SET},
                ],
            },
        },
        "actions": {"type": "array", "items": _OPEN_URL},
        "fallbackText": {"type": "string"},
        "msteams": {
            "type": "object",
            "additionalProperties": False,
            "properties": {"width": {"enum": ["Full"]}},
        },
    },
}
TEAMS_MESSAGE_SCHEMA: dict[str, Any] = {
    "$schema": "https://json-schema.org/draft/2020-12/schema",
    "type": "object",
    "required": ["type", "attachments"],
    "properties": {
        "type": {"const": "message"},
        "attachments": {
            "type": "array",
            "minItems": 1,
            "items": {
                "type": "object",
                "required": ["contentType", "content"],
                "additionalProperties": False,
                "properties": {
                    "contentType": {"const": "application/vnd.microsoft.card.adaptive"},
                    "contentUrl": {"type": ["string", "null"]},
                    "content": ADAPTIVE_CARD_SCHEMA,
                },
            },
        },
    },
}
_VALIDATOR = jsonschema.Draft202012Validator(TEAMS_MESSAGE_SCHEMA)


def validation_errors(body: Any) -> list[str]:
    """Why ``body`` is not a Teams message with a valid Adaptive Card (empty when it is)."""
    return [f"{'/'.join(map(str, e.absolute_path)) or '<root>'}: {e.message}" for e in _VALIDATOR.iter_errors(body)]


@dataclass
class TeamsRequest:
    at: float
    status: int
    body: Any
    raw: bytes
    errors: list[str] = field(default_factory=list)


class FakeTeamsWorkflow(StartedInWith):
    def __init__(self) -> None:
        self.path = f"/workflows/{secrets.token_hex(8)}/triggers/manual/paths/invoke"
        self.signature = secrets.token_urlsafe(24)
        self.requests: list[TeamsRequest] = []
        self._failures: list[tuple[int, float | None]] = []
        self._lock = threading.Lock()
        self._server = LoopbackHTTPServer("fake-teams")
        self._port = 0

    @property
    def webhook_url(self) -> str:
        return f"http://127.0.0.1:{self._port}{self.path}?api-version=2016-06-01&sig={self.signature}"

    def start(self) -> None:
        fake = self

        class Handler(_Handler):
            server_fake = fake

        self._server.start(Handler, self._port)
        self._port = self._server.port  # started again, it listens where the sink's URL points

    def stop(self) -> None:
        self._server.stop()

    def fail(self, status: int, *, times: int = 1, retry_after: float | None = None) -> None:
        with self._lock:
            self._failures += [(status, retry_after)] * times

    def clear_failures(self) -> None:
        with self._lock:
            self._failures.clear()

    def cards(self) -> list[dict[str, Any]]:
        """The Adaptive Cards accepted, in order."""
        with self._lock:
            return [r.body["attachments"][0]["content"] for r in self.requests if r.status == 202]

    def statuses(self) -> list[int]:
        with self._lock:
            return [r.status for r in self.requests]

    def wait_for(self, count: int, timeout: float = 60.0) -> list[dict[str, Any]]:
        deadline = time.monotonic() + timeout
        while True:
            cards = self.cards()
            if len(cards) >= count:
                return cards
            if time.monotonic() > deadline:
                raise AssertionError(f"the Teams flow accepted {len(cards)} of {count} cards: {self.statuses()}")
            time.sleep(0.05)

    def _answer(self, path: str, query: dict[str, list[str]], raw: bytes) -> tuple[int, dict[str, str], bytes]:
        with self._lock:
            if path != self.path or query.get("sig") != [self.signature]:
                self.requests.append(TeamsRequest(time.monotonic(), 401, None, raw))
                return 401, {}, b'{"error":{"code":"DirectApiAuthorizationRequired"}}'
            if self._failures:
                status, retry_after = self._failures.pop(0)
                self.requests.append(TeamsRequest(time.monotonic(), status, None, raw))
                headers = {} if retry_after is None else {"Retry-After": str(retry_after)}
                return status, headers, b'{"error":{"code":"InjectedFailure"}}'
            try:
                body = json.loads(raw)
            except ValueError:
                body = None
            errors = validation_errors(body) if body is not None else ["not JSON"]
            status = 400 if errors else 202
            self.requests.append(TeamsRequest(time.monotonic(), status, body, raw, errors))
            if errors:
                return 400, {}, json.dumps({"error": {"code": "InvalidTemplate", "message": errors[0]}}).encode()
            return 202, {}, b""


class _Handler(BaseHTTPRequestHandler):
    server_fake: FakeTeamsWorkflow
    protocol_version = "HTTP/1.1"

    def do_POST(self) -> None:
        url = urlsplit(self.path)
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length) if length else b""
        status, headers, data = self.server_fake._answer(url.path, parse_qs(url.query), raw)
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        for name, value in headers.items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, format: str, *args: Any) -> None:
        return
