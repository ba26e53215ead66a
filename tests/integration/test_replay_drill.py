"""Issue 6's acceptance: a recorded drill replayed from Kafka and from the embedded log gives the live windows.

The drill runs live on real Kafka with real files: baseline, an opening
(setfacl), a widening through a group change (the directory file), a close.
Then the history is replayed from Kafka, archived into an embedded log file
(``permwatch archive``) and replayed from that, and both must give exactly the
exposure windows the live processor emitted. The HTML timeline is opened in
headless Chromium (Debian's package) and the exposure bar must be on screen.
"""

from __future__ import annotations

import json
import os
import shutil
import sqlite3
import subprocess
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import yaml

from permwatch.cli import main
from permwatch.cli.settings import load_config
from permwatch.events import (
    INPUT_TOPICS,
    DirectoryGroup,
    DirectoryUser,
    ExposureEvent,
    decode,
    encode,
    new_event_id,
)
from permwatch.transport import open_bus
from permwatch.transport.embedded import EmbeddedBus
from processor.forensics import exposure_windows
from processor.replay import replay
from tests.integration.pipeline import Pipeline, traversable_tempdir, wait_until
from tests.integration.servers.kafka import KafkaBroker

pytestmark = pytest.mark.integration

MGMT, STAFF = 32001, 32002
USERS = [
    {"name": "anna", "uid": 33001, "primary_group": "ledningsgrupp"},
    *({"name": n, "uid": 33002 + i, "gid": 32099} for i, n in enumerate(["bo", "cia", "dan", "eva"])),
]


def directory(staff: list[str]) -> dict[str, Any]:
    return {
        "users": USERS,
        "groups": [
            {"name": "ledningsgrupp", "gid": MGMT, "members": ["anna"]},
            {"name": "alla", "gid": STAFF, "members": staff},
        ],
    }


@pytest.fixture(scope="module")
def drill(kafka_broker: KafkaBroker, tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Pipeline, Path]]:
    with traversable_tempdir("permwatch-drill-") as base:
        share = base / "share"
        folder = share / "ledning"
        folder.mkdir(parents=True)
        os.chmod(share, 0o755)
        os.chown(folder, 0, MGMT)
        os.chmod(folder, 0o750)
        workdir = tmp_path_factory.mktemp("drill")
        pipe = Pipeline(workdir, kafka_broker.bootstrap, f"drill{os.getpid()}.", share=share)
        pipe.directory_path.write_text(yaml.safe_dump(directory(["bo", "cia"])))
        pipe.label_one_folder(folder, "ledningsgrupp")
        try:
            pipe.start_and_settle()
            subprocess.run(["setfacl", "-m", f"g:{STAFF}:rx", str(folder)], check=True)
            wait_until(lambda: any(e["status"] == "opened" for e in pipe.exposures()), "the opening")
            tmp = pipe.directory_path.with_suffix(".tmp")
            tmp.write_text(yaml.safe_dump(directory(["bo", "cia", "dan"])))
            tmp.replace(pipe.directory_path)
            wait_until(lambda: any(e["status"] == "changed" for e in pipe.exposures()), "the widening")
            subprocess.run(["setfacl", "-x", f"g:{STAFF}", str(folder)], check=True)
            wait_until(lambda: any(e["status"] == "closed" for e in pipe.exposures()), "the close")
            pipe.wait_quiet()
            yield pipe, folder
        finally:
            pipe.stop()


def test_replays_from_kafka_and_embedded_log_equal_the_live_windows(
    drill: tuple[Pipeline, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    pipe, folder = drill
    live = exposure_windows(ExposureEvent.model_validate(e) for e in pipe.exposures())
    assert [w.key()[0] for w in live] == [str(folder)]
    assert [c["status"] for c in live[0].changes] == ["opened", "changed", "closed"]
    assert live[0].max_people == 3 and live[0].groups == ["alla"]

    config = load_config(pipe.config_path)
    kafka = open_bus(config.transport)
    from_kafka = exposure_windows(replay(kafka.history(INPUT_TOPICS)).verdicts)
    kafka.close()
    assert [w.key() for w in from_kafka] == [w.key() for w in live]
    assert [w.exposure_id for w in from_kafka] == [w.exposure_id for w in live]

    archive = tmp_path / "workshop.db"
    assert main(["archive", "--config", str(pipe.config_path), "--output", str(archive)]) == 0
    embedded = EmbeddedBus(archive)
    from_embedded = exposure_windows(replay(embedded.history(INPUT_TOPICS)).verdicts)
    embedded.close()
    assert [w.key() for w in from_embedded] == [w.key() for w in live]

    # the CLI over the archive says the same
    offline = tmp_path / "offline.toml"
    offline.write_text(f'[transport]\nkind = "embedded"\n[transport.embedded]\npath = "{archive}"\n')
    capsys.readouterr()
    assert main(["exposures", "--config", str(offline), "--json"]) == 0
    listed = json.loads(capsys.readouterr().out)
    assert [(w["folder"], w["max_people"], w["groups"]) for w in listed] == [(str(folder), 3, ["alla"])]
    assert main(["exposures", "--config", str(offline), "--json", "--recorded"]) == 0
    assert [w["exposure_id"] for w in json.loads(capsys.readouterr().out)] == [live[0].exposure_id]


def test_who_can_read_in_and_before_the_window(
    drill: tuple[Pipeline, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    pipe, folder = drill
    [window] = exposure_windows(ExposureEvent.model_validate(e) for e in pipe.exposures())
    assert window.closed_at is not None
    inside = window.opened_at + (window.closed_at - window.opened_at) / 2
    capsys.readouterr()
    assert (
        main(["who-can-read", str(folder), "--at", inside.isoformat(), "--config", str(pipe.config_path), "--json"])
        == 0
    )
    readers = json.loads(capsys.readouterr().out)["readers"]
    outside = {(r["user"], r["group"], tuple(r["chain"])) for r in readers if not r["allowed"]}
    assert ("bo", "alla", ("alla",)) in outside and ("cia", "alla", ("alla",)) in outside
    before = datetime.fromtimestamp(window.opened_at.timestamp() - 0.001, UTC)
    assert (
        main(["who-can-read", str(folder), "--at", before.isoformat(), "--config", str(pipe.config_path), "--json"])
        == 0
    )
    readers = json.loads(capsys.readouterr().out)["readers"]
    assert [r for r in readers if not r["allowed"]] == []


@pytest.mark.skipif(
    shutil.which("chromium") is None, reason="Debian chromium is installed by scripts/install.sh --test"
)
def test_html_timeline_renders_in_headless_chromium(drill: tuple[Pipeline, Path], tmp_path: Path) -> None:
    from PIL import Image

    pipe, folder = drill
    page = tmp_path / "timeline.html"
    assert main(["timeline", str(folder), "--config", str(pipe.config_path), "--format", "html", "-o", str(page)]) == 0
    shot = tmp_path / "timeline.png"
    flags = [
        "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
        "--disable-background-networking", "--disable-component-update", "--disable-sync",
        f"--user-data-dir={tmp_path / 'chromium-profile'}", "--window-size=1100,700",
    ]  # fmt: skip
    subprocess.run(
        ["chromium", *flags, f"--screenshot={shot}", page.as_uri()], check=True, capture_output=True, timeout=120
    )
    dom = subprocess.run(
        ["chromium", *flags, "--dump-dom", page.as_uri()], check=True, capture_output=True, timeout=120
    )
    assert b'class="exposure-bar"' in dom.stdout
    image = Image.open(shot).convert("RGB")
    bar = (0xD7, 0x26, 0x3D)
    red = sum(count for count, colour in image.getcolors(maxcolors=1 << 24) or [] if colour == bar)
    assert red > 100, f"the exposure bar is not on the screenshot ({red} bar-coloured pixels)"


def _answers(capsys: pytest.CaptureFixture[str], config: Path, folder: Path, at: datetime, *full: str) -> list[Any]:
    """who-can-read (the folder and its share), exposures --since and the folder's timeline, as JSON, and what
    the commands said on stderr."""
    answers: list[Any] = []
    said = ""
    for path in (folder, folder.parent):
        # (1 at a moment before the path's first record: then both ways must say so)
        code = main(["who-can-read", str(path), "--at", at.isoformat(), "--config", str(config), "--json", *full])
        out = capsys.readouterr()
        answers.append((code, json.loads(out.out) if code == 0 else out.err.splitlines()[-1]))
        said += out.err
    assert main(["exposures", "--since", at.isoformat(), "--config", str(config), "--json", *full]) == 0
    out = capsys.readouterr()
    answers.append(json.loads(out.out))
    said += out.err
    assert main(["timeline", str(folder), "--config", str(config), "--format", "json", *full]) == 0
    out = capsys.readouterr()
    answers.append(json.loads(out.out))
    return [answers, said + out.err]


def test_answers_from_snapshots_and_the_folder_index_equal_a_full_replay(
    drill: tuple[Pipeline, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Issue 21: the recorded drill asked at several moments, through the workshop store (snapshots after
    every batch) and by a full replay, over Kafka and over an archive of it; then with its snapshots broken."""
    pipe, folder = drill
    archive = tmp_path / "workshop.db"
    assert main(["archive", "--config", str(pipe.config_path), "--output", str(archive)]) == 0
    offline = tmp_path / "offline.toml"
    offline.write_text(
        f'state_dir = "{tmp_path / "state"}"\n'
        f'[transport]\nkind = "embedded"\n[transport.embedded]\npath = "{archive}"\n'
    )
    embedded = EmbeddedBus(archive)
    stamps = sorted({r.timestamp_ms for r in embedded.history(INPUT_TOPICS)})
    embedded.close()
    [window] = exposure_windows(ExposureEvent.model_validate(e) for e in pipe.exposures())
    assert window.closed_at is not None
    moments = [window.opened_at, window.opened_at + (window.closed_at - window.opened_at) / 2, window.closed_at]
    moments += [datetime.fromtimestamp(ms / 1000, UTC) for ms in stamps[len(stamps) // 2 :: max(1, len(stamps) // 8)]]
    for config, asked in ((pipe.config_path, moments[:3]), (offline, moments)):
        capsys.readouterr()
        assert main(["snapshot", "--config", str(config), "--every", "1"]) == 0
        assert "snapshots into" in capsys.readouterr().err
        from_snapshot, readable = [], []
        for at in asked:
            answers, said = _answers(capsys, config, folder, at)
            assert "not using" not in said and "(the folder's index)" in said
            from_snapshot.append("from the first record" not in said)
            assert answers == _answers(capsys, config, folder, at, "--full-replay")[0], (config, at)
            readable.append(answers[0][0] == 0)
        assert all(from_snapshot), "a question was answered by replaying from the first record"
        assert sum(readable) >= 3, "the folder was in the history at too few of the moments asked"

    # the log grows after the build: the store answers for what it holds and reads the rest from Kafka by
    # position (a directory change published now, after every recorded time), as a full replay does
    kafka = open_bus(load_config(pipe.config_path).transport)
    try:
        recorded = [decode(r.value) for r in kafka.history(INPUT_TOPICS) if r.value]
        users = sorted({e.name for e in recorded if isinstance(e, DirectoryUser)})
        group = [e for e in recorded if isinstance(e, DirectoryGroup)][-1]
        grown = group.model_copy(
            update={"event_id": new_event_id(), "observed_at": datetime.now(UTC), "member_users": tuple(users)}
        )
        kafka.publish(grown.topic, grown.key, encode(grown))
        kafka.flush()
    finally:
        kafka.close()
    now = datetime.now(UTC)
    for at in (moments[1], now):
        answers, said = _answers(capsys, pipe.config_path, folder, at)
        assert "1 record behind the log" in said and "not using" not in said
        assert answers == _answers(capsys, pipe.config_path, folder, at, "--full-replay")[0], at

    # a timeline asked by exposure id finds the folder in the store's windows
    by_id, said_by_id = [], []
    for full in ((), ("--full-replay",)):
        assert main(["timeline", window.exposure_id, "--config", str(offline), "--format", "json", *full]) == 0
        out = capsys.readouterr()
        by_id.append(json.loads(out.out))
        said_by_id.append(out.err)
    assert "from the workshop store" in said_by_id[0] and "from the workshop store" not in said_by_id[1]
    assert by_id[0] == by_id[1] and by_id[0]["exposures"][0]["exposure_id"] == window.exposure_id

    # every snapshot of the archive's store broken: the same answers, from the first record, saying why
    store = next((tmp_path / "state" / "workshop").glob("store-*.db"))
    conn = sqlite3.connect(store)
    conn.execute("UPDATE snapshots SET data = CAST(substr(data, 1, length(data) - 1) AS BLOB)")
    conn.commit()
    conn.close()
    answers, said = _answers(capsys, offline, folder, moments[1])
    assert "truncated or corrupt; replaying from an older one" in said
    assert "from the first record" in said
    assert answers == _answers(capsys, offline, folder, moments[1], "--full-replay")[0]
