"""The contract's path check, written as substring tests for speed (issue 21), refuses exactly the paths the
rule names: relative, with NUL, or with an empty, '.' or '..' component. Checked against the rule as stated,
over every path of up to seven characters from the characters that matter."""

from __future__ import annotations

import itertools

import pytest

from permwatch.events import _check_path


def _by_the_rule(path: str) -> bool:
    if not path.startswith("/") or "\x00" in path:
        return False
    return path == "/" or all(part not in ("", ".", "..") for part in path[1:].split("/"))


def _accepted(path: str) -> bool:
    try:
        return _check_path(path) == path
    except ValueError:
        return False


def test_every_short_path_is_judged_as_the_rule_says() -> None:
    checked = refused = 0
    for length in range(1, 8):
        for chars in itertools.product("/.a", repeat=length):
            path = "".join(chars)
            assert _accepted(path) is _by_the_rule(path), path
            checked += 1
            refused += not _by_the_rule(path)
    assert checked == sum(3**n for n in range(1, 8)) and 0 < refused < checked


@pytest.mark.parametrize("path", ["/srv/a\x00b", "srv/a", "/srv/./a", "/srv/../a", "/srv//a", "/srv/a/", "/.", "/.."])
def test_hostile_paths_are_refused(path: str) -> None:
    assert not _accepted(path)


@pytest.mark.parametrize("path", ["/", "/srv", "/srv/.hidden", "/srv/..x", "/srv/a.b/c..", "/srv/…/x"])
def test_ordinary_paths_pass(path: str) -> None:
    assert _accepted(path)
