"""SimulatorSource in a real Bytewax flow: partitions, snapshots, abort and resume, pacing."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from pathlib import Path

import bytewax.operators as op
import numpy as np
import pytest
from bytewax.dataflow import Dataflow
from bytewax.inputs import AbortExecution, FixedPartitionedSource, StatefulSourcePartition
from bytewax.recovery import RecoveryConfig, init_db_dir
from bytewax.testing import TestingSink, run_main

from smart_maintenance.config.registry import load_registry
from smart_maintenance.config.settings import SimulatorSettings
from smart_maintenance.operators.records import Parsed, Readings
from smart_maintenance.sources.plant_model import PlantModel
from smart_maintenance.sources.simulator import SimulatorSource

REGISTRY = load_registry()
SETTINGS = SimulatorSettings(assets=5, duration_s=4 * 3600.0, partitions=2)  # 1440 ticks: 4 blocks


def flow_of(source: FixedPartitionedSource, out: list) -> Dataflow:
    flow = Dataflow("simulator_test")
    op.output("out", op.input("read", flow, source), TestingSink(out))
    return flow


def rows(batches: list[Parsed]) -> set[tuple[str, str, int]]:
    return {(a, s, int(t)) for p in batches for a, s, t in zip(p.readings.asset_id, p.readings.sensor, p.readings.ts)}


def test_the_flow_emits_exactly_the_models_readings() -> None:
    out: list[Parsed] = []
    run_main(flow_of(SimulatorSource(SETTINGS, REGISTRY), out))
    expected = PlantModel(REGISTRY, SETTINGS).generate(range(5), 0, 1440)
    got = Readings.concat([p.readings for p in out])
    assert len(out) == 8 and all(isinstance(p, Parsed) and not p.rejects for p in out)  # 2 partitions x 4 blocks
    assert len(got) == len(expected) and rows(out) == rows([Parsed(expected)])
    parts = [{"pump-01", "motor-01", "pump-02"}, {"compressor-01", "conveyor-01"}]  # index % 2
    for p in out:  # one partition's assets per batch, sorted by time within each asset
        assert set(p.readings.asset_id) in parts
        for a in set(p.readings.asset_id):
            assert (np.diff(p.readings.ts[p.readings.asset_id == a]) >= 0).all()


def test_a_two_day_plant_through_the_flow_equals_one_big_generation() -> None:
    settings = SimulatorSettings(partitions=3, duration_s=2 * 86_400.0)  # the default plant, 2 days
    out: list[Parsed] = []
    run_main(flow_of(SimulatorSource(settings, REGISTRY), out))
    model = PlantModel(REGISTRY, settings)
    assert len(out) == 3 * 48
    for p in range(3):  # each partition's batches arrive in order
        ids = {model.asset_ids[a] for a in range(p, 12, 3)}
        got = Readings.concat([b.readings for b in out if b.readings.asset_id[0] in ids])
        expected = model.generate(range(p, 12, 3), 0, model.n_ticks)
        assert (got.asset_id == expected.asset_id).all() and (got.sensor == expected.sensor).all()
        np.testing.assert_array_equal(got.ts, expected.ts)
        np.testing.assert_array_equal(got.value, expected.value)


def test_a_resumed_partition_continues_exactly_where_it_stopped() -> None:
    source = SimulatorSource(SETTINGS, REGISTRY)
    assert source.list_parts() == ["sim-0", "sim-1"] and not source.live
    first = source.build_part("read", "sim-1", None)
    head = [first.next_batch() for _ in range(2)]
    state = first.snapshot()
    assert state == 720  # the next tick
    tail = [first.next_batch() for _ in range(2)]
    with pytest.raises(StopIteration):
        first.next_batch()
    resumed = source.build_part("read", "sim-1", state)
    again = [resumed.next_batch() for _ in range(2)]
    for a, b in zip(tail, again):
        np.testing.assert_array_equal(a[0].readings.value, b[0].readings.value)
        np.testing.assert_array_equal(a[0].readings.ts, b[0].readings.ts)
    assert set(head[0][0].readings.asset_id) == {"compressor-01", "conveyor-01"}  # indices 1 and 3
    with pytest.raises(StopIteration):
        resumed.next_batch()
    with pytest.raises(ValueError, match="partition"):
        source.build_part("read", "sim-2", None)


class _AbortOnce(FixedPartitionedSource):
    """SimulatorSource whose partitions abort the execution once, after `after` batches."""

    def __init__(self, inner: SimulatorSource, after: int) -> None:
        self.inner, self.after, self.aborted = inner, after, False

    def list_parts(self) -> list[str]:
        return self.inner.list_parts()

    def build_part(self, step_id: str, for_part: str, resume_state: int | None) -> StatefulSourcePartition:
        part, outer = self.inner.build_part(step_id, for_part, resume_state), self

        class Part(StatefulSourcePartition):
            def next_batch(self) -> list:
                if not outer.aborted and part.snapshot() >= outer.after * 360:
                    outer.aborted = True
                    raise AbortExecution()
                return part.next_batch()

            def snapshot(self) -> int:
                return part.snapshot()

        return Part()


def test_a_run_aborted_midway_resumes_from_its_snapshot_without_gaps(tmp_path: Path) -> None:
    init_db_dir(tmp_path, 1)
    recovery = RecoveryConfig(tmp_path)
    source = _AbortOnce(SimulatorSource(SETTINGS.model_copy(update={"partitions": 1}), REGISTRY), after=2)
    first: list[Parsed] = []
    run_main(flow_of(source, first), epoch_interval=timedelta(0), recovery_config=recovery)
    assert source.aborted and 1 <= len(first) <= 2
    second: list[Parsed] = []
    run_main(flow_of(source, second), epoch_interval=timedelta(0), recovery_config=recovery)
    expected = rows([Parsed(PlantModel(REGISTRY, SETTINGS).generate(range(5), 0, 1440))])
    assert rows(first) | rows(second) == expected  # nothing lost
    assert len(second) < 4 and min(int(p.readings.ts.min()) for p in second) > PlantModel(REGISTRY, SETTINGS).start_ms


def test_paced_modes_wait_for_the_wall_clock() -> None:
    now = [datetime(2026, 1, 1, tzinfo=timezone.utc)]
    settings = SETTINGS.model_copy(update={"speed": 1.0, "partitions": 1})
    source = SimulatorSource(settings, REGISTRY, clock=lambda: now[0])
    assert source.live
    part = source.build_part("read", "sim-0", None)
    assert part.next_awake() == now[0]  # the first tick is due at once
    assert len(part.next_batch()[0].readings) == 25  # one tick of 5 assets x 5 sensors
    assert part.next_awake() == now[0] + timedelta(seconds=10)
    assert part.next_batch() == [] and part.snapshot() == 1  # too early: nothing, no progress
    now[0] += timedelta(seconds=10)
    assert len(part.next_batch()[0].readings) == 25 and part.snapshot() == 2
