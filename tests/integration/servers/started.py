"""``with server:`` for the test servers: started on entering the block, stopped on leaving it, however it ends."""

from __future__ import annotations

from types import TracebackType
from typing import Self


class StartedInWith:
    """A server with ``start()`` and ``stop()`` (that needs no arguments) used as a context manager."""

    def start(self) -> None:
        raise NotImplementedError

    def stop(self) -> None:
        raise NotImplementedError

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()


class DestroyedOnExit(StartedInWith):
    """A server whose ``with`` block ends in ``destroy()`` (stop it and delete what it created), not ``stop()``."""

    def destroy(self) -> None:
        raise NotImplementedError

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.destroy()
