"""The processor's metrics: events handled, exposure events, restarts, checkpoints and the detection latency.

Declared here, by the stage that owns them; registered on a process's registry
as a part of its :class:`permwatch.metrics.Metrics` (``metrics.part(ProcessorMetrics)``).
Open exposures are counted at scrape time by the core (:mod:`permwatch.metrics_scrape`).
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import partial

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from permwatch.metrics import counter as new_counter
from permwatch.metrics import gauge as new_gauge

# Change observed → exposure emitted. The target is well under a second, so the
# buckets are fine between 5 and 500 ms (steps of 25-50 %) and coarse beyond.
DETECTION_LATENCY_BUCKETS = (
    0.001,
    0.0025,
    0.005,
    0.0075,
    0.01,
    0.0125,
    0.015,
    0.02,
    0.025,
    0.03,
    0.04,
    0.05,
    0.06,
    0.075,
    0.1,
    0.125,
    0.15,
    0.2,
    0.25,
    0.3,
    0.4,
    0.5,
    0.75,
    1.0,
    2.5,
    5.0,
    10.0,
    30.0,
    60.0,
)


@dataclass(frozen=True)
class ProcessorMetrics:
    """The processor's series; see each help text."""

    processor_events_handled: Counter
    processor_exposure_events: Counter
    processor_restart_seconds: Gauge
    processor_restart_replayed: Gauge
    processor_checkpoint_seconds: Gauge
    processor_checkpoint_bytes: Gauge
    detection_latency: Histogram
    processor_opens_marked: Counter

    @classmethod
    def create(cls, registry: CollectorRegistry) -> ProcessorMetrics:
        counter, gauge = partial(new_counter, registry), partial(new_gauge, registry)

        return cls(
            processor_events_handled=counter(
                "permwatch_processor_events_handled_total",
                "Input events the processor applied (replayed ones included), by topic and event type.",
                ["topic", "type"],
            ),
            processor_exposure_events=counter(
                "permwatch_processor_exposure_events_total",
                "Exposure events the processor published, by status and kind (contents: a file readable or a "
                "folder enterable; names: a folder listable, not enterable).",
                ["status", "kind"],
            ),
            processor_restart_seconds=gauge(
                "permwatch_processor_restart_seconds",
                "From the processor's start to its state being rebuilt (checkpoint loaded, history up to the commit "
                "replayed).",
            ),
            processor_restart_replayed=gauge(
                "permwatch_processor_restart_replayed_records",
                "Records the processor replayed at its last start (after the checkpoint, if one was used).",
            ),
            processor_checkpoint_seconds=gauge(
                "permwatch_processor_checkpoint_seconds",
                "How long the last state checkpoint held up the processor (taking the snapshot; writing is apart).",
            ),
            processor_checkpoint_bytes=gauge(
                "permwatch_processor_checkpoint_bytes", "Size of the last state checkpoint the processor wrote."
            ),
            detection_latency=Histogram(
                "permwatch_detection_latency_seconds",
                "From the change being observed (the cause's time) to the exposure event (detected_at - observed_at).",
                buckets=DETECTION_LATENCY_BUCKETS,
                registry=registry,
            ),
            processor_opens_marked=counter(
                "permwatch_processor_opens_marked_total",
                "Opens of a labelled folder by someone outside its label while its exposure was open, marked live "
                "(exposure.opened_by); outsider=unknown when the exposure's list of outsiders was cut (issue 18).",
                ["outsider"],
            ),
        )
