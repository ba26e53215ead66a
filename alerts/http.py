"""One HTTP POST for the sinks that speak plain HTTP (Alertmanager, webhooks), with errors sorted for retry.

429, 408 and 5xx answers, timeouts and connection failures raise
:class:`RetryableSinkError` (with the ``Retry-After`` delay when the server
gave one); any other non-2xx answer raises :class:`PermanentSinkError`.
Messages name the scheme, host and port only: a webhook URL's path or query
may itself be a secret.
"""

from __future__ import annotations

import http.client
import urllib.request
from email.utils import parsedate_to_datetime
from urllib.error import HTTPError, URLError
from urllib.parse import urlsplit

from alerts.base import PermanentSinkError, RetryableSinkError
from permwatch.events import utcnow

_RETRYABLE_STATUS = frozenset({408, 425, 429})


def post(url: str, body: bytes, headers: dict[str, str], *, timeout: float) -> bytes:
    """POST ``body``; return the response body of a 2xx answer or raise a sink error."""
    request = urllib.request.Request(url, data=body, headers=headers, method="POST")
    where = safe_url(url)
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            answer: bytes = response.read()
            return answer
    except HTTPError as exc:
        with exc:
            detail = exc.read(300).decode("utf-8", "replace").strip().replace("\n", " ")
        message = f"{where} answered {exc.code}" + (f": {detail}" if detail else "")
        if exc.code in _RETRYABLE_STATUS or exc.code >= 500:
            raise RetryableSinkError(message, retry_after=retry_after(exc.headers.get("Retry-After"))) from None
        raise PermanentSinkError(message) from None
    except (URLError, TimeoutError, ConnectionError, http.client.HTTPException) as exc:
        reason = exc.reason if isinstance(exc, URLError) else exc
        raise RetryableSinkError(f"{where}: {type(exc).__name__}: {str(reason)[:200]}") from None


def safe_url(url: str) -> str:
    """``https://hooks.example:8443`` of ``https://user:pw@hooks.example:8443/T0/B1/secret?x=1``."""
    parts = urlsplit(url)
    host = parts.hostname or "?"
    return f"{parts.scheme}://{host}" + (f":{parts.port}" if parts.port else "")


def retry_after(value: str | None) -> float | None:
    """Seconds from a ``Retry-After`` header (delta-seconds or an HTTP date)."""
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        return max(0.0, (parsedate_to_datetime(value) - utcnow()).total_seconds())
    except (TypeError, ValueError):
        return None
