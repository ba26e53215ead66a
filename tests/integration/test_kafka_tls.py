"""Issue 7, security: the pipeline over a TLS Kafka and a StartTLS directory, and SASL/SCRAM over TLS.

The broker (``secured_kafka_broker``) has a mutual-TLS listener and a SASL_SSL
listener with SCRAM-SHA-512, behind a CA the fixture made; slapd answers
StartTLS with a certificate from its own test CA. The whole pipeline (three
``permwatch run`` processes, at debug log level) runs over each Kafka
listener with the directory read over StartTLS, and a permission change on a
labelled folder must come out as an exposure and an alert. Both Kafka
clients produce and consume over SASL_SSL; a wrong password fails with an
error that says what was tried, and no password reaches a log.
"""

from __future__ import annotations

import json
import logging
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from uuid import uuid4

import pytest
from kafka.errors import KafkaTimeoutError

from permwatch.config import KafkaConfig
from permwatch.transport.base import Bus
from permwatch.transport.kafka import KafkaBus
from tests.integration.pipeline import ROLES, Pipeline, traversable_tempdir, wait_until
from tests.integration.servers.kafka import KafkaBroker
from tests.integration.servers.slapd import READER_DN, Slapd

pytestmark = [pytest.mark.integration, pytest.mark.ldap]

MGMT, STAFF = 30001, 30002  # ledningsgrupp and alla in tests/integration/fixtures/ldap/site.ldif


def mutual_tls(broker: KafkaBroker) -> dict[str, str | bool]:
    return {
        "security_protocol": "SSL",
        "ssl_ca_file": str(broker.ca_file),
        "ssl_cert_file": str(broker.client_cert_file),
        "ssl_key_file": str(broker.client_key_file),
    }


def scram_over_tls(broker: KafkaBroker, **password_source: str) -> dict[str, str | bool]:
    return {
        "security_protocol": "SASL_SSL",
        "ssl_ca_file": str(broker.ca_file),
        "sasl_mechanism": "SCRAM-SHA-512",
        "sasl_username": broker.scram_username,
        **(password_source or {"sasl_password_file": str(broker.scram_password_file)}),
    }


def kafka_config(bootstrap: str, prefix: str, security: dict[str, str | bool]) -> KafkaConfig:
    return KafkaConfig.model_validate(
        {"bootstrap_servers": bootstrap, "topic_prefix": prefix, "partitions": 2, **security}
    )


@pytest.fixture
def share() -> Iterator[Path]:
    with traversable_tempdir("permwatch-tls-it-") as base:
        share = base / "share"
        share.mkdir()
        os.chmod(share, 0o755)
        yield share


@pytest.mark.parametrize("listener", ["SSL", "SASL_SSL"])
def test_the_pipeline_runs_over_tls_kafka_and_a_starttls_directory(
    listener: str,
    secured_kafka_broker: KafkaBroker,
    slapd: Slapd,
    share: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    if slapd.ca_file is None:
        pytest.skip("slapd has no StartTLS certificate (no openssl)")
    broker = secured_kafka_broker
    site = slapd.add_site(f"t{uuid4().hex[:8]}")
    folder = share / "ledning"
    folder.mkdir()
    os.chown(folder, 0, MGMT)
    os.chmod(folder, 0o750)
    (folder / "protokoll.txt").write_text("personal data\n")

    if listener == "SSL":
        bootstrap, security = broker.ssl_bootstrap, mutual_tls(broker)
    else:
        bootstrap, security = broker.sasl_ssl_bootstrap, scram_over_tls(broker)
    ldap_section = f"""[[ldap]]
collector_id = "it-ldap"
uri = "{slapd.uri}"
start_tls = true
ca_file = "{slapd.ca_file}"
bind_dn = "{READER_DN}"
password_file = "{slapd.reader_password_file}"
user_base = "{site.people}"
group_base = "{site.groups}"
poll_seconds = 0.1
"""
    monkeypatch.setenv("PERMWATCH__LOG_LEVEL", "debug")  # the roles inherit it: the most they ever log
    pipe = Pipeline(
        tmp_path,
        bootstrap,
        f"s{uuid4().hex[:8]}.",
        share=share,
        directory_section=ldap_section,
        kafka_security=security,
    )
    pipe.label_one_folder(folder, "ledningsgrupp")
    try:
        pipe.start_all()
        wait_until(lambda: len(pipe.reader("labels").read()) >= 1, "the folder's label")
        wait_until(lambda: len(pipe.reader("directory").read()) >= 14, "the directory from slapd over StartTLS")
        pipe.wait_fs_event(folder / "protokoll.txt")
        pipe.wait_quiet()
        assert pipe.exposures() == [], "the baseline must not be exposed"

        subprocess.run(["setfacl", "-m", f"g:{STAFF}:rx", str(folder)], check=True)  # the "IT update"
        opened = wait_until(
            lambda: next((e for e in pipe.exposures() if e["status"] == "opened"), None), "the exposure"
        )
        assert opened["folder"] == str(folder)
        assert "alla" in opened["groups"]
        alerts = wait_until(lambda: alert_lines(pipe.alerts_path), "the alert in alerts.jsonl")
        assert opened["exposure_id"] in json.dumps(alerts)
    finally:
        pipe.stop()
    secrets = [broker.scram_password, slapd.reader_password, slapd.it_admin_password, slapd.root_password]
    assert any(" DEBUG " in pipe.log(role) for role in ROLES), "the roles did not log at debug level"
    for role in ROLES:
        log = pipe.log(role)
        assert "Traceback" not in log, f"{role} log:\n{log[-3000:]}"
        for secret in secrets:
            assert secret not in log, f"a password in the {role} log"


def alert_lines(path: Path) -> list[dict[str, Any]]:
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def round_trip(bus: Bus, prefix: str) -> None:
    """Publish three keyed records, read them back through a consumer group and through history()."""
    sent = [(f"/srv/share/{i}", f"value-{i}".encode()) for i in range(3)]
    try:
        for key, value in sent:
            bus.publish("fs", key, value)
        bus.flush()
        consumer = bus.consumer(["fs"], f"{prefix}group")
        try:
            received: list[tuple[str | None, bytes | None]] = []

            def all_there() -> bool:
                received.extend((r.key, r.value) for r in consumer.poll(0.5))
                return len(received) >= len(sent)

            wait_until(all_there, "the records over SASL_SSL")
            consumer.commit()
        finally:
            consumer.close()
        assert sorted(received) == sorted(sent)
        assert sorted((r.key, r.value) for r in bus.history(["fs"])) == sorted(sent)
    finally:
        bus.close()


def test_kafka_python_produces_and_consumes_over_sasl_ssl(
    secured_kafka_broker: KafkaBroker, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="permwatch")
    prefix = f"k{uuid4().hex[:8]}."
    config = kafka_config(secured_kafka_broker.sasl_ssl_bootstrap, prefix, scram_over_tls(secured_kafka_broker))
    round_trip(KafkaBus(config), prefix)
    assert secured_kafka_broker.scram_password not in caplog.text


def test_confluent_produces_and_consumes_over_sasl_ssl_and_mutual_tls(secured_kafka_broker: KafkaBroker) -> None:
    pytest.importorskip("confluent_kafka")
    from permwatch.transport.confluent import ConfluentBus

    broker = secured_kafka_broker
    for bootstrap, security in (
        (broker.sasl_ssl_bootstrap, scram_over_tls(broker)),
        (broker.ssl_bootstrap, mutual_tls(broker)),
    ):
        prefix = f"c{uuid4().hex[:8]}."
        round_trip(ConfluentBus(kafka_config(bootstrap, prefix, security)), prefix)


def test_a_wrong_password_fails_clearly_without_showing_it(
    secured_kafka_broker: KafkaBroker, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    # The CLI's logging: permwatch at any level, the kafka client's warnings and errors (see permwatch.cli).
    caplog.set_level(logging.DEBUG, logger="permwatch")
    caplog.set_level(logging.WARNING, logger="kafka")
    wrong = "not-the-" + secured_kafka_broker.scram_password
    monkeypatch.setenv("PERMWATCH_TEST_KAFKA_PASSWORD", wrong)
    security = scram_over_tls(secured_kafka_broker, sasl_password_env="PERMWATCH_TEST_KAFKA_PASSWORD")
    bus = KafkaBus(kafka_config(secured_kafka_broker.sasl_ssl_bootstrap, f"w{uuid4().hex[:8]}.", security))
    with pytest.raises(KafkaTimeoutError) as failed:
        bus.ensure_topics()
    message = str(failed.value)
    assert f"cannot reach Kafka at {secured_kafka_broker.sasl_ssl_bootstrap}" in message
    assert "SASL_SSL" in message and "SCRAM-SHA-512 as 'permwatch'" in message
    assert "refused user or password" in message
    # kafka-python's warnings usually name SaslAuthenticationFailedError, but on a busy machine it may only see
    # the broker hang up ("socket disconnected"), so the test asks only that they were captured and checked below.
    assert any(record.name.startswith("kafka.") for record in caplog.records)
    for secret in (wrong, secured_kafka_broker.scram_password):
        assert secret not in message
        assert secret not in caplog.text
