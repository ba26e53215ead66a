"""Dispatch: exposure events from the bus to every sink, filtered, grouped into bursts, each delivered once in effect.

The consumer drains the ``exposures`` topic until it is idle for
``idle_seconds`` (or holds ``batch_max`` records, or has lingered
``linger_seconds``), so a burst that arrives together is handled together.
For that batch: decode (a bad record is dead-lettered), assign each event to
its burst (:mod:`alerts.grouping`, state saved in the alert state file), then
for each sink and each burst the batch touched: keep what the sink's filter
accepts (``min_severity``, ``labels``) and what the delivery log says it has
not delivered, render it once and send it, retrying
:class:`RetryableSinkError` with capped exponential backoff (or the sink's
``retry_after``) until it passes or the stage is stopped. A folder's events
reach every sink in the order they were published, also when they are in
different bursts (an exposure's close, then the folder's next opening in a
newer burst): the batch is cut there into updates sent one after the other. A
:class:`PermanentSinkError` dead-letters the events with its reason. The
consumer's position is committed only after every sink is done with the
batch, so a crash loses nothing and the delivery log keeps it from repeating.

Sinks that re-send (Alertmanager forgets alerts that are not repeated) get
the open bursts again every ``resend_seconds``, also while another sink is
being retried; sinks that hold alerts back (the e-mail digest) are asked to
send what is due at the same moments.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Sequence
from datetime import datetime, timedelta

from alerts.base import FlushingSink, PermanentSinkError, RetryableSinkError, Sink, SinkError
from alerts.grouping import BurstGrouper, GroupingPolicy, GroupUpdate, Member
from alerts.metrics import AlertMetrics
from alerts.store import DeliveryLog, GroupStore
from permwatch.deadletter import dead_letter, export_dead_letters
from permwatch.events import TOPIC_EXPOSURES, DecodeError, ExposureEvent, ExposureOpenedBy, decode, utcnow
from permwatch.metrics import Metrics
from permwatch.transport.base import Bus, Consumer, Record

__all__ = ["DeliveryLog", "Dispatcher"]

log = logging.getLogger("permwatch.alerts")

_MAINTENANCE_SECONDS = 5.0  # how often a long retry wait stops to re-send for the other sinks
_PRUNE_EVERY = timedelta(hours=1)


class Dispatcher:
    def __init__(
        self,
        bus: Bus,
        sinks: Sequence[Sink],
        delivery_log: DeliveryLog,
        *,
        group: str = "permwatch-alerts",
        grouping: GroupingPolicy | None = None,
        backoff_initial: float = 0.5,
        backoff_max: float = 60.0,
        retry_after_max: float = 600.0,
        sleep: Callable[[float, threading.Event], bool] | None = None,
        clock: Callable[[], datetime] = utcnow,
        batch_max: int = 5000,
        idle_seconds: float = 0.05,
        linger_seconds: float = 2.0,
        retention: timedelta = timedelta(days=30),
        metrics: Metrics | None = None,
    ) -> None:
        self.bus = bus
        self.metrics = metrics
        if metrics is not None:
            export_dead_letters(metrics, "alerts")
        self.sinks = list(sinks)
        self.delivery_log = delivery_log
        self.group = group
        self.backoff_initial = backoff_initial
        self.backoff_max = backoff_max
        self.retry_after_max = retry_after_max
        self.batch_max = batch_max
        self.idle_seconds = idle_seconds
        self.linger_seconds = linger_seconds
        self.retention = retention
        self._sleep = sleep or (lambda seconds, stop: stop.wait(seconds))
        self._clock = clock
        self.group_store = GroupStore(delivery_log.database)
        self.grouper = BurstGrouper(
            grouping, groups=self.group_store.load_open(), lookup=self.group_store.load_group_of
        )
        self._resend_at: dict[str, datetime] = {}
        self._prune_at = clock()
        self.delivered = 0
        self.failed = 0
        self.retries = 0
        self.resent = 0

    def run(self, stop: threading.Event) -> None:
        consumer = self.bus.consumer([TOPIC_EXPOSURES], self.group)
        log.info("alerts started: sinks %s", ", ".join(s.name for s in self.sinks) or "none")
        pending: list[Record] = []
        first_at = 0.0
        try:
            while not stop.is_set():
                records = consumer.poll(self.idle_seconds if pending else 0.2, max_records=self.batch_max)
                if records and not pending:
                    first_at = time.monotonic()
                pending.extend(records)
                full = len(pending) >= self.batch_max or time.monotonic() - first_at >= self.linger_seconds
                if pending and (not records or full):
                    if not self.handle(pending, consumer, stop):
                        break
                    pending = []
                self.maintain()
        finally:
            consumer.close()

    def handle(self, records: list[Record], consumer: Consumer, stop: threading.Event) -> bool:
        """Deliver a batch; commit and return True only if every record was dealt with."""
        record_of: dict[str, Record] = {}
        events: list[ExposureEvent] = []
        for record in records:
            try:
                event = decode(record.value)
            except DecodeError as exc:
                dead_letter(self.bus, record, exc.reason, stage="alerts", metrics=self.metrics)
                continue
            if isinstance(event, ExposureOpenedBy):
                _log_opened_by(event)  # issue 18: said once here, never sent to a sink as an exposure
                continue
            if not isinstance(event, ExposureEvent):
                dead_letter(
                    self.bus,
                    record,
                    f"a {event.type} event does not belong on topic exposures",
                    stage="alerts",
                    metrics=self.metrics,
                )
                continue
            if event.event_id not in record_of:
                events.append(event)
            record_of[event.event_id] = record
        updates = self._group(events)
        for sink in self.sinks:
            for update in updates:
                if not self._deliver(sink, update, record_of, stop):
                    return False  # stopping: leave the batch uncommitted, it comes again
        self.bus.flush()
        consumer.commit()
        self.grouper.forget_closed()
        return True

    def maintain(self, busy: Sink | None = None) -> None:
        """Re-send open bursts to the sinks that want it (not ``busy``, which is being retried); prune old state."""
        now = self._clock()
        for sink in self.sinks:
            if isinstance(sink, FlushingSink) and sink is not busy:
                try:
                    sink.flush_due()
                except SinkError as exc:
                    log.warning("sink %s: sending what it held back failed: %s; trying again later", sink.name, exc)
            if sink.resend_seconds is None or sink is busy:
                continue
            due = self._resend_at.setdefault(sink.name, now + timedelta(seconds=sink.resend_seconds))
            if now >= due:
                self._resend_at[sink.name] = now + timedelta(seconds=sink.resend_seconds)
                self._resend(sink)
        if now >= self._prune_at:
            self._prune_at = now + _PRUNE_EVERY
            forgotten = self.group_store.prune(now - self.retention)
            if forgotten:
                log.info("alerts: forgot %d bursts closed before %s", forgotten, now - self.retention)

    # ------------------------------------------------------------ internals

    def _group(self, events: list[ExposureEvent]) -> list[GroupUpdate]:
        """One update per burst the batch touched, in the order first touched; but a folder's events reach a
        sink in the order they were published: when a folder has an event in another burst earlier in the
        batch (its old exposure's close, then its next opening joining a newer burst), the updates so far go
        first and the rest of the batch makes more (a burst may then have two updates in one batch)."""
        assignments: list[tuple[str, Member]] = []
        updates: list[GroupUpdate] = []
        touched: dict[str, list[ExposureEvent]] = {}
        burst_of: dict[str, str] = {}  # folder → the burst its events in ``touched`` are in
        for event in events:
            group_id, member = self.grouper.assign(event)
            assignments.append((group_id, member))
            if burst_of.setdefault(event.folder, group_id) != group_id:
                updates += self._updates(touched)
                touched, burst_of = {}, {event.folder: group_id}
            touched.setdefault(group_id, []).append(event)
        self.group_store.save(assignments)
        return updates + self._updates(touched)

    def _updates(self, touched: dict[str, list[ExposureEvent]]) -> list[GroupUpdate]:
        return [GroupUpdate(self.grouper.snapshot(group_id), tuple(group)) for group_id, group in touched.items()]

    def _deliver(self, sink: Sink, update: GroupUpdate, record_of: dict[str, Record], stop: threading.Event) -> bool:
        view = update.only(sink.settings.accepts)
        if view is None:
            return True
        done = self.delivery_log.delivered_among(sink.name, [e.event_id for e in view.events])
        if done:
            view = view.without(done)
            if view is None:
                return True
        payload = sink.render(view)
        what = _describe(view)
        delay = self.backoff_initial
        while True:
            try:
                sink.send(payload)
            except RetryableSinkError as exc:
                self.retries += 1
                if self.metrics is not None:
                    self.metrics.part(AlertMetrics).sink_retried(sink.name)
                wait = delay if exc.retry_after is None else min(exc.retry_after, self.retry_after_max)
                log.warning("sink %s: %s; retrying %s in %.1f s", sink.name, exc, what, wait)
                if self._wait(wait, stop, busy=sink):
                    return False
                delay = min(delay * 2, self.backoff_max)
                continue
            except PermanentSinkError as exc:
                self.failed += len(view.events)
                if self.metrics is not None:
                    self.metrics.part(AlertMetrics).sink_failed(sink.name, len(view.events))
                log.error("sink %s: %s; %s dead-lettered", sink.name, exc, what)
                for event in view.events:
                    reason = f"sink {sink.name}: {exc}"
                    dead_letter(self.bus, record_of[event.event_id], reason, stage="alerts", metrics=self.metrics)
            else:
                self.delivered += len(view.events)
                if self.metrics is not None:
                    self.metrics.part(AlertMetrics).sink_delivered(sink.name, len(view.events))
            self.delivery_log.mark_many(sink.name, [e.event_id for e in view.events])
            return True

    def _wait(self, seconds: float, stop: threading.Event, *, busy: Sink) -> bool:
        """Sleep ``seconds`` (True if stopped meanwhile), re-sending for the other sinks every few seconds."""
        remaining = seconds
        while True:
            step = min(remaining, _MAINTENANCE_SECONDS)
            if self._sleep(step, stop):
                return True
            self.maintain(busy=busy)
            remaining -= step
            if remaining <= 0:
                return False

    def _resend(self, sink: Sink) -> None:
        for snapshot in self.grouper.open_groups():
            update = GroupUpdate(snapshot, (), refresh=True).only(sink.settings.accepts)
            if update is None:
                continue
            try:
                sink.send(sink.render(update))
            except SinkError as exc:
                log.warning(
                    "sink %s: re-sending open alerts failed: %s; next try in %.0f s",
                    sink.name,
                    exc,
                    sink.resend_seconds or 0,
                )
                return
            self.resent += 1


def _describe(update: GroupUpdate) -> str:
    if len(update.events) == 1:
        return update.events[0].event_id
    return f"{len(update.events)} events of {update.group.group_id}"


def _log_opened_by(event: ExposureOpenedBy) -> None:
    """An outsider's open while exposed, as the processor marked it (issue 18): who, which exposure, how sure."""
    log.warning(
        "exposure %s: read by %s, outside the label, while exposed (%s, %s)",
        event.exposure_id,
        event.who if event.outsider else f"{event.who} (maybe outside: the list of outsiders was cut)",
        event.how,
        event.actor.confidence,
    )
