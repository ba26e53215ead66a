"""``permwatch run``'s exit status: a stage that fails is a failure (an event log error in one line), a requested
stop is not, from the first moment of start-up."""

from __future__ import annotations

import logging
import os
import signal
import sqlite3
import threading
from pathlib import Path
from typing import Any

import pytest
from prometheus_client import generate_latest

from permwatch.cli.stopping import StopRequest
from permwatch.cli.wiring import run_roles, start_roles
from permwatch.config import Config, EmbeddedConfig, TransportConfig
from permwatch.transport.base import EventLogError
from processor.runner import ProcessorRunner


def config(tmp_path: Path) -> Config:
    return Config(state_dir=tmp_path / "state", transport=TransportConfig(embedded=EmbeddedConfig(path=tmp_path / "l")))


def test_a_stage_stopped_by_an_error_makes_the_process_fail(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    def broken(self: ProcessorRunner, stop: threading.Event) -> None:
        raise RuntimeError("the disk went away")

    monkeypatch.setattr(ProcessorRunner, "run", broken)
    assert run_roles(config(tmp_path), "processor") == 1
    assert "processor stopped by an error" in caplog.text
    assert "stopped because processor failed" in caplog.text


def test_a_requested_stop_is_a_clean_exit(tmp_path: Path) -> None:
    assert run_roles(config(tmp_path), "processor", until=lambda: True) == 0


def test_an_event_log_error_stops_the_process_with_one_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    def full(self: ProcessorRunner, stop: threading.Event) -> None:
        raise EventLogError("event log /x/events.db: database or disk is full")

    monkeypatch.setattr(ProcessorRunner, "run", full)
    assert run_roles(config(tmp_path), "processor") == 1
    stopped = [r for r in caplog.records if "processor stopped" in r.getMessage()]
    assert [r.getMessage() for r in stopped] == ["processor stopped: event log /x/events.db: database or disk is full"]
    assert stopped[0].exc_info is None  # no traceback: the line says it all


def test_a_signal_from_the_first_moment_is_a_clean_stop(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO)
    before = signal.getsignal(signal.SIGTERM)
    request = StopRequest()
    request.install()
    try:
        os.kill(os.getpid(), signal.SIGTERM)  # before the config is even read: the handler only sets the flag
        assert request.event.wait(5) and request.signal_name == "SIGTERM"
        assert run_roles(config(tmp_path), "processor", stop=request) == 0
    finally:
        request.restore()
    assert "stopping (SIGTERM) before the stages started" in caplog.text
    assert signal.getsignal(signal.SIGTERM) is before


def test_a_signal_during_start_up_starts_no_more_stages(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    request = StopRequest()
    ran: list[str] = []

    def signalled_while_starting(self: ProcessorRunner, stop: threading.Event) -> None:
        ran.append("processor")

    monkeypatch.setattr(ProcessorRunner, "run", signalled_while_starting)
    monkeypatch.setattr(ProcessorRunner, "__init__", _signal_then(request, ProcessorRunner.__init__))
    assert run_roles(config(tmp_path), "all", stop=request) == 0
    assert "stopping (SIGINT) during start-up" in caplog.text and "stopped (SIGINT)" in caplog.text
    assert "alerts started" not in caplog.text  # the stage after the signal was never started


def _signal_then(request: StopRequest, init: Any) -> Any:
    def wrapped(self: ProcessorRunner, *args: Any, **kwargs: Any) -> None:
        request._on_signal(signal.SIGINT, None)  # as the handler would, while the processor is being built
        init(self, *args, **kwargs)

    return wrapped


def test_an_event_log_found_damaged_by_a_metrics_scrape_stops_the_process(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    log_path = tmp_path / "l"
    running = start_roles(config(tmp_path), "processor")
    try:
        garbage = tmp_path / "garbage"
        garbage.write_bytes(b"\x5a" * 65536)
        os.replace(garbage, log_path)  # the running stages keep the old file open; a new connection meets this
        for suffix in ("-wal", "-shm"):  # (whose pages the WAL would otherwise still supply)
            Path(f"{log_path}{suffix}").unlink()
        generate_latest(running.metrics.registry)  # a scrape answers (without the lag), never a 500
        assert running.stop.wait(5) and "metrics" in running.failed  # (the processor may meet it too)
        generate_latest(running.metrics.registry)
    finally:
        running.shutdown()
    lines = [r for r in caplog.records if r.getMessage().startswith("metrics stopped: ")]
    assert len(lines) == 1 and lines[0].exc_info is None
    assert lines[0].getMessage().startswith(f"metrics stopped: event log {log_path} is damaged (")


def test_a_stage_whose_own_state_finds_the_disk_full_stops_the_process_with_one_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    def full(self: ProcessorRunner, stop: threading.Event) -> None:
        store = sqlite3.connect(tmp_path / "store.db")  # a stage's own SQLite store, on a disk that is full
        store.execute("CREATE TABLE t (v BLOB)")
        store.execute("PRAGMA max_page_count = 3")
        store.execute("INSERT INTO t VALUES (?)", [bytes(100_000)])

    monkeypatch.setattr(ProcessorRunner, "run", full)
    assert run_roles(config(tmp_path), "processor") == 1
    stopped = [r for r in caplog.records if r.getMessage().startswith("processor stopped")]
    assert [r.getMessage() for r in stopped] == [
        f"processor stopped: no room to write its state under {tmp_path / 'state'}: database or disk is full"
    ]
    assert stopped[0].exc_info is None
