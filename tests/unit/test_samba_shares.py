"""The share-door reader (collectors/fs/samba_shares.py, issue 16 item 6): ``testparm -s`` and ``sharesec
--view-all`` output as Samba 4.17 prints it, and the watcher run on Samba's real tools over an smb.conf of its own
(no smbd: both tools read the files directly) publishing only what changed, a removed share and a moved one."""

from __future__ import annotations

import shutil
import subprocess
import threading
from pathlib import Path

import pytest

from collectors.fs.samba_shares import (
    SambaShareWatcher,
    ShareConfig,
    ShareReadError,
    covers,
    parse_sharesec,
    parse_testparm,
    user_list,
)
from permwatch.events import Event, NtAce, NtAceFlag, SambaShare

TESTPARM = """# Global parameters
[global]
\tload printers = No
\tserver role = standalone server
\tstate directory = /tmp/s16/state
\tidmap config * : backend = tdb


[ledning]
\tinvalid users = bert
\tpath = /tmp/s16/share
\tvalid users = anna @ledningsgrupp "+alla staff"


[Other]
\tpath = /tmp/s16/share/x


[homes]
\tbrowseable = No
"""

SHARESEC = """[ledning]
REVISION:1
CONTROL:SR|DP
OWNER:
GROUP:
ACL:S-1-22-1-1001:DENIED/0x0/FULL
ACL:S-1-1-0:ALLOWED/0x0/FULL

[Other]
REVISION:1
CONTROL:SR|DP
OWNER:
GROUP:
ACL:S-1-5-11:ALLOWED/0x0/CHANGE
ACL:S-1-22-2-100:ALLOWED/OI|CI/READ
ACL:S-1-5-32-545:ALLOWED/0x0/0x00100020

"""


def test_testparm_output_gives_each_shares_path_and_user_lists() -> None:
    assert parse_testparm(TESTPARM) == {
        "ledning": ShareConfig("ledning", "/tmp/s16/share", ("anna", "@ledningsgrupp", "+alla staff"), ("bert",)),
        "Other": ShareConfig("Other", "/tmp/s16/share/x"),
    }
    assert user_list('KOMMUN\\anna, @ledning,"+alla staff"') == ("KOMMUN\\anna", "@ledning", "+alla staff")


def test_sharesec_output_gives_each_shares_acl_in_order() -> None:
    assert parse_sharesec(SHARESEC) == {
        "ledning": (
            NtAce(type="deny", mask=0x1F01FF, trustee="S-1-22-1-1001"),
            NtAce(type="allow", mask=0x1F01FF, trustee="S-1-1-0"),
        ),
        "Other": (
            NtAce(type="allow", mask=0x1301BF, trustee="S-1-5-11"),
            NtAce(
                type="allow",
                flags=(NtAceFlag.OBJECT_INHERIT, NtAceFlag.CONTAINER_INHERIT),
                mask=0x1200A9,
                trustee="S-1-22-2-100",
            ),
            NtAce(type="allow", mask=0x100020, trustee="S-1-5-32-545"),
        ),
    }
    with pytest.raises(ShareReadError, match="unknown access mask 'SOME'"):
        parse_sharesec("[x]\nACL:S-1-1-0:ALLOWED/0x0/SOME\n")


def test_a_share_serves_a_root_when_its_path_is_the_root_beneath_it_or_above_it() -> None:
    roots = ["/srv/share"]
    assert covers(roots, "/srv/share") and covers(roots, "/srv/share/ledning") and covers(roots, "/srv")
    assert not covers(roots, "/srv/share2") and not covers(roots, "/home")


@pytest.fixture
def samba_conf(tmp_path: Path) -> Path:
    if shutil.which("testparm") is None or shutil.which("sharesec") is None:
        pytest.skip("Samba's testparm/sharesec are not installed (scripts/install.sh --test)")
    for name in ("state", "lock", "private", "cache", "pid"):
        (tmp_path / name).mkdir()
    (tmp_path / "share" / "ledning").mkdir(parents=True)
    conf = tmp_path / "smb.conf"
    _write_conf(conf, tmp_path, {"ledning": tmp_path / "share" / "ledning", "all": tmp_path / "share"})
    return conf


def _write_conf(conf: Path, base: Path, shares: dict[str, Path], **options: str) -> None:
    lines = ["[global]", "\tserver role = standalone server", "\tload printers = no"]
    lines += [f"\t{name} directory = {base / name}" for name in ("state", "lock", "cache", "pid")]
    lines += [f"\tprivate dir = {base / 'private'}"]
    for name, path in shares.items():
        lines += [f"[{name}]", f"\tpath = {path}"] + [f"\t{key} = {value}" for key, value in options.items()]
    conf.write_text("\n".join(lines) + "\n", encoding="utf-8")


def _sharesec(conf: Path, *args: str) -> None:
    subprocess.run(["sharesec", "-s", str(conf), *args], check=True, capture_output=True, timeout=60)


def test_the_watcher_publishes_at_start_then_only_what_changed_and_survives_a_restart(samba_conf: Path) -> None:
    base = samba_conf.parent
    published: list[Event] = []
    state = base / "published.json"

    def watcher() -> SambaShareWatcher:
        roots = [base / "share" / "ledning"]
        return SambaShareWatcher(samba_conf, roots, published.append, lambda: None, source="fs", state_path=state)

    first = watcher()
    events = first.publish_changes()
    assert [(e.name, e.path) for e in events] == [
        ("all", str(base / "share")),
        ("ledning", str(base / "share/ledning")),
    ]
    assert all(e.acl == (NtAce(type="allow", mask=0x1F01FF, trustee="S-1-1-0"),) for e in events)
    assert first.publish_changes() == []

    _sharesec(samba_conf, "ledning", "--add", "S-1-22-1-1234:DENIED/0x0/FULL")
    [denied] = first.publish_changes()
    assert denied.name == "ledning" and denied.acl is not None and denied.acl[0].type == "deny"

    _write_conf(samba_conf, base, {"ledning": base / "share"}, **{"valid users": "anna, @ledning"})
    changed = first.publish_changes()
    assert [(e.name, e.path, e.deleted, e.valid_users) for e in changed] == [
        ("all", str(base / "share"), True, ()),
        ("ledning", str(base / "share/ledning"), True, ()),  # moved: its old path hears it is gone
        ("ledning", str(base / "share"), False, ("anna", "@ledning")),
    ]

    _write_conf(samba_conf, base, {}, **{})
    restarted = watcher()  # what was published is remembered: the share removed while down is told
    assert [(e.name, e.deleted) for e in restarted.publish_changes()] == [("ledning", True)]
    assert all(isinstance(e, SambaShare) for e in published)


def test_the_watcher_notices_a_change_by_the_files_alone(samba_conf: Path) -> None:
    published: list[Event] = []
    flushed = threading.Event()
    roots = [samba_conf.parent / "share"]
    watcher = SambaShareWatcher(samba_conf, roots, published.append, flushed.set, source="fs", poll_seconds=0.05)
    stop = threading.Event()
    thread = threading.Thread(target=watcher.run, args=(stop,))
    thread.start()
    try:
        assert flushed.wait(60), "the shares at start"
        flushed.clear()
        _sharesec(samba_conf, "all", "--add", "S-1-5-11:DENIED/0x0/READ")
        assert flushed.wait(60), "the share ACL change"
    finally:
        stop.set()
        thread.join(60)
    assert [e.name for e in published if isinstance(e, SambaShare)] == ["all", "ledning", "all"]


def test_check_config_names_an_smb_conf_without_the_ntacl_reader_or_that_is_no_file(tmp_path: Path) -> None:
    from collectors.fs.settings import FsCollectorConfig
    from collectors.registry import COLLECTORS

    check = COLLECTORS["fs"].check
    assert check is not None
    conf = tmp_path / "smb.conf"
    conf.write_text("[global]\n", encoding="utf-8")
    posix = FsCollectorConfig(roots=[tmp_path], smb_conf=conf)
    assert check(posix, "fs.0") == [
        "key 'fs.0.smb_conf': share doors gate SMB reads, which need acl_reader = \"ntacl\""
    ]
    missing = FsCollectorConfig(roots=[tmp_path], smb_conf=tmp_path / "nothing.conf", acl_reader="ntacl")
    assert check(missing, "fs.0") == [f"key 'fs.0.smb_conf': {tmp_path / 'nothing.conf'} is not a file"]
    assert check(FsCollectorConfig(roots=[tmp_path], smb_conf=conf, acl_reader="ntacl"), "fs.0") == []


def test_a_share_event_the_spool_dropped_is_published_again(samba_conf: Path) -> None:
    from collectors.spool import RecordDropped

    published: list[Event] = []
    drops = [RecordDropped("spool full")]
    flushed = threading.Event()

    def emit(event: Event) -> None:
        if drops:
            raise drops.pop()
        published.append(event)

    watcher = SambaShareWatcher(
        samba_conf, [samba_conf.parent / "share"], emit, flushed.set, source="fs", poll_seconds=0.05
    )
    stop = threading.Event()
    thread = threading.Thread(target=watcher.run, args=(stop,))
    thread.start()
    try:
        assert flushed.wait(60), "the shares, once the spool takes them"
    finally:
        stop.set()
        thread.join(60)
    assert [e.name for e in published if isinstance(e, SambaShare)] == ["all", "ledning"]


def test_a_share_in_an_included_file_is_read_and_its_edit_noticed(samba_conf: Path) -> None:
    from collectors.fs.samba_shares import included_files

    base = samba_conf.parent
    extra = base / "shares.d.conf"
    extra.write_text(f"[inner]\n\tpath = {base / 'share' / 'ledning'}\n", encoding="utf-8")
    with samba_conf.open("a", encoding="utf-8") as conf:
        conf.write(f"[global]\n\tinclude = {extra}\n")
    assert included_files(str(samba_conf)) == [str(samba_conf), str(extra)]
    published: list[Event] = []
    watcher = SambaShareWatcher(samba_conf, [base / "share"], published.append, lambda: None, source="fs")
    assert "inner" in {e.name for e in watcher.publish_changes() if isinstance(e, SambaShare)}
    before = watcher._fingerprint()
    extra.write_text(f"[inner]\n\tpath = {base / 'share' / 'ledning'}\n\tvalid users = anna\n", encoding="utf-8")
    assert watcher._fingerprint() != before
    [inner] = watcher.publish_changes()
    assert inner.name == "inner" and inner.valid_users == ("anna",)
