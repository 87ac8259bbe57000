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

Two sinks share that writer. `PostgresBulkSink` (a `FixedPartitionedSink`) sends an asset's items to its
partition, wherever Bytewax placed it: with several processes about half of them are pickled to another
process. `PostgresLocalSink` (a `DynamicSink`) writes each worker's items on that worker, with no exchange,
but Bytewax never calls a snapshot on it, so it cannot hold an epoch until its writes are stored: flows use it
only without recovery, and `PostgresBulkSink` with recovery (`dataflows.outputs.default_outputs`).
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable
from functools import partial
from typing import Any
from zlib import adler32

import numpy as np
from bytewax.outputs import DynamicSink, FixedPartitionedSink, StatefulSinkPartition, StatelessSinkPartition

from smart_maintenance import latency, metrics
from smart_maintenance.config.settings import PostgresSettings, Settings
from smart_maintenance.connectors.postgres.connection import migrate_once, prune_once
from smart_maintenance.connectors.postgres.server import PostgresSinkError, postgres_section, resolve_dsn
from smart_maintenance.connectors.postgres.sink import PostgresWriter, epoch_ms
from smart_maintenance.connectors.postgres.timescale import TimescalePlan, adopt_once
from smart_maintenance.operators.ingest.codes import factorize
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
    return [(keys[i], part) for i, part in split_readings(readings, len(keys))]


def split_readings(readings: Readings, parts: int) -> list[tuple[int, Readings]]:
    """`(i, rows)` for each part i that has rows: an asset's rows in part `adler32(asset_id) % parts`, in order.

    >>> r = Readings.of([("a", "t", 1, 1.0), ("b", "t", 2, 2.0), ("a", "t", 3, 3.0)])
    >>> [(i, x.ts.tolist()) for i, x in split_readings(r, 2)] == [(adler32(b"a") % 2, [1, 3]), (adler32(b"b") % 2, [2])]
    True
    """
    if not len(readings):
        return []
    if parts == 1:
        return [(0, readings)]
    codes, assets = factorize(readings.asset_id)
    part = np.array([adler32(str(a).encode()) % parts for a in assets], dtype=np.int64)[codes]
    out = []
    for i in range(parts):
        rows = np.flatnonzero(part == i)
        if len(rows):
            out.append((i, readings if len(rows) == len(readings) else readings.take(rows)))
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
        flush = recovery_on() if self._flush_on_snapshot is None else self._flush_on_snapshot
        return _open_partition(self._pg, self._stream, self._queue_batches, flush_on_snapshot=flush)


def _open_partition(pg: PostgresSettings, stream: str, queue_batches: int, *,
                    flush_on_snapshot: bool) -> _BulkPartition:
    """A writer (connection and thread) for `stream`, once the schema is there (and adopted and pruned)."""
    dsn = resolve_dsn(pg, ride_out=True)
    migrate_once(dsn, pg.schema_name)
    if stream == "readings":
        adopt_once(dsn, pg.schema_name, TimescalePlan(pg.retention_days, pg.rollup_hourly_days,
                                                      pg.rollup_daily_days))  # no-op on plain PostgreSQL
        if (pg.retention_days, pg.rollup_hourly_days, pg.rollup_daily_days) != (None, None, None):
            prune_once(dsn, pg.schema_name, pg.retention_days, pg.rollup_hourly_days, pg.rollup_daily_days)
    writer = PostgresWriter(dsn, pg.schema_name, pg.copy_rows, outage_s=pg.outage_s).open()
    return _BulkPartition(writer, stream, queue_batches, flush_on_snapshot=flush_on_snapshot)


class PostgresLocalSink(DynamicSink[Any]):
    """Readings (whole `Readings` batches or `AssetReadings`) or `FeatureBatch` items, written by COPY off the
    flow's thread, on the worker that has them: nothing crosses to another worker or process.

    **Without recovery only.** Bytewax builds one partition per worker and never calls a snapshot on it, so
    nothing holds an epoch's commit until its writes are stored (what `PostgresBulkSink` does at its
    snapshots with recovery on: at-least-once). A flow with recovery uses `PostgresBulkSink`
    (`dataflows.outputs.default_outputs` picks); the queued writes are stored at the latest when the flow ends
    (`close`), and a crash loses what was queued, which without recovery nothing resumes anyway.

    Each worker has `writers` writer threads (and connections) split by asset (`adler32(asset_id) % n`: an
    asset's rows always go through the same one on a worker), n = `writers` / workers rounded up: as many
    as `PostgresBulkSink`'s partitions over the cluster, so one process still has the database work on one
    batch while the flow computes the next. Two workers may still insert the same asset's rows at once (MQTT:
    an asset may come from any source partition); the insert takes rows in key order and skips those stored.
    """

    def __init__(self, settings: Settings | PostgresSettings, stream: str, *, writers: int = 2,
                 queue_batches: int = 16) -> None:
        if stream not in BULK_STREAMS:
            raise ValueError(f"stream must be one of {BULK_STREAMS}, got {stream!r}")
        if writers < 1 or queue_batches < 1:
            raise ValueError("writers and queue_batches must be at least 1")
        self._pg = postgres_section(settings)
        self._stream = stream
        self._writers = writers
        self._queue_batches = queue_batches

    def writers_per_worker(self, worker_count: int) -> int:
        """`writers` spread over the workers, at least one each.

        >>> s = PostgresLocalSink(PostgresSettings(), "readings")
        >>> [s.writers_per_worker(n) for n in (1, 2, 3)]
        [2, 1, 1]
        """
        return max(1, -(-self._writers // max(1, worker_count)))

    def build(self, step_id: str, worker_index: int, worker_count: int) -> _LocalPartition:
        n = self.writers_per_worker(worker_count)
        return _LocalPartition([_open_partition(self._pg, self._stream, self._queue_batches, flush_on_snapshot=False)
                                for _ in range(n)])


class _LocalPartition(StatelessSinkPartition[Any]):
    """A worker's writers; each item's rows go to the writer of their asset."""

    def __init__(self, parts: list[_BulkPartition]) -> None:
        self._parts = parts

    def write_batch(self, items: list[Any]) -> None:
        n = len(self._parts)
        if n == 1:
            self._parts[0].write_batch(items)
            return
        out: list[list[Any]] = [[] for _ in range(n)]
        for x in items:
            if isinstance(x, Readings):
                for i, rows in split_readings(x, n):
                    out[i].append(rows)
            else:  # AssetReadings, FeatureBatch: one asset's
                out[adler32(x.asset_id.encode()) % n].append(x)
        for part, values in zip(self._parts, out, strict=True):
            if values:
                part.write_batch(values)

    def close(self) -> None:
        errors: list[BaseException] = []
        for part in self._parts:  # every writer stores what it holds, even if another one failed
            try:
                part.close()
            except BaseException as e:
                errors.append(e)
        if errors:
            raise errors[0]


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
