"""The revert executor's pure part (issue 19): the exact commands a revert prints and makes, from the state
recorded before the exposure and the kernel's state now."""

from __future__ import annotations

from collectors.acl import parse_acl_text
from collectors.fs.revert import PathRevert, PathState, _bare, acl_text
from permwatch.events import FsKind, FsPermissionEvent, Identity


def _event(path: str, mode: int, acl: str, default: str = "") -> FsPermissionEvent:
    return FsPermissionEvent(
        kind=FsKind.BASELINE,
        path=path,
        owner=Identity(id=0, name="root"),
        group=Identity(id=32301),
        mode=mode,
        acl=parse_acl_text(acl),
        default_acl=parse_acl_text(default) if default else (),
    )


def test_acl_text_is_setfacl_short_text_with_numeric_qualifiers() -> None:
    assert acl_text(parse_acl_text("u::rwx,g::r-x,g:32302:r-x,m::r-x,o::---")) == (
        "u::rwx,g::r-x,g:32302:r-x,m::r-x,o::---"
    )


def test_a_named_group_and_a_default_acl_are_taken_back_and_the_mode_restored() -> None:
    before = _event("/srv/share/led ning", 0o2750, "u::rwx,g::r-x,o::---")
    now = PathState(
        0,
        32301,
        0o2750,
        _bare(parse_acl_text("u::rwx,g::r-x,g:32302:r-x,m::r-x,o::---")),
        _bare(parse_acl_text("u::rwx,g::r-x,g:32302:r-x,m::r-x,o::---")),
    )
    assert PathRevert(before.path, before, now).commands() == [
        "setfacl --set u::rwx,g::r-x,o::--- '/srv/share/led ning'",
        "setfacl -k '/srv/share/led ning'",
        "chmod 2750 '/srv/share/led ning'",
    ]


def test_a_chmod_and_a_chgrp_are_taken_back_and_nothing_else() -> None:
    before = _event("/srv/share/ledning", 0o750, "u::rwx,g::r-x,g:32309:r-x,m::r-x,o::---", "u::rwx,g::r-x,o::---")
    now = PathState(0, 32302, 0o755, _bare(before.acl[:-1] + parse_acl_text("o::r-x")[-1:]), _bare(before.default_acl))
    assert PathRevert(before.path, before, now).commands() == [
        "chown -h 0:32301 /srv/share/ledning",
        "setfacl --set u::rwx,g::r-x,g:32309:r-x,m::r-x,o::--- /srv/share/ledning",
        "chmod 0750 /srv/share/ledning",
    ]
