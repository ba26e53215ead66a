"""Every sink says which kind an exposure is: names only (a folder outsiders can list) or contents."""

from __future__ import annotations

import io
import json
from pathlib import Path

import pytest

from alerts.alertmanager import AlertmanagerConfig, AlertmanagerSink
from alerts.console import ConsoleConfig, ConsoleSink
from alerts.grouping import BurstGrouper, GroupUpdate
from alerts.jsonl import JsonlConfig, JsonlSink
from alerts.slack import SlackConfig, SlackSink
from permwatch.events import ExposureEvent, ExposureKind
from tests.unit.alert_samples import changed, opened


def names_only() -> ExposureEvent:
    return opened().model_copy(update={"kind": ExposureKind.NAMES})


def test_console_says_names_only_and_keeps_its_words_for_contents() -> None:
    console = ConsoleSink(ConsoleConfig(), stream=io.StringIO())
    names = console.render(GroupUpdate.single(names_only()))
    assert "5 people outside the label can list its names (no file in it readable)" in names
    assert "5 people outside the label can read it" in console.render(GroupUpdate.single(opened()))


def test_alertmanager_carries_the_kind_and_says_it_in_the_summary() -> None:
    sink = AlertmanagerSink(AlertmanagerConfig(url="http://am:9093"))
    (alert,) = sink.render(GroupUpdate.single(names_only()))
    assert alert["annotations"]["kind"] == "names"
    assert alert["annotations"]["summary"] == (
        "/srv/share/ledning (label ledning) listable (names only, no file readable) by 5 people outside the label "
        "via alla"
    )
    assert "kind" not in alert["labels"]  # a label change would be another alert: names → contents stays one


def test_slack_says_names_only_in_the_folder_text_and_a_widening_to_contents_in_the_thread(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("PERMWATCH_TEST_SLACK_TOKEN", "xoxb-unit-test-token-0000")
    sink = SlackSink(
        SlackConfig.model_validate({"kind": "slack", "channel": "C0SOC", "token_env": "PERMWATCH_TEST_SLACK_TOKEN"})
    )
    first = names_only()
    (item,) = sink.render(GroupUpdate.single(first))
    assert "_Names only: outsiders can list it, but read no file in it_" in item.root.blocks[2]["text"]["text"]
    wider = changed(first, groups=("alla",), people=5).model_copy(update={"kind": ExposureKind.CONTENTS})
    narrower = changed(first, sequence=2, groups=("alla",), people=5, after=120)
    grouper = BurstGrouper()
    for event in (first, wider):
        group_id, _ = grouper.assign(event)
    (update,) = sink.render(GroupUpdate(grouper.snapshot(group_id), (wider,)))
    assert update.reply is not None and "now readable by alla" in update.reply.blocks[0]["text"]["text"]
    assert "Names only" not in update.root.blocks[2]["text"]["text"]
    grouper.assign(narrower)
    (update,) = sink.render(GroupUpdate(grouper.snapshot(group_id), (narrower,)))
    assert update.reply is not None and "now listable (names only) by alla" in update.reply.blocks[0]["text"]["text"]


def test_jsonl_writes_the_kind_as_on_the_bus(tmp_path: Path) -> None:
    sink = JsonlSink(JsonlConfig(kind="jsonl", path=tmp_path / "alerts.jsonl"))
    (line,) = sink.render(GroupUpdate.single(names_only()))
    assert json.loads(json.dumps(line))["kind"] == "names"
