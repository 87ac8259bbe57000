"""Kafka client configuration shared by the source, the sinks and the control input: librdkafka settings from
`[kafka]`, with secrets redacted for logs."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from smart_maintenance.config.settings import KafkaSettings, Settings

_SECRET_WORDS = ("password", "secret", "token")


_SASL = ("SASL_PLAINTEXT", "SASL_SSL")


def kafka_section(settings: Settings | KafkaSettings) -> KafkaSettings:
    """The Kafka section of whichever settings object the caller holds."""
    return settings.kafka if isinstance(settings, Settings) else settings


def kafka_config(settings: Settings | KafkaSettings) -> dict[str, str]:
    """The librdkafka configuration the settings describe, common to consumers and producers.

    `extra` is passed through last, so it can set (or override) anything.
    The result holds the SASL password in clear text, as librdkafka needs it:
    log `redacted(config)`, never the config itself.

    >>> kafka_config(KafkaSettings(brokers=("k1:9092", "k2:9092")))
    {'bootstrap.servers': 'k1:9092,k2:9092', 'security.protocol': 'PLAINTEXT'}
    """
    k = kafka_section(settings)
    if not k.brokers:
        raise ValueError("kafka.brokers is empty: give at least one host:port")
    has_user, has_password = k.sasl_username is not None, k.sasl_password is not None
    if has_user != has_password:
        raise ValueError("kafka.sasl_username and kafka.sasl_password go together: set both or neither")
    if (has_user or k.sasl_mechanism) and k.security_protocol not in _SASL:
        raise ValueError(
            f"kafka SASL settings need security_protocol SASL_PLAINTEXT or SASL_SSL, not {k.security_protocol}"
        )
    config = {"bootstrap.servers": ",".join(k.brokers), "security.protocol": k.security_protocol}
    if k.sasl_mechanism:
        config["sasl.mechanism"] = k.sasl_mechanism
    if k.sasl_username is not None and k.sasl_password is not None:
        config["sasl.username"] = k.sasl_username
        config["sasl.password"] = k.sasl_password.get_secret_value()
    if k.ssl_ca_location is not None:
        config["ssl.ca.location"] = str(Path(k.ssl_ca_location).expanduser())
    config.update({str(key): str(value) for key, value in k.extra.items()})
    return config


def redacted(config: Mapping[str, Any]) -> dict[str, Any]:
    """A copy of a librdkafka config fit for logs: passwords, secrets and tokens masked."""
    return {k: "**********" if any(w in k.lower() for w in _SECRET_WORDS) else v for k, v in config.items()}
