"""Dispatch with bursts: filters per sink, one render per burst and batch, re-sends on an injected clock."""

from __future__ import annotations

import json
import threading
from datetime import timedelta
from pathlib import Path
from typing import Any

from alerts.base import RetryableSinkError, SinkContext, SinkSettings
from alerts.dispatch import DeliveryLog, Dispatcher
from alerts.grouping import GroupUpdate
from alerts.jsonl import JsonlConfig, JsonlSink
from permwatch.events import Label, Severity, encode
from permwatch.transport.embedded import EmbeddedBus
from tests.unit.alert_samples import T0, Clock, case_burst, closed, opened


class RecordingSink:
    def __init__(self, name: str, resend_seconds: float | None = None, **settings: Any) -> None:
        self.name = name
        self.settings = SinkSettings(kind="recording", **settings)
        self.resend_seconds = resend_seconds
        self.updates: list[GroupUpdate] = []
        self.failures: list[Exception] = []

    def render(self, update: GroupUpdate) -> GroupUpdate:
        return update

    def send(self, payload: GroupUpdate) -> None:
        if self.failures:
            raise self.failures.pop(0)
        self.updates.append(payload)

    def event_ids(self) -> list[str]:
        return [e.event_id for u in self.updates for e in u.events]


def no_sleep(seconds: float, stop: threading.Event) -> bool:
    return stop.is_set()


def publish(bus: EmbeddedBus, events: list[Any]) -> None:
    for event in events:
        bus.publish("exposures", event.key, encode(event))
    bus.flush()


def drain(dispatcher: Dispatcher, bus: EmbeddedBus) -> None:
    consumer = bus.consumer(["exposures"], dispatcher.group)
    records = consumer.poll(1.0, max_records=10_000)
    assert dispatcher.handle(records, consumer, threading.Event())
    consumer.close()


def test_a_burst_in_one_batch_is_one_update_per_sink(tmp_path: Path) -> None:
    bus = EmbeddedBus(tmp_path / "log.db")
    publish(bus, case_burst(2000))
    sink = RecordingSink("all")
    dispatcher = Dispatcher(bus, [sink], DeliveryLog(tmp_path / "d.db"), sleep=no_sleep)
    drain(dispatcher, bus)
    assert len(sink.updates) == 1
    assert len(sink.updates[0].events) == 2000 and len(sink.updates[0].group.members) == 2000
    assert dispatcher.delivered == 2000


def test_each_sink_gets_what_its_filter_accepts(tmp_path: Path) -> None:
    bus = EmbeddedBus(tmp_path / "log.db")
    low = Label(name="intern", severity=Severity.LOW)
    publish(bus, [opened("mgmt"), opened("misc", folder="/srv/share/misc", label=low), *case_burst(3)])
    everything = RecordingSink("everything")
    critical = RecordingSink("critical", min_severity="critical")
    cases = RecordingSink("cases", labels=["case-*"])
    dispatcher = Dispatcher(bus, [everything, critical, cases], DeliveryLog(tmp_path / "d.db"), sleep=no_sleep)
    drain(dispatcher, bus)
    assert sorted(everything.event_ids()) == sorted(
        ["mgmt.0", "misc.0", "exp-case-00000.0", "exp-case-00001.0", "exp-case-00002.0"]
    )
    assert critical.event_ids() == ["mgmt.0"]
    assert cases.event_ids() == ["exp-case-00000.0", "exp-case-00001.0", "exp-case-00002.0"]
    # the filtered view holds only the burst members the sink accepts
    assert [len(u.group.members) for u in critical.updates] == [1]


def test_a_sink_that_failed_gets_it_after_a_restart_and_the_other_does_not_get_it_twice(tmp_path: Path) -> None:
    bus = EmbeddedBus(tmp_path / "log.db")
    publish(bus, case_burst(5))
    good, down = RecordingSink("good"), RecordingSink("down")
    down.failures = [RetryableSinkError("503")]
    stop = threading.Event()
    stop.set()  # the stage is stopping while "down" is retried
    dispatcher = Dispatcher(bus, [good, down], DeliveryLog(tmp_path / "d.db"), sleep=no_sleep)
    consumer = bus.consumer(["exposures"], dispatcher.group)
    assert not dispatcher.handle(consumer.poll(1.0), consumer, stop)
    consumer.close()

    restarted = Dispatcher(bus, [good, down], DeliveryLog(tmp_path / "d.db"), sleep=no_sleep)
    drain(restarted, bus)
    assert len(good.event_ids()) == 5 and len(down.event_ids()) == 5
    # the burst continued across the restart: the same group id, from the saved state
    assert {u.group.group_id for u in good.updates + down.updates} == {good.updates[0].group.group_id}


def test_open_bursts_are_resent_on_the_injected_clock_until_closed(tmp_path: Path) -> None:
    clock = Clock()
    bus = EmbeddedBus(tmp_path / "log.db")
    burst = case_burst(3)
    publish(bus, burst)
    am = RecordingSink("am", resend_seconds=60.0)
    dispatcher = Dispatcher(bus, [am], DeliveryLog(tmp_path / "d.db"), sleep=no_sleep, clock=clock)
    drain(dispatcher, bus)
    dispatcher.maintain()
    clock.advance(59)
    dispatcher.maintain()
    assert [u.refresh for u in am.updates] == [False]
    clock.advance(2)
    dispatcher.maintain()
    assert [u.refresh for u in am.updates] == [False, True]
    assert len(am.updates[1].group.members) == 3 and am.updates[1].events == ()

    publish(bus, [closed(e) for e in burst])
    drain(dispatcher, bus)
    clock.advance(61)
    dispatcher.maintain()
    assert [u.refresh for u in am.updates] == [False, True, False]  # nothing open: no refresh


def test_resends_go_on_while_another_sink_is_retried(tmp_path: Path) -> None:
    clock = Clock()
    bus = EmbeddedBus(tmp_path / "log.db")
    am = RecordingSink("am", resend_seconds=60.0)
    slack = RecordingSink("slack")
    dispatcher = Dispatcher(bus, [am, slack], DeliveryLog(tmp_path / "d.db"), clock=clock)
    publish(bus, [opened("first")])
    drain(dispatcher, bus)
    dispatcher.maintain()  # schedules the first re-send

    slack.failures = [RetryableSinkError("500")] * 3
    publish(bus, [opened("second", at=clock.advance(600))])

    def sleep(seconds: float, stop: threading.Event) -> bool:
        clock.advance(seconds)
        return False

    dispatcher._sleep = sleep
    drain(dispatcher, bus)
    assert dispatcher.retries == 3 and slack.event_ids() == ["first.0", "second.0"]
    assert any(u.refresh for u in am.updates)


def test_a_folder_s_events_reach_a_sink_in_the_order_they_were_published_across_bursts(tmp_path: Path) -> None:
    """One batch holds a folder's close and its next opening, and the opening joins a burst another folder's event
    started earlier in the batch (within its window, no actor): the close of the old burst must still come first.
    The embedded kill test's "two open exposures" under load: a slow alerts stage, or a restart's backlog, reads
    both in one batch, and the JSONL file said the folder opened again before it said it closed."""
    clock = Clock()
    bus = EmbeddedBus(tmp_path / "log.db")
    jsonl = tmp_path / "alerts.jsonl"
    log = DeliveryLog(tmp_path / "d.db")
    sinks = [RecordingSink("recording"), JsonlSink(JsonlConfig(path=jsonl), SinkContext(database=log.database))]
    dispatcher = Dispatcher(bus, sinks, log, sleep=no_sleep, clock=clock)
    q, p = "/srv/share/ledning", "/srv/share/personal"
    first = opened("q-first", folder=q, at=T0, actor=None, causes=("fs-1",))
    publish(bus, [first])
    drain(dispatcher, bus)  # its own burst
    later = T0 + timedelta(seconds=100)
    other = opened("p", folder=p, at=later, actor=None, causes=("fs-2",))  # starts a new burst
    again = opened("q-again", folder=q, at=later + timedelta(seconds=1), actor=None, causes=("fs-4",))
    publish(bus, [other, closed(first, after=100.5), again])  # (one flush each, read as one batch)
    drain(dispatcher, bus)
    told = [json.loads(line)["event_id"] for line in jsonl.read_text().splitlines()]
    assert told == ["q-first.0", "p.0", "q-first.1", "q-again.0"]
    assert sinks[0].event_ids() == told
