"""Work orders: born from confirmed alarms and sensor faults, due from time to failure, closed by maintenance.

One `WorkOrderState` per asset. `on_alarm` opens a work order when a machine
alarm opens (repair) or a sensor-fault alarm opens (instrumentation);
`on_prediction` sets its due time from the latest time-to-failure estimate
(keeping per alarm the prediction with the latest `made_at`, so the order
predictions arrive in does not matter); `on_maintenance` closes it;
Each returns the work
orders that changed; `revision` grows with every change, so a store keeps
the newest state whatever order replays deliver them in.

Priority 1..5 weighs criticality, severity and urgency::

    priority = clamp(round((criticality + severity) / 2) + urgency, 1, 5)
    urgency  = +1 when failure is forecast within `urgent_h` hours, else 0

>>> from datetime import datetime, timezone
>>> t = datetime(2026, 1, 5, 10, tzinfo=timezone.utc)
>>> cfg = WorkOrderConfig()
>>> default_due(t, severity=5, cfg=cfg).isoformat()
'2026-01-05T18:00:00+00:00'
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from typing import Any

from smart_maintenance.operators.controls import MaintenanceRecord, WorkOrderChange
from smart_maintenance.operators.predict.requests import Prediction
from smart_maintenance.operators.records import Alarm, ms_to_dt, stable_id
from smart_maintenance.operators.stages import Tracked

KINDS = ("repair", "instrumentation")
LIFECYCLE = ("open", "scheduled", "in_progress", "done", "cancelled")
CLOSED = ("done", "cancelled")


@dataclass(frozen=True)
class WorkOrderConfig:
    margin: timedelta = timedelta(hours=4)  # due = earliest plausible failure - margin
    due_by_severity_h: tuple[float, ...] = (168.0, 96.0, 48.0, 24.0, 8.0)  # without a forecast: severity 1..5
    urgent_h: float = 24.0
    instrumentation_skills: tuple[str, ...] = ("instrumentation",)
    instrumentation_min: int = 60

    def __post_init__(self) -> None:
        if len(self.due_by_severity_h) != 5 or any(h <= 0 for h in self.due_by_severity_h):
            raise ValueError("due_by_severity_h needs 5 positive hours (severity 1..5)")
        if self.margin < timedelta(0) or self.urgent_h < 0 or self.instrumentation_min <= 0:
            raise ValueError("need margin >= 0, urgent_h >= 0, instrumentation_min > 0")


@dataclass(frozen=True, slots=True)
class AssetWork:
    """What the registry says about an asset's work: skills, repair time, criticality, site, type."""

    skills: tuple[str, ...] = ("mechanical",)
    repair_min: int = 240
    criticality: int = 3
    site: str = ""
    asset_type: str = ""


@dataclass(frozen=True, slots=True)
class WorkOrder:
    """A piece of maintenance work; the `work_orders` stream's record."""

    work_order_id: str
    asset_id: str
    alarm_id: str
    kind: str  # repair | instrumentation
    status: str  # open | scheduled | in_progress | done | cancelled
    priority: int  # 1..5
    required_skills: tuple[str, ...]
    duration_min: int
    created_at: datetime  # event time: the alarm's opening window end
    due_at: datetime
    updated_at: datetime  # event time of the last change
    revision: int = 0
    closed_at: datetime | None = None
    prediction_id: str | None = None
    failure_at: datetime | None = None
    technician_id: str | None = None
    scheduled_start: datetime | None = None
    scheduled_end: datetime | None = None
    maintenance_id: str | None = None
    sensors: tuple[str, ...] = ()
    reason: str = ""
    severity: int = 3
    site: str = ""
    asset_type: str = ""
    similar_incidents: tuple[dict[str, Any], ...] = ()
    # a planner's changes (`WorkOrderChange`): pins the plan keeps, and due time and priority that predictions
    # and escalations no longer move
    pinned_technician: str | None = None
    pinned_start: datetime | None = None
    due_set: datetime | None = None
    priority_set: int | None = None

    @property
    def is_open(self) -> bool:
        return self.status not in CLOSED

    def to_dict(self) -> dict[str, Any]:
        def t(x: datetime | None) -> str | None:
            return None if x is None else x.isoformat()

        return {
            "work_order_id": self.work_order_id,
            "asset_id": self.asset_id,
            "alarm_id": self.alarm_id,
            "kind": self.kind,
            "status": self.status,
            "priority": self.priority,
            "required_skills": list(self.required_skills),
            "duration_min": self.duration_min,
            "created_at": t(self.created_at),
            "due_at": t(self.due_at),
            "updated_at": t(self.updated_at),
            "closed_at": t(self.closed_at),
            "prediction_id": self.prediction_id,
            "failure_at": t(self.failure_at),
            "technician_id": self.technician_id,
            "scheduled_start": t(self.scheduled_start),
            "scheduled_end": t(self.scheduled_end),
            "maintenance_id": self.maintenance_id,
            "sensors": list(self.sensors),
            "reason": self.reason,
            "severity": self.severity,
            "site": self.site,
            "asset_type": self.asset_type,
            "similar_incidents": list(self.similar_incidents),
            "revision": self.revision,
            "pinned_technician": self.pinned_technician,
            "pinned_start": t(self.pinned_start),
        }


@dataclass(frozen=True)
class WorkOrderState:
    """One asset's work orders by id (closed ones are kept briefly for late events) and the latest prediction per
    alarm."""

    orders: dict[str, WorkOrder] = field(default_factory=dict)
    predictions: dict[str, Any] = field(default_factory=dict)  # alarm_id -> latest Prediction
    keep_closed: int = 8


def default_due(at: datetime, severity: int, cfg: WorkOrderConfig) -> datetime:
    """Without a forecast the due time follows severity: 7 days at 1 down to 8 hours at 5."""
    return at + timedelta(hours=cfg.due_by_severity_h[min(max(severity, 1), 5) - 1])


def priority(criticality: int, severity: int, failure_at: datetime | None, at: datetime, cfg: WorkOrderConfig) -> int:
    """1..5 from criticality and severity, one up when failure is forecast within `urgent_h`."""
    base = round((criticality + severity) / 2 + 1e-9)
    urgent = failure_at is not None and failure_at - at <= timedelta(hours=cfg.urgent_h)
    return min(max(base + int(urgent), 1), 5)


def _prune(orders: dict[str, WorkOrder], keep_closed: int) -> dict[str, WorkOrder]:
    closed = sorted((w for w in orders.values() if not w.is_open), key=lambda w: (w.updated_at, w.work_order_id))
    drop = {w.work_order_id for w in closed[: max(len(closed) - keep_closed, 0)]}
    return {k: w for k, w in orders.items() if k not in drop}


def _derive(wo: WorkOrder, prediction: Any, work: AssetWork, cfg: WorkOrderConfig) -> WorkOrder:
    """Due time and priority from the severity and the latest prediction: one function of both, so the
    result does not depend on whether the alarm's escalation or the prediction arrived first. A due time
    or priority a planner set stays."""
    due = default_due(wo.created_at, wo.severity, cfg)
    if prediction is None:
        wo = replace(wo, due_at=due, priority=priority(work.criticality, wo.severity, None, wo.created_at, cfg))
    else:
        first = prediction.lo or prediction.failure_at
        if first is not None:
            due = min(due, max(first - cfg.margin, prediction.made_at))
        wo = replace(
            wo,
            due_at=due,
            prediction_id=prediction.prediction_id,
            failure_at=prediction.failure_at,
            priority=priority(work.criticality, wo.severity, prediction.failure_at, prediction.made_at, cfg),
        )
    return replace(wo, due_at=wo.due_set or wo.due_at, priority=wo.priority_set or wo.priority)


def on_alarm(
    state: WorkOrderState | None, alarm: Alarm, work: AssetWork, cfg: WorkOrderConfig
) -> tuple[WorkOrderState, list[WorkOrder]]:
    """Open a work order when an alarm opens; raise its priority when the alarm's severity rises."""
    state = state or WorkOrderState()
    kind = "repair" if alarm.kind == "machine" else "instrumentation"
    wo_id = stable_id("work_order", alarm.alarm_id)
    existing = state.orders.get(wo_id)
    if alarm.status != "open":
        return state, []
    pred = state.predictions.get(alarm.alarm_id) if kind == "repair" else None
    if existing is not None:
        if not existing.is_open or alarm.severity <= existing.severity:
            return state, []
        wo = _derive(replace(existing, severity=alarm.severity), pred, work, cfg)
        wo = replace(wo, updated_at=max(existing.updated_at, alarm.updated_at), revision=existing.revision + 1)
    else:
        at = alarm.opened_at
        wo = _derive(WorkOrder(
            work_order_id=wo_id,
            asset_id=alarm.asset_id,
            alarm_id=alarm.alarm_id,
            kind=kind,
            status="open",
            priority=3,
            required_skills=work.skills if kind == "repair" else cfg.instrumentation_skills,
            duration_min=work.repair_min if kind == "repair" else cfg.instrumentation_min,
            created_at=at,
            due_at=at,
            updated_at=at,
            sensors=alarm.sensors,
            reason=alarm.reason,
            severity=alarm.severity,
            site=work.site,
            asset_type=work.asset_type,
        ), pred, work, cfg)
    orders = dict(state.orders) | {wo_id: wo}
    return replace(state, orders=orders), [wo]


def on_prediction(
    state: WorkOrderState | None, prediction: Any, work: AssetWork, cfg: WorkOrderConfig
) -> tuple[WorkOrderState, list[WorkOrder]]:
    """Keep the alarm's latest prediction; re-date its work order from it.

    A work order closed before the prediction was made keeps what it had; one
    closed after takes it (a prediction can arrive late: it runs off the hot path).
    """
    state = state or WorkOrderState()
    held = state.predictions.get(prediction.alarm_id)
    if held is not None and (held.made_at, held.prediction_id) >= (prediction.made_at, prediction.prediction_id):
        return state, []
    kept = sorted((dict(state.predictions) | {prediction.alarm_id: prediction}).items(), key=lambda kv: kv[1].made_at)
    state = replace(state, predictions=dict(kept[-state.keep_closed * 4:]))
    wo = state.orders.get(stable_id("work_order", prediction.alarm_id))
    if wo is None or wo.kind != "repair" or (wo.closed_at is not None and prediction.made_at > wo.closed_at):
        return state, []
    new = _derive(wo, prediction, work, cfg)
    if new == wo:
        return state, []
    new = replace(new, updated_at=max(wo.updated_at, prediction.made_at), revision=wo.revision + 1)
    return replace(state, orders=dict(state.orders) | {new.work_order_id: new}), [new]


def on_maintenance(
    state: WorkOrderState | None, record: MaintenanceRecord
) -> tuple[WorkOrderState, list[WorkOrder]]:
    """Close the named work order, or all of the asset's open ones: done, or cancelled when the record says so."""
    state = state or WorkOrderState()
    at = record.completed_at
    status = "cancelled" if record.outcome == "cancelled" else "done"
    changed = []
    orders = dict(state.orders)
    for wo in state.orders.values():
        if not wo.is_open or (record.work_order_id and wo.work_order_id != record.work_order_id):
            continue
        if wo.created_at > at:  # work that arose after the repair is not closed by it
            continue
        new = replace(wo, status=status, closed_at=at, updated_at=max(wo.updated_at, at),
                      maintenance_id=record.maintenance_id, revision=wo.revision + 1)
        orders[wo.work_order_id] = new
        changed.append(new)
    return replace(state, orders=_prune(orders, state.keep_closed)), changed


def on_change(state: WorkOrderState | None, change: WorkOrderChange) -> tuple[WorkOrderState, list[WorkOrder]]:
    """Apply a planner's change to the named open work order (at its event time).

    A technician or start set by hand becomes a pin the plan keeps; a due time or priority set by hand
    stays when predictions or escalations come. A change of closed work, of work this asset does not
    have, or that changes nothing, does nothing.
    """
    state = state or WorkOrderState()
    wo = state.orders.get(change.work_order_id)
    if wo is None or not wo.is_open:
        return state, []
    new = wo
    if change.technician_id is not None:
        new = replace(new, pinned_technician=change.technician_id)
    if change.scheduled_start_ms is not None:
        new = replace(new, pinned_start=ms_to_dt(change.scheduled_start_ms))
    if change.due_at_ms is not None:
        new = replace(new, due_set=ms_to_dt(change.due_at_ms), due_at=ms_to_dt(change.due_at_ms))
    if change.priority is not None:
        new = replace(new, priority_set=change.priority, priority=change.priority)
    if change.status is not None:
        new = replace(new, status=change.status)
    if new == wo:
        return state, []
    new = replace(new, updated_at=max(wo.updated_at, ms_to_dt(change.at_ms)), revision=wo.revision + 1)
    return replace(state, orders=dict(state.orders) | {new.work_order_id: new}), [new]


def with_similar(wo: WorkOrder, incidents: list[dict[str, Any]]) -> WorkOrder:
    """Attach the top similar past incidents (from the incident memory) to a work order."""
    return replace(wo, similar_incidents=tuple(incidents))


def asset_work(registry: Any, asset_id: str) -> AssetWork:
    """The registry's view of an asset's work; unknown assets get mechanical defaults."""
    asset = registry.asset(asset_id)
    if asset is None:
        return AssetWork()
    t = registry.asset_types[asset.type]
    return AssetWork(skills=tuple(t.skills), repair_min=int(round(t.repair_hours * 60)),
                     criticality=asset.criticality, site=asset.site, asset_type=asset.type)


__all__ = [
    "AssetWork", "WorkOrder", "WorkOrderConfig", "WorkOrderState", "asset_work", "default_due",
    "on_alarm", "on_change", "on_maintenance", "on_prediction", "priority", "with_similar",
]


@dataclass(frozen=True, slots=True)
class WorkOut:
    """`plan_work`'s item: the asset's work orders that changed, and the ones maintenance closed (incidents)."""

    orders: tuple[WorkOrder, ...] = ()
    closures: tuple[tuple[WorkOrder, MaintenanceRecord], ...] = ()


def plan_work(
    state: WorkOrderState | None, item: Tracked | Prediction, work: AssetWork, cfg: WorkOrderConfig
) -> tuple[WorkOrderState, WorkOut]:
    """Fold alarms, predictions and maintenance into one asset's work orders."""
    if isinstance(item, Prediction):
        state, predicted = on_prediction(state, item, work, cfg)
        return state, WorkOut(tuple(predicted))
    changed: list[WorkOrder] = []
    closures: list[tuple[WorkOrder, MaintenanceRecord]] = []
    for a in item.alarms:
        state, more = on_alarm(state, a, work, cfg)
        changed += more
    m = item.maintenance
    if m is not None:
        state, closed = on_maintenance(state, m)
        changed += closed
        closures += [(wo, m) for wo in closed]
    c = item.work_order_change
    if c is not None:
        state, by_hand = on_change(state, c)
        changed += by_hand
    return state or WorkOrderState(), WorkOut(tuple(changed), tuple(closures))
