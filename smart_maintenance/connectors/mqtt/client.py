"""The MQTT client shared by the readings source, the publisher and the notification channel: paho set up
from `[mqtt]` (credentials, TLS, backoff), a synchronous connect that fails with the real reason, topic levels."""

from __future__ import annotations

import time
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

from smart_maintenance.config.settings import MqttSettings

_FATAL_CONNACK = {0x84, 0x85, 0x86, 0x87, 0x8A, 0x8C}
"""Refusals that retrying cannot fix: protocol, client id, credentials, authorisation, banned, auth method."""


class MqttSourceError(Exception):
    """The MQTT broker refused us, could not be reached, or the network thread failed."""


def endpoint(settings: MqttSettings) -> str:
    """`host:port`, the name of a broker in messages (never with credentials)."""
    return f"{settings.host}:{settings.port}"


def make_client(settings: MqttSettings, client_id: str, *, clean_session: bool,
                manual_ack: bool = False) -> mqtt.Client:
    """A paho client with the settings' credentials, TLS and reconnect backoff; not connected."""
    client = mqtt.Client(
        CallbackAPIVersion.VERSION2,
        client_id=client_id,
        clean_session=clean_session,
        protocol=mqtt.MQTTv311,
        manual_ack=manual_ack,
    )
    if settings.username is not None:
        password = settings.password.get_secret_value() if settings.password is not None else None
        client.username_pw_set(settings.username, password)
    if settings.tls:
        files = (settings.ca_file, settings.cert_file, settings.key_file)
        try:
            ca_certs, certfile, keyfile = (str(f) if f is not None else None for f in files)
            client.tls_set(ca_certs, certfile, keyfile)
        except (OSError, ValueError) as e:
            raise MqttSourceError(f"MQTT TLS setup for {endpoint(settings)} failed: {e}") from e
    min_delay, max_delay = min(1.0, settings.reconnect_max_s), settings.reconnect_max_s
    client.reconnect_delay_set(min_delay=min_delay, max_delay=max_delay)  # type: ignore[arg-type]  # float s work
    return client


def connect(client: mqtt.Client, settings: MqttSettings, timeout_s: float) -> None:
    """Open the TCP (and TLS) connection, retrying with backoff until `timeout_s`.

    Done synchronously, unlike paho's own retries, so that a wrong host, port or
    certificate fails the start with the real reason.
    """
    deadline = time.monotonic() + timeout_s
    delay = 0.1
    while True:
        try:
            client.connect(settings.host, settings.port, keepalive=settings.keepalive_s)
            return
        except OSError as e:  # refused, unreachable, DNS, TLS handshake (ssl.SSLError)
            left = deadline - time.monotonic()
            if left <= 0:
                raise MqttSourceError(f"cannot connect to MQTT broker {endpoint(settings)}: {e}") from e
            time.sleep(min(delay, left))
            delay = min(delay * 2, 2.0)


def refusal(settings: MqttSettings, reason: Any) -> MqttSourceError | None:
    """The error for a CONNACK that retrying cannot fix, else None (retry)."""
    if getattr(reason, "value", 0) not in _FATAL_CONNACK:
        return None
    who = f" as user {settings.username!r}" if settings.username else " anonymously"
    return MqttSourceError(f"MQTT broker {endpoint(settings)} refused the connection{who}: {reason}")


_NOT_IN_A_LEVEL = str.maketrans({"/": "_", "+": "_", "#": "_"})


def topic_level(name: str) -> str:
    """A name as one topic level: `/`, `+` and `#` become `_` (the payload keeps the real name).

    >>> topic_level("line 1/pump#2")
    'line 1_pump_2'
    """
    return name.translate(_NOT_IN_A_LEVEL)
