"""How to reach Kafka securely: a :class:`KafkaConfig`'s TLS and SASL settings as each client's options.

kafka-python and librdkafka (confluent-kafka) name the same settings
differently; both transports build every producer, consumer and admin client
with these options, so a setting cannot reach one client and miss another.
The SASL password is read here, when a bus is opened, from the file or the
environment variable the config names. The returned dicts hold it: pass them
to a client and never log them. Both clients retry a refused password or an
untrusted certificate until a timeout that names no reason (they log the
reason as a warning), so :func:`unreachable_message` says what was tried.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from permwatch.config import ConfigError, KafkaConfig
from permwatch.secret import SecretUnavailable, read_secret

_TLS = ("SSL", "SASL_SSL")
_SASL = ("SASL_PLAINTEXT", "SASL_SSL")


def sasl_password(config: KafkaConfig, environ: Mapping[str, str] | None = None) -> str | None:
    """The SASL password (None without SASL); raise :class:`ConfigError` naming the key, never the value."""
    if config.security_protocol not in _SASL:
        return None
    try:
        file, env = config.sasl_password_file, config.sasl_password_env
        return read_secret("transport.kafka.sasl_password", file=file, env=env, environ=environ)
    except SecretUnavailable as exc:
        raise ConfigError(str(exc)) from None


def kafka_python_options(config: KafkaConfig, environ: Mapping[str, str] | None = None) -> dict[str, Any]:
    """Keyword arguments for kafka-python's KafkaProducer, KafkaConsumer and KafkaAdminClient."""
    options: dict[str, Any] = {"security_protocol": config.security_protocol}
    if config.security_protocol in _TLS:
        options["ssl_check_hostname"] = config.ssl_check_hostname
        if config.ssl_ca_file is not None:  # else Python's default context: the system's CAs
            options["ssl_cafile"] = str(config.ssl_ca_file)
        if config.ssl_cert_file is not None and config.ssl_key_file is not None:
            options["ssl_certfile"] = str(config.ssl_cert_file)
            options["ssl_keyfile"] = str(config.ssl_key_file)
    if config.security_protocol in _SASL:
        options["sasl_mechanism"] = config.sasl_mechanism
        options["sasl_plain_username"] = config.sasl_username
        options["sasl_plain_password"] = sasl_password(config, environ)
    return options


def librdkafka_options(config: KafkaConfig, environ: Mapping[str, str] | None = None) -> dict[str, Any]:
    """Properties for confluent-kafka's Producer, Consumer and AdminClient (librdkafka names)."""
    options: dict[str, Any] = {"security.protocol": config.security_protocol}
    if config.security_protocol in _TLS:
        options["ssl.endpoint.identification.algorithm"] = "https" if config.ssl_check_hostname else "none"
        if config.ssl_ca_file is not None:  # else librdkafka's default: the system's CAs
            options["ssl.ca.location"] = str(config.ssl_ca_file)
        if config.ssl_cert_file is not None and config.ssl_key_file is not None:
            options["ssl.certificate.location"] = str(config.ssl_cert_file)
            options["ssl.key.location"] = str(config.ssl_key_file)
    if config.security_protocol in _SASL:
        options["sasl.mechanism"] = config.sasl_mechanism
        options["sasl.username"] = config.sasl_username
        options["sasl.password"] = sasl_password(config, environ)
    return options


def describe(config: KafkaConfig) -> str:
    """How permwatch connects, for messages: protocol, CA, client certificate and SASL user, no secret."""
    parts: list[str] = [config.security_protocol]
    if config.security_protocol in _TLS:
        parts.append(f"CA {config.ssl_ca_file}" if config.ssl_ca_file is not None else "the system's CAs")
        if config.ssl_cert_file is not None:
            parts.append(f"client certificate {config.ssl_cert_file}")
    if config.security_protocol in _SASL:
        parts.append(f"{config.sasl_mechanism} as {config.sasl_username!r}")
    return ", ".join(parts)


def unreachable_message(config: KafkaConfig, error: Exception) -> str:
    """One line for when a client gave up reaching the brokers."""
    if config.security_protocol == "PLAINTEXT":
        hint = "is the broker up and is this its PLAINTEXT listener?"
    else:
        hint = (
            "the Kafka client's warnings say why: a refused user or password, an untrusted or mismatched "
            "certificate, a listener of another security_protocol, or the broker down"
        )
    return f"cannot reach Kafka at {config.bootstrap_servers} ({describe(config)}): {error}; {hint}"
