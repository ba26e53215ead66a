"""Redaction: the labelled folder is shown, what is below it becomes '…', in every sink that renders paths."""

from __future__ import annotations

import io
import json
from pathlib import Path

from alerts.console import ConsoleConfig, ConsoleSink
from alerts.grouping import GroupUpdate
from alerts.jsonl import JsonlConfig, JsonlSink
from alerts.redaction import hide_below, shown_paths
from tests.unit.alert_samples import opened


def test_hide_below_keeps_the_folder_and_hides_the_rest() -> None:
    assert hide_below("/srv/cases/c-17", "/srv/cases/c-17") == "/srv/cases/c-17"
    assert hide_below("/srv/cases/c-17", "/srv/cases/c-17/") == "/srv/cases/c-17"
    assert hide_below("/srv/cases/c-17", "/srv/cases/c-17/Anna Svensson/journal.txt") == "/srv/cases/c-17/…"
    assert hide_below("/srv/cases/c-17/", "/srv/cases/c-17/x") == "/srv/cases/c-17/…"
    assert hide_below("/srv/cases/c-17", "/srv/cases/c-170/x") == "…"  # a prefix is not a parent
    assert hide_below("/", "/etc/shadow") == "/…"


def test_shown_paths_deduplicate_what_is_hidden() -> None:
    paths = ("/f", "/f/a.txt", "/f/b/c.txt")
    assert shown_paths("/f", paths, hide=False) == paths
    assert shown_paths("/f", paths, hide=True) == ("/f", "/f/…")


def test_jsonl_and_console_hide_names_when_asked(tmp_path: Path) -> None:
    event = opened(sample_paths=("/srv/share/ledning", "/srv/share/ledning/Klient Karlsson.docx"))
    update = GroupUpdate.single(event)
    [line] = JsonlSink(JsonlConfig(path=tmp_path / "a.jsonl", hide_below_label=True)).render(update)
    assert line["sample_paths"] == ["/srv/share/ledning", "/srv/share/ledning/…"]
    assert "Karlsson" not in json.dumps(line)
    console = ConsoleSink(ConsoleConfig(hide_below_label=True), stream=io.StringIO()).render(update)
    assert "Karlsson" not in console and "/srv/share/ledning/…" in console
    shown = ConsoleSink(ConsoleConfig(), stream=io.StringIO()).render(update)
    assert "Klient Karlsson.docx" in shown
