"""Publish readings to MQTT, one JSON reading per message: the plant's side of the wire.

Used by the CLI's `publish` command (the simulator or a replay file as a fake
plant) and by the integration tests and benchmarks:

    with MqttPublisher(settings.mqtt, registry=registry) as pub:
        stats = pub.publish(batches, rate=500)        # Readings or an iterable of them

Each reading goes to the topic `[mqtt] topic_template` names (by default
`plant/<site>/<asset_id>/<sensor>`; site from the registry, else "default";
see `topic_prefix`) as `{"asset_id", "sensor", "ts", "value"}` with `ts`
in epoch ms. Non-finite values are sent as `null`, as a device would, and the
flow's parse step rejects them (`bad_value`); `PublishStats.non_finite`
counts them.

At QoS 1 at most `max_inflight` messages wait for their PUBACK at any time, so
memory stays bounded and `publish` returns only when the broker has
acknowledged every message (or raises `MqttPublishError` after
`ack_timeout_s` without progress). `rate` is messages per second over the whole
call (0 = as fast as the broker acknowledges).

`frame=N` (N > 1) sends up to N readings of one asset per message instead, on
the asset's topic with `frame` as its sensor level: one frame
`{"asset_id", "ts", "values": {sensor: value}}` when they share a time, else a
JSON list of frames, one per time (docs/operations.md, "Input formats"). The
broker and paho cost about the same per message whatever its size, so frames
are the way to move many readings per second over MQTT.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

import numpy as np
import orjson
import paho.mqtt.client as mqtt

from smart_maintenance.config.registry import Registry
from smart_maintenance.config.settings import MqttSettings
from smart_maintenance.connectors.mqtt.client import (
    MqttSourceError,
    connect,
    endpoint,
    make_client,
    refusal,
    topic_level,
)
from smart_maintenance.operators.ingest.codes import factorize
from smart_maintenance.operators.ingest.parse import DEFAULT_TOPIC_TEMPLATE
from smart_maintenance.operators.records import Readings


class MqttPublishError(Exception):
    """The broker refused or stopped acknowledging what we publish."""


@dataclass(frozen=True, slots=True)
class PublishStats:
    """What one `publish` call sent: every message was acknowledged (QoS > 0) or written (QoS 0)."""

    messages: int
    non_finite: int
    seconds: float
    readings: int = 0
    """Readings in those messages (more than `messages` with frames)."""

    @property
    def rate(self) -> float:
        """Messages per second."""
        return self.messages / self.seconds if self.seconds > 0 else float("inf")






def topic_prefix(registry: Registry | None, asset_id: str,
                 template: str = DEFAULT_TOPIC_TEMPLATE) -> tuple[str, str]:
    """The topic of `asset_id`'s readings under `template`, before and after its `{sensor}` level.

    `{asset_id}` is the asset, `{site}` and `{type}` come from the registry ("default" for an asset it does
    not know), and any other `{name}` level (`{enterprise}`, `{area}`, `{line}`...) is "default".

    >>> topic_prefix(None, "p-7")
    ('plant/default/p-7/', '')
    >>> topic_prefix(None, "p-7", "{sensor}/{enterprise}/{asset_id}")
    ('', '/default/p-7')
    """
    asset = registry.asset(asset_id) if registry is not None else None
    known = {"asset_id": asset_id, "site": asset.site if asset else "default",
             "type": asset.type if asset else "default"}
    levels = []
    for level in template.split("/"):
        name = level[1:-1] if level.startswith("{") and level.endswith("}") else None
        levels.append(level if name is None else "{sensor}" if name == "sensor" else
                      topic_level(known.get(name, "default")))
    before, _, after = "/".join(levels).partition("{sensor}")
    return before, after


class MqttPublisher:
    """One paho client driven from the caller's thread, with a bounded window of unacknowledged messages.

    No network thread: `send` writes the packet itself and reads acknowledgements
    every few messages (`client.loop(0)`), twice as fast as handing each
    message to paho's thread. A lost connection is re-established here, with
    the settings' backoff; paho then resends the unacknowledged QoS > 0 messages.
    """

    PUMP_EVERY = 64
    """Messages between two reads of the acknowledgements."""

    def __init__(
        self,
        settings: MqttSettings,
        *,
        registry: Registry | None = None,
        qos: int = 1,
        max_inflight: int = 1_000,
        client_id: str | None = None,
        connect_timeout_s: float = 10.0,
        ack_timeout_s: float = 30.0,
    ) -> None:
        if qos not in (0, 1, 2):
            raise ValueError(f"qos must be 0, 1 or 2, got {qos}")
        if max_inflight < 1:
            raise ValueError(f"max_inflight must be at least 1, got {max_inflight}")
        if connect_timeout_s <= 0 or ack_timeout_s <= 0:
            raise ValueError("connect_timeout_s and ack_timeout_s must be positive")
        self.settings = settings
        self.registry = registry
        self.qos = qos
        self.max_inflight = max_inflight
        self.client_id = client_id or f"{settings.client_id}-publisher-{time.time_ns() % 10**9}"
        self.connect_timeout_s = connect_timeout_s
        self.ack_timeout_s = ack_timeout_s
        self._client: mqtt.Client | None = None
        self._connected = False
        self._refused: MqttSourceError | None = None
        self._sent = 0
        self._acked = 0
        self._prefixes: dict[str, tuple[str, str]] = {}
        self._levels: dict[str, str] = {}  # sensor -> its topic level

    # -- connection ----------------------------------------------------------------------------
    def __enter__(self) -> MqttPublisher:
        self.connect()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def connect(self) -> None:
        try:
            client = make_client(self.settings, self.client_id, clean_session=True)
            client.max_inflight_messages_set(self.max_inflight)  # our window decides; paho must not queue
            client.on_connect = self._on_connect
            client.on_disconnect = self._on_disconnect
            client.on_publish = self._on_publish
            connect(client, self.settings, self.connect_timeout_s)
        except MqttSourceError as e:
            raise MqttPublishError(str(e)) from (e.__cause__ or e)
        self._client = client
        self._await_connack(time.monotonic() + self.connect_timeout_s)

    def _await_connack(self, deadline: float) -> None:
        while not self._connected and self._refused is None and time.monotonic() < deadline:
            self._client.loop(0.05)  # type: ignore[union-attr]
        if self._refused is not None or not self._connected:
            self.close()
            why = self._refused or f"MQTT broker {endpoint(self.settings)} did not accept the connection in time"
            raise MqttPublishError(str(why))

    def close(self) -> None:
        if self._client is not None:
            if self._connected:
                self._client.disconnect()  # written at once: no network thread
            self._client = None
            self._connected = False

    def _on_connect(self, _c: mqtt.Client, _u: Any, _f: Any, reason: Any, _p: Any) -> None:
        if reason.is_failure:
            self._refused = refusal(self.settings, reason)
        else:
            self._connected = True

    def _on_disconnect(self, *_: Any) -> None:
        self._connected = False

    def _on_publish(self, *_: Any) -> None:
        self._acked += 1

    def _pump(self, timeout_s: float) -> None:
        """Read acknowledgements (waiting up to `timeout_s`); reconnect when the connection is gone."""
        client = self._client
        if client is None:
            raise MqttPublishError("MqttPublisher is not connected: use it as a context manager or call connect()")
        if self._connected and client.loop(timeout_s) == mqtt.MQTT_ERR_SUCCESS:
            return
        self._connected = False
        deadline = time.monotonic() + self.ack_timeout_s
        delay = min(1.0, self.settings.reconnect_max_s)
        while True:
            try:
                client.reconnect()
                self._await_connack(deadline)
                return
            except OSError as e:
                if time.monotonic() + delay > deadline:
                    raise MqttPublishError(
                        f"lost MQTT broker {endpoint(self.settings)} and could not reconnect: {e}") from e
                time.sleep(delay)
                delay = min(delay * 2, self.settings.reconnect_max_s)

    # -- publishing ----------------------------------------------------------------------------
    def send(self, topic: str, payload: bytes) -> None:
        """Publish one message; waits while `max_inflight` messages are unacknowledged."""
        self._wait_until(lambda: self._sent - self._acked < self.max_inflight)
        info = self._client.publish(topic, payload, qos=self.qos)  # type: ignore[union-attr]
        lost = info.rc in (mqtt.MQTT_ERR_NO_CONN, mqtt.MQTT_ERR_CONN_LOST)
        if info.rc != mqtt.MQTT_ERR_SUCCESS and not (lost and self.qos > 0):
            raise MqttPublishError(
                f"publishing to {topic!r} on {endpoint(self.settings)} failed: {mqtt.error_string(info.rc)}")
        self._sent += 1  # with QoS > 0 a lost message is kept by paho and resent after the reconnect
        if lost or self._sent % self.PUMP_EVERY == 0:
            self._connected = self._connected and not lost
            self._pump(0)

    def flush(self) -> None:
        """Wait until every message sent so far is acknowledged."""
        self._wait_until(lambda: self._acked >= self._sent)

    def _wait_until(self, done: Callable[[], bool], until: float | None = None) -> None:
        """Pump until `done()`, or until the monotonic time `until`; fail after `ack_timeout_s` without an ack."""
        last, progress = self._acked, time.monotonic()
        while not done():
            now = time.monotonic()
            if until is not None and now >= until:
                return
            if self._acked != last or self._acked >= self._sent:  # progress, or nothing to wait for
                last, progress = self._acked, now
            elif now - progress > self.ack_timeout_s:
                raise MqttPublishError(
                    f"MQTT broker {endpoint(self.settings)} acknowledged nothing for {self.ack_timeout_s} s "
                    f"({self._sent - self._acked} messages unacknowledged)"
                )
            self._pump(0.05 if until is None else min(0.05, until - now))

    def publish(self, batches: Readings | Iterable[Readings], *, rate: float = 0.0, frame: int = 1) -> PublishStats:
        """Publish every reading of `batches` at `rate` messages/s (0 = unpaced) and wait for the acks.

        `frame` > 1: up to that many readings of one asset per message (see the module's docstring).
        """
        if rate < 0:
            raise ValueError(f"rate must not be negative, got {rate}")
        if frame < 1:
            raise ValueError(f"frame must be at least 1 reading, got {frame}")
        if isinstance(batches, Readings):
            batches = (batches,)
        start = time.monotonic()
        sent = non_finite = readings = 0
        for batch in batches:
            readings += len(batch)
            topics, payloads, bad = self._messages(batch) if frame == 1 else self._frames(batch, frame)
            non_finite += bad
            for topic, payload in zip(topics, payloads):
                if rate > 0:  # wait while reading acknowledgements (and keeping the connection alive)
                    self._wait_until(lambda: False, until=start + sent / rate)
                self.send(topic, payload)
                sent += 1
        self.flush()
        return PublishStats(sent, non_finite, time.monotonic() - start, readings)

    def _messages(self, batch: Readings) -> tuple[list[str], list[bytes], int]:
        """Topics and JSON payloads of a batch; one registry lookup per asset, not per reading."""
        codes, assets = factorize(batch.asset_id)
        prefixes = [self._prefix(str(a)) for a in assets]
        sensors = batch.sensor.tolist()
        asset_ids = batch.asset_id.tolist()
        levels = self._levels
        topics = [prefixes[c][0] + (levels.get(s) or levels.setdefault(s, topic_level(s))) + prefixes[c][1]
                  for c, s in zip(codes.tolist(), sensors)]
        dumps = orjson.dumps
        payloads = [
            dumps({"asset_id": a, "sensor": s, "ts": t, "value": v})
            for a, s, t, v in zip(asset_ids, sensors, batch.ts.tolist(), batch.value.tolist())
        ]
        return topics, payloads, int(np.count_nonzero(~np.isfinite(batch.value)))

    def _frames(self, batch: Readings, size: int) -> tuple[list[str], list[bytes], int]:
        """Topics and JSON payloads of `batch` as messages of up to `size` readings of one asset each.

        Readings keep their order within each asset; a sensor seen twice at one time starts a new frame
        rather than overwrite the first value.
        """
        topics: list[str] = []
        payloads: list[bytes] = []
        codes, _ = factorize(batch.asset_id)
        order = np.argsort(codes, kind="stable")
        bounds = np.flatnonzero(np.diff(codes[order])) + 1
        sensors, ts, values = batch.sensor.tolist(), batch.ts.tolist(), batch.value.tolist()
        level = topic_level("frame")
        for rows in np.split(order, bounds):
            asset = str(batch.asset_id[rows[0]])
            before, after = self._prefix(asset)
            topic = before + level + after
            for start in range(0, len(rows), size):
                frames: list[dict[str, Any]] = []
                for i in rows[start:start + size].tolist():
                    f = frames[-1] if frames else None
                    if f is None or f["ts"] != ts[i] or sensors[i] in f["values"]:
                        f = {"asset_id": asset, "ts": ts[i], "values": {}}
                        frames.append(f)
                    f["values"][sensors[i]] = values[i]
                topics.append(topic)
                payloads.append(orjson.dumps(frames[0] if len(frames) == 1 else frames))
        return topics, payloads, int(np.count_nonzero(~np.isfinite(batch.value)))

    def _prefix(self, asset_id: str) -> tuple[str, str]:
        p = self._prefixes.get(asset_id)
        if p is None:
            p = self._prefixes[asset_id] = topic_prefix(self.registry, asset_id, self.settings.topic_template)
        return p


def publish_readings(
    settings: MqttSettings,
    batches: Readings | Iterable[Readings],
    *,
    registry: Registry | None = None,
    rate: float = 0.0,
    qos: int = 1,
    max_inflight: int = 1_000,
    frame: int = 1,
) -> PublishStats:
    """Connect, publish every reading (`frame` readings of one asset per message), wait for the acks."""
    with MqttPublisher(settings, registry=registry, qos=qos, max_inflight=max_inflight) as pub:
        return pub.publish(batches, rate=rate, frame=frame)
