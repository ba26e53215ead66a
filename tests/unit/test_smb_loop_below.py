"""The remote share loop's index of reported folders (issue 17): ``_below`` by children, not by a scan.

Random trees of share-relative folders are reported, some removed (with everything under them, as the loop does
for a folder gone) and some reported again; after every step, the folders under any path must be exactly those
a scan of every reported path by prefix finds (the definition the index replaced), and removals must reach the
sink children first; with every folder gone, the index is empty.
"""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from collectors.smb.loop import ShareLoop
from collectors.smb.share import RemoteFolder, SmbShare


class Recorder:
    def __init__(self) -> None:
        self.gone: list[str] = []

    def reconciling(self) -> None:
        pass

    def folder(self, folder: RemoteFolder, observed_at: float, *, new: bool) -> None:
        pass

    def removed(self, path: str, observed_at: float) -> None:
        self.gone.append(path)

    def scanned(self, observed_at: float) -> None:
        pass

    def flush(self) -> None:
        pass


def _no_share() -> SmbShare:
    raise AssertionError("this test connects to nothing")


def by_prefix(reported: set[str], path: str) -> set[str]:
    prefix = f"{path}/" if path else ""
    return {p for p in reported if p == path or p.startswith(prefix)}


names = st.sampled_from(["a", "b", "ab", "a b", "å"])
paths = st.lists(names, min_size=0, max_size=4).map("/".join)
steps = st.lists(st.tuples(st.sampled_from(["report", "remove"]), paths), min_size=1, max_size=40)


@settings(max_examples=200, deadline=None)
@given(steps)
def test_below_equals_a_scan_by_prefix_after_every_step(script: list[tuple[str, str]]) -> None:
    sink = Recorder()
    loop = ShareLoop(_no_share, sink, clock=lambda: 0.0)
    reported: set[str] = set()
    for action, path in script:
        if action == "report":
            loop._report(RemoteFolder(path, f"descriptor of {path}".encode()))
            reported.add(path)
        else:
            sink.gone.clear()
            loop._report_removed(loop._below(path))
            gone = by_prefix(reported, path)
            assert set(sink.gone) == gone
            assert all(
                sink.gone.index(child) < sink.gone.index(parent)
                for child in sink.gone
                for parent in sink.gone
                if child.startswith(f"{parent}/") or (parent == "" and child)
            )
            reported -= gone
        for probe in {"", "a", "a/b", "ab", path}:
            assert set(loop._below(probe)) == by_prefix(reported, probe)
    loop._report_removed(loop._below(""))
    assert loop._children == {}  # nothing left behind once every folder is gone
