"""Session-scoped pytest fixtures for the real directory servers (389-ds and Samba AD).

Kept out of conftest.py so the servers' modules load only where they are used;
conftest imports the fixtures (``from ...fixtures_directory import dirsrv, samba_ad``)
or lists this module in ``pytest_plugins``. Each fixture creates its server in a
fresh temp dir on first use and destroys it at the end of the session, also when
a test or the start itself fails.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.integration.servers.dirsrv import DirSrv
from tests.integration.servers.samba_ad import SambaAD


@pytest.fixture(scope="session")
def dirsrv(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DirSrv]:
    """One real 389 Directory Server instance (suffix dc=example,dc=org) shared by the session."""
    server = DirSrv(Path(tmp_path_factory.mktemp("dirsrv")))
    try:
        server.start()
        yield server
    finally:
        server.destroy()


@pytest.fixture(scope="session")
def samba_ad(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SambaAD]:
    """One real Samba AD DC on 127.0.0.1:389 (realm EXAMPLE.ORG) shared by the session.

    Port 389 is fixed, so two sessions on one machine cannot both use this fixture.
    """
    server = SambaAD(Path(tmp_path_factory.mktemp("samba_ad")))
    try:
        server.start()
        yield server
    finally:
        server.destroy()
