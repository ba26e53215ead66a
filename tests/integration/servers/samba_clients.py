"""SMB clients as a test's oracle and tools against a `SambaFileServer`: ``smbcacls`` (set an ACL over SMB, read
what Samba serves), an SMB login per user (``smbclient``: may they list a folder, read a file), and the server's
users as a directory would publish them (SIDs from the passdb)."""

from __future__ import annotations

import pwd
import re
import subprocess
from dataclasses import dataclass

from collectors.ntacl import Ace, AceFlags
from permwatch.events import DirectoryGroup, DirectoryUser
from tests.integration.servers.samba_fs import ADMIN_USER, SambaFileServer


@dataclass(frozen=True)
class SmbcaclsView:
    """What ``smbcacls --get --numeric`` printed: the descriptor Samba serves over SMB."""

    control: int
    owner: str
    group: str
    dacl: tuple[Ace, ...]


def smb_path(path: str) -> str:
    return path.replace("/", "\\")


def smbcacls(samba: SambaFileServer, path: str, *args: str) -> str:
    result = subprocess.run(
        ["smbcacls", samba.unc, smb_path(path), "-U", samba.credentials(ADMIN_USER), *args],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, f"smbcacls {args} on {path}: {result.stdout} {result.stderr}"
    return result.stdout


def served_over_smb(samba: SambaFileServer, path: str) -> SmbcaclsView:
    text = smbcacls(samba, path, "--numeric")
    fields = dict(line.split(":", 1) for line in text.splitlines() if ":" in line and not line.startswith("ACL:"))
    aces = []
    for line in text.splitlines():
        match = re.fullmatch(r"ACL:(S-[0-9-]+):(\d+)/0x([0-9a-f]+)/0x([0-9a-f]+)", line.strip())
        if line.startswith("ACL:"):
            assert match, f"unexpected smbcacls line {line!r}"
            sid, ace_type, flags, mask = match.groups()
            aces.append(Ace(int(ace_type), AceFlags(int(flags, 16)), int(mask, 16), sid))
    return SmbcaclsView(int(fields["CONTROL"], 16), fields["OWNER"], fields["GROUP"], tuple(aces))


def samba_admits(samba: SambaFileServer, user: str, path: str, folder: bool) -> bool:
    """One SMB login as ``user`` that lists ``path`` (a folder) or reads it to /dev/null (a file)."""
    command = f"ls {smb_path(path)}\\*" if folder else f"get {smb_path(path)} /dev/null"
    result = subprocess.run(
        ["smbclient", samba.unc, "-U", samba.credentials(user), "-c", command],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    output = result.stdout + result.stderr
    assert "NT_STATUS_LOGON_FAILURE" not in output, output
    return "NT_STATUS_" not in output


def directory_events(samba: SambaFileServer) -> list[DirectoryUser | DirectoryGroup]:
    """The test users as a directory publishes them: name, uid, primary gid, SID and primary group SID (from
    the passdb, as ``pdbedit -v`` shows), each user's own Unix group, and the server's BUILTIN\\Users."""
    events: list[DirectoryUser | DirectoryGroup] = []
    primary_sids = set()
    for user in samba.users:
        account = pwd.getpwnam(samba.account(user))
        shown = subprocess.run(
            ["pdbedit", f"--configfile={samba.conf_path}", "-v", "-u", account.pw_name],
            capture_output=True,
            text=True,
            check=True,
            timeout=30,
        ).stdout
        fields = {k.strip(): v.strip() for k, v in (line.split(":", 1) for line in shown.splitlines() if ":" in line)}
        primary_sids.add(fields["Primary Group SID"])
        events.append(
            DirectoryUser(
                name=account.pw_name,
                uid=account.pw_uid,
                primary_gid=account.pw_gid,
                sid=fields["User SID"],
                primary_group_sid=fields["Primary Group SID"],
            )
        )
        events.append(DirectoryGroup(name=f"{account.pw_name}-group", gid=account.pw_gid))
    for sid in sorted(primary_sids):  # the server's "None" (RID 513): everybody's primary group, nobody's member
        events.append(DirectoryGroup(name="None", sid=sid))
    events.append(DirectoryGroup(name="BUILTIN\\Users", sid="S-1-5-32-545", member_users=builtin_users(samba)))
    return events


def builtin_users(samba: SambaFileServer) -> tuple[str, ...]:
    """Whom this server counts in BUILTIN\\Users, as ``net sam listmem`` says (no group mapping: nobody)."""
    listed = subprocess.run(
        ["net", f"--configfile={samba.conf_path}", "sam", "listmem", "BUILTIN\\Users"],
        capture_output=True,
        text=True,
        check=False,
        timeout=30,
    )
    if "NT_STATUS_NO_SUCH_ALIAS" in listed.stderr:
        return ()
    assert listed.returncode == 0, listed.stderr
    accounts = {samba.account(u) for u in samba.users}
    return tuple(
        sorted(a for line in listed.stdout.splitlines() if (a := line.rsplit("\\", 1)[-1].strip()) in accounts)
    )
