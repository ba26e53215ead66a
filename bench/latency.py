"""Detection latency: a permission change on a real file → the exposure event on Kafka.

Runs the collector and the processor as separate ``permwatch run`` processes
on a real Kafka broker, then makes N changes one after another on a labelled
folder (``chmod o+rx`` / ``o-rx`` alternately, so every change opens or
closes an exposure) and times each from just before the chmod until the
exposure event is read back from the exposures topic. Prints p50/p90/p99 and
the maximum; the last line is one JSON object. Target: p99 ≤ 200 ms.

It also scrapes the processor's ``/metrics`` at the end and computes p50/p99
from the detection-latency histogram (``permwatch_detection_latency_seconds``,
change observed → exposure emitted) the way Prometheus's
``histogram_quantile`` does, and says whether each agrees within one bucket
with the bench's own clock over the same span: from the chmod to the moment
the processor emitted the exposure (its ``detected_at``). The collector stamps
a change with the time inotify reported it, before the coalescing window, so
the histogram's span starts within a millisecond of the chmod.

    .venv/bin/python bench/latency.py [--changes 1000]
"""

from __future__ import annotations

import argparse
import json
import math
import os
import re
import statistics
import time
import urllib.request
from bisect import bisect_left
from datetime import datetime

from _rig import kafka_broker, traversable_tempdir
from prometheus_client.parser import text_string_to_metric_families

from tests.integration.pipeline import Pipeline, wait_until


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


HISTOGRAM = "permwatch_detection_latency_seconds"


def scrape_buckets(url: str) -> list[tuple[float, float]]:
    """(upper bound, cumulative count) of the detection-latency histogram, +Inf last."""
    with urllib.request.urlopen(url, timeout=10) as response:
        text = response.read().decode()
    for family in text_string_to_metric_families(text):
        if family.name == HISTOGRAM:
            buckets = [(float(s.labels["le"]), s.value) for s in family.samples if s.name == f"{HISTOGRAM}_bucket"]
            return sorted(buckets)
    raise SystemExit(f"{url} exports no {HISTOGRAM}")


def histogram_quantile(q: float, buckets: list[tuple[float, float]]) -> float:
    """Prometheus's estimate: linear interpolation inside the bucket holding rank q·count."""
    count = buckets[-1][1]
    if count == 0:
        return math.nan
    rank = q * count
    lower, below = 0.0, 0.0
    for upper, cumulative in buckets:
        if cumulative >= rank:
            if math.isinf(upper):
                return lower  # beyond the last finite bound: Prometheus answers that bound
            return lower + (upper - lower) * (rank - below) / (cumulative - below)
        lower, below = upper, cumulative
    return lower


def detection_ms(event: dict[str, object]) -> float:
    """What the histogram observes for one exposure event: detected_at - observed_at."""
    detected = datetime.fromisoformat(str(event["detected_at"]))
    observed = datetime.fromisoformat(str(event["observed_at"]))
    return max(0.0, (detected - observed).total_seconds() * 1000)


def bucket_distance(a_ms: float, b_ms: float, buckets: list[tuple[float, float]]) -> int:
    bounds = [upper for upper, _ in buckets]
    return abs(bisect_left(bounds, a_ms / 1000) - bisect_left(bounds, b_ms / 1000))


def agreement(estimate_ms: float, other_ms: float, buckets: list[tuple[float, float]]) -> str:
    """The estimate can lie anywhere in its bucket: the same or the neighbouring bucket agrees."""
    apart = bucket_distance(estimate_ms, other_ms, buckets)
    where = {0: "same bucket", 1: "neighbouring bucket"}.get(apart, f"{apart} buckets apart")
    return f"{where}, {'agree' if apart <= 1 else 'do not agree'} within a bucket"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--changes", type=int, default=1000)
    args = parser.parse_args()

    with kafka_broker() as broker, traversable_tempdir("permwatch-bench-") as base:
        share = base / "share"
        folder = share / "ledning"
        folder.mkdir(parents=True)
        os.chmod(share, 0o755)
        os.chown(folder, 0, 40001)
        os.chmod(folder, 0o750)
        workdir = base / "run"
        workdir.mkdir()
        pipe = Pipeline(
            workdir, broker.bootstrap, "bench.", share=share, config_extra='[metrics]\nlisten = "127.0.0.1:0"\n'
        )
        pipe.directory_path.write_text(
            "users:\n"
            + "".join(f"  - {{name: u{i}, uid: {41000 + i}, gid: 40002}}\n" for i in range(50))
            + "  - {name: chef, uid: 40999, gid: 40001}\n"
            "groups:\n  - {name: ledning, gid: 40001, members: [chef]}\n  - {name: alla, gid: 40002}\n"
        )
        pipe.label_one_folder(folder, "ledning")
        try:
            pipe.start_and_settle()
            exposures = pipe.reader("exposures")
            seen = len(exposures.read())
            latencies: list[float] = []
            changed_at: list[float] = []
            for i in range(args.changes):
                mode = 0o755 if i % 2 == 0 else 0o750
                start = time.perf_counter()
                changed_at.append(time.time())
                os.chmod(folder, mode)
                wait_until(lambda before=seen: len(exposures.read()) > before, f"exposure event {i}", timeout=60)
                latencies.append((time.perf_counter() - start) * 1000)
                seen = len(exposures.values)
            serving = re.search(r"metrics: serving (http://\S+/metrics)", pipe.log("processor"))
            if serving is None:
                raise SystemExit("the processor did not log its metrics address")
            buckets = scrape_buckets(serving.group(1))
            recent = exposures.values[-len(latencies) :]
            spans = [detection_ms(event) for event in recent]
            # the bench's own clock, from the chmod to the moment the processor emitted the exposure
            emitted = [
                max(0.0, (datetime.fromisoformat(str(event["detected_at"])).timestamp() - wall) * 1000)
                for event, wall in zip(recent, changed_at, strict=True)
            ]
        finally:
            pipe.stop()

    p50, p90, p99 = (percentile(latencies, q) for q in (0.50, 0.90, 0.99))
    print(f"changes: {len(latencies)} (chmod on a labelled folder, each opening or closing an exposure)")
    print(
        f"latency change → exposure event on Kafka: p50 {p50:.1f} ms, p90 {p90:.1f} ms, p99 {p99:.1f} ms, "
        f"max {max(latencies):.1f} ms, mean {statistics.fmean(latencies):.1f} ms"
    )
    print(f"target p99 ≤ 200 ms: {'met' if p99 <= 200 else 'NOT met'}")
    observed = int(buckets[-1][1])
    summary: dict[str, object] = {"p50_ms": round(p50, 2), "p99_ms": round(p99, 2), "n": len(latencies)}
    summary["histogram_n"] = observed
    print(f"detection-latency histogram on the processor's /metrics: {observed} observations")
    for name, q in (("p50", 0.50), ("p99", 0.99)):
        estimate = histogram_quantile(q, buckets) * 1000
        exact = percentile(spans, q)
        own = percentile(emitted, q)
        print(f"  {name}: histogram {estimate:.1f} ms")
        print(f"    vs the events' detected_at - observed_at {exact:.1f} ms: {agreement(estimate, exact, buckets)}")
        print(f"    vs the bench clock, chmod → exposure emitted {own:.1f} ms: {agreement(estimate, own, buckets)}")
        summary[f"histogram_{name}_ms"] = round(estimate, 2)
        summary[f"events_{name}_ms"] = round(exact, 2)
        summary[f"{name}_agree_within_bucket"] = bucket_distance(estimate, own, buckets) <= 1
        summary[f"{name}_histogram_matches_events"] = bucket_distance(estimate, exact, buckets) <= 1
    print(json.dumps(summary))


if __name__ == "__main__":
    main()
