"""A processor checkpoint checked against real Kafka topics (both clients): offsets the topics no longer reach (the
topics deleted and made again, a cluster put back) are named and the checkpoint is not used; offsets within the
partitions' ranges are."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from permwatch.config import KafkaConfig, TransportConfig
from permwatch.transport import open_bus
from permwatch.transport.base import Bus, LogExtent
from processor.checkpoint import Checkpoints, encode
from processor.engine import Engine
from tests.integration.servers.kafka import KafkaBroker

pytestmark = pytest.mark.integration

IDENTITY = {"group": "g", "topics": "kafka t"}


@pytest.mark.parametrize("kind", ["kafka", "confluent"])
def test_a_checkpoint_beyond_the_topics_end_is_named_and_not_used(
    kind: str, kafka_broker: KafkaBroker, kafka_topic_prefix: str, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    config = KafkaConfig(bootstrap_servers=kafka_broker.bootstrap, topic_prefix=kafka_topic_prefix, partitions=3)
    bus: Bus = open_bus(TransportConfig(kind=kind, kafka=config))  # type: ignore[arg-type]
    assert isinstance(bus, LogExtent) and bus.log_id is None
    for i in range(30):
        bus.publish("fs", f"/p{i % 6}", b"x")
    bus.flush()
    ranges = bus.offset_ranges(["fs", "labels"])
    assert ranges is not None and sorted(ranges) == [(topic, p) for topic in ("fs", "labels") for p in range(3)]
    assert sum(end for (topic, _), (_, end) in ranges.items() if topic == "fs") == 30
    assert all(first == 0 for first, _ in ranges.values())

    path = tmp_path / "processor.checkpoint"
    fits = {("fs", p): ranges["fs", p][1] for p in range(3)}
    path.write_bytes(encode(Engine(), fits, IDENTITY, records=30))
    restored = Checkpoints(path, IDENTITY, log=bus).load(source="p")
    assert restored is not None and restored.offsets == fits

    beyond = {**fits, ("fs", 1): fits["fs", 1] + 5}  # written against a longer history than these topics hold
    path.write_bytes(encode(Engine(), beyond, IDENTITY, records=35))
    with caplog.at_level(logging.WARNING, logger="permwatch.processor"):
        assert Checkpoints(path, IDENTITY, log=bus).load(source="p") is None
    assert (
        f"not used: Kafka topics {kafka_topic_prefix}* on {kafka_broker.bootstrap} is older than the checkpoint "
        f"(fs/1 ends at {fits['fs', 1]}, checkpoint at {fits['fs', 1] + 5})"
    ) in caplog.text
    bus.close()
