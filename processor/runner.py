"""The processor role: read input topics, run the engine, publish exposures, then commit.

Per batch: decode each record (what does not decode, or arrives on the wrong
topic, is dead-lettered with the reason and the batch goes on), apply it to
the :class:`processor.engine.Engine`, publish the resulting exposure events,
flush, and only then commit the consumer's position. A crash between publish
and commit re-publishes the same events with the same ids, which the alert
stage deduplicates. On start the consumer replays history to rebuild the
in-memory state; exposures that history already emitted are not re-emitted.
With checkpoints (:mod:`processor.checkpoint`) the state is loaded from the
last one and only the records after it are replayed; a checkpoint is taken
as soon as the state is rebuilt (when records were replayed, so a process
that dies soon after does not make the next one replay them too), after a
commit at most every ``checkpoint_interval_seconds``, and once more on a
clean stop. How long the restart took (process start to state rebuilt)
is logged once, with the records replayed and whether a checkpoint was used.
With a ledger (:mod:`processor.ledger`) every published batch is also noted
in a file of the processor's own, so a restart onto an emptied or replaced
log still continues or closes the exposures it published on the old one.

Metrics (:class:`permwatch.metrics.Metrics`): events handled by topic and
type, exposure events published by status and kind, the detection latency of each
(``detected_at - observed_at``), dead letters, the book of open exposures,
which follows every verdict, replayed ones included, so a restarted processor
reports what is open, the restart time and records replayed, and the last
checkpoint's pause and size.
"""

from __future__ import annotations

import logging
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable, Sequence
from datetime import datetime

from permwatch.config import ProcessorConfig
from permwatch.deadletter import dead_letter, export_dead_letters
from permwatch.events import (
    INPUT_TOPICS,
    TOPIC_ACCESS,
    TOPIC_EXPOSURES,
    AnyEvent,
    DecodeError,
    ExposureEvent,
    ExposureKind,
    ExposureStatus,
    FsAccessEvent,
    decode,
    encode,
    utcnow,
)
from permwatch.metrics import Metrics
from permwatch.transport.base import Bus, Consumer, EndOffsets, Record, ReplayProgress
from processor.checkpoint import Checkpoints, Offsets, Restored, process_age
from processor.engine import Engine
from processor.exposures import Verdict
from processor.forensics import recorded_exposures
from processor.ledger import PublishedLedger
from processor.metrics import ProcessorMetrics
from processor.open_marks import ExposureWindows
from processor.published import PublishedRecord

log = logging.getLogger("permwatch.processor")

LIVE_TOPICS = (*INPUT_TOPICS, TOPIC_ACCESS)
"""What the single processor reads: its inputs, and the opens it marks live (issue 18, processor/open_marks.py)."""
MARK_DELAY_SECONDS = 2.0
"""An open read while the processor is busy is marked once it has read everything (idle) or after this long, so
the exposure change it follows (on another topic, read in any order) is applied first."""
MARK_WAIT_LIMIT_SECONDS = 60.0
"""How long a busy processor keeps an open that marks nothing yet (its exposure's opening may still be unread)."""


class ProcessorRunner:
    def __init__(
        self,
        bus: Bus,
        config: ProcessorConfig,
        *,
        clock: Callable[[], datetime] = utcnow,
        metrics: Metrics | None = None,
        checkpoints: Checkpoints | None = None,
        ledger: PublishedLedger | None = None,
    ) -> None:
        self.bus = bus
        self.config = config
        self.metrics = metrics
        self.checkpoints = checkpoints
        self.ledger = ledger
        """This processor's own note of what it published (:mod:`processor.ledger`), for a log that loses its
        record; None: the log's record alone."""
        self._clock = clock
        if metrics is not None:  # series at 0 from the start, so rate() sees the first increment
            export_dead_letters(metrics, "processor")
            for status in ExposureStatus:
                for kind in ExposureKind:
                    metrics.part(ProcessorMetrics).processor_exposure_events.labels(
                        status=status.value, kind=kind.value
                    )
        self.engine = Engine(source=config.source, clock=clock, max_users_listed=config.max_users_listed)
        self.handled = 0
        self.dead_letters = 0
        self.exposures_published = 0
        self.caught_up = threading.Event()
        self._replaying = False
        self.covered: Offsets = {}
        """(topic, partition) → the offset after the last record applied: what a checkpoint covers."""
        self.records_covered = 0
        self.restored: Restored | None = None
        self.replayed = 0
        """Records replayed at start, until the state was rebuilt."""
        self.restart_seconds: float | None = None
        """From the process's start to the state rebuilt (checkpoint loaded, history up to the commit replayed)."""
        # -- opens marked live (issue 18)
        self.windows = ExposureWindows()
        self._opens: list[tuple[float, FsAccessEvent]] = []
        """live access records read and not yet judged, with when they were read"""
        self.opens_marked = 0

    def run(self, stop: threading.Event) -> None:
        age = process_age()
        origin = time.monotonic() - (age or 0.0)
        replay_from = self._restore()
        consumer = self.bus.consumer(LIVE_TOPICS, self.config.group, replay_history=True, replay_from=replay_from)
        log.info("processor started (group %s)", self.config.group)
        first_records_at: float | None = None
        rebuilding, held = True, []
        record: PublishedRecord | None = None
        reconcile_at: Offsets | None = None
        stopped = False
        try:
            while not stop.is_set():
                records = consumer.poll(0.2, max_records=self.config.batch_max)
                if records and first_records_at is None:
                    first_records_at = time.monotonic() - origin
                if rebuilding or _replay_pending(consumer):
                    # History first, all of it; live records wait until the record's exposures are adopted,
                    # so they move the exposures that were published, under their ids. Nothing is committed
                    # meanwhile: replayed records have no effect to commit and the held ones are not handled.
                    if not rebuilding:
                        log.info("partitions reassigned: replaying their history before going on")
                        rebuilding = True
                    held += [r for r in records if not r.replayed]
                    replayed = [r for r in records if r.replayed]
                    if replayed:
                        self._handled(replayed, _NO_COMMIT)
                    if _replay_pending(consumer):
                        continue
                    rebuilding = False
                    record = self._published()
                    self._fill_from_ledger(record)
                    adopted = self.engine.adopt(record)
                    self.windows.adopt(record.last.values())
                    self.engine.decisions.forget_told(record.last)  # expiries the record already tells
                    self._book_from_engine()
                    log.info(
                        "took over the published state of %d open exposure(s) (%d folder(s) on the record)",
                        adopted,
                        len(record.last),
                    )
                    if self.restart_seconds is None:
                        self._rebuilt(time.monotonic() - origin, first_records_at)
                    # Reconciled once everything the input held now is applied: an effect published before
                    # a crash may come from records after the commit, which come again as live ones.
                    reconcile_at = consumer.end_offsets() if isinstance(consumer, EndOffsets) else {}
                    records, held = held, []
                self._handled_in_batches(records, consumer)
                if self._opens and not rebuilding:
                    self._mark_opens(idle=not records)
                if record is not None and reconcile_at is not None:
                    done = consumer.reached(reconcile_at) if isinstance(consumer, EndOffsets) else not records
                    if done:
                        self._reconcile_with(record)
                        record = reconcile_at = None
                        # a checkpoint saved past the group's commit (killed between the two) and nothing new to
                        # read: commit where the state stands, or the group's lag would show the gap until then
                        consumer.commit()
                        if self.checkpoints is not None and self.replayed:
                            # what was just replayed is not replayed again if this process dies soon
                            self.checkpoints.save(self.engine, self.covered, records=self.records_covered)
                if not records and reconcile_at is None and not rebuilding:
                    self.caught_up.set()
                    if self.engine.decisions.approvals:  # respond (issue 19): an approval that ran out is said once
                        self._publish_expired()
                if self.checkpoints is not None and not rebuilding and self.checkpoints.due(self.covered):
                    self.checkpoints.save(self.engine, self.covered, records=self.records_covered)  # also once idle
            if self._opens and not rebuilding:
                self._mark_opens(idle=True)  # a clean stop judges the opens read (their records are committed)
            stopped = True
        finally:
            consumer.close()
            if self.checkpoints is not None:
                if stopped and not rebuilding and not self.checkpoints.covers(self.covered):
                    self.checkpoints.save(self.engine, self.covered, records=self.records_covered, wait=True)
                self.checkpoints.wait()
            if self.ledger is not None:
                self.ledger.close()

    def _handled(self, records: list[Record], consumer: Consumer) -> None:
        """Handle a batch and note what the state now covers (what a checkpoint would say)."""
        self.handle(records, consumer)
        self.covered.update({(r.topic, r.partition): r.offset + 1 for r in records})
        self.records_covered += len(records)
        if self.restart_seconds is None:
            self.replayed += sum(1 for r in records if r.replayed)

    def _handled_in_batches(self, records: list[Record], consumer: Consumer) -> None:
        """:meth:`_handled` in batches of the usual size (held records can be many: one batch judges a folder's
        changes as one), committing after the last only: the consumer commits everything it has returned."""
        size = self.config.batch_max
        for start in range(0, len(records), size):
            self._handled(records[start : start + size], consumer if start + size >= len(records) else _NO_COMMIT)

    def _published(self) -> PublishedRecord:
        """The exposure record: the last event published per folder, and every id each folder has had."""
        return PublishedRecord.of(recorded_exposures(self.bus))

    def _fill_from_ledger(self, record: PublishedRecord) -> None:
        """Add what this processor published for folders the log's record does not know (the log was emptied,
        replaced or moved aside), so the reconcile continues or closes those exposures under their ids."""
        if self.ledger is None:
            return
        added = self.ledger.fill(record)
        if added:
            still_open = sum(1 for event in record.last.values() if event.status is not ExposureStatus.CLOSED)
            log.warning(
                "the event log's exposure record lacks %d folder(s) this processor published for (the log was "
                "emptied or replaced): taken from %s, %d exposure(s) open on the record now; continued or closed "
                "once their folders are judged",
                added,
                self.ledger.path,
                still_open,
            )

    def _noted(self, published: Sequence[ExposureEvent]) -> None:
        """Note ``published`` (on the bus now) in the ledger, before the commit."""
        if self.ledger is not None and published:
            self.ledger.note(published)

    def _reconcile_with(self, record: PublishedRecord) -> None:
        reason = f"reconcile.{self.config.group}.{uuid.uuid4().hex[:12]}"
        self._publish_reconciled(self.engine.reconcile(record, reason), record)

    def _publish_expired(self) -> None:
        verdicts = self.engine.expire_approvals(self._clock())
        if not verdicts:
            return
        self._track(verdicts)
        for exposure in verdicts:
            self.bus.publish(TOPIC_EXPOSURES, exposure.key, encode(exposure))
            log.info("exposure %s still open after its approval ran out: %s", exposure.exposure_id, exposure.folder)
        self.bus.flush()
        self._noted(verdicts)
        self.exposures_published += len(verdicts)

    def _publish_reconciled(self, verdicts: list[Verdict], record: PublishedRecord) -> None:
        self._track(verdicts)
        for exposure in verdicts:
            self.bus.publish(TOPIC_EXPOSURES, exposure.key, encode(exposure))
            log.info(
                "exposure %s %s after reconciling with the record: %s",
                exposure.status.value,
                exposure.exposure_id,
                exposure.folder,
            )
        self.bus.flush()
        self._noted(verdicts)
        self.exposures_published += len(verdicts)
        log.info(
            "reconciled with the exposure record (%d folder(s) on it): %d event(s)", len(record.last), len(verdicts)
        )

    def _restore(self) -> Offsets | None:
        """Load the checkpoint, if there is one that fits; the offsets the consumer starts from."""
        if self.checkpoints is None:
            return None
        restored = self.checkpoints.load(source=self.config.source, clock=self._clock)
        if restored is None:
            return None
        self.engine, self.restored = restored.engine, restored
        self.engine.tracker.max_users_listed = self.config.max_users_listed  # a setting, not state: not in the file
        self.covered, self.records_covered = dict(restored.offsets), restored.records
        self._book_from_engine()  # as replaying would have built it
        return restored.offsets

    def _book_from_engine(self) -> None:
        """Set the open-exposure book (a metric) to what the engine holds open now."""
        if self.metrics is None:
            return
        self.metrics.open_exposures.replace(
            (record.open.exposure_id, record.label.name, record.label.severity.value, record.open.opened_at)
            for record in self.engine.tracker.folders.values()
            if record.open is not None
        )

    def _rebuilt(self, seconds: float, first_records_at: float | None) -> None:
        self.restart_seconds = seconds
        if self.metrics is not None:
            self.metrics.part(ProcessorMetrics).processor_restart_seconds.set(seconds)
            self.metrics.part(ProcessorMetrics).processor_restart_replayed.set(self.replayed)
        if self.restored is not None:
            basis = (
                f"on top of the checkpoint of {self.restored.written_at.isoformat(timespec='seconds')} "
                f"({self.restored.records:,} records)"
            )
        else:
            basis = "from the beginning (no checkpoint)"
        log.info(
            "processor restart: state rebuilt %.2f s after the process started, %s records replayed %s; "
            "first records after %s",
            seconds,
            f"{self.replayed:,}",
            basis,
            "-" if first_records_at is None else f"{first_records_at:.2f} s",
        )

    def handle(self, records: list[Record], consumer: Consumer) -> list[ExposureEvent]:
        """Apply a batch, judge what it touched once, publish, flush, then commit."""
        published: list[ExposureEvent] = []
        handled: Counter[tuple[str, str]] = Counter()
        for record in records:
            if record.replayed != self._replaying:
                # Judge each run of replayed or live records apart and publish only what live ones moved:
                # what history moves was emitted before the restart. One batch can hold both, as some
                # partitions are still replayed when others are live.
                verdicts = self.engine.flush()
                self._track(verdicts)
                if not self._replaying:
                    published += verdicts  # already the contract's events: their bytes are the validated event's
                self._replaying = record.replayed
            event = self._decode(record)
            if isinstance(event, FsAccessEvent):
                if not record.replayed:  # a replayed one was judged before the commit
                    self._opens.append((time.monotonic(), event))
                self.handled += 1
                handled[record.topic, event.type] += 1
            elif event is not None:
                self.engine.apply(event)
                self.handled += 1
                handled[record.topic, event.type] += 1
        verdicts = self.engine.flush()
        self._track(verdicts)
        if not self._replaying:
            published += verdicts  # already the contract's events: their bytes are the validated event's
        for exposure in published:
            self.bus.publish(TOPIC_EXPOSURES, exposure.key, encode(exposure))
            log.info(
                "exposure %s %s: %s (%s) people=%d groups=%s",
                exposure.status.value,
                exposure.exposure_id,
                exposure.folder,
                exposure.label.name,
                exposure.people,
                ",".join(exposure.groups) or "-",
            )
        self.bus.flush()
        self._noted(published)
        consumer.commit()
        self.exposures_published += len(published)
        self._count(handled, published)
        return published

    def _mark_opens(self, *, idle: bool) -> None:
        """Publish the marks of live opens (outsiders' opens while exposed): every open read, once the processor
        has read all there is (``idle``); while it is busy, those read over ``MARK_DELAY_SECONDS`` ago that mark.
        An open that does not mark yet waits for the idle moment (its exposure's change may still be unread),
        but no longer than ``MARK_WAIT_LIMIT_SECONDS``."""
        now_s = time.monotonic()
        directory, now = self.engine.directory, self._clock()
        waiting: list[tuple[float, FsAccessEvent]] = []
        published = 0
        for read_at, access in self._opens:
            if not idle and now_s - read_at < MARK_DELAY_SECONDS:
                waiting.append((read_at, access))
                continue
            mark = self.windows.mark(access, directory.name_of_uid, source=self.config.source, now=now)
            if mark is None:
                if not idle and now_s - read_at < MARK_WAIT_LIMIT_SECONDS:
                    waiting.append((read_at, access))
                continue
            self.bus.publish(TOPIC_EXPOSURES, mark.key, encode(mark))
            published += 1
            if self.metrics is not None:
                outsider = "true" if mark.outsider else "unknown"
                self.metrics.part(ProcessorMetrics).processor_opens_marked.labels(outsider=outsider).inc()
            log.info(
                "exposure %s: opened by %s (outside the label%s) while exposed: %s",
                mark.exposure_id,
                mark.who,
                "" if mark.outsider else "?",
                mark.path,
            )
        self._opens = waiting
        if published:
            self.bus.flush()
            self.opens_marked += published

    def _track(self, verdicts: list[Verdict]) -> None:
        """Keep the open-exposure book (a metric) and the exposure windows (opens marked live) in step with the
        engine, replayed verdicts included."""
        for verdict in verdicts:
            self.windows.note(verdict)
        if self.metrics is None:
            return
        for verdict in verdicts:
            label = verdict.label
            self.metrics.open_exposures.record(
                verdict.exposure_id, verdict.status, label.name, label.severity.value, verdict.opened_at
            )

    def _count(self, handled: Counter[tuple[str, str]], published: list[ExposureEvent]) -> None:
        """Per batch rather than per record: a counter update costs about as much as a small event's apply."""
        if self.metrics is None:
            return
        for (topic, event_type), count in handled.items():
            self.metrics.part(ProcessorMetrics).processor_events_handled.labels(topic=topic, type=event_type).inc(count)
        for exposure in published:
            self.metrics.part(ProcessorMetrics).processor_exposure_events.labels(
                status=exposure.status.value, kind=exposure.kind.value
            ).inc()
            latency = (exposure.detected_at - exposure.observed_at).total_seconds()
            self.metrics.part(ProcessorMetrics).detection_latency.observe(max(0.0, latency))

    def _decode(self, record: Record) -> AnyEvent | None:
        """The record's event, or None after dead-lettering it (once: not again while replaying)."""
        try:
            event = decode(record.value)
        except DecodeError as exc:
            reason = exc.reason
        else:
            if event.topic == record.topic and event.topic in LIVE_TOPICS:
                return event
            reason = f"a {event.type} event does not belong on topic {record.topic}"
        if not record.replayed:
            dead_letter(self.bus, record, reason, stage="processor", metrics=self.metrics)
            self.dead_letters += 1
        return None


def _replay_pending(consumer: Consumer) -> bool:
    return consumer.replay_pending() if isinstance(consumer, ReplayProgress) else False


class _NoCommit:
    """A consumer stand-in for :meth:`ProcessorRunner.handle` while rebuilding: nothing to commit."""

    def poll(self, timeout: float, max_records: int = 500) -> list[Record]:
        return []

    def commit(self) -> None:
        pass

    def close(self) -> None:
        pass


_NO_COMMIT = _NoCommit()
