"""Which paths a filesystem collector covers: its distinct roots, their ancestors, and the root of a path.

A path belongs to the root it lies in unless an exclude glob matches it or
any folder between it and the root, or the wire contract cannot carry it.
The roots' ancestors are published too (the processor needs their traverse
bits) but are not walked.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterable
from pathlib import Path

from collectors.fs.read import PathExcluder, publishable

log = logging.getLogger(__name__)


def ancestors_of(root: str) -> list[str]:
    """``/srv/share/x`` → ``["/", "/srv", "/srv/share"]``."""
    found = []
    parent = os.path.dirname(root)
    while parent != root:
        found.append(parent)
        root, parent = parent, os.path.dirname(parent)
    return found[::-1]


def distinct_roots(roots: Iterable[Path]) -> tuple[str, ...]:
    """Normalised roots, without duplicates or roots nested in another root."""
    normalised = list(dict.fromkeys(os.path.normpath(str(root)) for root in roots))
    kept = []
    for root in normalised:
        outer = next((o for o in normalised if o != root and (root.startswith(o.rstrip("/") + "/"))), None)
        if outer is not None:
            log.info("root %s is inside root %s; watching it as part of that", root, outer)
            continue
        kept.append(root)
    return tuple(kept)


class CoveredPaths:
    """The roots a collector watches, their ancestors, and which root a path falls under."""

    def __init__(self, roots: Iterable[Path], excluder: PathExcluder) -> None:
        self.roots = distinct_roots(roots)
        self.ancestors = {a for root in self.roots for a in ancestors_of(root)} - set(self.roots)
        self._excluder = excluder

    def root_containing(self, path: str) -> str | None:
        """The root ``path`` lies in (or is), excluded or not."""
        for root in self.roots:
            if path == root or path.startswith(root.rstrip("/") + "/"):
                return root
        return None

    def root_of(self, path: str) -> str | None:
        """The root ``path`` belongs to, or ``None`` when it is outside all roots or excluded."""
        root = self.root_containing(path)
        if root is None or path == root:
            return root
        if not publishable(path):
            log.warning("ignoring %r: the event schema cannot carry this path", path)
            return None
        current = root.rstrip("/")
        for name in path[len(current) + 1 :].split("/"):
            current = f"{current}/{name}"
            if self._excluder.excludes(current, name):
                return None
        return root
