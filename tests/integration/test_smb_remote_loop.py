"""The remote share loop against a real Samba file server (issue 17): nothing lost across a server crash.

`ShareLoop` runs in a thread against a real smbd. Its baseline reports every folder once; ACL changes over SMB at
depth 1, 2 and 3 are reported through the watches with the descriptor Samba now serves; then smbd is killed
(SIGKILL), and while it is down an ACL is changed locally (``setfacl``: Samba serves the ACL rebuilt from POSIX),
a folder is created and one removed. After smbd is started again the loop reconnects by itself and reports
exactly those three differences — and a periodic reconcile that finds nothing new reports nothing. The same
holds with the walks spread over two connections (``arkiv`` on the first, ``kontor`` on the second, a top-level
folder made later on whichever it is dealt to): the same folders, changes and removals, once each. And when only
the second connection's smbd child is killed, that connection alone comes back and walks its part again: the
change made meanwhile is reported, the first connection's watches never stopped, no full walk.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from collectors.ntacl import decode_security_descriptor
from collectors.smb.loop import LoopOptions, ShareLoop
from collectors.smb.share import RemoteFolder, SmbShare
from tests.integration.servers.samba_clients import served_over_smb, smbcacls
from tests.integration.servers.samba_fs import ADMIN_USER, SambaFileServer

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(os.geteuid() != 0, reason="smbd serving other users and useradd need root"),
    pytest.mark.skipif(shutil.which("smbcacls") is None, reason="smbcacls missing: scripts/install.sh --test"),
]

DEPTHS = ("kontor", "kontor/ledning", "kontor/ledning/protokoll")


class Sink:
    """Keeps what the loop reported, in order, for the test to wait on."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.folders: list[RemoteFolder] = []
        self.gone: list[str] = []
        self.new: list[str] = []
        self.scans = 0
        self.reconciles = 0
        self.flushes = 0

    def reconciling(self) -> None:
        self.reconciles += 1

    def folder(self, folder: RemoteFolder, observed_at: float, *, new: bool) -> None:
        with self.lock:
            self.folders.append(folder)
            self.new += [folder.path] if new else []

    def removed(self, path: str, observed_at: float) -> None:
        with self.lock:
            self.gone.append(path)

    def scanned(self, observed_at: float) -> None:
        with self.lock:
            self.scans += 1

    def flush(self) -> None:
        with self.lock:
            self.flushes += 1

    def wait(self, condition: Callable[[], bool], what: str, timeout: float = 60.0) -> None:
        deadline = time.monotonic() + timeout
        while True:
            with self.lock:
                if condition():
                    return
            assert time.monotonic() < deadline, f"never: {what}; reported {[f.path for f in self.folders]}"
            time.sleep(0.05)


@pytest.fixture
def samba(tmp_path: Path) -> Iterator[SambaFileServer]:
    with SambaFileServer(tmp_path, {}) as server:
        for branch in (DEPTHS[-1], "kontor/ekonomi", "arkiv/gammalt"):
            (server.share_path / branch).mkdir(parents=True)
        yield server


def running_loop(samba: SambaFileServer, sink: Sink, **options: Any) -> tuple[ShareLoop, Stopping]:
    account, password = samba.credentials(ADMIN_USER).split("%", 1)
    loop = ShareLoop(
        lambda: SmbShare(samba.host, "share", account, password, timeout=5),
        sink,
        LoopOptions(backoff_max=1.0, poll_seconds=0.2, **options),
    )
    stopping = Stopping()
    stopping.thread = threading.Thread(target=loop.run, args=(stopping,), daemon=True)
    stopping.thread.start()
    return loop, stopping


class Stopping(threading.Event):
    """Set it to stop the loop; `stop` also waits for its connections to be closed."""

    thread: threading.Thread

    def stop(self) -> None:
        self.set()
        self.thread.join(timeout=60)


def descriptor_of(sink: Sink, path: str) -> object:
    return decode_security_descriptor(next(f for f in reversed(sink.folders) if f.path == path).descriptor or b"")


def same_as_served(samba: SambaFileServer, sink: Sink, path: str) -> bool:
    served, seen = served_over_smb(samba, path), descriptor_of(sink, path)
    return (seen.owner, seen.group, seen.dacl) == (served.owner, served.group, served.dacl)  # type: ignore[attr-defined]


@pytest.mark.parametrize("connections", [1, 2])
def test_changes_over_smb_and_while_the_server_was_down_are_all_reported(
    samba: SambaFileServer, connections: int
) -> None:
    sink = Sink()
    loop, stopping = running_loop(samba, sink, connections=connections)
    try:
        sink.wait(lambda: sink.scans == 1, "the baseline")
        assert sorted(f.path for f in sink.folders) == sorted(["", *DEPTHS, "kontor/ekonomi", "arkiv", "arkiv/gammalt"])
        sink.wait(lambda: loop.parked == 0, "every watch parked by the baseline's walk re-armed")
        (samba.share_path / "topp").mkdir()  # a top-level folder after the baseline: dealt to a connection then
        sink.wait(lambda: "topp" in sink.new, "the new top-level folder")
        for path in (*DEPTHS, "topp"):
            before = len(sink.folders)
            smbcacls(samba, path, "--add", "ACL:S-1-5-11:ALLOWED/0x0/READ")
            sink.wait(lambda p=path, n=before: any(f.path == p for f in sink.folders[n:]), f"{path} reported")
            assert same_as_served(samba, sink, path)

        samba._server.kill()  # SIGKILL smbd: a crash, the connection dies with it
        loop.connected.clear()
        time.sleep(0.5)
        before = len(sink.folders)
        subprocess.run(["setfacl", "-m", "u:nobody:rx", str(samba.share_path / "kontor/ekonomi")], check=True)
        (samba.share_path / "kontor" / "ny").mkdir()
        shutil.rmtree(samba.share_path / "arkiv" / "gammalt")
        samba.start()
        sink.wait(lambda: sink.scans == 2, "the reconcile after the reconnect")
        assert loop.reconnects >= 1
        assert sorted(f.path for f in sink.folders[before:]) == ["kontor/ekonomi", "kontor/ny"]
        assert sink.new[7:] == ["topp", "kontor/ny"]  # the 7 of the baseline, the new one, the one made while down
        assert sink.gone == ["arkiv/gammalt"]
        assert same_as_served(samba, sink, "kontor/ekonomi")
        if connections == 2:  # the share was read over both: its top-level folders dealt in turn
            assert loop._owners == {"arkiv": 0, "kontor": 1, "topp": 0}
        last: dict[str, bytes | None] = {}
        for folder in sink.folders:  # no duplicate: a folder is reported again only with another descriptor
            assert last.get(folder.path, b"") != folder.descriptor, f"{folder.path} reported twice unchanged"
            last[folder.path] = folder.descriptor
    finally:
        stopping.stop()


def test_a_reconcile_that_finds_nothing_new_reports_nothing(samba: SambaFileServer) -> None:
    sink = Sink()
    _, stopping = running_loop(samba, sink, reconcile_seconds=0.5)
    try:
        sink.wait(lambda: sink.scans >= 3, "three reconciles")
        assert len(sink.folders) == 7 and sink.gone == []
        assert sink.reconciles in (sink.scans, sink.scans + 1)  # told before each walk (the next may have begun)
    finally:
        stopping.stop()


def smbd_serving(port: int) -> int:
    """The pid of the smbd child serving the connection from local port ``port`` (``ss`` names a socket's owner)."""
    listed = subprocess.run(
        ["ss", "-tnpH", "state", "established", f"( sport = :{port} or dport = :{port} )"],
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    found = re.findall(r'"smbd",pid=(\d+)', listed)
    assert found, f"no smbd serves port {port}: {listed}"
    return int(found[0])


def test_one_of_two_connections_killed_is_reconnected_alone_and_its_part_walked_again(
    samba: SambaFileServer,
) -> None:
    sink = Sink()
    loop, stopping = running_loop(samba, sink, connections=2)
    try:
        sink.wait(lambda: sink.scans == 1, "the baseline")
        assert loop._owners == {"arkiv": 0, "kontor": 1}
        second = loop._lanes[1].share.channel._socket.getsockname()[1]
        os.kill(smbd_serving(second), signal.SIGKILL)  # only the second connection's smbd: the first serves on
        before = len(sink.folders)
        subprocess.run(["setfacl", "-m", "u:nobody:rx", str(samba.share_path / "kontor/ekonomi")], check=True)
        (samba.share_path / "kontor" / "ny").mkdir()
        sink.wait(lambda: loop.reconnects == 1 and "kontor/ny" in sink.new, "the second connection back")
        sink.wait(lambda: any(f.path == "kontor/ekonomi" for f in sink.folders[before:]), "the change while away")
        assert same_as_served(samba, sink, "kontor/ekonomi")
        smbcacls(samba, "kontor/ledning", "--add", "ACL:S-1-5-11:ALLOWED/0x0/READ")  # watched again
        smbcacls(samba, "arkiv/gammalt", "--add", "ACL:S-1-5-11:ALLOWED/0x0/READ")  # the first never stopped
        sink.wait(
            lambda: {"kontor/ledning", "arkiv/gammalt"} <= {f.path for f in sink.folders[before:]}, "later changes"
        )
        assert loop.reconnects == 1 and sink.scans == 1  # no reconnect of all, no walk of the whole share
        assert sink.gone == [] and sink.new[7:] == ["kontor/ny"]
        last: dict[str, bytes | None] = {}
        for folder in sink.folders:
            assert last.get(folder.path, b"") != folder.descriptor, f"{folder.path} reported twice unchanged"
            last[folder.path] = folder.descriptor
    finally:
        stopping.stop()
