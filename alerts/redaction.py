"""Redaction: what of a path an alert may show.

Alerts carry paths and group names, never file contents (permwatch never reads
them). Even a file *name* can be sensitive (case folders hold files named
after clients), so a sink with ``hide_below_label = true`` shows the labelled
folder itself but replaces everything below it with ``…``: the SOC learns
which folder is exposed and how many paths, not what is in it. Renders call
these functions; they are pure.
"""

from __future__ import annotations

from collections.abc import Iterable

HIDDEN = "…"


def hide_below(folder: str, path: str) -> str:
    """``/srv/cases/c-17/Anna Svensson/journal.txt`` → ``/srv/cases/c-17/…`` for folder ``/srv/cases/c-17``.

    A path outside the folder (which an exposure never lists) is hidden whole.
    """
    base = folder.rstrip("/") or "/"
    if path == base or path.rstrip("/") == base:
        return base
    prefix = base if base.endswith("/") else base + "/"
    if path.startswith(prefix):
        return prefix + HIDDEN
    return HIDDEN


def shown_paths(folder: str, paths: Iterable[str], *, hide: bool) -> tuple[str, ...]:
    """The paths as a sink may show them: as they are, or hidden below ``folder`` and de-duplicated."""
    if not hide:
        return tuple(paths)
    return tuple(dict.fromkeys(hide_below(folder, path) for path in paths))
