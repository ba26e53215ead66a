"""Issue 7: 10,000 fuzzed records on the real fs, directory and labels topics all land in the dead-letter topic,
each with a reason that names what is wrong, and the processor is alive and still judges right afterwards.

The records are :func:`tests.fuzz_messages.fuzzed_messages` (the same the unit fuzz test puts through the
processor's code): malformed, oversized, wrong-version, wrong-type, misplaced and hostile ones, tombstones and
hostile keys included. The oversized ones lie between the processor's limit (MAX_MESSAGE_BYTES) and what the
input topics permwatch creates take (RECORD_MAX_BYTES), so they reach the processor: its limit refuses them.
"""

from __future__ import annotations

import os
import re
import subprocess
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest
from kafka import KafkaProducer

from permwatch.deadletter import reason_class
from permwatch.transport.topics import RECORD_MAX_BYTES
from tests.fuzz_messages import HOSTILE, INPUT_TOPICS, Fuzzed, assert_letter_for, fuzzed_messages
from tests.integration.pipeline import Pipeline, traversable_tempdir, wait_until
from tests.integration.servers.kafka import KafkaBroker

pytestmark = pytest.mark.integration

COUNT = 10_000
DIRECTORY = """users:
  - {name: anna, uid: 35001, gid: 34001}
  - {name: bo, uid: 35002, gid: 34002}
  - {name: cecilia, uid: 35003, gid: 34002}
  - {name: dora, uid: 35004, gid: 34003}
groups:
  - {name: ledningsgrupp, gid: 34001, members: [anna]}
  - {name: alla, gid: 34002, members: [bo, cecilia%s]}
  - {name: ekonomi, gid: 34003, members: [dora]}
"""


@pytest.fixture(scope="module")
def pipeline(kafka_broker: KafkaBroker, tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Pipeline, Path]]:
    with traversable_tempdir("permwatch-fuzz-") as base:
        share = base / "share"
        folder = share / "ledning"
        folder.mkdir(parents=True)
        os.chmod(share, 0o755)
        os.chown(folder, 0, 34001)
        os.chmod(folder, 0o750)
        pipe = Pipeline(
            tmp_path_factory.mktemp("fuzz"),
            kafka_broker.bootstrap,
            f"fuzz{os.getpid()}.",
            share=share,
            config_extra='[metrics]\nlisten = "127.0.0.1:0"\n',
        )
        pipe.directory_path.write_text(DIRECTORY % "")
        pipe.label_one_folder(folder, "ledningsgrupp")
        try:
            pipe.start_and_settle()
            yield pipe, folder
        finally:
            pipe.stop()


def send(bootstrap: str, prefix: str, messages: list[Fuzzed]) -> dict[tuple[str, int, int], Fuzzed]:
    """Send every message; (topic, partition, offset) → the message, as the broker stored it."""
    # (kafka-python's default max_request_size, 1 MiB, is below what the topics take)
    producer = KafkaProducer(bootstrap_servers=bootstrap, acks="all", linger_ms=5, max_request_size=RECORD_MAX_BYTES)
    try:
        futures = [(producer.send(prefix + m.topic, key=m.key, value=m.value), m) for m in messages]
        producer.flush()
        stored = {}
        for future, message in futures:
            meta = future.get(timeout=60)
            stored[meta.topic.removeprefix(prefix), meta.partition, meta.offset] = message
        return stored
    finally:
        producer.close()


def dead_letter_counts(pipe: Pipeline) -> dict[str, float]:
    """The processor's permwatch_dead_letters_total by reason class."""
    text = pipe.metrics_text("processor")
    found = {}
    for match in re.finditer(r"^permwatch_dead_letters_total\{([^}]*)\} (\S+)$", text, re.MULTILINE):
        labels = dict(re.findall(r'(\w+)="([^"]*)"', match.group(1)))
        if labels.get("stage") == "processor":
            found[labels["reason"]] = float(match.group(2))
    return found


def test_ten_thousand_fuzzed_messages_are_dead_lettered_with_reasons(pipeline: tuple[Pipeline, Path]) -> None:
    pipe, folder = pipeline
    before = len(pipe.exposures())
    messages = fuzzed_messages(COUNT)
    stored = send(pipe.bootstrap, pipe.prefix, messages)
    assert len(stored) == COUNT
    sent = Counter(m.topic for m in messages)
    assert min(sent[topic] for topic in INPUT_TOPICS) > COUNT // 4, sent
    assert sum(m.kind == "oversized" for m in messages) >= 50

    dead = pipe.reader("deadletter")
    wait_until(lambda: len(dead.read()) >= COUNT, f"{COUNT} dead letters", timeout=900)
    pipe.wait_quiet()
    letters = dead.read()
    assert len(letters) == COUNT
    positions = [(letter["topic"], letter["partition"], letter["offset"]) for letter in letters]
    assert set(positions) == set(stored) and len(set(positions)) == COUNT  # each one, once
    classes: Counter[str] = Counter()
    for letter, position in zip(letters, positions, strict=True):
        assert letter["stage"] == "processor"
        assert_letter_for(letter, stored[position])
        classes[reason_class(letter["reason"])] += 1
    assert sum(dead_letter_counts(pipe).values()) == COUNT
    assert {name: count for name, count in dead_letter_counts(pipe).items() if count} == classes

    processor_log = pipe.log("processor")
    assert pipe.procs["processor"].poll() is None, processor_log[-3000:]
    assert "Traceback" not in processor_log and "stopped by an error" not in processor_log, processor_log[-3000:]
    assert not [fragment for fragment in HOSTILE if fragment.lower() in processor_log.lower()]
    assert len(pipe.exposures()) == before  # none of it moved a verdict

    # Still alive and still right: a grant opens an exposure naming exactly who can now read, a directory
    # edit changes it, the revoke closes it.
    subprocess.run(["setfacl", "-m", "g:34002:rx", str(folder)], check=True)
    opened = wait_until(lambda: pipe.exposures()[before:], "an exposure")[0]
    assert (opened["status"], opened["folder"], opened["label"]["name"]) == ("opened", str(folder), "ledning")
    assert (opened["groups"], opened["users"], opened["people"]) == (["alla"], ["bo", "cecilia"], 2)
    assert [grant["group"] for grant in opened["grants"]] == ["alla"]
    pipe.directory_path.write_text(DIRECTORY % ", dora")
    changed = wait_until(lambda: pipe.exposures()[before + 1 :], "the exposure to change")[0]
    assert (changed["status"], changed["exposure_id"], changed["sequence"]) == ("changed", opened["exposure_id"], 1)
    assert (changed["users"], changed["people"]) == (["bo", "cecilia", "dora"], 3)
    subprocess.run(["setfacl", "-x", "g:34002", str(folder)], check=True)
    closed = wait_until(lambda: pipe.exposures()[before + 2 :], "the close")[0]
    assert (closed["status"], closed["exposure_id"], closed["people"]) == ("closed", opened["exposure_id"], 0)
    pipe.wait_quiet()
    assert len(pipe.exposures()) == before + 3
    assert pipe.procs["processor"].poll() is None
