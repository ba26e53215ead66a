"""Teams: the exact Adaptive Card bodies of a burst's first card and of a later "Update N of burst X" card."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError

from alerts.base import SinkContext
from alerts.grouping import GroupUpdate, group_id_for
from alerts.store import open_state_db
from alerts.teams import TeamsConfig, TeamsSink
from tests.unit.alert_samples import T0, Clock, case_burst, changed, closed, opened
from tests.unit.test_slack_render import grouped

URL = "https://prod-42.westeurope.logic.azure.com:443/workflows/abc/triggers/manual/paths/invoke?sig=UNIT-SECRET-SIG"
BURST = group_id_for("exp-1")


@pytest.fixture
def teams_url(monkeypatch: pytest.MonkeyPatch) -> str:
    monkeypatch.setenv("PW_TEAMS_URL", URL)
    return "PW_TEAMS_URL"


def content(body: dict[str, Any]) -> dict[str, Any]:
    assert body["type"] == "message"
    [attachment] = body["attachments"]
    assert attachment["contentType"] == "application/vnd.microsoft.card.adaptive"
    card: dict[str, Any] = attachment["content"]
    return card


def test_the_first_card_of_a_burst(teams_url: str) -> None:
    sink = TeamsSink(TeamsConfig(url_env=teams_url))
    [card] = sink.render(GroupUpdate.single(opened()))
    assert (card.group_id, card.number) == (BURST, 0)
    assert content(card.body) == {
        "type": "AdaptiveCard",
        "$schema": "http://adaptivecards.io/schemas/adaptive-card.json",
        "version": "1.4",
        "body": [
            {
                "type": "TextBlock",
                "text": "🚨 Critical exposure: 1 folder readable by alla (label ledning)",
                "weight": "Bolder",
                "size": "Medium",
                "color": "Attention",
                "wrap": True,
            },
            {"type": "TextBlock", "text": f"Burst {BURST}", "isSubtle": True, "size": "Small", "wrap": True},
            {
                "type": "FactSet",
                "facts": [
                    {"title": "Status", "value": "Open"},
                    {"title": "Severity", "value": "Critical"},
                    {"title": "Label", "value": "ledning"},
                    {"title": "Readable by", "value": "alla"},
                    {"title": "Kind", "value": "Contents: outsiders can read files in it"},
                    {"title": "People outside the label", "value": "5"},
                    {"title": "Changed by", "value": "it-update"},
                    {"title": "When", "value": "2026-11-23 08:00:00 UTC"},
                ],
            },
            {
                "type": "TextBlock",
                "text": "Folder: /srv/share/ledning\n\n2 paths affected, e.g.\n\n- /srv/share/ledning\n\n"
                "- /srv/share/ledning/protokoll 2026-11-20.txt",
                "wrap": True,
            },
            {
                "type": "TextBlock",
                "text": "Replay: permwatch timeline exp-1",
                "isSubtle": True,
                "size": "Small",
                "wrap": True,
            },
        ],
        "msteams": {"width": "Full"},
    }


def test_later_cards_are_numbered_updates_referencing_the_first(teams_url: str, tmp_path: Path) -> None:
    clock = Clock()
    context = SinkContext(database=open_state_db(tmp_path / "alerts.db"), clock=clock)
    sink = TeamsSink(TeamsConfig(url_env=teams_url, hide_below_label=True), context)
    first = opened()
    [card] = sink.render(GroupUpdate.single(first))
    sink._cards.posted(card, T0)  # what send records once the flow accepted it
    change = changed(first, groups=("alla", "it"), people=7)
    [update] = sink.render(grouped(first, change, new=1))
    assert update.number == 1
    assert content(update.body)["body"][1:3] == [
        {
            "type": "TextBlock",
            "text": f"Update 1 of burst {BURST}, first card 2026-11-23 08:00:00 UTC",
            "isSubtle": True,
            "size": "Small",
            "wrap": True,
        },
        {
            "type": "TextBlock",
            "text": "Changed: 1 folder\n\n- /srv/share/ledning now readable by alla, it (7 people)",
            "wrap": True,
        },
    ]
    assert content(update.body)["body"][4]["text"] == (
        "Folder: /srv/share/ledning\n\n2 paths affected, e.g.\n\n- /srv/share/ledning\n\n- /srv/share/ledning/…"
    )
    [again] = sink.render(grouped(first, change, new=1))
    assert again == update  # rendered again (a retry, a restart): the same number, the same body
    sink._cards.posted(update, T0)
    [close] = sink.render(grouped(first, change, closed(first, sequence=2), new=1))
    card_body = content(close.body)["body"]
    assert close.number == 2
    assert (
        card_body[0]["text"] == "✅ Resolved after 1 h 2 min: 1 folder no longer readable by alla, it (label ledning)"
    )
    assert card_body[0]["color"] == "Good"
    assert card_body[2]["text"] == "Closed: 1 folder\n\n- /srv/share/ledning after 1 h 2 min"


def test_a_burst_card_lists_top_folders_and_a_replay_button(teams_url: str) -> None:
    config = TeamsConfig(url_env=teams_url, replay_url="https://pw.example/t/{exposure_id}", top_folders=2)
    [card] = TeamsSink(config).render(grouped(*case_burst(3)))
    body = content(card.body)
    assert body["body"][3]["text"] == (
        "Folders (3, 6 paths open):\n\n- /srv/share/hr/cases/c-00000: 2 paths, 40 people\n\n"
        "- /srv/share/hr/cases/c-00001: 2 paths, 40 people\n\n- … and 1 more"
    )
    assert body["actions"] == [
        {"type": "Action.OpenUrl", "title": "Replay timeline", "url": "https://pw.example/t/exp-case-00000"}
    ]


def test_the_webhook_url_is_a_secret(teams_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    sink = TeamsSink(TeamsConfig(url_env=teams_url))
    [card] = sink.render(GroupUpdate.single(opened()))
    assert "UNIT-SECRET-SIG" not in repr(sink) + repr(sink.config) + repr(card)
    url_file = tmp_path / "teams.url"
    url_file.write_text(URL + "\n")
    assert "UNIT-SECRET-SIG" not in repr(TeamsSink(TeamsConfig(url_file=url_file)))
    with pytest.raises(ValidationError, match="exactly one of url_env and url_file"):
        TeamsConfig()
    monkeypatch.setenv("PW_TEAMS_BAD", "ftp://x/UNIT-SECRET-SIG")
    with pytest.raises(ValueError, match="must start with https://") as bad:
        TeamsSink(TeamsConfig(url_env="PW_TEAMS_BAD"))
    assert "UNIT-SECRET-SIG" not in str(bad.value)


def test_names_are_escaped_so_they_cannot_become_links_or_formatting(teams_url: str) -> None:
    event = opened(folder="/srv/[open](evil.example)", sample_paths=(), actor="*it_update*")
    [card] = TeamsSink(TeamsConfig(url_env=teams_url)).render(GroupUpdate.single(event))
    body = content(card.body)["body"]
    assert body[3]["text"] == "Folder: /srv/\\[open\\](evil.example)\n\n0 paths affected"
    assert body[2]["facts"][6] == {"title": "Changed by", "value": "\\*it\\_update\\*"}


def test_actor_omit_sends_no_user_name(teams_url: str) -> None:
    event = opened(actor="cecilia.berg")
    [named] = TeamsSink(TeamsConfig(url_env=teams_url)).render(GroupUpdate.single(event))
    assert {"title": "Changed by", "value": "cecilia.berg"} in content(named.body)["body"][2]["facts"]
    [card] = TeamsSink(TeamsConfig(url_env=teams_url, actor="omit")).render(GroupUpdate.single(event))
    titles = [fact["title"] for fact in content(card.body)["body"][2]["facts"]]
    assert "Changed by" not in titles and "Readable by" in titles and "cecilia" not in json.dumps(card.body)
