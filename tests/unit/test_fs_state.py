"""The published-state store: subtree bounds, children, durability only on commit, bound to its event log."""

from __future__ import annotations

import os
import sqlite3
from pathlib import Path

import pytest

from collectors.fs.state import UNKNOWN, PublishedRecord, PublishedStateStore, StateStoreError, bind_to_log
from permwatch.events import ObjectType

DIR, FILE = ObjectType.DIRECTORY, ObjectType.FILE


def filled(path: Path | None, entries: dict[str, ObjectType]) -> PublishedStateStore:
    store = PublishedStateStore(path)
    for name, kind in entries.items():
        store.put(name, object_type=kind, fingerprint=os.fsencode(name))
    store.commit()
    return store


SIBLINGS = {"/srv": DIR, "/srv/a": DIR, "/srv/a/x": FILE, "/srv/a.b": FILE, "/srv/a0": DIR, "/srv/ab": FILE}


def test_a_subtree_is_the_path_and_what_continues_below_it_not_its_look_alike_siblings() -> None:
    store = filled(None, SIBLINGS)
    assert [r.path for r in store.subtree("/srv/a")] == ["/srv/a", "/srv/a/x"]
    assert [r.path for r in store.subtree("/srv/a", include_self=False)] == ["/srv/a/x"]
    assert [r.path for r in store.subtree("/")] == sorted(SIBLINGS)
    store.delete_subtree("/srv/a")
    assert len(store) == len(SIBLINGS) - 2 and store.get("/srv/a.b") is not None


def test_children_are_keyed_by_name_and_exclude_the_directory_itself() -> None:
    store = filled(None, {"/": DIR, "/srv": DIR, "/srv/a": DIR, "/srv/a/x": FILE})
    assert set(store.children("/")) == {"srv"}
    children = store.children("/srv/a")
    assert list(children) == ["x"]
    assert (children["x"].path, children["x"].object_type, children["x"].is_dir) == ("/srv/a/x", FILE, False)


def test_names_that_are_not_utf8_round_trip() -> None:
    odd = "/srv/caf\udce9"  # b"/srv/caf\xe9" as os.fsdecode gives it
    store = filled(None, {odd: FILE})
    record = store.get(odd)
    assert record is not None and record.path == odd
    assert [r.path for r in store.subtree("/srv")] == [odd]


def test_only_committed_writes_survive_a_close(tmp_path: Path) -> None:
    path = tmp_path / "nested" / "state.db"
    store = filled(path, {"/kept": FILE})
    store.put("/lost", object_type=FILE, fingerprint=b"x")
    store.delete("/kept")
    assert store.has_uncommitted and store.get("/lost") is not None  # visible to its own reads
    store.close()
    reopened = PublishedStateStore(path)
    assert reopened.get("/lost") is None and reopened.get("/kept") is not None
    reopened.close()


def test_a_state_file_of_another_schema_version_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "state.db"
    db = sqlite3.connect(path)
    db.execute("PRAGMA user_version=7")
    db.close()
    with pytest.raises(StateStoreError, match="schema version 7"):
        PublishedStateStore(path)


def test_a_file_that_is_not_a_database_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "state.db"
    path.write_bytes(b"this is not sqlite" * 100)
    with pytest.raises(StateStoreError, match="cannot use as state store"):
        PublishedStateStore(path)


def test_buffered_writes_keep_their_order_and_a_rollback_forgets_them() -> None:
    store = filled(None, {"/srv": DIR})
    assert not store.has_below("/srv") and not store.has_below("/srv/a")
    store.put("/srv/a", object_type=DIR, fingerprint=b"1")
    assert store.has_uncommitted and store.has_below("/srv") and not store.has_below("/srv/a")
    store.put("/srv/a", object_type=FILE, fingerprint=b"2")  # the later write of one path wins
    store.put("/srv/b", object_type=FILE, fingerprint=b"3")
    store.delete("/srv/b")  # after the puts it follows
    assert set(store.children("/srv")) == {"a"} and store.get("/srv/a") is not None
    assert store.get("/srv/a").fingerprint == b"2"  # type: ignore[union-attr]
    store.put("/srv/c", object_type=FILE, fingerprint=b"4")
    store.rollback()
    assert not store.has_uncommitted and len(store) == 1 and not store.has_below("/srv")
    for i in range(2500):  # past the buffer's size: written in batches, all of them committed
        store.put(f"/srv/f{i:04d}", object_type=FILE, fingerprint=b"5")
    store.commit()
    assert len(store.children("/srv")) == 2500 and not store.has_uncommitted


def test_a_store_kept_for_another_event_log_forgets_what_it_published(tmp_path: Path) -> None:
    path = tmp_path / "fs.db"
    filled(path, SIBLINGS).close()  # written before stores named their log
    assert bind_to_log(path, "log-a")  # so it cannot tell: publish everything again, once
    store = filled(path, {"/srv": DIR})
    store.close()
    assert not bind_to_log(path, "log-a")  # the same log: what it published stays
    store = PublishedStateStore(path)
    assert len(store) == 1
    store.close()
    assert bind_to_log(path, "log-b")  # another log (the old one emptied, replaced, moved aside)
    store = PublishedStateStore(path)
    assert len(store) == 0
    store.close()
    assert not bind_to_log(tmp_path / "new.db", "log-b")  # a new store has nothing to forget


def test_paths_in_flight_at_a_crash_are_unknown_when_the_store_opens_again(tmp_path: Path) -> None:
    """Marks made durable before the bus may take their events (commit_in_flight) outlive a crash: reopened, each
    marked path is unknown (so the next scan publishes it), one deleted meanwhile keeps a record to be deleted by;
    a confirmed commit clears the marks."""
    store = filled(tmp_path / "s.db", {"/srv": DIR, "/srv/a": FILE, "/srv/gone": DIR, "/srv/kept": FILE})
    store.put("/srv/a", object_type=FILE, fingerprint=b"changed")
    store.mark("/srv/a", object_type=FILE)
    store.delete("/srv/gone")
    store.mark("/srv/gone", object_type=DIR)
    store.commit_in_flight()  # the bus may have them now
    store.put("/srv/kept", object_type=FILE, fingerprint=b"never sent")  # not yet durable: no event sent for it
    store.mark("/srv/kept", object_type=FILE)
    store.close()  # a crash before the flush's commit

    again = PublishedStateStore(tmp_path / "s.db")
    assert again.unconfirmed_at_open == 2
    assert again.get("/srv/a") == PublishedRecord("/srv/a", FILE, UNKNOWN)
    assert again.get("/srv/gone") == PublishedRecord("/srv/gone", DIR, UNKNOWN)
    assert again.get("/srv/kept") == PublishedRecord("/srv/kept", FILE, b"/srv/kept")
    again.put("/srv/a", object_type=FILE, fingerprint=b"now")
    again.mark("/srv/a", object_type=FILE)
    again.commit_in_flight()
    again.commit()  # the flush confirmed it
    again.close()
    assert PublishedStateStore(tmp_path / "s.db").unconfirmed_at_open == 0
