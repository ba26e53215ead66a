"""Dead letters: what a stage could not handle goes to the ``deadletter`` topic, whole, with the reason.

Nothing is dropped: the original bytes travel base64-encoded beside a
one-line reason, the stage name and where the record came from. The log line
says the reason and the position, never the message's content.
"""

from __future__ import annotations

import base64
import logging

from permwatch.events import TOPIC_DEADLETTER, DeadLetter
from permwatch.transport.base import Bus, Record

log = logging.getLogger("permwatch.deadletter")


def dead_letter(bus: Bus, record: Record, reason: str, *, stage: str) -> DeadLetter:
    letter = DeadLetter(
        reason=reason,
        stage=stage,
        topic=record.topic,
        partition=record.partition,
        offset=record.offset,
        key=record.key,
        timestamp_ms=record.timestamp_ms,
        value_b64=base64.b64encode(record.value or b"").decode(),
    )
    bus.publish(TOPIC_DEADLETTER, record.key, letter.model_dump_json().encode())
    log.warning("%s: dead-lettered %s[%d]@%d: %s", stage, record.topic, record.partition, record.offset, reason)
    return letter
