"""The Bus contract on real Kafka, for both Kafka transports (kafka-python and confluent-kafka)."""

from __future__ import annotations

import time

import pytest

from permwatch.config import KafkaConfig, TransportConfig
from permwatch.transport import open_bus
from permwatch.transport.base import Bus, Consumer, Record
from tests.integration.pipeline import wait_until
from tests.integration.servers.kafka import KafkaBroker

pytestmark = pytest.mark.integration


def bus_for(kind: str, broker: KafkaBroker, prefix: str) -> Bus:
    config = KafkaConfig(bootstrap_servers=broker.bootstrap, topic_prefix=prefix, partitions=3)
    return open_bus(TransportConfig(kind=kind, kafka=config))  # type: ignore[arg-type]


def drain(consumer: Consumer, count: int) -> list[Record]:
    got: list[Record] = []
    wait_until(lambda: got.extend(consumer.poll(0.5)) or len(got) >= count, f"{count} records")
    return got


@pytest.mark.parametrize("kind", ["kafka", "confluent"])
def test_bus_contract(kind: str, kafka_broker: KafkaBroker, kafka_topic_prefix: str) -> None:
    bus = bus_for(kind, kafka_broker, kafka_topic_prefix)
    for i in range(60):
        bus.publish("fs", f"/p{i % 6}", f"{i}".encode())
    bus.flush()
    consumer = bus.consumer(["fs"], "g1")
    records = drain(consumer, 60)
    assert len(records) == 60
    for key in {r.key for r in records}:
        values = [int(r.value or b"") for r in records if r.key == key]
        assert values == sorted(values), "one key's records stay in order"
    consumer.commit()
    consumer.close()

    bus.publish("fs", "/p0", b"60")
    bus.flush()
    resumed = bus.consumer(["fs"], "g1")
    assert [r.value for r in drain(resumed, 1)] == [b"60"]
    resumed.commit()
    resumed.close()

    # a commit part-way through a replay leaves the group's position where it was
    partway = bus.consumer(["fs"], "g1", replay_history=True)
    first: list[Record] = []
    wait_until(lambda: first.extend(partway.poll(0.5, max_records=5)) or bool(first), "the first replayed records")
    assert 0 < len(first) < 61 and all(r.replayed for r in first)
    partway.commit()
    partway.close()

    rebuilt = bus.consumer(["fs"], "g1", replay_history=True)
    again = drain(rebuilt, 61)
    assert sum(r.replayed for r in again) == 61  # all committed before: history to rebuild from
    rebuilt.commit()
    rebuilt.close()
    bus.publish("fs", "/p2", b"61")
    bus.flush()
    plain = bus.consumer(["fs"], "g1")
    assert [r.value for r in drain(plain, 1)] == [b"61"]  # not the replayed ones again
    plain.close()

    cut = int(time.time() * 1000)
    while int(time.time() * 1000) <= cut + 5:
        time.sleep(0.005)
    bus.publish("fs", "/p1", b"late")
    bus.flush()
    history = list(bus.history(["fs"]))
    assert len(history) == 63 and history[-1].value == b"late"
    assert [r.timestamp_ms for r in history] == sorted(r.timestamp_ms for r in history)
    assert len(list(bus.history(["fs"], until_ms=cut))) == 62
    bus.close()
