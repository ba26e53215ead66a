"""Dead letters: what a stage could not handle goes to the ``deadletter`` topic, whole, with the reason.

Nothing is dropped: the original bytes travel base64-encoded beside a
one-line reason, the stage name and where the record came from; of a key
longer than MAX_KEY_CHARS (no permwatch key is) the letter keeps the head and
its reason says so. The log line
says the reason and the position, never the message's content. The metric
counts letters by stage and by a short class of the reason (:func:`reason_class`),
never by the free-text reason, which would make a series per message.
"""

from __future__ import annotations

import base64
import logging

from permwatch.events import TOPIC_DEADLETTER, DeadLetter
from permwatch.metrics import Metrics
from permwatch.transport.base import Bus, Record

log = logging.getLogger("permwatch.deadletter")


# A reason's first words → its class; the reasons come from events.decode and the stages.
_REASON_CLASSES = (
    ("empty message", "tombstone"),
    ("message too large", "too_large"),
    ("unsupported schema_version", "schema_version"),
    ("invalid ", "invalid"),
    ("sink ", "sink_refused"),  # "sink <name>: <permanent error>"
)


def reason_class(reason: str) -> str:
    """A short, bounded name for a dead-letter reason: the ``reason`` label of the metric."""
    if " does not belong on topic " in reason:
        return "wrong_topic"
    return next((name for prefix, name in _REASON_CLASSES if reason.startswith(prefix)), "other")


def export_dead_letters(metrics: Metrics, stage: str) -> None:
    """Export a stage's dead-letter counters from the start, at 0, one per reason class."""
    for name in (*(name for _, name in _REASON_CLASSES), "wrong_topic", "other"):
        metrics.dead_letters.labels(stage=stage, reason=name)


MAX_KEY_CHARS = 16 * 1024
"""A letter keeps this much of the original key (a path is at most 4096 characters)."""


def dead_letter(bus: Bus, record: Record, reason: str, *, stage: str, metrics: Metrics | None = None) -> DeadLetter:
    key = record.key
    if key is not None and len(key) > MAX_KEY_CHARS:
        # The key travels twice, as the letter's key and in its JSON, where a hostile one grows: each invalid
        # UTF-8 byte comes as U+FFFD (3 bytes), each control character as \u00XX (6). Whole, such a key makes a
        # letter the producer refuses, which stops the stage, and the next start reads the same record again.
        reason += f" [key cut to its first {MAX_KEY_CHARS} of {len(key)} characters]"
        key = key[:MAX_KEY_CHARS]
    letter = DeadLetter(
        reason=reason,
        stage=stage,
        topic=record.topic,
        partition=record.partition,
        offset=record.offset,
        key=key,
        timestamp_ms=record.timestamp_ms,
        value_b64=base64.b64encode(record.value or b"").decode(),
    )
    bus.publish(TOPIC_DEADLETTER, key, letter.model_dump_json().encode())
    if metrics is not None:
        metrics.dead_letters.labels(stage=stage, reason=reason_class(reason)).inc()
    log.warning("%s: dead-lettered %s[%d]@%d: %s", stage, record.topic, record.partition, record.offset, reason)
    return letter
