"""Alert delivery end to end: the embedded bus, the fake Slack Web API, the REAL Alertmanager, a signed webhook.

- 5,000 separately labelled case folders opened by one burst are ONE Slack
  message and ONE Alertmanager group (routed with ``group_by: [burst]``);
  their closes turn the Slack message "Resolved after …" and resolve every
  alert in Alertmanager.
- Slack answering 429, 429, 500 delivers the alert once, after the retries,
  honouring ``Retry-After``.
- ``permwatch run --role alerts`` SIGKILLed while Slack answers 500s, and
  again while Slack holds the answer to a post it already made, delivers
  exactly once after a restart.
- No log line, request, payload or JSONL line holds the bot token or a file's contents.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import os
import signal
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from alerts.base import Sink, SinkContext
from alerts.dispatch import DeliveryLog, Dispatcher
from alerts.grouping import GroupingPolicy, group_id_for
from alerts.registry import build_sink
from permwatch.events import ExposureEvent, Label, Severity, encode
from permwatch.transport.embedded import EmbeddedBus
from tests.integration.pipeline import permwatch_exe
from tests.integration.servers.alertmanager import AlertmanagerServer
from tests.integration.servers.fake_slack import FakeSlack
from tests.unit.alert_samples import changed, closed, opened

pytestmark = pytest.mark.integration

TOKEN = "xoxb-42-integration-token-must-not-leak"
WEBHOOK_SECRET = "webhook-secret-must-not-leak"
TOKEN_ENV = "PERMWATCH_IT_SLACK_TOKEN"
SECRET_ENV = "PERMWATCH_IT_WEBHOOK_SECRET"
CONTENT_MARKER = "CONFIDENTIAL-CASE-NOTES-7f3a"  # written into every case file; must never leave the disk
CHANNEL = "C0SOC"
TIMEOUT = 120.0


def wait_until(condition: Callable[[], Any], what: str, timeout: float = TIMEOUT) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        result = condition()
        if result:
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(0.05)


@pytest.fixture(scope="module")
def alertmanager(tmp_path_factory: pytest.TempPathFactory) -> Iterator[AlertmanagerServer]:
    with AlertmanagerServer(tmp_path_factory.mktemp("alertmanager")) as server:
        yield server


@pytest.fixture
def fake_slack(monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeSlack]:
    monkeypatch.setenv(TOKEN_ENV, TOKEN)
    monkeypatch.setenv(SECRET_ENV, WEBHOOK_SECRET)
    with FakeSlack(TOKEN, channels=(CHANNEL,)) as server:
        yield server


class RunningDispatcher:
    """A Dispatcher on its own thread, stopped and joined however the test ends."""

    def __init__(self, dispatcher: Dispatcher) -> None:
        self.dispatcher = dispatcher
        self.stop = threading.Event()
        self.thread = threading.Thread(target=dispatcher.run, args=(self.stop,), name="alerts-under-test")

    def __enter__(self) -> Dispatcher:
        self.thread.start()
        return self.dispatcher

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        self.thread.join(30)
        assert not self.thread.is_alive()


def case_folders(share: Path, count: int) -> list[Path]:
    """Real case folders, each with a file named after a client and holding confidential notes."""
    folders = []
    for i in range(count):
        folder = share / "hr" / "cases" / f"c-{i:05d}"
        folder.mkdir(parents=True)
        (folder / f"Klient Karlsson {i:05d}.docx").write_text(f"{CONTENT_MARKER} case {i}\n", encoding="utf-8")
        folders.append(folder)
    return folders


def burst_events(folders: list[Path], *, at: datetime) -> list[ExposureEvent]:
    return [
        opened(
            f"exp-it-{i:05d}",
            folder=str(folder),
            label=Label(name=f"case-{i:05d}", severity=Severity.HIGH, allowed_groups=(f"case-{i:05d}-team",)),
            at=at,
            actor="it-update",
            causes=("fs-bulk-setfacl",),
            people=312,
            sample_paths=(str(folder), str(next(folder.iterdir()))),
        )
        for i, folder in enumerate(folders)
    ]


def publish(bus: EmbeddedBus, events: list[ExposureEvent]) -> None:
    for event in events:
        bus.publish("exposures", event.key, encode(event))
    bus.flush()


def deliver_an_opening_with_its_later_change(
    tmp_path: Path, settings: dict[str, Any], received: Callable[[int], object]
) -> Sink:
    """Deliver to the sink ``settings`` builds a burst's first opening, then, in one batch as a restart's backlog
    brings them, a second folder's opening of the same burst and a later change of it; ``received(n)`` waits for
    the receiver's n-th message. Returns the sink once all three events are delivered."""
    now = datetime.now(UTC).replace(microsecond=0)
    first = opened("exp-first", at=now)
    joining = opened("exp-joining", folder="/srv/share/styrelse", at=now)  # the same cause: the same burst
    bus = EmbeddedBus(tmp_path / "events.db")
    delivery_log = DeliveryLog(tmp_path / "alerts.db")
    try:
        sink = build_sink(settings, SinkContext(database=delivery_log.database))
        dispatcher = Dispatcher(bus, [sink], delivery_log, group=f"{settings['kind']}-backlog", backoff_initial=0.1)
        with RunningDispatcher(dispatcher):
            publish(bus, [first])
            received(1)
            publish(bus, [joining, changed(joining, groups=("alla", "it"), people=7, after=1.0)])  # one batch
            received(2)
            wait_until(lambda: dispatcher.delivered == 3, "every event delivered")
    finally:
        bus.close()
    return sink


def assert_no_secrets(*texts: str) -> None:
    for text in texts:
        assert TOKEN not in text
        assert WEBHOOK_SECRET not in text
        assert CONTENT_MARKER not in text


def test_a_5000_folder_burst_is_one_slack_message_and_one_alertmanager_group(
    tmp_path: Path, fake_slack: FakeSlack, alertmanager: AlertmanagerServer, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    folders = case_folders(tmp_path / "share", 5000)
    bus = EmbeddedBus(tmp_path / "events.db")
    delivery_log = DeliveryLog(tmp_path / "state" / "alerts.db")
    context = SinkContext(database=delivery_log.database)
    jsonl_path = tmp_path / "alerts.jsonl"
    settings: list[dict[str, Any]] = [
        {
            "kind": "slack",
            "channel": CHANNEL,
            "token_env": TOKEN_ENV,
            "api_url": fake_slack.base_url,
            "hide_below_label": True,
        },
        {"kind": "alertmanager", "url": alertmanager.url, "resend_seconds": 5},
        {"kind": "jsonl", "path": str(jsonl_path), "hide_below_label": True},
        {"kind": "webhook", "url": f"http://127.0.0.1:{fake_slack.port}/hooks/soar", "secret_env": SECRET_ENV},
    ]
    sinks: list[Sink] = [build_sink(s, context) for s in settings]
    dispatcher = Dispatcher(
        bus, sinks, delivery_log, group="alerts-burst", grouping=GroupingPolicy(), backoff_initial=0.1
    )
    burst = burst_events(folders, at=datetime.now(UTC))
    group_id = group_id_for(burst[0].exposure_id)
    timings: dict[str, float] = {}
    try:
        with RunningDispatcher(dispatcher):
            started = time.monotonic()
            publish(bus, burst)
            wait_until(lambda: dispatcher.delivered >= 4 * 5000, "5,000 exposures delivered to all four sinks")
            timings["open_5000_all_sinks_seconds"] = time.monotonic() - started
            am_groups = wait_until(
                lambda: [g for g in alertmanager.groups(f'burst="{group_id}"') if len(g["alerts"]) == 5000],
                "Alertmanager grouping 5,000 alerts",
            )
            roots = fake_slack.root_messages(CHANNEL)
            assert len(roots) == 1
            assert (
                roots[0]["blocks"][0]["text"]["text"]
                == ":rotating_light: High exposure: 5,000 folders readable by alla"
            )
            # exactly one group in Alertmanager holds the burst, with one alert per exposure
            assert len(am_groups) == 1 and am_groups[0]["labels"] == {"burst": group_id}
            every_group = [
                g for g in alertmanager.groups() if any(a["labels"].get("burst") == group_id for a in g["alerts"])
            ]
            assert len(every_group) == 1
            assert {a["labels"]["exposure_id"] for a in am_groups[0]["alerts"]} == {e.exposure_id for e in burst}

            started = time.monotonic()
            publish(bus, [closed(e, after=(datetime.now(UTC) - e.opened_at).total_seconds()) for e in burst])
            wait_until(lambda: dispatcher.delivered >= 8 * 5000, "5,000 closes delivered to all four sinks")
            timings["close_5000_all_sinks_seconds"] = time.monotonic() - started
            wait_until(lambda: not alertmanager.alerts(f'burst="{group_id}"'), "Alertmanager resolving the burst")
            assert alertmanager.groups(f'burst="{group_id}"') == []
    finally:
        bus.close()

    [root] = fake_slack.root_messages(CHANNEL)
    assert root["updates"] >= 1 and root["text"].startswith("Resolved after ")
    assert root["blocks"][1]["fields"][0]["text"].startswith("*Status*\nResolved after ")
    replies = fake_slack.replies(CHANNEL, root["ts"])
    assert replies[-1]["text"].startswith("Resolved: all 5,000 folders closed; the exposure lasted ")
    posts = fake_slack.calls("chat.postMessage")
    assert len([p for p in posts if "thread_ts" not in p.body]) == 1  # ONE root post; the rest are thread replies
    assert all(p.status == 200 and p.authorized for p in posts)

    lines = [json.loads(line) for line in jsonl_path.read_text(encoding="utf-8").splitlines()]
    assert len(lines) == 10_000 and {line["group_id"] for line in lines} == {group_id}
    assert lines[0]["sample_paths"] == [burst[0].folder, burst[0].folder + "/…"]

    hooks = fake_slack.calls("/hooks/soar")
    assert sum(len(json.loads(h.raw)["events"]) for h in hooks) == 10_000
    for hook in hooks:
        expected = hmac.new(WEBHOOK_SECRET.encode(), hook.raw, hashlib.sha256).hexdigest()
        assert hook.headers["X-Permwatch-Signature"] == f"sha256={expected}"

    slack_requests = "\n".join(r.raw.decode() for r in fake_slack.requests if r.path.startswith("/api/"))
    assert "Klient Karlsson" not in slack_requests  # Slack hides names below the labelled folder
    assert_no_secrets(caplog.text, *fake_slack.all_recorded_text(), jsonl_path.read_text(encoding="utf-8"))
    print(json.dumps({"alerts_delivery": timings, "slack_calls": len(fake_slack.requests)}))


def test_429_twice_then_500_delivers_once_after_the_retries(
    tmp_path: Path, fake_slack: FakeSlack, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    fake_slack.fail("chat.postMessage", 429, times=2, retry_after=1)
    fake_slack.fail("chat.postMessage", 500, times=1)
    bus = EmbeddedBus(tmp_path / "events.db")
    delivery_log = DeliveryLog(tmp_path / "alerts.db")
    slack = build_sink(
        {"kind": "slack", "channel": CHANNEL, "token_env": TOKEN_ENV, "api_url": fake_slack.base_url},
        SinkContext(database=delivery_log.database),
    )
    dispatcher = Dispatcher(bus, [slack], delivery_log, group="alerts-429", backoff_initial=0.2)
    try:
        with RunningDispatcher(dispatcher):
            publish(bus, [opened("exp-retry", at=datetime.now(UTC))])
            wait_until(lambda: fake_slack.root_messages(CHANNEL), "the Slack post")
            wait_until(lambda: dispatcher.delivered == 1, "the delivery to be recorded")
            time.sleep(0.5)  # nothing more may come
    finally:
        bus.close()
    posts = fake_slack.calls("chat.postMessage")
    assert [p.status for p in posts] == [429, 429, 500, 200]
    assert posts[1].at - posts[0].at >= 0.95 and posts[2].at - posts[1].at >= 0.95  # Retry-After: 1 honoured
    assert len(fake_slack.root_messages(CHANNEL)) == 1 and dispatcher.retries == 3
    # after the ambiguous 500 the sink looked for the post before posting again
    assert len(fake_slack.calls("conversations.history")) == 1
    assert_no_secrets(caplog.text, *fake_slack.all_recorded_text())


class AlertsProcess:
    """``permwatch run --role alerts`` on an embedded-log config; killable, restartable, its output kept."""

    def __init__(self, workdir: Path, fake_slack: FakeSlack) -> None:
        self.workdir = workdir
        self.config = workdir / "permwatch.toml"
        self.log = workdir / "alerts.log"
        self.jsonl = workdir / "alerts.jsonl"
        self.events = workdir / "events.db"
        self.config.write_text(
            f"""
log_level = "debug"
state_dir = "{workdir / "state"}"
[transport]
kind = "embedded"
[transport.embedded]
path = "{self.events}"
[alerts]
group = "alerts-kill"
hide_below_label = true
[[alerts.sinks]]
kind = "slack"
channel = "{CHANNEL}"
token_env = "{TOKEN_ENV}"
api_url = "{fake_slack.base_url}"
timeout_seconds = 5
[[alerts.sinks]]
kind = "jsonl"
path = "{self.jsonl}"
""",
            encoding="utf-8",
        )
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        exe = permwatch_exe()
        with self.log.open("ab") as log:
            self.proc = subprocess.Popen(
                [exe, "run", "--config", str(self.config), "--role", "alerts"],
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                env={**os.environ, TOKEN_ENV: TOKEN},
            )

    def signal(self, sig: signal.Signals) -> int:
        proc, self.proc = self.proc, None
        assert proc is not None
        if proc.poll() is None:
            os.killpg(proc.pid, sig)
        return proc.wait(30)

    def jsonl_ids(self) -> list[str]:
        if not self.jsonl.exists():
            return []
        return [json.loads(line)["event_id"] for line in self.jsonl.read_text(encoding="utf-8").splitlines()]


def test_alerts_process_killed_mid_delivery_delivers_exactly_once_after_restart(
    tmp_path: Path, fake_slack: FakeSlack
) -> None:
    process = AlertsProcess(tmp_path, fake_slack)
    bus = EmbeddedBus(process.events)
    try:
        # 1. killed while Slack answers 500s: nothing was posted; after the restart, posted once
        fake_slack.fail("chat.postMessage", 500, times=1000)
        process.start()
        first = opened("exp-kill-1", at=datetime.now(UTC), sample_paths=("/srv/share/ledning/Klient Karlsson.docx",))
        publish(bus, [first])
        fake_slack.wait_for("chat.postMessage", 2)
        assert process.signal(signal.SIGKILL) == -signal.SIGKILL
        fake_slack.clear_failures()
        process.start()
        wait_until(lambda: process.jsonl_ids() == ["exp-kill-1.0"], "the first exposure delivered after the restart")
        roots = fake_slack.root_messages(CHANNEL)
        assert len(roots) == 1 and "Klient" not in json.dumps(roots)

        # 2. killed while Slack holds the answer to a post it made: found in the history, not posted again
        fake_slack.hold("chat.postMessage")
        posts_before = len(fake_slack.calls("chat.postMessage"))
        second = opened("exp-kill-2", folder="/srv/share/hr/lön", at=datetime.now(UTC), actor="bo", causes=("fs-9",))
        publish(bus, [second])
        fake_slack.wait_for("chat.postMessage", posts_before + 1)
        assert process.signal(signal.SIGKILL) == -signal.SIGKILL
        fake_slack.release()
        process.start()
        wait_until(lambda: process.jsonl_ids() == ["exp-kill-1.0", "exp-kill-2.0"], "the second exposure delivered")
        assert len(fake_slack.root_messages(CHANNEL)) == 2
        assert len(fake_slack.calls("conversations.history")) >= 1

        # 3. the restarted process still knows both threads: closes update them, not new messages
        publish(bus, [closed(first, after=30.0), closed(second, after=30.0)])
        wait_until(lambda: len(process.jsonl_ids()) == 4, "the closes delivered")
        roots = fake_slack.root_messages(CHANNEL)
        assert len(roots) == 2 and all(r["text"].startswith("Resolved after 30 s") for r in roots)
        assert all(len(fake_slack.replies(CHANNEL, r["ts"])) == 1 for r in roots)
        assert process.signal(signal.SIGTERM) == 0
    finally:
        if process.proc is not None:
            process.signal(signal.SIGKILL)
        bus.close()
    assert_no_secrets(process.log.read_text(errors="replace"), *fake_slack.all_recorded_text())
    assert "Klient Karlsson" not in "".join(fake_slack.all_recorded_text())
