"""Issue 4's acceptance on real Kafka: ``permwatch run --role alerts`` SIGKILLed mid-delivery delivers exactly once.

One real alerts process on the session's Kafka broker, with two sinks in
this order: JSONL, then Slack (the fake Web API). Exposure events are
published straight to the exposures topic, and the process is SIGKILLed
three times, each time at a point where a delivery is in flight and the
consumer offset is not committed:

1. between the JSONL sink's fsynced append and the delivery log's mark. A
   sink's mark follows its own send at once, so no sink order puts a pause
   there; a ``sitecustomize`` on the killed process's ``PYTHONPATH`` makes
   that one mark wait (after saying which events it was about to mark) until
   the test kills it. The restarted processes run unmodified;
2. while the fake Slack holds the answer to a burst's root post it made;
3. while it holds the answer to a thread reply it made.

Between kills the bursts grow, so what comes again is more than what was cut
off. In the end every exposure event is one JSONL line, every Slack message
(one root per burst, each thread reply) was posted once, and the alerts
group's committed offsets reach the end of every exposures partition.
"""

from __future__ import annotations

import json
import os
import signal
from collections import Counter
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from kafka import KafkaConsumer, TopicPartition

from permwatch.config import KafkaConfig
from permwatch.events import ExposureEvent, encode
from permwatch.transport.kafka import KafkaBus
from tests.integration.pipeline import Pipeline, wait_until
from tests.integration.servers.fake_slack import FakeSlack
from tests.integration.servers.kafka import KafkaBroker
from tests.unit.alert_samples import closed, opened

pytestmark = pytest.mark.integration

TOKEN = "xoxb-42-kafka-kill-token-must-not-leak"
TOKEN_ENV = "PERMWATCH_IT_SLACK_TOKEN"
CHANNEL = "C0SOC"
TIMEOUT = 180.0  # a restart waits out the killed member's session (10 s) before it gets partitions
MARKING_ENV = "PERMWATCH_IT_HOLD_JSONL_MARK"

# Loaded by the alerts process through PYTHONPATH, only for the life that is to die at the JSONL mark.
SITECUSTOMIZE = f'''
import os
import threading

from alerts.store import DeliveryLog

_mark_many = DeliveryLog.mark_many


def _mark_many_held(self, sink, event_ids):
    event_ids = list(event_ids)
    if sink == "jsonl":
        path = os.environ["{MARKING_ENV}"]
        with open(path + ".tmp", "w", encoding="utf-8") as fh:
            fh.write("\\n".join(event_ids))
        os.replace(path + ".tmp", path)
        threading.Event().wait()  # appended and fsynced, not marked: here it dies
    return _mark_many(self, sink, event_ids)


DeliveryLog.mark_many = _mark_many_held
'''


@pytest.fixture
def fake_slack(monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeSlack]:
    monkeypatch.setenv(TOKEN_ENV, TOKEN)
    with FakeSlack(TOKEN, channels=(CHANNEL,)) as server:
        yield server


class Rig:
    """The alerts role of a :class:`Pipeline` on topics of its own, and the test's view of Kafka and the sinks."""

    def __init__(self, workdir: Path, broker: KafkaBroker, prefix: str, fake_slack: FakeSlack) -> None:
        self.prefix = prefix
        self.bootstrap = broker.bootstrap
        self.pipeline = Pipeline(
            workdir,
            broker.bootstrap,
            prefix,
            share=workdir,
            config_extra=f"""
[[alerts.sinks]]
kind = "slack"
channel = "{CHANNEL}"
token_env = "{TOKEN_ENV}"
api_url = "{fake_slack.base_url}"
timeout_seconds = 5
""",
        )
        self.pipeline.write_config("")
        self.jsonl = self.pipeline.alerts_path
        self.bus = KafkaBus(KafkaConfig(bootstrap_servers=broker.bootstrap, topic_prefix=prefix, partitions=3))
        self.bus.ensure_topics()
        self.shim = workdir / "shim"
        self.shim.mkdir()
        (self.shim / "sitecustomize.py").write_text(SITECUSTOMIZE, encoding="utf-8")
        self.marking = workdir / "marking"

    def publish(self, events: list[ExposureEvent]) -> None:
        for event in events:
            self.bus.publish("exposures", event.key, encode(event))
        self.bus.flush()

    def start(self, monkeypatch: pytest.MonkeyPatch, *, hold_jsonl_mark: bool = False) -> None:
        if not hold_jsonl_mark:
            self.pipeline.start("alerts")
            return
        with monkeypatch.context() as env:
            env.setenv("PYTHONPATH", str(self.shim), prepend=os.pathsep)
            env.setenv(MARKING_ENV, str(self.marking))
            self.pipeline.start("alerts")

    def kill(self) -> None:
        proc = self.pipeline.procs["alerts"]
        self.pipeline.kill("alerts", signal.SIGKILL)
        assert proc.returncode == -signal.SIGKILL

    def jsonl_lines(self) -> list[dict[str, Any]]:
        if not self.jsonl.exists():
            return []
        return [json.loads(line) for line in self.jsonl.read_text(encoding="utf-8").splitlines()]

    def jsonl_ids(self) -> Counter[str]:
        return Counter(line["event_id"] for line in self.jsonl_lines())

    def caught_up(self) -> bool:
        """The alerts group has committed the end of every exposures partition (read without joining it)."""
        consumer = KafkaConsumer(
            bootstrap_servers=self.bootstrap, group_id=self.prefix + "alerts", enable_auto_commit=False
        )
        try:
            topic = self.prefix + "exposures"
            partitions = [TopicPartition(topic, p) for p in sorted(consumer.partitions_for_topic(topic) or ())]
            ends = consumer.end_offsets(partitions)
            return bool(ends) and all((consumer.committed(tp) or 0) >= end for tp, end in ends.items())
        finally:
            consumer.close(autocommit=False)

    def close(self) -> None:
        for role in list(self.pipeline.procs):
            self.pipeline.kill(role, signal.SIGKILL)
        self.pipeline.stop()
        self.bus.close()


def post_key(message: dict[str, Any]) -> str:
    return str(message["metadata"]["event_payload"]["post_key"])


def test_alerts_killed_mid_delivery_on_kafka_deliver_each_event_once_to_each_sink(
    tmp_path: Path,
    kafka_broker: KafkaBroker,
    kafka_topic_prefix: str,
    fake_slack: FakeSlack,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    now = datetime.now(UTC)
    burst_a = [
        opened(f"exp-kk-a{i}", folder=f"/srv/share/ekonomi/a{i}", at=now, actor="it-update", causes=("fs-bulk",))
        for i in range(3)
    ]
    burst_b = [opened("exp-kk-b0", folder="/srv/share/hr/lön", at=now, actor="bo", causes=("fs-9",))]
    closes = [closed(e, after=30.0) for e in burst_a + burst_b]
    everything = burst_a + burst_b + closes
    rig = Rig(tmp_path, kafka_broker, kafka_topic_prefix, fake_slack)
    try:
        # 1. killed between the JSONL append and its mark: the lines are in the file, the log does not know them
        rig.publish(burst_a[:2])
        rig.start(monkeypatch, hold_jsonl_mark=True)
        marking = wait_until(lambda: rig.marking.exists() and rig.marking.read_text(), "the JSONL mark", TIMEOUT)
        cut_off = marking.splitlines()
        assert rig.jsonl_ids() == Counter(cut_off) and set(cut_off) <= {e.event_id for e in burst_a[:2]}
        assert fake_slack.calls("chat.postMessage") == []  # Slack comes after JSONL
        rig.kill()

        # 2. while it was down burst A grew and burst B began; killed while Slack holds a root post it made
        rig.publish([burst_a[2], *burst_b])
        fake_slack.hold("chat.postMessage")
        rig.start(monkeypatch)
        fake_slack.wait_for("chat.postMessage", 1, timeout=TIMEOUT)
        [held_root] = fake_slack.calls("chat.postMessage")
        assert "thread_ts" not in held_root.body
        # JSONL took the whole batch before Slack began: the cut-off lines were found, not written again
        assert rig.jsonl_ids() == Counter(e.event_id for e in burst_a + burst_b)
        rig.kill()
        fake_slack.release()

        # 3. restarted: the held root is found in the channel's history, the other burst's root is posted
        rig.start(monkeypatch)
        wait_until(lambda: len(fake_slack.root_messages(CHANNEL)) == 2, "both bursts' roots", TIMEOUT)
        wait_until(rig.caught_up, "the alerts group to commit the first bursts", TIMEOUT)
        assert len(fake_slack.calls("conversations.history")) >= 1

        # 4. killed while Slack holds a thread reply it made (the first close of burst A)
        posts_before = len(fake_slack.calls("chat.postMessage"))
        fake_slack.hold("chat.postMessage")
        rig.publish(closes[:1])
        fake_slack.wait_for("chat.postMessage", posts_before + 1, timeout=TIMEOUT)
        held_reply = fake_slack.calls("chat.postMessage")[-1]
        assert "thread_ts" in held_reply.body
        wait_until(lambda: rig.jsonl_ids()[closes[0].event_id] == 1, "the first close in the JSONL file")
        rig.kill()
        fake_slack.release()

        # 5. restarted: the reply is found in the thread; then the rest closes
        rig.start(monkeypatch)
        wait_until(rig.caught_up, "the alerts group to commit the first close", TIMEOUT)
        assert len(fake_slack.calls("conversations.replies")) >= 1
        rig.publish(closes[1:])
        wait_until(lambda: set(rig.jsonl_ids()) == {e.event_id for e in everything}, "every close in JSONL", TIMEOUT)
        wait_until(
            lambda: all(r["text"].startswith("Resolved after 30 s") for r in fake_slack.root_messages(CHANNEL)),
            "both Slack messages resolved",
            TIMEOUT,
        )
        wait_until(rig.caught_up, "the alerts group to commit the end of the exposures topic", TIMEOUT)
        proc = rig.pipeline.procs["alerts"]
        rig.pipeline.kill("alerts", signal.SIGTERM)
        assert proc.returncode == 0
    finally:
        rig.close()

    # JSONL: every event once, each burst under one group id
    lines = rig.jsonl_lines()
    assert Counter(line["event_id"] for line in lines) == Counter({e.event_id: 1 for e in everything})
    group_of = {line["exposure_id"]: line["group_id"] for line in lines}
    assert len({group_of[e.exposure_id] for e in burst_a}) == 1
    assert {group_of[e.exposure_id] for e in burst_a}.isdisjoint({group_of[e.exposure_id] for e in burst_b})
    assert all(line["group_id"] == group_of[line["exposure_id"]] for line in lines)

    # Slack: every message it holds was posted once; one root per burst, their replies in their threads
    messages = fake_slack.messages
    assert Counter(post_key(m) for m in messages) == Counter({post_key(m): 1 for m in messages})
    roots = fake_slack.root_messages(CHANNEL)
    assert sorted(m["metadata"]["event_payload"]["group_id"] for m in roots) == sorted(
        {group_of[burst_a[0].exposure_id], group_of[burst_b[0].exposure_id]}
    )
    replies = [m for m in messages if m["thread_ts"] is not None]
    assert {m["thread_ts"] for m in replies} <= {r["ts"] for r in roots}
    assert post_key(held_reply.body) in {post_key(m) for m in replies}
    assert post_key(held_root.body) in {post_key(m) for m in roots}
    a_root = next(r for r in roots if r["metadata"]["event_payload"]["group_id"] == group_of[burst_a[0].exposure_id])
    assert len(fake_slack.replies(CHANNEL, a_root["ts"])) >= 2  # the held close, then the others'

    log = rig.pipeline.log("alerts")
    assert TOKEN not in log and all(TOKEN not in text for text in fake_slack.all_recorded_text())
