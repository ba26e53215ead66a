"""Processor throughput on a pre-filled topic, against a bare consumer of the same topic.

Pre-fills the fs topic of a real Kafka broker with N permission events
(20,000 paths under 200 labelled folders, a directory snapshot first) and
then times, each in the same run on the same records:

- baseline: a bare kafka-python consumer reading every record (no decoding);
- the processor on the default kafka-python transport (consume, decode,
  judge, publish exposures, commit per batch);
- the same two with the optional confluent-kafka (librdkafka) transport.

Prints events/s and the processor/baseline ratio per client; the last line
is one JSON object. Target: ratio ≥ 0.7 on kafka-python.

    .venv/bin/python bench/throughput.py [--events 100000]
"""

from __future__ import annotations

import argparse
import json
import threading
import time
import uuid

from _rig import kafka_broker  # also puts the repository on sys.path
from confluent_kafka import Consumer as ConfluentConsumer
from kafka import KafkaConsumer

from permwatch.config import KafkaConfig, ProcessorConfig, TransportConfig
from permwatch.events import (
    AclEntry,
    AclTag,
    DirectoryGroup,
    DirectoryUser,
    Event,
    FsKind,
    FsPermissionEvent,
    Identity,
    Label,
    LabelAssigned,
    encode,
)
from permwatch.transport import open_bus
from permwatch.transport.base import Bus
from processor.runner import ProcessorRunner

FOLDERS, PATHS_PER_FOLDER = 200, 100


def prefill(bus: Bus, events: int) -> int:
    root = Identity(id=0, name="root")
    count = 0

    def send(event: Event) -> None:
        nonlocal count
        bus.publish(event.topic, event.key, encode(event))
        count += 1

    for i in range(300):
        send(DirectoryUser(name=f"u{i}", uid=40_000 + i, primary_gid=41_001 if i < 20 else 41_002))
    send(DirectoryGroup(name="ledning", gid=41_001))
    send(DirectoryGroup(name="alla", gid=41_002))
    for path in ("/", "/srv", "/srv/share"):
        send(FsPermissionEvent(kind=FsKind.BASELINE, path=path, owner=root, group=Identity(id=0), mode=0o755))
    label = Label(name="ledning", allowed_groups=("ledning",), allowed_users=("root",))
    for f in range(FOLDERS):
        folder = f"/srv/share/f{f:03d}"
        send(FsPermissionEvent(kind=FsKind.BASELINE, path=folder, owner=root, group=Identity(id=41_001), mode=0o751))
        send(LabelAssigned(path=folder, label=label))
    plain = (AclEntry(tag=AclTag.USER_OBJ, perms=6), AclEntry(tag=AclTag.GROUP_OBJ, perms=4),
             AclEntry(tag=AclTag.MASK, perms=4), AclEntry(tag=AclTag.OTHER, perms=0))  # fmt: skip
    opened = (*plain[:2], AclEntry(tag=AclTag.GROUP, qualifier=41_002, perms=4), *plain[2:])
    i = 0
    while count < events:
        f, p = i % FOLDERS, (i // FOLDERS) % PATHS_PER_FOLDER
        acl = opened if (i // (FOLDERS * PATHS_PER_FOLDER)) % 2 == 0 else plain
        send(FsPermissionEvent(kind=FsKind.CHANGED, path=f"/srv/share/f{f:03d}/doc{p:03d}.txt", owner=root,
                               group=Identity(id=41_001), mode=0o640, acl=acl))  # fmt: skip
        i += 1
    bus.flush()
    return count


def bare_kafka_python(bootstrap: str, topics: list[str], total: int) -> float:
    consumer = KafkaConsumer(bootstrap_servers=bootstrap, group_id=f"bare-{uuid.uuid4().hex[:6]}",
                             auto_offset_reset="earliest", enable_auto_commit=False)  # fmt: skip
    for t in topics:
        consumer.partitions_for_topic(t)
    consumer.subscribe(topics)
    seen, start = 0, time.perf_counter()
    while seen < total:
        seen += sum(len(m) for m in consumer.poll(timeout_ms=500, max_records=5000).values())
    seconds = time.perf_counter() - start
    consumer.close()
    return seconds


def bare_confluent(bootstrap: str, topics: list[str], total: int) -> float:
    consumer = ConfluentConsumer({"bootstrap.servers": bootstrap, "group.id": f"bare-{uuid.uuid4().hex[:6]}",
                                  "auto.offset.reset": "earliest", "enable.auto.commit": False})  # fmt: skip
    consumer.subscribe(topics)
    seen, start = 0, time.perf_counter()
    while seen < total:
        seen += sum(1 for m in consumer.consume(5000, timeout=0.5) if not m.error())
    seconds = time.perf_counter() - start
    consumer.close()
    return seconds


def processor(kind: str, kafka: KafkaConfig, total: int) -> tuple[float, int]:
    bus = open_bus(TransportConfig(kind=kind, kafka=kafka))  # type: ignore[arg-type]
    runner = ProcessorRunner(bus, ProcessorConfig(group=f"proc-{kind}-{uuid.uuid4().hex[:6]}", batch_max=5000))
    stop = threading.Event()
    thread = threading.Thread(target=runner.run, args=(stop,))
    start = time.perf_counter()
    thread.start()
    while runner.handled + runner.dead_letters < total:
        time.sleep(0.01)
    seconds = time.perf_counter() - start
    stop.set()
    thread.join()
    bus.close()
    return seconds, runner.exposures_published


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=100_000)
    args = parser.parse_args()
    with kafka_broker() as broker:
        kafka = KafkaConfig(bootstrap_servers=broker.bootstrap, topic_prefix="tp.", partitions=6)
        started = time.perf_counter()
        total = prefill(open_bus(TransportConfig(kind="confluent", kafka=kafka)), args.events)
        print(f"pre-filled {total:,} events in {time.perf_counter() - started:.1f} s")
        topics = ["tp.fs", "tp.directory", "tp.labels"]
        results = {}
        for kind, bare in (("kafka", bare_kafka_python), ("confluent", bare_confluent)):
            bare_s = bare(broker.bootstrap, topics, total)
            proc_s, exposures = processor(kind, kafka, total)
            results[kind] = {"bare_per_s": round(total / bare_s), "processor_per_s": round(total / proc_s),
                             "ratio": round(bare_s / proc_s, 3), "exposures": exposures}  # fmt: skip
            client = "kafka-python" if kind == "kafka" else "confluent-kafka"
            print(f"{client:>16}: bare consumer {total / bare_s:>9,.0f} events/s, processor {total / proc_s:>9,.0f} "
                  f"events/s, ratio {bare_s / proc_s:.2f} ({exposures:,} exposure events)")  # fmt: skip
    speedup = results["confluent"]["processor_per_s"] / results["kafka"]["processor_per_s"]
    print(f"processor on confluent-kafka vs kafka-python: {speedup:.1f}×")
    print(f"target ratio ≥ 0.7 on kafka-python: {'met' if results['kafka']['ratio'] >= 0.7 else 'NOT met'}")
    print(json.dumps({"events": total, **{k: v for k, v in results.items()}, "confluent_speedup": round(speedup, 2)}))


if __name__ == "__main__":
    main()
