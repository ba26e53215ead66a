"""Samba is the oracle for the share's door (issue 16, item 6): after every step, permwatch's readers equal the
users a real smbd lets list the folder and read its file, and the label's exposure is open exactly when Samba
admits someone outside it.

A real smbd (`SambaFileServer`) serves ``[share]`` with four local users; a Unix group ``pwntledning`` (alice and
bob) is made for the test. permwatch runs its share watcher (``[[fs]] smb_conf``: ``testparm``, ``sharesec``,
polling the files' times) beside a filesystem scan; what both publish goes, encoded and decoded as on the bus,
into one engine. The steps: nothing narrowed (POSIX and the NT side open to all); ``valid users = pwntalice
@pwntledning`` written into smb.conf; ``invalid users = pwntcarol +pwntledning`` instead; a share ACL (``sharesec``)
denying dave's SID and the group's Unix-id SID; the share ACL deleted (Samba's default, Everyone FULL) — each seen
by the watcher from the files alone. Nothing is reloaded: a new SMB connection reads the changed smb.conf itself.
"""

from __future__ import annotations

import grp
import json
import os
import shutil
import signal
import subprocess
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

import pytest
import yaml

from collectors.fs import FsCollector
from collectors.fs.samba_shares import SambaShareWatcher
from collectors.fs.settings import FsCollectorConfig
from permwatch.events import DirectoryGroup, DirectoryUser, Event, Label, LabelAssigned, SambaShare, decode, encode
from processor.engine import Engine
from processor.exposures import Verdict
from processor.forensics import who_can_read
from tests.integration.pipeline import permwatch_exe, wait_until
from tests.integration.servers.process import at_exit
from tests.integration.servers.samba_clients import directory_events, samba_admits
from tests.integration.servers.samba_fs import SHARE, SambaFileServer
from tests.unit.test_fs_collector import ListEmitter

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(os.geteuid() != 0, reason="smbd serving other users, useradd and groupadd need root"),
    pytest.mark.skipif(shutil.which("sharesec") is None, reason="sharesec missing: scripts/install.sh --test"),
]

USERS = {"alice": "Alice-pw-16s", "bob": "Bob-pw-16s", "carol": "Carol-pw-16s", "dave": "Dave-pw-16s"}
GROUP = "pwntledning"
FOLDER = "ledning"
PATHS = {FOLDER: True, f"{FOLDER}/protokoll.txt": False}


def _delete_group() -> None:
    subprocess.run(["groupdel", GROUP], capture_output=True, check=False)


@pytest.fixture(scope="module")
def samba(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SambaFileServer]:
    with SambaFileServer(tmp_path_factory.mktemp("samba-share-level"), USERS) as server:
        _delete_group()  # a leftover of a killed run
        at_exit(_delete_group)
        subprocess.run(["groupadd", GROUP], check=True, capture_output=True)
        for user in ("alice", "bob"):
            subprocess.run(["usermod", "-aG", GROUP, server.account(user)], check=True, capture_output=True)
        try:
            yield server
        finally:
            _delete_group()


def _set_share_option(samba: SambaFileServer, key: str, value: str | None) -> None:
    """Set (or drop) one option of ``[share]``, the last section of the fixture's smb.conf, as an admin would."""
    lines = samba.conf_path.read_text(encoding="utf-8").splitlines()
    start = lines.index(f"[{SHARE}]")
    kept = lines[: start + 1] + [line for line in lines[start + 1 :] if line.split("=")[0].strip() != key]
    if value is not None:
        kept.append(f"\t{key} = {value}")
    samba.conf_path.write_text("\n".join(kept) + "\n", encoding="utf-8")


def _sharesec(samba: SambaFileServer, *args: str) -> None:
    subprocess.run(["sharesec", "-s", str(samba.conf_path), SHARE, *args], check=True, capture_output=True, timeout=60)


class Permwatch:
    """The share watcher (its own thread, as `permwatch run` starts it) and a filesystem scan, into one engine."""

    def __init__(self, samba: SambaFileServer, workdir: Path) -> None:
        self.samba = samba
        self.engine = Engine()
        self.directory = directory_events(samba)
        members = tuple(samba.account(u) for u in ("alice", "bob"))
        self.directory.append(DirectoryGroup(name=GROUP, gid=grp.getgrnam(GROUP).gr_gid, member_users=members))
        for event in self.directory:
            self.engine.apply(event)
        config = FsCollectorConfig(
            roots=[samba.share_path], watch=False, acl_reader="ntacl", state_path=workdir / "fs-state.db"
        )
        emitter = ListEmitter()
        with FsCollector(config, emitter) as collector:
            collector.run(threading.Event())
        self._apply(emitter.events)
        self.engine.apply(
            LabelAssigned(
                path=str(samba.share_path / FOLDER), label=Label(name="ledning", allowed_users=("pwntalice",))
            )
        )
        self.exposure_open = False
        self._take(self.engine.flush())
        self.shares = ListEmitter()
        self.watcher = SambaShareWatcher(
            samba.conf_path,
            [samba.share_path],
            self.shares.emit,
            self.shares.flush,
            source="fs",
            state_path=workdir / "shares.json",
            poll_seconds=0.2,
        )
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self.watcher.run, args=(self._stop,), name="smb-shares")
        self._thread.start()
        self._applied = 0

    def close(self) -> None:
        self._stop.set()
        self._thread.join(60)

    def _apply(self, events: Sequence[Event]) -> None:
        for event in events:
            self.engine.apply(decode(encode(event)))

    def _take(self, verdicts: Sequence[Verdict]) -> None:
        for verdict in verdicts:
            self.exposure_open = verdict.status.value != "closed"

    def share_settles(self, wanted: Callable[[SambaShare], bool], step: str, timeout: float = 60.0) -> SambaShare:
        """Apply what the watcher publishes until its latest share event is ``wanted`` (the watcher may see two
        edits in one read or in two); return that event."""
        deadline = time.monotonic() + timeout
        while True:
            events = self.shares.events
            new, self._applied = events[self._applied :], len(events)
            self._apply(new)
            self._take(self.engine.flush())
            latest = next((e for e in reversed(events) if isinstance(e, SambaShare)), None)
            if latest is not None and wanted(latest):
                return latest
            assert time.monotonic() < deadline, f"{step}: the watcher's latest share event is {latest}"
            time.sleep(0.05)

    def readers(self, relative: str) -> tuple[set[str], list[str]]:
        _label, grants = who_can_read(self.engine, str(self.samba.share_path / relative))
        users = {self.samba.account(u) for u in USERS}
        return {g.user for g in grants if g.user in users}, sorted({g.entry for g in grants if g.user in users})


def _check(samba: SambaFileServer, permwatch: Permwatch, step: str) -> set[str]:
    admitted: dict[str, set[str]] = {}
    for relative, folder in PATHS.items():
        by_samba = {samba.account(u) for u in USERS if samba_admits(samba, u, relative, folder)}
        by_permwatch, entries = permwatch.readers(relative)
        assert by_permwatch == by_samba, (step, relative, by_permwatch, by_samba, entries)
        admitted[relative] = by_samba
    readers = admitted[FOLDER]
    assert permwatch.exposure_open == bool(readers - {"pwntalice"}), (step, readers, permwatch.exposure_open)
    return readers


def test_the_share_door_narrows_permwatch_readers_exactly_as_samba_admits(
    samba: SambaFileServer, tmp_path: Path
) -> None:
    share = samba.share_path
    (share / FOLDER).mkdir()
    (share / FOLDER / "protokoll.txt").write_text("protokoll\n", encoding="utf-8")
    (share / FOLDER).chmod(0o755)
    (share / FOLDER / "protokoll.txt").chmod(0o644)
    permwatch = Permwatch(samba, tmp_path)
    try:
        first = permwatch.share_settles(lambda e: True, "at start")
        assert first.name == SHARE and first.valid_users == () and first.acl is not None
        everyone = {samba.account(u) for u in USERS}
        assert _check(samba, permwatch, "nothing narrowed") == everyone

        _set_share_option(samba, "valid users", f"pwntalice @{GROUP}")
        permwatch.share_settles(lambda e: e.valid_users == ("pwntalice", f"@{GROUP}"), "valid users")
        assert _check(samba, permwatch, "valid users") == {"pwntalice", "pwntbob"}
        _readers, entries = permwatch.readers(FOLDER)
        assert all(entry.endswith(f"[share '{SHARE}': valid users]") for entry in entries), entries

        _set_share_option(samba, "valid users", None)
        _set_share_option(samba, "invalid users", f"pwntcarol +{GROUP}")
        permwatch.share_settles(lambda e: not e.valid_users and len(e.invalid_users) == 2, "invalid users")
        assert _check(samba, permwatch, "invalid users") == {"pwntdave"}

        _set_share_option(samba, "invalid users", None)
        dave = next(e for e in permwatch.directory if isinstance(e, DirectoryUser) and e.name == "pwntdave")
        gid = grp.getgrnam(GROUP).gr_gid
        _sharesec(samba, "--add", f"{dave.sid}:DENIED/0x0/FULL,S-1-22-2-{gid}:DENIED/0x0/READ")
        permwatch.share_settles(lambda e: not e.invalid_users and len(e.acl or ()) == 3, "share ACL")
        assert _check(samba, permwatch, "share ACL denies dave and the group") == {"pwntcarol"}

        _sharesec(samba, "--delete")
        permwatch.share_settles(lambda e: len(e.acl or ()) == 1, "share ACL deleted")
        assert _check(samba, permwatch, "share ACL deleted: Everyone FULL") == everyone
    finally:
        permwatch.close()


def test_permwatch_run_with_smb_conf_closes_and_reopens_the_exposure_as_the_share_narrows(
    samba: SambaFileServer, tmp_path: Path
) -> None:
    """`permwatch run` with ``[[fs]] smb_conf``: the registry starts the watcher beside the fs collector, its events
    reach the processor over the embedded log, and the label's exposure closes when ``valid users`` leaves only the
    label's user and opens again when the line goes."""
    folder = samba.share_path / "styrelse"
    folder.mkdir()
    folder.chmod(0o755)
    directory = {
        "users": [{"name": samba.account(u), "uid": samba.uid(u), "gid": samba.uid(u) + 100000} for u in USERS],
        "groups": [],
    }
    (tmp_path / "directory.yaml").write_text(yaml.safe_dump(directory))
    alerts = tmp_path / "alerts.jsonl"
    config = tmp_path / "permwatch.toml"
    config.write_text(
        f"""
state_dir = "{tmp_path / "state"}"
[[fs]]
roots = ["{samba.share_path}"]
acl_reader = "ntacl"
smb_conf = "{samba.conf_path}"
[directory]
path = "{tmp_path / "directory.yaml"}"
[labels.definitions.styrelse]
allowed_users = ["pwntalice"]
[[labels.rules]]
glob = "{folder}"
label = "styrelse"
[[alerts.sinks]]
kind = "jsonl"
path = "{alerts}"
"""
    )
    log = tmp_path / "permwatch.log"
    with log.open("wb") as out:
        proc = subprocess.Popen([permwatch_exe(), "run", "--config", str(config)], stdout=out, stderr=subprocess.STDOUT)
    try:
        wait_until(lambda: _statuses(alerts) == ["opened"], "the exposure: everyone reads through the share")
        _set_share_option(samba, "valid users", "pwntalice")
        try:
            wait_until(lambda: _statuses(alerts)[-1:] == ["closed"], "the exposure closed by valid users")
            assert {samba.account(u) for u in USERS if samba_admits(samba, u, "styrelse", True)} == {"pwntalice"}
        finally:
            _set_share_option(samba, "valid users", None)
        wait_until(lambda: _statuses(alerts) == ["opened", "closed", "opened"], "the exposure opened again")
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(60)
    text = log.read_text()
    assert proc.returncode == 0 and "Traceback" not in text, text[-3000:]


def _statuses(alerts: Path) -> list[str]:
    lines = alerts.read_text().splitlines() if alerts.exists() else []
    return [json.loads(line)["status"] for line in lines]
