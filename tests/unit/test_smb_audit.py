"""Samba vfs_full_audit lines (as smbd 4.17 wrote them in this repository's Samba test) and following the log."""

from __future__ import annotations

from pathlib import Path

from collectors.fs.log_follow import LogFollower
from collectors.fs.smb_audit import AuditLine, parse_line

SHARE = "/tmp/permwatch-smb-share-7me89l6w"
LINES = [
    f"permwatch|pwntalice|127.0.0.1|share|openat|ok|r|{SHARE}/doc.txt",
    f"permwatch|pwntalice|127.0.0.1|share|sys_acl_set_fd|ok|{SHARE}/doc.txt",
    f"permwatch|pwntalice|127.0.0.1|share|fsetxattr|ok|{SHARE}/doc.txt|user.SAMBA_PAI",
    f"permwatch|pwntalice|127.0.0.1|share|fset_nt_acl|ok|{SHARE}/doc.txt []",
    f"permwatch|pwntalice|127.0.0.1|share|fsetxattr|ok|{SHARE}/doc.txt|security.NTACL",
    f"permwatch|pwntbo|10.0.0.7|share|openat|fail (Permission denied)|r|{SHARE}/a|b.txt",
    "[2026/12/07 04:01:02.123456,  1] ../../source3/smbd/server.c:1741(main)",
]


def test_audit_lines_give_user_client_operation_and_path() -> None:
    parsed = [parse_line(line) for line in LINES]
    assert parsed == [
        AuditLine("pwntalice", "127.0.0.1", "share", "openat", True, f"{SHARE}/doc.txt", "r"),
        AuditLine("pwntalice", "127.0.0.1", "share", "sys_acl_set_fd", True, f"{SHARE}/doc.txt"),
        None,  # a user xattr is not a permission
        AuditLine("pwntalice", "127.0.0.1", "share", "fset_nt_acl", True, f"{SHARE}/doc.txt"),
        AuditLine("pwntalice", "127.0.0.1", "share", "fsetxattr", True, f"{SHARE}/doc.txt"),
        AuditLine("pwntbo", "10.0.0.7", "share", "openat", False, f"{SHARE}/a|b.txt", "r"),
        None,  # smbd's own log lines
    ]


def test_the_log_is_followed_from_its_end_through_partial_lines_and_rotation(tmp_path: Path) -> None:
    path = tmp_path / "audit.log"
    path.write_text("old line, before the collector started\n")
    log = LogFollower(path)
    assert log.lines() == []
    with path.open("a") as out:
        out.write("first\nsec")
    assert log.lines() == ["first"]
    with path.open("a") as out:
        out.write("ond\n")
    assert log.lines() == ["second"]
    path.rename(tmp_path / "audit.log.1")
    path.write_text("after rotation\n")
    assert log.lines() == ["after rotation"]
    log.close()


def test_repeated_opens_are_one_record_a_minute_and_a_later_one_is_recorded_again() -> None:
    from collectors.fs.opens import RecentlySeen

    now = [0.0]
    seen: RecentlySeen[tuple[int, str]] = RecentlySeen(60.0, 2, clock=lambda: now[0])
    seen.note((7, "/srv/a"))
    now[0] = 59.0
    assert (7, "/srv/a") in seen and (8, "/srv/a") not in seen
    now[0] = 60.0
    assert (7, "/srv/a") not in seen  # a long-lived process opening it again later: a new record
    seen.note((1, "/x"))
    seen.note((2, "/x"))
    seen.note((3, "/x"))
    assert (1, "/x") not in seen and (3, "/x") in seen  # at most `limit` remembered, the oldest forgotten
