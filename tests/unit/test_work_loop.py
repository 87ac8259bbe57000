"""The maintenance loop's pure steps: controls, feedback, alarms closed by repairs, work orders, the planner."""

from __future__ import annotations

import pickle
from dataclasses import replace
from datetime import datetime, timedelta, timezone

import numpy as np

from smart_maintenance.config.registry import load_registry
from smart_maintenance.operators.controls import (
    ControlError,
    MaintenanceRecord,
    ReviewDecision,
    WorkOrderChange,
    hold,
    interleave,
    release,
)
from smart_maintenance.operators.judge.alarms import AlarmConfig, AlarmState, clear_all, open_from_review, track_alarms
from smart_maintenance.operators.judge.feedback import apply_control
from smart_maintenance.operators.judge.validation import ValidationConfig, open_threshold
from smart_maintenance.operators.plan.dispatch import DispatchConfig, replan, take
from smart_maintenance.operators.plan.work_orders import (
    AssetWork,
    WorkOrderConfig,
    asset_work,
    on_alarm,
    on_change,
    on_maintenance,
    on_prediction,
)
from smart_maintenance.operators.predict.requests import Prediction
from smart_maintenance.operators.records import Alarm, FeatureBatch, dt_to_ms, stable_id

T0 = datetime(2026, 1, 5, 8, tzinfo=timezone.utc)  # a Monday
CFG = WorkOrderConfig()
WORK = AssetWork(skills=("mechanical", "pumps"), repair_min=240, criticality=4, site="north", asset_type="pump")


def alarm(kind: str = "machine", status: str = "open", severity: int = 3, at: datetime = T0) -> Alarm:
    return Alarm(stable_id("alarm", "pump-01", kind, 0), "pump-01", kind, status, severity, at, at,
                 at if status == "cleared" else None, 0.9, 3, "an1", ("vibration",), "persistent")


def prediction(made: datetime, fail_h: float, lo_h: float, pid: str = "p1") -> Prediction:
    return Prediction(pid, "pump-01", alarm().alarm_id, "vibration", "prophet", made, made + timedelta(hours=fail_h),
                      made + timedelta(hours=lo_h), None, made + timedelta(days=7))


def test_controls_wait_for_event_time_and_cut_the_windows_they_fall_between() -> None:
    m = MaintenanceRecord("m1", "pump-01", at_ms=250)
    q = hold(hold(None, [m]), [m])  # the same control twice is queued once
    q, due = release(q, 200)
    assert due == [] and len(q.pending) == 1
    q, due = release(q, 300)
    assert due == [m] and q.pending == ()
    assert hold(q, [m]).pending == ()  # already released: never again
    fb = FeatureBatch("pump-01", ("v",), np.array([0, 100, 200, 300]), np.array([100, 200, 300, 400]),
                      np.zeros((4, 1, 8)))
    parts = interleave(fb, [m])
    assert [len(p) if isinstance(p, FeatureBatch) else "m" for p in parts] == [2, "m", 2]


def test_a_rejected_review_raises_the_threshold_and_an_approval_gives_half_back_audited() -> None:
    cfg = ValidationConfig()
    reject = ReviewDecision("a1", "pump-01", "reject", at_ms=1000, decided_by="ana", decided_at="t1")
    state, changes = apply_control(None, reject, cfg)
    assert open_threshold(state, cfg) == 0.65 and changes[0]["cause"] == "review rejected"
    approve = ReviewDecision("a2", "pump-01", "approve", at_ms=2000, decided_at="t2")
    state, changes = apply_control(state, approve, cfg)
    assert round(open_threshold(state, cfg), 3) == 0.625 and changes[0]["old_threshold"] == 0.65
    state, changes = apply_control(state, ReviewDecision("a3", "pump-01", "defer", at_ms=3000), cfg)
    assert changes == []
    nff = MaintenanceRecord("m1", "pump-01", at_ms=4000, outcome="no_fault_found")
    state, changes = apply_control(state, nff, cfg)
    assert changes[0]["cause"] == "no fault found" and round(open_threshold(state, cfg), 3) == 0.675
    pickle.loads(pickle.dumps(state))


def test_maintenance_clears_every_open_alarm_and_an_approval_opens_one() -> None:
    state, out = open_from_review(None, "pump-01", {
        "anomaly_id": "an9", "window_start": "2026-01-05T08:00:00+00:00", "window_end": "2026-01-05T08:05:00+00:00",
        "severity": 4, "score": 0.7, "reasons": ["uncertain"], "contributions": [{"sensor": "vibration", "share": 1.0}],
    })
    assert [(a.kind, a.status, a.severity, a.sensors) for a in out] == [("machine", "open", 4, ("vibration",))]
    again, out2 = open_from_review(state, "pump-01", {"window_start": "2026-01-05T09:00:00+00:00"})
    assert out2 == [] and again == state  # one machine alarm at a time
    state, cleared = clear_all(state, "pump-01", dt_to_ms(T0 + timedelta(hours=3)), "maintenance repaired")
    assert [a.status for a in cleared] == ["cleared"] and state == AlarmState()
    assert "maintenance repaired" in cleared[0].reason
    assert track_alarms(state, "pump-01", [], AlarmConfig())[1] == []


def test_work_order_from_an_alarm_is_dated_by_the_latest_prediction_in_any_order() -> None:
    early, late = prediction(T0, 30, 20, "p1"), prediction(T0 + timedelta(hours=1), 12, 8, "p2")
    results = []
    for order in ([early, late], [late, early]):
        state, (wo,) = on_alarm(None, alarm(), WORK, CFG)
        assert wo.kind == "repair" and wo.due_at == T0 + timedelta(hours=48)  # severity 3 default
        for p in order:
            state, _ = on_prediction(state, p, WORK, CFG)
        results.append(state.orders[wo.work_order_id])
    a, b = results
    assert a.due_at == b.due_at == T0 + timedelta(hours=5)  # lo (9:00 + 8h) - 4h margin
    assert a.prediction_id == b.prediction_id == "p2" and a.priority == 5  # urgent: failure within 24 h


def test_prediction_before_its_work_order_is_kept_and_used() -> None:
    state, _ = on_prediction(None, prediction(T0, 30, 20), WORK, CFG)
    state, (wo,) = on_alarm(state, alarm(), WORK, CFG)
    assert wo.prediction_id == "p1" and wo.due_at == T0 + timedelta(hours=16)


def test_sensor_fault_makes_instrumentation_work_and_maintenance_closes_only_earlier_work() -> None:
    state, (wo,) = on_alarm(None, alarm(kind="sensor_fault"), WORK, CFG)
    assert wo.kind == "instrumentation" and wo.required_skills == ("instrumentation",)
    before = MaintenanceRecord("m0", "pump-01", at_ms=dt_to_ms(T0 - timedelta(hours=1)))
    assert on_maintenance(state, before)[1] == []
    done = MaintenanceRecord("m1", "pump-01", at_ms=dt_to_ms(T0 + timedelta(hours=2)), outcome="replaced")
    state, (closed,) = on_maintenance(state, done)
    assert (closed.status, closed.maintenance_id, closed.revision) == ("done", "m1", 1)
    assert on_alarm(state, alarm(kind="sensor_fault"), WORK, CFG)[1] == []  # a replayed alarm does not reopen it


def test_planner_assigns_skilled_technicians_in_shift_and_revisions_only_grow() -> None:
    registry = load_registry()
    work = asset_work(registry, "pump-01")
    assert "pumps" in work.skills
    state, (wo,) = on_alarm(None, alarm(severity=4), work, CFG)
    d, rows = take(None, wo)
    assert rows[0].revision == 0
    d, changed, plan_rows, plan = replan(d, registry.technicians, dt_to_ms(T0), DispatchConfig(work_limit=2.0))
    assert plan is not None and plan.status == "OPTIMAL"
    (placed,) = changed
    tech = next(t for t in registry.technicians if t.technician_id == placed.technician_id)
    assert set(wo.required_skills) <= set(tech.skills)
    assert placed.status == "scheduled" and placed.revision == 1 and placed.scheduled_start >= T0
    assert plan_rows[0]["technician_id"] == placed.technician_id
    # the next upstream change outranks the plan's revision, and keeps the assignment
    state, (closed,) = on_maintenance(
        state, MaintenanceRecord("m1", "pump-01", at_ms=dt_to_ms(T0 + timedelta(hours=9))))
    d, (stored,) = take(d, closed)
    assert stored.revision == 1000 > placed.revision and stored.status == "done" and d.orders == {}
    pickle.loads(pickle.dumps(d))


def test_maintenance_on_one_work_order_clears_only_its_alarm() -> None:
    cfg = AlarmConfig()
    state = AlarmState()
    state, _ = open_from_review(state, "pump-01", {
        "anomaly_id": "an9", "window_start": "2026-01-05T08:00:00+00:00", "window_end": "2026-01-05T08:05:00+00:00",
        "severity": 4, "score": 0.7, "reasons": [], "contributions": [{"sensor": "vibration", "share": 1.0}]})
    from smart_maintenance.operators.judge.alarms import Episode

    fault = Episode("sf1", "sensor_fault", 0, 3, 1.0, 1, "an1", ("temperature",), "stuck")
    state = AlarmState(dict(state.open) | {"sensor_fault": fault})
    machine_wo = stable_id("work_order", state.open["machine"].alarm_id)
    after, cleared = clear_all(state, "pump-01", 10, "maintenance repaired", machine_wo)
    assert [a.kind for a in cleared] == ["machine"] and list(after.open) == ["sensor_fault"]
    assert track_alarms(after, "pump-01", [], cfg)[1] == []


def change(fields: dict[str, object], at: datetime, seq: int, wo_id: str) -> WorkOrderChange:
    return WorkOrderChange.from_fields(fields, work_order_id=wo_id, asset_id="pump-01", effective_at=at.isoformat(),
                                       seq=seq, by="ana")


def test_a_planners_change_is_checked_like_any_control() -> None:
    ok = dict(work_order_id="wo1", asset_id="pump-01", effective_at="2026-01-05T10:00:00Z", seq=1)
    for bad, why in (({"priority": 9}, "priority"), ({"priority": True}, "priority"), ({"status": "done"}, "status"),
                     ({"owner": "x"}, "unknown"), ({"due_at": "2026-01-05T10:00:00"}, "time zone"),
                     ({"scheduled_start": 1e300}, "out of range"), ({"technician_id": ["x"]}, "string")):
        try:
            WorkOrderChange.from_fields(bad, **ok)  # type: ignore[arg-type]
        except ControlError as e:
            assert why in str(e), (bad, e)
        else:
            raise AssertionError(f"{bad} was accepted")
    try:
        WorkOrderChange.from_fields({"priority": 2}, **{**ok, "effective_at": "soon"})  # type: ignore[arg-type]
    except ControlError as e:
        assert "effective_at" in str(e)
    else:
        raise AssertionError("a bad effective_at was accepted")


def planned_work_order():
    """One work order from an alarm on pump-01, planned once at T0: (registry, work, its state, it, planner, placed)."""
    registry = load_registry()
    work = asset_work(registry, "pump-01")
    state, (wo,) = on_alarm(None, alarm(severity=4), work, CFG)
    d, _ = take(None, wo)
    d, (placed,), _, _ = replan(d, registry.technicians, dt_to_ms(T0), DispatchConfig(work_limit=2.0))
    return registry, work, state, wo, d, placed


def test_a_planners_reassignment_is_a_pin_the_next_plan_keeps() -> None:
    registry, work, state, wo, d, placed = planned_work_order()
    other = next(t.technician_id for t in registry.technicians if t.technician_id != placed.technician_id)
    start = T0 + timedelta(days=1, hours=2)
    state, (pinned,) = on_change(state, change({"technician_id": other, "scheduled_start": start.isoformat(),
                                                "priority": 1}, T0 + timedelta(minutes=30), 1, wo.work_order_id))
    assert (pinned.pinned_technician, pinned.pinned_start, pinned.priority, pinned.revision) == (other, start, 1, 1)
    d, _ = take(d, pinned)
    d, (moved,), rows, plan = replan(d, registry.technicians, dt_to_ms(T0 + timedelta(hours=1)),
                                     DispatchConfig(work_limit=2.0))
    assert (moved.technician_id, moved.scheduled_start, moved.priority) == (other, start, 1)
    assert rows[0]["technician_id"] == other
    # a new prediction re-dates the work order but keeps the planner's priority and pins
    state, (redated,) = on_prediction(state, prediction(T0 + timedelta(hours=2), 12, 8, "p2"), work, CFG)
    assert (redated.priority, redated.pinned_technician) == (1, other)
    # an unknown technician leaves the work unplaced, with the reason
    state, (unknown,) = on_change(state, change({"technician_id": "nobody"}, T0 + timedelta(hours=3), 2,
                                                wo.work_order_id))
    d, _ = take(d, unknown)
    d, _, rows, plan = replan(d, registry.technicians, dt_to_ms(T0 + timedelta(hours=4)),
                              DispatchConfig(work_limit=2.0))
    assert rows == [] and plan is not None
    assert [(u.work_order_id, u.reason) for u in plan.unassigned] == [(wo.work_order_id, "unknown_technician")]
    # a change of closed or unknown work, or one that changes nothing, does nothing
    assert on_change(state, change({"technician_id": "nobody"}, T0 + timedelta(hours=5), 3, wo.work_order_id))[1] == []
    assert on_change(state, change({"priority": 2}, T0, 4, "wo-elsewhere"))[1] == []
    pickle.loads(pickle.dumps(d))


def test_work_in_progress_stays_where_the_plan_had_it() -> None:
    registry, work, state, wo, d, placed = planned_work_order()
    state, (started,) = on_change(state, change({"status": "in_progress"}, T0 + timedelta(minutes=5), 1,
                                                wo.work_order_id))
    d, (stored,) = take(d, started)
    assert (stored.status, stored.pinned_technician, stored.pinned_start) == (
        "in_progress", placed.technician_id, placed.scheduled_start)
    # a more urgent job arriving later does not displace it
    other = replace(alarm(severity=5, at=T0 + timedelta(minutes=10)), alarm_id=stable_id("alarm", "pump-01", "m", 1))
    state, (urgent,) = on_alarm(state, other, work, CFG)
    d, _ = take(d, urgent)
    d, _, rows, _ = replan(d, registry.technicians, dt_to_ms(T0 + timedelta(minutes=15)),
                           DispatchConfig(work_limit=2.0))
    kept = next(r for r in rows if r["work_order_id"] == wo.work_order_id)
    assert (kept["technician_id"], kept["start_at"]) == (placed.technician_id, placed.scheduled_start.isoformat())
    assert d.orders[wo.work_order_id].status == "in_progress"
