"""The loop's Bytewax adapters on plain values: failures stay contained, resumes keep their promises."""

from __future__ import annotations

from datetime import datetime, timezone

import numpy as np

from smart_maintenance.dataflows.loop_steps import PredictLogic, ScheduleLogic
from smart_maintenance.operators.controls import MaintenanceRecord
from smart_maintenance.operators.plan.dispatch import DispatchConfig, DispatchState
from smart_maintenance.operators.predict.requests import (
    PredictConfig,
    PredictionRequest,
    PredictionState,
    PredictSnapshot,
)
from smart_maintenance.operators.stages import Tracked

BAD = PredictionRequest("pump-01", "a1", "vibration", np.arange(5, dtype=np.int64), np.zeros(4),  # lengths differ
                        threshold=1.0, direction="above", horizon_ms=1, made_at_ms=4)


def test_a_prediction_that_raises_is_dropped_not_retried_forever() -> None:
    for offload in (False, True):
        logic = PredictLogic(PredictSnapshot(None, (BAD,)), lambda a: None, PredictConfig(), offload)
        assert logic.on_eof()[0] == []  # no exception reaches the flow
        assert logic.snapshot().pending == ()  # and a resume does not submit it again


def test_a_repair_starts_the_prediction_history_again() -> None:
    state = PredictionState(sensors=("v",), window_end=np.array([1, 2], np.int64),
                            means=np.ones((2, 1), np.float32), last_request_ms=2)
    logic = PredictLogic(PredictSnapshot(state), lambda a: None, PredictConfig(), False)
    repair = MaintenanceRecord("m1", "pump-01", at_ms=3)
    logic.on_item(Tracked("pump-01", None, (), repair, ()))
    after = logic.snapshot().state
    assert len(after.window_end) == 0 and after.last_request_ms == 2
    logic.on_item(Tracked("pump-01", None, (),
                          MaintenanceRecord("m2", "pump-01", at_ms=4, outcome="no_fault_found"), ()))
    assert logic.snapshot().state is after  # no fault found: the machine did not change


def test_a_live_planner_resumed_with_unplanned_work_plans_it_soon() -> None:
    resumed = ScheduleLogic(DispatchState(changed=True), (), DispatchConfig(), live=True, debounce_s=5, max_wait_s=60)
    wake = resumed.notify_at()
    assert wake is not None and (wake - datetime.now(timezone.utc)).total_seconds() <= 5
    idle = ScheduleLogic(DispatchState(changed=False), (), DispatchConfig(), live=True, debounce_s=5, max_wait_s=60)
    assert idle.notify_at() is None


def test_live_an_idle_asset_still_gets_its_logged_repair() -> None:
    from smart_maintenance.dataflows.steps import _WindowLogic
    from smart_maintenance.operators.ingest.windows import WindowConfig

    logic = _WindowLogic(WindowConfig(length_ms=300_000, lateness_ms=30_000), None, idle_s=0.01)
    repair = MaintenanceRecord("m1", "pump-01", at_ms=1_767_600_000_000)  # in the past; the asset sends nothing
    assert logic.on_item(repair)[0] == []  # held: no window of this asset has reached its time
    assert logic.notify_at() is not None  # a live asset with a pending control keeps looking at the clock
    (out,), _ = logic.on_notify()
    assert out.control == repair and logic.notify_at() is None
    finite = _WindowLogic(WindowConfig(length_ms=300_000, lateness_ms=30_000), None, idle_s=None)
    finite.on_item(repair)
    assert finite.notify_at() is None and [o.control for o in finite.on_eof()[0]] == [repair]
