"""The ``ntacl`` ACL reader on real files: POSIX state and the NT ACL Samba would serve, published together.

Blobs are written to real files' xattrs; the reader is pointed at ``user.NTACL`` (its ``xattr_name`` option) so
the test needs no CAP_SYS_ADMIN, which ``security.*`` does. Each case is a rule of Samba's: a version-1 blob is
served as stored, a version-4 blob only while its POSIX hash matches the file (else it is stale and the POSIX side
decides), no blob means POSIX too, and a malformed blob is published as "ACL unreadable" with a warning naming
the path and a metric. The mutated blobs of the decoder's fuzz test must also convert to the contract or be
refused with NtAclError, nothing else.
"""

from __future__ import annotations

import logging
import os
import random
import sqlite3
import struct
import threading
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry

from collectors.acl import NameCache
from collectors.fs import FsCollector
from collectors.fs.readers import UnknownAclReaderError, acl_reader_named
from collectors.fs.readers.ntacl import FROM_POSIX, NtAclReader, nt_acl_of
from collectors.fs.settings import FsCollectorConfig
from collectors.ntacl import HASH_SIZE, HASH_TYPE_SHA256, NtAcl, NtAclError, PosixState, decode_ntacl, posix_acl_hash
from collectors.runner import BusEmitter
from permwatch.events import FsPermissionEvent, NtAce, NtAceFlag, decode, encode, unbatched
from permwatch.keys import FsKeys
from permwatch.metrics import Metrics
from permwatch.transport.embedded import EmbeddedBus
from tests.unit.test_fs_collector import ListEmitter
from tests.unit.test_ntacl import (
    FOLDER_SD,
    SAMBA_V1,
    SAMBA_V2,
    SAMBA_V3,
    SMBD_V4_FILE,
    SMBD_V4_FOLDER,
    encode_ntacl,
)

NAME = "user.NTACL"


def _state_of(path: Path) -> PosixState:
    st = path.lstat()
    directory = path.is_dir()

    def xattr(name: str) -> bytes | None:
        try:
            return os.getxattr(path, name)
        except OSError:
            return None

    return PosixState(
        xattr("system.posix_acl_access"),
        xattr("system.posix_acl_default") if directory else None,
        directory,
        st.st_uid,
        st.st_gid,
        st.st_mode,
    )


def _v4_for(path: Path) -> bytes:
    """A version-4 blob with FOLDER_SD whose POSIX hash matches ``path`` as it is now: Samba serves it."""
    ntacl = NtAcl(
        version=4,
        descriptor=FOLDER_SD,
        hash_type=HASH_TYPE_SHA256,
        hash=bytes(HASH_SIZE),
        description="posix_acl",
        sys_acl_hash=posix_acl_hash(_state_of(path)),
    )
    return encode_ntacl(ntacl)


def test_a_v1_blob_is_served_as_stored_beside_the_posix_state(tmp_path: Path) -> None:
    folder = tmp_path / "ledning"
    folder.mkdir(mode=0o750)
    os.setxattr(folder, NAME, SAMBA_V1)
    state = NtAclReader(xattr_name=NAME).read(str(folder))
    assert state is not None and state.acl_kind == "nt" and state.nt_acl is not None
    assert state.mode == 0o750 and [e.tag.value for e in state.acl] == ["user_obj", "group_obj", "other"]
    descriptor = decode_ntacl(SAMBA_V1).descriptor
    assert state.nt_acl.source == "stored"
    assert (state.nt_acl.owner, state.nt_acl.group) == (descriptor.owner, descriptor.group)
    assert state.nt_acl.dacl is not None and descriptor.dacl is not None
    assert [(a.type, a.mask, a.trustee) for a in state.nt_acl.dacl] == [
        ("allow" if ace.ace_type == 0 else "deny", ace.access_mask, ace.trustee) for ace in descriptor.dacl
    ]


def test_a_v4_blob_is_served_while_its_posix_hash_matches_and_stale_after_a_chmod(tmp_path: Path) -> None:
    folder = tmp_path / "ekonomi"
    folder.mkdir(mode=0o770)
    os.setxattr(folder, NAME, _v4_for(folder))
    reader = NtAclReader(xattr_name=NAME)
    served = reader.read(str(folder))
    assert served is not None and served.nt_acl is not None and served.nt_acl.source == "stored"
    assert served.nt_acl.dacl is not None
    assert served.nt_acl.dacl[5] == NtAce(
        type="allow", flags=(NtAceFlag.OBJECT_INHERIT, NtAceFlag.CONTAINER_INHERIT), mask=0x1200A9, trustee="S-1-5-11"
    )
    assert served.nt_acl.dacl[2].flags == (
        NtAceFlag.OBJECT_INHERIT,
        NtAceFlag.CONTAINER_INHERIT,
        NtAceFlag.INHERIT_ONLY,
    )
    folder.chmod(0o775)  # a local chmod: Samba no longer serves the blob
    stale = reader.read(str(folder))
    assert stale is not None and stale.nt_acl == FROM_POSIX
    assert stale.fingerprint != served.fingerprint


def test_no_blob_means_samba_maps_one_from_posix(tmp_path: Path) -> None:
    (tmp_path / "f.txt").write_text("x")
    state = NtAclReader(xattr_name=NAME).read(str(tmp_path / "f.txt"))
    assert state is not None and state.acl_kind == "nt" and state.nt_acl == FROM_POSIX
    assert NtAclReader(xattr_name=NAME).read(str(tmp_path / "missing")) is None


@pytest.mark.parametrize(
    ("blob", "why"),
    [
        (SMBD_V4_FOLDER[:60], "truncated"),
        (struct.pack("<HHI", 7, 7, 0x20000) + SMBD_V4_FOLDER[8:], "unknown NTACL version 7"),
        (SAMBA_V1[:12] + struct.pack("<I", 0xFFFF) + SAMBA_V1[16:], "offset 65535 outside"),
    ],
)
def test_a_malformed_blob_is_published_as_acl_unreadable_with_a_warning_and_a_metric(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, blob: bytes, why: str
) -> None:
    share = tmp_path / "share"
    folder = share / "ledning"
    folder.mkdir(parents=True)
    os.setxattr(folder, NAME, blob)
    config = FsCollectorConfig(
        roots=[share],
        watch=False,
        acl_reader="ntacl",
        acl_reader_options={"xattr_name": NAME},
        state_path=tmp_path / "state.db",
    )
    emitter = ListEmitter()
    registry = CollectorRegistry()
    with caplog.at_level(logging.WARNING), FsCollector(config, emitter, metrics=Metrics.create(registry)) as collector:
        collector.run(threading.Event())
    [event] = [decode(encode(e)) for e in emitter.fs(folder)]
    assert isinstance(event, FsPermissionEvent) and event.nt_acl is not None
    assert event.nt_acl.source == "unreadable" and event.nt_acl.error is not None and why in event.nt_acl.error
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and str(folder) in warnings[0] and "ACL unreadable" in warnings[0]
    assert registry.get_sample_value("permwatch_fs_acl_unreadable_total", {"collector": "fs"}) == 1


def test_reader_options_are_checked_naming_the_setting() -> None:
    with pytest.raises(UnknownAclReaderError, match=r"acl_reader_options for 'ntacl'.*xattr_name"):
        acl_reader_named("ntacl", NameCache(), {"xattr_name": "NTACL"})
    with pytest.raises(UnknownAclReaderError, match="acl_reader_options for 'posix'"):
        acl_reader_named("posix", NameCache(), {"xattr_name": NAME})


def test_ten_thousand_mutated_blobs_convert_to_the_contract_or_raise_ntaclerror() -> None:
    """The reader's whole path from bytes to the published NtAcl: decode, then convert (SIDs, flags and masks
    validated by the contract): a mutated blob is converted, or refused with NtAclError; nothing else escapes."""
    rng = random.Random(1616)
    seeds = [SAMBA_V1, SAMBA_V2, SAMBA_V3, SMBD_V4_FOLDER, SMBD_V4_FILE]
    converted = refused = 0
    for _ in range(10_000):
        blob = bytearray(rng.choice(seeds))
        for _ in range(rng.randint(1, 4)):
            at = rng.randrange(len(blob) + 1)
            op = rng.randrange(5)
            if op == 0 and blob:
                blob[min(at, len(blob) - 1)] = rng.randrange(256)
            elif op == 1:
                del blob[at:]
            elif op == 2:
                blob[at:at] = rng.randbytes(rng.randint(1, 8))
            elif op == 3:
                del blob[at : at + rng.randint(1, 8)]
            elif len(blob) >= at + 4:
                blob[at : at + 4] = struct.pack("<I", rng.choice([0, 1, len(blob) - 1, len(blob), 0xFFFFFFFF]))
        try:
            nt_acl_of(decode_ntacl(bytes(blob)).descriptor)
        except NtAclError:
            refused += 1
        else:
            converted += 1
    assert converted > 100 and refused > 100, (converted, refused)


def test_a_trusted_xattr_without_cap_sys_admin_is_refused_not_read_as_absent(monkeypatch: pytest.MonkeyPatch) -> None:
    """The kernel answers ENODATA, not EPERM, to an unprivileged read of trusted.*: every blob would vanish."""
    monkeypatch.setattr("collectors.fs.readers.ntacl.has_cap_sys_admin", lambda: False)
    with pytest.raises(UnknownAclReaderError, match=r"trusted\.NTACL.*CAP_SYS_ADMIN"):
        acl_reader_named("ntacl", NameCache(), {"xattr_name": "trusted.NTACL"})
    assert isinstance(acl_reader_named("ntacl", NameCache(), {"xattr_name": "security.NTACL"}), NtAclReader)


def test_scan_workers_publish_an_unreadable_blob_too_and_the_collector_counts_it(tmp_path: Path) -> None:
    """A first scan spread over a worker process: the worker reads and encodes the path, the collector counts it."""
    share = tmp_path / "share"
    for unit in ("ledning", "ekonomi", "vard"):
        (share / unit / "arkiv").mkdir(parents=True)
    broken = share / "ledning" / "arkiv"
    os.setxattr(broken, NAME, SMBD_V4_FOLDER[:60])
    config = FsCollectorConfig(
        roots=[share],
        watch=False,
        scan_workers=1,
        acl_reader="ntacl",
        acl_reader_options={"xattr_name": NAME},
    )
    bus = EmbeddedBus(tmp_path / "bus.db")
    registry = CollectorRegistry()
    metrics = Metrics.create(registry)
    emitter = BusEmitter(bus, metrics, router=FsKeys([share]), batch=True)
    with FsCollector(config, emitter, metrics=metrics, state_path=tmp_path / "state.db") as collector:
        collector.run(threading.Event())
    bus.close()
    with sqlite3.connect(tmp_path / "bus.db") as log:
        events = [e for (value,) in log.execute("SELECT value FROM log ORDER BY seq") for e in unbatched(decode(value))]
    by_path = {e.path: e for e in events if isinstance(e, FsPermissionEvent) and e.path.startswith(str(share))}
    assert len(by_path) == 7
    published = by_path[str(broken)]
    assert published.nt_acl is not None and published.nt_acl.source == "unreadable"
    assert {e.nt_acl.source for p, e in by_path.items() if p != str(broken) and e.nt_acl} == {"posix"}
    assert registry.get_sample_value("permwatch_fs_acl_unreadable_total", {"collector": "fs"}) == 1
