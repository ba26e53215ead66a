"""A permwatch pipeline of real processes on real Kafka, and ways to watch its topics.

Each role runs as its own ``permwatch run --role …`` process with a config
written for the test (its own topic prefix and consumer groups), so tests
exercise exactly what an operator deploys and can SIGKILL a role. Topics are
read back with plain kafka-python, and "the processor has caught up" is
decided from Kafka itself: the processor group's committed offsets reach the
end of every input topic.
"""

from __future__ import annotations

import itertools
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from kafka import KafkaConsumer, TopicPartition

from permwatch.config import KafkaConfig
from permwatch.transport.kafka_security import kafka_python_options

TIMEOUT = 90.0
ROLES = ("collector", "processor", "alerts")
SERVING = re.compile(r"metrics: serving http://127\.0\.0\.1:(\d+)/metrics")
"""The line a role logs once it serves /metrics (``[metrics] listen`` with port 0 picks a free one)."""
LOG_RECORD = re.compile(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d+ +[A-Z]+ +(\S+):", re.MULTILINE)
"""A log line's start: its time, level and logger (the roles' log format)."""


@contextmanager
def traversable_tempdir(prefix: str) -> Iterator[Path]:
    """A temporary directory anyone may traverse, removed afterwards. pytest's own are 0700: a share under one
    would be closed to outsiders by its ancestors, whatever its own permissions say."""
    base = Path(tempfile.mkdtemp(prefix=prefix))
    os.chmod(base, 0o755)
    try:
        yield base
    finally:
        shutil.rmtree(base, ignore_errors=True)


def permwatch_exe() -> str:
    """The ``permwatch`` console script of the interpreter running the tests (its venv's), as a role is run."""
    return shutil.which("permwatch", path=str(Path(sys.executable).parent)) or "permwatch"


def wait_until(condition: Callable[[], Any], what: str, timeout: float = TIMEOUT) -> Any:
    """Poll ``condition`` until it returns something truthy; fail naming ``what`` after a generous timeout."""
    deadline = time.monotonic() + timeout
    while True:
        result = condition()
        if result:
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(0.05)


def tracebacks(log: str) -> list[str]:
    """Log records with a traceback, but for kafka-python's own (it logs a connection reset with one)."""
    starts = [(m.start(), m.group(1)) for m in LOG_RECORD.finditer(log)] + [(len(log), "")]
    return [
        log[at:end]
        for (at, logger), (end, _) in itertools.pairwise(starts)
        if "Traceback" in log[at:end] and not logger.startswith("kafka.")
    ]


class TopicReader:
    """Reads a whole topic (all partitions) from the beginning, accumulating decoded JSON values."""

    def __init__(self, bootstrap: str, topic: str, **client_options: Any) -> None:
        self.topic = topic
        self._consumer = KafkaConsumer(
            bootstrap_servers=bootstrap, enable_auto_commit=False, group_id=None, **client_options
        )
        partitions = wait_until(lambda: self._consumer.partitions_for_topic(topic), f"topic {topic}")
        self._consumer.assign([TopicPartition(topic, p) for p in sorted(partitions)])
        self._consumer.seek_to_beginning()
        self.values: list[dict[str, Any]] = []
        self.keys: list[str | None] = []

    def read(self) -> list[dict[str, Any]]:
        for messages in self._consumer.poll(timeout_ms=200, max_records=10_000).values():
            for m in messages:
                self.keys.append(m.key.decode() if m.key else None)
                self.values.append(json.loads(m.value))
        return self.values

    def close(self) -> None:
        self._consumer.close()


class Pipeline:
    def __init__(
        self,
        workdir: Path,
        bootstrap: str,
        prefix: str,
        *,
        share: Path,
        config_extra: str = "",
        directory_section: str | None = None,
        kafka_security: Mapping[str, str | bool] | None = None,
    ) -> None:
        """``directory_section`` replaces the ``[directory]`` (YAML file) section, e.g. with an ``[[ldap]]`` one;
        ``kafka_security`` adds keys (``security_protocol``, ``ssl_ca_file``…) to ``[transport.kafka]``, which the
        test's own topic readers use too."""
        self.workdir = workdir
        self.bootstrap = bootstrap
        self.prefix = prefix
        self.share = share
        self.config_path = workdir / "permwatch.toml"
        self.alerts_path = workdir / "alerts.jsonl"
        self.directory_path = workdir / "directory.yaml"
        self.procs: dict[str, subprocess.Popen[bytes]] = {}
        self.config_extra = config_extra
        self.directory_section = directory_section
        self.kafka_security = dict(kafka_security or {})
        self._client_options = kafka_python_options(
            KafkaConfig.model_validate({"bootstrap_servers": bootstrap, **self.kafka_security})
        )
        self._readers: dict[str, TopicReader] = {}

    def write_config(self, labels: str) -> None:
        self.config_path.write_text(
            f"""
log_level = "info"
state_dir = "{self.workdir / "state"}"
[transport]
kind = "kafka"
[transport.kafka]
bootstrap_servers = "{self.bootstrap}"
topic_prefix = "{self.prefix}"
partitions = 3
session_timeout_seconds = 10
{self._kafka_security_toml()}
[[fs]]
collector_id = "it-fs"
roots = ["{self.share}"]
{self._directory_section()}
[processor]
group = "{self.prefix}processor"
[alerts]
group = "{self.prefix}alerts"
[[alerts.sinks]]
kind = "jsonl"
path = "{self.alerts_path}"
{labels}
{self.config_extra}
""",
            encoding="utf-8",
        )

    def _kafka_security_toml(self) -> str:
        return "\n".join(f"{key} = {json.dumps(value)}" for key, value in self.kafka_security.items())

    def _directory_section(self) -> str:
        if self.directory_section is not None:
            return self.directory_section
        return f'[directory]\npath = "{self.directory_path}"'

    def start(self, role: str) -> subprocess.Popen[bytes]:
        exe = permwatch_exe()
        with (self.workdir / f"{role}.log").open("ab") as log:
            proc = subprocess.Popen(
                [exe, "run", "--config", str(self.config_path), "--role", role],
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        self.procs[role] = proc
        return proc

    def label_one_folder(self, folder: Path, allowed_group: str, *, label: str = "ledning") -> None:
        """Write the config for the common case: one labelled folder that one group may read."""
        self.write_config(
            f'[labels.definitions.{label}]\nallowed_groups = ["{allowed_group}"]\n'
            f'[[labels.rules]]\nglob = "{folder}"\nlabel = "{label}"\n'
        )

    def start_and_settle(self, roles: tuple[str, ...] = ("collector", "processor"), *, labels: int = 1) -> None:
        """Start ``roles`` and wait until the baseline's labels are out and the processor has judged them."""
        for role in roles:
            self.start(role)
        wait_until(lambda: len(self.reader("labels").read()) >= labels, f"{labels} label(s)")
        self.wait_quiet()

    def start_all(self) -> None:
        for role in ROLES:
            self.start(role)

    def kill(self, role: str, sig: int = signal.SIGKILL) -> None:
        proc = self.procs.pop(role)
        if proc.poll() is None:
            os.killpg(proc.pid, sig)
        proc.wait(30)

    def stop(self) -> None:
        for role in list(self.procs):
            self.kill(role, signal.SIGTERM)
        for reader in self._readers.values():
            reader.close()

    def metrics_port(self, role: str) -> int:
        """The port ``role`` serves /metrics on, once it has said so in its log."""
        found = wait_until(lambda: SERVING.search(self.log(role)), f"the {role}'s metrics address")
        return int(found.group(1))

    def metrics_text(self, role: str) -> str:
        url = f"http://127.0.0.1:{self.metrics_port(role)}/metrics"
        with urllib.request.urlopen(url, timeout=10) as response:
            return str(response.read().decode())

    def samples(self, role: str, prefix: str) -> dict[str, float]:
        """``role``'s metric samples whose names start with ``prefix``: the sample (name and labels) → value."""
        found = {}
        for line in self.metrics_text(role).splitlines():
            if line.startswith(prefix):
                name, value = line.rsplit(" ", 1)
                found[name] = float(value)
        return found

    def spool_metrics(self) -> dict[str, float]:
        """The collector's ``permwatch_spool_*`` samples."""
        return self.samples("collector", "permwatch_spool_")

    def log(self, role: str) -> str:
        path = self.workdir / f"{role}.log"
        return path.read_text(errors="replace") if path.exists() else ""

    def reader(self, topic: str) -> TopicReader:
        if topic not in self._readers:
            self._readers[topic] = TopicReader(self.bootstrap, self.prefix + topic, **self._client_options)
        return self._readers[topic]

    def close_readers(self) -> None:
        """Close the topic readers (e.g. before stopping the broker: kafka-python leaks a socket per refused
        connection); the next read opens fresh ones, which read each topic again from the beginning."""
        for reader in self._readers.values():
            reader.close()
        self._readers.clear()

    def exposures(self) -> list[dict[str, Any]]:
        return self.reader("exposures").read()

    def fs_events(self) -> list[dict[str, Any]]:
        """Every event on the fs topic, a batch's events one by one (``fs.batch`` carries a unit's burst)."""
        flat: list[dict[str, Any]] = []
        for value in self.reader("fs").read():
            flat.extend(value["events"] if value.get("type") == "fs.batch" else (value,))
        return flat

    def processor_caught_up(self) -> bool:
        """True when the processor group has committed everything on its input topics."""
        topics = [self.prefix + t for t in ("fs", "directory", "labels")]
        # A consumer that names the group but never joins it can read the group's commits.
        consumer = KafkaConsumer(
            bootstrap_servers=self.bootstrap,
            group_id=self.prefix + "processor",
            enable_auto_commit=False,
            **self._client_options,
        )
        try:
            partitions = [TopicPartition(t, p) for t in topics for p in (consumer.partitions_for_topic(t) or ())]
            ends = consumer.end_offsets(partitions)
            return all(end == 0 or (consumer.committed(tp) or 0) >= end for tp, end in ends.items())
        finally:
            consumer.close(autocommit=False)

    def wait_fs_event(self, path: Path, predicate: Callable[[dict[str, Any]], bool] = lambda e: True) -> dict[str, Any]:
        return wait_until(
            lambda: next((e for e in reversed(self.fs_events()) if e.get("path") == str(path) and predicate(e)), None),
            f"an fs event for {path}",
        )

    def wait_quiet(self) -> None:
        """The processor has handled everything published so far."""
        wait_until(self.processor_caught_up, "the processor to catch up")
