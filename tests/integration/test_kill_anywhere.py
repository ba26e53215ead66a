"""SIGKILL at random moments, on the embedded default and on Kafka: the record stays true (issue 13).

One all-in-one ``permwatch run`` (collector, processor, alerts to JSONL and the fake Slack) watches a share
of labelled folders changed with real ``setfacl``/``chmod`` and a directory file that nests the all-staff
group into the management group and back. Each round makes a few exposure-moving changes and kills the
process with SIGKILL at an awkward moment, each moment in a quarter of the rounds (:data:`MOMENTS`): right
after a start with the checkpoint removed (mid-baseline or mid-replay, as before the first checkpoint), in
the middle of a recursive change, exactly between publishing exposures and committing the input (a
``sitecustomize`` shim, only in the test, kills it there), or after several changes in one lifetime. One or
two changes are made while it is down; then it starts again and must converge on the kernel's own verdict:
the folders the exposure record (JSONL) holds open, and who each says can read, are exactly the folders
some user outside the label can read something in and those users, as ``setpriv`` finds running ``test -r``
as each user (with the user's groups, nesting flattened as sssd/winbind give them to the kernel). The JSONL
record must read as one story after every round (each exposure numbered from 0, opened first, closed at
most once and last, episodes of a folder never overlapping, nothing closed that was not opened, every event
delivered once), and Slack must carry each burst once (one root, its changes and closes as replies, no
message twice) and every open and close in exactly one message (the event ids in its metadata). 50 rounds
on the embedded log and 25 on Kafka by default, two SIGKILLs a round (one at the awkward moment, one once converged);
``PERMWATCH_KILL_SEED`` picks another random sequence, ``PERMWATCH_KILL_ROUNDS_KAFKA`` another number of
Kafka rounds (CI runs 25 on Kafka to keep the whole suite well under 30 min on 2 cores).
"""

from __future__ import annotations

import json
import os
import random
import shutil
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.integration.pipeline import permwatch_exe, traversable_tempdir, wait_until
from tests.integration.servers.fake_slack import FakeSlack
from tests.integration.servers.kafka import KafkaBroker

pytestmark = pytest.mark.integration

MGMT, STAFF, UNIT, EXTERN = 34001, 34002, 34003, 34004
FOLDERS = ("ledning", "personal", "klienter", "styrelse")
TOKEN, TOKEN_ENV, CHANNEL = "xoxb-kill-test-token", "PERMWATCH_TEST_SLACK_TOKEN", "C0KILL"
USERS = {  # name → (uid, primary gid, groups it is a direct member of)
    "anna": (35001, MGMT, ("ledningsgrupp",)),
    "bo": (35002, STAFF, ("alla",)),
    "cia": (35003, STAFF, ("alla",)),
    "dan": (35004, UNIT, ("enhet",)),
    "ext": (35005, EXTERN, ("extern",)),
}
BULK = 300
SEED = int(os.environ.get("PERMWATCH_KILL_SEED", "20261207"))
KAFKA_ROUNDS = int(os.environ.get("PERMWATCH_KILL_ROUNDS_KAFKA", "25"))

SITECUSTOMIZE = '''
import os, signal
from processor.runner import ProcessorRunner

_handle = ProcessorRunner.handle
_left = [int(os.environ["PERMWATCH_TEST_KILL_AFTER_PUBLISHING"])]


class _DieAtCommit:
    """The processor's consumer, killed at the commit of the n-th batch that published exposures."""

    def __init__(self, inner, bus):
        self._inner, self._bus = inner, bus

    def __getattr__(self, name):
        return getattr(self._inner, name)

    def commit(self):
        if self._bus.exposures_since_commit:
            self._bus.exposures_since_commit = 0
            _left[0] -= 1
            if _left[0] <= 0:
                os.kill(os.getpid(), signal.SIGKILL)  # exposures published and flushed, the input not committed
        self._inner.commit()


def _handle_and_die(self, records, consumer):
    bus = self.bus
    if not hasattr(bus, "exposures_since_commit"):
        bus.exposures_since_commit, publish = 0, bus.publish

        def counting(topic, key, value):
            if topic == "exposures":
                bus.exposures_since_commit += 1
            publish(topic, key, value)

        bus.publish = counting
    return _handle(self, records, _DieAtCommit(consumer, bus))


ProcessorRunner.handle = _handle_and_die
'''


@dataclass
class Share:
    root: Path
    directory: Path
    nested: bool = False
    grants: dict[str, str] = field(default_factory=dict)

    def folder(self, name: str) -> Path:
        return self.root / name

    def write_directory(self) -> None:
        groups = [
            {"name": "ledningsgrupp", "gid": MGMT, "members": ["anna"], "groups": ["alla"] if self.nested else []},
            {"name": "alla", "gid": STAFF, "members": ["bo", "cia"], "groups": ["enhet"]},
            {"name": "enhet", "gid": UNIT, "members": ["dan"]},
            {"name": "extern", "gid": EXTERN, "members": ["ext"]},
        ]
        users = [{"name": name, "uid": uid, "gid": gid} for name, (uid, gid, _) in USERS.items()]
        temporary = self.directory.with_suffix(".tmp")
        temporary.write_text(yaml.safe_dump({"users": users, "groups": groups}))
        temporary.replace(self.directory)  # one inotify event, one whole file

    def kernel_groups(self, user: str) -> set[int]:
        """The user's groups as the kernel gets them from sssd/winbind: nesting flattened."""
        contains = {"ledningsgrupp": ["alla"] if self.nested else [], "alla": ["enhet"], "enhet": [], "extern": []}
        gids = {"ledningsgrupp": MGMT, "alla": STAFF, "enhet": UNIT, "extern": EXTERN}
        found = set(USERS[user][2])
        while True:
            more = {outer for outer, inner in contains.items() if found & set(inner)} - found
            if not more:
                return {gids[g] for g in found} | {USERS[user][1]}
            found |= more

    def audience(self) -> set[str]:
        """Who the label allows: direct members of ledningsgrupp and users whose primary group it is."""
        return {"anna"}

    def exposed_by_the_kernel(self) -> set[str]:
        """The labelled folders some user outside the label can read something in, by the kernel's verdict."""
        return set(self.readers_by_the_kernel())

    def readers_by_the_kernel(self) -> dict[str, set[str]]:
        """Labelled folder → the users outside the label who can read something in it, by the kernel's verdict
        (folders nobody outside can read are left out)."""
        paths = [str(p) for name in FOLDERS for p in [self.folder(name), *sorted(self.folder(name).rglob("*"))]]
        exposed: dict[str, set[str]] = {}
        for user, (uid, gid, _) in USERS.items():
            if user in self.audience():
                continue
            groups = ",".join(str(g) for g in sorted(self.kernel_groups(user)))
            script = 'for p in "$@"; do test -r "$p" && printf "%s\\n" "$p"; done; true'
            done = subprocess.run(
                ["setpriv", f"--reuid={uid}", f"--regid={gid}", f"--groups={groups}", "sh", "-c", script, "sh", *paths],
                capture_output=True,
                text=True,
                check=True,
            )
            for readable in done.stdout.splitlines():
                exposed.setdefault(str(self.root / Path(readable).relative_to(self.root).parts[0]), set()).add(user)
        return exposed


def make_share(base: Path) -> Share:
    root = base / "share"
    root.mkdir()
    os.chmod(root, 0o755)
    share = Share(root, base / "directory.yaml")
    for name in FOLDERS:
        folder = root / name
        (folder / "arkiv").mkdir(parents=True)
        for path, mode in ((folder, 0o750), (folder / "arkiv", 0o750)):
            os.chown(path, 0, MGMT)
            os.chmod(path, mode)
        for path in (folder / "protokoll.txt", folder / "arkiv" / "2025.txt"):
            path.write_text("Protokoll\n")
            os.chown(path, 0, MGMT)
            os.chmod(path, 0o640)
    bulk = root / "klienter" / "arkiv" / "akter"  # enough paths that a recursive change takes a while to publish
    bulk.mkdir()
    os.chown(bulk, 0, MGMT)
    os.chmod(bulk, 0o750)
    for i in range(BULK):
        path = bulk / f"akt-{i:03}.txt"
        path.write_text("Akt\n")
        os.chown(path, 0, MGMT)
        os.chmod(path, 0o640)
    share.write_directory()
    return share


def change(share: Share, rng: random.Random) -> str:
    """One random exposure-moving change (or one that must not expose); what it was, for the failure message."""
    name = rng.choice(FOLDERS)
    folder = str(share.folder(name))
    kind = rng.choice(["grant", "grant-recursive", "revoke", "other", "close-other", "nest", "deep-only", "revoke"])
    if kind == "grant":
        subprocess.run(["setfacl", "-m", f"g:{STAFF}:rx", folder], check=True)
    elif kind == "grant-recursive":
        subprocess.run(["setfacl", "-R", "-m", f"g:{STAFF}:rX", folder], check=True)
    elif kind == "revoke":
        subprocess.run(["setfacl", "-R", "-b", folder], check=True)
        subprocess.run(["chmod", "o-rwx", folder], check=True)
    elif kind == "other":
        subprocess.run(["chmod", "o+rx", folder], check=True)
    elif kind == "close-other":
        subprocess.run(["chmod", "-R", "o-rwx", folder], check=True)
    elif kind == "nest":
        share.nested = not share.nested
        share.write_directory()
        return f"nested={share.nested}"
    elif kind == "deep-only":  # readable deep down, but the folder denies traverse: not an exposure by itself
        subprocess.run(["setfacl", "-m", f"u:{USERS['ext'][0]}:r", f"{folder}/arkiv/2025.txt"], check=True)
    return f"{kind} {name}"


def toggle(share: Share, rng: random.Random) -> str:
    """A change that moves an exposure for sure: open a folder the kernel keeps closed, or close an open one; with
    the all-staff group nested into the management group every folder is open through its owning group, which no
    ACL change closes, so the nesting goes."""
    if share.nested:
        share.nested = False
        share.write_directory()
        return "nested=False"
    name = rng.choice(FOLDERS)
    folder = str(share.folder(name))
    if folder in share.exposed_by_the_kernel():
        subprocess.run(["setfacl", "-R", "-b", folder], check=True)
        subprocess.run(["chmod", "-R", "o-rwx", folder], check=True)
        return f"close {name}"
    subprocess.run(["chmod", "o+rx", folder], check=True)
    return f"other {name}"


def died(rig: AllInOne, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while rig.proc is not None and rig.proc.poll() is None:
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)
    return True


class AllInOne:
    def __init__(self, workdir: Path, share: Share, slack: FakeSlack, transport: str) -> None:
        self.workdir, self.share = workdir, share
        self.alerts = workdir / "alerts.jsonl"
        self.log_path = workdir / "permwatch.log"
        self.config = workdir / "permwatch.toml"
        self.shim = workdir / "shim"
        self.shim.mkdir()
        (self.shim / "sitecustomize.py").write_text(SITECUSTOMIZE)
        labels = "".join(f'[[labels.rules]]\nglob = "{share.folder(name)}"\nlabel = "ledning"\n' for name in FOLDERS)
        self.config.write_text(
            f"""
log_level = "info"
state_dir = "{workdir / "state"}"
{transport}
[[fs]]
collector_id = "kill"
roots = ["{share.root}"]
[directory]
path = "{share.directory}"
[processor]
checkpoint_interval_seconds = 2
[labels.definitions.ledning]
allowed_groups = ["ledningsgrupp"]
{labels}
[[alerts.sinks]]
kind = "jsonl"
path = "{self.alerts}"
[[alerts.sinks]]
kind = "slack"
channel = "{CHANNEL}"
token_env = "{TOKEN_ENV}"
api_url = "{slack.base_url}"
timeout_seconds = 5
"""
        )
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self, kill_after_publishing: int | None = None) -> None:
        env = {**os.environ, TOKEN_ENV: TOKEN}
        if kill_after_publishing is not None:
            env["PYTHONPATH"] = os.pathsep.join([str(self.shim), env.get("PYTHONPATH", "")])
            env["PERMWATCH_TEST_KILL_AFTER_PUBLISHING"] = str(kill_after_publishing)
        with self.log_path.open("ab") as log:
            self.proc = subprocess.Popen(
                [permwatch_exe(), "run", "--config", str(self.config)],
                stdout=log,
                stderr=subprocess.STDOUT,
                env=env,
                start_new_session=True,
            )

    def kill(self) -> None:
        assert self.proc is not None
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait(30)
        self.proc = None

    def stop(self) -> int:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGTERM)
        code = self.proc.wait(60)
        self.proc = None
        return code

    def lines(self) -> list[dict[str, Any]]:
        if not self.alerts.exists():
            return []
        text = self.alerts.read_text()
        return [json.loads(line) for line in text.splitlines()[: text.count("\n")]]

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""


def one_story(lines: list[dict[str, Any]]) -> set[str]:
    """The record read as one story (see the module's docstring); the folders it leaves open."""
    return set(open_readers(lines))


def open_readers(lines: list[dict[str, Any]]) -> dict[str, set[str]]:
    """The record read as one story (see the module's docstring): folder → who its open exposure says can read
    (the ``users`` of its latest event), for the folders it leaves open. A failure names the folder's lines."""
    ids = [line["event_id"] for line in lines]
    assert len(ids) == len(set(ids)), "an exposure event delivered twice to JSONL"
    stories: dict[str, list[dict[str, Any]]] = {}
    open_in: dict[str, str] = {}
    latest: dict[str, dict[str, Any]] = {}
    for line in lines:
        story = stories.setdefault(line["exposure_id"], [])
        assert line["sequence"] == len(story), (
            f"{line['event_id']} after {[e['event_id'] for e in story]}\n" + folder_story(lines, line["folder"])
        )
        if not story:
            assert line["status"] == "opened", (
                f"{line['event_id']}: {line['status']} of an exposure never opened\n"
                + folder_story(lines, line["folder"])
            )
            assert line["folder"] not in open_in, f"{line['folder']}: two open exposures\n" + folder_story(
                lines, line["folder"]
            )
            open_in[line["folder"]] = line["exposure_id"]
        else:
            assert story[-1]["status"] != "closed", f"{line['event_id']} after the close\n" + folder_story(
                lines, line["folder"]
            )
        if line["status"] == "closed":
            del open_in[line["folder"]]
        story.append(line)
        latest[line["exposure_id"]] = line
    for exposure_id in open_in.values():
        last = latest[exposure_id]
        assert not last["users_truncated"] and last["people"] == len(last["users"]), last
    return {folder: set(latest[exposure_id]["users"]) for folder, exposure_id in open_in.items()}


def folder_story(lines: list[dict[str, Any]], folder: str) -> str:
    """The JSONL lines of ``folder`` (with their place in the file and their burst), for a failure message: which
    events the alerts stage wrote in which order, and in which burst each went."""
    return "\n".join(
        f"  line {n}: {line['status']} {line['exposure_id']}.{line['sequence']} burst {line['group_id']} "
        f"opened_at {line['opened_at']} observed_at {line['observed_at']} detected_at {line['detected_at']} "
        f"people {line['people']}"
        for n, line in enumerate(lines)
        if line["folder"] == folder
    )


def record_as_told(lines: list[dict[str, Any]]) -> str:
    """What a failure message says of the record: who reads each open folder, or why the record is no one story."""
    try:
        return str(open_readers(lines))
    except AssertionError as exc:
        return f"no one story: {exc}"


@pytest.fixture
def fake_slack() -> Iterator[FakeSlack]:
    with FakeSlack(TOKEN, channels=(CHANNEL,)) as server:
        yield server


MOMENTS = ("no-checkpoint", "mid-recursive", "after-publishing", "mid-changes")
"""The awkward moments, each killed at in a quarter of the rounds (in a shuffled order): right after a start with no
checkpoint (deleted first: the restart replays all history, as in a process's first 30 s), in the middle of a
recursive setfacl, between publishing exposures and committing the input, and after several changes in one
process lifetime. Every round also makes one or two changes while the process is down."""


def moments_for(rounds: int, rng: random.Random) -> list[str]:
    """``rounds`` moments, as even a share of each as ``rounds`` allows, shuffled."""
    moments = [MOMENTS[n % len(MOMENTS)] for n in range(rounds)]
    rng.shuffle(moments)
    return moments


def kill_rounds(rig: AllInOne, share: Share, rounds: int, rng: random.Random) -> list[str]:
    """The rounds; returns what each did, for a failure message."""
    history: list[str] = []
    for n, moment in enumerate(moments_for(rounds, rng)):
        did = [moment]
        if moment == "no-checkpoint":
            removed = sorted((rig.workdir / "state").glob("processor-*.checkpoint"))
            for path in removed:
                path.unlink()
            did.append(f"{len(removed)} checkpoint(s) removed")
        if moment == "after-publishing":
            rig.start(kill_after_publishing=rng.randint(1, 2))
        else:
            rig.start()
        if moment == "no-checkpoint":  # before the first checkpoint, mid-baseline or mid-replay
            time.sleep(rng.uniform(0.0, 1.5))
            did += [change(share, rng)]
        elif moment == "mid-recursive":  # while a recursive change over hundreds of paths is read and published
            time.sleep(rng.uniform(0.8, 2.0))
            klienter = str(share.folder("klienter"))
            if klienter in share.exposed_by_the_kernel():
                recursive = ["setfacl", "-R", "-b", klienter]
            else:
                recursive = ["setfacl", "-R", "-m", f"g:{STAFF}:rX", klienter]
            setfacl = subprocess.Popen(recursive)
            time.sleep(rng.uniform(0.0, 0.3))
            rig.kill()
            assert setfacl.wait(60) == 0
            did.append(" ".join(recursive[:3]) + " klienter")
        else:
            time.sleep(rng.uniform(0.8, 2.0))
            for _ in range(rng.randint(1, 4)):  # several exposure-moving changes in one process lifetime
                did.append(change(share, rng))
                time.sleep(rng.uniform(0.0, 0.4))
        if moment == "after-publishing":
            for _ in range(6):  # until a change publishes an exposure event and the shim kills it at the commit
                if died(rig, 5.0):
                    break
                did.append(toggle(share, rng))
            else:
                raise AssertionError("the processor published nothing to die after: " + ", ".join(did))
            did.append("died after publishing")
        if rig.proc is not None:
            rig.kill()
        for _ in range(rng.randint(1, 2)):  # changes while down
            did.append("down: " + change(share, rng))
        history.append(f"round {n}: " + ", ".join(did))
        rig.start()
        expected: dict[str, set[str]] = {}

        def agrees() -> bool:
            nonlocal expected
            expected = share.readers_by_the_kernel()
            return open_readers(rig.lines()) == expected

        try:
            wait_until(agrees, "the open exposures and their readers to equal the kernel's verdict", timeout=90)
        except AssertionError:
            told = [line for line in rig.log().splitlines() if "permwatch.processor" in line or "starting" in line]
            raise AssertionError(
                f"after {history[-1]}: open on the record (with who reads) {record_as_told(rig.lines())}, "
                f"the kernel lets these outsiders read {expected}\n" + "\n".join(history) + "\n"
                "the processor's last lines:\n" + "\n".join(told[-60:])
            ) from None
        rig.kill()  # the next round starts it again, as a kill here is one more restart
    return history


def slack_roots(slack: FakeSlack) -> dict[str, list[dict[str, Any]]]:
    """group id → the root messages Slack holds for it."""
    roots: dict[str, list[dict[str, Any]]] = {}
    for message in slack.root_messages(CHANNEL):
        roots.setdefault(message["metadata"]["event_payload"]["group_id"], []).append(message)
    return roots


def check_slack(slack: FakeSlack, lines: list[dict[str, Any]]) -> None:
    """Every burst of the JSONL record has one root message in Slack, its changes and closes as replies in that
    thread, no message was posted twice, and no exposure event is told by two messages (the event ids in their
    metadata), and every open and close (not a first scan's) is told by one."""
    keys = [m["metadata"]["event_payload"]["post_key"] for m in slack.messages]
    assert len(keys) == len(set(keys)), "a Slack message posted twice"
    told = Counter(e for m in slack.messages for e in set(m["metadata"]["event_payload"].get("event_ids", ())))
    twice = {e for e, n in told.items() if n > 1}
    assert not twice, [
        (m["metadata"]["event_payload"], m["thread_ts"], m["ts"], m["text"][:120])
        for m in slack.messages
        if twice & set(m["metadata"]["event_payload"].get("event_ids", ()))
    ]
    # (what a first scan found is told by its burst's root alone: not again when it joins a root already posted)
    record = [
        line["event_id"] for line in lines if line["status"] in ("opened", "closed") and not line.get("preexisting")
    ]
    # exactly once: at most once is asserted above, at least once here (an opening that came in one update with
    # its later changes, as a backlog after a restart brings them, once vanished behind them)
    untold = [e for e in record if told[e] == 0]
    print(f"Slack: {len(record) - len(untold)} of {len(record)} opens and closes named by one message")
    assert not untold, f"{len(untold)} opens/closes of {len(record)} named by no Slack message: {untold}"
    assert set(told) <= {line["event_id"] for line in lines}, "Slack told an event JSONL does not hold"
    roots = slack_roots(slack)
    assert {line["group_id"] for line in lines} == set(roots)
    assert all(len(found) == 1 for found in roots.values())
    root_ts = {found[0]["ts"] for found in roots.values()}
    assert all(m["thread_ts"] in root_ts for m in slack.messages if m["thread_ts"] is not None)
    assert all(TOKEN not in text for text in slack.all_recorded_text())


def run_kill_test(
    workdir: Path, transport: str, slack: FakeSlack, rounds: int, seed: int, keep: Path | None = None
) -> None:
    """The test; on a failure the JSONL record, the log and the config are copied to ``keep`` (it outlives the
    work directory) and the message says so, with the log's last lines of the processor and the alerts stage."""
    try:
        _run_kill_test(workdir, transport, slack, rounds, seed)
    except AssertionError as exc:
        if keep is None:
            raise
        keep.mkdir(parents=True, exist_ok=True)
        for name in ("alerts.jsonl", "permwatch.log", "permwatch.toml"):
            if (workdir / name).exists():
                shutil.copy2(workdir / name, keep / name)
        log = (workdir / "permwatch.log").read_text(errors="replace") if (workdir / "permwatch.log").exists() else ""
        told = [line for line in log.splitlines() if "permwatch.processor" in line or "permwatch.alerts" in line]
        raise AssertionError(
            f"{exc}\n(seed {seed}: the record, the log and the config are kept in {keep})\n"
            "the processor's and the alerts stage's last lines:\n" + "\n".join(told[-40:])
        ) from exc


def _run_kill_test(workdir: Path, transport: str, slack: FakeSlack, rounds: int, seed: int) -> None:
    rng = random.Random(seed)
    share = make_share(workdir)
    rig = AllInOne(workdir, share, slack, transport)
    try:
        history = kill_rounds(rig, share, rounds, rng)
        rig.start()
        wait_until(lambda: one_story(rig.lines()) == share.exposed_by_the_kernel(), "the final verdict", 90)
        # revert everything: every episode closes
        for name in FOLDERS:
            subprocess.run(["setfacl", "-R", "-b", str(share.folder(name))], check=True)
            subprocess.run(["chmod", "-R", "o-rwx", str(share.folder(name))], check=True)
        share.nested = False
        share.write_directory()
        wait_until(lambda: one_story(rig.lines()) == set() == share.exposed_by_the_kernel(), "every close", 90)
        assert rig.stop() == 0
    finally:
        if rig.proc is not None:
            rig.kill()
    lines = rig.lines()
    print(f"\n{rounds} kills ({seed=}): {len(lines)} exposure events, "
          f"{sum(1 for line in lines if line['status'] == 'opened')} episodes\n" + "\n".join(history))  # fmt: skip
    log = rig.log()
    assert "Traceback" not in log, log[log.index("Traceback") - 2000 :][:6000]
    wait_until(lambda: {line["group_id"] for line in lines} <= set(slack_roots(slack)), "every burst in Slack", 60)
    check_slack(slack, lines)


def test_kill_anywhere_on_the_embedded_log(tmp_path: Path, fake_slack: FakeSlack) -> None:
    with traversable_tempdir("permwatch-kill-") as base:
        run_kill_test(base, "", fake_slack, rounds=50, seed=SEED, keep=tmp_path / "kept")


def test_kill_anywhere_on_kafka(
    kafka_broker: KafkaBroker, kafka_topic_prefix: str, fake_slack: FakeSlack, tmp_path: Path
) -> None:
    transport = f"""
[transport]
kind = "kafka"
[transport.kafka]
bootstrap_servers = "{kafka_broker.bootstrap}"
topic_prefix = "{kafka_topic_prefix}"
partitions = 3
session_timeout_seconds = 6
"""
    with traversable_tempdir("permwatch-kill-kafka-") as base:
        run_kill_test(base, transport, fake_slack, rounds=KAFKA_ROUNDS, seed=SEED + 1, keep=tmp_path / "kept")


if __name__ == "__main__":  # a longer run by hand: python -m tests.integration.test_kill_anywhere ROUNDS SEED
    with traversable_tempdir("permwatch-kill-") as where, FakeSlack(TOKEN, channels=(CHANNEL,)) as slack:
        run_kill_test(where, "", slack, rounds=int(sys.argv[1]), seed=int(sys.argv[2]))
