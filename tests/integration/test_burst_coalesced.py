"""Issue 21: a recursive setfacl read the coalesced way (no overflow: the collector holds the burst's changes
until it goes quiet and reads them together, by directory listing) publishes every path's final state, the
exposures appear on the folders the kernel says outsiders can read, and a change made mid-burst (a labelled
folder closed again before the burst is read) is what the record ends with."""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from collectors.fs.readers.posix import read_path_state
from tests.integration.burst_share import DIRECTORY, STAFF, build, inotify_limit, outsider_can_read
from tests.integration.pipeline import Pipeline, traversable_tempdir, wait_until
from tests.integration.servers.kafka import KafkaBroker

pytestmark = pytest.mark.integration

LABELLED, SUBFOLDERS = 6, 150


@pytest.fixture
def share() -> Iterator[Path]:
    with traversable_tempdir("permwatch-burst-coalesced-") as base:
        yield base / "share"


def acl_of(entries: list[dict[str, object]]) -> set[tuple[object, object, object]]:
    return {(entry["tag"], entry.get("qualifier"), entry["perms"]) for entry in entries}


def test_a_burst_read_together_publishes_the_final_state_and_the_exposures(
    kafka_broker: KafkaBroker, share: Path, tmp_path: Path
) -> None:
    cases, _ = build(share, labelled=LABELLED, untouched=0, subfolders=SUBFOLDERS)
    pipe = Pipeline(tmp_path, kafka_broker.bootstrap, f"coalesced{os.getpid()}.", share=share)
    pipe.directory_path.write_text(DIRECTORY)
    pipe.write_config(
        f'[labels.definitions.case]\nallowed_groups = ["ledningsgrupp"]\n'
        f'[[labels.rules]]\nglob = "{share}/cases/case-*"\nlabel = "case"\n'
    )
    # Every change makes a burst (burst_paths = 1) and it is read a second after it went quiet, so the
    # change made right after setfacl -R lands in the same held backlog.
    text = pipe.config_path.read_text()
    fs_table = 'collector_id = "it-fs"\n'
    pipe.config_path.write_text(text.replace(fs_table, fs_table + "burst_paths = 1\nburst_quiet_ms = 1000\n"))
    pipe.start("processor")
    try:
        with inotify_limit("max_queued_events", 1_000_000):  # no overflow: the live path, coalesced
            pipe.start("collector")
            wait_until(lambda: any(e["type"] == "fs.scan_completed" for e in pipe.fs_events()), "the baseline")
        pipe.wait_quiet()
        assert pipe.exposures() == []

        closed_again = cases[1]
        subprocess.run(["setfacl", "-R", "-m", f"g:{STAFF}:rX", str(share / "cases")], check=True)
        subprocess.run(["setfacl", "-x", f"g:{STAFF}", str(closed_again)], check=True)  # mid-burst
        readable = {str(f) for f in cases if outsider_can_read(f)}
        assert readable == {str(f) for f in cases if f != closed_again}, "the kernel's view"

        def open_now() -> set[str]:
            last: dict[str, str] = {}
            for exposure in pipe.exposures():
                last[exposure["folder"]] = exposure["status"]
            return {folder for folder, status in last.items() if status != "closed"}

        wait_until(lambda: open_now() >= readable, "an exposure on every folder outsiders can read", timeout=120)
        everything = {
            os.path.join(dirpath, name) for dirpath, names, _ in os.walk(share / "cases") for name in names
        } | {str(share / "cases")}

        def final_states_published() -> bool:
            last: dict[str, dict[str, object]] = {}
            for event in pipe.fs_events():
                if event["type"] == "fs.permission":
                    last[event["path"]] = event
            for path in everything:
                state = read_path_state(path)
                event = last.get(path)
                if state is None or event is None:
                    return False
                wanted = {(e.tag.value, e.qualifier, e.perms) for e in state.acl}
                if (event["mode"], acl_of(event["acl"])) != (state.mode, wanted):  # type: ignore[arg-type]
                    return False
            return True

        wait_until(final_states_published, "every path's final state on the fs topic", timeout=120)
        pipe.wait_quiet()
        assert open_now() == readable, "and on no other folder"
        assert str(closed_again) not in open_now()
        log = pipe.log("collector")
        assert "read a burst's" in log, "the burst was read the coalesced way"
        assert "overflow" not in log.lower()
    finally:
        pipe.stop()
