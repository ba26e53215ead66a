"""Who changed it and who opened it over SMB: a real smbd with ``vfs_full_audit`` names the SMB user (#18).

Over SMB, fanotify sees only smbd; Samba's audit log names the user. A real smbd (the repository's Samba test
server, its share given ``full_audit`` with permwatch's prefix, logging to smbd's own log) serves a labelled
folder; the collector runs with ``actors = "smb_audit,fanotify"`` and ``opens = "smb_audit"``. alice sets an ACL
on a file over SMB with ``smbcacls``: the permission event names her, from the audit log. She reads the file with
``smbclient``: an access record with ``how = "smb"`` names her.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from permwatch.events import TOPIC_ACCESS, TOPIC_FS, FsAccessEvent, FsPermissionEvent, decode, unbatched
from permwatch.transport.embedded import EmbeddedBus
from tests.integration.pipeline import permwatch_exe, wait_until
from tests.integration.servers.samba_fs import SambaFileServer

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(os.geteuid() != 0, reason="smbd serving other users and useradd need root"),
    pytest.mark.skipif(shutil.which("smbcacls") is None, reason="smbcacls missing: scripts/install.sh --test"),
]

AUDIT = {
    "full_audit:prefix": "permwatch|%u|%I|%S",
    "full_audit:success": "fchmod fchown fset_nt_acl sys_acl_set_fd fsetxattr openat",
    "full_audit:failure": "openat",
    "full_audit:syslog": "false",  # into smbd's own log, which the test server writes to a file
}


class AuditedSambaServer(SambaFileServer):
    """The test Samba server with ``full_audit`` on its share, as a production share would have it."""

    def _write_conf(self) -> None:
        super()._write_conf()
        text = self.conf_path.read_text(encoding="utf-8")
        text = text.replace("vfs objects = acl_xattr", "vfs objects = acl_xattr full_audit")
        text += "".join(f"\t{key} = {value}\n" for key, value in AUDIT.items())
        self.conf_path.write_text(text, encoding="utf-8")


@pytest.fixture
def samba(tmp_path: Path) -> Iterator[AuditedSambaServer]:
    with AuditedSambaServer(tmp_path / "samba", {"alice": "Alice-pw-18"}) as server:
        yield server


def events(db: Path, topic: str) -> list[object]:
    bus = EmbeddedBus(db)
    try:
        return [one for record in bus.history([topic]) for one in unbatched(decode(record.value))]
    finally:
        bus.close()


def test_an_acl_change_and_a_read_over_smb_name_the_smb_user(samba: AuditedSambaServer, tmp_path: Path) -> None:
    folder = samba.share_path / "ledning"
    folder.mkdir()
    doc = folder / "doc.txt"
    doc.write_text("contents permwatch never reads\n")
    alice = samba.uid("alice")
    for path in (folder, doc):
        os.chown(path, alice, alice)
    os.chmod(folder, 0o750)
    os.chmod(doc, 0o640)
    config = tmp_path / "permwatch.toml"
    db = tmp_path / "state" / "events.db"
    config.write_text(
        f"""
state_dir = "{tmp_path / "state"}"
[[fs]]
collector_id = "smb"
roots = ["{samba.share_path}"]
actors = "smb_audit,fanotify"
opens = "smb_audit"
smb_audit_log = "{samba.log_path}"
[labels.definitions.ledning]
allowed_groups = ["ledningsgrupp"]
[[labels.rules]]
glob = "{folder}"
label = "ledning"
"""
    )
    log = tmp_path / "permwatch.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [permwatch_exe(), "run", "--config", str(config), "--role", "collector"], stdout=out, stderr=out
        )
    try:
        wait_until(lambda: f"scanned {samba.share_path} (baseline)" in log.read_text(), "the baseline scan")
        smb_path = "ledning\\doc.txt"
        done = subprocess.run(
            ["smbcacls", samba.unc, smb_path, "-U", samba.credentials("alice"), "-a", "ACL:S-1-5-11:ALLOWED/0x0/READ"],
            capture_output=True,
            text=True,
        )
        assert done.returncode == 0, done.stdout + done.stderr

        def attributed() -> FsPermissionEvent | None:
            return next(
                (
                    e
                    for e in events(db, TOPIC_FS)
                    if isinstance(e, FsPermissionEvent) and e.path == str(doc) and e.actor is not None
                ),
                None,
            )

        changed = wait_until(attributed, "the ACL change, attributed")
        assert changed.actor is not None
        assert (changed.actor.name, changed.actor.uid, changed.actor.confidence) == ("pwntalice", alice, "smb_audit")

        got = subprocess.run(
            ["smbclient", samba.unc, "-U", samba.credentials("alice"), "-c", f"get {smb_path} /dev/null"],
            capture_output=True,
            text=True,
        )
        assert got.returncode == 0, got.stdout + got.stderr

        def read_recorded() -> FsAccessEvent | None:
            return next(
                (e for e in events(db, TOPIC_ACCESS) if isinstance(e, FsAccessEvent) and e.path == str(doc)), None
            )

        opened = wait_until(read_recorded, "alice's read over SMB on the access topic")
        assert (opened.how, opened.granted, opened.folder) == ("smb", True, str(folder))
        assert (opened.actor.name, opened.actor.confidence) == ("pwntalice", "smb_audit")
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(60)
    assert proc.returncode == 0, log.read_text()[-3000:]
    assert "Traceback" not in log.read_text()
