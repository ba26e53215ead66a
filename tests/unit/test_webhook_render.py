"""Webhook: the body is signed (HMAC-SHA256) so a receiver can verify it; the secret appears nowhere."""

from __future__ import annotations

import hashlib
import hmac
import json
from pathlib import Path

import pytest
from pydantic import ValidationError

from alerts.grouping import BurstGrouper, GroupUpdate, group_id_for
from alerts.webhook import DELIVERY_HEADER, SIGNATURE_HEADER, WebhookConfig, WebhookSink
from tests.unit.alert_samples import case_burst, opened

SECRET = "whsec-unit-0123456789"


def test_signature_verifies_over_the_exact_body(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PW_WEBHOOK_SECRET", SECRET)
    sink = WebhookSink(WebhookConfig(url="https://soar.example/hook/abc", secret_env="PW_WEBHOOK_SECRET"))
    [request] = sink.render(GroupUpdate.single(opened()))
    expected = hmac.new(SECRET.encode(), request.body, hashlib.sha256).hexdigest()
    assert request.headers[SIGNATURE_HEADER] == f"sha256={expected}"
    tampered = request.body.replace(b"ledning", b"ledninG")
    assert hmac.new(SECRET.encode(), tampered, hashlib.sha256).hexdigest() != expected
    body = json.loads(request.body)
    assert body["group"]["group_id"] == group_id_for("exp-1")
    assert body["group"]["status"] == "open" and body["group"]["readers"] == ["alla"]
    assert [e["event_id"] for e in body["events"]] == ["exp-1.0"]
    assert body["events"][0]["group_id"] == group_id_for("exp-1")
    [again] = sink.render(GroupUpdate.single(opened()))
    assert again.body == request.body and again.headers[DELIVERY_HEADER] == request.headers[DELIVERY_HEADER]
    assert SECRET not in request.body.decode() + json.dumps(request.headers) + repr(sink) + repr(sink.config)


def test_secret_from_a_file_and_paths_hidden(tmp_path: Path) -> None:
    secret_file = tmp_path / "webhook.key"
    secret_file.write_text(SECRET + "\n")
    config = WebhookConfig(url="http://127.0.0.1:1/h", secret_file=secret_file, hide_below_label=True)
    event = opened(sample_paths=("/srv/share/ledning", "/srv/share/ledning/Klient Karlsson.docx"))
    [request] = WebhookSink(config).render(GroupUpdate.single(event))
    assert json.loads(request.body)["events"][0]["sample_paths"] == ["/srv/share/ledning", "/srv/share/ledning/…"]
    assert b"Karlsson" not in request.body
    expected = hmac.new(SECRET.encode(), request.body, hashlib.sha256).hexdigest()
    assert request.headers[SIGNATURE_HEADER] == f"sha256={expected}"


def test_a_big_update_is_split_into_signed_posts(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PW_WEBHOOK_SECRET", SECRET)
    config = WebhookConfig(url="https://soar.example/h", secret_env="PW_WEBHOOK_SECRET", max_events_per_post=400)
    burst = case_burst(1000)
    grouper = BurstGrouper()
    group_id = {grouper.assign(e)[0] for e in burst}.pop()
    requests = WebhookSink(config).render(GroupUpdate(grouper.snapshot(group_id), tuple(burst)))
    assert [len(json.loads(r.body)["events"]) for r in requests] == [400, 400, 200]
    assert len({r.headers[DELIVERY_HEADER] for r in requests}) == 3
    for request in requests:
        expected = hmac.new(SECRET.encode(), request.body, hashlib.sha256).hexdigest()
        assert request.headers[SIGNATURE_HEADER] == f"sha256={expected}"
        assert json.loads(request.body)["group"]["folders"] == 1000


def test_a_missing_secret_is_a_config_error_naming_the_variable() -> None:
    with pytest.raises(ValidationError, match="environment variable PW_NO_SUCH_SECRET is not set"):
        WebhookConfig(url="https://x.example/", secret_env="PW_NO_SUCH_SECRET")
    with pytest.raises(ValidationError, match="must start with http"):
        WebhookConfig(url="ftp://x.example/", secret_env="PW_NO_SUCH_SECRET")
