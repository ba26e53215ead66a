"""Shared set-up for the benchmarks: a real Kafka broker, and a temporary share others may traverse.

Benchmarks reuse the integration-test rig (``tests/integration``) so the
figures come from the same real components the tests use.
"""

from __future__ import annotations

import shutil
import sys
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests.integration.pipeline import traversable_tempdir
from tests.integration.servers.kafka import KafkaBroker

__all__ = ["kafka_broker", "traversable_tempdir"]


@contextmanager
def kafka_broker() -> Iterator[KafkaBroker]:
    workdir = Path(tempfile.mkdtemp(prefix="permwatch-bench-kafka-"))
    broker = KafkaBroker(workdir)
    try:
        broker.start()
        yield broker
    finally:
        broker.stop()
        shutil.rmtree(workdir, ignore_errors=True)
