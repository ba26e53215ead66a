"""The Kafka topics permwatch creates, and the settings each is created with (both Kafka clients).

Every topic is history: processors rebuild their state from the input topics
(``fs``, ``directory``, ``labels``) when they have no checkpoint, and a
workshop replays all of them. So topics keep their records for good unless
``retention_days`` says otherwise; a broker's default (seven days) would
silently delete the baseline scan and the directory snapshot a rebuild needs.
The ``access`` topic (who opened what, #18) is the exception: it keeps
``access_retention_days`` (90 by default), as a data-protection policy asks.

Sizes: a stage decodes events up to :data:`permwatch.events.MAX_MESSAGE_BYTES`;
a topic takes that plus room for the key. A dead letter carries the record it
could not handle base64-encoded (4/3 of its size) beside the reason, so the
``deadletter`` topic, and the producers, take twice as much: anything an input
topic accepted can be dead-lettered whole.
"""

from __future__ import annotations

from permwatch.config import KafkaConfig
from permwatch.events import (
    MAX_MESSAGE_BYTES,
    TOPIC_ACCESS,
    TOPIC_DEADLETTER,
    TOPIC_DECISIONS,
    TOPIC_DIRECTORY,
    TOPIC_EXPOSURES,
    TOPIC_FS,
    TOPIC_LABELS,
)

ALL_TOPICS = (
    TOPIC_FS,
    TOPIC_DIRECTORY,
    TOPIC_LABELS,
    TOPIC_EXPOSURES,
    TOPIC_DEADLETTER,
    TOPIC_ACCESS,
    TOPIC_DECISIONS,
)

RECORD_MAX_BYTES = MAX_MESSAGE_BYTES + 64 * 1024
"""The largest record a topic other than ``deadletter`` accepts."""
DEADLETTER_MAX_BYTES = 2 * RECORD_MAX_BYTES
"""The largest dead letter: a refused record of :data:`RECORD_MAX_BYTES`, base64-encoded, with its reason."""

_DAY_MS = 86_400_000


def topic_configs(topic: str, config: KafkaConfig) -> dict[str, str]:
    """The topic-level settings ``topic`` is created with (and checked against when it exists)."""
    days = config.access_retention_days if topic == TOPIC_ACCESS else config.retention_days
    retention = "-1" if days is None else str(round(days * _DAY_MS))
    size = DEADLETTER_MAX_BYTES if topic == TOPIC_DEADLETTER else RECORD_MAX_BYTES
    return {"retention.ms": retention, "max.message.bytes": str(size)}


def differences(wanted: dict[str, str], found: dict[str, str]) -> list[str]:
    """What an existing topic's settings lack, as ``key=found (want wanted)`` phrases; [] when it fits.

    A larger ``max.message.bytes`` or a longer retention than wanted is fine: the operator chose it.
    """
    out = []
    size, have_size = int(wanted["max.message.bytes"]), found.get("max.message.bytes")
    if have_size is not None and int(have_size) < size:
        out.append(f"max.message.bytes={have_size} (want at least {size})")
    retention, have = int(wanted["retention.ms"]), found.get("retention.ms")
    if have is not None and int(have) != -1 and (retention == -1 or int(have) < retention):
        out.append(f"retention.ms={have} (want {'-1, for good' if retention == -1 else retention})")
    return out
