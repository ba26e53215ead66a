"""Kafka over TLS and SASL: the settings are validated with errors naming the key and the file, map onto
each client's own option names, and the SASL password never shows in the config, its errors or the logs."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import pytest
from kafka import KafkaAdminClient, KafkaConsumer, KafkaProducer

from permwatch.cli import main
from permwatch.cli.settings import load_config
from permwatch.config import ConfigError, KafkaConfig
from permwatch.transport.kafka import KafkaBus
from permwatch.transport.kafka_security import (
    describe,
    kafka_python_options,
    librdkafka_options,
    unreachable_message,
)

PASSWORD = "s3cret-Scram-pässword"

BASE = """
[transport]
kind = "kafka"
[transport.kafka]
bootstrap_servers = "broker.example.org:9093"
"""

SASL_SSL = (
    BASE
    + """security_protocol = "SASL_SSL"
ssl_ca_file = "tls/ca.pem"
sasl_mechanism = "SCRAM-SHA-512"
sasl_username = "permwatch"
sasl_password_file = "kafka.password"
"""
)


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "permwatch.toml"
    path.write_text(text, encoding="utf-8")
    return path


def load_error(path: Path, environ: dict[str, str] | None = None) -> str:
    with pytest.raises(ConfigError) as caught:
        load_config(path, environ={} if environ is None else environ)
    return str(caught.value)


def test_sasl_ssl_config_resolves_paths_relative_to_the_file(tmp_path: Path) -> None:
    (tmp_path / "kafka.password").write_text(PASSWORD + "\n", encoding="utf-8")
    config = load_config(write(tmp_path, SASL_SSL), environ={})
    kafka = config.transport.kafka
    assert kafka is not None
    assert kafka.security_protocol == "SASL_SSL"
    assert kafka.ssl_ca_file == tmp_path / "tls" / "ca.pem"
    assert kafka.sasl_password_file == tmp_path / "kafka.password"
    assert kafka.ssl_check_hostname is True
    # the editor's trailing newline is not part of the password
    assert kafka_python_options(kafka)["sasl_plain_password"] == PASSWORD


@pytest.mark.parametrize(
    ("settings", "key", "says"),
    [
        ('security_protocol = "TLS"\n', "transport.kafka.security_protocol", "'SASL_SSL'"),
        ('security_protocol = "ssl"\n', "transport.kafka.security_protocol", "'SSL'"),
        (
            'security_protocol = "SASL_SSL"\nsasl_username = "permwatch"\n',
            "transport.kafka.sasl_password_env",
            "set exactly one of sasl_password_file and sasl_password_env",
        ),
        (
            'security_protocol = "SASL_SSL"\nsasl_username = "u"\nsasl_password_env = "P"\nsasl_password_file = "/p"\n',
            "transport.kafka.sasl_password_env",
            "set exactly one",
        ),
        ('security_protocol = "SASL_SSL"\nsasl_password_env = "P"\n', "transport.kafka.sasl_username", "required"),
        ('ssl_ca_file = "/etc/ssl/ca.pem"\n', "transport.kafka.ssl_ca_file", "needs security_protocol 'SSL'"),
        ('sasl_username = "permwatch"\n', "transport.kafka.sasl_username", "needs security_protocol 'SASL_PLAINTEXT'"),
        ('security_protocol = "SSL"\nssl_cert_file = "/c.pem"\n', "transport.kafka.ssl_key_file", "together"),
        ('security_protocol = "SSL"\nssl_key_file = "/c.key"\n', "transport.kafka.ssl_key_file", "together"),
        (
            'security_protocol = "SASL_SSL"\nsasl_username = "u"\nsasl_password_env = "P"\nsasl_mechanism = "GSSAPI"\n',
            "transport.kafka.sasl_mechanism",
            "'SCRAM-SHA-512'",
        ),
    ],
)
def test_mistakes_are_one_line_naming_the_key_and_the_file(tmp_path: Path, settings: str, key: str, says: str) -> None:
    path = write(tmp_path, BASE + settings)
    message = load_error(path, environ={"P": PASSWORD})
    assert message.splitlines() == [message], message
    assert message.startswith(f"{path}: key '{key}': "), message
    assert says in message


def test_a_literal_password_is_refused_without_echoing_it(tmp_path: Path) -> None:
    path = write(tmp_path, SASL_SSL + f'sasl_password = "{PASSWORD}"\n')
    (tmp_path / "kafka.password").write_text(PASSWORD, encoding="utf-8")
    message = load_error(path)
    assert f"{path}: key 'transport.kafka.sasl_password': " in message
    assert "sasl_password_file or sasl_password_env" in message
    assert PASSWORD not in message


def test_a_missing_password_names_the_key_and_where_it_looked(tmp_path: Path) -> None:
    path = write(tmp_path, SASL_SSL)
    message = load_error(path)
    assert message == (
        f"{path}: key 'transport.kafka.sasl_password_file': cannot read {tmp_path / 'kafka.password'}: "
        "No such file or directory"
    )
    (tmp_path / "kafka.password").write_text("\n", encoding="utf-8")
    assert load_error(path).endswith("kafka.password is empty")

    env_path = write(tmp_path, SASL_SSL.replace('sasl_password_file = "kafka.password"', 'sasl_password_env = "KP"'))
    assert load_error(env_path) == (
        f"{env_path}: key 'transport.kafka.sasl_password_env': environment variable KP is not set or empty"
    )
    kafka = load_config(env_path, environ={"KP": PASSWORD}).transport.kafka
    assert kafka is not None and kafka.sasl_password_env == "KP"


def test_the_embedded_transport_does_not_need_the_kafka_password(tmp_path: Path) -> None:
    path = write(tmp_path, SASL_SSL.replace('kind = "kafka"', 'kind = "embedded"'))
    assert load_config(path, environ={}).transport.kind == "embedded"


def test_mutual_tls_maps_onto_both_clients(tmp_path: Path) -> None:
    config = KafkaConfig(
        bootstrap_servers="b:9093",
        security_protocol="SSL",
        ssl_ca_file=tmp_path / "ca.pem",
        ssl_cert_file=tmp_path / "client.pem",
        ssl_key_file=tmp_path / "client.key",
    )
    assert kafka_python_options(config) == {
        "security_protocol": "SSL",
        "ssl_check_hostname": True,
        "ssl_cafile": str(tmp_path / "ca.pem"),
        "ssl_certfile": str(tmp_path / "client.pem"),
        "ssl_keyfile": str(tmp_path / "client.key"),
    }
    assert librdkafka_options(config) == {
        "security.protocol": "SSL",
        "ssl.endpoint.identification.algorithm": "https",
        "ssl.ca.location": str(tmp_path / "ca.pem"),
        "ssl.certificate.location": str(tmp_path / "client.pem"),
        "ssl.key.location": str(tmp_path / "client.key"),
    }


def test_sasl_ssl_maps_onto_both_clients() -> None:
    config = KafkaConfig(
        bootstrap_servers="b:9093",
        security_protocol="SASL_SSL",
        ssl_check_hostname=False,
        sasl_mechanism="SCRAM-SHA-256",
        sasl_username="permwatch",
        sasl_password_env="KP",
    )
    environ = {"KP": PASSWORD}
    assert kafka_python_options(config, environ) == {
        "security_protocol": "SASL_SSL",
        "ssl_check_hostname": False,
        "sasl_mechanism": "SCRAM-SHA-256",
        "sasl_plain_username": "permwatch",
        "sasl_plain_password": PASSWORD,
    }
    assert librdkafka_options(config, environ) == {
        "security.protocol": "SASL_SSL",
        "ssl.endpoint.identification.algorithm": "none",
        "sasl.mechanism": "SCRAM-SHA-256",
        "sasl.username": "permwatch",
        "sasl.password": PASSWORD,
    }


def test_plaintext_maps_onto_nothing_but_the_protocol() -> None:
    config = KafkaConfig(bootstrap_servers="b:9092")
    assert kafka_python_options(config) == {"security_protocol": "PLAINTEXT"}
    assert librdkafka_options(config) == {"security.protocol": "PLAINTEXT"}


@pytest.mark.parametrize("client", [KafkaProducer, KafkaConsumer, KafkaAdminClient])
def test_kafka_python_knows_every_option_name(client: Any) -> None:
    config = KafkaConfig(
        bootstrap_servers="b:9093",
        security_protocol="SASL_SSL",
        ssl_ca_file=Path("/ca.pem"),
        ssl_cert_file=Path("/c.pem"),
        ssl_key_file=Path("/c.key"),
        sasl_username="permwatch",
        sasl_password_env="KP",
    )
    options = kafka_python_options(config, {"KP": PASSWORD})
    assert len(options) == 8
    assert set(options) <= set(client.DEFAULT_CONFIG)


def test_the_password_is_in_no_repr_dump_message_or_log(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="permwatch")
    monkeypatch.setenv("PERMWATCH_TEST_KAFKA_PASSWORD", PASSWORD)
    config = KafkaConfig(
        bootstrap_servers="127.0.0.1:9",
        security_protocol="SASL_SSL",
        sasl_username="permwatch",
        sasl_password_env="PERMWATCH_TEST_KAFKA_PASSWORD",
    )
    bus = KafkaBus(config)  # reads the password; connects only when first used
    assert bus._security["sasl_plain_password"] == PASSWORD
    shown = [
        repr(config),
        str(config),
        config.model_dump_json(),
        str(config.model_dump()),
        repr(bus),
        describe(config),
        unreachable_message(config, TimeoutError("Unable to bootstrap")),
        caplog.text,
    ]
    for text in shown:
        assert PASSWORD not in text
    assert "SCRAM-SHA-512 as 'permwatch'" in describe(config)


def test_check_config_says_which_key_lacks_its_password(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    path = write(tmp_path, SASL_SSL.replace('sasl_password_file = "kafka.password"', 'sasl_password_env = "KP"'))
    monkeypatch.delenv("KP", raising=False)
    assert main(["check-config", str(path)]) == 2
    err = capsys.readouterr().err
    assert err.strip() == (
        f"permwatch: config error: {path}: key 'transport.kafka.sasl_password_env': "
        "environment variable KP is not set or empty"
    )
    monkeypatch.setenv("KP", PASSWORD)
    (tmp_path / "tls").mkdir()
    (tmp_path / "tls" / "ca.pem").write_text("-----BEGIN CERTIFICATE-----\n")  # check-config: the file is there
    assert main(["check-config", str(path)]) == 0
    out, err = capsys.readouterr()
    assert PASSWORD not in out + err
