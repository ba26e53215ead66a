"""Reading auditd's log for who changed a permission (the ``audit`` actor source), on records as auditd 3.0 writes
them (captured from this machine's kernel and auditd: a chmod and a setfacl as root after a login as uid 33303)."""

from __future__ import annotations

from pathlib import Path

from collectors.fs.linux_audit import LinuxAuditActors, change_of, events, name_value

CHMOD = [
    "type=SYSCALL msg=audit(1796627798.050:6): arch=c000003e syscall=268 success=yes exit=0 a0=ffffff9c "
    "a1=55e457706c20 a2=180 a3=7f4205026fb8 items=1 ppid=21570 pid=21571 auid=33303 uid=0 gid=0 euid=0 suid=0 "
    'fsuid=0 egid=0 sgid=0 fsgid=0 tty=(none) ses=2 comm="chmod" exe="/usr/bin/chmod" key="permwatch"',
    'type=CWD msg=audit(1796627798.050:6): cwd="/work/main"',
    'type=PATH msg=audit(1796627798.050:6): item=0 name="/srv/share/ledning" inode=10067993 dev=fe:00 '
    "mode=040750 ouid=0 ogid=0 rdev=00:00 nametype=NORMAL cap_fp=0 cap_fi=0 cap_fe=0 cap_fver=0 cap_frootid=0",
    "type=PROCTITLE msg=audit(1796627798.050:6): proctitle=63686D6F6400363030002F746D702F6175642F73686172652F67",
]
RELATIVE = [
    "type=SYSCALL msg=audit(1796627798.054:8): arch=c000003e syscall=188 success=yes exit=0 a0=7ffd63671600 "
    "a1=7f00964b502f a2=55eef795b150 a3=2c items=1 ppid=21570 pid=21573 auid=4294967295 uid=33305 gid=0 euid=0 "
    'suid=0 fsuid=0 egid=0 sgid=0 fsgid=0 tty=(none) ses=2 comm="setfacl" exe="/usr/bin/setfacl" key="permwatch"',
    'type=CWD msg=audit(1796627798.054:8): cwd="/srv/share"',
    # a name with a space: auditd writes it in hex ("ledning 2026")
    "type=PATH msg=audit(1796627798.054:8): item=0 name=6C65646E696E672032303236 inode=10067994 dev=fe:00 "
    "mode=040750 ouid=0 ogid=0 rdev=00:00 nametype=NORMAL cap_fp=0 cap_fi=0 cap_fe=0 cap_fver=0 cap_frootid=0",
    "type=PROCTITLE msg=audit(1796627798.054:8): proctitle=7365746661636C",
]
OTHER_KEY = [
    "type=SYSCALL msg=audit(1796627796.538:4): arch=c000003e syscall=44 success=yes exit=60 a0=3 a1=7ffd802dcc00 "
    "a2=3c a3=0 items=0 ppid=1 pid=21549 auid=4294967295 uid=0 gid=0 euid=0 suid=0 fsuid=0 egid=0 sgid=0 fsgid=0 "
    'tty=(none) ses=4294967295 comm="auditd" exe="/usr/sbin/auditd" key=(null)',
    "type=PROCTITLE msg=audit(1796627796.538:4): proctitle=617564697464002D6E002D63002F746D702F617564",
]


def test_an_event_is_its_records_and_the_change_names_the_login_uid_and_the_path() -> None:
    grouped = list(events(OTHER_KEY + CHMOD + RELATIVE + ["type=DAEMON_START msg=garbage"]))
    assert [len(records) for records in grouped] == [2, 4, 4]
    assert change_of(grouped[0], "permwatch") is None  # no key of ours
    chmod = change_of(grouped[1], "permwatch")
    assert chmod is not None and (chmod.path, chmod.auid, chmod.uid, chmod.comm) == (
        "/srv/share/ledning",
        33303,
        0,
        "chmod",
    )
    relative = change_of(grouped[2], "permwatch")
    assert relative is not None and relative.path == "/srv/share/ledning 2026"
    assert relative.auid is None and relative.uid == 33305  # no login: the process's own uid
    assert change_of(grouped[1], "another-key") is None
    failed = [CHMOD[0].replace("success=yes", "success=no"), *CHMOD[1:]]
    assert change_of(next(events(failed)), "permwatch") is None
    assert name_value("(null)") is None and name_value('"x y"') == "x y"


def test_the_source_follows_the_log_from_its_end_and_waits_for_an_events_last_record(tmp_path: Path) -> None:
    log = tmp_path / "audit.log"
    log.write_text("\n".join(CHMOD) + "\n")  # before the start: the past, already published
    source = LinuxAuditActors(log, key="permwatch")
    source.start(["/srv/share"])
    assert source.actor_of("/srv/share/ledning") is None
    with log.open("a") as out:
        out.write("\n".join(RELATIVE[:2]) + "\n")  # auditd has written half of the event so far
    assert source.actor_of("/srv/share/ledning 2026") is None
    with log.open("a") as out:
        out.write("\n".join(RELATIVE[2:] + CHMOD[:1]) + "\n" + CHMOD[1] + "\n" + CHMOD[2] + "\n" + CHMOD[3] + "\n")
    actor = source.actor_of("/srv/share/ledning 2026")
    assert actor is not None and (actor.uid, actor.process, actor.confidence) == (33305, "setfacl", "audit")
    again = source.actor_of("/srv/share/ledning")
    assert again is not None and again.uid == 33303 and again.pid == 21571
    assert source.actor_of("/srv/share/ledning") is None  # told once: the next change is its own
    with log.open("a") as out:  # outside the roots: not remembered
        out.write("\n".join(line.replace("/srv/share/ledning", "/etc/shadow") for line in CHMOD) + "\n")
    assert source.actor_of("/etc/shadow") is None
    source.close()
