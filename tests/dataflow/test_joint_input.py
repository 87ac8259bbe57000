"""Readings and controls in one Bytewax input (sources/joint.py): the readings are not held at epoch
boundaries by the control input's slower poll, and controls still reach the flow."""

from __future__ import annotations

import time
from datetime import datetime, timedelta, timezone

import bytewax.operators as op
import pytest
from bytewax.dataflow import Dataflow
from bytewax.inputs import FixedPartitionedSource, StatefulSourcePartition
from bytewax.testing import TestingSink, TestingSource, run_main

from smart_maintenance.config.registry import load_registry
from smart_maintenance.config.settings import load_settings
from smart_maintenance.dataflows.plant import STREAMS, build_flow
from smart_maintenance.operators.controls import MaintenanceRecord
from smart_maintenance.sources.joint import JointSource, is_extra_item
from smart_maintenance.sources.simulator import SimulatorSource, ground_truth


class _Part(StatefulSourcePartition[str, None]):
    """Polled every `every_s`; records when (the "fast" one), ends at `until`."""

    def __init__(self, name: str, every_s: float, until: float, polls: list[float]) -> None:
        self._name, self._every, self._until, self._polls = name, timedelta(seconds=every_s), until, polls
        self._awake: datetime | None = None

    def next_batch(self) -> list[str]:
        if time.time() > self._until:
            raise StopIteration()
        if self._name == "fast":
            self._polls.append(time.time())
        self._awake = datetime.now(timezone.utc) + self._every
        return [self._name] if self._name == "fast" else []

    def next_awake(self) -> datetime | None:
        return self._awake

    def snapshot(self) -> None:
        return None


class _Source(FixedPartitionedSource[str, None]):
    def __init__(self, every_s: dict[str, float], until: float, polls: list[float]) -> None:
        self._every, self._until, self._polls = every_s, until, polls

    def list_parts(self) -> list[str]:
        return list(self._every)

    def build_part(self, step_id: str, for_part: str, resume_state: None) -> _Part:
        return _Part(for_part, self._every[for_part], self._until, self._polls)


def _longest_wait(joint: bool) -> float:
    """The longest time between two polls of a partition due every 10 ms, beside one due every second."""
    polls: list[float] = []
    until = time.time() + 2.5
    fast, slow = _Source({"fast": 0.01}, until, polls), _Source({"slow": 1.0}, until, polls)
    flow = Dataflow("epochs")
    if joint:
        items = op.input("read", flow, JointSource(fast, slow))
    else:
        items = op.merge("both", op.input("read", flow, fast), op.input("read_slow", flow, slow))
    op.output("out", items, TestingSink([]))
    run_main(flow, epoch_interval=timedelta(seconds=0.2))
    return max(b - a for a, b in zip(polls, polls[1:]))


def test_a_partition_in_its_own_input_waits_for_the_slower_input_at_each_epoch_but_not_in_a_joint_one() -> None:
    # Bytewax holds an input that starts an epoch until every input finished the one before: in two inputs
    # the fast partition waits up to the slow one's poll (1 s); in one input all partitions move together
    assert _longest_wait(joint=False) > 0.9
    assert _longest_wait(joint=True) < 0.5  # 13-95 ms measured at load 10 on 2 cores


def test_parts_are_routed_to_their_source_and_names_may_not_clash() -> None:
    joint = JointSource(TestingSource(["batch"]), TestingSource([("pump-1", "control")]))
    assert joint.list_parts() == ["iterable", "extra:iterable"]
    out: list[object] = []
    flow = Dataflow("joint")
    items = op.branch("split", op.input("read", flow, joint), is_extra_item)
    op.output("controls", items.trues, TestingSink(out))
    op.output("batches", items.falses, TestingSink(out))
    run_main(flow)
    assert sorted(map(str, out)) == ["('pump-1', 'control')", "batch"]

    class Clash(TestingSource[str]):
        def list_parts(self) -> list[str]:
            return ["extra:0"]

    with pytest.raises(ValueError, match="extra:"):
        JointSource(Clash([]), TestingSource([])).list_parts()


def test_the_plant_flow_reads_readings_and_controls_in_one_input_and_applies_the_controls() -> None:
    settings = load_settings(console=False, progress=False, simulator={"assets": 2, "duration_s": 6 * 3600.0},
                             prediction={"offload": False})
    plant = load_registry().with_simulated(2)
    truth = ground_truth(plant, settings.simulator)
    asset = plant.assets[0].asset_id
    repair = MaintenanceRecord("m-1", asset, at_ms=truth.start_ms + 3 * 3_600_000, action="replaced seal")
    out: dict[str, list] = {s: [] for s in STREAMS}
    flow = build_flow(settings, source=SimulatorSource(settings.simulator, plant), registry=plant,
                      sinks={s: [TestingSink(out[s])] for s in STREAMS},
                      control_source=TestingSource([(asset, repair)]))
    steps = {s.step_id.rsplit(".", 1)[-1] for s in flow.substeps}
    assert "read" in steps and "read_controls" not in steps  # one input for both
    run_main(flow, epoch_interval=timedelta(0))
    assert [m.maintenance_id for m in out["maintenance_log"]] == ["m-1"]
    assert out["readings"]  # and the readings went their way
