"""Issue 7: the Kafka broker stopped for 30 s while 10,000 permission changes happen, then started:
every path's changes reach the processor, in order, ending in its final state.

The collector's flush gets no acknowledgement within 10 s, so it spools to local disk
(:mod:`permwatch.transport.spool`); what the producer already held it keeps retrying, and the spool
is drained after it, in order, once the broker is back. Outages longer than the producer's delivery
timeout and a spool that fills up are tested in ``test_collector_spool.py``.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.integration.pipeline import Pipeline, wait_until
from tests.integration.servers.kafka import KafkaBroker

pytestmark = pytest.mark.integration

FILES, ROUNDS = 1000, 10
MODES = [0o600, 0o640, 0o644, 0o604, 0o660, 0o664, 0o606, 0o620, 0o624, 0o642]  # one per round, all distinct


@pytest.fixture
def share() -> Iterator[Path]:
    base = Path(tempfile.mkdtemp(prefix="permwatch-outage-"))
    os.chmod(base, 0o755)
    try:
        yield base / "share"
    finally:
        shutil.rmtree(base, ignore_errors=True)


def test_broker_outage_loses_and_reorders_nothing(kafka_broker: KafkaBroker, share: Path, tmp_path: Path) -> None:
    folder = share / "ledning"
    folder.mkdir(parents=True)
    os.chmod(share, 0o755)
    files = [folder / f"doc-{i:04d}.txt" for i in range(FILES)]
    for path in files:
        path.write_text("x")
        os.chmod(path, 0o600)
    pipe = Pipeline(tmp_path, kafka_broker.bootstrap, f"outage{os.getpid()}.", share=share)
    pipe.directory_path.write_text("users: []\ngroups: [{name: ledningsgrupp, gid: 38001}]\n")
    pipe.label_one_folder(folder, "ledningsgrupp")
    try:
        pipe.start_and_settle()
        published_before = {e["event_id"] for e in pipe.fs_events()}
        pipe.close_readers()  # no client of the test's own keeps knocking while the broker is down
        kafka_broker.stop()
        down_at = time.monotonic()
        for mode in MODES:  # 10 rounds over 1,000 files: 10,000 changes while the broker is down
            for path in files:
                os.chmod(path, mode)
        time.sleep(max(0.0, 30 - (time.monotonic() - down_at)))  # the outage lasts 30 s, as the issue asks
        kafka_broker.start()

        final = {str(path): MODES[-1] for path in files}

        def last_modes() -> dict[str, int]:
            seen: dict[str, int] = {}
            for event in pipe.fs_events():
                if event["event_id"] not in published_before and event.get("path") in final:
                    seen[event["path"]] = event["mode"]
            return seen

        wait_until(lambda: last_modes() == final, "every file's final mode on the bus", timeout=300)
        pipe.wait_quiet()
        assert "spooling to" in pipe.log("collector") and "spool drained" in pipe.log("collector")
        for role in ("collector", "processor"):
            assert pipe.procs[role].poll() is None, f"the {role} stopped during the outage"
            assert "Traceback" not in pipe.log(role), pipe.log(role)[-3000:]
        order = {mode: i for i, mode in enumerate(MODES)}
        by_path: dict[str, list[int]] = {}
        for event in pipe.fs_events():
            if event["event_id"] not in published_before and event.get("path") in final:
                by_path.setdefault(event["path"], []).append(order.get(event["mode"], -1))
        for path, sequence in by_path.items():
            assert sequence == sorted(sequence), f"{path}: changes out of order {sequence}"
            assert -1 not in sequence, f"{path}: a mode that was never set"
    finally:
        pipe.stop()
        if not kafka_broker.running:
            kafka_broker.start()
