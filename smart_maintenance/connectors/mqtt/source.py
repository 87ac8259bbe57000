"""MQTT as a live Bytewax source: `RawMessages` batches from subscribed topics.

    source = MqttSource(settings.mqtt)            # build_flow(settings, source=source)

Each worker runs one paho-mqtt client (protocol 3.1.1, `clean_session=False`)
that subscribes to `settings.topics` at `settings.qos`. With several workers
the client ids are `<client_id>-<worker_index>` and the subscriptions are
shared (`$share/<client_id>/<topic>`), so the broker splits the messages
between the workers instead of sending each to all of them.

The network thread only appends `(payload, topic, receive time)` to a bounded
buffer and acknowledges the message once it is there; when the buffer is full
it waits, which stops reading the socket and lets the broker queue (TCP
backpressure, no loss; a flow stalled for longer than 1.5 x `keepalive_s` is
disconnected by the broker, reconnects and receives the unacknowledged rest
again). `next_batch` hands the buffer to the flow as one `RawMessages` of at
most `batch_max` messages, once it holds `batch_max` messages or its oldest
message has waited `batch_wait_ms`; the parse step turns it into readings (a
bare number is stamped with its receive time, `RawMessages.receive_ms`).

What MQTT can and cannot promise, honestly:
- QoS 1 is at-least-once *between the broker and this client*: a message is
  acknowledged when it is in the buffer, so a crash of this process loses what
  was buffered or in flight inside the dataflow (MQTT cannot replay; this is a
  `DynamicSource` without recovery state).
- While the flow is down or reconnecting, the broker keeps QoS 1 messages for
  the persistent session (same client id), but only within its own limits:
  Mosquitto's defaults (`max_queued_messages 1000`) silently drop the rest, so
  a production broker needs `max_queued_messages 0` (or a large value) and
  `persistence true` to survive its own restart. Nothing published before the
  session first existed is ever delivered.
- Messages may arrive twice (redelivery after a reconnect); the flow's ids are
  deterministic, so downstream sinks stay idempotent.

Errors: a refused CONNACK (bad credentials, not authorised), a broker that
cannot be reached within `connect_timeout_s` at start, or an exception on the
network thread become `MqttSourceError` on the flow's path (in `build` or
`next_batch`). Lost connections after the start are retried forever with
exponential backoff up to `reconnect_max_s`. The password is never logged.
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

from smart_maintenance.config.settings import MqttSettings
from smart_maintenance.connectors.mqtt.client import (
    MqttSourceError,
    connect,
    endpoint,
    make_client,
    refusal,
)
from smart_maintenance.connectors.partition import ThreadErrorMixin, check_stop_limits
from smart_maintenance.operators.records import RawMessages

log = logging.getLogger(__name__)

IDLE_POLL_MS = 50
"""How often an idle partition looks at its buffer (the flow must not busy-spin)."""


Clock = Callable[[], int]


def _now_ms() -> int:
    return time.time_ns() // 1_000_000












class MqttSource(DynamicSource[RawMessages]):
    """Live readings from MQTT topics, one client per worker.

    `stop_after` (messages per worker; later ones are left unacknowledged
    with the broker) and `idle_stop_s` (seconds without a message) make the
    stream end, for tests, benchmarks and bounded captures; by default it runs
    until the flow is stopped. `clock` gives receive times
    in epoch ms (injectable for tests).
    """

    def __init__(
        self,
        settings: MqttSettings,
        *,
        batch_max: int = 10_000,
        batch_wait_ms: int = 200,
        buffer_max: int = 100_000,
        stop_after: int | None = None,
        idle_stop_s: float | None = None,
        connect_timeout_s: float = 10.0,
        clock: Clock = _now_ms,
    ) -> None:
        if batch_max < 1:
            raise ValueError(f"batch_max must be at least 1, got {batch_max}")
        if batch_wait_ms < 0:
            raise ValueError(f"batch_wait_ms must not be negative, got {batch_wait_ms}")
        if buffer_max < batch_max:
            raise ValueError(f"buffer_max ({buffer_max}) must be at least batch_max ({batch_max})")
        check_stop_limits(stop_after, idle_stop_s)
        if connect_timeout_s <= 0:
            raise ValueError(f"connect_timeout_s must be positive, got {connect_timeout_s}")
        if not settings.topics:
            raise ValueError("MqttSettings.topics is empty: nothing to subscribe to")
        if settings.password is not None and settings.username is None:
            raise ValueError("MqttSettings has a password but no username")
        self.settings = settings
        self.batch_max = batch_max
        self.batch_wait_ms = batch_wait_ms
        self.buffer_max = buffer_max
        self.stop_after = stop_after
        self.idle_stop_s = idle_stop_s
        self.connect_timeout_s = connect_timeout_s
        self.clock = clock

    @property
    def live(self) -> bool:
        """Always: MQTT cannot replay, windows close on idle wall time."""
        return True

    def subscriptions(self, worker_count: int) -> list[tuple[str, int]]:
        """`(topic filter, qos)` pairs; shared between workers when there are several."""
        q = self.settings.qos
        if worker_count <= 1:
            return [(t, q) for t in self.settings.topics]
        group = "".join(c if c not in "/+#$" else "_" for c in self.settings.client_id)
        return [(t if t.startswith("$share/") else f"$share/{group}/{t}", q) for t in self.settings.topics]

    def build(self, step_id: str, worker_index: int, worker_count: int) -> _MqttPartition:
        cid = self.settings.client_id if worker_count <= 1 else f"{self.settings.client_id}-{worker_index}"
        part = _MqttPartition(self, cid, self.subscriptions(worker_count))
        part.start()
        return part


class _MqttPartition(ThreadErrorMixin, StatelessSourcePartition[RawMessages]):
    """One client, its bounded buffer, and the error its network thread may leave."""

    def __init__(self, source: MqttSource, client_id: str, subscriptions: list[tuple[str, int]]) -> None:
        self._src = source
        self._settings = source.settings
        self._subs = subscriptions
        self._client = make_client(source.settings, client_id, clean_session=False, manual_ack=True)
        self._client.on_connect = self._on_connect
        self._client.on_subscribe = self._on_subscribe
        self._client.on_disconnect = self._on_disconnect
        self._client.on_message = self._on_message
        self._cond = threading.Condition()
        self._payloads: list[bytes] = []
        self._topics: list[str] = []
        self._received: list[int] = []
        self._first_mono = 0.0  # monotonic time the oldest buffered message arrived
        self._last_mono = time.monotonic()  # of the last message, for idle_stop_s
        self._ready = threading.Event()  # first CONNACK + SUBACK, or a fatal refusal
        self._error: MqttSourceError | None = None
        self._closing = False
        self._delivered = 0  # handed to the flow
        self._accepted = 0  # buffered and acknowledged (network thread)
        self._origins: dict[str, str] = {}

    # -- network thread ------------------------------------------------------------------------
    def _fail(self, err: MqttSourceError) -> None:
        with self._cond:
            if self._error is None:
                self._error = err
            self._cond.notify_all()
        self._ready.set()

    def _on_connect(self, client: mqtt.Client, _u: Any, flags: Any, reason: Any, _p: Any) -> None:
        try:
            if reason.is_failure:
                err = refusal(self._settings, reason)
                if err is None:
                    log.warning(
                        "MQTT broker %s refused the connection (%s); retrying", endpoint(self._settings), reason
                    )
                    return
                self._fail(err)
                client.disconnect()
                return
            log.info(
                "connected to MQTT broker %s (session present: %s)", endpoint(self._settings), flags.session_present
            )
            client.subscribe(self._subs)  # every time: a broker without persistence forgets subscriptions
        except Exception as e:  # noqa: BLE001 - handed to the flow's thread
            self._fail(MqttSourceError(f"MQTT on_connect failed for {endpoint(self._settings)}: {e}"))

    def _on_subscribe(self, _c: mqtt.Client, _u: Any, _mid: int, reasons: list[Any], _p: Any) -> None:
        denied = [t for (t, _), r in zip(self._subs, reasons) if r.is_failure]
        if denied:
            self._fail(MqttSourceError(f"MQTT broker {endpoint(self._settings)} refused subscriptions {denied}"))
        self._ready.set()

    def _on_disconnect(self, _c: mqtt.Client, _u: Any, _f: Any, reason: Any, _p: Any) -> None:
        if not self._closing and self._error is None:
            log.warning("lost MQTT broker %s (%s); reconnecting", endpoint(self._settings), reason)

    def _on_message(self, client: mqtt.Client, _u: Any, msg: mqtt.MQTTMessage) -> None:
        try:
            if self._error is not None or self._accepted == self._src.stop_after:
                return  # unacknowledged: the broker redelivers it to the next session
            received = self._src.clock()
            self._accepted += 1
            with self._cond:
                while len(self._payloads) >= self._src.buffer_max and not self._closing:
                    self._cond.wait(0.1)  # the flow is behind: stop reading, the broker queues
                if self._closing:
                    return  # unacknowledged, for the next session
                if not self._payloads:
                    self._first_mono = time.monotonic()
                self._payloads.append(msg.payload)  # type: ignore[arg-type]  # may be a bytearray: RawMessages should say so
                self._topics.append(msg.topic)
                self._received.append(received)
            client.ack(msg.mid, msg.qos)
        except Exception as e:  # noqa: BLE001 - a callback must not kill paho's thread
            err = MqttSourceError(f"MQTT message callback failed on {msg.topic!r}: {e!r}")
            err.__cause__ = e  # re-raised on the flow's thread as `raise err from e`
            self._fail(err)
            client.disconnect()  # stop receiving: what is not acknowledged is redelivered later

    # -- flow thread ---------------------------------------------------------------------------
    def start(self) -> None:
        """Connect, subscribe and wait for the broker's answer; fail the build when refused."""
        connect(self._client, self._settings, self._src.connect_timeout_s)
        self._client.loop_start()
        if not self._ready.wait(self._src.connect_timeout_s):
            self.close()
            raise MqttSourceError(
                f"MQTT broker {endpoint(self._settings)} did not accept the session"
                f" within {self._src.connect_timeout_s} s"
            )
        self._raise_error()

    def next_batch(self) -> list[RawMessages]:
        self._raise_error()
        src = self._src
        limit = src.batch_max if src.stop_after is None else min(src.batch_max, src.stop_after - self._delivered)
        taken = self._take(limit) if limit > 0 else None
        if taken is None:
            self.close()
            raise StopIteration
        if not taken[0]:
            return []
        self._delivered += len(taken[0])
        return [self._batch(*taken)]

    def _take(self, limit: int) -> tuple[list[bytes], list[str], list[int]] | None:
        """Up to `limit` buffered messages when a batch is due, ([], [], []) when not, None at idle_stop_s."""
        src = self._src
        now = time.monotonic()
        with self._cond:
            n = len(self._payloads)
            if n == 0:
                idle = src.idle_stop_s is not None and now - self._last_mono >= src.idle_stop_s
                return None if idle else ([], [], [])
            if n < limit and (now - self._first_mono) * 1000 < src.batch_wait_ms:
                return [], [], []
            k = min(n, limit)
            taken = self._payloads[:k], self._topics[:k], self._received[:k]
            del self._payloads[:k], self._topics[:k], self._received[:k]
            self._last_mono = now
            self._cond.notify_all()
        return taken

    def _batch(self, payloads: list[bytes], topics: list[str], received: list[int]) -> RawMessages:
        origins = self._origins
        if len(origins) > 100_000:  # topics are few in practice; don't let a topic storm grow it
            origins.clear()
        origin = [origins.get(t) or origins.setdefault(t, "mqtt:" + t) for t in topics]
        return RawMessages(tuple(payloads), tuple(topics), tuple(origin), receive_ms=tuple(received),
                           topic_template=self._settings.topic_template)

    def next_awake(self) -> datetime | None:
        now = datetime.now(timezone.utc)
        with self._cond:
            n = len(self._payloads)
            waited_ms = (time.monotonic() - self._first_mono) * 1000
        if self._error is not None or n >= self._src.batch_max:
            return None
        if n == 0:
            return now + timedelta(milliseconds=min(IDLE_POLL_MS, max(self._src.batch_wait_ms, 5)))
        return now + timedelta(milliseconds=max(0.0, self._src.batch_wait_ms - waited_ms))

    def close(self) -> None:
        """Disconnect cleanly; the persistent session stays on the broker for the next run."""
        if self._closing:
            return
        with self._cond:
            self._closing = True
            self._cond.notify_all()
        self._client.disconnect()
        self._client.loop_stop()
