"""Prometheus metrics of a process: one :class:`Metrics` object built from a registry passed in.

``Metrics.create(registry)`` registers what the core owns (the roles a process
runs, dead letters, open exposures, consumer lag); each stage declares its own
metrics as a *part* (``collectors.metrics``, ``processor.metrics``,
``alerts.metrics``: a frozen dataclass with ``create(registry)``), reached as
``metrics.part(ProcessorMetrics)`` and registered on first use. The CLI
registers every stage's part at start (:func:`permwatch.cli.wiring.process_metrics`),
so a process that does not run a stage exports that stage's labelled metrics
without series and its unlabelled ones (the latency histogram) at zero, and
tests check the dashboard and the alert rules against exactly these names. Names follow Prometheus conventions:
``permwatch_<thing>_<unit>``, ``_total`` for counters, ``_seconds`` for
durations. Open exposures and consumer lag are computed at scrape time
(:mod:`permwatch.metrics_scrape`).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any, Protocol, TypeVar

from prometheus_client import CollectorRegistry, Counter, Gauge

from permwatch.metrics_scrape import ConsumerLag, OpenExposures


def counter(registry: CollectorRegistry, name: str, doc: str, labels: Iterable[str] = ()) -> Counter:
    """A counter registered on ``registry`` (for the stages' parts: ``partial(counter, registry)``)."""
    return Counter(name, doc, list(labels), registry=registry)


def gauge(registry: CollectorRegistry, name: str, doc: str, labels: Iterable[str] = ()) -> Gauge:
    """A gauge registered on ``registry``."""
    return Gauge(name, doc, list(labels), registry=registry)


class MetricsPart(Protocol):
    """A stage's metrics: built and registered on ``registry`` by ``create``."""

    @classmethod
    def create(cls, registry: CollectorRegistry) -> Any: ...


PartT = TypeVar("PartT")


@dataclass(frozen=True)
class Metrics:
    """The core's metrics, registered on ``registry``, and the stages' parts; see each help text."""

    registry: CollectorRegistry
    role_info: Gauge
    dead_letters: Counter
    open_exposures: OpenExposures
    consumer_lag: ConsumerLag
    _parts: dict[type, Any] = field(default_factory=dict, repr=False)
    _parts_lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    @classmethod
    def create(
        cls, registry: CollectorRegistry, *, clock: Callable[[], float] = time.time, parts: Iterable[type] = ()
    ) -> Metrics:
        """The core's metrics, and each of ``parts`` (stage metrics classes) registered now."""
        open_exposures = OpenExposures(clock)
        consumer_lag = ConsumerLag()
        registry.register(open_exposures)
        registry.register(consumer_lag)
        metrics = cls(
            registry=registry,
            role_info=Gauge("permwatch_role_info", "1 for each role this process runs.", ["role"], registry=registry),
            dead_letters=Counter(
                "permwatch_dead_letters_total",
                "Records sent to the deadletter topic, by stage and reason class.",
                ["stage", "reason"],
                registry=registry,
            ),
            open_exposures=open_exposures,
            consumer_lag=consumer_lag,
        )
        for kind in parts:
            metrics.part(kind)
        return metrics

    def part(self, kind: type[PartT]) -> PartT:
        """The metrics a stage declares in ``kind``, registered on this registry the first time they are asked
        for."""
        with self._parts_lock:
            if kind not in self._parts:
                self._parts[kind] = kind.create(self.registry)  # type: ignore[attr-defined]
            part: PartT = self._parts[kind]
            return part

    def close(self) -> None:
        """Release what scrape-time metrics hold (the lag probes' bus clients)."""
        self.consumer_lag.close()
