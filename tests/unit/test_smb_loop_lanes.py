"""The remote share loop's connections (issue 17): which connection owns a folder.

A folder's watch and its reads must go through one connection (the server answers one connection's requests in
order), so ownership is a function of the folder: a root's child is dealt to the connections in turn when first
seen and keeps its connection for the loop's life; everything below it goes with it; a root itself (and anything
outside the roots) belongs to the first connection.
"""

from __future__ import annotations

from collectors.smb.loop import Lane, LoopOptions, ShareLoop
from collectors.smb.notify import Watches
from collectors.smb.share import RemoteFolder, SmbShare


class Quiet:
    def reconciling(self) -> None:
        pass

    def folder(self, folder: RemoteFolder, observed_at: float, *, new: bool) -> None:
        pass

    def removed(self, path: str, observed_at: float) -> None:
        pass

    def scanned(self, observed_at: float) -> None:
        pass

    def flush(self) -> None:
        pass


def lanes(roots: tuple[str, ...], count: int) -> tuple[ShareLoop, list[Lane]]:
    loop = ShareLoop(lambda: SmbShare("h", "s", "u", "p"), Quiet(), LoopOptions(roots=roots, connections=count))
    made = []
    for _ in range(count):
        share = SmbShare("h", "s", "u", "p")  # never connected: ownership is decided without the network
        made.append(Lane(share, Watches(share)))
    loop._lanes = made
    return loop, made


def test_top_level_folders_are_dealt_in_turn_and_keep_their_connection() -> None:
    loop, made = lanes(("",), 2)
    assert loop._lane("") is made[0]
    assert [made.index(loop._lane(p)) for p in ("b", "a", "c", "d")] == [0, 1, 0, 1]
    assert loop._lane("a/x/y") is loop._lane("a") is made[1]
    assert loop._lane("c/z") is made[0] and loop._lane("d/z/w") is made[1]
    assert loop._lane("ab") is not loop._lane("a")  # a name's prefix is another folder


def test_below_a_root_its_children_are_dealt_and_the_root_is_the_first_connections() -> None:
    loop, made = lanes(("kontor", "arkiv/gammalt"), 3)
    assert loop._lane("kontor") is made[0] and loop._lane("arkiv/gammalt") is made[0]
    owners = [made.index(loop._lane(p)) for p in ("kontor/a", "kontor/b", "arkiv/gammalt/c")]
    assert owners == [0, 1, 2]
    assert loop._lane("kontor/b/deep") is made[1]
    assert loop._lane("annat/x") is made[0]  # outside every root: never walked, owned by the first


def test_one_connection_owns_everything() -> None:
    loop, made = lanes(("",), 1)
    assert {id(loop._lane(p)) for p in ("", "a", "b/c", "d")} == {id(made[0])}
