"""The NT-ACL decoder and stale-blob rule against a real Samba file server (issue 16).

A real smbd (Debian Samba 4.17, `SambaFileServer`: ``vfs objects = acl_xattr``, ``map acl inherit = yes``) serves
a temporary share; ACLs are set over SMB with ``smbcacls`` (Authenticated Users READ, a deny ACE, inheritance
flags, propagated to children). For every path the ``security.NTACL`` xattr read from disk, decoded by
`collectors.ntacl`, must equal what ``smbcacls --get --numeric`` reports Samba serves while the stale rule says
"stored", and differ from it once a local ``setfacl`` has made the rule say stale. `can_list` and `can_read`
(an SMB login per user that lists a folder / reads a file) are the oracle the later NT access check
(``processor``) is to be compared with. Samba's POSIX hash is also checked against Samba's own NDR library
(``libndr-samba4`` through ctypes from Debian's python3) for random ACLs.
"""

from __future__ import annotations

import json
import os
import pwd
import random
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from collectors.ntacl import (
    XATTR_NAME,
    AceFlags,
    PosixState,
    Served,
    decode_ntacl,
    is_stale,
    posix_acl_hash,
    served_descriptor,
)
from processor.nt_access import nt_can_read, user_token
from tests.integration.servers.samba_clients import served_over_smb, smb_path, smbcacls
from tests.integration.servers.samba_fs import (
    ADMIN_USER,
    SambaFileServer,
    SambaFileServerError,
    _marked_by_a_live_server,
)

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(os.geteuid() != 0, reason="smbd serving other users and useradd need root"),
    pytest.mark.skipif(shutil.which("smbcacls") is None, reason="smbcacls missing: scripts/install.sh --test"),
]

USERS = {"alice": "Alice-pw-16", "bob": "Bob-pw-16", "carol": "Carol-pw-16"}
READ = 0x001200A9
# SIDs in a Samba ACL that are not a passdb user: Everyone, CREATOR OWNER/GROUP, Authenticated Users, Unix ids
_WELL_KNOWN = ("S-1-1-0", "S-1-3-0", "S-1-3-1", "S-1-5-11", "S-1-22-1-0", "S-1-22-2-0")


@pytest.fixture(scope="module")
def samba(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SambaFileServer]:
    with SambaFileServer(tmp_path_factory.mktemp("samba-fs"), USERS) as server:
        yield server


# -- Samba as the oracle -------------------------------------------------------------------------------------------


def _smbclient(samba: SambaFileServer, user: str, command: str) -> str:
    result = subprocess.run(
        ["smbclient", samba.unc, "-U", samba.credentials(user), "-c", command],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    return result.stdout + result.stderr


def can_list(samba: SambaFileServer, user: str, folder: str) -> bool:
    """Whether ``user`` may list ``folder`` over SMB (Samba applies the NT ACL and the kernel the POSIX one)."""
    output = _smbclient(samba, user, f"ls {smb_path(folder)}\\*")
    assert "NT_STATUS_LOGON_FAILURE" not in output, output
    return "NT_STATUS_" not in output


def can_read(samba: SambaFileServer, user: str, path: str) -> bool:
    """Whether ``user`` may open ``path`` over SMB and read its data (sent to /dev/null, never logged)."""
    output = _smbclient(samba, user, f"get {smb_path(path)} /dev/null")
    assert "NT_STATUS_LOGON_FAILURE" not in output, output
    return "NT_STATUS_" not in output


# -- reading what is on disk ---------------------------------------------------------------------------------------


def _xattr(path: Path, name: str) -> bytes | None:
    try:
        return os.getxattr(path, name, follow_symlinks=False)
    except OSError:
        return None


def posix_state(path: Path) -> PosixState:
    stat = path.lstat()
    is_directory = path.is_dir()
    return PosixState(
        access_acl=_xattr(path, "system.posix_acl_access"),
        default_acl=_xattr(path, "system.posix_acl_default") if is_directory else None,
        is_directory=is_directory,
        uid=stat.st_uid,
        gid=stat.st_gid,
        mode=stat.st_mode,
    )


def assert_blob_is_what_samba_serves(samba: SambaFileServer, relative: str) -> None:
    path = samba.share_path / relative
    blob = _xattr(path, XATTR_NAME)
    assert blob is not None, f"smbd wrote no {XATTR_NAME} on {relative}"
    ntacl = decode_ntacl(blob)
    assert ntacl.version == 4  # what Samba 4.17 writes
    assert served_descriptor(ntacl, posix_state(path)) is Served.STORED
    served = served_over_smb(samba, relative)
    descriptor = ntacl.descriptor
    assert (descriptor.owner, descriptor.group) == (served.owner, served.group)
    assert descriptor.control == served.control
    assert descriptor.dacl == served.dacl


# -- the tests -----------------------------------------------------------------------------------------------------


def test_blob_decodes_to_the_acl_samba_serves_until_a_local_setfacl_makes_it_stale(samba: SambaFileServer) -> None:
    folder = samba.share_path / "ledning"
    folder.mkdir()
    (folder / "notes.txt").write_text("minutes\n", encoding="utf-8")
    # restricted to root on the POSIX side first, so Samba's mapping gives Everyone nothing to start from
    folder.chmod(0o700)
    (folder / "notes.txt").chmod(0o600)
    alice, bob = (f"PWNTACL\\{samba.account(user)}" for user in ("alice", "bob"))
    smbcacls(
        samba,
        "ledning",
        "--propagate-inheritance",
        "--add",
        f"ACL:{alice}:ALLOWED/OI|CI/READ,ACL:S-1-5-11:ALLOWED/OI|CI/READ,ACL:{bob}:DENIED/OI|CI/READ",
    )
    # a file made over SMB after the ACL inherits it the Windows way, on both sides
    source = samba.workdir / "report-source.txt"
    source.write_text("report\n", encoding="utf-8")
    output = _smbclient(samba, ADMIN_USER, f"put {source} ledning\\report.txt")
    assert "NT_STATUS_" not in output, output

    for relative in ("ledning", "ledning/notes.txt", "ledning/report.txt"):
        assert_blob_is_what_samba_serves(samba, relative)

    folder_acl = decode_ntacl(os.getxattr(folder, XATTR_NAME)).descriptor
    assert folder_acl.dacl is not None
    by_trustee = {(ace.trustee, ace.ace_type): ace for ace in folder_acl.dacl}
    assert by_trustee[("S-1-5-11", 0)].access_mask == READ
    assert by_trustee[("S-1-5-11", 0)].flags == AceFlags.OBJECT_INHERIT | AceFlags.CONTAINER_INHERIT
    denied = [ace for ace in folder_acl.dacl if ace.ace_type == 1]
    assert len(denied) == 1 and denied[0].access_mask == READ
    file_acl = decode_ntacl(os.getxattr(folder / "report.txt", XATTR_NAME)).descriptor
    # Samba copies the inheritable ACEs to a new file; without SE_DACL_AUTO_INHERITED on the folder (smbcacls
    # does not set it) it does not mark them INHERITED
    assert file_acl.dacl is not None
    assert any(ace.trustee == "S-1-5-11" and ace.ace_type == 0 and ace.access_mask == READ for ace in file_acl.dacl)

    # the oracle: Samba admits alice (named in the NT ACL and, mapped, in the POSIX ACL); bob is denied; carol
    # is only an Authenticated User, which has no POSIX form, so the kernel refuses her what the NT ACL allows
    assert can_list(samba, "alice", "ledning")
    assert can_read(samba, "alice", "ledning/report.txt")
    # notes.txt got alice's ACE by propagation, yet Samba left its POSIX ACL (owner only) as it was: the NT
    # check admits her, the kernel does not, and so neither does Samba
    notes_acl = decode_ntacl(os.getxattr(folder / "notes.txt", XATTR_NAME)).descriptor
    assert notes_acl.dacl is not None
    alice_sid = next(ace.trustee for ace in folder_acl.dacl if ace.ace_type == 0 and ace.trustee not in _WELL_KNOWN)
    assert any(ace.trustee == alice_sid and ace.ace_type == 0 for ace in notes_acl.dacl)
    assert not can_read(samba, "alice", "ledning/notes.txt")
    assert not can_list(samba, "bob", "ledning")
    assert not can_read(samba, "bob", "ledning/report.txt")
    assert not can_list(samba, "carol", "ledning")
    assert not can_read(samba, "carol", "ledning/report.txt")

    # a local setfacl: the blob on disk is unchanged but stale, and Samba now serves the POSIX-mapped ACL
    before = os.getxattr(folder, XATTR_NAME)
    subprocess.run(["setfacl", "-m", f"u:{samba.uid('carol')}:rx", str(folder)], check=True)
    assert os.getxattr(folder, XATTR_NAME) == before
    ntacl = decode_ntacl(before)
    assert is_stale(ntacl, posix_state(folder))
    assert served_over_smb(samba, "ledning").dacl != ntacl.descriptor.dacl
    assert can_list(samba, "carol", "ledning")


def test_posix_acl_hash_equals_samba_ndr_for_random_acls(tmp_path: Path) -> None:
    """`posix_acl_hash` pushes ``smb_acl_wrapper`` itself; Samba's own ``ndr_push_smb_acl_wrapper`` is the oracle."""
    python3 = "/usr/bin/python3"
    if not (Path(python3).exists() and Path(_LIBNDR_SAMBA).exists()):
        pytest.skip("Debian's python3 and libndr-samba4 (package samba) are the oracle")
    rng = random.Random(16)
    cases = []
    for _ in range(200):
        is_directory = rng.random() < 0.5
        access = _random_entries(rng) if rng.random() < 0.8 else None
        default = _random_entries(rng) if is_directory and rng.random() < 0.5 else None
        mode = (0o040000 if is_directory else 0o100000) | rng.randrange(0o10000)
        cases.append((is_directory, access, default, rng.randrange(2**32), rng.randrange(2**32), mode))
    script = tmp_path / "ndr_oracle.py"
    script.write_text(_NDR_ORACLE, encoding="utf-8")
    specs = [
        {
            "access": access if access is not None else _mode_entries(mode),
            "default": (default or []) if is_directory else None,
            "owner": uid,
            "group": gid,
            "mode": mode,
        }
        for is_directory, access, default, uid, gid, mode in cases
    ]
    result = subprocess.run(
        [python3, str(script)], input=json.dumps(specs), capture_output=True, text=True, check=True, timeout=120
    )
    expected = result.stdout.split()
    assert len(expected) == len(cases)
    for (is_directory, access, default, uid, gid, mode), want in zip(cases, expected, strict=True):
        state = PosixState(_to_xattr(access), _to_xattr(default), is_directory, uid, gid, mode)
        assert posix_acl_hash(state)[:32].hex() == want


# -- the libndr oracle ---------------------------------------------------------------------------------------------

_LIBNDR_SAMBA = "/usr/lib/x86_64-linux-gnu/samba/libndr-samba4.so.0"
_KERNEL_TAG = {2: 0x01, 1: 0x02, 4: 0x04, 3: 0x08, 6: 0x10, 5: 0x20}  # smb_acl_tag_t -> xattr tag

Entry = tuple[int, int | None, int]


def _random_entries(rng: random.Random) -> list[Entry]:
    """A kernel-ordered POSIX ACL: owner, named users, owning group, named groups, mask, other."""
    users = sorted(rng.sample(range(2000), rng.randint(0, 3)))
    groups = sorted(rng.sample(range(2000), rng.randint(0, 3)))
    entries: list[Entry] = [(2, None, rng.randrange(8))]
    entries += [(1, uid, rng.randrange(8)) for uid in users]
    entries += [(4, None, rng.randrange(8))]
    entries += [(3, gid, rng.randrange(8)) for gid in groups]
    if users or groups:
        entries.append((6, None, rng.randrange(8)))
    entries.append((5, None, rng.randrange(8)))
    return entries


def _mode_entries(mode: int) -> list[Entry]:
    return [(2, None, (mode >> 6) & 7), (4, None, (mode >> 3) & 7), (5, None, mode & 7)]


def _to_xattr(entries: list[Entry] | None) -> bytes | None:
    if entries is None:
        return None
    out = (2).to_bytes(4, "little")
    for tag, ident, perm in entries:
        out += _KERNEL_TAG[tag].to_bytes(2, "little") + perm.to_bytes(2, "little")
        out += (0xFFFFFFFF if ident is None else ident).to_bytes(4, "little")
    return out


_NDR_ORACLE = f'''
import ctypes as C, hashlib, json, sys
ndr = C.CDLL("{_LIBNDR_SAMBA}")
libndr = C.CDLL("libndr.so.3")
talloc = C.CDLL("libtalloc.so.2")
talloc.talloc_named_const.restype = C.c_void_p
class Entry(C.Structure):
    _fields_ = [("a_type", C.c_int), ("id", C.c_uint32), ("a_perm", C.c_uint32)]
class Acl(C.Structure):
    _fields_ = [("count", C.c_int), ("next", C.c_int), ("acl", C.POINTER(Entry))]
class Wrapper(C.Structure):
    _fields_ = [("access_acl", C.POINTER(Acl)), ("default_acl", C.POINTER(Acl)),
                ("owner", C.c_uint32), ("group", C.c_uint32), ("mode", C.c_uint32)]
class Blob(C.Structure):
    _fields_ = [("data", C.POINTER(C.c_uint8)), ("length", C.c_size_t)]
keep = []
def acl(entries):
    array = (Entry * max(1, len(entries)))(*[Entry(t, i or 0, p) for t, i, p in entries])
    keep.append(array)
    return Acl(len(entries), 0, C.cast(array, C.POINTER(Entry)))
ctx = C.c_void_p(talloc.talloc_named_const(None, 0, b"oracle"))
for spec in json.load(sys.stdin):
    access = acl(spec["access"])
    default = acl(spec["default"]) if spec["default"] is not None else None
    wrapper = Wrapper(C.pointer(access), C.pointer(default) if default else None,
                      spec["owner"], spec["group"], spec["mode"])
    blob = Blob()
    if libndr.ndr_push_struct_blob(C.byref(blob), ctx, C.byref(wrapper), ndr.ndr_push_smb_acl_wrapper) != 0:
        sys.exit("ndr_push_smb_acl_wrapper failed")
    print(hashlib.sha256(bytes(blob.data[: blob.length])).hexdigest())
'''


# -- the NT read check against the oracle --------------------------------------------------------------------------


def smb_token(samba: SambaFileServer, user: str) -> frozenset[str]:
    """The SIDs smbd puts in ``user``'s token on this standalone server: its passdb SID and primary group SID
    (Domain Users), the well-known ones and its Unix-id SIDs."""
    result = subprocess.run(
        ["pdbedit", f"--configfile={samba.conf_path}", "-v", "-u", samba.account(user)],
        capture_output=True,
        text=True,
        check=True,
        timeout=30,
    )
    fields = dict(line.split(":", 1) for line in result.stdout.splitlines() if ":" in line)
    account = pwd.getpwnam(samba.account(user))
    return user_token(
        fields["User SID"].strip(),
        [fields["Primary Group SID"].strip()],
        uid=account.pw_uid,
        gids=os.getgrouplist(account.pw_name, account.pw_gid),
    )


def kernel_can_list(samba: SambaFileServer, user: str, folder: Path) -> bool:
    """The POSIX side, from the kernel itself: ``test -r -a -x`` run as the user (all its groups)."""
    as_user = ["setpriv", f"--reuid={samba.uid(user)}", f"--regid={pwd.getpwnam(samba.account(user)).pw_gid}"]
    result = subprocess.run(
        [*as_user, "--init-groups", "--", "test", "-r", str(folder), "-a", "-x", str(folder)],
        check=False,
        timeout=30,
    )
    return result.returncode == 0


def test_nt_read_check_and_kernel_together_predict_who_samba_lets_list(samba: SambaFileServer) -> None:
    """On Samba a user lists a folder exactly when the NT check (on the blob Samba serves) and the kernel admit
    them; checked for every user after each step: named users, Authenticated Users, a deny, then Everyone."""
    folder = samba.share_path / "socialkontoret"
    folder.mkdir()
    folder.chmod(0o700)
    alice, bob = (f"PWNTACL\\{samba.account(user)}" for user in ("alice", "bob"))
    steps = [
        f"ACL:{alice}:ALLOWED/OI|CI/READ",
        "ACL:S-1-5-11:ALLOWED/OI|CI/READ",
        f"ACL:{bob}:DENIED/OI|CI/READ",
        "ACL:S-1-1-0:ALLOWED/OI|CI/READ",
        # a deny of list-directory for the users' primary group (the server's "None", RID 513): it has no Unix
        # gid, so Samba can write nothing of it into the POSIX ACL and only the NT check refuses
        f"ACL:{next(sid for sid in smb_token(samba, 'alice') if sid.endswith('-513'))}:DENIED/0x0/0x00000001",
    ]
    seen = set()
    for step in steps:
        smbcacls(samba, "socialkontoret", "--add", step)
        ntacl = decode_ntacl(os.getxattr(folder, XATTR_NAME))
        assert not is_stale(ntacl, posix_state(folder))
        for user in USERS:
            nt = nt_can_read(ntacl.descriptor, smb_token(samba, user))
            kernel = kernel_can_list(samba, user, folder)
            admitted = can_list(samba, user, "socialkontoret")
            assert admitted == (nt and kernel), (step, user, nt, kernel, admitted)
            seen.add((nt, kernel))
    # the scenario reaches each way of being admitted or refused: both allow, only NT, only the kernel
    assert seen >= {(True, True), (True, False), (False, True)}, seen


def test_fixture_removes_its_users_and_share_when_start_fails(tmp_path: Path) -> None:
    server = SambaFileServer(tmp_path, {"alice": "Alice-pw-16", "no such name!": "x"})
    with pytest.raises(SambaFileServerError, match="useradd"):
        server.start()
    for account in (ADMIN_USER, server.account("alice")):
        assert not server._mark(account).exists()
        if _marked_by_a_live_server(account):
            continue  # this module's own server is still up and uses the same account: it stays until that stops
        with pytest.raises(KeyError):
            pwd.getpwnam(account)
    with pytest.raises(SambaFileServerError):
        _ = server.share_path
