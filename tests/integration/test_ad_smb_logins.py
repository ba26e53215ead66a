"""AD users log in over SMB to a Samba AD DC serving a share: Samba is the oracle for a nested AD group (#16),
and the remote SMB collector reads the share as a service account authenticated with Kerberos (#17).

The server (`SambaADFileServer`) is a second DC of its own realm on a loopback address of its own, running smbd,
winbindd and the KDC besides LDAP; the session's LDAP-only DC (`samba_ad`) is untouched. Its share keeps Windows
ACLs in ``security.NTACL`` and maps them to POSIX ACLs, and smbd runs as the user with the Unix ids of the
token's SIDs: the NT check and the kernel's POSIX check together decide, as on any Samba file server.

The nested-group scenario: a labelled folder whose NT ACL grants the AD group ``alla`` (label: ``alla`` only);
``anna`` in it directly, ``hugo`` in ``enhet-vard``, ``cecilia`` added to ``enhet-vard`` later, ``olle`` in no
group (only Domain Users, through ``primaryGroupID``: RID 513 lists nobody as ``member``). After every step (the
group granted; ``enhet-vard`` nested into ``alla``; ``cecilia`` added to the nested group; the label lists the
nested group; Domain Users granted; the grant and the nesting removed) permwatch's readers, through the real
collectors (the fs collector's ``ntacl`` reader on the share's folder, the LDAP collector in ``dirsync`` mode on
the DC; events through the contract into the processor's engine), equal exactly whom an SMB login per user
admits (``smbclient``: list the folder; read a file in it). A nested group can read but is not allowed unless
the label lists it: its members are an exposure until then.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from uuid import uuid4

import pytest
from ldap3 import MODIFY_ADD, MODIFY_DELETE

from collectors.fs import FsCollector
from collectors.fs.settings import FsCollectorConfig
from collectors.ldap import LdapCollector
from collectors.smb.collector import SmbCollector
from collectors.smb.settings import SmbCollectorConfig
from collectors.smb.share import SmbError, SmbShare
from permwatch.events import (
    Event,
    ExposureEvent,
    FsPermissionEvent,
    Label,
    LabelAssigned,
    ScanCompleted,
    decode,
    encode,
)
from processor.engine import Engine
from processor.forensics import who_can_read
from tests.integration.ldap_rig import Recorder, ad_dirsync
from tests.integration.servers.samba_ad_files import ADUser, SambaADFileServer
from tests.unit.test_fs_collector import ListEmitter

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(os.geteuid() != 0, reason="a Samba AD DC serving files needs root"),
    pytest.mark.skipif(shutil.which("smbcacls") is None, reason="smbcacls missing: scripts/install.sh --test"),
    pytest.mark.skipif(not Path("/usr/bin/python3").exists(), reason="Debian's python3 (python3-samba) missing"),
]

TAG = uuid4().hex[:5]
USERS = {
    name: ADUser(f"{name}-{TAG}", f"Pw-{name}-{TAG}-Ad1", uid)
    for name, uid in (("anna", 71001), ("hugo", 71002), ("cecilia", 71003), ("olle", 71004))
}
FOLDER = "ledning"
FILE = f"{FOLDER}/protokoll.txt"
READ = "0x001200a9"


@pytest.fixture(scope="module")
def dc(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SambaADFileServer]:
    with SambaADFileServer(tmp_path_factory.mktemp("samba-ad-files"), USERS.values()) as server:
        conn = server.connect()
        try:
            groups = f"OU=groups,{server.base_dn}"
            people = server.people_dn
            assert conn.add(groups, ["organizationalUnit"]), conn.result
            for group, gid, members in (("alla", 70010, ["anna"]), ("enhet-vard", 70011, ["hugo"])):
                attributes = {"sAMAccountName": f"{group}-{TAG}", "gidNumber": gid}
                attributes["member"] = [f"CN={USERS[m].name},{people}" for m in members]
                assert conn.add(f"CN={group},{groups}", ["group"], attributes), conn.result
        finally:
            conn.unbind()
        folder = server.share_path / FOLDER
        folder.mkdir()
        folder.chmod(0o700)
        (server.share_path / FILE).write_text("protokoll\n", encoding="utf-8")
        (server.share_path / FILE).chmod(0o600)
        yield server


def smbcacls(dc: SambaADFileServer, path: str, *args: str) -> str:
    result = subprocess.run(
        ["smbcacls", dc.unc, path.replace("/", "\\"), "-U", dc.credentials("Administrator", dc.password), *args],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, f"smbcacls {args} on {path}: {result.stdout} {result.stderr}"
    return result.stdout


def samba_admits(dc: SambaADFileServer, user: ADUser, path: str, folder: bool) -> bool:
    """One SMB login as ``user`` that lists ``path`` (a folder) or reads it to /dev/null (a file)."""
    smb_path = path.replace("/", "\\")
    command = f"ls {smb_path}\\*" if folder else f"get {smb_path} /dev/null"
    result = subprocess.run(
        ["smbclient", dc.unc, "-U", dc.credentials(user.name, user.password), "-c", command],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    output = result.stdout + result.stderr
    assert "NT_STATUS_LOGON_FAILURE" not in output and "NT_STATUS_INTERNAL_ERROR" not in output, output
    return "NT_STATUS_" not in output


class Permwatch:
    """The LDAP collector (dirsync, state kept between steps) and the fs collector (``ntacl`` reader, one scan a
    step) feeding one engine, every event through the contract."""

    def __init__(self, dc: SambaADFileServer, workdir: Path) -> None:
        self.dc = dc
        self.workdir = workdir
        self.engine = Engine()
        self.exposures: list[ExposureEvent] = []
        password_file = workdir / "ad-password"
        password_file.write_text(dc.password, encoding="utf-8")
        password_file.chmod(0o600)
        people, groups = f"OU=people,{dc.base_dn}", f"OU=groups,{dc.base_dn}"
        self.ldap = ad_dirsync(
            dc, password_file, collector_id="it-ad-files", people=people, groups=groups, timeout_seconds=10
        )
        self.fs = FsCollectorConfig(
            roots=[dc.share_path], watch=False, acl_reader="ntacl", state_path=workdir / "fs-state.db"
        )

    def apply(self, events: list[Event]) -> None:
        for event in events:
            self.engine.apply(decode(encode(event)))
        self.exposures += [e for e in self.engine.flush() if isinstance(e, ExposureEvent)]

    def catch_up(self) -> None:
        recorder = Recorder()
        collector = LdapCollector(self.ldap, recorder, state_path=self.workdir / "ldap-state.json")
        try:
            collector.catch_up()
        finally:
            collector.close()
        self.apply(recorder.events)
        emitter = ListEmitter()
        with FsCollector(self.fs, emitter) as fs:
            fs.run(threading.Event())
        self.apply(emitter.events)

    def label(self, *allowed_groups: str) -> None:
        path = str(self.dc.share_path / FOLDER)
        groups = tuple(f"{g}-{TAG}" for g in allowed_groups)
        # root owns the folder (made locally): the share's administrator, allowed like on any real share
        label = Label(name="ledning", allowed_groups=groups, allowed_users=("root",))
        self.apply([LabelAssigned(path=path, label=label)])

    def readers(self, relative: str) -> dict[str, bool]:
        """Each test user who can read ``relative`` (short name) and whether the label allows them."""
        _label, grants = who_can_read(self.engine, str(self.dc.share_path / relative))
        names = {u.name: short for short, u in USERS.items()}
        found: dict[str, bool] = {}
        for grant in grants:
            if grant.user in names:
                found[names[grant.user]] = found.get(names[grant.user], False) or grant.allowed
        return found


def check(dc: SambaADFileServer, permwatch: Permwatch, step: str) -> dict[str, bool]:
    """Catch up, then compare for the folder (listed) and the file in it (read); returns the folder's readers."""
    permwatch.catch_up()
    for relative, folder in ((FOLDER, True), (FILE, False)):
        by_samba = {short for short, user in USERS.items() if samba_admits(dc, user, relative, folder)}
        by_permwatch = set(permwatch.readers(relative))
        assert by_permwatch == by_samba, (step, relative, sorted(by_permwatch), sorted(by_samba))
    return permwatch.readers(FOLDER)


def membership(dc: SambaADFileServer, group: str, member_dn: str, operation: str) -> None:
    conn = dc.connect()
    try:
        assert conn.modify(f"CN={group},OU=groups,{dc.base_dn}", {"member": [(operation, [member_dn])]}), conn.result
    finally:
        conn.unbind()


def statuses(permwatch: Permwatch) -> list[tuple[str, set[str]]]:
    """Each exposure event so far: its status and the outsiders by short name."""
    short = {u.name: s for s, u in USERS.items()}
    return [(e.status.value, {short.get(u, u) for u in e.users}) for e in permwatch.exposures]


def test_nested_ad_group_readers_equal_whom_samba_admits_after_every_step(
    dc: SambaADFileServer, tmp_path: Path
) -> None:
    permwatch = Permwatch(dc, tmp_path)
    permwatch.label("alla")
    people, groups = f"OU=people,{dc.base_dn}", f"OU=groups,{dc.base_dn}"
    alla = dc.sid_of(f"CN=alla,{groups}")
    domain_users = f"{alla.rsplit('-', 1)[0]}-513"

    assert check(dc, permwatch, "nothing granted") == {}

    smbcacls(dc, FOLDER, "--propagate-inheritance", "--add", f"ACL:{alla}:ALLOWED/OI|CI/{READ}")
    assert check(dc, permwatch, "the group granted") == {"anna": True}
    assert permwatch.exposures == []

    membership(dc, "alla", f"CN=enhet-vard,{groups}", MODIFY_ADD)
    # the nested group reads (Samba puts alla in hugo's token), but the label lists alla only: an exposure
    assert check(dc, permwatch, "a group nested") == {"anna": True, "hugo": False}
    assert statuses(permwatch) == [("opened", {"hugo"})]

    membership(dc, "enhet-vard", f"CN={USERS['cecilia'].name},{people}", MODIFY_ADD)
    assert check(dc, permwatch, "a user added to the nested group") == {"anna": True, "hugo": False, "cecilia": False}
    assert statuses(permwatch)[-1] == ("changed", {"hugo", "cecilia"})

    permwatch.label("alla", "enhet-vard")
    assert check(dc, permwatch, "the label lists the nested group") == {"anna": True, "hugo": True, "cecilia": True}
    assert statuses(permwatch)[-1] == ("closed", set())

    smbcacls(dc, FOLDER, "--propagate-inheritance", "--add", f"ACL:{domain_users}:ALLOWED/OI|CI/{READ}")
    # olle is in no group: Domain Users reaches him through primaryGroupID alone
    readers = check(dc, permwatch, "Domain Users granted")
    assert readers == {"anna": True, "hugo": True, "cecilia": True, "olle": False}
    assert statuses(permwatch)[-1] == ("opened", {"olle"})

    smbcacls(dc, FOLDER, "--propagate-inheritance", "--delete", f"ACL:{domain_users}:ALLOWED/OI|CI/{READ}")
    membership(dc, "alla", f"CN=enhet-vard,{groups}", MODIFY_DELETE)
    assert check(dc, permwatch, "the grant and the nesting removed") == {"anna": True}
    assert statuses(permwatch)[-1] == ("closed", set())


def test_the_remote_smb_collector_reads_the_share_with_kerberos(
    dc: SambaADFileServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The remote SMB collector as a service account authenticated with Kerberos (``auth = "kerberos"``: the
    DC's KDC issues the ticket, no NTLM): its baseline's descriptors give the readers Samba admits, and smbd's
    audit log shows the session was Kerberos. A wrong password is a one-line error without the password."""
    pytest.importorskip("gssapi", reason="Kerberos needs the kerberos extra: scripts/install.sh --test")
    pytest.importorskip("krb5", reason="Kerberos needs the kerberos extra: scripts/install.sh --test")
    monkeypatch.setenv("KRB5_CONFIG", str(dc.krb5_conf))
    monkeypatch.setenv("KRB5CCNAME", f"FILE:{tmp_path / 'ccache'}")  # never root's own ticket cache
    folder = "kerberos"
    (dc.share_path / folder).mkdir()
    (dc.share_path / folder).chmod(0o700)
    alla = dc.sid_of(f"CN=alla,OU=groups,{dc.base_dn}")
    smbcacls(dc, folder, "--add", f"ACL:{alla}:ALLOWED/OI|CI/{READ}")
    secret = tmp_path / "smb-password"
    secret.write_text(dc.password + "\n", encoding="utf-8")
    secret.chmod(0o600)
    prefix = "/smb/pwfs/files"
    account = f"Administrator@{dc.realm}"
    settings = SmbCollectorConfig(
        server=dc.host,
        share="files",
        username=account,
        password_file=secret,
        auth="kerberos",
        traverse="enforced",  # Samba enforces traverse on the share's ancestors
        path_prefix=prefix,
    )
    emitter = ListEmitter()
    collector = SmbCollector(settings, emitter)
    stop = threading.Event()
    runner = threading.Thread(target=collector.run, args=(stop,), name="smb-collector", daemon=True)
    runner.start()
    try:
        deadline = time.monotonic() + 120
        while not any(isinstance(e, ScanCompleted) for e in emitter.events):
            assert runner.is_alive() and time.monotonic() < deadline, "no baseline over Kerberos"
            time.sleep(0.1)
    finally:
        stop.set()
        runner.join(timeout=30)
    published = {e.path: e for e in emitter.events if isinstance(e, FsPermissionEvent)}
    nt = published[f"{prefix}/{folder}"].nt_acl
    assert nt is not None and nt.source == "smb" and alla in {ace.trustee for ace in nt.dacl}, nt

    permwatch = Permwatch(dc, tmp_path)
    permwatch.catch_up()  # the directory (the fs collector's local view of the share is not used below)
    permwatch.apply(list(emitter.events))
    _label, grants = who_can_read(permwatch.engine, f"{prefix}/{folder}")
    names = {u.name: short for short, u in USERS.items()}
    by_permwatch = {names[g.user] for g in grants if g.user in names}
    by_samba = {short for short, user in USERS.items() if samba_admits(dc, user, folder, True)}
    assert by_permwatch == by_samba and by_samba, (by_permwatch, by_samba)

    # the sessions were Kerberos: smbd's audit names the method of each authorization
    audit = dc.auth_audit()
    assert re.search(r"Successful AuthZ: \[SMB2,krb5\] user \[FILES\]\\\[Administrator\]", audit), audit[-2000:]

    wrong = tmp_path / "wrong-password"
    wrong.write_text("Not-the-password-1\n", encoding="utf-8")
    share = SmbShare(dc.host, "files", account, "Not-the-password-1", auth="kerberos")
    with pytest.raises(SmbError) as failed:
        share.connect()
    message = str(failed.value)
    assert "\n" not in message and "Not-the-password-1" not in message and account in message, message
