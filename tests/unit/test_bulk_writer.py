"""The background writer of readings and features: what it hands the database, and when snapshots wait."""

from __future__ import annotations

import threading
import time

import numpy as np

from smart_maintenance.connectors.postgres.bulk import _BulkPartition
from smart_maintenance.operators.records import AssetReadings


class _HeldWriter:
    """Records each write; the first one waits for `release`, so the flow's next batches queue up."""

    def __init__(self) -> None:
        self.writes: list[list[int]] = []
        self.release = threading.Event()
        self.started = threading.Event()

    def write_readings(self, batch) -> int:
        self.started.set()
        self.release.wait(10)
        self.writes.append(batch.ts.tolist())
        return len(batch)

    def close(self) -> None:
        pass


def _batch(ts: int) -> list[AssetReadings]:
    return [AssetReadings("pump-1", np.array(["a"], dtype=object), np.array([ts], np.int64), np.array([1.0]))]


def test_batches_queued_while_the_database_is_busy_go_in_one_write_in_their_order():
    writer = _HeldWriter()
    part = _BulkPartition(writer, "readings", queue_batches=16)  # type: ignore[arg-type]  # a stand-in writer
    part.write_batch(_batch(1))
    assert writer.started.wait(5)
    for ts in (2, 3, 4):
        part.write_batch(_batch(ts))
    writer.release.set()
    part.close()
    assert writer.writes == [[1], [2, 3, 4]]  # one COPY and transaction per turn of the writer, not per batch


def test_without_recovery_a_snapshot_does_not_wait_for_the_writer():
    writer = _HeldWriter()
    part = _BulkPartition(writer, "readings", queue_batches=16, flush_on_snapshot=False)  # type: ignore[arg-type]
    part.write_batch(_batch(1))
    assert writer.started.wait(5)
    started = time.monotonic()
    part.snapshot()
    assert time.monotonic() - started < 1  # the write is still held
    writer.release.set()
    part.close()
    assert writer.writes == [[1]]


def test_with_recovery_a_snapshot_waits_until_everything_before_it_is_written():
    writer = _HeldWriter()
    part = _BulkPartition(writer, "readings", queue_batches=16, flush_on_snapshot=True)  # type: ignore[arg-type]
    part.write_batch(_batch(1))
    part.write_batch(_batch(2))
    threading.Timer(0.2, writer.release.set).start()
    part.snapshot()
    assert sorted(ts for w in writer.writes for ts in w) == [1, 2]  # stored before the epoch commits
    part.close()


class _HeldRecords(_HeldWriter):
    def upsert_anomalies(self, anomalies) -> int:
        self.started.set()
        self.release.wait(10)
        self.writes.append([a.anomaly_id for a in anomalies])
        return len(anomalies)


def test_anomalies_are_upserted_by_the_writer_thread_while_the_flow_goes_on():
    from datetime import UTC, datetime

    from smart_maintenance.operators.records import Anomaly

    t = datetime(2026, 1, 5, tzinfo=UTC)
    anomalies = [Anomaly(f"an-{i}", "pump-1", t, t, 0.9, "confirmed", 0.8, 3, (), (), {}) for i in range(3)]
    writer = _HeldRecords()
    part = _BulkPartition(writer, "anomalies", queue_batches=16, flush_on_snapshot=False)  # type: ignore[arg-type]
    started = time.monotonic()
    part.write_batch(anomalies[:1])
    assert writer.started.wait(5)
    part.write_batch(anomalies[1:])
    assert time.monotonic() - started < 1  # the flow did not wait for the database
    writer.release.set()
    part.close()
    assert writer.writes == [["an-0"], ["an-1", "an-2"]]


def test_many_assets_items_become_the_rows_readings_concat_gives():
    from smart_maintenance.connectors.postgres.bulk import _readings
    from smart_maintenance.operators.records import Readings

    def item(asset: str, n: int, quality: bool, unit: bool) -> AssetReadings:
        return AssetReadings(asset, np.array([f"s{i}" for i in range(n)], dtype=object), np.arange(n, dtype=np.int64),
                             np.arange(n, dtype=np.float64), np.full(n, 192, np.int16) if quality else None,
                             np.full(n, "bar", dtype=object) if unit else None)

    items = [item("a", 3, False, False), item("b", 0, True, True), item("c", 2, True, False), item("d", 1, False, True)]
    got = _readings(items)
    want = Readings.concat([Readings(np.full(len(a), a.asset_id, dtype=object), a.sensor, a.ts, a.value, a.quality,
                                     a.unit) for a in items])
    for column in ("asset_id", "sensor", "ts", "value", "quality", "unit"):
        g, w = getattr(got, column), getattr(want, column)
        assert g.dtype == w.dtype and g.tolist() == w.tolist(), column
    assert _readings([item("a", 0, False, False)]).asset_id.tolist() == []
    assert _readings([item("a", 2, False, False)]).quality is None
