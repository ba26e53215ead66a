"""Dispatch: retry transient failures, dead-letter permanent ones, never deliver twice, commit after delivery."""

from __future__ import annotations

import json
import threading
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from alerts.base import PermanentSinkError, RetryableSinkError, SinkSettings
from alerts.console import ConsoleConfig, ConsoleSink
from alerts.dispatch import DeliveryLog, Dispatcher
from alerts.grouping import GroupUpdate
from permwatch.events import ExposureEvent, ExposureStatus, Grant, Label, encode
from permwatch.transport.embedded import EmbeddedBus

T0 = datetime(2026, 11, 23, 8, 0, tzinfo=UTC)


def exposure(sequence: int = 0, status: ExposureStatus = ExposureStatus.OPENED) -> ExposureEvent:
    return ExposureEvent(
        event_id=f"exp-1.{sequence}",
        exposure_id="exp-1",
        sequence=sequence,
        status=status,
        folder="/srv/share/ledning",
        label=Label(name="ledning", allowed_groups=("ledningsgrupp",)),
        people=5,
        groups=("alla",),
        grants=(Grant(entry="group:alla:r-x", group="alla", chain=("alla",), people=5),),
        paths_affected=2,
        sample_paths=("/srv/share/ledning", "/srv/share/ledning/protokoll.txt"),
        opened_at=T0,
        detected_at=T0,
        observed_at=T0,
    )


class FlakySink:
    def __init__(self, failures: list[Exception]) -> None:
        self.name = "flaky"
        self.settings = SinkSettings(kind="flaky")
        self.resend_seconds = None
        self.failures = failures
        self.sent: list[str] = []

    def render(self, update: GroupUpdate) -> str:
        return ",".join(e.event_id for e in update.events)

    def send(self, payload: Any) -> None:
        if self.failures:
            raise self.failures.pop(0)
        self.sent.append(payload)


def no_sleep(seconds: float, stop: threading.Event) -> bool:
    return stop.is_set()


def test_retries_then_delivers_once_and_survives_restart(tmp_path: Path) -> None:
    bus = EmbeddedBus(tmp_path / "log.db")
    bus.publish("exposures", "/srv/share/ledning", encode(exposure()))
    bus.flush()
    sink = FlakySink([RetryableSinkError("429", retry_after=1.0), RetryableSinkError("500")])
    log = DeliveryLog(tmp_path / "delivered.db")
    dispatcher = Dispatcher(bus, [sink], log, sleep=no_sleep)
    consumer = bus.consumer(["exposures"], "alerts")
    assert dispatcher.handle(consumer.poll(1.0), consumer, threading.Event())
    assert sink.sent == ["exp-1.0"] and dispatcher.retries == 2
    # the same event again (a processor re-published it after a crash): not delivered twice
    bus.publish("exposures", "/srv/share/ledning", encode(exposure()))
    bus.flush()
    again = Dispatcher(bus, [sink], DeliveryLog(tmp_path / "delivered.db"), sleep=no_sleep)
    assert again.handle(consumer.poll(1.0), consumer, threading.Event())
    assert sink.sent == ["exp-1.0"]


def test_stop_during_retry_leaves_batch_uncommitted(tmp_path: Path) -> None:
    bus = EmbeddedBus(tmp_path / "log.db")
    bus.publish("exposures", "/a", encode(exposure()))
    bus.flush()
    sink = FlakySink([RetryableSinkError("down")])
    stop = threading.Event()
    stop.set()
    dispatcher = Dispatcher(bus, [sink], DeliveryLog(tmp_path / "d.db"), sleep=no_sleep)
    consumer = bus.consumer(["exposures"], "alerts")
    assert not dispatcher.handle(consumer.poll(1.0), consumer, stop)
    fresh = bus.consumer(["exposures"], "alerts")
    assert len(fresh.poll(1.0)) == 1  # comes again after a restart


def test_permanent_error_and_garbage_go_to_dead_letters(tmp_path: Path) -> None:
    bus = EmbeddedBus(tmp_path / "log.db")
    bus.publish("exposures", "/a", b"garbage")
    bus.publish("exposures", "/a", encode(exposure()))
    bus.flush()
    sink = FlakySink([PermanentSinkError("invalid_blocks")])
    dispatcher = Dispatcher(bus, [sink], DeliveryLog(tmp_path / "d.db"), sleep=no_sleep)
    consumer = bus.consumer(["exposures"], "alerts")
    assert dispatcher.handle(consumer.poll(1.0), consumer, threading.Event())
    letters = [json.loads(r.value or b"") for r in bus.consumer(["deadletter"], "t").poll(1.0)]
    assert [letter["stage"] for letter in letters] == ["alerts", "alerts"]
    assert "Invalid JSON" in letters[0]["reason"]
    assert letters[1]["reason"] == "sink flaky: invalid_blocks"


def test_console_render_names_who_what_and_never_contents() -> None:
    text = ConsoleSink(ConsoleConfig()).render(GroupUpdate.single(exposure()))
    assert text.splitlines()[0] == "[HIGH] EXPOSURE OPENED: /srv/share/ledning (label ledning)"
    assert "5 via group:alla:r-x (alla)" in text
    closed = exposure(1, ExposureStatus.CLOSED).model_copy(update={"closed_at": T0, "duration_seconds": 3725.0})
    assert "after 1 h 2 min" in ConsoleSink(ConsoleConfig()).render(GroupUpdate.single(closed))


class HoldingSink(FlakySink):
    """A sink that holds alerts back (like the e-mail digest): maintenance asks it to send what is due."""

    def __init__(self, flush_failures: list[Exception]) -> None:
        super().__init__([])
        self.flush_failures = flush_failures
        self.flushes = 0

    def flush_due(self) -> None:
        self.flushes += 1
        if self.flush_failures:
            raise self.flush_failures.pop(0)


def test_maintenance_asks_holding_sinks_to_flush_and_a_failure_does_not_stop_it(tmp_path: Path, caplog: Any) -> None:
    bus = EmbeddedBus(tmp_path / "log.db")
    holding = HoldingSink([RetryableSinkError("smtp 127.0.0.1:587: 421 try later")])
    plain = FlakySink([])
    dispatcher = Dispatcher(bus, [holding, plain], DeliveryLog(tmp_path / "delivered.db"), sleep=no_sleep)
    dispatcher.maintain()
    dispatcher.maintain()
    assert holding.flushes == 2
    assert "sink flaky: sending what it held back failed: smtp 127.0.0.1:587: 421 try later" in caplog.text
    dispatcher.maintain(busy=holding)  # a sink being retried is left alone
    assert holding.flushes == 2
