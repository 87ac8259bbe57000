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
from typing import Any
from zlib import adler32

import numpy as np
from bytewax.outputs import FixedPartitionedSink, StatefulSinkPartition

from smart_maintenance import latency, metrics
from smart_maintenance.config.settings import PostgresSettings, Settings
from smart_maintenance.connectors.postgres.connection import migrate_once, prune_once
from smart_maintenance.connectors.postgres.server import PostgresSinkError, postgres_section, resolve_dsn
from smart_maintenance.connectors.postgres.sink import PostgresWriter, epoch_ms
from smart_maintenance.connectors.postgres.timescale import TimescalePlan, adopt_once
from smart_maintenance.operators.records import AssetReadings, FeatureBatch, Readings
from smart_maintenance.recovery import recovery_on

BULK_STREAMS = ("readings", "features")
RECORD_STREAMS = ("anomalies", "alarms", "dead_letters")  # upserted as before, also off the flow's thread


def _readings(items: list[AssetReadings]) -> Readings:
    return Readings.concat(
        [Readings(np.full(len(a), a.asset_id, dtype=object), a.sensor, a.ts, a.value, a.quality, a.unit)
         for a in items]
    )


class PostgresBulkSink(FixedPartitionedSink[Any, None]):
    """Keyed `(asset_id, AssetReadings)` or `(asset_id, FeatureBatch)` items, written by COPY off the flow's thread;
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
        if self._stream == "readings":
            w.write_readings(_readings(items))
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
