"""Who changed it, from the Linux audit log (#18, the authoritative source where the operator enables it).

A real auditd (Debian's, its own log and config) records permission changes below the share under a rule of
this test's own key. ``permwatch run`` watches the share with ``[[fs]] actors = "audit"``. Changes are made as
root after a login: a shell sets its login uid (what pam_loginuid does at login), runs ``setfacl`` and later
removes it again, as ``sudo`` would. The exposure names the person who logged in (the login uid, through the
directory file), not ``root``, with confidence ``audit``; its close, by another login, names that one.
"""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.integration.pipeline import traversable_tempdir
from tests.integration.respond_rig import Rig
from tests.integration.servers.auditd import AuditDaemon, AuditDaemonError

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(os.geteuid() != 0, reason="the audit rules and a login uid need root"),
]

MGMT, STAFF = 32271, 32272
ERIK = {"name": "erik", "uid": 33271, "gid": MGMT}
CECILIA = {"name": "cecilia", "uid": 33272, "gid": STAFF}
DIRECTORY = {
    "users": [ERIK, CECILIA],
    "groups": [
        {"name": "ledningsgrupp", "gid": MGMT, "members": ["erik"]},
        {"name": "alla", "gid": STAFF, "members": ["cecilia"]},
    ],
}
KEY = f"permwatch-test-{os.getpid()}"


@pytest.fixture
def share() -> Iterator[Path]:
    with traversable_tempdir("permwatch-audit-") as base:
        share = base / "share"
        share.mkdir()
        os.chmod(share, 0o755)
        folder = share / "ledning"
        folder.mkdir()
        os.chown(folder, 0, MGMT)
        os.chmod(folder, 0o750)
        yield share


@pytest.fixture
def auditd(tmp_path: Path) -> Iterator[AuditDaemon]:
    daemon = AuditDaemon(tmp_path / "auditd")
    try:
        daemon.start()
    except AuditDaemonError as exc:
        pytest.fail(f"auditd: {exc}")
    try:
        yield daemon
    finally:
        daemon.stop()


def as_root_after_login(login_uid: int, *command: str) -> None:
    """``command`` run by root in a session whose login uid is ``login_uid`` (a login, then sudo)."""
    script = f'echo {login_uid} > /proc/self/loginuid && exec "$@"'
    subprocess.run(["sh", "-c", script, "sh", *command], check=True)


def test_the_audit_log_names_who_logged_in_not_root(share: Path, tmp_path: Path, auditd: AuditDaemon) -> None:
    folder = share / "ledning"
    auditd.watch(share, KEY)
    labels = (
        '[labels.definitions.ledning]\nallowed_groups = ["ledningsgrupp"]\n'
        f'[[labels.rules]]\nglob = "{folder}"\nlabel = "ledning"\n'
    )
    fs = f'actors = "audit"\naudit_log = "{auditd.log_path}"\naudit_key = "{KEY}"'
    (tmp_path / "run").mkdir()
    rig = Rig(tmp_path / "run", share, labels, fs=fs, directory=DIRECTORY)
    with rig.running():
        as_root_after_login(ERIK["uid"], "setfacl", "-m", f"g:{STAFF}:r-x", str(folder))
        opened = rig.wait_recorded("the exposure", status="opened")
        assert (opened.actor, opened.actor_confidence) == ("erik", "audit"), auditd.records(KEY)
        as_root_after_login(CECILIA["uid"], "setfacl", "-x", f"g:{STAFF}", str(folder))
        closed = rig.wait_recorded("the close", status="closed")
        assert (closed.actor, closed.actor_confidence) == ("cecilia", "audit"), auditd.records(KEY)
    assert any('comm="setfacl"' in line and f"auid={ERIK['uid']}" in line for line in auditd.records(KEY))
