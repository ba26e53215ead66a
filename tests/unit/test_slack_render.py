"""Slack: the exact Block Kit payloads for an opened, changed and closed exposure and for a burst of many."""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from typing import Any

import pytest
from pydantic import ValidationError

from alerts.base import SinkContext
from alerts.grouping import BurstGrouper, GroupUpdate, group_id_for
from alerts.slack import SlackConfig, SlackSink
from alerts.slack_render import SlackThreadUpdate
from alerts.store import PendingPost, SlackPosts, open_state_db
from permwatch.events import ExposureEvent
from tests.unit.alert_samples import case_burst, changed, closed, opened

TOKEN = "xoxb-unit-test-token-0000"
WHEN_T0 = "<!date^1795420800^{date_short_pretty} {time_secs}|2026-11-23 08:00:00 UTC>"
MakeSink = Callable[..., SlackSink]


@pytest.fixture
def make_sink(monkeypatch: pytest.MonkeyPatch) -> MakeSink:
    monkeypatch.setenv("PERMWATCH_TEST_SLACK_TOKEN", TOKEN)

    def make(**settings: Any) -> SlackSink:
        config = {"kind": "slack", "channel": "C0SOC", "token_env": "PERMWATCH_TEST_SLACK_TOKEN", **settings}
        return SlackSink(SlackConfig.model_validate(config))

    return make


def grouped(*events: ExposureEvent, new: int | None = None) -> GroupUpdate:
    """The update for the last ``new`` events (all by default) after grouping every event."""
    grouper = BurstGrouper()
    group_id = ""
    for event in events:
        group_id, _ = grouper.assign(event)
    fresh = events if new is None else events[len(events) - new :]
    return GroupUpdate(grouper.snapshot(group_id), tuple(fresh))


def metadata(group_id: str, post_key: str, *told: str) -> dict[str, Any]:
    payload: dict[str, Any] = {"group_id": group_id, "post_key": post_key}
    if told:  # the exposure event ids the message tells
        payload["event_ids"] = list(told)
    return {"event_type": "permwatch_alert", "event_payload": payload}


def reply_key(group_id: str, channel: str, *event_ids: str) -> str:
    return f"{group_id}/{channel}/" + hashlib.sha256("\n".join(event_ids).encode()).hexdigest()[:16]


def only(rendered: list[SlackThreadUpdate]) -> SlackThreadUpdate:
    assert len(rendered) == 1
    return rendered[0]


def test_opened_exposure_is_one_root_message(make_sink: MakeSink) -> None:
    item = only(make_sink().render(GroupUpdate.single(opened())))
    group = group_id_for("exp-1")
    assert (item.group_id, item.channel, item.reply) == (group, "C0SOC", None)
    assert item.root.post_key == f"{group}/C0SOC/root"
    assert item.root.text == "Critical exposure: 1 folder readable by alla (label ledning); changed by it-update"
    assert item.root.metadata == metadata(group, f"{group}/C0SOC/root", "exp-1.0")
    assert item.root.blocks == [
        {
            "type": "header",
            "text": {
                "type": "plain_text",
                "text": ":rotating_light: Critical exposure: 1 folder readable by alla",
                "emoji": True,
            },
        },
        {
            "type": "section",
            "fields": [
                {"type": "mrkdwn", "text": "*Status*\nOpen"},
                {"type": "mrkdwn", "text": "*Severity*\nCritical"},
                {"type": "mrkdwn", "text": "*Label*\n`ledning`"},
                {"type": "mrkdwn", "text": "*Readable by*\nalla"},
                {"type": "mrkdwn", "text": "*People outside the label*\n5"},
                {"type": "mrkdwn", "text": "*Changed by*\nit-update"},
                {"type": "mrkdwn", "text": f"*When*\n{WHEN_T0}"},
            ],
        },
        {
            "type": "section",
            "text": {
                "type": "mrkdwn",
                "text": "*Folder*\n`/srv/share/ledning`\n2 paths affected, e.g.\n"
                "`/srv/share/ledning`\n`/srv/share/ledning/protokoll 2026-11-20.txt`",
            },
        },
        {"type": "context", "elements": [{"type": "mrkdwn", "text": "Replay: `permwatch timeline exp-1`"}]},
    ]


def test_change_updates_the_root_and_replies_in_its_thread(make_sink: MakeSink) -> None:
    first = opened()
    change = changed(first, groups=("alla", "it"), people=7)
    item = only(make_sink().render(grouped(first, change, new=1)))
    group = group_id_for("exp-1")
    assert item.root.blocks[0]["text"]["text"] == ":rotating_light: Critical exposure: 1 folder readable by alla, it"
    assert item.root.blocks[1]["fields"][3:5] == [
        {"type": "mrkdwn", "text": "*Readable by*\nalla, it"},
        {"type": "mrkdwn", "text": "*People outside the label*\n7"},
    ]
    assert item.reply is not None
    assert item.reply.post_key == reply_key(group, "C0SOC", "exp-1.1")
    assert item.reply.text == "Changed: 1 folder"
    assert item.reply.metadata == metadata(group, item.reply.post_key, "exp-1.1")
    assert item.reply.blocks == [
        {
            "type": "section",
            "text": {
                "type": "mrkdwn",
                "text": ":pencil2: *Changed*: 1 folder\n"
                "• `/srv/share/ledning` now readable by alla, it (7 people)\n"
                "_it-update, <!date^1795420860^{date_short_pretty} {time_secs}|2026-11-23 08:01:00 UTC>_",
            },
        }
    ]


def test_close_resolves_the_root_with_the_duration_and_says_so_in_the_thread(make_sink: MakeSink) -> None:
    first = opened()
    item = only(make_sink().render(grouped(first, closed(first, after=3725.0), new=1)))
    assert item.root.text == (
        "Resolved after 1 h 2 min: 1 folder no longer readable by alla (label ledning); changed by it-update"
    )
    assert item.root.blocks[0] == {
        "type": "header",
        "text": {
            "type": "plain_text",
            "text": ":white_check_mark: Resolved: 1 folder no longer readable by alla",
            "emoji": True,
        },
    }
    assert item.root.blocks[1]["fields"][0] == {"type": "mrkdwn", "text": "*Status*\nResolved after 1 h 2 min"}
    assert item.root.blocks[2] == {
        "type": "section",
        "text": {"type": "mrkdwn", "text": "*Folder*\n`/srv/share/ledning`"},
    }
    assert item.reply is not None
    assert item.reply.blocks == [
        {
            "type": "section",
            "text": {
                "type": "mrkdwn",
                "text": ":white_check_mark: *Closed* after 1 h 2 min: `/srv/share/ledning` is restricted again\n"
                "_it-update, <!date^1795424525^{date_short_pretty} {time_secs}|2026-11-23 09:02:05 UTC>_",
            },
        }
    ]


def test_a_burst_of_5000_case_folders_is_one_message_with_counts_and_top_folders(make_sink: MakeSink) -> None:
    burst = case_burst(5000)
    item = only(make_sink().render(grouped(*burst)))
    group = group_id_for("exp-case-00000")
    assert item.reply is None
    assert item.root.text == (
        "High exposure: 5,000 folders readable by alla "
        "(label case-00000, case-00001, case-00002 +4,997 more); changed by it-update"
    )
    assert item.root.blocks == [
        {
            "type": "header",
            "text": {
                "type": "plain_text",
                "text": ":rotating_light: High exposure: 5,000 folders readable by alla",
                "emoji": True,
            },
        },
        {
            "type": "section",
            "fields": [
                {"type": "mrkdwn", "text": "*Status*\nOpen"},
                {"type": "mrkdwn", "text": "*Severity*\nHigh"},
                {"type": "mrkdwn", "text": "*Label*\n`case-00000`, `case-00001`, `case-00002` +4,997 more"},
                {"type": "mrkdwn", "text": "*Readable by*\nalla"},
                {"type": "mrkdwn", "text": "*People outside the label*\nup to 40 per folder"},
                {"type": "mrkdwn", "text": "*Changed by*\nit-update"},
                {"type": "mrkdwn", "text": f"*When*\n{WHEN_T0}"},
            ],
        },
        {
            "type": "section",
            "text": {
                "type": "mrkdwn",
                "text": "*Folders* (5,000, 10,000 paths open)\n"
                "• `/srv/share/hr/cases/c-00000`: 2 paths, 40 people\n"
                "• `/srv/share/hr/cases/c-00001`: 2 paths, 40 people\n"
                "• `/srv/share/hr/cases/c-00002`: 2 paths, 40 people\n"
                "• `/srv/share/hr/cases/c-00003`: 2 paths, 40 people\n"
                "• `/srv/share/hr/cases/c-00004`: 2 paths, 40 people\n"
                "_… and 4,995 more_",
            },
        },
        {
            "type": "context",
            "elements": [
                {
                    "type": "mrkdwn",
                    "text": f"Replay: `permwatch timeline exp-case-00000` (first of 5,000) · burst `{group}`",
                }
            ],
        },
    ]


def test_a_later_burst_widens_the_same_message_and_says_so_in_the_thread(make_sink: MakeSink) -> None:
    first = case_burst(5000)
    later = case_burst(1000, start=5000, at=first[0].opened_at.replace(second=30), cause="fs-second")
    item = only(make_sink().render(grouped(*first, *later, new=1000)))
    assert item.root.blocks[0]["text"]["text"] == ":rotating_light: High exposure: 6,000 folders readable by alla"
    assert item.reply is not None
    assert item.reply.blocks[0]["text"]["text"] == (
        ":heavy_plus_sign: *Widened*: 1,000 more folders now readable, 6,000 in this alert\n"
        "• `/srv/share/hr/cases/c-05000` by alla\n"
        "• `/srv/share/hr/cases/c-05001` by alla\n"
        "• `/srv/share/hr/cases/c-05002` by alla\n"
        "_… and 997 more_\n"
        "_it-update, <!date^1795420830^{date_short_pretty} {time_secs}|2026-11-23 08:00:30 UTC>_"
    )


def test_closing_the_whole_burst_resolves_it_with_the_bursts_duration(make_sink: MakeSink) -> None:
    burst = case_burst(5000)
    closes = [closed(event, after=192.0) for event in burst]
    item = only(make_sink().render(grouped(*burst, *closes, new=5000)))
    # the last folder opened 0.999 s after the first and closed 192 s after it opened
    assert item.root.blocks[1]["fields"][0] == {"type": "mrkdwn", "text": "*Status*\nResolved after 3 min 13 s"}
    assert item.root.blocks[2]["text"]["text"].splitlines()[1] == (
        "• `/srv/share/hr/cases/c-00000`: closed after 3 min 12 s"
    )
    assert item.reply is not None
    assert item.reply.blocks[0]["text"]["text"].splitlines()[0] == (
        ":white_check_mark: *Resolved*: all 5,000 folders closed; the exposure lasted 3 min 13 s"
    )


def test_partial_close_says_how_many_are_still_open(make_sink: MakeSink) -> None:
    burst = case_burst(10)
    item = only(make_sink().render(grouped(*burst, closed(burst[3], after=61.0), new=1)))
    assert item.root.blocks[1]["fields"][0] == {"type": "mrkdwn", "text": "*Status*\nOpen: 9 of 10 folders"}
    assert item.reply is not None
    assert item.reply.blocks[0]["text"]["text"].splitlines()[:2] == [
        ":white_check_mark: *Closed*: 1 folder, 9 still open",
        "• `/srv/share/hr/cases/c-00003` after 1 min 1 s",
    ]


def test_each_message_names_the_opens_and_closes_it_tells_in_its_metadata(make_sink: MakeSink) -> None:
    """So an audit maps every open and close to exactly one message: the root tells the openings that made the
    group, a reply what it lists (a widening's openings, changes, closes); at most 100 ids a message."""
    burst = case_burst(3)
    later = case_burst(2, start=3, at=burst[0].opened_at.replace(second=30), cause="fs-second")
    first = only(make_sink().render(grouped(*burst)))
    assert first.root.metadata["event_payload"]["event_ids"] == [e.event_id for e in burst]
    widened = only(make_sink().render(grouped(*burst, *later, closed(burst[1]), new=3)))
    assert widened.reply is not None
    told = [*(e.event_id for e in later), closed(burst[1]).event_id]
    assert widened.reply.metadata["event_payload"]["event_ids"] == told
    big = case_burst(150)
    assert len(only(make_sink().render(grouped(*big))).root.metadata["event_payload"]["event_ids"]) == 100


def test_events_delivered_again_after_a_crash_are_not_told_twice(make_sink: MakeSink) -> None:
    """A crash after Slack took a post and before the dispatcher marked its events: they come again, perhaps
    with others (the group store kept them as members). What a confirmed post told is left out, and an opening
    that joins a root already posted is told as a widening, not left to the root's silent update."""
    database = open_state_db(":memory:")
    sink = make_sink()
    sink = SlackSink(sink.config, SinkContext(database=database))
    posts = SlackPosts(database)
    burst = case_burst(3)
    first = only(sink.render(grouped(*burst[:1])))
    assert first.root.told == (burst[0].event_id,) and first.reply is None
    posts.begin("slack", first.root.post_key, first.group_id, PendingPost("C0SOC", None, 0.0), first.root.told)
    posts.confirm("slack", first.root.post_key, "C0SOC", "1.000001")
    again = only(sink.render(grouped(*burst[:2])))  # the first event again, with the next one
    assert again.reply is not None and again.reply.told == (burst[1].event_id,)
    assert again.reply.metadata["event_payload"]["event_ids"] == [burst[1].event_id]
    assert again.reply.text.startswith("Widened: 1 more folder now readable")
    posts.begin("slack", again.reply.post_key, again.group_id, PendingPost("C0SOC", "1.000001", 0.0), again.reply.told)
    assert not posts.told("slack", [burst[1].event_id]), "told only once its post is confirmed"
    posts.confirm("slack", again.reply.post_key, "C0SOC", "1.000002")
    assert posts.told("slack", [e.event_id for e in burst]) == {burst[0].event_id, burst[1].event_id}
    assert only(sink.render(grouped(*burst[:2]))).reply is None  # a third delivery tells nothing more


def test_a_root_posted_late_leaves_a_widening_to_its_reply(make_sink: MakeSink) -> None:
    """The group store kept earlier members but their root never reached Slack (a crash): the root posted now and
    the widening reply must not both tell the new opening."""
    burst = case_burst(2)
    item = only(make_sink().render(grouped(*burst, new=1)))
    assert item.reply is not None and item.reply.told == (burst[1].event_id,)
    assert item.root.told == () and "event_ids" not in item.root.metadata["event_payload"]


def test_an_opening_that_comes_with_its_later_events_is_told_once_with_them(make_sink: MakeSink) -> None:
    """After a restart the alerts stage reads a backlog: an exposure's opening, its changes and even its close can
    come in one update. Each is told by exactly one message: the root, when it is posted now, else a widening (or a
    close) in the thread; an opening never vanishes behind the change that followed it (the kill test found it so)."""
    first, other = case_burst(2)
    grown = changed(other, groups=("alla", "enhet"), people=50, after=2)
    wider = changed(other, sequence=2, groups=("alla", "enhet", "extern"), people=60, after=3)
    fresh = only(make_sink().render(grouped(first, other, grown, wider)))  # the group's first message
    assert fresh.reply is None
    assert fresh.root.told == tuple(e.event_id for e in (first, other, grown, wider))
    ids = [first.event_id, other.event_id, grown.event_id, wider.event_id]
    assert fresh.root.metadata["event_payload"]["event_ids"] == ids
    # the root is in the channel already (told the first opening): the rest is one widening, shown as it is now
    later = only(make_sink().render(grouped(first, other, grown, wider, new=3)))
    assert later.reply is not None and later.reply.told == (other.event_id, grown.event_id, wider.event_id)
    assert later.reply.text.startswith("Widened: 1 more folder now readable")
    assert "extern" in later.reply.blocks[0]["text"]["text"]
    # opened and closed in one update: the close tells both
    gone = closed(other, sequence=3, after=4)
    both = only(make_sink().render(grouped(first, other, grown, wider, gone, new=4)))
    assert both.reply is not None and both.reply.told == tuple(e.event_id for e in (other, grown, wider, gone))
    ids = [other.event_id, gone.event_id, grown.event_id, wider.event_id]  # in the metadata, opens and closes first
    assert both.reply.metadata["event_payload"]["event_ids"] == ids


def test_hide_below_label_shows_the_folder_but_not_the_file_names(make_sink: MakeSink) -> None:
    event = opened(sample_paths=("/srv/share/ledning", "/srv/share/ledning/Anna Svensson/journal.txt"))
    item = only(make_sink(hide_below_label=True).render(GroupUpdate.single(event)))
    text = item.root.blocks[2]["text"]["text"]
    assert (
        text == "*Folder*\n`/srv/share/ledning`\n2 paths affected, e.g.\n`/srv/share/ledning`\n`/srv/share/ledning/…`"
    )
    assert "Anna" not in str(item)


def test_routes_send_each_exposure_to_its_channel(make_sink: MakeSink) -> None:
    sink = make_sink(
        routes=[
            {"labels": ["case-*"], "channel": "C0CASES"},
            {"min_severity": "critical", "channel": "C0CRIT"},
        ]
    )
    cases = case_burst(2)
    management = opened(at=cases[0].opened_at, actor="it-update", causes=("fs-burst",))
    rendered = sink.render(grouped(*cases, management))
    assert [(item.channel, item.root.blocks[0]["text"]["text"]) for item in rendered] == [
        ("C0CASES", ":rotating_light: High exposure: 2 folders readable by alla"),
        ("C0CRIT", ":rotating_light: Critical exposure: 1 folder readable by alla"),
    ]
    assert len({item.group_id for item in rendered}) == 1  # one burst, a thread in each channel


def test_mrkdwn_in_names_is_escaped() -> None:
    from alerts.slack_render import RenderOptions, root_message

    event = opened(folder="/srv/a<b>&`c`", sample_paths=(), actor="<!channel>")
    root = root_message(GroupUpdate.single(event).group, RenderOptions(), post_key="k")
    assert root.blocks[2]["text"]["text"] == "*Folder*\n`/srv/a&lt;b&gt;&amp;'c'`\n0 paths affected"
    assert root.blocks[1]["fields"][5]["text"] == "*Changed by*\n&lt;!channel&gt;"


def test_the_token_is_read_from_env_or_file_and_never_shown(
    make_sink: MakeSink, monkeypatch: pytest.MonkeyPatch, tmp_path: Any
) -> None:
    sink = make_sink()
    assert TOKEN not in repr(sink) and TOKEN not in repr(sink.config) and TOKEN not in str(sink.__dict__)
    monkeypatch.delenv("PERMWATCH_TEST_SLACK_TOKEN")
    with pytest.raises(ValidationError) as missing:
        make_sink()
    assert "environment variable PERMWATCH_TEST_SLACK_TOKEN is not set" in str(missing.value)
    token_file = tmp_path / "slack.token"
    token_file.write_text(TOKEN + "\n")
    from_file = SlackSink(SlackConfig(channel="C0SOC", token_file=token_file))
    assert TOKEN not in repr(from_file)
    monkeypatch.setenv("PERMWATCH_TEST_OTHER_TOKEN", "xoxb-other")
    with pytest.raises(ValidationError, match="exactly one of token_env and token_file"):
        SlackConfig(channel="C0SOC", token_file=token_file, token_env="PERMWATCH_TEST_OTHER_TOKEN")
    with pytest.raises(ValidationError, match="exactly one of token_env and token_file"):
        SlackConfig(channel="C0SOC")
