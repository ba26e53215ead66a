"""A second ACL reader plugs into the filesystem collector with one module and one registry line.

``tests/unit/table_acl_reader.py`` is the module; ``ACL_READERS["table"] =
TableAclReader`` the line. The collector then reads every path through it
(the folder on disk grants nobody anything; the table grants the all-staff
group read), and what it emits, encoded and decoded as the bus does, opens an
exposure in the processor's engine.
"""

from __future__ import annotations

import threading
from pathlib import Path

import pytest

from collectors.fs import FsCollector
from collectors.fs.parallel import WorkerFailed, walk_units
from collectors.fs.readers import ACL_READERS, UnknownAclReaderError
from collectors.fs.settings import FsCollectorConfig
from permwatch.events import (
    AclEntry,
    AclTag,
    DirectoryGroup,
    DirectoryUser,
    ExposureStatus,
    FsKind,
    Label,
    LabelAssigned,
    decode,
    encode,
)
from processor.engine import Engine
from tests.unit import table_acl_reader
from tests.unit.test_fs_collector import ListEmitter

MGMT, ALLA = 20001, 20002


def test_a_second_reader_plugged_in_by_name_reaches_the_processor(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(ACL_READERS, "table", table_acl_reader.TableAclReader)
    share = tmp_path / "share"
    folder = share / "ledning"
    folder.mkdir(parents=True)
    folder.chmod(0o700)  # on disk nobody else may read it: what the collector publishes is the table's
    grants_all_staff = (
        AclEntry(tag=AclTag.USER_OBJ, perms=7),
        AclEntry(tag=AclTag.GROUP_OBJ, perms=7),
        AclEntry(tag=AclTag.GROUP, qualifier=ALLA, perms=5),
        AclEntry(tag=AclTag.MASK, perms=7),
        AclEntry(tag=AclTag.OTHER, perms=0),
    )
    monkeypatch.setitem(table_acl_reader.TABLE, str(folder), (0, MGMT, 0o770, grants_all_staff))
    config = FsCollectorConfig(roots=[share], watch=False, acl_reader="table", state_path=tmp_path / "state.db")
    emitter = ListEmitter()
    with FsCollector(config, emitter) as collector:
        collector.run(threading.Event())

    published = emitter.fs(folder)
    assert [(e.mode, e.group.id if e.group else None, e.acl) for e in published] == [(0o770, MGMT, grants_all_staff)]

    engine = Engine()
    engine.apply(DirectoryUser(name="anna", uid=1001, primary_gid=MGMT))
    engine.apply(DirectoryUser(name="bo", uid=1002, primary_gid=ALLA))
    engine.apply(DirectoryGroup(name="ledningsgrupp", gid=MGMT, member_users=("anna",)))
    engine.apply(DirectoryGroup(name="alla", gid=ALLA, member_users=("bo",)))
    for event in emitter.events:
        engine.apply(decode(encode(event)))
    label = Label(name="ledning", allowed_groups=("ledningsgrupp",), allowed_users=("root",))
    engine.apply(LabelAssigned(path=str(folder), label=label))
    verdicts = engine.flush()
    assert [(v.status, v.folder, v.groups) for v in verdicts] == [(ExposureStatus.OPENED, str(folder), ("alla",))]
    assert {e.acl_kind for e in emitter.fs()} == {"posix"}


def test_an_unknown_reader_is_refused_naming_the_setting(tmp_path: Path) -> None:
    config = FsCollectorConfig(roots=[tmp_path], watch=False, acl_reader="nfs4", state_path=tmp_path / "state.db")
    with pytest.raises(UnknownAclReaderError, match=r"\[\[fs\]\] acl_reader = 'nfs4'.*known: ntacl, posix"):
        FsCollector(config, ListEmitter())


def test_scan_workers_read_with_the_reader_the_setting_names(tmp_path: Path) -> None:
    (tmp_path / "unit" / "below").mkdir(parents=True)
    found = walk_units(
        [str(tmp_path / "unit")], workers=1, excludes=(), source="t", kind=FsKind.BASELINE, acl_reader="nfs4"
    )
    try:
        with pytest.raises(WorkerFailed, match="acl_reader = 'nfs4'"):
            list(found)
    finally:
        found.close()
