"""Faults of the default deployment (``permwatch run``, all roles, the embedded log) on real files: signals during
start-up, a damaged event log, a full disk under the event log, and a checkpoint whose log was replaced.

Each drives the real process as an operator would (spawned, signalled, its files damaged or its filesystem
filled) and asks for a correct result (the exposure a real ``setfacl`` opened reaches JSONL) or a clear error
(exit status 1, one line naming the file and the way out), never a traceback or a process left half running.
"""

from __future__ import annotations

import errno
import json
import os
import random
import re
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.integration.pipeline import permwatch_exe, tracebacks, traversable_tempdir, wait_until

pytestmark = pytest.mark.integration

MGMT, STAFF = 32101, 32102
FILES = 300
"""Files in the labelled folder: enough for the event log to span many pages (and a recursive setfacl to write)."""
PROJECT_FRAME = re.compile(r'File "[^"]*/(permwatch|collectors|processor|alerts)/')


class Deployment:
    """One labelled folder on a real share, a directory file, and ``permwatch run`` with the default transport."""

    def __init__(self, base: Path, *, event_log: Path | None = None, state: Path | None = None) -> None:
        self.base = base
        self.share = base / "share"
        self.folder = self.share / "ledning"
        self.state = state or base / "state"
        self.alerts = base / "alerts.jsonl"
        self.config = base / "permwatch.toml"
        self.event_log = event_log or self.state / "events.db"
        self.runs = 0
        self.proc: subprocess.Popen[bytes] | None = None
        self.folder.mkdir(parents=True)
        os.chown(self.folder, 0, MGMT)
        os.chmod(self.folder, 0o750)
        for i in range(FILES):
            note = self.folder / f"note{i:03}.txt"
            note.write_text("x\n")
            os.chown(note, 0, MGMT)
            os.chmod(note, 0o640)
        directory = base / "directory.yaml"
        directory.write_text(
            yaml.safe_dump(
                {
                    "users": [
                        {"name": "anna", "uid": 34001, "primary_group": "ledningsgrupp"},
                        *({"name": f"staff{i}", "uid": 34010 + i, "primary_group": "alla"} for i in range(4)),
                    ],
                    "groups": [
                        {"name": "ledningsgrupp", "gid": MGMT, "members": ["anna"]},
                        {"name": "alla", "gid": STAFF, "members": [f"staff{i}" for i in range(4)]},
                    ],
                }
            )
        )
        self.config.write_text(
            f"""
state_dir = "{self.state}"
[transport.embedded]
path = "{self.event_log}"
[processor]
checkpoint_interval_seconds = 1
[[fs]]
collector_id = "faults"
roots = ["{self.share}"]
[directory]
path = "{directory}"
[labels.definitions.ledning]
allowed_groups = ["ledningsgrupp"]
[[labels.rules]]
glob = "{self.folder}"
label = "ledning"
[[alerts.sinks]]
kind = "jsonl"
path = "{self.alerts}"
[metrics]
listen = "127.0.0.1:0"
"""
        )

    @property
    def log_path(self) -> Path:
        return self.base / f"run{self.runs}.log"

    def start(self) -> subprocess.Popen[bytes]:
        self.runs += 1
        with self.log_path.open("wb") as out:
            self.proc = subprocess.Popen(
                [permwatch_exe(), "run", "--config", str(self.config)], stdout=out, stderr=subprocess.STDOUT
            )
        return self.proc

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def wait_running(self) -> None:
        wait_until(lambda: "processor restart: state rebuilt" in self.log(), "the processor to start")
        wait_until(lambda: "permwatch running" in self.log(), "the stages to start")

    def stop(self, sig: int = signal.SIGTERM) -> int:
        assert self.proc is not None
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        return self.proc.wait(60)

    def statuses(self) -> list[str]:
        """The opens and closes delivered (a recursive change may also bring ``changed`` lines as its paths
        are read: those say how many paths, not whether the folder is exposed)."""
        return [alert["status"] for alert in self.alerts_of()]

    def alerts_of(self) -> list[dict[str, Any]]:
        """The JSONL lines of opens and closes."""
        lines = self.alerts.read_text().splitlines() if self.alerts.exists() else []
        return [alert for alert in map(json.loads, lines) if alert["status"] != "changed"]

    def grant_staff(self) -> None:
        subprocess.run(["setfacl", "-R", "-m", f"g:{STAFF}:rX", str(self.folder)], check=True)

    def revoke_staff(self) -> None:
        subprocess.run(["setfacl", "-R", "-x", f"g:{STAFF}", str(self.folder)], check=True)


@pytest.fixture
def deployment() -> Iterator[Deployment]:
    with traversable_tempdir("permwatch-faults-") as base:
        os.chmod(base, 0o755)
        made = Deployment(base)
        try:
            yield made
        finally:
            if made.proc is not None and made.proc.poll() is None:
                made.proc.kill()
                made.proc.wait(30)


# ------------------------------------------------------------------ signals during start-up


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_a_signal_at_any_moment_of_start_up_is_a_clean_stop(deployment: Deployment, sig: signal.Signals) -> None:
    """20 starts, each signalled 0 to 1.5 s after spawn: each stops cleanly (exit 0, "stopping (SIGx)" logged, no
    traceback), and the deployment still judges correctly afterwards."""
    rng = random.Random(20261207 + sig)
    outcomes = []
    for _ in range(20):
        delay = rng.uniform(0.0, 1.5)
        proc = deployment.start()
        time.sleep(delay)
        proc.send_signal(sig)
        status = proc.wait(60)
        log = deployment.log()
        outcomes.append((round(delay, 2), status))
        assert status != -signal.SIGSEGV, log
        if status == 0:
            assert f"stopping ({sig.name})" in log, log
            assert not tracebacks(log) and "Traceback" not in log, log
        else:
            # Only in Python's own start-up (site, the first ~25 ms), before any of permwatch's code runs, does a
            # signal act as Python's default: nothing has started, nothing is left behind.
            assert delay < 0.2 and not PROJECT_FRAME.search(log) and " permwatch" not in log, (delay, status, log)
    print(f"{sig.name}: (delay s, exit status) {outcomes}")
    # the state the interrupted starts left is sound: the next start judges a real change
    deployment.start()
    deployment.wait_running()
    wait_until(lambda: f"scanned {deployment.share}" in deployment.log(), "the scan")
    deployment.grant_staff()
    wait_until(lambda: deployment.statuses() == ["opened"], "the exposure to open")
    assert deployment.stop() == 0
    assert not tracebacks(deployment.log())


def test_sigterm_stops_a_running_process_promptly_and_says_so(deployment: Deployment) -> None:
    deployment.start()
    deployment.wait_running()
    started = time.monotonic()
    assert deployment.stop(signal.SIGTERM) == 0
    took = time.monotonic() - started
    log = deployment.log()
    assert "permwatch: stopping (SIGTERM)" in log and "permwatch: stopped (SIGTERM)" in log
    print(f"SIGTERM to exit: {took:.2f} s")
    # measured 0.4-0.7 s on a loaded 2-core machine; the issue found 4-5 s. Generous, yet it fails that again
    assert took < 3.0, f"SIGTERM took {took:.2f} s to stop permwatch\n{log[-3000:]}"


# ------------------------------------------------------------------ a damaged event log


def test_a_damaged_event_log_is_one_line_with_the_way_out_and_the_way_out_works(deployment: Deployment) -> None:
    deployment.start()
    deployment.wait_running()
    wait_until(lambda: f"scanned {deployment.share}" in deployment.log(), "the scan")
    deployment.grant_staff()
    wait_until(lambda: deployment.statuses() == ["opened"], "the exposure to open")
    assert deployment.stop(signal.SIGTERM) == 0  # the log's pages all in the main file
    deployment.start()
    deployment.wait_running()
    deployment.revoke_staff()
    wait_until(lambda: deployment.statuses() == ["opened", "closed"], "the exposure to close")
    deployment.grant_staff()
    wait_until(lambda: deployment.statuses() == ["opened", "closed", "opened"], "the exposure to open again")
    deployment.stop(signal.SIGKILL)  # the last records only in the WAL
    log = deployment.event_log
    assert Path(f"{log}-wal").stat().st_size > 0
    size = log.stat().st_size
    with log.open("r+b") as fh:  # garbage over the middle of the log's pages (a bad disk, a stray write)
        fh.seek(size // 3)
        fh.write(random.Random(1).randbytes(size // 3))

    proc = deployment.start()
    status = proc.wait(60)
    output = deployment.log()
    assert status == 1, output
    error = [line for line in output.splitlines() if line.startswith("permwatch: ")]
    assert len(error) == 1 and error[0].startswith(f"permwatch: event log {log} is damaged ("), output
    assert f"move it aside and rescan into a fresh log: stop permwatch, mv {log} {log}.damaged" in error[0]
    assert "Traceback" not in output and "metrics: serving" not in output and "processor started" not in output
    assert Path(f"{log}-wal").exists()  # the damaged file left as it was found
    print(error[0])

    # the way out: the log moved aside, the collectors' state removed, and the truth is rebuilt by a rescan
    for suffix in ("", "-wal", "-shm"):
        Path(f"{log}{suffix}").rename(f"{log}.damaged{suffix}")
    for state in deployment.state.glob("fs-*.db*"):
        state.unlink()
    still_open = deployment.alerts_of()[-1]
    deployment.start()
    deployment.wait_running()
    wait_until(lambda: f"scanned {deployment.share}" in deployment.log(), "the rescan")
    # the exposure published on the damaged log is still true: it goes on under its id, no second open
    exposure_id = still_open["exposure_id"]
    wait_until(  # (a rescan read in several batches may first see fewer paths: a 'changed' of the same id)
        lambda: (
            any(
                said in deployment.log()
                for said in (f"exposure {exposure_id} continued as published", f"exposure changed {exposure_id}")
            )
            or len(deployment.statuses()) > 3
        ),
        "the rescan to be judged",
    )
    assert deployment.statuses() == ["opened", "closed", "opened"], deployment.alerts_of()
    # ... and its close reaches JSONL under that id
    deployment.revoke_staff()
    wait_until(lambda: len(deployment.statuses()) == 4, "the exposure to close")
    closed = deployment.alerts_of()[-1]
    assert closed["status"] == "closed" and closed["exposure_id"] == still_open["exposure_id"]
    assert deployment.stop() == 0
    assert "holds no records" in deployment.log() or "is not the log the checkpoint was written for" in (
        deployment.log()
    )
    assert "exposure record lacks 1 folder(s) this processor published for" in deployment.log()
    assert not tracebacks(deployment.log())


# ------------------------------------------------------------------ a full disk


@pytest.fixture
def small_filesystem() -> Iterator[Path]:
    """A real 2 MiB filesystem (tmpfs), unmounted afterwards whatever happens; skipped where mounting is denied."""
    with traversable_tempdir("permwatch-full-") as base:
        mount = base / "fs"
        mount.mkdir()
        done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=2m", "tmpfs", str(mount)], capture_output=True)
        if done.returncode != 0:
            pytest.skip(f"cannot mount a small tmpfs here (needs root): {done.stderr.decode().strip()}")
        try:
            yield mount
        finally:
            subprocess.run(["umount", "-l", str(mount)], check=False)


def fill(directory: Path, name: str = "filler") -> Path:
    """Fill ``directory``'s filesystem to the last byte."""
    filler = directory / name
    fd = os.open(filler, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    try:
        while True:
            os.write(fd, b"\0" * 4096)
    except OSError as exc:
        assert exc.errno == errno.ENOSPC, exc
    finally:
        os.close(fd)
    return filler


def test_a_flush_onto_a_full_filesystem_keeps_its_records_and_says_why(small_filesystem: Path) -> None:
    from permwatch.transport.base import EventLogError
    from permwatch.transport.embedded import EmbeddedBus

    reserve = small_filesystem / "reserve"
    reserve.write_bytes(b"\0" * 512 * 1024)  # freed later: room again
    bus = EmbeddedBus(small_filesystem / "events.db")
    sent = 0
    with pytest.raises(EventLogError) as raised:
        for _ in range(10_000):
            for _ in range(20):
                bus.publish("fs", f"/p{sent}", os.urandom(1000))
                sent += 1
            bus.flush()
    assert str(raised.value) == f"event log {small_filesystem / 'events.db'}: database or disk is full"
    stored = len(list(bus.history(["fs"])))
    assert stored + 20 == sent  # the failed flush's 20 are still queued, not lost, not half stored
    reserve.unlink()
    bus.flush()
    assert [r.key for r in bus.history(["fs"])] == [f"/p{i}" for i in range(sent)]
    bus.close()


def test_a_full_disk_under_the_event_log_stops_the_process_with_one_line(small_filesystem: Path) -> None:
    with traversable_tempdir("permwatch-faults-") as base:
        deployment = Deployment(base, event_log=small_filesystem / "events.db")
        deployment.start()
        try:
            deployment.wait_running()
            wait_until(lambda: f"scanned {deployment.share}" in deployment.log(), "the scan")
            filler = fill(small_filesystem)
            changes = 0

            def stopped() -> bool:
                nonlocal changes
                if deployment.proc is not None and deployment.proc.poll() is not None:
                    return True
                # each round changes every file's ACL: more records than the WAL has room for, sooner or later
                (deployment.revoke_staff if changes % 2 else deployment.grant_staff)()
                changes += 1
                return False

            wait_until(stopped, "the process to stop on the full disk")
            assert deployment.proc is not None and deployment.proc.wait(60) == 1
            log = deployment.log()
            assert re.search(r"stopped: event log \S+events\.db: database or disk is full$", log, re.MULTILINE), log
            assert "cannot rollback" not in log and not tracebacks(log) and "Traceback" not in log, log
            assert "stopped because" in log and "failed" in log
            print("\n".join(line for line in log.splitlines() if "full" in line or "stopp" in line))

            # room again: the next start stores and judges what the collector could not publish
            filler.unlink()
            if changes % 2 == 0:  # leave the folder open to the staff: the truth to be reported
                deployment.grant_staff()
            deployment.start()
            deployment.wait_running()
            wait_until(lambda: "opened" in deployment.statuses(), "the exposure to be reported")
            assert deployment.stop() == 0
            assert not tracebacks(deployment.log())
        finally:
            if deployment.proc is not None and deployment.proc.poll() is None:
                deployment.proc.kill()
                deployment.proc.wait(30)


def test_a_full_disk_under_the_state_dir_stops_the_process_with_one_line(small_filesystem: Path) -> None:
    """The event log has room, the stages' own state (the fs collector's store, the alerts' delivery log, the
    checkpoint) does not."""
    with traversable_tempdir("permwatch-faults-") as base:
        deployment = Deployment(base, event_log=base / "events.db", state=small_filesystem / "state")
        deployment.start()
        try:
            deployment.wait_running()
            wait_until(lambda: f"scanned {deployment.share}" in deployment.log(), "the scan")
            filler = fill(small_filesystem)
            changes = 0

            def stopped() -> bool:
                nonlocal changes
                if deployment.proc is not None and deployment.proc.poll() is not None:
                    return True
                (deployment.revoke_staff if changes % 2 else deployment.grant_staff)()
                changes += 1
                return False

            wait_until(stopped, "the process to stop on the full disk")
            assert deployment.proc is not None and deployment.proc.wait(60) == 1
            log = deployment.log()
            assert re.search(
                rf"stopped: no room to write its state under {re.escape(str(deployment.state))}: "
                "database or disk is full$",
                log,
                re.MULTILINE,
            ), log
            assert not tracebacks(log) and "Traceback" not in log, log
            filler.unlink()
            deployment.start()  # room again: it starts and judges
            deployment.wait_running()
            if changes % 2 == 0:
                deployment.grant_staff()
            wait_until(lambda: "opened" in deployment.statuses(), "the exposure to be reported")
            assert deployment.stop() == 0
        finally:
            if deployment.proc is not None and deployment.proc.poll() is None:
                deployment.proc.kill()
                deployment.proc.wait(30)


# ------------------------------------------------------------------ an event log replaced under a checkpoint


@pytest.mark.parametrize("fault", ["removed", "emptied"])
def test_an_event_log_replaced_under_the_checkpoint_is_named_and_judged_from_its_start(
    deployment: Deployment, fault: str
) -> None:
    deployment.start()
    deployment.wait_running()
    wait_until(lambda: f"scanned {deployment.share}" in deployment.log(), "the scan")
    deployment.grant_staff()
    wait_until(lambda: deployment.statuses() == ["opened"], "the exposure to open")
    assert deployment.stop() == 0  # a clean stop writes the checkpoint
    assert list(deployment.state.glob("processor-*.checkpoint"))
    log = deployment.event_log
    if fault == "removed":
        log.unlink()
    else:
        log.write_bytes(b"")  # (no -wal left after a clean stop)
    deployment.revoke_staff()  # while it is down

    deployment.start()
    deployment.wait_running()
    output = deployment.log()
    assert re.search(
        rf"checkpoint \S+ not used: event log {re.escape(str(log))} "
        r"(holds no records|is not the log the checkpoint was written for)",
        output,
    ), output
    assert "fs collector faults: what it published went to another event log" in output
    # the exposure published on the old log is closed under its id once the rescan shows the revoke (the SOC
    # held it open), and the new log is judged from its first record: a new grant opens a new exposure
    opened = deployment.alerts_of()[0]
    wait_until(lambda: deployment.statuses() == ["opened", "closed"], "the earlier exposure to close")
    closed = deployment.alerts_of()[1]
    assert closed["exposure_id"] == opened["exposure_id"] and closed["actor"] is None
    deployment.grant_staff()
    wait_until(lambda: deployment.statuses() == ["opened", "closed", "opened"], "the new grant's exposure to open")
    assert deployment.alerts_of()[2]["exposure_id"] != opened["exposure_id"]
    assert deployment.stop() == 0
    assert not tracebacks(deployment.log())
