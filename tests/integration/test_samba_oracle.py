"""Samba is the oracle: permwatch's readers of every path equal the users a real smbd lets in, step by step.

A real smbd (`SambaFileServer`: Debian Samba 4.17, ``vfs objects = acl_xattr``) serves a share with four local
users. After every step of a scripted scenario the filesystem collector scans the share with the ``ntacl``
reader, the processor's engine takes what it published (encoded and decoded as on the bus) together with the
users' SIDs as a directory would publish them, and ``who_can_read`` names the readers of a folder, a file in it,
a subfolder and a file in that. Each test user then logs in over SMB (``smbclient``) and lists each folder and
reads each file; the sets must be equal. The steps: nothing shared; a named user through an inheritable ACE
propagated to the children; Authenticated Users (no POSIX form); a deny ACE; a local ``chmod -R`` (every blob
stale: Samba serves the POSIX mapping); Everyone added over SMB again (fresh blobs, the deny back in force); a
local ``setfacl`` on one file (stale again there); a raw xattr write of a version-1 blob (served unchecked) that
admits one user; a raw write of a truncated blob (Samba then refuses everyone over SMB; permwatch reports the
POSIX readers, marked "NT ACL unreadable"). Grants explain themselves ("Everyone (S-1-1-0) ALLOW read").
"""

from __future__ import annotations

import os
import shutil
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from collectors.fs import FsCollector
from collectors.fs.settings import FsCollectorConfig
from collectors.ntacl import SE_DACL_PRESENT, SE_SELF_RELATIVE, Ace, AceFlags, NtAcl, SecurityDescriptor
from permwatch.events import DirectoryUser, decode, encode
from processor.engine import Engine
from processor.forensics import who_can_read
from tests.integration.servers.samba_clients import directory_events, samba_admits, smbcacls
from tests.integration.servers.samba_fs import SambaFileServer
from tests.unit.test_fs_collector import ListEmitter
from tests.unit.test_ntacl import encode_ntacl

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(os.geteuid() != 0, reason="smbd serving other users and useradd need root"),
    pytest.mark.skipif(shutil.which("smbcacls") is None, reason="smbcacls missing: scripts/install.sh --test"),
]

USERS = {"alice": "Alice-pw-16o", "bob": "Bob-pw-16o", "carol": "Carol-pw-16o", "dave": "Dave-pw-16o"}
FOLDER = "socialkontoret"
PATHS = {  # relative path -> whether it is a folder (listed) or a file (read)
    FOLDER: True,
    f"{FOLDER}/klient.txt": False,
    f"{FOLDER}/arkiv": True,
    f"{FOLDER}/arkiv/gammal.txt": False,
}
READ = 0x001200A9


@pytest.fixture(scope="module")
def samba(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SambaFileServer]:
    with SambaFileServer(tmp_path_factory.mktemp("samba-oracle"), USERS) as server:
        yield server


class Permwatch:
    """The collector (ntacl reader, one scan per step, remembering what it published) feeding one engine."""

    def __init__(self, samba: SambaFileServer, workdir: Path) -> None:
        self.samba = samba
        self.engine = Engine()
        for event in directory_events(samba):
            self.engine.apply(event)
        self.config = FsCollectorConfig(
            roots=[samba.share_path], watch=False, acl_reader="ntacl", state_path=workdir / "fs-state.db"
        )

    def scan(self) -> None:
        emitter = ListEmitter()
        with FsCollector(self.config, emitter) as collector:
            collector.run(threading.Event())
        for event in emitter.events:
            self.engine.apply(decode(encode(event)))
        self.engine.flush()

    def readers(self, relative: str) -> tuple[set[str], list[str]]:
        _label, grants = who_can_read(self.engine, str(self.samba.share_path / relative))
        users = {self.samba.account(u) for u in USERS}
        return {g.user for g in grants if g.user in users}, sorted({g.entry for g in grants if g.user in users})


def _check(
    samba: SambaFileServer, permwatch: Permwatch, step: str, *, unreadable: frozenset[str] = frozenset()
) -> dict[str, set[str]]:
    """Compare for every path; a path in ``unreadable`` (a blob that does not decode) is one Samba refuses to
    everyone over SMB, while local users keep their POSIX access: permwatch reports the POSIX readers there,
    marked "NT ACL unreadable", a superset that hides nobody."""
    permwatch.scan()
    admitted: dict[str, set[str]] = {}
    for relative, folder in PATHS.items():
        by_samba = {samba.account(u) for u in USERS if samba_admits(samba, u, relative, folder)}
        by_permwatch, entries = permwatch.readers(relative)
        if relative in unreadable:
            assert by_samba == set() and by_permwatch, (step, relative, by_permwatch, by_samba, entries)
            assert all("NT ACL unreadable" in entry for entry in entries), entries
        else:
            assert by_permwatch == by_samba, (step, relative, by_permwatch, by_samba, entries)
        admitted[relative] = by_samba
    return admitted


def _v1_blob_admitting(sid: str) -> bytes:
    """A version-1 ``security.NTACL`` (Samba serves those unchecked): owner root, a DACL allowing only ``sid``."""
    descriptor = SecurityDescriptor(
        revision=1,
        control=SE_SELF_RELATIVE | SE_DACL_PRESENT,
        owner="S-1-22-1-0",
        group="S-1-22-2-0",
        dacl=(Ace(0, AceFlags(0), 0x001F01FF, "S-1-22-1-0"), Ace(0, AceFlags(0), READ, sid)),
        sacl_present=False,
    )
    return encode_ntacl(NtAcl(version=1, descriptor=descriptor))


def test_permwatch_readers_equal_whom_samba_admits_after_every_step(samba: SambaFileServer, tmp_path: Path) -> None:
    share = samba.share_path
    (share / FOLDER / "arkiv").mkdir(parents=True)
    (share / FOLDER / "klient.txt").write_text("journal\n", encoding="utf-8")
    (share / FOLDER / "arkiv" / "gammal.txt").write_text("arkiv\n", encoding="utf-8")
    for directory in (share / FOLDER, share / FOLDER / "arkiv"):
        directory.chmod(0o700)
    for file in (share / FOLDER / "klient.txt", share / FOLDER / "arkiv" / "gammal.txt"):
        file.chmod(0o600)
    permwatch = Permwatch(samba, tmp_path)
    alice, bob = (f"PWNTACL\\{samba.account(u)}" for u in ("alice", "bob"))
    seen: list[dict[str, set[str]]] = []

    assert _check(samba, permwatch, "nothing shared") == {relative: set() for relative in PATHS}

    smbcacls(samba, FOLDER, "--propagate-inheritance", "--add", f"ACL:{alice}:ALLOWED/OI|CI/READ")
    seen.append(_check(samba, permwatch, "alice through an inheritable ACE"))

    smbcacls(samba, FOLDER, "--propagate-inheritance", "--add", "ACL:S-1-5-11:ALLOWED/OI|CI/READ")
    seen.append(_check(samba, permwatch, "Authenticated Users"))

    smbcacls(samba, FOLDER, "--propagate-inheritance", "--add", f"ACL:{bob}:DENIED/OI|CI/READ")
    seen.append(_check(samba, permwatch, "a deny ACE for bob"))

    subprocess.run(["chmod", "-R", "o+rX", str(share / FOLDER)], check=True)
    seen.append(_check(samba, permwatch, "local chmod -R: every blob stale"))

    smbcacls(samba, FOLDER, "--propagate-inheritance", "--add", "ACL:S-1-1-0:ALLOWED/OI|CI/READ")
    after_everyone = _check(samba, permwatch, "Everyone over SMB: fresh blobs")
    seen.append(after_everyone)
    _readers, entries = permwatch.readers(f"{FOLDER}/arkiv")
    # smbcacls copies the ACE to the children without marking it inherited (the folder lacks
    # SE_DACL_AUTO_INHERITED); the grant names the ACE that admits, on the child as on the folder
    assert "Everyone (S-1-1-0) ALLOW read" in entries, entries

    carol = samba.uid("carol")
    subprocess.run(["setfacl", "-m", f"u:{carol}:---", str(share / FOLDER / "klient.txt")], check=True)
    seen.append(_check(samba, permwatch, "local setfacl on one file: its blob stale"))

    dave_sid = next(
        e.sid for e in directory_events(samba) if isinstance(e, DirectoryUser) and e.name == samba.account("dave")
    )
    assert dave_sid is not None
    os.setxattr(share / FOLDER / "arkiv" / "gammal.txt", "security.NTACL", _v1_blob_admitting(dave_sid))
    seen.append(_check(samba, permwatch, "raw xattr write: a v1 blob admitting dave"))

    truncated = os.getxattr(share / FOLDER / "arkiv", "security.NTACL")[:50]
    os.setxattr(share / FOLDER / "arkiv", "security.NTACL", truncated)
    _check(samba, permwatch, "raw xattr write: a truncated blob", unreadable=frozenset({f"{FOLDER}/arkiv"}))

    # the scenario moved the readers: from nobody through one user to several, and narrowed again by a raw blob
    distinct = {frozenset(users) for step in seen for users in step.values()}
    assert len(distinct) >= 3 and any(0 < len(users) < len(USERS) for users in distinct), seen


def test_an_smb_acl_change_reaches_the_readers_through_the_watch(samba: SambaFileServer, tmp_path: Path) -> None:
    """The collector watching (inotify: smbd's writes of the POSIX ACL and of ``security.NTACL`` each fire
    IN_ATTRIB) publishes the new state by itself; the readers then equal whom Samba admits again."""
    folder = "ekonomi"
    (samba.share_path / folder).mkdir()
    (samba.share_path / folder).chmod(0o700)
    permwatch = Permwatch(samba, tmp_path)
    config = permwatch.config.model_copy(update={"watch": True})
    emitter = ListEmitter()
    stop = threading.Event()
    with FsCollector(config, emitter) as collector:
        runner = threading.Thread(target=collector.run, args=(stop,), name="fs-collector")
        runner.start()
        applied = 0
        try:
            for step in ("ACL:S-1-1-0:ALLOWED/0x0/READ", f"ACL:PWNTACL\\{samba.account('carol')}:DENIED/0x0/READ"):
                smbcacls(samba, folder, "--add", step)
                expected = {samba.account(u) for u in USERS if samba_admits(samba, u, folder, True)}
                deadline = time.monotonic() + 30
                while True:
                    events = emitter.events
                    for event in events[applied:]:
                        permwatch.engine.apply(decode(encode(event)))
                    applied = len(events)
                    permwatch.engine.flush()
                    if permwatch.readers(folder)[0] == expected or time.monotonic() > deadline:
                        break
                    time.sleep(0.05)
                assert permwatch.readers(folder)[0] == expected, (step, expected)
        finally:
            stop.set()
            runner.join(timeout=30)
    assert expected and len(expected) < len(USERS)  # Everyone, then carol denied: the deny was seen too


def test_well_known_and_unix_id_sids_admit_whom_samba_puts_them_in_the_token_of(
    samba: SambaFileServer, tmp_path: Path
) -> None:
    """A version-1 blob (served unchecked) on a folder the POSIX side opens to all: the NT ACE alone decides, so
    each trustee's members as permwatch resolves them must be exactly whom smbd admits."""
    folder = samba.share_path / "sids"
    folder.mkdir()
    folder.chmod(0o755)
    permwatch = Permwatch(samba, tmp_path)
    users = {e.name: e for e in directory_events(samba) if isinstance(e, DirectoryUser)}
    alice, bob = users[samba.account("alice")], users[samba.account("bob")]
    assert alice.primary_group_sid is not None and alice.sid is not None
    trustees = [
        "S-1-1-0",  # Everyone
        "S-1-5-11",  # Authenticated Users
        "S-1-5-32-545",  # BUILTIN\Users
        "S-1-3-0",  # CREATOR OWNER: matches nobody on the object itself
        alice.primary_group_sid,  # the server's "None", everybody's primary group (RID 513)
        alice.sid,
        f"S-1-22-1-{alice.uid}",
        f"S-1-22-2-{bob.primary_gid}",
    ]
    outcomes = []
    for trustee in trustees:
        os.setxattr(folder, "security.NTACL", _v1_blob_admitting(trustee))
        permwatch.scan()
        by_samba = {samba.account(u) for u in USERS if samba_admits(samba, u, "sids", True)}
        by_permwatch, entries = permwatch.readers("sids")
        assert by_permwatch == by_samba, (trustee, by_permwatch, by_samba, entries)
        outcomes.append(len(by_samba))
    assert outcomes[0] == len(USERS) and 0 in outcomes and 1 in outcomes, outcomes
