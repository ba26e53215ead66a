"""The filesystem collector: publishes the permission state of every path below the configured roots.

``loop`` drives it (the inbox of watch events, coalescing, rescans); the
other modules each hold one of its parts: what it last published
(``state``), how one path is read (``read``), how a state is written onto the
wire (``wire``), a first scan in worker processes (``parallel``) and its
metrics (``metrics``). Callers import :class:`FsCollector` from here.
"""

from collectors.fs.loop import FsCollector, ancestors_of

__all__ = ["FsCollector", "ancestors_of"]
