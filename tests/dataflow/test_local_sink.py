"""Readings and features written by the worker that has them (PostgresLocalSink) without recovery; with
recovery through PostgresBulkSink, whose snapshots hold the epoch until its writes are stored."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from typing import Any
from zlib import adler32

import bytewax.operators as op
import numpy as np
import pytest
from bytewax.dataflow import Dataflow
from bytewax.inputs import DynamicSource, StatelessSourcePartition
from bytewax.outputs import DynamicSink, FixedPartitionedSink
from bytewax.testing import cluster_main, run_main

from smart_maintenance.config.settings import Settings
from smart_maintenance.connectors.postgres import bulk
from smart_maintenance.connectors.postgres.bulk import PostgresBulkSink, PostgresLocalSink
from smart_maintenance.dataflows.outputs import default_outputs, emit
from smart_maintenance.operators.records import FeatureBatch, Readings
from smart_maintenance.recovery import set_recovery

BATCHES = 4
ASSETS = 12


class _Writer:
    """Stands in for a writer thread (`_BulkPartition`): records the thread that opened it and what it got."""

    def __init__(self, opened: list[_Writer], stream: str, flush_on_snapshot: bool) -> None:
        self.thread = threading.get_ident()
        self.stream, self.flush_on_snapshot = stream, flush_on_snapshot
        self.got: list[Any] = []
        self.closed = False
        opened.append(self)

    def write_batch(self, values: list[Any]) -> None:
        self.got.extend(values)

    def close(self) -> None:
        self.closed = True


@pytest.fixture
def opened(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[_Writer]]:
    writers: list[_Writer] = []
    monkeypatch.setattr(bulk, "_open_partition", lambda pg, stream, queue_batches, *, flush_on_snapshot:
                        _Writer(writers, stream, flush_on_snapshot))
    yield writers


class _PerWorker(StatelessSourcePartition[Any]):
    def __init__(self, worker: int, threads: dict[int, int]) -> None:
        threads[threading.get_ident()] = worker
        self._left = [Readings.of([(f"w{worker}-a{a}", "t", b * 1000 + a, float(a)) for a in range(ASSETS)])
                      for b in range(BATCHES)]

    def next_batch(self) -> list[Any]:
        if not self._left:
            raise StopIteration
        return [self._left.pop(0)]


class _EachWorkerReadsItsOwn(DynamicSource[Any]):
    """Each worker reads its own assets (`w<worker>-a<k>`): as Kafka partitions do, one per process."""

    def __init__(self) -> None:
        self.threads: dict[int, int] = {}  # thread id -> worker index

    def build(self, step_id: str, worker_index: int, worker_count: int) -> _PerWorker:
        return _PerWorker(worker_index, self.threads)


def _assets(values: list[Any]) -> set[str]:
    return {str(a) for v in values for a in (v.asset_id if isinstance(v, Readings) else [v.asset_id])}


def test_each_worker_writes_the_readings_it_read_and_nothing_crosses(opened: list[_Writer]) -> None:
    flow = Dataflow("local_readings")
    source = _EachWorkerReadsItsOwn()
    emit("store_readings", op.input("read", flow, source), [PostgresLocalSink(Settings().postgres, "readings")])
    cluster_main(flow, [], 0, worker_count_per_proc=2)

    assert len(opened) == 2 and all(w.closed for w in opened)  # one writer per worker: 2 over the cluster
    for w in opened:
        assert w.got and all(isinstance(v, Readings) for v in w.got)  # whole batches, as read
        worker = source.threads[w.thread]
        assert {a.split("-")[0] for a in _assets(w.got)} == {f"w{worker}"}  # only what its own worker read
    assert sum(len(v) for w in opened for v in w.got) == 2 * BATCHES * ASSETS


def test_one_worker_splits_its_batches_by_asset_over_two_writers(opened: list[_Writer]) -> None:
    flow = Dataflow("local_two_writers")
    emit("store_readings", op.input("read", flow, _EachWorkerReadsItsOwn()),
         [PostgresLocalSink(Settings().postgres, "readings")])
    run_main(flow)

    assert len(opened) == 2  # the database works on one writer's batch while the flow computes the next
    got = [_assets(w.got) for w in opened]
    assert not got[0] & got[1] and got[0] | got[1] == {f"w0-a{a}" for a in range(ASSETS)}
    for i, assets in enumerate(got):
        assert {adler32(a.encode()) % 2 for a in assets} == {i}  # an asset always goes to the same writer
    rows = Readings.concat([v for w in opened for v in w.got])
    assert sorted(rows.ts.tolist()) == sorted(b * 1000 + a for a in range(ASSETS) for b in range(BATCHES))
    for w in opened:  # each asset's rows in the order they were read
        for a in _assets(w.got):
            ts = Readings.concat(w.got).ts[Readings.concat(w.got).asset_id == a]
            assert np.all(np.diff(ts) > 0)


def test_features_go_to_the_writer_of_their_asset(opened: list[_Writer]) -> None:
    part = PostgresLocalSink(Settings().postgres, "features").build("store_features", 0, 1)
    batches = [FeatureBatch(f"a{k}", ("t",), np.array([0]), np.array([1]), np.zeros((1, 1, 8))) for k in range(8)]
    part.write_batch(batches)
    part.close()
    for i, w in enumerate(opened):
        assert w.got and {adler32(b.asset_id.encode()) % 2 for b in w.got} == {i}
    assert sorted(b.asset_id for w in opened for b in w.got) == sorted(b.asset_id for b in batches)


@pytest.mark.parametrize("recovery", [False, True])
def test_default_outputs_write_locally_only_without_recovery(recovery: bool, opened: list[_Writer]) -> None:
    """With recovery the readings and features sinks must hold each epoch until its writes are stored:
    PostgresBulkSink, whose partitions wait at their snapshots; without it, the worker-local sink."""
    set_recovery(recovery)
    try:
        outputs = default_outputs(Settings())
        sinks = [s for stream in ("readings", "features") for s in outputs[stream]
                 if isinstance(s, PostgresBulkSink | PostgresLocalSink)]
        assert len(sinks) == 2
        if not recovery:
            assert all(isinstance(s, PostgresLocalSink) and isinstance(s, DynamicSink) for s in sinks)
        else:
            assert all(isinstance(s, PostgresBulkSink) and isinstance(s, FixedPartitionedSink) for s in sinks)
            for s in sinks:
                assert isinstance(s, PostgresBulkSink)
                s.build_part("store", s.list_parts()[0], None)
            assert [w.flush_on_snapshot for w in opened] == [True, True]  # snapshots wait for the writer
    finally:
        set_recovery(None)
