"""Shared set-up for the benchmarks: a real Kafka broker and a labelled share on real files.

Benchmarks reuse the integration-test rig (``tests/integration``) so the
figures come from the same real components the tests use.
"""

from __future__ import annotations

import os
import shutil
import sys
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests.integration.servers.kafka import KafkaBroker


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


@contextmanager
def traversable_tmpdir(prefix: str) -> Iterator[Path]:
    """A temporary directory that others may traverse, like a real share's parents."""
    base = Path(tempfile.mkdtemp(prefix=prefix))
    os.chmod(base, 0o755)
    try:
        yield base
    finally:
        shutil.rmtree(base, ignore_errors=True)
