"""Issue 4's acceptance end to end: one recursive setfacl over 5,000 labelled case folders is one alert.

A share of 5,000 case folders, each labelled by a policy glob for the management group and each holding a file of
"personal data"; a real ``setfacl -R -m g:alla:rX`` over it and the real revert; the collector, processor and
alerts roles as real ``permwatch run`` processes over the session's Kafka broker; the fake Slack Web API and the
real Alertmanager, routed ``group_by: [burst]`` to a webhook receiver in the test. The burst must be exactly one
Slack root message (everything else replies in its thread) that ``chat.update`` turns resolved with the duration on
revert, and one Alertmanager group, notified firing with every exposure and then resolved. What Slack and
Alertmanager got is compared with what the sinks' own pure ``render()`` makes of the exposures on the bus. Neither
the files' contents nor the Slack token may appear on any topic, in any role's log, in any Slack request or in
anything Alertmanager holds or sends.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from kafka import KafkaConsumer, TopicPartition

from alerts.alertmanager import ALERT_NAME
from alerts.digest import digest, format_duration
from alerts.grouping import BurstGrouper, GroupingPolicy, GroupUpdate, group_id_for
from alerts.registry import build_sink
from alerts.slack_render import SlackPost
from permwatch.config import AlertsConfig
from permwatch.events import ExposureEvent, decode
from permwatch.transport.topics import ALL_TOPICS
from tests.integration.pipeline import ROLES, Pipeline, traversable_tempdir, wait_until
from tests.integration.servers.alertmanager import AlertmanagerServer, burst_webhook_routing
from tests.integration.servers.fake_slack import FakeSlack
from tests.integration.servers.kafka import KafkaBroker
from tests.integration.servers.webhook_receiver import ReceivedPost, WebhookReceiver

pytestmark = pytest.mark.integration

CASES = 5000
MGMT, STAFF = 38501, 38502
MARKER = "PERSONNUMMER-19121212-1212 Client Name"  # every case file's content: personal data that must stay on disk
TOKEN = "xoxb-4-burst-pipeline-token-must-not-leak"
TOKEN_ENV = "PERMWATCH_IT_BURST_SLACK_TOKEN"
CHANNEL = "C0SOCBURST"
HOOK_PATH = "/alertmanager"
TIMEOUT = 300.0  # generous: CI has 2 cores, shared with other Kafka tests

DIRECTORY = f"""
users:
  - {{name: chef, uid: 39001, gid: {MGMT}}}
  - {{name: vice, uid: 39002, gid: {MGMT}}}
  - {{name: staff1, uid: 39011, gid: 38599}}
  - {{name: staff2, uid: 39012, gid: 38599}}
  - {{name: staff3, uid: 39013, gid: 38599}}
groups:
  - {{name: ledningsgrupp, gid: {MGMT}, members: [chef, vice]}}
  - {{name: alla, gid: {STAFF}, members: [staff1, staff2, staff3]}}
"""


def sh(*args: str) -> None:
    subprocess.run(args, check=True)


def build_share(share: Path) -> None:
    """5,000 case folders directly below the share, so their events spread over every partition."""
    share.mkdir()
    os.chmod(share, 0o755)
    for i in range(CASES):
        folder = share / f"case-{i:05d}"
        folder.mkdir()
        os.chown(folder, 0, MGMT)
        os.chmod(folder, 0o750)
        notes = folder / "anteckningar.txt"
        notes.write_text(f"{MARKER} {i:05d}\n", encoding="utf-8")
        os.chown(notes, 0, MGMT)
        os.chmod(notes, 0o640)


def slack_settings(fake_slack: FakeSlack) -> dict[str, Any]:
    return {"kind": "slack", "channel": CHANNEL, "token_env": TOKEN_ENV, "api_url": fake_slack.base_url}


def alertmanager_settings(alertmanager: AlertmanagerServer) -> dict[str, Any]:
    return {"kind": "alertmanager", "url": alertmanager.url}


def sink_toml(settings: dict[str, Any]) -> str:
    return "[[alerts.sinks]]\n" + "".join(f"{key} = {json.dumps(value)}\n" for key, value in settings.items())


@pytest.fixture
def share() -> Iterator[Path]:
    with traversable_tempdir("permwatch-alerts-burst-") as base:
        yield base / "share"


@pytest.fixture
def notifications() -> Iterator[WebhookReceiver]:
    with WebhookReceiver() as receiver:
        yield receiver


@pytest.fixture
def alertmanager(tmp_path: Path, notifications: WebhookReceiver) -> Iterator[AlertmanagerServer]:
    with AlertmanagerServer(
        tmp_path / "alertmanager", config=burst_webhook_routing(notifications.url(HOOK_PATH))
    ) as server:
        yield server


@pytest.fixture
def fake_slack(monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeSlack]:
    # the roles inherit the environment; the test's own render() needs the token to build a sink too
    monkeypatch.setenv(TOKEN_ENV, TOKEN)
    with FakeSlack(TOKEN, channels=(CHANNEL,)) as server:
        yield server


@pytest.fixture
def pipeline(
    kafka_broker: KafkaBroker,
    share: Path,
    fake_slack: FakeSlack,
    alertmanager: AlertmanagerServer,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Pipeline]:
    build_share(share)
    pipe = Pipeline(
        tmp_path_factory.mktemp("alerts-burst"),
        kafka_broker.bootstrap,
        f"ab{os.getpid()}.",
        share=share,
        config_extra=sink_toml(slack_settings(fake_slack)) + sink_toml(alertmanager_settings(alertmanager)),
    )
    pipe.directory_path.write_text(DIRECTORY, encoding="utf-8")
    pipe.write_config(
        '[labels.definitions.case]\nseverity = "high"\nallowed_groups = ["ledningsgrupp"]\n'
        f'[[labels.rules]]\nglob = "{share}/case-*"\nlabel = "case"\n'
    )
    try:
        pipe.start_all()
        yield pipe
    finally:
        started = list(pipe.procs.values())
        try:
            pipe.stop()
        finally:
            for proc in started:  # a role that would not stop on SIGTERM must not outlive the test
                if proc.poll() is None:
                    os.killpg(proc.pid, signal.SIGKILL)
                    proc.wait()


# ---------------------------------------------------------------- reading back


def read_topic(bootstrap: str, topic: str) -> list[bytes]:
    """Every record of ``topic``, key and value as raw bytes, from the beginning to its end as of now."""
    consumer = KafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False, group_id=None)
    try:
        numbers = wait_until(lambda: consumer.partitions_for_topic(topic), f"topic {topic}")
        partitions = [TopicPartition(topic, p) for p in sorted(numbers)]
        consumer.assign(partitions)
        consumer.seek_to_beginning()
        ends = consumer.end_offsets(partitions)
        records: list[bytes] = []

        def drained() -> bool:
            for batch in consumer.poll(timeout_ms=200, max_records=10_000).values():
                records.extend((r.key or b"") + b"\0" + r.value for r in batch)
            return all(consumer.position(tp) >= end for tp, end in ends.items())

        wait_until(drained, f"reading topic {topic} to its end")
        return records
    finally:
        consumer.close()


def exposure_events(pipe: Pipeline) -> list[ExposureEvent]:
    """The exposures topic decoded, each partition in order (so each exposure's events in order)."""
    events = []
    for record in read_topic(pipe.bootstrap, pipe.prefix + "exposures"):
        event = decode(record.split(b"\0", 1)[1])
        assert isinstance(event, ExposureEvent)
        events.append(event)
    return events


def alerts_caught_up(pipe: Pipeline) -> bool:
    """The alerts group has committed the whole exposures topic, which it does only once every sink has it."""
    consumer = KafkaConsumer(
        bootstrap_servers=pipe.bootstrap, group_id=pipe.prefix + "alerts", enable_auto_commit=False
    )
    try:
        topic = pipe.prefix + "exposures"
        partitions = [TopicPartition(topic, p) for p in consumer.partitions_for_topic(topic) or ()]
        ends = consumer.end_offsets(partitions)
        return bool(ends) and all(end == 0 or (consumer.committed(tp) or 0) >= end for tp, end in ends.items())
    finally:
        consumer.close(autocommit=False)


class StaffGrants:
    """Which paths the collector last published as granting the all-staff group, followed along the fs topic.

    Once every path of the share is published in its new state, the collector has nothing left to say about the
    change (an overflow's rescan included): waiting for it keeps a late rescan from racing the assertions.
    """

    def __init__(self, pipe: Pipeline, paths: set[str]) -> None:
        self.pipe = pipe
        self.paths = paths
        self.granted: dict[str, bool] = {}
        self._read = 0

    def all(self, granted: bool) -> bool:
        values = self.pipe.reader("fs").read()
        for value in values[self._read :]:
            for event in value["events"] if value["type"] == "fs.batch" else (value,):
                if event["type"] == "fs.permission" and event["kind"] != "deleted":
                    self.granted[event["path"]] = any(
                        e["tag"] == "group" and e.get("qualifier") == STAFF for e in event.get("acl", ())
                    )
        self._read = len(values)
        return all(self.granted.get(path) is granted for path in self.paths)


def folders_with(pipe: Pipeline, status: str) -> set[str]:
    return {e["folder"] for e in pipe.exposures() if e["status"] == status}


def regrouped(events: list[ExposureEvent], group_id: str) -> GroupUpdate:
    """The burst as the alerts stage holds it, rebuilt from the bus with the pure grouper and the role's policy.

    The alerts stage read the partitions in its own order; a render depends on the set of members and on the
    first one (the group id is derived from it), so that one goes first and the rest keep each exposure's order.
    """
    first = [e for e in events if e.sequence == 0 and group_id_for(e.exposure_id) == group_id]
    assert len(first) == 1, f"no single exposure starts {group_id}"
    ordered = first + [e for e in events if e is not first[0]]
    policy = AlertsConfig()
    grouper = BurstGrouper(
        GroupingPolicy(
            window_seconds=policy.group_window_seconds, actor_window_seconds=policy.group_actor_window_seconds
        )
    )
    assert {grouper.assign(event)[0] for event in ordered} == {group_id}, "the pure grouper splits the burst"
    return GroupUpdate(grouper.snapshot(group_id), tuple(ordered))


def rendered_root(fake_slack: FakeSlack, update: GroupUpdate) -> SlackPost:
    [item] = build_sink(slack_settings(fake_slack)).render(update)
    return item.root


def rendered_alerts(alertmanager: AlertmanagerServer, update: GroupUpdate) -> dict[str, dict[str, Any]]:
    """What the Alertmanager sink says about every exposure of the burst, by exposure id."""
    refresh = GroupUpdate(update.group, (), refresh=True)
    return {a["labels"]["exposure_id"]: a for a in build_sink(alertmanager_settings(alertmanager)).render(refresh)}


def firing_notification(receiver: WebhookReceiver) -> dict[str, Any] | None:
    """The latest Alertmanager notification, if it says every alert of the burst is firing."""
    posts = receiver.posts(HOOK_PATH)
    if not posts:
        return None
    body: dict[str, Any] = posts[-1].body
    firing = [a for a in body["alerts"] if a["status"] == "firing"]
    return body if body["status"] == "firing" and len(firing) + int(body["truncatedAlerts"]) == CASES else None


def resolved_alerts(receiver: WebhookReceiver, since: int) -> dict[str, dict[str, Any]] | None:
    """The burst's alerts as notified resolved after the first ``since`` notifications, once the latest one says
    the group is resolved and every alert was in one. Alertmanager drops a resolved alert from its group once it
    has notified it, so a burst that closes over several group intervals is resolved over several notifications,
    the last of them with status resolved."""
    posts = receiver.posts(HOOK_PATH)[since:]
    if not posts or posts[-1].body["status"] != "resolved":
        return None
    found = {a["labels"]["exposure_id"]: a for p in posts for a in p.body["alerts"] if a["status"] == "resolved"}
    return found if len(found) == CASES else None


def assert_one_notification_group(posts: list[ReceivedPost], group_id: str) -> None:
    assert posts, "Alertmanager sent nothing"
    assert {p.body["groupKey"] for p in posts} == {posts[0].body["groupKey"]}, "the burst split into groups"
    assert all(p.body["groupLabels"] == {"burst": group_id} for p in posts)
    assert all(p.body["commonLabels"]["burst"] == group_id for p in posts)


# ---------------------------------------------------------------- the test


def test_recursive_setfacl_over_5000_case_folders_is_one_alert_until_reverted(
    pipeline: Pipeline,
    share: Path,
    fake_slack: FakeSlack,
    alertmanager: AlertmanagerServer,
    notifications: WebhookReceiver,
) -> None:
    folders = {str(share / f"case-{i:05d}") for i in range(CASES)}
    published = StaffGrants(pipeline, {str(share), *folders, *(f"{f}/anteckningar.txt" for f in folders)})
    seconds: dict[str, float] = {}  # printed for the record, never asserted on
    started = time.monotonic()
    wait_until(lambda: len(pipeline.reader("labels").read()) >= CASES, "a label for every case folder", TIMEOUT)
    wait_until(lambda: any(e["type"] == "fs.scan_completed" for e in pipeline.fs_events()), "the baseline", TIMEOUT)
    pipeline.wait_quiet()
    assert {v["path"] for v in pipeline.reader("labels").values} == folders
    assert pipeline.exposures() == [], "the baseline must not be exposed"
    seconds["baseline"], started = time.monotonic() - started, time.monotonic()

    # --- the IT update: everyone may now read every case folder
    sh("setfacl", "-R", "-m", f"g:{STAFF}:rX", str(share))
    wait_until(lambda: published.all(granted=True), "the collector publishing every path's new ACL", TIMEOUT)
    wait_until(lambda: folders_with(pipeline, "opened") >= folders, "an exposure on every case folder", TIMEOUT)
    pipeline.wait_quiet()
    assert folders_with(pipeline, "opened") == folders
    wait_until(lambda: alerts_caught_up(pipeline), "the alerts stage delivering every exposure", TIMEOUT)
    seconds["burst_to_alerts_delivered"] = time.monotonic() - started
    firing = wait_until(lambda: firing_notification(notifications), "a firing notification of the burst", TIMEOUT)
    seconds["burst_to_alertmanager_notified"] = time.monotonic() - started
    opening = exposure_events(pipeline)

    # Slack: one root message for the whole burst, every other post a reply in its thread
    roots = fake_slack.root_messages(CHANNEL)
    assert len(roots) == 1, [r["blocks"][0]["text"]["text"] for r in roots]
    [root] = roots
    group_id = root["metadata"]["event_payload"]["group_id"]
    posts = fake_slack.calls("chat.postMessage")
    assert len([p for p in posts if "thread_ts" not in p.body]) == 1
    assert all(p.body.get("thread_ts") == root["ts"] for p in posts[1:])
    assert posts[0].body["metadata"]["event_payload"]["post_key"] == f"{group_id}/{CHANNEL}/root"
    assert re.fullmatch(
        r":rotating_light: High exposure: [\d,]+ folders? readable by alla", posts[0].body["blocks"][0]["text"]["text"]
    )
    burst = regrouped(opening, group_id)
    expected = rendered_root(fake_slack, burst)
    assert (root["text"], root["blocks"]) == (expected.text, expected.blocks), "Slack shows the burst as render() does"
    assert expected.blocks[0]["text"]["text"] == ":rotating_light: High exposure: 5,000 folders readable by alla"

    # Alertmanager: every exposure an alert carrying the burst label, one group holds them all
    am_alerts = alertmanager.alerts(f'alertname="{ALERT_NAME}"')
    expected_alerts = rendered_alerts(alertmanager, burst)
    assert len(expected_alerts) == CASES
    assert {a["labels"]["exposure_id"]: (a["labels"], a["annotations"]) for a in am_alerts} == {
        exposure_id: (a["labels"], a["annotations"]) for exposure_id, a in expected_alerts.items()
    }
    am_groups = alertmanager.groups()
    assert [(g["labels"], len(g["alerts"])) for g in am_groups] == [({"burst": group_id}, CASES)]
    assert_one_notification_group(notifications.posts(HOOK_PATH), group_id)
    assert int(firing["truncatedAlerts"]) == 0, "max_alerts: 0 sends them all"
    assert {a["labels"]["exposure_id"]: a["labels"] for a in firing["alerts"]} == {
        exposure_id: a["labels"] for exposure_id, a in expected_alerts.items()
    }
    firing_texts = [json.dumps(am_alerts), json.dumps(am_groups)]

    # --- the revert: the folders are restricted again
    notified_before = len(notifications.posts(HOOK_PATH))
    started = time.monotonic()
    sh("setfacl", "-R", "-x", f"g:{STAFF}", str(share))
    wait_until(lambda: published.all(granted=False), "the collector publishing every path's old ACL", TIMEOUT)
    wait_until(lambda: folders_with(pipeline, "closed") >= folders, "every exposure closed", TIMEOUT)
    pipeline.wait_quiet()
    wait_until(lambda: alerts_caught_up(pipeline), "the alerts stage delivering every close", TIMEOUT)
    seconds["revert_to_alerts_delivered"] = time.monotonic() - started
    resolved = wait_until(lambda: resolved_alerts(notifications, notified_before), "the burst resolved", TIMEOUT)
    seconds["revert_to_alertmanager_notified"] = time.monotonic() - started
    wait_until(lambda: not alertmanager.alerts(f'burst="{group_id}"'), "Alertmanager resolving the burst", TIMEOUT)
    everything = exposure_events(pipeline)

    # Slack: still one message, updated to resolved with the duration; the thread says so last
    [root] = fake_slack.root_messages(CHANNEL)
    posts = fake_slack.calls("chat.postMessage")
    assert len([p for p in posts if "thread_ts" not in p.body]) == 1
    assert all(p.body.get("thread_ts") == root["ts"] for p in posts[1:])
    updates = fake_slack.calls("chat.update")
    assert updates and all(u.body["ts"] == root["ts"] for u in updates)
    ended = regrouped(everything, group_id)
    lasted = format_duration(digest(ended.group).duration_seconds or 0.0)
    expected = rendered_root(fake_slack, ended)
    assert (updates[-1].body["text"], updates[-1].body["blocks"]) == (expected.text, expected.blocks)
    assert (root["text"], root["blocks"]) == (expected.text, expected.blocks)
    assert expected.blocks[0]["text"]["text"] == ":white_check_mark: Resolved: 5,000 folders no longer readable by alla"
    assert re.fullmatch(r"(\d+ min )?\d+ s", lasted)
    assert expected.blocks[1]["fields"][0]["text"] == f"*Status*\nResolved after {lasted}"
    replies = fake_slack.replies(CHANNEL, root["ts"])
    assert len(replies) == len(posts) - 1
    assert replies[-1]["text"].startswith(f"Resolved: all 5,000 folders closed; the exposure lasted {lasted}")
    earlier = re.compile(
        r"Widened: [\d,]+ more folders? now readable, [\d,]+ in this alert"
        r"|Changed: [\d,]+ folders?|Closed: [\d,]+ folders?, [\d,]+ still open"
    )
    assert all(earlier.fullmatch(reply["text"]) for reply in replies[:-1]), [r["text"] for r in replies]

    # Alertmanager: the same one group, notified resolved with every alert resolved
    assert_one_notification_group(notifications.posts(HOOK_PATH), group_id)
    assert all(not a["endsAt"].startswith("0001") for a in resolved.values())
    assert {exposure_id: a["labels"] for exposure_id, a in resolved.items()} == {
        exposure_id: a["labels"] for exposure_id, a in expected_alerts.items()
    }
    assert alertmanager.groups() == []

    # --- nothing of the files' contents, and not the token, went anywhere
    assert MARKER in (share / "case-00000" / "anteckningar.txt").read_text(encoding="utf-8")
    places: dict[str, str] = {}
    for topic in ALL_TOPICS:
        records = read_topic(pipeline.bootstrap, pipeline.prefix + topic)
        places[f"topic {topic}"] = b"\n".join(records).decode("utf-8", "replace")
        if topic == "deadletter":
            assert records == [], "nothing may be dead-lettered"
    for role in ROLES:
        places[f"{role} log"] = log = pipeline.log(role)
        assert "Traceback" not in log, f"{role} log:\n{log[-3000:]}"
    places["the config"] = pipeline.config_path.read_text(encoding="utf-8")
    places["the JSONL sink"] = pipeline.alerts_path.read_text(encoding="utf-8")
    places["Slack requests"] = "\n".join(fake_slack.all_recorded_text())
    places["Alertmanager's alerts"] = "\n".join(firing_texts)
    places["Alertmanager's notifications"] = "\n".join(p.raw.decode("utf-8", "replace") for p in notifications.posts())
    places["Alertmanager's log"] = alertmanager.log_path.read_text(errors="replace")
    for where, text in places.items():
        for secret in (MARKER, MARKER.split("-")[0], TOKEN):
            assert secret not in text, f"{secret!r} leaked into {where}"
    print(
        json.dumps(
            {
                "alerts_burst_pipeline_seconds": {k: round(v, 1) for k, v in seconds.items()},
                "slack_posts": len(posts),
                "slack_updates": len(updates),
                "alertmanager_notifications": len(notifications.posts(HOOK_PATH)),
            }
        )
    )
