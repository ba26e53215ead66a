"""The remote SMB collector against Samba as the oracle: readers equal whom the server lets in, step by step.

A real smbd plays a Windows file server: ``acl_xattr:ignore system acls = yes`` and a tree open to all on the
POSIX side, so the NT ACL alone decides, as on Windows or a NAS. `SmbCollector` follows the share over SMB as a
service account (its ShareLoop in a thread: baseline, per-folder watches, reconcile), its events go through the
contract (encoded and decoded) into the processor's engine with the users' SIDs as a directory publishes them,
and after every step ``who_can_read`` must name exactly the users an SMB login lets list the folder. The steps,
all made over SMB with ``smbcacls`` while the collector runs: only the label's user; Authenticated Users added
(an exposure of the other two); a deny ACE for one of them; the Authenticated Users ACE removed (closed); at
depth 3 an inherited ACE propagated from above. Labels come from the policy's globs on the published paths.
"""

from __future__ import annotations

import os
import shutil
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from collectors.labels import LabelPolicy
from collectors.smb.collector import SmbCollector
from collectors.smb.settings import SmbCollectorConfig
from permwatch.config import LabelDefinition, LabelRule, LabelsConfig
from permwatch.events import DirectoryUser, LabelAssigned, decode, encode
from processor.engine import Engine
from processor.forensics import who_can_read
from tests.integration.servers.samba_clients import directory_events, samba_admits, smbcacls
from tests.integration.servers.samba_fs import ADMIN_USER, SambaFileServer
from tests.unit.test_fs_collector import ListEmitter

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(os.geteuid() != 0, reason="smbd serving other users and useradd need root"),
    pytest.mark.skipif(shutil.which("smbcacls") is None, reason="smbcacls missing: scripts/install.sh --test"),
]

USERS = {"anna": "Anna-pw-17", "bo": "Bo-pw-17", "cilla": "Cilla-pw-17"}
PREFIX = "/smb/fileserver/social"
FOLDER = "ledning"
DEEP = "ledning/protokoll/2026"
FULL = "0x001f01ff"
READ = "0x001200a9"


@pytest.fixture(scope="module")
def samba(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SambaFileServer]:
    with SambaFileServer(
        tmp_path_factory.mktemp("samba-remote-oracle"),
        USERS,
        share_options={"acl_xattr:ignore system acls": "yes"},
    ) as server:
        (server.share_path / DEEP).mkdir(parents=True)
        for folder in (server.share_path, *[server.share_path / p for p in ("ledning", "ledning/protokoll", DEEP)]):
            folder.chmod(0o777)  # the POSIX side admits all: the NT ACL alone decides, as on Windows
            (folder / "notes.txt").write_text("minutes\n")
            (folder / "notes.txt").chmod(0o666)
        yield server


class Pipeline:
    """The collector in a thread, its events through the contract into one engine."""

    def __init__(self, samba: SambaFileServer, workdir: Path) -> None:
        account, password = samba.credentials(ADMIN_USER).split("%", 1)
        secret = workdir / "smb-password"
        secret.write_text(password + "\n")
        secret.chmod(0o600)
        self.settings = SmbCollectorConfig(
            server=samba.host,
            share="share",
            username=account,
            password_file=secret,
            path_prefix=PREFIX,
            reconcile_seconds=3600,
        )
        labels = LabelsConfig(
            definitions={"ledning": LabelDefinition(allowed_users=[samba.account("anna")])},
            rules=[LabelRule(glob=f"{PREFIX}/{FOLDER}", label="ledning")],
        )
        self.emitter = ListEmitter()
        self.collector = SmbCollector(self.settings, self.emitter, LabelPolicy(labels, source="smb"))  # type: ignore[arg-type]
        self.engine = Engine()
        self.users = [e for e in directory_events(samba) if isinstance(e, DirectoryUser)]
        for event in directory_events(samba):
            self.engine.apply(event)
        self.applied = 0
        self.exposures: list[object] = []
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self.collector.run, args=(self.stop,), daemon=True)

    def __enter__(self) -> Pipeline:
        self.thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self.stop.set()
        self.thread.join(timeout=30)

    def catch_up(self) -> None:
        events = self.emitter.events
        for event in events[self.applied :]:
            self.engine.apply(decode(encode(event)))
        self.applied = len(events)
        self.exposures += self.engine.flush()

    def readers(self, samba: SambaFileServer, relative: str) -> set[str]:
        self.catch_up()
        _label, grants = who_can_read(self.engine, f"{PREFIX}/{relative}")
        accounts = {samba.account(u) for u in USERS}
        return {g.user for g in grants if g.user in accounts}


def sid_of(pipeline: Pipeline, samba: SambaFileServer, user: str) -> str:
    sid = next(u.sid for u in pipeline.users if u.name == samba.account(user))
    assert sid is not None
    return sid


def admitted(samba: SambaFileServer, relative: str) -> set[str]:
    return {samba.account(u) for u in USERS if samba_admits(samba, u, relative, True)}


def agree(pipeline: Pipeline, samba: SambaFileServer, relative: str, step: str, timeout: float = 60.0) -> set[str]:
    """Wait (generously: a correctness wait, not a speed limit) until permwatch's readers equal Samba's."""
    expected = admitted(samba, relative)
    deadline = time.monotonic() + timeout
    while (found := pipeline.readers(samba, relative)) != expected:
        assert time.monotonic() < deadline, f"{step}: permwatch says {sorted(found)}, Samba admits {sorted(expected)}"
        time.sleep(0.2)
    return expected


def test_readers_over_smb_equal_whom_the_server_admits_after_every_step(samba: SambaFileServer, tmp_path: Path) -> None:
    with Pipeline(samba, tmp_path) as pipeline:
        anna, bo = sid_of(pipeline, samba, "anna"), sid_of(pipeline, samba, "bo")
        admin = f"ACL:S-1-22-1-0:ALLOWED/OI|CI/{FULL}"
        for folder in (FOLDER, "ledning/protokoll", DEEP):
            smbcacls(samba, folder, "--set", f"{admin},ACL:{anna}:ALLOWED/OI|CI/{READ}")
        assert agree(pipeline, samba, FOLDER, "only the label's user") == {samba.account("anna")}
        assert agree(pipeline, samba, DEEP, "only the label's user, below") == {samba.account("anna")}
        assert pipeline.exposures == []

        smbcacls(samba, FOLDER, "--add", f"ACL:S-1-5-11:ALLOWED/0x0/{READ}")
        assert agree(pipeline, samba, FOLDER, "Authenticated Users") == {samba.account(u) for u in USERS}
        assert statuses(pipeline) == [("opened", {"bo", "cilla"})]

        smbcacls(samba, FOLDER, "--add", f"ACL:{bo}:DENIED/0x0/{READ}")
        assert agree(pipeline, samba, FOLDER, "a deny ACE") == {samba.account("anna"), samba.account("cilla")}
        assert statuses(pipeline)[-1] == ("changed", {"cilla"})

        smbcacls(samba, FOLDER, "--delete", f"ACL:S-1-5-11:ALLOWED/0x0/{READ}")
        assert agree(pipeline, samba, FOLDER, "Authenticated Users removed") == {samba.account("anna")}
        assert statuses(pipeline)[-1] == ("closed", set())

        smbcacls(samba, "ledning/protokoll", "--propagate-inheritance", "--add", f"ACL:{bo}:ALLOWED/OI|CI/{READ}")
        assert agree(pipeline, samba, DEEP, "depth 3, propagated") == {samba.account("anna"), samba.account("bo")}
        assert agree(pipeline, samba, "ledning/protokoll", "depth 2") == {samba.account("anna"), samba.account("bo")}
        assert statuses(pipeline)[-1] == ("opened", {"bo"})
        labels = [e for e in pipeline.emitter.events if isinstance(e, LabelAssigned)]
        assert [(e.path, e.label.name if e.label else None) for e in labels] == [(f"{PREFIX}/{FOLDER}", "ledning")]


def statuses(pipeline: Pipeline) -> list[tuple[str, set[str]]]:
    """Each exposure event so far: its status and the outsiders by short name (``pwntbo`` → ``bo``)."""
    return [
        (e.status.value, {u.removeprefix("pwnt") for u in e.all_users})  # type: ignore[attr-defined]
        for e in pipeline.exposures
    ]
