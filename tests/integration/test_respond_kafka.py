"""Respond on Kafka (issue 19): the same decisions as on the embedded log, with each role its own process. The
``decisions`` topic is keyed by the folder; an approval made with the CLI survives a SIGKILL of the processor
and silences exactly that exposure's change, a widening alerts; ``permwatch revert`` restores the folder and the
kernel agrees."""

from __future__ import annotations

import json
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.integration.pipeline import Pipeline, permwatch_exe, traversable_tempdir, wait_until
from tests.integration.respond_rig import CECILIA, DIRECTORY, ERIK, EXTERN, STAFF, as_user, make
from tests.integration.servers.kafka import KafkaBroker

pytestmark = pytest.mark.integration


@pytest.fixture
def pipeline(kafka_broker: KafkaBroker, tmp_path: Path) -> Iterator[tuple[Pipeline, Path]]:
    with traversable_tempdir("permwatch-respond-kafka-") as base:
        share = base / "share"
        share.mkdir()
        os.chmod(share, 0o755)
        folder = make(share / "ledning", directory=True, mode=0o750)
        make(folder / "protokoll.txt", directory=False, mode=0o640)
        pipe = Pipeline(tmp_path, kafka_broker.bootstrap, f"r{os.getpid()}.", share=share)
        pipe.directory_path.write_text(yaml.safe_dump(DIRECTORY))
        pipe.write_config(
            f'[labels.definitions.ledning]\nallowed_groups = ["ledningsgrupp"]\nremediation = "on-command"\n'
            f'[[labels.rules]]\nglob = "{folder}"\nlabel = "ledning"\n'
        )
        try:
            pipe.start_and_settle(("collector", "processor", "alerts"))
            yield pipe, folder
        finally:
            pipe.stop()
            for role in ("collector", "processor", "alerts"):
                assert "Traceback" not in pipe.log(role), pipe.log(role)[-3000:]


def cli(pipe: Pipeline, *args: str) -> str:
    done = subprocess.run(
        [permwatch_exe(), *args, "--config", str(pipe.config_path)], capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr
    return done.stdout


def latest(pipe: Pipeline, **expected: Any) -> dict[str, Any] | None:
    return next((e for e in reversed(pipe.exposures()) if all(e.get(k) == v for k, v in expected.items())), None)


def alerted(pipe: Pipeline) -> set[str]:
    path = pipe.alerts_path
    return {json.loads(line)["event_id"] for line in path.read_text().splitlines()} if path.exists() else set()


def test_decisions_and_revert_on_kafka(pipeline: tuple[Pipeline, Path]) -> None:
    pipe, folder = pipeline
    notes = folder / "protokoll.txt"
    subprocess.run(["setfacl", "-m", f"g:{STAFF}:r-x", str(folder)], check=True)
    opened = wait_until(lambda: latest(pipe, status="opened"), "the exposure to open")
    assert "approve" in cli(pipe, "approve", opened["exposure_id"], "--reason", "intended", "--until", "+1d")
    decisions = pipe.reader("decisions")
    wait_until(lambda: decisions.read(), "the decision on Kafka")
    assert decisions.keys == [str(folder)] and decisions.values[0]["action"] == "approve"

    pipe.kill("processor")  # SIGKILL: the approval comes back from the decisions topic (or the checkpoint)
    pipe.start("processor")
    subprocess.run(["setfacl", "-m", f"g:{STAFF}:r--", str(notes)], check=True)
    silent = wait_until(lambda: latest(pipe, status="changed", paths_affected=2), "the approved change")
    assert silent["approval"]["reason"] == "intended" and silent["approval"]["widened"] is False
    subprocess.run(["setfacl", "-m", f"g:{EXTERN}:r-x", str(folder)], check=True)
    widened = wait_until(lambda: latest(pipe, status="changed", people=2), "the widening")
    assert widened["approval"]["widened"] is True
    wait_until(lambda: widened["event_id"] in alerted(pipe), "the widening alerted")
    assert silent["event_id"] not in alerted(pipe)

    out = cli(pipe, "revert", opened["exposure_id"], "--by", "soc")
    assert f"reverted {opened['exposure_id']}" in out
    assert not as_user(CECILIA, "ls", str(folder)) and not as_user(ERIK, "ls", str(folder))
    wait_until(lambda: latest(pipe, status="closed", exposure_id=opened["exposure_id"]), "the close")
    wait_until(lambda: len(decisions.read()) == 3, "the revert's decisions")
    assert [d["action"] for d in decisions.values] == ["approve", "revert_requested", "reverted"]
    assert set(decisions.keys) == {str(folder)}


def test_a_first_run_on_three_partitions_is_one_alert(kafka_broker: KafkaBroker, tmp_path: Path) -> None:
    """Units spread over the partitions and the scan's completion on one of them: still one alert."""
    with traversable_tempdir("permwatch-first-run-kafka-") as base:
        share = base / "share"
        share.mkdir()
        os.chmod(share, 0o755)
        folders = [make(share / f"enhet-{i}", directory=True, mode=0o750) for i in range(12)]
        for folder in folders:
            make(folder / "notes.txt", directory=False, mode=0o640)
            subprocess.run(["setfacl", "-R", "-m", f"g:{STAFF}:rX", str(folder)], check=True)
        pipe = Pipeline(tmp_path, kafka_broker.bootstrap, f"f{os.getpid()}.", share=share)
        pipe.directory_path.write_text(yaml.safe_dump(DIRECTORY))
        pipe.write_config(
            f'[labels.definitions.ledning]\nallowed_groups = ["ledningsgrupp"]\n'
            f'[[labels.rules]]\nglob = "{share}/*"\nlabel = "ledning"\n'
        )
        try:
            pipe.start_and_settle(("collector", "processor", "alerts"), labels=len(folders))
            opened = wait_until(
                lambda: len(found := [e for e in pipe.exposures() if e["status"] == "opened"]) == 12 and found,
                "twelve exposures",
            )
            assert all(e.get("preexisting") for e in opened)
            wait_until(lambda: len(alerted(pipe)) >= 12, "twelve alert lines")
            lines = [json.loads(x) for x in pipe.alerts_path.read_text().splitlines()]
            assert len({line["group_id"] for line in lines}) == 1  # one alert
            fs = pipe.reader("fs")
            fs.read()
            assert len({key for key in fs.keys if key}) >= 12  # one key per unit: spread over the three partitions
        finally:
            pipe.stop()
            for role in ("collector", "processor", "alerts"):
                assert "Traceback" not in pipe.log(role), pipe.log(role)[-3000:]
