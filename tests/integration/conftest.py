"""Fixtures for the integration tests, which run against real local servers."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from uuid import uuid4

import pytest
from kafka.net.inet import KafkaNetSocket
from kafka.net.manager import KafkaConnectionManager

from tests.integration.servers.fixtures_directory import dirsrv, samba_ad  # noqa: F401 - session fixtures
from tests.integration.servers.kafka import KafkaBroker
from tests.integration.servers.slapd import Slapd


def _closing_on_failure(sock_connect):  # type: ignore[no-untyped-def]
    """kafka-python 3.0's ``KafkaNetSocket.sock_connect`` leaves the socket it was given open when the connect is
    refused or its task is cancelled by a client's ``close()`` (the coroutine is closed mid-await). The garbage
    collector closes it, with a ResourceWarning that ``filterwarnings = error`` turns into a failure of whichever
    test is running then. Wrapping it so the socket is closed on the way out keeps our own leaks failing."""

    async def wrapped(self, net, sock, sockaddr, timeout_at=None):  # type: ignore[no-untyped-def]
        try:
            return await sock_connect(self, net, sock, sockaddr, timeout_at=timeout_at)
        except BaseException:
            sock.close()
            raise

    return wrapped


def _closing_the_connection_on_cancel(connect):  # type: ignore[no-untyped-def]
    """The same leak one step later: a connect task cancelled while the new connection initializes (its socket
    connected, the API-version exchange under way) is closed as a coroutine, and ``_connect`` catches only
    ``Exception``, so the connection and its socket stay open until the collector finds them. Close it here."""

    async def wrapped(self, node, conn, *args, **kwargs):  # type: ignore[no-untyped-def]
        try:
            return await connect(self, node, conn, *args, **kwargs)
        except BaseException:
            conn.close()
            raise

    return wrapped


KafkaNetSocket.sock_connect = _closing_on_failure(KafkaNetSocket.sock_connect)  # type: ignore[method-assign]
KafkaConnectionManager._connect = _closing_the_connection_on_cancel(  # type: ignore[method-assign]
    KafkaConnectionManager._connect
)


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "integration: needs real servers (Kafka via java + mvn); slower")


@pytest.fixture(scope="session")
def kafka_broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[KafkaBroker]:
    """One real single-node Kafka broker shared by the whole session."""
    broker = KafkaBroker(Path(tmp_path_factory.mktemp("kafka")))
    try:
        broker.start()
        yield broker
    finally:
        broker.stop()


@pytest.fixture(scope="session")
def secured_kafka_broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[KafkaBroker]:
    """A second broker, started only for tests that ask: mutual-TLS and SASL_SSL (SCRAM-SHA-512) listeners
    with a CA and certificates made for the session (see ``KafkaBroker(secured=True)``)."""
    broker = KafkaBroker(Path(tmp_path_factory.mktemp("kafka-secured")), secured=True)
    try:
        broker.start()
        yield broker
    finally:
        broker.stop()


@pytest.fixture
def kafka_topic_prefix() -> str:
    """A unique topic-name prefix, so each test works on its own topics."""
    return f"t{uuid4().hex[:8]}."


@pytest.fixture(scope="session")
def slapd(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Slapd]:
    """One real OpenLDAP slapd (own slapd.conf, accesslog overlay) shared by the whole session."""
    server = Slapd(Path(tmp_path_factory.mktemp("slapd")))
    try:
        server.start()
        yield server
    finally:
        server.stop()
