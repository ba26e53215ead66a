"""Issue 2's acceptance on real files, real setfacl/chmod and a real Kafka broker.

One pipeline (collector, processor and alerts as separate ``permwatch run``
processes) serves the module; each test works on its own labelled folder and
looks only at exposure events that appeared after it started.
"""

from __future__ import annotations

import json
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from kafka import KafkaProducer

from tests.integration.pipeline import Pipeline, traversable_tempdir, wait_until
from tests.integration.servers.kafka import KafkaBroker

pytestmark = pytest.mark.integration

MGMT, STAFF = 30001, 30002
USERS = [
    {"name": "anna", "uid": 31001, "primary_group": "ledningsgrupp"},
    {"name": "bengt", "uid": 31002, "primary_group": "ledningsgrupp"},
    *(
        {"name": n, "uid": 31003 + i, "primary_group": "alla"}
        for i, n in enumerate(["cecilia", "david", "elin", "fredrik", "gunilla"])
    ),
    {"name": "hugo", "uid": 31010, "gid": 30003},
]
GROUPS = [
    {"name": "ledningsgrupp", "gid": MGMT, "members": ["anna", "bengt"], "groups": []},
    {"name": "alla", "gid": STAFF, "members": ["cecilia", "david", "elin", "fredrik", "gunilla"], "groups": []},
    {"name": "gaster", "gid": 30003, "members": ["hugo"], "groups": []},
]
FOLDERS = ["acl", "other", "nest", "deep", "restart"]


def write_directory(path: Path, groups: list[dict[str, Any]]) -> None:
    tmp = path.with_suffix(".tmp")
    tmp.write_text(yaml.safe_dump({"users": USERS, "groups": groups}), encoding="utf-8")
    tmp.replace(path)


def sh(*args: str) -> None:
    subprocess.run(args, check=True)


@pytest.fixture(scope="module")
def share() -> Iterator[Path]:
    with traversable_tempdir("permwatch-it-") as base:
        yield base / "share"


@pytest.fixture(scope="module")
def pipeline(kafka_broker: KafkaBroker, share: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Pipeline]:
    share.mkdir()
    os.chmod(share, 0o755)
    for name in FOLDERS:
        folder = share / f"ledning-{name}"
        folder.mkdir()
        os.chown(folder, 0, MGMT)
        os.chmod(folder, 0o750)
        notes = folder / "protokoll.txt"
        notes.write_text("personal data\n")
        os.chown(notes, 0, MGMT)
        os.chmod(notes, 0o640)
    deep = share / "ledning-deep"
    os.chmod(deep, 0o711)
    (deep / "sub").mkdir()
    os.chmod(deep / "sub", 0o711)
    (deep / "sub" / "rapport.txt").write_text("client names\n")
    os.chmod(deep / "sub" / "rapport.txt", 0o600)
    closed = share / "closed"
    (closed / "inner").mkdir(parents=True)
    os.chmod(closed, 0o700)
    os.chmod(closed / "inner", 0o750)

    workdir = tmp_path_factory.mktemp("pipeline")
    prefix = f"p{os.getpid()}."
    pipe = Pipeline(workdir, kafka_broker.bootstrap, prefix, share=share)
    write_directory(pipe.directory_path, GROUPS)
    pipe.write_config(
        f"""
[labels.definitions.ledning]
severity = "critical"
allowed_groups = ["ledningsgrupp"]
[[labels.rules]]
glob = "{share}/ledning-*"
label = "ledning"
[[labels.rules]]
glob = "{share}/closed/inner"
label = "ledning"
"""
    )
    pipe.start_all()
    try:
        labels = wait_until(
            lambda: len(pipe.reader("labels").read()) >= len(FOLDERS) + 1 and pipe.reader("labels").values,
            "the labels of every folder",
        )
        assert {v["path"] for v in labels} == {str(share / f"ledning-{n}") for n in FOLDERS} | {str(closed / "inner")}
        pipe.wait_fs_event(deep / "sub" / "rapport.txt")
        pipe.wait_quiet()
        assert pipe.exposures() == [], "the baseline must not be exposed"
        yield pipe
    finally:
        pipe.stop()
        for role in ("collector", "processor", "alerts"):
            log = pipe.log(role)
            assert "Traceback" not in log, f"{role} log:\n{log[-3000:]}"


def new_exposures(pipe: Pipeline, since: int) -> list[dict[str, Any]]:
    return pipe.exposures()[since:]


def wait_exposure(pipe: Pipeline, since: int, folder: Path, status: str) -> dict[str, Any]:
    return wait_until(
        lambda: next(
            (e for e in new_exposures(pipe, since) if e["folder"] == str(folder) and e["status"] == status), None
        ),
        f"exposure {status} on {folder}",
    )


def test_named_group_acl_opens_and_closes(pipeline: Pipeline, share: Path) -> None:
    folder = share / "ledning-acl"
    mark = len(pipeline.exposures())
    sh("setfacl", "-m", f"g:{STAFF}:rx", str(folder))
    opened = wait_exposure(pipeline, mark, folder, "opened")
    assert opened["groups"] == ["alla"]
    assert opened["people"] == 5
    assert opened["label"]["name"] == "ledning"
    assert any(g["entry"] == "group:alla" for g in opened["grants"])
    sh("setfacl", "-x", f"g:{STAFF}", str(folder))
    closed = wait_exposure(pipeline, mark, folder, "closed")
    assert closed["exposure_id"] == opened["exposure_id"]
    assert closed["duration_seconds"] > 0
    assert [e["status"] for e in new_exposures(pipeline, mark)] == ["opened", "closed"]
    # the alert sink delivered each exactly once
    delivered = wait_until(
        lambda: (
            [
                json.loads(line)
                for line in pipeline.alerts_path.read_text().splitlines()
                if json.loads(line)["exposure_id"] == opened["exposure_id"]
            ]
            if pipeline.alerts_path.exists()
            else None
        ),
        "alerts in the JSONL sink",
    )
    wait_until(
        lambda: (
            len([1 for line in pipeline.alerts_path.read_text().splitlines() if opened["exposure_id"] in line]) == 2
        ),
        "both alerts",
    )
    assert [d["status"] for d in delivered][:1] == ["opened"]


def test_other_bits_need_traversable_ancestors(pipeline: Pipeline, share: Path) -> None:
    mark = len(pipeline.exposures())
    inner = share / "closed" / "inner"
    os.chmod(inner, 0o755)  # o+rx, but nobody else can traverse share/closed
    pipeline.wait_fs_event(inner, lambda e: e["mode"] == 0o755)
    pipeline.wait_quiet()
    assert new_exposures(pipeline, mark) == []

    folder = share / "ledning-other"
    os.chmod(folder, 0o755)
    opened = wait_exposure(pipeline, mark, folder, "opened")
    assert opened["people"] == 6  # everyone in the directory but the two managers
    assert any(g["entry"] == "other::" for g in opened["grants"])
    os.chmod(folder, 0o750)
    wait_exposure(pipeline, mark, folder, "closed")
    assert all(e["folder"] != str(inner) for e in new_exposures(pipeline, mark))


def test_nesting_all_staff_into_management_group(pipeline: Pipeline, share: Path) -> None:
    mark = len(pipeline.exposures())
    nested = [dict(g) for g in GROUPS]
    nested[0]["groups"] = ["alla"]
    write_directory(pipeline.directory_path, nested)
    opened = wait_exposure(pipeline, mark, share / "ledning-nest", "opened")
    assert "alla" in opened["groups"]
    assert opened["people"] == 5
    alla = next(g for g in opened["grants"] if g["group"] == "alla")
    assert alla["chain"] == ["alla", "ledningsgrupp"]
    # every folder the management group may read is exposed, the one behind a closed parent is not
    wait_until(
        lambda: (
            {e["folder"] for e in new_exposures(pipeline, mark) if e["status"] == "opened"}
            >= {str(share / f"ledning-{n}") for n in FOLDERS if n != "deep"}
        ),
        "every management folder exposed",
    )
    write_directory(pipeline.directory_path, GROUPS)
    wait_exposure(pipeline, mark, share / "ledning-nest", "closed")
    pipeline.wait_quiet()
    opened_ids = {e["exposure_id"] for e in new_exposures(pipeline, mark) if e["status"] == "opened"}
    closed_ids = {e["exposure_id"] for e in new_exposures(pipeline, mark) if e["status"] == "closed"}
    assert opened_ids == closed_ids

    # hiring a manager straight into the allowed group is not an exposure
    mark = len(pipeline.exposures())
    hired = [dict(g) for g in GROUPS]
    hired[0]["members"] = ["anna", "bengt", "hugo"]
    write_directory(pipeline.directory_path, hired)
    wait_until(
        lambda: any(
            v.get("name") == "ledningsgrupp" and "hugo" in v.get("member_users", [])
            for v in pipeline.reader("directory").read()
        ),
        "the directory change on the bus",
    )
    pipeline.wait_quiet()
    assert new_exposures(pipeline, mark) == []
    write_directory(pipeline.directory_path, GROUPS)


def test_broad_group_on_a_deep_file(pipeline: Pipeline, share: Path) -> None:
    mark = len(pipeline.exposures())
    report = share / "ledning-deep" / "sub" / "rapport.txt"
    sh("setfacl", "-m", f"g:{STAFF}:r", str(report))
    opened = wait_exposure(pipeline, mark, share / "ledning-deep", "opened")
    assert opened["sample_paths"] == [str(report)]
    assert opened["paths_affected"] == 1
    assert opened["groups"] == ["alla"]
    sh("setfacl", "-b", str(report))
    wait_exposure(pipeline, mark, share / "ledning-deep", "closed")


def test_collector_killed_and_restarted_reconciles(pipeline: Pipeline, share: Path) -> None:
    mark = len(pipeline.exposures())
    scans = sum(1 for e in pipeline.fs_events() if e["type"] == "fs.scan_completed")
    pipeline.kill("collector")
    folder = share / "ledning-restart"
    os.chmod(folder, 0o755)  # changed while the collector is down
    pipeline.start("collector")
    wait_until(lambda: sum(1 for e in pipeline.fs_events() if e["type"] == "fs.scan_completed") > scans, "the rescan")
    wait_exposure(pipeline, mark, folder, "opened")
    pipeline.wait_quiet()
    # restart once more with nothing changed: no duplicate exposure, nothing re-published but the scan marker
    published = len(pipeline.fs_events())
    pipeline.kill("collector")
    pipeline.start("collector")
    wait_until(
        lambda: sum(1 for e in pipeline.fs_events() if e["type"] == "fs.scan_completed") > scans + 1,
        "the second rescan",
    )
    pipeline.wait_quiet()
    assert [e for e in pipeline.fs_events()[published:] if e["type"] != "fs.scan_completed"] == []
    assert [e["status"] for e in new_exposures(pipeline, mark) if e["folder"] == str(folder)] == ["opened"]
    os.chmod(folder, 0o750)
    wait_exposure(pipeline, mark, folder, "closed")


def test_malformed_message_is_dead_lettered_and_processor_goes_on(pipeline: Pipeline, share: Path) -> None:
    producer = KafkaProducer(bootstrap_servers=pipeline.bootstrap, acks="all")
    producer.send(pipeline.prefix + "fs", key=b"/x", value=b"{not json")
    producer.send(
        pipeline.prefix + "fs", key=b"/y", value=json.dumps({"type": "fs.permission", "schema_version": 9}).encode()
    )
    producer.flush()
    producer.close()
    letters = wait_until(
        lambda: len(pipeline.reader("deadletter").read()) >= 2 and pipeline.reader("deadletter").values, "dead letters"
    )
    reasons = [letter["reason"] for letter in letters]
    assert any("invalid" in r and "JSON" in r for r in reasons), reasons
    assert any("schema_version" in r for r in reasons), reasons
    assert all(letter["stage"] == "processor" for letter in letters)
    assert pipeline.procs["processor"].poll() is None
    assert "dead-lettered" in pipeline.log("processor")
    # and it still judges
    mark = len(pipeline.exposures())
    folder = share / "ledning-acl"
    sh("setfacl", "-m", f"g:{STAFF}:r", str(folder / "protokoll.txt"))
    os.chmod(folder, 0o751)
    wait_exposure(pipeline, mark, folder, "opened")
    sh("setfacl", "-b", str(folder / "protokoll.txt"))
    os.chmod(folder, 0o750)
    wait_exposure(pipeline, mark, folder, "closed")
