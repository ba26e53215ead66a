"""The commented Teams, e-mail and syslog examples in deploy/permwatch.example.toml work once uncommented.

Each commented ``[[alerts.sinks]]`` block of those kinds is uncommented into a
copy of the example config (its secret and CA files pointed at files the test
writes, where the example says ``/etc/permwatch/…``); the copy loads and
passes the stage checks ``permwatch check-config`` runs, and the sink is built
from it, with the values the example shows.
"""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Any

import pytest

from alerts.base import SinkSettings
from alerts.registry import build_sink
from permwatch.cli.settings import load_config
from permwatch.cli.wiring import validate_stages

EXAMPLE = Path(__file__).resolve().parents[2] / "deploy" / "permwatch.example.toml"
SECRETS = {
    "teams-webhook-url": "https://prod-00.westeurope.logic.azure.com/workflows/x/triggers/manual/paths/invoke?sig=EX",
    "smtp-password": "example-smtp-password",
    "siem-ca.pem": "-----BEGIN CERTIFICATE-----\n-----END CERTIFICATE-----\n",
}


def commented_sinks(text: str) -> dict[str, str]:
    """The commented ``[[alerts.sinks]]`` blocks, uncommented, by kind."""
    lines = text.splitlines()
    blocks: dict[str, str] = {}
    for start, line in enumerate(lines):
        if line != "# [[alerts.sinks]]":
            continue
        block = []
        for inner in lines[start:]:
            if not inner.startswith("#"):
                break
            block.append(inner.removeprefix("#").removeprefix(" "))
        uncommented = "\n".join(block) + "\n"
        [sink] = tomllib.loads(uncommented)["alerts"]["sinks"]
        blocks[sink["kind"]] = uncommented
    return blocks


def test_every_sink_kind_has_a_commented_example() -> None:
    assert {"slack", "alertmanager", "webhook", "teams", "email", "syslog"} <= set(
        commented_sinks(EXAMPLE.read_text(encoding="utf-8"))
    )


@pytest.mark.parametrize(
    ("kind", "shown"),
    [
        ("teams", {"hide_below_label": True, "actor": "name"}),
        ("email", {"security": "starttls", "digest_minutes": 15.0, "to": ["soc@example.org"], "actor": "name"}),
        ("syslog", {"port": 6514, "tls": True, "format": "ecs", "facility": "authpriv", "actor": "omit"}),
    ],
)
def test_the_commented_example_loads_once_uncommented(kind: str, shown: dict[str, Any], tmp_path: Path) -> None:
    text = EXAMPLE.read_text(encoding="utf-8")
    block = commented_sinks(text)[kind]
    for name, content in SECRETS.items():
        (tmp_path / name).write_text(content, encoding="utf-8")
        block = block.replace(f"/etc/permwatch/{name}", str(tmp_path / name))
    assert "/etc/permwatch/" not in block  # every file the example names is one the test provides
    path = tmp_path / "permwatch.toml"
    path.write_text(text + "\n" + block, encoding="utf-8")
    config = load_config(path, environ={})
    validate_stages(config, path)  # what check-config runs: each sink's own settings model, its secrets read
    [settings] = [s.model_dump(exclude_none=True) for s in config.alerts.sinks if s.kind == kind]
    sink = build_sink(settings)
    assert isinstance(sink.settings, SinkSettings) and sink.settings.kind == kind
    assert {key: getattr(sink.settings, key) for key in shown} == shown
