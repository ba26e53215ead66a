"""The processor's ledger of what it published (processor/ledger.py): an event log emptied or replaced under a
processor takes its exposure record with it, and the restart still continues or closes what was published."""

from __future__ import annotations

import logging
import sqlite3
from pathlib import Path

import pytest

from permwatch.config import ProcessorConfig
from permwatch.events import ExposureStatus
from permwatch.transport.embedded import EmbeddedBus
from processor.checkpoint import Checkpoints
from processor.ledger import PublishedLedger
from processor.published import PublishedRecord
from processor.runner import ProcessorRunner
from tests.unit.test_checkpoint import IDENTITY, LOGGER, clock, publish, published, run_until_idle, small_stream
from tests.unit.test_processor_restart import consistent_story

CONFIG = ProcessorConfig(group="g", batch_max=20)


def _remove_log(path: Path) -> None:
    for suffix in ("", "-wal", "-shm"):
        Path(f"{path}{suffix}").unlink(missing_ok=True)


def test_the_ledger_fills_in_only_the_folders_the_record_does_not_know(tmp_path: Path) -> None:
    events = small_stream().events
    bus = EmbeddedBus(tmp_path / "log.db")
    publish(bus, events)
    ledger = PublishedLedger(tmp_path / "p.published.db")
    run_until_idle(ProcessorRunner(bus, CONFIG, clock=clock, ledger=ledger))
    record = PublishedRecord.of(published(bus))
    assert record.last, "the stream publishes exposures"

    same = PublishedRecord.of(published(bus))
    assert PublishedLedger(ledger.path).fill(same) == 0  # on the same log: the log's record is the truth
    assert same == record

    empty = PublishedRecord()
    assert PublishedLedger(ledger.path).fill(empty) == len(record.ids)
    assert empty.ids == record.ids and empty.contents == record.contents
    assert {f: e.event_id for f, e in empty.last.items()} == {f: e.event_id for f, e in record.last.items()}
    bus.close()


def test_an_unreadable_ledger_is_left_out_with_one_warning(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    path = tmp_path / "p.published.db"
    path.write_bytes(b"not a database, " * 100)
    record = PublishedRecord()
    with caplog.at_level(logging.WARNING, logger=LOGGER):
        assert PublishedLedger(path).fill(record) == 0
    assert record == PublishedRecord()
    assert f"published ledger {path} not used (" in caplog.text


@pytest.mark.parametrize("with_ledger", [True, False], ids=["ledger", "no-ledger"])
def test_a_log_emptied_under_a_checkpoint_older_than_the_record_continues_the_published_story(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, with_ledger: bool
) -> None:
    """The checkpoint is written early, the record moves on (episodes opened and closed), then the log is
    emptied and filled again with the same changes under new event ids (as a rescan would). With the ledger, the
    old record and the new one read as one story (no exposure opened over an open one, no event after a close,
    sequences unbroken) that ends where one uninterrupted run ends; without it, they do not."""
    caplog.set_level(logging.INFO, logger=LOGGER)
    events = small_stream().events
    first_part, tail = events[:600], events[600:]
    log_path = tmp_path / "events.db"
    checkpoint_path = tmp_path / "processor.checkpoint"

    def ledger() -> PublishedLedger | None:
        return PublishedLedger(tmp_path / "processor.published.db") if with_ledger else None

    bus = EmbeddedBus(log_path)
    publish(bus, first_part)
    checkpoints = Checkpoints(checkpoint_path, IDENTITY, interval_seconds=3600, log=bus)
    run_until_idle(ProcessorRunner(bus, CONFIG, clock=clock, checkpoints=checkpoints, ledger=ledger()))
    publish(bus, tail)
    run_until_idle(ProcessorRunner(bus, CONFIG, clock=clock, ledger=ledger()))  # the checkpoint stays behind
    earlier = published(bus)
    assert any(e.status is ExposureStatus.CLOSED for e in earlier)
    bus.close()

    _remove_log(log_path)
    bus = EmbeddedBus(log_path)
    again = [e.model_copy(update={"event_id": f"again.{e.event_id}"}) for e in events]  # new records, as a rescan
    publish(bus, again)
    restarted = ProcessorRunner(
        bus, CONFIG, clock=clock, checkpoints=Checkpoints(checkpoint_path, IDENTITY, log=bus), ledger=ledger()
    )
    run_until_idle(restarted)
    assert restarted.restored is None, "the checkpoint of the earlier log was used"
    got = published(bus)

    fresh = EmbeddedBus(tmp_path / "uninterrupted.db")
    publish(fresh, again)
    run_until_idle(ProcessorRunner(fresh, CONFIG, clock=clock))
    ends_open = consistent_story(published(fresh))
    fresh.close()
    if not with_ledger:
        with pytest.raises(AssertionError, match="opened over"):
            consistent_story(earlier + got)
        bus.close()
        return
    assert consistent_story(earlier + got) == ends_open
    was_open = {
        e.exposure_id for e in PublishedRecord.of(earlier).last.values() if e.status is not ExposureStatus.CLOSED
    }
    assert was_open and not any(e.status is ExposureStatus.OPENED and e.exposure_id in was_open for e in got)
    assert "the event log's exposure record lacks" in caplog.text
    with sqlite3.connect(tmp_path / "processor.published.db") as db:
        noted = dict(db.execute("SELECT folder, sequence FROM last").fetchall())
    db.close()
    assert noted == {f: e.sequence for f, e in PublishedRecord.of(earlier + got).last.items()}
    bus.close()
