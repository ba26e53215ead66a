"""The readers of ``exposure.opened_by`` (issue 18): the alerts stage says it once and dead-letters nothing; the
timeline shows it as an ``opened`` entry among the folder's changes."""

from __future__ import annotations

import logging
import threading
from datetime import timedelta
from pathlib import Path

import pytest

from alerts.dispatch import DeliveryLog, Dispatcher
from permwatch.events import Actor, ExposureOpenedBy, encode
from permwatch.transport.embedded import EmbeddedBus
from processor.timeline import Timeline, TimelineEntry, with_opens_marked
from tests.unit.test_dispatch import T0, FlakySink, exposure, no_sleep

FOLDER = "/srv/share/ledning"


def mark(minutes: int = 5, *, outsider: bool | None = True) -> ExposureOpenedBy:
    return ExposureOpenedBy(
        event_id=f"exp-1.open.{minutes}",
        observed_at=T0 + timedelta(minutes=minutes),
        exposure_id="exp-1",
        folder=FOLDER,
        path=f"{FOLDER}/protokoll.txt",
        who="cecilia",
        outsider=outsider,
        actor=Actor(name="cecilia", uid=33272, process="cat", pid=4711, confidence="pidfd"),
        access_event_id=f"access-{minutes}",
    )


def test_the_alerts_stage_logs_an_outsiders_open_and_delivers_the_exposure_beside_it(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="permwatch.alerts")
    bus = EmbeddedBus(tmp_path / "log.db")
    try:
        for event in (exposure(), mark()):
            bus.publish("exposures", FOLDER, encode(event))
        bus.flush()
        sink = FlakySink([])
        dispatcher = Dispatcher(bus, [sink], DeliveryLog(tmp_path / "d.db"), sleep=no_sleep)
        consumer = bus.consumer(["exposures"], "alerts")
        assert dispatcher.handle(consumer.poll(1.0), consumer, threading.Event())
        assert sink.sent == ["exp-1.0"]
        assert bus.consumer(["deadletter"], "t").poll(0.2) == []
    finally:
        bus.close()
    said = [r.getMessage() for r in caplog.records if "while exposed" in r.getMessage()]
    assert said == ["exposure exp-1: read by cecilia, outside the label, while exposed (local, pidfd)"]


def test_the_timeline_shows_each_marked_open_in_time_order() -> None:
    change = TimelineEntry(T0 + timedelta(minutes=1), "change", FOLDER, "changed", "e1")
    later = TimelineEntry(T0 + timedelta(minutes=9), "change", FOLDER, "changed back", "e2")
    other = mark(6).model_copy(update={"folder": "/srv/share/ekonomi"})
    shown = with_opens_marked(Timeline(FOLDER, [change, later], []), [mark(5, outsider=None), other])
    assert [e.kind for e in shown.entries] == ["change", "opened", "change"]
    assert shown.entries[1].summary == (
        f"opened {FOLDER}/protokoll.txt by cecilia, outside the label (maybe), while exposure exp-1 was open "
        "(local, pidfd)"
    )
