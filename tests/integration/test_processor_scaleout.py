"""Issue 7: three processors in one consumer group, one killed with SIGKILL mid-run and a fourth added
later, then one stopped and one killed and each started again at once, give the same exposures as one
processor.

The same recorded input (the very same events, ids included) goes onto two sets of topics on the
real broker: one is handled by a single processor, the other by three ``processor.partitioned``
processors sharing the ``fs`` partitions. Input comes in rounds (each round changes each folder at
most once, and the next round waits until the processors have committed the last), so both runs
judge at the same points and their exposures can be compared one for one. A directory change in
the middle (the broad group nested into the allowed group and taken out again) reaches every
folder through the directory topic, which each processor reads whole. Each rebalance (the kill, the
addition) makes the processors rebuild what they now own and reconcile with the exposures on record.
A processor started again within the session timeout keeps its partitions (static membership) and
resumes from its checkpoint, replaying only what came after it.
"""

from __future__ import annotations

import os
import random
import re
import signal
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest
from kafka import KafkaAdminClient, KafkaConsumer, TopicPartition

from collectors.runner import BusEmitter
from permwatch.config import KafkaConfig
from permwatch.events import (
    AclEntry,
    AclTag,
    DirectoryGroup,
    DirectoryUser,
    Event,
    FsKind,
    FsPermissionEvent,
    Identity,
    Label,
    LabelAssigned,
    ObjectType,
)
from permwatch.keys import FsKeys
from permwatch.transport.kafka import KafkaBus
from tests.integration.pipeline import TopicReader, permwatch_exe, wait_until
from tests.integration.servers.kafka import KafkaBroker

pytestmark = pytest.mark.integration

ROOT = "/srv/share"
FOLDERS = 120
ROUNDS = 18
MGMT, ALLA = 38001, 38002
LABEL = Label(name="ledning", allowed_groups=("ledningsgrupp",), allowed_users=("root",))


def acl(open_to_all: bool) -> tuple[AclEntry, ...]:
    staff = (AclEntry(tag=AclTag.GROUP, qualifier=ALLA, name="alla", perms=5),) if open_to_all else ()
    return (
        AclEntry(tag=AclTag.USER_OBJ, perms=7),
        AclEntry(tag=AclTag.GROUP_OBJ, perms=5),
        *staff,
        AclEntry(tag=AclTag.MASK, perms=5),
        AclEntry(tag=AclTag.OTHER, perms=0),
    )


def path_event(path: str, *, open_to_all: bool = False, mode: int = 0o750) -> FsPermissionEvent:
    return FsPermissionEvent(
        kind=FsKind.CHANGED,
        path=path,
        object_type=ObjectType.DIRECTORY,
        owner=Identity(id=0, name="root"),
        group=Identity(id=MGMT, name="ledningsgrupp"),
        mode=mode,
        acl=acl(open_to_all),
        source="scaleout-test",
    )


def groups(nested: bool) -> list[Event]:
    return [
        DirectoryGroup(
            name="ledningsgrupp", gid=MGMT, member_users=("anna",), member_groups=("alla",) if nested else ()
        ),
        DirectoryGroup(name="alla", gid=ALLA, member_users=("bo", "cia", "dan")),
    ]


def recorded_rounds() -> list[list[Event]]:
    """The input, round by round: a baseline, then ACL changes, a nesting and its undoing, more changes."""
    rng = random.Random(7)
    folders = [f"{ROOT}/f{i:02d}" for i in range(FOLDERS)]
    people = [DirectoryUser(name=n, uid=2000 + i, primary_gid=ALLA) for i, n in enumerate(("anna", "bo", "cia", "dan"))]
    root = DirectoryUser(name="root", uid=0, primary_gid=0)
    baseline: list[Event] = [root, *people, *groups(nested=False)]
    baseline += [path_event(p, mode=0o755) for p in ("/", "/srv", ROOT)]
    for folder in folders:
        baseline += [path_event(folder), path_event(f"{folder}/a"), LabelAssigned(path=folder, label=LABEL)]
    rounds = [baseline]
    opened = dict.fromkeys(folders, False)
    for n in range(ROUNDS):
        if n == ROUNDS // 3:
            rounds.append(groups(nested=True)[:1])  # one event: its time is the change's time in every run
        elif n == ROUNDS // 3 + 2:
            rounds.append(groups(nested=False)[:1])
        else:
            changes: list[Event] = []
            for folder in rng.sample(folders, FOLDERS // 2):
                opened[folder] = not opened[folder]
                target = folder if rng.random() < 0.5 else f"{folder}/a"
                changes.append(path_event(target, open_to_all=opened[folder]))
            rounds.append(changes)
    return rounds


class Run:
    """One set of topics and the processors on them."""

    def __init__(
        self, broker: KafkaBroker, workdir: Path, prefix: str, *, partitioned: bool, client: str = "kafka"
    ) -> None:
        self.broker, self.prefix = broker, prefix
        self.workdir = workdir
        workdir.mkdir(parents=True)
        self.config = workdir / "permwatch.toml"
        self.config.write_text(
            f"""
state_dir = "{workdir / "state"}"
[transport]
kind = "{client}"
[transport.kafka]
bootstrap_servers = "{broker.bootstrap}"
topic_prefix = "{prefix}"
partitions = 6
session_timeout_seconds = 6
[processor]
group = "{prefix}processor"
partitioned = {"true" if partitioned else "false"}
[labels.definitions.ledning]
allowed_groups = ["ledningsgrupp"]
""",
            encoding="utf-8",
        )
        self.bus = KafkaBus(KafkaConfig(bootstrap_servers=broker.bootstrap, topic_prefix=prefix, partitions=6))
        self.bus.ensure_topics()
        self.emitter = BusEmitter(self.bus, router=FsKeys([ROOT]))
        self.procs: dict[str, subprocess.Popen[bytes]] = {}
        self.groups = [f"{prefix}processor"]

    def start(self, instance: str) -> None:
        exe = permwatch_exe()
        env = {
            **os.environ,
            "PERMWATCH__PROCESSOR__INSTANCE_ID": instance,
            "PERMWATCH__PROCESSOR__CHECKPOINT_INTERVAL_SECONDS": "1",
        }
        with (self.workdir / f"{instance}.log").open("ab") as log:
            self.procs[instance] = subprocess.Popen(
                [exe, "run", "--config", str(self.config), "--role", "processor"],
                stdout=log,
                stderr=subprocess.STDOUT,
                env=env,
                start_new_session=True,
            )

    def log(self, instance: str) -> str:
        return (self.workdir / f"{instance}.log").read_text(errors="replace")

    def reconciled(self, instances: list[str]) -> bool:
        """Each of these processors has reconciled since its last rebuild (a reconciliation publishes without a
        commit to wait for; a rebalance before it ends starts another rebuild)."""
        return all(
            self.log(i).rfind("reconciled with") > self.log(i).rfind("rebuilding the paths this processor owns")
            for i in instances
        )

    def settled(self, instances: list[str]) -> bool:
        """The broker holds the fs group stable with exactly these processors, and each has reconciled: no
        rebalance is under way that a processor restarted now would join (and be given other partitions)."""
        if not self.reconciled(instances):
            return False
        group = f"{self.prefix}processor"
        admin = KafkaAdminClient(bootstrap_servers=self.broker.bootstrap)
        try:
            described = admin.describe_groups([group])[group]
        finally:
            admin.close()
        members = sorted(m.get("group_instance_id") or "" for m in described["members"])
        return described["group_state"] == "Stable" and members == sorted(f"{group}.{i}" for i in instances)

    def kill(self, instance: str, sig: int = signal.SIGKILL) -> None:
        proc = self.procs.pop(instance)
        os.killpg(proc.pid, sig)
        proc.wait(30)

    def starts(self, instance: str) -> list[str]:
        """The log of each start of ``instance``, in order."""
        return self.log(instance).split("permwatch starting (role processor")[1:]

    def publish(self, events: list[Event]) -> None:
        for event in events:
            self.emitter.emit(event)
        self.emitter.flush()

    def caught_up(self, groups_and_topics: list[tuple[str, list[str]]]) -> bool:
        for group, topics in groups_and_topics:
            consumer = KafkaConsumer(bootstrap_servers=self.broker.bootstrap, group_id=group, enable_auto_commit=False)
            try:
                names = [self.prefix + t for t in topics]
                partitions = [TopicPartition(t, p) for t in names for p in (consumer.partitions_for_topic(t) or ())]
                ends = consumer.end_offsets(partitions)
                if not all(end == 0 or (consumer.committed(tp) or 0) >= end for tp, end in ends.items()):
                    return False
            finally:
                consumer.close(autocommit=False)
        return True

    def exposures(self) -> list[dict[str, Any]]:
        reader = TopicReader(self.broker.bootstrap, self.prefix + "exposures")
        try:
            seen: list[dict[str, Any]] = []
            while True:
                before = len(seen)
                seen = reader.read()
                if len(seen) == before:
                    return seen
        finally:
            reader.close()

    def stop(self) -> None:
        for proc in self.procs.values():
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGTERM)
        for proc in self.procs.values():
            proc.wait(30)
        self.bus.close()


def windows(exposures: list[dict[str, Any]]) -> dict[str, tuple[Any, ...]]:
    """Per exposure: folder, when it opened, its people and groups at each step, when (to the second) it closed.

    Repeats of an event (at-least-once) count once. A close the new owner of a folder publishes when it
    reconciles with the record (its previous owner died between a directory change and its effect) takes
    the latest directory change as its time; which change it was is not on record, so closes compare to
    the second (the drill's events are microseconds apart)."""
    steps: dict[str, dict[int, tuple[Any, ...]]] = {}
    for e in exposures:
        steps.setdefault(e["exposure_id"], {})[e["sequence"]] = (
            e["status"],
            e["folder"],
            e["opened_at"],
            e["people"],
            tuple(e["groups"]),
            e["closed_at"] and e["closed_at"][:19],
        )
    return {exposure_id: tuple(by_seq[s] for s in sorted(by_seq)) for exposure_id, by_seq in steps.items()}


@pytest.mark.parametrize("client", ["kafka", "confluent"])
def test_three_processors_one_killed_give_the_same_exposures_as_one(
    kafka_broker: KafkaBroker, tmp_path: Path, client: str
) -> None:
    """The drill with the processors on either Kafka client (``transport.kind``); the input is published with
    kafka-python either way."""
    rounds = recorded_rounds()
    tag = f"so{client[0]}{os.getpid()}{int(time.time()) % 10000}"
    single = Run(kafka_broker, tmp_path / "single", f"{tag}a.", partitioned=False, client=client)
    shared = Run(kafka_broker, tmp_path / "shared", f"{tag}b.", partitioned=True, client=client)
    try:
        single.start("one")
        for instance in ("p1", "p2", "p3"):
            shared.start(instance)
        all_topics = ["fs", "directory", "labels"]
        single_groups = [(f"{tag}a.processor", all_topics)]

        def shared_groups(alive: list[str]) -> list[tuple[str, list[str]]]:
            own = [(f"{tag}b.processor.{i}", ["directory", "labels"]) for i in alive]
            return [(f"{tag}b.processor", ["fs"]), *own]

        alive = ["p1", "p2", "p3"]
        for n, events in enumerate(rounds):
            single.publish(events)
            shared.publish(events)
            if n == len(rounds) // 2:
                # mid-run, while the round is being handled: one processor dies without a word
                time.sleep(0.05)
                shared.kill("p2")
                alive.remove("p2")
            elif n == len(rounds) * 3 // 4:
                # later, while a round is being handled, a processor joins and takes over a share
                shared.start("p4")
                alive.append("p4")
            elif n == len(rounds) - 4:
                # a processor stopped and started again at once (an upgrade): its partitions and its checkpoint
                wait_until(lambda: shared.settled(alive), "the rebalances to settle", 120)
                shared.kill("p1", signal.SIGTERM)
                shared.start("p1")
            elif n == len(rounds) - 2:
                # and one killed mid-round and started again at once: the same, from its last checkpoint
                time.sleep(0.05)
                shared.kill("p3")
                shared.start("p3")
            wait_until(lambda: single.caught_up(single_groups), f"the single processor to handle round {n}", 120)
            wait_until(
                lambda: shared.caught_up(shared_groups(alive)),
                f"the shared processors to handle round {n}",
                120,  # a killed member's partitions move on once the broker gives up on it (session timeout)
            )
        wait_until(lambda: shared.reconciled(alive), "the last rebalance's reconciliations", 120)
        one, three = windows(single.exposures()), windows(shared.exposures())
        assert one, "the drill opened no exposure"
        assert sum(1 for w in one.values() if w[-1][0] == "closed") >= 30
        assert three == one
        for instance in alive:
            log = shared.log(instance)
            assert "Traceback" not in log
            assert "rebuilding the paths this processor owns" in log
        # the newcomer took over a share of the partitions and published the exposures it moved
        assert "p4" in alive and shared.log("p4").count("rebuilding the paths this processor owns") >= 1
        # the processors started again got their partitions back and started from their checkpoints
        for instance in ("p1", "p3"):
            again = shared.starts(instance)[-1]
            assert " loaded in " in again, again[-3000:]
            assert "fs partitions as at the checkpoint" in again, again[-3000:]
            rebuilt = re.search(r"state rebuilt [\d.]+ s after the process started, ([\d,]+) records replayed", again)
            assert rebuilt is not None and "on top of the checkpoint" in again, again[-3000:]
            replayed = int(rebuilt[1].replace(",", ""))
            assert replayed < sum(len(r) for r in rounds) // 2, f"{instance} replayed {replayed} records"
    finally:
        single.stop()
        shared.stop()
