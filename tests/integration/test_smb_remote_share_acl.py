"""The remote SMB collector reads the share's own ACL over srvsvc and the processor's share gate respects it.

A real smbd plays a Windows file server (the NT ACL alone decides; every folder grants Authenticated Users read).
Samba 4.17 hands a share's security descriptor out over srvsvc (NetrShareGetInfo level 502) only to a session
that is root, so the service account here is the server's ``root`` login (added to this server's own passdb
only): its administrator (a non-root account gets the answer without the descriptor, as long as no root
session has read it since the server started: Samba's RPC helper then opens its root-only share database as
the caller). ``sharesec`` then denies one user at the share, and after the next reconcile the
readers permwatch names (collector → contract → engine) must equal whom an SMB login per user admits, at the
share's root and below; the deny removed, both again. As an ordinary account the collector cannot read the share
ACL: it says so once in the log, publishes why in the ``smb.share`` event, and the readers are not narrowed.
"""

from __future__ import annotations

import logging
import os
import shutil
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from collectors.smb.collector import SmbCollector
from collectors.smb.settings import SmbCollectorConfig
from permwatch.events import DirectoryUser, SambaShare, ScanCompleted, decode, encode
from processor.engine import Engine
from processor.forensics import who_can_read
from tests.integration.servers.samba_clients import directory_events, samba_admits, smbcacls
from tests.integration.servers.samba_fs import ADMIN_USER, SambaFileServer
from tests.unit.test_fs_collector import ListEmitter

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(os.geteuid() != 0, reason="smbd serving other users and useradd need root"),
    pytest.mark.skipif(shutil.which("sharesec") is None, reason="sharesec missing: scripts/install.sh --test"),
]

USERS = {"anna": "Anna-pw-17s", "bo": "Bo-pw-17s"}
ROOT_PASSWORD = "Root-pw-17s"
PREFIX = "/smb/fileserver/ekonomi"
DEEP = "budget/2027"
READ = "0x001200a9"
FULL = "0x001f01ff"


@pytest.fixture()
def samba(tmp_path: Path) -> Iterator[SambaFileServer]:
    """A server of its own per test: once a root session has read the share ACL, Samba's RPC helper keeps the
    share database open and answers anybody with the descriptor (seen here), so the tests must not share one."""
    with SambaFileServer(tmp_path / "samba", USERS, share_options={"acl_xattr:ignore system acls": "yes"}) as server:
        (server.share_path / DEEP).mkdir(parents=True)
        for folder in (server.share_path, server.share_path / "budget", server.share_path / DEEP):
            folder.chmod(0o777)  # the POSIX side admits all: the NT ACL alone decides, as on Windows
        for folder in ("", "budget", DEEP):
            smbcacls(server, folder, "--set", f"ACL:S-1-22-1-0:ALLOWED/OI|CI/{FULL},ACL:S-1-5-11:ALLOWED/OI|CI/{READ}")
        # the server's administrator: root's SMB login, in this server's passdb only (its password on stdin)
        subprocess.run(
            ["pdbedit", f"--configfile={server.conf_path}", "-a", "-t", "-u", "root"],
            input=f"{ROOT_PASSWORD}\n{ROOT_PASSWORD}\n",
            capture_output=True,
            text=True,
            check=True,
        )
        yield server


def sharesec(samba: SambaFileServer, *arguments: str) -> None:
    subprocess.run(
        ["sharesec", "-s", str(samba.conf_path), "share", *arguments], capture_output=True, text=True, check=True
    )


class Pipeline:
    """The collector in a thread (reconciling every second), its events through the contract into an engine."""

    def __init__(self, samba: SambaFileServer, workdir: Path, username: str, password: str) -> None:
        secret = workdir / f"smb-password-{username}"
        secret.write_text(password + "\n")
        secret.chmod(0o600)
        settings = SmbCollectorConfig(
            server=samba.host,
            share="share",
            username=username,
            password_file=secret,
            path_prefix=PREFIX,
        ).model_copy(update={"reconcile_seconds": 1})  # below the settings' 60 s floor: a test need not wait
        self.emitter = ListEmitter()
        self.collector = SmbCollector(settings, self.emitter)  # type: ignore[arg-type]
        self.engine = Engine()
        self.users = [e for e in directory_events(samba) if isinstance(e, DirectoryUser)]
        for event in directory_events(samba):
            self.engine.apply(event)
        self.applied = 0
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self.collector.run, args=(self.stop,), daemon=True)

    def __enter__(self) -> Pipeline:
        self.thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self.stop.set()
        self.thread.join(timeout=30)

    def readers(self, samba: SambaFileServer, relative: str) -> set[str]:
        events = self.emitter.events
        for event in events[self.applied :]:
            self.engine.apply(decode(encode(event)))
        self.applied = len(events)
        self.engine.flush()
        path = f"{PREFIX}/{relative}" if relative else PREFIX
        _label, grants = who_can_read(self.engine, path)
        accounts = {samba.account(u) for u in USERS}
        return {g.user for g in grants if g.user in accounts}

    def shares(self) -> list[SambaShare]:
        return [e for e in self.emitter.events if isinstance(e, SambaShare)]


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


def test_a_share_acl_deny_read_over_srvsvc_narrows_the_readers_as_samba_does(
    samba: SambaFileServer, tmp_path: Path
) -> None:
    everybody = {samba.account(u) for u in USERS}
    with Pipeline(samba, tmp_path, "root", ROOT_PASSWORD) as pipeline:
        assert agree(pipeline, samba, "", "no share ACL stored") == everybody
        assert agree(pipeline, samba, DEEP, "no share ACL stored, below") == everybody
        first = pipeline.shares()[0]
        assert first.error is None and [(a.type, a.trustee) for a in first.acl or ()] == [("allow", "S-1-1-0")]

        bo = next(u.sid for u in pipeline.users if u.name == samba.account("bo"))
        sharesec(samba, "--add", f"{bo}:DENIED/0/FULL")
        assert agree(pipeline, samba, "", "bo denied at the share") == {samba.account("anna")}
        assert agree(pipeline, samba, DEEP, "bo denied at the share, below") == {samba.account("anna")}
        denied = pipeline.shares()[-1]
        assert [(a.type, a.trustee) for a in denied.acl or ()] == [("deny", bo), ("allow", "S-1-1-0")]
        assert denied.path == PREFIX and denied.name == "share"

        sharesec(samba, "--remove", f"{bo}:DENIED/0/FULL")
        assert agree(pipeline, samba, DEEP, "the deny removed") == everybody
        assert len(pipeline.shares()) == 3  # published when it changed, not at every reconcile


def test_an_account_that_may_not_read_the_share_acl_says_so_once_and_narrows_nobody(
    samba: SambaFileServer, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    account, password = samba.credentials(ADMIN_USER).split("%", 1)
    caplog.set_level(logging.WARNING, logger="permwatch.collectors.smb")
    with Pipeline(samba, tmp_path, account, password) as pipeline:
        everybody = {samba.account(u) for u in USERS}
        assert agree(pipeline, samba, DEEP, "share ACL not readable") == everybody
        assert agree(pipeline, samba, "", "share ACL not readable, the root") == everybody
        deadline = time.monotonic() + 60
        while sum(isinstance(e, ScanCompleted) for e in pipeline.emitter.events) < 3:  # two reconciles more: once
            assert time.monotonic() < deadline, "no further reconcile"
            time.sleep(0.2)
    warnings = [r.message for r in caplog.records if "share ACL" in r.message]
    assert len(warnings) == 1 and password not in warnings[0]
    (share,) = pipeline.shares()
    assert share.acl is None and share.error and "administrator" in share.error
