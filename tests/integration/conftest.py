"""Fixtures for the integration tests, which run against real local servers."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from uuid import uuid4

import pytest

from tests.integration.servers.fixtures_directory import dirsrv, samba_ad  # noqa: F401 - session fixtures
from tests.integration.servers.kafka import KafkaBroker
from tests.integration.servers.slapd import Slapd


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
