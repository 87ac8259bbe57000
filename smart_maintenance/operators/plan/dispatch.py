"""The planner's state: open work orders, the last plan, and when to re-plan.

One `DispatchState` for the whole plant (work orders are few). `take` folds a
work order's change in; `replan` turns the open work orders into CP-SAT jobs
at a planning origin, solves (keeping the last plan's assignments unless a
new plan is clearly better) and returns the work orders whose assignment
changed plus the plan's rows for the `assignments` stream.

The `work_orders` stream is written here only, so each stored row holds both
the lifecycle (from the asset's work-order step) and the assignment (from
the plan). `revision` = upstream revision x 1000 + plans since, so the
newest state always wins in the store.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import Any
from zoneinfo import ZoneInfo

from smart_maintenance.operators.plan.greedy_schedule import Job, Plan
from smart_maintenance.operators.plan.work_orders import WorkOrder
from smart_maintenance.operators.records import dt_to_ms, ms_to_dt, stable_id

MINUTE_MS = 60_000


@dataclass(frozen=True)
class DispatchConfig:
    horizon_days: float = 7.0
    solve_time_s: float = 10.0
    work_limit: float | None = 1.0  # CP-SAT deterministic s; chosen on bench/scheduling.py 50x5 seeds 1-4
    gap_limit: float = 0.01  # stop once proven within 1% of the best possible plan
    timezone: str = "UTC"

    def __post_init__(self) -> None:
        if self.horizon_days <= 0 or self.solve_time_s <= 0 or not 0 <= self.gap_limit < 1:
            raise ValueError("need horizon_days > 0, solve_time_s > 0 and 0 <= gap_limit < 1")
        ZoneInfo(self.timezone)  # raises for an unknown zone


@dataclass(frozen=True)
class DispatchState:
    orders: dict[str, WorkOrder] = field(default_factory=dict)  # open work orders as last emitted
    upstream: dict[str, int] = field(default_factory=dict)  # work_order_id -> upstream revision
    plan: Plan | None = None
    plan_origin_ms: int | None = None
    changed: bool = False  # work arrived since the last plan
    latest_ms: int | None = None  # the latest event time seen


def take(state: DispatchState | None, wo: WorkOrder) -> tuple[DispatchState, list[WorkOrder]]:
    """Fold in a change from upstream; closed work leaves the plan. Returns the rows to store now."""
    state = state or DispatchState()
    seen = state.upstream.get(wo.work_order_id)
    if seen is not None and seen >= wo.revision:
        return state, []  # a replayed or older state
    latest = max(state.latest_ms or 0, dt_to_ms(wo.updated_at))
    held = state.orders.get(wo.work_order_id)
    if held is not None and wo.is_open:  # keep the plan's assignment on a lifecycle change
        status = wo.status if wo.status == "in_progress" else held.status if held.technician_id else wo.status
        wo = replace(wo, status=status, technician_id=held.technician_id,
                     scheduled_start=held.scheduled_start, scheduled_end=held.scheduled_end)
    if wo.status == "in_progress" and wo.pinned_technician is None and wo.technician_id is not None:
        # work under way stays where it is: its technician and start become pins
        wo = replace(wo, pinned_technician=wo.technician_id, pinned_start=wo.pinned_start or wo.scheduled_start)
    out = replace(wo, revision=wo.revision * 1000)
    orders = dict(state.orders)
    upstream = dict(state.upstream) | {wo.work_order_id: wo.revision}
    if out.is_open:
        orders[out.work_order_id] = out
    else:
        orders.pop(out.work_order_id, None)
        upstream.pop(out.work_order_id, None)  # closed for good: forget it
    return replace(state, orders=orders, upstream=upstream, changed=True, latest_ms=latest), [out]


def _jobs(orders: list[WorkOrder], origin: datetime) -> list[Job]:
    """Open work orders as the solver's jobs, with a planner's pins. A pinned start already past stays as it is
    with a pinned technician (work under way holds them until its end) and is planned from now without one."""
    jobs = []
    for wo in orders:
        release = max(0, int((wo.created_at - origin).total_seconds() // 60))
        due = int((wo.due_at - origin).total_seconds() // 60)
        start = None if wo.pinned_start is None else int((wo.pinned_start - origin).total_seconds() // 60)
        if start is not None and wo.pinned_technician is None:
            start = max(start, 0)
        jobs.append(Job(wo.work_order_id, frozenset(wo.required_skills), max(wo.duration_min, 1), release, due,
                        min(max(wo.priority, 1), 5), pinned_technician=wo.pinned_technician,
                        pinned_start_min=start))
    return jobs


def replan(
    state: DispatchState, technicians: Any, origin_ms: int, cfg: DispatchConfig
) -> tuple[DispatchState, list[WorkOrder], list[dict[str, Any]], Plan | None]:
    """Plan the open work orders from `origin_ms` (event time, rounded down to the minute).

    Returns the new state, the work orders whose assignment changed, the
    `assignments` rows (one per open work order: placed, or with
    technician None when the plan left it out) and the plan.
    """
    if not state.orders:
        return replace(state, changed=False), [], [], None
    # OR-Tools is imported when there is something to plan: a flow process that never plans never loads it
    from smart_maintenance.operators.plan.scheduling import solve, technician_shifts

    origin_ms -= origin_ms % MINUTE_MS
    origin = ms_to_dt(origin_ms).astimezone(ZoneInfo(cfg.timezone))
    horizon = int(cfg.horizon_days * 1440)
    techs = [technician_shifts(t, origin, horizon) for t in technicians]
    orders = sorted(state.orders.values(), key=lambda w: w.work_order_id)
    previous = None
    if state.plan is not None and state.plan_origin_ms is not None:
        previous = state.plan.rebased((origin_ms - state.plan_origin_ms) // MINUTE_MS)
    plan = solve(_jobs(orders, origin), techs, time_limit_s=cfg.solve_time_s, previous=previous,
                 work_limit=cfg.work_limit, workers=1, seed=0, gap_limit=cfg.gap_limit)
    placed = plan.by_work_order()
    plan_id = stable_id("plan", origin_ms, *(w.work_order_id for w in orders))
    rows: list[dict[str, Any]] = []
    changed: list[WorkOrder] = []
    new_orders = dict(state.orders)
    at = ms_to_dt(origin_ms)
    for wo in orders:
        a = placed.get(wo.work_order_id)
        tech = a.technician_id if a else None
        start = ms_to_dt(origin_ms + a.start_min * MINUTE_MS) if a else None
        end = ms_to_dt(origin_ms + a.end_min * MINUTE_MS) if a else None
        if a is not None:
            rows.append({
                "work_order_id": wo.work_order_id, "technician_id": tech,
                "start_at": start.isoformat(), "end_at": end.isoformat(),  # type: ignore[union-attr]
                "plan_id": plan_id, "planned_at": at.isoformat(), "method": plan.method,
                "solver_status": plan.status, "objective": plan.objective, "bound": plan.bound,
                "gap": None if plan.gap is None else round(plan.gap, 6), "solve_s": round(plan.solve_s, 3),
                "asset_id": wo.asset_id, "priority": wo.priority, "due_at": wo.due_at.isoformat(),
            })
        if (wo.technician_id, wo.scheduled_start, wo.scheduled_end) == (tech, start, end):
            continue
        status = wo.status if wo.status == "in_progress" else "scheduled" if tech else "open"
        new = replace(wo, technician_id=tech, scheduled_start=start, scheduled_end=end,
                      status=status, updated_at=max(wo.updated_at, at),
                      revision=wo.revision + 1)
        new_orders[wo.work_order_id] = new
        changed.append(new)
    state = replace(state, orders=new_orders, plan=plan, plan_origin_ms=origin_ms, changed=False)
    return state, changed, rows, plan


def unplaced_ids(state: DispatchState) -> list[str]:
    """Open work orders the last plan left without a technician."""
    return sorted(k for k, w in state.orders.items() if w.technician_id is None)


def plan_summary(plan: Plan) -> dict[str, Any]:
    return {"status": plan.status, "method": plan.method, "objective": plan.objective, "bound": plan.bound,
            "gap": plan.gap, "solve_s": round(plan.solve_s, 3), "placed": len(plan.assignments),
            "unassigned": [(u.work_order_id, u.reason) for u in plan.unassigned]}


__all__ = ["DispatchConfig", "DispatchState", "plan_summary", "replan", "take", "unplaced_ids"]


@dataclass(frozen=True, slots=True)
class Planned:
    """The planner's output: a work order's stored state, or a plan's `assignments` rows."""

    work_order: WorkOrder | None = None
    assignments: tuple[dict[str, Any], ...] = ()
    unplaced: tuple[str, ...] = ()
    planned_at: str | None = None  # a plan's event-time origin (RFC 3339): orders plans even when none placed work

    def to_dict(self) -> dict[str, Any]:
        """One plan as one record: its assignments, the open work it could not place, and when it was planned."""
        plan_id = self.assignments[0]["plan_id"] if self.assignments else None
        return {"plan_id": plan_id, "planned_at": self.planned_at, "assignments": list(self.assignments),
                "unplaced": list(self.unplaced)}
