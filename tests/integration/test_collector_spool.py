"""Issue 7: a collector that cannot reach Kafka spools to local disk and drains in order when Kafka returns.

(a) The broker stays down well past the producer's delivery timeout (set to
8 s here, so the producer gives up on what it holds) while thousands of
permissions change: the metrics and the log say the collector is spooling,
and after the broker's return every path's changes reach the bus in order.
(b) A spool of 16 KiB fills up: the log says it drops, and after the
broker's return the collector rescans (``ScanCompleted`` with reason
``spool_overflow``) and every path's final state, deletions included, is on
the bus.
"""

from __future__ import annotations

import os
import re
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.integration.pipeline import Pipeline, tracebacks, traversable_tempdir, wait_until
from tests.integration.servers.kafka import KafkaBroker

pytestmark = pytest.mark.integration

DELIVERY_TIMEOUT = 8
MODES = [0o600, 0o640, 0o644, 0o604, 0o660]  # one per round, all distinct


@pytest.fixture
def share() -> Iterator[Path]:
    with traversable_tempdir("permwatch-spool-") as base:
        yield base / "share"


def make_files(share: Path, count: int) -> tuple[Path, list[Path]]:
    folder = share / "ledning"
    folder.mkdir(parents=True)
    os.chmod(share, 0o755)
    files = [folder / f"doc-{i:04d}.txt" for i in range(count)]
    for path in files:
        path.write_text("x")
        os.chmod(path, 0o600)
    return folder, files


def pipeline(kafka_broker: KafkaBroker, share: Path, tmp_path: Path, folder: Path, spool: str) -> Pipeline:
    pipe = Pipeline(
        tmp_path,
        kafka_broker.bootstrap,
        f"spool{os.getpid()}{time.monotonic_ns() % 10**6}.",
        share=share,
        config_extra=f'[metrics]\nlisten = "127.0.0.1:0"\n[collector.spool]\nflush_timeout_seconds = 2\n{spool}',
    )
    pipe.directory_path.write_text("users: []\ngroups: [{name: ledningsgrupp, gid: 38001}]\n")
    pipe.label_one_folder(folder, "ledningsgrupp")
    return pipe


def fs_changes(pipe: Pipeline, since: set[str], paths: set[str]) -> dict[str, list[int]]:
    """Each path's modes in bus order, from events not in ``since`` (deletions as -1)."""
    by_path: dict[str, list[int]] = {}
    for event in pipe.fs_events():
        if event["event_id"] in since or event.get("path") not in paths:
            continue
        by_path.setdefault(event["path"], []).append(-1 if event["kind"] == "deleted" else event["mode"])
    return by_path


def check_healthy(pipe: Pipeline) -> None:
    for role in ("collector", "processor"):
        assert pipe.procs[role].poll() is None, f"the {role} stopped during the outage"
        assert not tracebacks(pipe.log(role)), tracebacks(pipe.log(role))


def test_a_long_outage_is_spooled_and_drained_in_order(
    kafka_broker: KafkaBroker, share: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PERMWATCH__TRANSPORT__KAFKA__DELIVERY_TIMEOUT_SECONDS", str(DELIVERY_TIMEOUT))
    folder, files = make_files(share, 1000)
    pipe = pipeline(kafka_broker, share, tmp_path, folder, "")
    try:
        pipe.start_and_settle()
        published_before = {e["event_id"] for e in pipe.fs_events()}
        pipe.close_readers()  # no client of the test's own keeps knocking while the broker is down
        kafka_broker.stop()
        down_at = time.monotonic()
        for mode in MODES:  # 5 rounds over 1,000 files: 5,000 changes while the broker is down
            for path in files:
                os.chmod(path, mode)
            time.sleep(0.5)
        wait_until(lambda: "kafka unreachable" in pipe.log("collector"), "the collector to start spooling", 30)
        spooling = wait_until(
            lambda: (m := pipe.spool_metrics()) and m.get("permwatch_spool_records", 0) > 0 and m,
            "spooled records",
        )
        assert spooling["permwatch_spool_spooling"] == 1 and spooling["permwatch_spool_bytes"] > 0
        # Past the producer's delivery timeout, twice over: what it held has failed and waits in the spool.
        time.sleep(max(0.0, 3 * DELIVERY_TIMEOUT - (time.monotonic() - down_at)))
        spooled = pipe.spool_metrics()["permwatch_spool_records"]
        up_at = time.monotonic()
        kafka_broker.start()

        drained = wait_until(
            lambda: re.search(r"spool drained: (\d+) records in ([\d.]+) s", pipe.log("collector")), "the drain", 120
        )
        drain_seconds = time.monotonic() - up_at
        final = {str(path): MODES[-1] for path in files}
        wait_until(
            lambda: {p: modes[-1] for p, modes in fs_changes(pipe, published_before, set(final)).items()} == final,
            "every file's final mode on the bus",
            timeout=120,
        )
        pipe.wait_quiet()
        check_healthy(pipe)
        after = pipe.spool_metrics()
        assert after["permwatch_spool_spooling"] == 0 and after["permwatch_spool_records"] == 0
        assert after["permwatch_spool_drained_total"] >= spooled
        assert after.get('permwatch_spool_dropped_total{reason="full"}', 0) == 0
        order = {mode: i for i, mode in enumerate(MODES)}
        for name, modes in fs_changes(pipe, published_before, set(final)).items():
            sequence = [order.get(mode, -1) for mode in modes]
            assert -1 not in sequence, f"{name}: a mode that was never set {modes}"
            assert sequence == sorted(sequence), f"{name}: changes out of order {sequence}"
        print(
            f"\nspooled {spooled:.0f} records; drained {drained.group(1)} in {drained.group(2)} s "
            f"({drain_seconds:.1f} s from the broker's start)"
        )
    finally:
        pipe.stop()
        if not kafka_broker.running:
            kafka_broker.start()


def test_a_full_spool_drops_and_the_collector_rescans_after_recovery(
    kafka_broker: KafkaBroker, share: Path, tmp_path: Path
) -> None:
    folder, files = make_files(share, 500)
    pipe = pipeline(kafka_broker, share, tmp_path, folder, "max_bytes = 16384\n")
    try:
        pipe.start_and_settle()
        published_before = {e["event_id"] for e in pipe.fs_events()}
        pipe.close_readers()
        kafka_broker.stop()
        for mode in MODES:
            for path in files:
                os.chmod(path, mode)
            time.sleep(0.3)
        gone = files[:20]
        for path in gone:
            path.unlink()
        born = folder / "new.txt"
        born.write_text("x")
        os.chmod(born, 0o640)
        wait_until(lambda: "spool full (max_bytes=16384): dropping" in pipe.log("collector"), "the spool to fill", 60)
        dropped = wait_until(
            lambda: pipe.spool_metrics().get('permwatch_spool_dropped_total{reason="full"}', 0),
            "drops counted",
        )
        time.sleep(2)
        kafka_broker.start()

        scans = wait_until(
            lambda: [
                e for e in pipe.fs_events() if e.get("type") == "fs.scan_completed" and e["reason"] == "spool_overflow"
            ],
            "a spool_overflow rescan on the bus",
            timeout=120,
        )
        assert scans[0]["root"] == str(share)
        final = {str(path): MODES[-1] for path in files if path not in gone} | {str(path): -1 for path in gone}
        final[str(born)] = 0o640
        wait_until(
            lambda: {p: modes[-1] for p, modes in fs_changes(pipe, published_before, set(final)).items()} == final,
            "every path's final state on the bus",
            timeout=60,
        )
        pipe.wait_quiet()
        check_healthy(pipe)
        log = pipe.log("collector")
        assert "spool drained:" in log and "asking the collectors to rescan" in log
        assert not (tmp_path / "state" / "spool" / "rescan-needed").exists()
        print(f"\n{dropped:.0f} records dropped by the full spool; rescan: {scans[0]['paths_changed']} changed")
    finally:
        pipe.stop()
        if not kafka_broker.running:
            kafka_broker.start()
