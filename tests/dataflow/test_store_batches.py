"""The readings sink takes whole batches, one item per partition, and each asset's rows reach its own partition."""

from __future__ import annotations

from functools import partial
from typing import Any
from zlib import adler32

import bytewax.operators as op
from bytewax.dataflow import Dataflow
from bytewax.outputs import FixedPartitionedSink, StatefulSinkPartition
from bytewax.testing import TestingSource, run_main

from smart_maintenance.connectors.postgres.bulk import by_part, part_keys
from smart_maintenance.dataflows.outputs import emit
from smart_maintenance.operators.records import Readings

PARTS = 3


class _Part(StatefulSinkPartition[Any, None]):
    def __init__(self, name: str, got: list[tuple[str, Any]]) -> None:
        self._name, self._got = name, got

    def write_batch(self, values: list[Any]) -> None:
        self._got.extend((self._name, v) for v in values)

    def snapshot(self) -> None:
        return None


class _RecordingSink(FixedPartitionedSink[Any, None]):
    """What `PostgresBulkSink("readings")` offers the flow, recording what each partition is given."""

    def __init__(self) -> None:
        self.got: list[tuple[str, Any]] = []

    def list_parts(self) -> list[str]:
        return [f"readings-{i}" for i in range(PARTS)]

    def part_fn(self, item_key: str) -> int:
        return adler32(item_key.encode())

    def build_part(self, step_id: str, for_part: str, resume_state: None) -> _Part:
        return _Part(for_part, self.got)

    def batches(self) -> Any:
        return partial(by_part, keys=part_keys(PARTS))


def test_a_batch_of_many_assets_is_one_item_per_partition_and_each_asset_keeps_its_partition():
    assets = [f"pump-{i}" for i in range(40)]
    batches = [Readings.of([(a, "temp", t * 100 + k, float(k)) for k, a in enumerate(assets)]) for t in range(3)]
    flow = Dataflow("store_batches")
    sink = _RecordingSink()
    emit("store_readings", op.input("read", flow, TestingSource(batches)), [sink])
    run_main(flow)

    assert all(isinstance(item, Readings) for _, item in sink.got)
    assert len(sink.got) <= PARTS * len(batches)  # not one item per asset
    rows = sorted((a, int(t), part) for part, item in sink.got for a, t in zip(item.asset_id, item.ts))
    assert rows == sorted((a, int(t), f"readings-{adler32(a.encode()) % PARTS}")
                          for b in batches for a, t in zip(b.asset_id, b.ts))
