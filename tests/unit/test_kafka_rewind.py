"""A consumer's rewind after a rebalance waits out a broker that cannot answer yet, instead of stopping the stage.

The rewind asks Kafka for the group's commits and the partitions' first offsets. Right after an outage those
questions can time out; the partitions must then stay to be rewound (their fetched records dropped, the
assignment not yet counted as changed) and be rewound at a later poll. Kafka itself is stood in for here by
the few calls the consumer makes; the real thing is in tests/integration/test_transports_kafka.py.
"""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

from kafka import TopicPartition
from kafka.errors import KafkaTimeoutError

from permwatch.transport.kafka import KafkaTopicConsumer

TP = TopicPartition("p.fs", 0)


class StandIn:
    """kafka-python's consumer as far as a rewind uses it; beginning_offsets times out ``failures`` times."""

    def __init__(self, failures: int) -> None:
        self.failures = failures
        self.seeks: list[tuple[str, Any]] = []

    def poll(self, timeout_ms: int, max_records: int) -> dict[TopicPartition, list[Any]]:
        return {TP: [SimpleNamespace(offset=7, key=b"/a", value=b"{}", timestamp=0)]}

    def committed(self, tp: TopicPartition) -> int:
        return 5

    def beginning_offsets(self, partitions: list[TopicPartition]) -> dict[TopicPartition, int]:
        if self.failures:
            self.failures -= 1
            raise KafkaTimeoutError("Failed to get offsets by timestamps in 30000 ms")
        return dict.fromkeys(partitions, 0)

    def seek_to_beginning(self, *partitions: TopicPartition) -> None:
        self.seeks.append(("beginning", partitions))


def test_a_rewind_the_broker_cannot_answer_yet_is_done_at_a_later_poll() -> None:
    kafka = StandIn(failures=1)
    bus = SimpleNamespace(logical=lambda name: name.removeprefix("p."))
    consumer = KafkaTopicConsumer(kafka, bus)  # type: ignore[arg-type]
    consumer.to_rewind, consumer.assigned = {TP}, True

    assert consumer.poll(0.0) == []  # not rewound yet: what was fetched from the partition is not handed out
    assert consumer.to_rewind == {TP} and consumer.generation == 0 and kafka.seeks == []
    assert consumer.replay_pending()

    assert consumer.poll(0.0) == []  # rewound now: to the beginning, the records up to the commit replayed
    assert consumer.to_rewind == set() and consumer.generation == 1
    assert kafka.seeks == [("beginning", (TP,))] and consumer.replay_until[TP] == 5
    records = consumer.poll(0.0)
    assert [(r.offset, r.replayed) for r in records] == [(7, False)]
