"""The sink protocol and its errors.

A sink turns an exposure event into a payload with a pure :meth:`Sink.render`
(tests compare it exactly) and delivers it with a thin :meth:`Sink.send`.
``send`` raises :class:`RetryableSinkError` for what may pass (timeouts,
rate limits, 5xx) and :class:`PermanentSinkError` for what will not; the
dispatcher retries the first with backoff and dead-letters the second.
Payloads carry paths, group names and counts, never file contents or secrets.
"""

from __future__ import annotations

from typing import Any, Protocol

from permwatch.events import ExposureEvent


class SinkError(Exception):
    """Delivery failed."""


class RetryableSinkError(SinkError):
    def __init__(self, message: str, *, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class PermanentSinkError(SinkError):
    pass


class Sink(Protocol):
    name: str

    def render(self, exposure: ExposureEvent) -> Any: ...

    def send(self, payload: Any) -> None: ...
