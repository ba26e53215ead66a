"""A checkpoint bound to the log it describes (processor/log_fit.py): a checkpoint truncated or deleted, and an
event log emptied, replaced or put back to an older copy, each make the processor rebuild from the log's history
(with one warning naming what happened) and end exactly where a processor that never had a checkpoint ends."""

from __future__ import annotations

import logging
import shutil
import sqlite3
import threading
from pathlib import Path

import pytest

from permwatch.config import ProcessorConfig
from permwatch.events import AnyEvent
from permwatch.transport.embedded import EmbeddedBus
from processor.checkpoint import Checkpoints
from processor.engine import Engine
from processor.log_fit import LogMismatch, check_fits
from processor.runner import ProcessorRunner
from tests.unit.test_checkpoint import (
    IDENTITY,
    LOGGER,
    as_events,
    clock,
    fingerprint,
    publish,
    published,
    run_until_idle,
    small_stream,
)

CONFIG = ProcessorConfig(group="g", batch_max=20)


class _Log:
    """A log as :func:`check_fits` sees it."""

    def __init__(self, ranges: dict[tuple[str, int], tuple[int, int]] | None, log_id: str | None = None) -> None:
        self.ranges, self._log_id = ranges, log_id

    @property
    def log_id(self) -> str | None:
        return self._log_id

    def describe(self) -> str:
        return "the log"

    def offset_ranges(self, topics: object) -> dict[tuple[str, int], tuple[int, int]] | None:
        return self.ranges


def test_what_fits_and_what_does_not() -> None:
    saved = {("fs", 0): 40, ("labels", 0): 12}
    check_fits(saved, "a", _Log({("fs", 0): (1, 40), ("labels", 0): (2, 40)}, "a"))  # at the end exactly
    check_fits(saved, "a", _Log({("fs", 0): (50, 60), ("labels", 0): (50, 60)}, "a"))  # older records deleted
    check_fits(saved, None, _Log(None, "a"))  # a log that cannot say now is taken at the checkpoint's word
    check_fits(saved, None, _Log({("fs", 0): (1, 90), ("labels", 0): (1, 90)}))  # Kafka: no id, offsets fit
    check_fits({}, None, _Log({("fs", 0): (1, 1)}, "b"))  # nothing saved, nothing to fit
    check_fits(saved, None, _Log({("fs", 0): (40, 40), ("labels", 0): (12, 12)}))  # a retention took it all
    with pytest.raises(LogMismatch, match=r"^the log holds no records, the checkpoint covers fs/0 up to 40, "):
        check_fits(saved, "a", _Log({("fs", 0): (7, 7), ("labels", 0): (7, 7)}, "b"))
    with pytest.raises(LogMismatch, match=r"\(log id a, this one b\): it was replaced$"):
        check_fits(saved, "a", _Log({("fs", 0): (1, 90), ("labels", 0): (1, 90)}, "b"))
    with pytest.raises(LogMismatch, match=r"\(log id not recorded, this one b\)"):
        check_fits(saved, None, _Log({("fs", 0): (1, 90), ("labels", 0): (1, 90)}, "b"))
    with pytest.raises(LogMismatch, match=r"^the log has no partition labels/0: it was replaced$"):
        check_fits(saved, None, _Log({("fs", 0): (1, 90), ("fs", 1): (1, 90)}))
    with pytest.raises(LogMismatch, match=r"older than the checkpoint \(fs/0 ends at 30, checkpoint at 40\)"):
        check_fits(saved, "a", _Log({("fs", 0): (1, 30), ("labels", 0): (1, 30)}, "a"))


def test_the_embedded_log_has_an_identity_of_its_own(tmp_path: Path) -> None:
    bus = EmbeddedBus(tmp_path / "log.db")
    assert bus.offset_ranges(["fs", "labels"]) == {("fs", 0): (1, 1), ("labels", 0): (1, 1)}
    for topic in ("labels", "fs", "fs"):
        bus.publish(topic, None, b"x")
    bus.flush()
    assert bus.offset_ranges(["fs", "labels"]) == {("fs", 0): (2, 4), ("labels", 0): (1, 4)}
    first = bus.log_id
    bus.close()
    again = EmbeddedBus(tmp_path / "log.db")
    assert again.log_id == first and len(first) == 32
    assert EmbeddedBus(tmp_path / "other.db").log_id != first
    again.close()


def open_ids(engine: Engine) -> dict[str, str]:
    return {folder: r.open.exposure_id for folder, r in engine.tracker.folders.items() if r.open is not None}


def _backup(source: Path, target: Path) -> None:
    """A consistent copy of a live SQLite file (what an operator's backup would hold)."""
    with sqlite3.connect(source) as src, sqlite3.connect(target) as dst:
        src.backup(dst)
    src.close()
    dst.close()


def _remove_log(path: Path) -> None:
    for suffix in ("", "-wal", "-shm"):
        Path(f"{path}{suffix}").unlink(missing_ok=True)


CASES = ["truncated", "emptied-checkpoint", "deleted-checkpoint", "emptied-log", "replaced-log", "older-log"]


@pytest.mark.parametrize("case", CASES)
def test_a_checkpoint_that_no_longer_fits_is_not_used_and_the_state_is_rebuilt_from_the_log(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, case: str
) -> None:
    caplog.set_level(logging.INFO, logger=LOGGER)
    events = small_stream().events
    first_part, tail = events[:600], events[600:900]
    log_path, path = tmp_path / "events.db", tmp_path / "processor.checkpoint"
    bus = EmbeddedBus(log_path)

    def checkpoints(on: EmbeddedBus) -> Checkpoints:
        return Checkpoints(path, IDENTITY, interval_seconds=3600, log=on)

    publish(bus, first_part)
    run_until_idle(ProcessorRunner(bus, CONFIG, clock=clock, checkpoints=checkpoints(bus)))
    _backup(log_path, tmp_path / "backup.db")
    publish(bus, tail)
    before = ProcessorRunner(bus, CONFIG, clock=clock, checkpoints=checkpoints(bus))
    run_until_idle(before)  # its checkpoint covers both parts

    later: list[
        AnyEvent
    ] = []  # records published once the restarted processor runs (into a fresh log, as a rescan would)
    if case == "truncated":
        path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    elif case == "emptied-checkpoint":
        path.write_bytes(b"")
    elif case == "deleted-checkpoint":
        path.unlink()
    else:
        bus.close()
        _remove_log(log_path)
        if case == "older-log":
            shutil.copy(tmp_path / "backup.db", log_path)
        bus = EmbeddedBus(log_path)
        if case == "replaced-log":
            publish(bus, first_part)
        if case == "emptied-log":
            later = first_part + tail

    restarted = ProcessorRunner(bus, CONFIG, clock=clock, checkpoints=checkpoints(bus))
    stop = threading.Event()
    thread = threading.Thread(target=restarted.run, args=(stop,))
    thread.start()
    try:
        assert restarted.caught_up.wait(30)
        assert restarted.restored is None, "the checkpoint was used"
        publish(bus, later)
        done = threading.Event()
        for _ in range(600):  # until the restarted processor has judged what came after it started
            if restarted.records_covered >= len(list(bus.history(["fs", "directory", "labels"]))):
                done.set()
                break
            stop.wait(0.05)
        assert done.is_set(), "the restarted processor did not judge the records published after its start"
    finally:
        stop.set()
        thread.join(30)

    warnings = [
        r.getMessage() for r in caplog.records if "checkpoint" in r.getMessage() and "not used" in r.getMessage()
    ]
    expected_warning = {
        "truncated": "truncated or corrupt",
        "emptied-checkpoint": "not a checkpoint file",
        "deleted-checkpoint": None,
        "emptied-log": f"event log {log_path} holds no records",
        "replaced-log": f"event log {log_path} is not the log the checkpoint was written for",
        "older-log": f"event log {log_path} is older than the checkpoint",
    }[case]
    if expected_warning is None:
        assert f"no checkpoint at {path}: replaying all history" in caplog.text
    else:
        assert len(warnings) == 1 and expected_warning in warnings[0], warnings
        assert warnings[0].endswith(("replaying all history", "rebuilding from the log's history"))

    if case in ("emptied-log", "replaced-log"):
        # a fresh log's records are all new: what they open is published once, as one uninterrupted run would
        fresh = EmbeddedBus(tmp_path / "uninterrupted.db")
        publish(fresh, first_part + later if case == "replaced-log" else later)
        run_until_idle(ProcessorRunner(fresh, CONFIG, clock=clock))
        got = published(bus)
        assert len(got) > 10 and len({e.event_id for e in got}) == len(got)
        assert as_events(got) == as_events(published(fresh))
        fresh.close()
    # the checkpoint turned down for its log still tells what was open (and published) before
    store = restarted.checkpoints
    assert store is not None
    if case.endswith("-log"):
        assert store.superseded is not None and open_ids(store.superseded.engine) == open_ids(before.engine)
        assert open_ids(before.engine)  # (something was open to tell)
    else:
        assert store.superseded is None
    # the state is what a processor that never had a checkpoint rebuilds from this log
    reference = ProcessorRunner(bus, CONFIG, clock=clock)  # the same group, all committed: a full replay
    run_until_idle(reference)
    assert fingerprint(restarted.engine) == fingerprint(reference.engine)
    bus.close()
