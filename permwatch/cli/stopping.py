"""Stop requests: SIGINT and SIGTERM turned into a stop flag from the first moment of ``permwatch run``.

Python's own SIGINT handler raises KeyboardInterrupt wherever the main thread
happens to be, and SIGTERM's default ends the process on the spot; during
start-up either leaves stages half started (and threads running into the
interpreter's exit). :class:`StopRequest` is installed before anything else
is loaded, only sets a :class:`threading.Event` and notes which signal asked,
and the CLI reads both: a start-up that sees the flag stops before starting
more, a running process shuts its stages down, and either logs ``stopping
(SIGTERM)`` and exits 0. Nothing is logged from the handler itself: it runs
between two bytecodes of the main thread, which may be holding the logging
lock at that moment.
"""

from __future__ import annotations

import signal
import threading
from types import FrameType
from typing import Any

SIGNALS = (signal.SIGINT, signal.SIGTERM)


class StopRequest:
    """Set by SIGINT or SIGTERM once :meth:`install` ran; :attr:`signal_name` says which one came first."""

    def __init__(self) -> None:
        self.event = threading.Event()
        self.signal_name: str | None = None
        self._previous: dict[int, Any] = {}

    @property
    def installed(self) -> bool:
        return bool(self._previous)

    def install(self) -> None:
        for signum in SIGNALS:
            self._previous[signum] = signal.signal(signum, self._on_signal)

    def restore(self) -> None:
        for signum, handler in self._previous.items():
            signal.signal(signum, handler)
        self._previous.clear()

    def _on_signal(self, signum: int, frame: FrameType | None) -> None:
        if self.signal_name is None:
            self.signal_name = signal.Signals(signum).name
        self.event.set()
