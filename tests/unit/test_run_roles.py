"""``permwatch run``'s exit status: a stage that fails is a failure, a requested stop is not."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest

from permwatch.cli.wiring import run_roles
from permwatch.config import Config, EmbeddedConfig, TransportConfig
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
