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


class _FakeMemory:
    """Indexing that finishes only when told; searches that find one incident (or fail)."""

    def __init__(self, fail_attach: bool = False) -> None:
        from concurrent.futures import Future

        self.futures: list[Future[int]] = []
        self.remembered: list[tuple] = []
        self.fail_attach = fail_attach
        self._future = Future

    def remember(self, closures: tuple) -> object:
        f = self._future()
        self.futures.append(f)
        self.remembered.append(closures)
        return f

    def attach(self, orders: tuple) -> list:
        from smart_maintenance.operators.plan.work_orders import with_similar

        if self.fail_attach:
            raise RuntimeError("store gone")
        return [with_similar(w, [{"incident_id": "inc-1"}]) for w in orders]


def _closed_work() -> tuple:
    from smart_maintenance.operators.plan.work_orders import WorkOrder

    t = datetime(2026, 2, 1, tzinfo=timezone.utc)
    wo = WorkOrder("w-1", "pump-01", "a1", "repair", "done", 3, ("pumps",), 240, t, t, t, asset_type="pump")
    done = MaintenanceRecord.from_dict({"asset_id": "pump-01", "completed_at": "2026-02-01T12:00:00Z",
                                        "work_order_id": "w-1", "action": "replaced impeller"})
    return wo, ((wo, done),)


def test_recall_never_waits_for_indexing_and_a_resume_indexes_what_was_unfinished() -> None:
    from smart_maintenance.dataflows.loop_steps import RecallLogic
    from smart_maintenance.operators.plan.work_orders import WorkOut

    memory = _FakeMemory()
    logic = RecallLogic(None, lambda: memory)
    wo, closures = _closed_work()
    [out], _ = logic.on_item(WorkOut(orders=(wo,), closures=closures))  # returns although indexing is not done
    assert out.orders[0].similar_incidents == ({"incident_id": "inc-1"},) and out.closures == closures
    assert memory.remembered == [closures] and logic.notify_at() is not None
    assert logic.snapshot() == closures  # unfinished indexing is in the snapshot ...
    resumed = RecallLogic(logic.snapshot(), lambda: memory)  # ... and submitted again after a resume
    assert memory.remembered == [closures, closures]
    for f in memory.futures:
        f.set_result(1)
    logic.on_notify()
    assert logic.snapshot() == () and logic.notify_at() is None  # finished: forgotten
    assert resumed.on_eof()[0] == [] and resumed.snapshot() == ()


def test_recall_failures_are_logged_and_the_work_orders_go_on() -> None:
    from smart_maintenance.dataflows.loop_steps import RecallLogic
    from smart_maintenance.operators.plan.work_orders import WorkOut

    memory = _FakeMemory(fail_attach=True)
    logic = RecallLogic(None, lambda: memory)
    wo, closures = _closed_work()
    [out], _ = logic.on_item(WorkOut(orders=(wo,), closures=closures))
    assert out.orders == (wo,)  # no similar incidents, no exception
    memory.futures[0].set_exception(RuntimeError("disk full"))
    assert logic.on_eof()[0] == [] and logic.snapshot() == ()  # end of input waits, logs, does not raise


def test_a_newer_request_for_the_same_alarm_supersedes_a_queued_older_one(monkeypatch) -> None:
    from concurrent.futures import Future

    import smart_maintenance.dataflows.loop_steps as loop_steps

    futures: list[Future] = []

    class _Queue:  # a pool that has not started anything yet, except what the test starts
        def submit(self, fn, request, root):
            futures.append(f := Future())
            return f

    monkeypatch.setattr(loop_steps, "pool", lambda: _Queue())

    def request(alarm_id: str, made_at_ms: int) -> PredictionRequest:
        return PredictionRequest("pump-01", alarm_id, "vibration", np.arange(5, dtype=np.int64), np.zeros(5),
                                 threshold=1.0, direction="above", horizon_ms=1, made_at_ms=made_at_ms)

    a1, a2, b3, a4 = request("a", 1), request("a", 2), request("b", 3), request("a", 4)
    logic = PredictLogic(PredictSnapshot(None, (a1, a2, b3)), lambda a: None, PredictConfig(), True)
    assert futures[0].cancelled() and logic.snapshot().pending == (a2, b3)  # a1: out of date, never computed
    futures[1].set_running_or_notify_cancel()  # the pool started a2: it finishes
    logic._submit(a4)
    assert not futures[1].cancelled() and not futures[2].cancelled()  # started, or another alarm's
    assert logic.snapshot().pending == (a2, b3, a4)


def test_a_dead_incident_process_is_replaced_on_the_next_call(monkeypatch) -> None:
    from concurrent.futures import Future
    from concurrent.futures.process import BrokenProcessPool

    import smart_maintenance.dataflows.offload as offload
    from smart_maintenance.config.incident_settings import IncidentSettings

    class _Dead:
        def submit(self, *a):
            raise BrokenProcessPool("gone")

    class _Alive:
        def submit(self, fn, *a):
            (f := Future()).set_result(0 if fn is offload.open_incidents else 1)
            return f

    pools = [_Dead(), _Alive(), _Alive()]
    resets: list[str] = []
    monkeypatch.setattr(offload, "incident_pool", lambda: pools[0])
    monkeypatch.setattr(offload, "reset_pool", lambda name="predict": (resets.append(name), pools.pop(0)))
    remote = offload.RemoteIncidents(IncidentSettings(), "/nonexistent", frozen=True)
    assert resets == ["incidents"] and remote.remember(()).result() == 1
    wo, _ = _closed_work()
    assert remote.attach((wo,))[0].similar_incidents == ()  # empty when the replay began: not asked
