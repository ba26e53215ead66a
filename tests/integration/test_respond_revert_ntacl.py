"""Revert on a Samba share (issue 19 item 3 with NT ACLs): Samba itself is the oracle.

A real smbd (`SambaFileServer`, ``vfs objects = acl_xattr``) serves a folder whose Windows ACL admits only the admin
and alice. ``permwatch run`` watches the share with the ``ntacl`` reader. An ``smbcacls --add`` of Everyone READ
over SMB opens an exposure (bob, carol and dave can now list the folder: an SMB login per user says so). ``permwatch
revert`` restores the POSIX side and then the recorded NT ACL through Samba's own VFS (the dry run prints the exact
commands, the SDDL included); afterwards Samba serves the descriptor it served before, only the admin and alice get
in over SMB, and the exposure closes through the normal path. A revert is refused, changing nothing, when the NT ACL
changed after the exposure's latest record.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from permwatch.events import (
    TOPIC_DECISIONS,
    TOPIC_EXPOSURES,
    TOPIC_FS,
    Decision,
    DirectoryUser,
    ExposureEvent,
    FsPermissionEvent,
    decode,
    unbatched,
)
from permwatch.transport.embedded import EmbeddedBus
from tests.integration.pipeline import permwatch_exe, wait_until
from tests.integration.servers.samba_clients import directory_events, samba_admits, served_over_smb, smbcacls
from tests.integration.servers.samba_fs import ADMIN_USER, SambaFileServer

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(os.geteuid() != 0, reason="smbd serving other users and useradd need root"),
    pytest.mark.skipif(shutil.which("smbcacls") is None, reason="smbcacls missing: scripts/install.sh --test"),
    pytest.mark.skipif(
        subprocess.run(["/usr/bin/python3", "-c", "import samba.ntacls"], capture_output=True).returncode != 0,
        reason="Debian's python3-samba missing: scripts/install.sh --test",
    ),
]

USERS = {"alice": "Alice-pw-19r", "bob": "Bob-pw-19r", "carol": "Carol-pw-19r", "dave": "Dave-pw-19r"}
FOLDER = "ledning"


@pytest.fixture(scope="module")
def samba(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SambaFileServer]:
    with SambaFileServer(tmp_path_factory.mktemp("samba-revert"), USERS) as server:
        yield server


def directory_yaml(samba: SambaFileServer) -> dict[str, Any]:
    users, groups = [], []
    for event in directory_events(samba):
        if isinstance(event, DirectoryUser):
            users.append(
                {"name": event.name, "uid": event.uid, "gid": event.primary_gid, "sid": event.sid}
                | {"primary_group_sid": event.primary_group_sid}
            )
        else:
            group: dict[str, Any] = {"name": event.name, "members": list(event.member_users)}
            group |= {key: value for key, value in (("gid", event.gid), ("sid", event.sid)) if value is not None}
            groups.append(group)
    return {"users": users, "groups": groups}


class Run:
    """``permwatch run`` on the embedded log, the share read with the ``ntacl`` reader."""

    def __init__(self, samba: SambaFileServer, tmp_path: Path) -> None:
        self.tmp_path = tmp_path
        self.events_db = tmp_path / "state" / "events.db"
        self.config = tmp_path / "permwatch.toml"
        self.log = tmp_path / "permwatch.log"
        (tmp_path / "directory.yaml").write_text(yaml.safe_dump(directory_yaml(samba)))
        allowed = [ADMIN_USER, samba.account("alice")]
        self.config.write_text(
            f"""
state_dir = "{tmp_path / "state"}"
[transport.embedded]
path = "{self.events_db}"
[[fs]]
collector_id = "samba"
roots = ["{samba.share_path}"]
acl_reader = "ntacl"
acl_reader_options = {{ smb_conf = "{samba.conf_path}" }}
[directory]
path = "{tmp_path / "directory.yaml"}"
[labels.definitions.ledning]
allowed_users = {allowed!r}
remediation = "on-command"
[[labels.rules]]
glob = "{samba.share_path / FOLDER}"
label = "ledning"
[[alerts.sinks]]
kind = "jsonl"
path = "{tmp_path / "alerts.jsonl"}"
""".replace("'", '"')
        )

    def __enter__(self) -> Run:
        with self.log.open("w") as log:
            self.process = subprocess.Popen(
                [permwatch_exe(), "run", "--config", str(self.config)], stdout=log, stderr=subprocess.STDOUT
            )
        return self

    def __exit__(self, *exc: object) -> None:
        self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()

    def cli(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        done = subprocess.run(
            [permwatch_exe(), *args, "--config", str(self.config)], capture_output=True, text=True, timeout=120
        )
        if check:
            assert done.returncode == 0, (args, done.stdout, done.stderr, self.log.read_text()[-3000:])
        return done

    def _history(self, topic: str) -> list[Any]:
        bus = EmbeddedBus(self.events_db)
        try:
            return [decode(record.value) for record in bus.history([topic])]
        finally:
            bus.close()

    def recorded_nt(self, path: Path) -> bool:
        """Whether the record holds ``path`` with its NT ACL (the collector's first scan got that far)."""
        return any(
            isinstance(one, FsPermissionEvent) and one.path == str(path) and one.acl_kind == "nt"
            for event in self._history(TOPIC_FS)
            for one in unbatched(event)
        )

    def exposures(self) -> list[ExposureEvent]:
        return [e for e in self._history(TOPIC_EXPOSURES) if isinstance(e, ExposureEvent)]

    def decisions(self) -> list[Decision]:
        return [e for e in self._history(TOPIC_DECISIONS) if isinstance(e, Decision)]

    def wait_exposure(self, what: str, **expected: Any) -> ExposureEvent:
        def found() -> ExposureEvent | None:
            matching = [e for e in self.exposures() if all(getattr(e, k) == v for k, v in expected.items())]
            return matching[-1] if matching else None

        return wait_until(found, what, timeout=60)


def over_smb(samba: SambaFileServer) -> set[str]:
    """Who an SMB login lets list the folder."""
    return {samba.account(user) for user in USERS if samba_admits(samba, user, FOLDER, True)}


def settled_dry_run(run: Run, exposure_id: str) -> subprocess.CompletedProcess[str]:
    """The dry run once the record has caught up with the last of Samba's writes (it sets the xattr last)."""

    def planned() -> subprocess.CompletedProcess[str] | None:
        done = run.cli("revert", exposure_id, "--dry-run", check=False)
        return done if done.returncode == 0 else None

    return wait_until(planned, "a revert plan the record agrees with", timeout=60)


def test_revert_puts_back_the_nt_acl_samba_served_and_samba_agrees(samba: SambaFileServer, tmp_path: Path) -> None:
    folder = samba.share_path / FOLDER
    folder.mkdir()
    (folder / "protokoll.txt").write_text("contents permwatch never reads\n")
    admin, alice = (f"PWNTACL\\{name}" for name in (ADMIN_USER, samba.account("alice")))
    grant = f"ACL:{admin}:ALLOWED/OI|CI/FULL,ACL:{alice}:ALLOWED/OI|CI/FULL"
    smbcacls(samba, FOLDER, "--set", grant)
    smbcacls(samba, f"{FOLDER}/protokoll.txt", "--set", grant.replace("OI|CI", "0x0"))
    before = served_over_smb(samba, FOLDER)
    assert over_smb(samba) == {samba.account("alice")}

    with Run(samba, tmp_path) as run:
        wait_until(lambda: run.recorded_nt(folder), "the first scan to record the folder's NT ACL", timeout=60)
        assert run.exposures() == []  # the admin and alice only: nothing to say
        smbcacls(samba, FOLDER, "--add", "ACL:S-1-1-0:ALLOWED/0x0/READ")
        widened = over_smb(samba)
        assert widened == {samba.account(u) for u in USERS}
        opened = run.wait_exposure("the exposure to open", status="opened")
        assert set(opened.users) >= widened - {samba.account("alice")}

        dry = settled_dry_run(run, opened.exposure_id)
        commands = [line for line in dry.stdout.splitlines() if not line.startswith("#")]
        assert commands and "samba_set_nt_acl.py" in commands[-1], commands
        assert str(samba.conf_path) in commands[-1] and str(folder) in commands[-1]
        assert "(A;OICI;0x001f01ff;;;" in commands[-1] and "S-1-1-0" not in commands[-1], commands[-1]
        assert over_smb(samba) == widened  # a dry run changes nothing

        done = run.cli("revert", opened.exposure_id, "--by", "soc-anna")
        assert f"reverted {opened.exposure_id}" in done.stdout
        assert over_smb(samba) == {samba.account("alice")}  # Samba's own check
        after = served_over_smb(samba, FOLDER)
        assert (after.owner, after.group, after.dacl) == (before.owner, before.group, before.dacl)
        closed = run.wait_exposure("the close through the normal path", status="closed")
        assert closed.exposure_id == opened.exposure_id
        requested, reverted = run.decisions()[-2:]
        assert (requested.action.value, reverted.action.value, reverted.by) == (
            "revert_requested",
            "reverted",
            "soc-anna",
        )
        assert list(reverted.changes) == commands

        # widened again, then changed once more over SMB before anyone reverts: the record's latest state of the
        # folder is newer than the exposure's latest event, so the revert refuses and changes nothing
        smbcacls(samba, FOLDER, "--add", "ACL:S-1-1-0:ALLOWED/0x0/READ")
        again = wait_until(
            lambda: next(
                (e for e in run.exposures() if e.status == "opened" and e.exposure_id != opened.exposure_id), None
            ),
            "the second exposure",
            timeout=60,
        )
        settled_dry_run(run, again.exposure_id)
        smbcacls(samba, FOLDER, "--add", f"ACL:{alice}:ALLOWED/0x0/READ")  # alice may read anyway: same exposure

        def refused() -> subprocess.CompletedProcess[str] | None:
            done = run.cli("revert", again.exposure_id, "--dry-run", check=False)
            return done if done.returncode == 1 and "not reverting" in done.stderr else None

        why = wait_until(refused, "the revert to be refused", timeout=60).stderr
        assert "changed after the exposure's latest record" in why or "differs from its latest record" in why
        assert over_smb(samba) == {samba.account(u) for u in USERS}
