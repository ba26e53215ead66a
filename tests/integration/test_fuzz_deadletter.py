"""Issue 7: 10,000 fuzzed messages on the real fs topic all land in the dead-letter topic with reasons,
and the processor is alive and still judges correctly afterwards."""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from kafka import KafkaProducer

from tests.fuzz_messages import fuzzed_messages
from tests.integration.pipeline import Pipeline, wait_until
from tests.integration.servers.kafka import KafkaBroker

pytestmark = pytest.mark.integration

# The broker refuses records over its default max.message.bytes (about 1 MB) at produce time,
# so the oversized cases are checked by the unit fuzz test instead.
BROKER_LIMIT = 900_000


@pytest.fixture(scope="module")
def pipeline(kafka_broker: KafkaBroker, tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Pipeline, Path]]:
    base = Path(tempfile.mkdtemp(prefix="permwatch-fuzz-"))
    os.chmod(base, 0o755)
    share = base / "share"
    folder = share / "ledning"
    folder.mkdir(parents=True)
    os.chmod(share, 0o755)
    os.chown(folder, 0, 34001)
    os.chmod(folder, 0o750)
    pipe = Pipeline(tmp_path_factory.mktemp("fuzz"), kafka_broker.bootstrap, f"fuzz{os.getpid()}.", share=share)
    pipe.directory_path.write_text(
        "users:\n  - {name: anna, uid: 35001, gid: 34001}\n  - {name: bo, uid: 35002, gid: 34002}\n"
        "groups:\n  - {name: ledningsgrupp, gid: 34001}\n  - {name: alla, gid: 34002}\n"
    )
    pipe.label_one_folder(folder, "ledningsgrupp")
    try:
        pipe.start_and_settle()
        yield pipe, folder
    finally:
        pipe.stop()
        shutil.rmtree(base, ignore_errors=True)


def test_ten_thousand_fuzzed_messages_are_dead_lettered_with_reasons(pipeline: tuple[Pipeline, Path]) -> None:
    pipe, folder = pipeline
    messages = [m for m in fuzzed_messages(10_000, seed=7) if len(m) < BROKER_LIMIT]
    producer = KafkaProducer(bootstrap_servers=pipe.bootstrap, acks="all", linger_ms=5)
    for i, message in enumerate(messages):
        producer.send(pipe.prefix + "fs", key=f"/fuzz/{i % 97}".encode(), value=message)
    producer.flush()
    producer.close()

    letters = wait_until(
        lambda: len(pipe.reader("deadletter").read()) >= len(messages) and pipe.reader("deadletter").values,
        f"{len(messages)} dead letters",
        timeout=300,
    )
    assert len(letters) == len(messages)
    assert all(letter["reason"] and letter["stage"] == "processor" and letter["topic"] == "fs" for letter in letters)
    assert len({letter["reason"].split(":")[0] for letter in letters}) > 5
    assert pipe.procs["processor"].poll() is None, "the processor died"

    # still alive and still right
    mark = len(pipe.exposures())
    subprocess.run(["setfacl", "-m", "g:34002:rx", str(folder)], check=True)
    opened = wait_until(
        lambda: next((e for e in pipe.exposures()[mark:] if e["status"] == "opened"), None), "an exposure"
    )
    assert opened["folder"] == str(folder) and opened["groups"] == ["alla"] and opened["people"] == 1
    subprocess.run(["setfacl", "-x", "g:34002", str(folder)], check=True)
    wait_until(lambda: any(e["status"] == "closed" for e in pipe.exposures()[mark:]), "the close")
