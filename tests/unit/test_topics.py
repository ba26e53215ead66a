"""The settings permwatch's Kafka topics are created with, and what an existing topic is warned about."""

from __future__ import annotations

from permwatch.config import KafkaConfig
from permwatch.transport.topics import DEADLETTER_MAX_BYTES, RECORD_MAX_BYTES, differences, topic_configs


def config(**settings: object) -> KafkaConfig:
    return KafkaConfig(bootstrap_servers="127.0.0.1:9092", **settings)  # type: ignore[arg-type]


def test_history_is_kept_for_good_unless_configured() -> None:
    assert topic_configs("fs", config()) == {"retention.ms": "-1", "max.message.bytes": str(RECORD_MAX_BYTES)}
    assert topic_configs("directory", config(retention_days=1.5))["retention.ms"] == str(129_600_000)


def test_the_dead_letter_topic_holds_a_refused_record_base64_encoded() -> None:
    assert int(topic_configs("deadletter", config())["max.message.bytes"]) == DEADLETTER_MAX_BYTES
    assert DEADLETTER_MAX_BYTES >= RECORD_MAX_BYTES * 4 // 3 + 64 * 1024


def test_an_existing_topic_is_warned_about_only_where_it_loses_records() -> None:
    wanted = topic_configs("fs", config())
    assert differences(wanted, {"retention.ms": "-1", "max.message.bytes": str(RECORD_MAX_BYTES * 2)}) == []
    assert differences(wanted, {"retention.ms": "604800000", "max.message.bytes": "1048588"}) == [
        f"max.message.bytes=1048588 (want at least {RECORD_MAX_BYTES})",
        "retention.ms=604800000 (want -1, for good)",
    ]
    thirty_days = topic_configs("fs", config(retention_days=30))
    assert differences(thirty_days, {"retention.ms": "-1"}) == []  # longer than asked: the operator's choice
    assert differences(thirty_days, {"retention.ms": str(86_400_000)}) == [
        f"retention.ms=86400000 (want {30 * 86_400_000})"
    ]
