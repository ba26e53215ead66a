"""Settings every collector of a process shares: the ``[collector]`` table (today, the spool)."""

from __future__ import annotations

from pathlib import Path

from pydantic import Field

from permwatch.config import Section


class SpoolConfig(Section):
    """Where a collector keeps events while Kafka is unreachable (see :mod:`collectors.spool`).

    Only for ``transport.kind = "kafka"`` or ``"confluent"``: the embedded log is local
    already. A full spool drops events and the collectors rescan once it has drained.
    """

    enabled: bool = True
    path: Path | None = Field(default=None, description="a directory; default: spool/ under state_dir")
    max_bytes: int = Field(default=256 * 1024 * 1024, ge=4096, description="bound on the spool's files")
    flush_timeout_seconds: float = Field(
        default=2.0,
        gt=0,
        le=3600,
        description="how long a flush waits for Kafka before spooling; the collector reads no change meanwhile, "
        "so two changes of one path in that time show only as the later one",
    )


class CollectorConfig(Section):
    """Settings shared by every collector of a process."""

    spool: SpoolConfig = SpoolConfig()
