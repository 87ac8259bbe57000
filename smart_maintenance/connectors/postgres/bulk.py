"""Readings, features, anomalies, alarms and dead letters to PostgreSQL in the background, flushed at every
snapshot when recovery is on.

Storing readings is the largest single cost of the flow, and most of it is the
server maintaining the primary key. A writer thread per partition lets the
server work on one batch (on the other core) while the flow computes the
next. It stays at-least-once: Bytewax calls `snapshot()` at the end of every
epoch before it commits the epoch, and with recovery on (`smart_maintenance.recovery`)
`snapshot()` waits until everything queued is in the database, so a crash can only
lose writes that recovery replays; without recovery nothing resumes from a snapshot
and the flow does not wait there. The writer takes everything queued at once and
stores it in one COPY and transaction: live, the flow hands over many small
batches, and one transaction each would cost the server more than their rows.
The queue is bounded: a slow or stopped database slows the flow down instead
of filling memory. An error on the writer thread is re-raised on the flow's
path at the next write or snapshot.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable
from functools import partial
from typing import Any
from zlib import adler32

import numpy as np
import pandas as pd
from bytewax.outputs import FixedPartitionedSink, StatefulSinkPartition

from smart_maintenance import latency, metrics
from smart_maintenance.config.settings import PostgresSettings, Settings
from smart_maintenance.connectors.postgres.connection import migrate_once, prune_once
from smart_maintenance.connectors.postgres.server import PostgresSinkError, postgres_section, resolve_dsn
from smart_maintenance.connectors.postgres.sink import PostgresWriter, epoch_ms
from smart_maintenance.connectors.postgres.timescale import TimescalePlan, adopt_once
from smart_maintenance.operators.records import QUALITY_UNKNOWN, AssetReadings, FeatureBatch, Readings
from smart_maintenance.recovery import recovery_on

BULK_STREAMS = ("readings", "features")
RECORD_STREAMS = ("anomalies", "alarms", "dead_letters")  # upserted as before, also off the flow's thread


def _readings(items: list[AssetReadings]) -> Readings:
    """One `Readings` of many assets' items: each column joined once, the asset ids repeated in one step.

    Live, each item holds a few readings (an asset's share of a 10 ms poll), so a `Readings` per item (as
    `Readings.concat` takes them) cost more than the rows: about 7 µs per item.

    >>> a = AssetReadings("p", np.array(["t", "u"], dtype=object), np.array([1, 2]), np.array([1.0, 2.0]))
    >>> b = AssetReadings("q", np.array(["t"], dtype=object), np.array([3]), np.array([3.0]), np.array([192], np.int16))
    >>> r = _readings([a, b]); r.asset_id.tolist(), r.sensor.tolist(), r.ts.tolist(), r.quality.tolist(), r.unit
    (['p', 'p', 'q'], ['t', 'u', 't'], [1, 2, 3], [-1, -1, 192], None)
    """
    items = [a for a in items if len(a)]
    if not items:
        return Readings.empty()
    quality = unit = None
    if any(a.quality is not None for a in items):
        quality = np.concatenate([a.quality if a.quality is not None else np.full(len(a), QUALITY_UNKNOWN, np.int16)
                                  for a in items])
    if any(a.unit is not None for a in items):
        unit = np.concatenate([a.unit if a.unit is not None else np.full(len(a), None, dtype=object) for a in items])
    asset_ids = np.empty(len(items), dtype=object)
    asset_ids[:] = [a.asset_id for a in items]
    return Readings(np.repeat(asset_ids, [len(a) for a in items]), np.concatenate([a.sensor for a in items]),
                    np.concatenate([a.ts for a in items]), np.concatenate([a.value for a in items]), quality, unit)


def part_keys(parts: int) -> tuple[str, ...]:
    """For each partition i, a key that `PostgresBulkSink.part_fn` sends to partition i (Bytewax takes its value
    modulo the number of partitions).

    >>> [adler32(k.encode()) % 3 for k in part_keys(3)]
    [0, 1, 2]
    """
    keys: dict[int, str] = {}
    j = 0
    while len(keys) < parts:
        keys.setdefault(adler32(f"part-{j}".encode()) % parts, f"part-{j}")
        j += 1
    return tuple(keys[i] for i in range(parts))


def by_part(readings: Readings, keys: tuple[str, ...]) -> list[tuple[str, Readings]]:
    """A whole batch of readings as one item per partition, keyed by `keys[i]`: an asset's rows go to the
    partition its own id would pick (`adler32(asset_id) % len(keys)`), in their order.

    Keyed by asset, a batch is one item per asset; live, an asset's share of a 10 ms poll is a few readings,
    and routing, handing over (between processes: pickling) and joining each item cost more than its rows.

    >>> r = Readings.of([("a", "t", 1, 1.0), ("b", "t", 2, 2.0), ("a", "t", 3, 3.0)])
    >>> [(k, x.asset_id.tolist(), x.ts.tolist()) for k, x in by_part(r, ("only",))]
    [('only', ['a', 'b', 'a'], [1, 2, 3])]
    """
    if not len(readings):
        return []
    if len(keys) == 1:
        return [(keys[0], readings)]
    codes, assets = pd.factorize(readings.asset_id)
    part = np.array([adler32(str(a).encode()) % len(keys) for a in assets], dtype=np.int64)[codes]
    out = []
    for i, key in enumerate(keys):
        rows = np.flatnonzero(part == i)
        if len(rows):
            out.append((key, readings if len(rows) == len(readings) else readings.take(rows)))
    return out


class PostgresBulkSink(FixedPartitionedSink[Any, None]):
    """Keyed `(asset_id, AssetReadings)`, `(part key, Readings)` (`batches()`) or `(asset_id, FeatureBatch)` items,
    written by COPY off the flow's thread;
    or `(key, Anomaly | Alarm | Invalid)` items, upserted off the flow's thread as `PostgresSink` does on it.

    `parts` partitions (each with its own connection and thread) are spread
    over the workers by Bytewax; an asset always goes to the same partition.
    """

    def __init__(self, settings: Settings | PostgresSettings, stream: str, *, parts: int = 2,
                 queue_batches: int = 16, flush_on_snapshot: bool | None = None) -> None:
        if stream not in BULK_STREAMS + RECORD_STREAMS:
            raise ValueError(f"stream must be one of {BULK_STREAMS + RECORD_STREAMS}, got {stream!r}")
        if parts < 1 or queue_batches < 1:
            raise ValueError("parts and queue_batches must be at least 1")
        self._pg = postgres_section(settings)
        self._stream = stream
        self._parts = parts
        self._queue_batches = queue_batches
        self._flush_on_snapshot = flush_on_snapshot  # None: when recovery is on (known once the flow runs)

    def list_parts(self) -> list[str]:
        return [f"{self._stream}-{i}" for i in range(self._parts)]

    def batches(self) -> Callable[[Readings], list[tuple[str, Readings]]] | None:
        """For readings: what splits a whole batch into one keyed item per partition (`by_part`), for a flow
        to send instead of one item per asset; None for the other streams (their items are per asset)."""
        return partial(by_part, keys=part_keys(self._parts)) if self._stream == "readings" else None

    def part_fn(self, item_key: str) -> int:
        return adler32(item_key.encode())

    def build_part(self, step_id: str, for_part: str, resume_state: None) -> _BulkPartition:
        pg = self._pg
        dsn = resolve_dsn(pg, ride_out=True)
        migrate_once(dsn, pg.schema_name)
        if self._stream == "readings":
            adopt_once(dsn, pg.schema_name, TimescalePlan(pg.retention_days, pg.rollup_hourly_days,
                                                          pg.rollup_daily_days))  # no-op on plain PostgreSQL
            if (pg.retention_days, pg.rollup_hourly_days, pg.rollup_daily_days) != (None, None, None):
                prune_once(dsn, pg.schema_name, pg.retention_days, pg.rollup_hourly_days, pg.rollup_daily_days)
        writer = PostgresWriter(dsn, pg.schema_name, pg.copy_rows, outage_s=pg.outage_s).open()
        flush = recovery_on() if self._flush_on_snapshot is None else self._flush_on_snapshot
        return _BulkPartition(writer, self._stream, self._queue_batches, flush_on_snapshot=flush)


class _BulkPartition(StatefulSinkPartition[Any, None]):
    def __init__(self, writer: PostgresWriter, stream: str, queue_batches: int, *,
                 flush_on_snapshot: bool = True) -> None:
        self._writer = writer
        self._stream = stream
        self._flush_on_snapshot = flush_on_snapshot
        self._queue: queue.Queue[list[Any] | None] = queue.Queue(maxsize=queue_batches)
        self._error: BaseException | None = None
        self._epochs = latency.EpochClock()
        self._thread = threading.Thread(target=self._loop, name=f"pg-{stream}", daemon=True)
        self._thread.start()

    def _take(self) -> tuple[list[Any], int, bool]:
        """Everything queued (waiting for the first): its items, how many batches, and whether to stop after."""
        items: list[Any] = []
        taken, stop = 0, False
        batch = self._queue.get()
        while True:
            taken += 1
            if batch is None:
                stop = True
                break
            items.extend(batch)
            try:
                batch = self._queue.get_nowait()
            except queue.Empty:
                break
        return items, taken, stop

    def _write(self, items: list[Any]) -> None:
        w = self._writer
        if self._stream == "readings":  # whole batches (`by_part`) or one asset's readings
            w.write_readings(Readings.concat([x for x in items if isinstance(x, Readings)]
                                             + [_readings([x for x in items if isinstance(x, AssetReadings)])]))
        elif self._stream == "features":
            w.write_features(items)
        elif self._stream == "anomalies":
            w.upsert_anomalies(items)
            latency.stored((a.asset_id, epoch_ms(a.window_end)) for a in items)  # committed: since its close
        elif self._stream == "alarms":
            w.upsert_alarms(items)
        else:
            w.upsert_dead_letters(items)

    def _loop(self) -> None:
        while True:
            items, taken, stop = self._take()
            try:
                if items and self._error is None:
                    self._write(items)
            except BaseException as e:  # kept for the flow's thread to raise
                self._error = e
            finally:
                for _ in range(taken):
                    self._queue.task_done()
            if stop:
                return

    def _raise_if_failed(self) -> None:
        if self._error is not None:
            e, self._error = self._error, None
            raise PostgresSinkError(f"writing {self._stream} failed: {e}") from e

    def write_batch(self, values: list[AssetReadings | FeatureBatch]) -> None:
        self._raise_if_failed()
        if values:
            self._queue.put(list(values))  # blocks while the database is behind: backpressure
            metrics.SINK_BACKLOG.labels(f"postgres:{self._stream}").set(self._queue.qsize())

    def snapshot(self) -> None:
        started = self._epochs.snapshot_started()
        if self._flush_on_snapshot:
            self._queue.join()  # everything before this epoch's end is stored before it commits
        self._epochs.snapshot_done(started)
        self._raise_if_failed()
        return None

    def close(self) -> None:
        self._queue.put(None)
        self._thread.join()
        self._writer.close()
        self._raise_if_failed()
