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
import subprocess
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import yaml

from permwatch.cli import main
from permwatch.cli.settings import load_config
from permwatch.events import INPUT_TOPICS, ExposureEvent
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
