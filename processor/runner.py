"""The processor role: read input topics, run the engine, publish exposures, then commit.

Per batch: decode each record (what does not decode, or arrives on the wrong
topic, is dead-lettered with the reason and the batch goes on), apply it to
the :class:`processor.engine.Engine`, publish the resulting exposure events,
flush, and only then commit the consumer's position. A crash between publish
and commit re-publishes the same events with the same ids, which the alert
stage deduplicates. On start the consumer replays history to rebuild the
in-memory state; exposures that history already emitted are not re-emitted.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from datetime import datetime

from permwatch.config import ProcessorConfig
from permwatch.deadletter import dead_letter
from permwatch.events import (
    INPUT_TOPICS,
    TOPIC_EXPOSURES,
    AnyEvent,
    DecodeError,
    ExposureEvent,
    decode,
    encode,
    utcnow,
)
from permwatch.transport.base import Bus, Consumer, Record
from processor.engine import Engine

log = logging.getLogger("permwatch.processor")


class ProcessorRunner:
    def __init__(
        self,
        bus: Bus,
        config: ProcessorConfig,
        *,
        clock: Callable[[], datetime] = utcnow,
    ) -> None:
        self.bus = bus
        self.config = config
        self.engine = Engine(source=config.source, clock=clock)
        self.handled = 0
        self.dead_letters = 0
        self.exposures_published = 0
        self.caught_up = threading.Event()
        self._replaying = False

    def run(self, stop: threading.Event) -> None:
        consumer = self.bus.consumer(INPUT_TOPICS, self.config.group, replay_history=True)
        log.info("processor started (group %s)", self.config.group)
        try:
            while not stop.is_set():
                records = consumer.poll(0.2, max_records=self.config.batch_max)
                if records:
                    self.handle(records, consumer)
                else:
                    self.caught_up.set()
        finally:
            consumer.close()

    def handle(self, records: list[Record], consumer: Consumer) -> list[ExposureEvent]:
        """Apply a batch, judge what it touched once, publish, flush, then commit."""
        published: list[ExposureEvent] = []
        for record in records:
            if not record.replayed and self._replaying:
                # History is rebuilt: what it would emit was emitted before the restart.
                self.engine.flush()
                self._replaying = False
            self._replaying = record.replayed
            event = self._decode(record)
            if event is not None:
                self.engine.apply(event)
                self.handled += 1
        verdicts = self.engine.flush()
        if not self._replaying:
            published = [verdict.to_event() for verdict in verdicts]
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
        consumer.commit()
        self.exposures_published += len(published)
        return published

    def _decode(self, record: Record) -> AnyEvent | None:
        """The record's event, or None after dead-lettering it (once: not again while replaying)."""
        try:
            event = decode(record.value)
        except DecodeError as exc:
            reason = exc.reason
        else:
            if event.topic == record.topic and event.topic in INPUT_TOPICS:
                return event
            reason = f"a {event.type} event does not belong on topic {record.topic}"
        if not record.replayed:
            dead_letter(self.bus, record, reason, stage="processor")
            self.dead_letters += 1
        return None
