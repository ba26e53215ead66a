"""Detection latency: a permission change on a real file → the exposure event on Kafka.

Runs the collector and the processor as separate ``permwatch run`` processes
on a real Kafka broker, then makes N changes one after another on a labelled
folder (``chmod o+rx`` / ``o-rx`` alternately, so every change opens or
closes an exposure) and times each from just before the chmod until the
exposure event is read back from the exposures topic. Prints p50/p90/p99 and
the maximum; the last line is one JSON object. Target: p99 ≤ 200 ms.

    .venv/bin/python bench/latency.py [--changes 1000]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time

from _rig import kafka_broker, traversable_tmpdir

from tests.integration.pipeline import Pipeline, wait_until


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--changes", type=int, default=1000)
    args = parser.parse_args()

    with kafka_broker() as broker, traversable_tmpdir("permwatch-bench-") as base:
        share = base / "share"
        folder = share / "ledning"
        folder.mkdir(parents=True)
        os.chmod(share, 0o755)
        os.chown(folder, 0, 40001)
        os.chmod(folder, 0o750)
        workdir = base / "run"
        workdir.mkdir()
        pipe = Pipeline(workdir, broker.bootstrap, "bench.", share=share)
        pipe.directory_path.write_text(
            "users:\n"
            + "".join(f"  - {{name: u{i}, uid: {41000 + i}, gid: 40002}}\n" for i in range(50))
            + "  - {name: chef, uid: 40999, gid: 40001}\n"
            "groups:\n  - {name: ledning, gid: 40001, members: [chef]}\n  - {name: alla, gid: 40002}\n"
        )
        pipe.write_config(
            f'[labels.definitions.ledning]\nallowed_groups = ["ledning"]\n'
            f'[[labels.rules]]\nglob = "{folder}"\nlabel = "ledning"\n'
        )
        for role in ("collector", "processor"):
            pipe.start(role)
        try:
            wait_until(lambda: pipe.reader("labels").read(), "the label")
            pipe.wait_quiet()
            exposures = pipe.reader("exposures")
            seen = len(exposures.read())
            latencies: list[float] = []
            for i in range(args.changes):
                mode = 0o755 if i % 2 == 0 else 0o750
                start = time.perf_counter()
                os.chmod(folder, mode)
                wait_until(lambda before=seen: len(exposures.read()) > before, f"exposure event {i}", timeout=60)
                latencies.append((time.perf_counter() - start) * 1000)
                seen = len(exposures.values)
        finally:
            pipe.stop()

    p50, p90, p99 = (percentile(latencies, q) for q in (0.50, 0.90, 0.99))
    print(f"changes: {len(latencies)} (chmod on a labelled folder, each opening or closing an exposure)")
    print(
        f"latency change → exposure event on Kafka: p50 {p50:.1f} ms, p90 {p90:.1f} ms, p99 {p99:.1f} ms, "
        f"max {max(latencies):.1f} ms, mean {statistics.fmean(latencies):.1f} ms"
    )
    print(f"target p99 ≤ 200 ms: {'met' if p99 <= 200 else 'NOT met'}")
    print(json.dumps({"p50_ms": round(p50, 2), "p99_ms": round(p99, 2), "n": len(latencies)}))


if __name__ == "__main__":
    main()
