"""OPC UA as a live Bytewax source: `Parsed` batches of subscribed variables' value changes.

    source = OpcUaSource(settings.opcua)           # build_flow(settings, source=source)

One asyncua client on worker 0 (several would read every variable once each;
the other workers' partitions end at once) subscribes to the `[opcua]` node
ids and browse-path matches, each mapped to an asset and a sensor.

Each value change keeps its source timestamp (else the server's, else the
receive time). A Good status is a reading (quality 192, stored with it; an
accepted Uncertain one has quality 64); a Bad status (and Uncertain unless
`accept_uncertain`) is a dead letter `bad_status` naming the status code, as is
a value that is not a number (`not_numeric`): never scored as a reading.

The client is async: its event loop runs in a thread owned by the partition
and hands values to `next_batch` through a bounded queue (when it is full the
loop waits, and the server's per-variable queue, `queue_size`, absorbs what
it can: OPC UA cannot push back further). An error on that thread is stored
and re-raised on the flow's path as `OpcUaSourceError`. A lost connection is
retried with backoff (`client.py`). What changes while the client is
disconnected, beyond what the server queues, and what is queued in this
process at a crash is lost: OPC UA subscriptions do not replay.
"""

from __future__ import annotations

import asyncio
import json
import logging
import math
import queue
import threading
import time
from collections.abc import Callable
from datetime import datetime, timedelta, timezone
from typing import Any

from asyncua import ua
from bytewax.inputs import DynamicSource, StatelessSourcePartition

from smart_maintenance.config.settings import OpcUaSettings
from smart_maintenance.connectors.opcua.client import OpcUaSourceError, Subscribed, connect, resolve
from smart_maintenance.connectors.partition import IdlePartition, ThreadErrorMixin, check_stop_limits
from smart_maintenance.operators.records import (
    QUALITY_GOOD,
    QUALITY_UNCERTAIN,
    Invalid,
    Parsed,
    Readings,
    dt_to_ms,
)

log = logging.getLogger(__name__)

IDLE_POLL_MS = 50
Clock = Callable[[], int]
Item = tuple[str, str, int, float, int] | Invalid


def _now_ms() -> int:
    return time.time_ns() // 1_000_000


def to_item(asset_id: str, sensor: str, node_id: str, dv: ua.DataValue, receive_ms: int,
            accept_uncertain: bool) -> Item:
    """One value change as a reading `(asset, sensor, ts, value, quality)`, or a dead letter saying why not.

    >>> dv = ua.DataValue(ua.Variant(2.5, ua.VariantType.Double), ua.StatusCode(ua.StatusCodes.Good),
    ...                   SourceTimestamp=datetime(2026, 1, 5, tzinfo=timezone.utc))
    >>> to_item("pump-01", "temp", "ns=2;i=5", dv, 0, False)
    ('pump-01', 'temp', 1767571200000, 2.5, 192)
    >>> bad = ua.DataValue(ua.Variant(2.5), ua.StatusCode(ua.StatusCodes.BadSensorFailure))
    >>> to_item("pump-01", "temp", "ns=2;i=5", bad, 0, False).reason
    'bad_status'
    """
    stamp = dv.SourceTimestamp or dv.ServerTimestamp
    ts = receive_ms if stamp is None else dt_to_ms(stamp if stamp.tzinfo else stamp.replace(tzinfo=timezone.utc))
    value = dv.Value.Value if dv.Value is not None else None
    status = dv.StatusCode
    origin = f"opcua:{node_id}"
    if status is not None and not (status.is_good() or (accept_uncertain and status.is_uncertain())):
        raw = json.dumps({"asset_id": asset_id, "sensor": sensor, "ts": ts, "value": _jsonable(value),
                          "status": status.name})
        return Invalid("bad_status", f"status {status.name}: {status.doc}", raw, origin)
    if isinstance(value, bool):
        value = float(value)
    if not isinstance(value, int | float) or not math.isfinite(value):
        raw = json.dumps({"asset_id": asset_id, "sensor": sensor, "ts": ts, "value": _jsonable(value)})
        return Invalid("not_numeric", f"value of type {type(value).__name__} is not a finite number", raw, origin)
    quality = QUALITY_UNCERTAIN if status is not None and status.is_uncertain() else QUALITY_GOOD
    return asset_id, sensor, ts, float(value), quality


def _jsonable(value: Any) -> Any:
    return value if isinstance(value, int | float | str | bool) or value is None else repr(value)


class OpcUaSource(DynamicSource[Parsed]):
    """Live readings from OPC UA variables; `stop_after` (values) and `idle_stop_s` end it (tests)."""

    def __init__(self, settings: OpcUaSettings, *, stop_after: int | None = None, idle_stop_s: float | None = None,
                 batch_wait_ms: int = 100, clock: Clock = _now_ms) -> None:
        if not settings.nodes and not settings.browse:
            raise ValueError("OpcUaSettings has neither nodes nor browse patterns: nothing to subscribe to")
        if settings.buffer_max < settings.batch_max:
            raise ValueError(f"buffer_max ({settings.buffer_max}) must be at least batch_max ({settings.batch_max})")
        check_stop_limits(stop_after, idle_stop_s, unit="value")
        self.settings = settings
        self.stop_after = stop_after
        self.idle_stop_s = idle_stop_s
        self.batch_wait_ms = batch_wait_ms
        self.clock = clock

    def build(self, step_id: str, worker_index: int, worker_count: int) -> StatelessSourcePartition[Parsed]:
        if worker_index != 0:
            return IdlePartition()
        part = _OpcUaPartition(self)
        part.start()
        return part


class _OpcUaPartition(ThreadErrorMixin, StatelessSourcePartition[Parsed]):
    """The client thread and its event loop, the bounded queue, and the thread's error."""

    def __init__(self, source: OpcUaSource) -> None:
        self._src = source
        self._settings = source.settings
        self._queue: queue.Queue[Item] = queue.Queue(maxsize=source.settings.buffer_max)
        self._ready = threading.Event()
        self._stop = threading.Event()
        self._error: OpcUaSourceError | None = None
        self._thread = threading.Thread(target=self._run, name="opcua-client", daemon=True)
        self._by_node: dict[str, Subscribed] = {}
        self._accepted = 0
        self._delivered = 0
        self._first_mono: float | None = None
        self._last_mono = time.monotonic()

    # -- client thread -------------------------------------------------------------------------
    def _run(self) -> None:
        try:
            asyncio.run(self._main())
        except BaseException as e:  # noqa: BLE001 - stored, re-raised on the flow's thread
            err = e if isinstance(e, OpcUaSourceError) else OpcUaSourceError(
                f"OPC UA client for {self._settings.endpoint} failed: {type(e).__name__}: {e}")
            if err is not e:
                err.__cause__ = e
            self._error = err
            self._ready.set()

    async def _main(self) -> None:
        s = self._settings
        client = await connect(s)
        try:
            subscribed = await resolve(client, s)
            self._by_node = {x.node.nodeid.to_string(): x for x in subscribed}
            sub = await client.create_subscription(s.publishing_interval_ms, self)
            results = await sub.subscribe_data_change([x.node for x in subscribed], queuesize=s.queue_size,
                                                      sampling_interval=s.sampling_interval_ms)  # type: ignore[call-overload]
            failed = [(x.node.nodeid.to_string(), r) for x, r in zip(subscribed, results)
                      if isinstance(r, ua.StatusCode)]
            if failed:
                raise OpcUaSourceError(f"OPC UA server {s.endpoint} refused to monitor {failed}")
            log.info("subscribed to %d OPC UA variables at %s", len(subscribed), s.endpoint)
            self._ready.set()
            while not self._stop.is_set():
                await asyncio.sleep(0.05)
        finally:
            try:
                await asyncio.wait_for(client.disconnect(), timeout=s.timeout_s)
            except Exception as e:  # noqa: BLE001 - closing: the server may be gone already
                log.debug("OPC UA disconnect: %s", e)

    def datachange_notification(self, node: Any, _val: Any, data: Any) -> None:
        """asyncua's callback, on the client thread: one value change into the queue (waits while it is full)."""
        if self._src.stop_after is not None and self._accepted >= self._src.stop_after:
            return
        key = node.nodeid.to_string()
        x = self._by_node.get(key)
        if x is None:
            return
        item = to_item(x.asset_id, x.sensor, key, data.monitored_item.Value, self._src.clock(),
                       self._settings.accept_uncertain)
        self._accepted += 1
        while not self._stop.is_set():
            try:
                self._queue.put(item, timeout=0.1)
                return
            except queue.Full:
                continue

    # -- flow thread ---------------------------------------------------------------------------
    def start(self) -> None:
        self._thread.start()
        wait = self._settings.connect_timeout_s + 2 * self._settings.timeout_s
        if not self._ready.wait(wait):
            self.close()
            raise OpcUaSourceError(f"OPC UA server {self._settings.endpoint} did not accept the subscription "
                                   f"within {wait} s")
        self._raise_error()

    def next_batch(self) -> list[Parsed]:
        self._raise_error()
        now = time.monotonic()
        n = self._queue.qsize()
        if n == 0:
            done = self._src.stop_after is not None and self._delivered >= self._src.stop_after
            idle = self._src.idle_stop_s is not None and now - self._last_mono >= self._src.idle_stop_s
            if done or idle:
                self.close()
                raise StopIteration
            return []
        if self._first_mono is None:
            self._first_mono = now
        if n < self._settings.batch_max and (now - self._first_mono) * 1000 < self._src.batch_wait_ms:
            return []
        rows: list[tuple[str, str, int, float, int]] = []
        rejects: list[Invalid] = []
        for _ in range(min(n, self._settings.batch_max)):
            item = self._queue.get_nowait()
            (rejects.append if isinstance(item, Invalid) else rows.append)(item)  # type: ignore[arg-type]
        self._first_mono = None
        self._last_mono = now
        self._delivered += len(rows) + len(rejects)
        readings = Readings.of([r[:4] for r in rows], [r[4] for r in rows])
        return [Parsed(readings, tuple(rejects))]

    def next_awake(self) -> datetime | None:
        if self._error is not None:
            return None
        return datetime.now(timezone.utc) + timedelta(milliseconds=IDLE_POLL_MS)

    def close(self) -> None:
        self._stop.set()
        if self._thread.is_alive() and threading.current_thread() is not self._thread:
            self._thread.join(self._settings.timeout_s + 1)
