"""Transports: the one small bus interface and its two implementations.

``open_bus(config)`` picks the embedded durable log (the default, no broker
needed) or Kafka. Everything above this package speaks only :class:`Bus`.
"""

from __future__ import annotations

from permwatch.config import TransportConfig
from permwatch.transport.base import Bus, Consumer, Record


def open_bus(config: TransportConfig) -> Bus:
    if config.kind == "confluent":
        from permwatch.transport.confluent import ConfluentBus

        if config.kafka is None:  # pragma: no cover - guarded by check in config
            raise ValueError("transport.kafka is required when transport.kind = 'confluent'")
        return ConfluentBus(config.kafka)
    if config.kind == "kafka":
        from permwatch.transport.kafka import KafkaBus

        if config.kafka is None:  # pragma: no cover - guarded by check in config
            raise ValueError("transport.kafka is required when transport.kind = 'kafka'")
        return KafkaBus(config.kafka)
    from permwatch.transport.embedded import EmbeddedBus

    return EmbeddedBus(config.embedded.path)


__all__ = ["Bus", "Consumer", "Record", "open_bus"]
