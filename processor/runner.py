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
from permwatch.events import INPUT_TOPICS, TOPIC_EXPOSURES, DecodeError, ExposureEvent, decode, encode, utcnow
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
        published: list[ExposureEvent] = []
        replaying = False
        for record in records:
            replaying = record.replayed
            try:
                event = decode(record.value)
            except DecodeError as exc:
                if not record.replayed:
                    dead_letter(self.bus, record, exc.reason, stage="processor")
                    self.dead_letters += 1
                continue
            if event.topic != record.topic or event.topic not in INPUT_TOPICS:
                if not record.replayed:
                    dead_letter(
                        self.bus,
                        record,
                        f"a {event.type} event does not belong on topic {record.topic}",
                        stage="processor",
                    )
                    self.dead_letters += 1
                continue
            out = self.engine.apply(event)
            if not record.replayed:
                published += out
            self.handled += 1
        settled = self.engine.settle()
        if not replaying:
            published += settled
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
