"""A local stand-in for a Teams Workflows webhook ("When a Teams webhook request is received"), validating cards.

It listens on a free loopback port and accepts POSTs only at its secret
path and ``sig`` query (like a real flow's URL); a body that is not a Teams
message with an Adaptive Card is refused with 400 and the reason. The check
has two parts, both run with ``jsonschema``: the message envelope (a
``message`` with ``application/vnd.microsoft.card.adaptive`` attachments whose
card declares version 1.4), then each card against Microsoft's official
Adaptive Card schema 1.4.0 (vendored unchanged, MIT, in ``adaptivecards/``),
with Teams' documented ``msteams`` key (``{"width": "Full"}``) as the only
addition: an unknown element, an unknown key or a wrong value is refused.
Accepted cards are answered with 202 (as the flow does) and kept; a test can
make the next answers fail (429 with ``Retry-After``, 5xx, 4xx).
"""

from __future__ import annotations

import json
import secrets
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import jsonschema

from tests.integration.servers.http_server import LoopbackHTTPServer
from tests.integration.servers.started import StartedInWith

SCHEMA_FILE = Path(__file__).with_name("adaptivecards") / "adaptive-card-1.4.0.json"
"""Microsoft's Adaptive Card schema 1.4.0, vendored unchanged with its MIT notice (adaptivecards/README.md)."""
CARD_VERSION = "1.4"
"""The version the vendored schema describes: a card must declare it (an older one lacks what Teams needs)."""
MSTEAMS_EXTENSION: dict[str, Any] = {
    "type": "object",
    "additionalProperties": False,
    "properties": {"width": {"enum": ["Full"]}},
    "description": "Teams' documented extension of the top-level card: full-width cards",
}


def adaptive_card_schema() -> dict[str, Any]:
    """The official schema with Teams' ``msteams`` key allowed on the top-level card, and nothing else changed."""
    schema: dict[str, Any] = json.loads(SCHEMA_FILE.read_text(encoding="utf-8"))
    card = schema["definitions"]["AdaptiveCard"]
    if card.get("additionalProperties") is not False or "msteams" in card["properties"]:
        raise AssertionError(f"{SCHEMA_FILE}: not the schema this stand-in was written for")
    card["properties"]["msteams"] = MSTEAMS_EXTENSION
    return schema


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
                    "content": {
                        "type": "object",
                        "required": ["type", "version", "body"],
                        "properties": {
                            "version": {"const": CARD_VERSION},
                            "body": {"type": "array", "minItems": 1},
                            # the schema says "format": "uri", which jsonschema does not check without extras
                            "actions": {"type": "array", "items": {"properties": {"url": {"pattern": "^https?://"}}}},
                        },
                    },
                },
            },
        },
    },
}
"""The message envelope a Workflows flow takes; each card in it is then checked against the official schema."""
_ENVELOPE = jsonschema.Draft202012Validator(TEAMS_MESSAGE_SCHEMA)
_CARD = jsonschema.Draft6Validator(adaptive_card_schema())  # the official schema is draft-06


def validation_errors(body: Any) -> list[str]:
    """Why ``body`` is not a Teams message with a valid Adaptive Card (empty when it is)."""
    errors = [_where(e) for e in _ENVELOPE.iter_errors(body)]
    if errors:
        return errors
    for index, attachment in enumerate(body["attachments"]):
        errors += [f"attachments/{index}/content/" + _where(e) for e in _CARD.iter_errors(attachment["content"])]
    return errors


def _where(error: jsonschema.ValidationError) -> str:
    error, message = _cause(error)
    return f"{'/'.join(map(str, error.absolute_path)) or '<root>'}: {message}"


def _cause(error: jsonschema.ValidationError) -> tuple[jsonschema.ValidationError, str]:
    """The schema's ``anyOf`` over every element (or action) kind says only "not valid under any of the given
    schemas": follow the branch whose ``type`` matched, or say that no kind has this type."""
    while error.context:
        branches: dict[Any, list[jsonschema.ValidationError]] = {}
        for inner in error.context:
            branches.setdefault(inner.schema_path[0], []).append(inner)
        same_type = [found for found in branches.values() if not any(list(e.path) == ["type"] for e in found)]
        if not same_type and isinstance(error.instance, dict):
            return error, f"no element or action has type {error.instance.get('type')!r}"
        if len(same_type) != 1:
            return error, error.message
        error = same_type[0][0]
    return error, error.message


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
