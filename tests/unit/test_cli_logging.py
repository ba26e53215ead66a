"""The Kafka client's recovered errors are one log line, whichever of its loggers logs them; ours keep a traceback."""

from __future__ import annotations

import logging

import pytest

from permwatch.cli import _setup_logging


def test_a_kafka_child_loggers_traceback_is_one_line(capsys: pytest.CaptureFixture[str]) -> None:
    root = logging.getLogger()
    saved, root.handlers = root.handlers[:], []  # (pytest's own are in place by now: basicConfig would do nothing)
    try:
        _setup_logging("info")
        try:
            raise AttributeError("'NoneType' object has no attribute 'recv'")
        except AttributeError:
            logging.getLogger("kafka.net.transport").exception("Error receiving network data closing socket")
            logging.getLogger("permwatch.processor").exception("ours")
    finally:
        for handler in root.handlers:
            handler.close()
        root.handlers = saved
    err = capsys.readouterr().err
    kafka_line = next(line for line in err.splitlines() if "kafka.net.transport" in line)
    assert kafka_line.endswith(
        "Error receiving network data closing socket (AttributeError: 'NoneType' object has no attribute 'recv')"
    )
    assert err.count("Traceback") == 1 and err.index("ours") < err.index("Traceback")
