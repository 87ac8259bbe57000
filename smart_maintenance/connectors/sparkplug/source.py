"""Sparkplug B as a live Bytewax source: `Parsed` batches from an MQTT broker's `spBv1.0/...` topics.

    source = SparkplugSource(settings.mqtt, settings.sparkplug)   # build_flow(settings, source=source)

The broker connection (host, port, credentials, TLS, backoff) is `[mqtt]`'s
and the paho client is `connectors/mqtt/client.py`'s; what to read and how
is `[sparkplug]`. One client on worker 0 subscribes to
`spBv1.0/<group_id>/+/<edge_node_id>/#`: an edge node's sequence numbers only
make sense if one host sees all of its messages, so the other workers' partitions end
at once (the flow still spreads the work by asset after the source). The
rules (mapping, quality, aliases, deaths, rebirths) are `host.py`'s.

Guarantees: the network thread only buffers `(topic, payload, receive time)`
(bounded: a full buffer stops reading the socket); decoding and the state of
each edge node live on the flow's thread. The session is clean: what edge
nodes publish while this host is down is lost (MQTT cannot replay), and on
start each node's first message, not being a birth, is a `not_born` dead
letter plus a rebirth request, after which it flows again. A crash loses what
was buffered. Errors: a refused or unreachable broker at start, or an
exception on the network thread, become `MqttSourceError` on the flow's path.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from datetime import datetime, timedelta, timezone
from typing import Any

import paho.mqtt.client as mqtt
from bytewax.inputs import DynamicSource, StatelessSourcePartition

from smart_maintenance.config.settings import MqttSettings, SparkplugSettings
from smart_maintenance.connectors.mqtt.client import MqttSourceError, connect, endpoint, make_client, refusal
from smart_maintenance.connectors.partition import IdlePartition, ThreadErrorMixin, check_stop_limits
from smart_maintenance.connectors.sparkplug.codec import BOOLEAN, Metric, Payload, encode_payload
from smart_maintenance.connectors.sparkplug.host import NAMESPACE, SparkplugHost, rebirth_topic
from smart_maintenance.operators.records import Invalid, Parsed, Readings

log = logging.getLogger(__name__)

IDLE_POLL_MS = 50

Clock = Callable[[], int]


def _now_ms() -> int:
    return time.time_ns() // 1_000_000


def rebirth_request(now_ms: int) -> bytes:
    """The NCMD payload that asks an edge node to publish its births again."""
    metric = Metric(name="Node Control/Rebirth", timestamp=now_ms, datatype=BOOLEAN, value=True)
    return encode_payload(Payload(timestamp=now_ms, metrics=(metric,)))


class SparkplugSource(DynamicSource[Parsed]):
    """Live readings from Sparkplug B edge nodes; `stop_after` (messages) and `idle_stop_s` end it (tests)."""

    def __init__(self, mqtt_settings: MqttSettings, settings: SparkplugSettings, *, stop_after: int | None = None,
                 idle_stop_s: float | None = None, connect_timeout_s: float = 10.0, clock: Clock = _now_ms) -> None:
        if settings.buffer_max < settings.batch_max:
            raise ValueError(f"buffer_max ({settings.buffer_max}) must be at least batch_max ({settings.batch_max})")
        check_stop_limits(stop_after, idle_stop_s)
        if mqtt_settings.password is not None and mqtt_settings.username is None:
            raise ValueError("MqttSettings has a password but no username")
        self.mqtt = mqtt_settings
        self.settings = settings
        self.stop_after = stop_after
        self.idle_stop_s = idle_stop_s
        self.connect_timeout_s = connect_timeout_s
        self.clock = clock

    @property
    def topic(self) -> str:
        s = self.settings
        return f"{NAMESPACE}/{s.group_id}/+/{s.edge_node_id}/#"

    def build(self, step_id: str, worker_index: int, worker_count: int) -> StatelessSourcePartition[Parsed]:
        if worker_index != 0:
            return IdlePartition()
        part = _SparkplugPartition(self)
        part.start()
        return part


class _SparkplugPartition(ThreadErrorMixin, StatelessSourcePartition[Parsed]):
    """One paho client, its bounded buffer of raw messages, the host state, and its network thread's error."""

    def __init__(self, source: SparkplugSource) -> None:
        s = source.settings
        self._src = source
        self._mqtt = source.mqtt
        self._host = SparkplugHost(accept_uncertain=s.accept_uncertain, rebirth=s.rebirth,
                                   rebirth_min_interval_ms=int(s.rebirth_min_interval_s * 1000))
        self._client = make_client(source.mqtt, s.client_id, clean_session=True)
        self._client.on_connect = self._on_connect
        self._client.on_subscribe = self._on_subscribe
        self._client.on_message = self._on_message
        self._cond = threading.Condition()
        self._buffer: list[tuple[str, bytes, int]] = []
        self._first_mono = 0.0
        self._last_mono = time.monotonic()
        self._ready = threading.Event()
        self._error: MqttSourceError | None = None
        self._closing = False
        self._accepted = 0
        self._delivered = 0

    # -- network thread ------------------------------------------------------------------------
    def _fail(self, err: MqttSourceError) -> None:
        with self._cond:
            if self._error is None:
                self._error = err
            self._cond.notify_all()
        self._ready.set()

    def _on_connect(self, client: mqtt.Client, _u: Any, _f: Any, reason: Any, _p: Any) -> None:
        if reason.is_failure:
            err = refusal(self._mqtt, reason)
            if err is not None:
                self._fail(err)
                client.disconnect()
            return
        client.subscribe(self._src.topic, qos=self._mqtt.qos)

    def _on_subscribe(self, _c: mqtt.Client, _u: Any, _mid: int, reasons: list[Any], _p: Any) -> None:
        if any(r.is_failure for r in reasons):
            self._fail(MqttSourceError(f"MQTT broker {endpoint(self._mqtt)} refused {self._src.topic}"))
        self._ready.set()

    def _on_message(self, client: mqtt.Client, _u: Any, msg: mqtt.MQTTMessage) -> None:
        try:
            if self._error is not None or self._accepted == self._src.stop_after:
                return
            received = self._src.clock()
            self._accepted += 1
            with self._cond:
                while len(self._buffer) >= self._src.settings.buffer_max and not self._closing:
                    self._cond.wait(0.1)  # the flow is behind: stop reading the socket
                if not self._buffer:
                    self._first_mono = time.monotonic()
                self._buffer.append((msg.topic, bytes(msg.payload), received))
        except Exception as e:  # noqa: BLE001 - a callback must not kill paho's thread
            err = MqttSourceError(f"Sparkplug message callback failed on {msg.topic!r}: {e!r}")
            err.__cause__ = e
            self._fail(err)
            client.disconnect()

    # -- flow thread ---------------------------------------------------------------------------
    def start(self) -> None:
        connect(self._client, self._mqtt, self._src.connect_timeout_s)
        self._client.loop_start()
        if not self._ready.wait(self._src.connect_timeout_s):
            self.close()
            raise MqttSourceError(f"MQTT broker {endpoint(self._mqtt)} did not accept the subscription in time")
        self._raise_error()

    def next_batch(self) -> list[Parsed]:
        self._raise_error()
        s = self._src.settings
        now = time.monotonic()
        with self._cond:
            n = len(self._buffer)
            if n == 0:
                done = self._src.stop_after is not None and self._delivered >= self._src.stop_after
                idle = self._src.idle_stop_s is not None and now - self._last_mono >= self._src.idle_stop_s
                if done or idle:
                    self.close()
                    raise StopIteration
                return []
            if n < s.batch_max and (now - self._first_mono) * 1000 < s.batch_wait_ms:
                return []
            taken = self._buffer[: s.batch_max]
            del self._buffer[: s.batch_max]
            self._last_mono = now
            self._cond.notify_all()
        self._delivered += len(taken)
        return [self._parse(taken)]

    def _parse(self, messages: list[tuple[str, bytes, int]]) -> Parsed:
        rows: list[tuple[str, str, int, float]] = []
        qualities: list[int] = []
        rejects: list[Invalid] = []
        for topic, payload, received in messages:
            handled = self._host.handle(topic, payload, received)
            rows.extend(handled.rows)
            qualities.extend(handled.qualities)
            rejects.extend(handled.rejects)
            if handled.rebirth is not None:
                group, node = handled.rebirth
                log.info("asking Sparkplug edge node %s/%s to rebirth", group, node)
                self._client.publish(rebirth_topic(group, node), rebirth_request(self._src.clock()), qos=0)
        return Parsed(Readings.of(rows, qualities), tuple(rejects))

    def next_awake(self) -> datetime | None:
        now = datetime.now(timezone.utc)
        with self._cond:
            n = len(self._buffer)
            waited_ms = (time.monotonic() - self._first_mono) * 1000
        if self._error is not None or n >= self._src.settings.batch_max:
            return None
        wait = self._src.settings.batch_wait_ms
        if n == 0:
            return now + timedelta(milliseconds=min(IDLE_POLL_MS, max(wait, 5)))
        return now + timedelta(milliseconds=max(0.0, wait - waited_ms))

    def close(self) -> None:
        if self._closing:
            return
        with self._cond:
            self._closing = True
            self._cond.notify_all()
        self._client.disconnect()
        self._client.loop_stop()
