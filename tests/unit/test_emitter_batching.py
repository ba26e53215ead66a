"""The collectors' emitter: a unit's permission events go out as one fs.batch, in order, under the unit's key."""

from __future__ import annotations

from pathlib import Path

from collectors.runner import BusEmitter
from permwatch.events import (
    MAX_BATCH,
    FsBatch,
    FsKind,
    FsPermissionEvent,
    Identity,
    LabelAssigned,
    ScanCompleted,
    decode,
)
from permwatch.keys import FsKeys
from permwatch.transport.embedded import EmbeddedBus


def change(path: str, mode: int = 0o750) -> FsPermissionEvent:
    return FsPermissionEvent(
        kind=FsKind.CHANGED, path=path, owner=Identity(id=0), group=Identity(id=0), mode=mode, source="fs-test"
    )


def test_a_burst_goes_out_as_batches_per_unit_in_order(tmp_path: Path) -> None:
    bus = EmbeddedBus(tmp_path / "log.db")
    emitter = BusEmitter(bus, router=FsKeys(["/srv/share"]), batch=True)
    sent = [change(f"/srv/share/{unit}/d{i:04d}", 0o700 + i % 8) for i in range(MAX_BATCH + 10) for unit in "ab"]
    for event in sent:
        emitter.emit(event)
    emitter.emit(change("/srv/share/c/alone"))
    emitter.emit(ScanCompleted(root="/srv/share", paths_seen=1, paths_changed=1, seconds=0.1))
    bus.flush()  # the bus's own durability point, not the emitter's
    records = list(bus.history(["fs"]))
    bus.close()
    decoded = [decode(r.value) for r in records]
    # the scan's end comes after every event of the scan, without waiting for a flush
    assert isinstance(decoded[-1], ScanCompleted)
    batches = [e for e in decoded if isinstance(e, FsBatch)]
    assert {len(b.events) for b in batches} == {MAX_BATCH, 10}
    assert all(r.key == e.unit for r, e in zip(records, decoded, strict=True) if isinstance(e, FsBatch))
    lone = [e for e in decoded if isinstance(e, FsPermissionEvent)]
    assert [e.path for e in lone] == ["/srv/share/c/alone"]  # a lone event goes out as itself
    unbatched = [one for b in batches for one in b.events]
    for unit in "ab":
        assert [e for e in unbatched if e.path.startswith(f"/srv/share/{unit}/")] == [
            e for e in sent if e.path.startswith(f"/srv/share/{unit}/")
        ]
    assert emitter.published == len(sent) + 2


def test_labels_and_roots_are_not_held_back(tmp_path: Path) -> None:
    bus = EmbeddedBus(tmp_path / "log.db")
    emitter = BusEmitter(bus, router=FsKeys(["/srv/share"]), batch=True)
    emitter.emit(change("/srv/share/a/x"))
    emitter.emit(LabelAssigned(path="/srv/share/a", label=None))
    bus.flush()
    assert [r.topic for r in bus.history(["fs", "labels"])] == ["labels"]
    emitter.emit(change("/srv/share"))  # a root: everything before it goes first
    bus.flush()
    assert [decode(r.value).path for r in bus.history(["fs"])] == ["/srv/share/a/x", "/srv/share"]  # type: ignore[union-attr]
    bus.close()
