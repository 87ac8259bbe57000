"""What people feed back into the running flow: review decisions, completed maintenance and planners'
changes of work orders.

Both are *controls*: keyed by asset, each with an event time `at_ms` at which
it takes effect. The window step holds a control until the asset's own
event time reaches `at_ms` and then emits it between the windows before and
after, so a replay of the same readings with the same controls gives the
same result however the two inputs interleave (see `dataflows/steps.py`).
A control whose time has already passed (the usual case live: a repair
logged after the fact) applies at once.

    >>> d = ReviewDecision.from_dict({"review_id": "a1", "asset_id": "pump-01", "decision": "reject",
    ...     "window_end": "2026-01-05T10:00:00Z", "decided_by": "ana"})
    >>> d.at_ms, d.decision
    (1767607200000, 'reject')
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import numpy as np

from smart_maintenance.operators.ingest.guard import describe
from smart_maintenance.operators.records import dt_to_ms, iso, ms_to_dt, stable_id

DECISIONS = ("approve", "reject", "defer")
OUTCOMES = ("repaired", "replaced", "adjusted", "no_fault_found", "cancelled")


class ControlError(ValueError):
    """A review decision or maintenance record that cannot be used, with the reason."""


# a control's time must be a plausible moment: anything else is a mistake or an attack (1e300 ms overflows a datetime)
EARLIEST_MS = 0  # 1970-01-01
LATEST_MS = 4_102_444_800_000  # 2100-01-01


def _time_ms(value: Any, name: str) -> int:
    """Epoch ms of a control time, within [1970, 2100)."""
    if isinstance(value, datetime):
        if value.tzinfo is None:
            raise ControlError(f"{name} needs a time zone")
        ms = dt_to_ms(value)
    elif isinstance(value, (int, float)) and not isinstance(value, bool):
        if value != value or value in (float("inf"), float("-inf")):
            raise ControlError(f"{name} is not a finite number: {describe(value)}")
        if not EARLIEST_MS <= value < LATEST_MS:
            raise ControlError(f"{name} is out of range (1970 to 2100 in epoch ms): {describe(value)}")
        ms = int(value)
    elif isinstance(value, str) and value.strip():
        try:
            dt = datetime.fromisoformat(value.strip().replace("Z", "+00:00"))
        except ValueError as e:
            raise ControlError(f"{name}: not an RFC 3339 time: {describe(value)}") from e
        if dt.tzinfo is None:
            raise ControlError(f"{name} needs a time zone: {describe(value)}")
        ms = dt_to_ms(dt)
    else:
        raise ControlError(f"{name} is missing or not a time: {describe(value)}")
    if not EARLIEST_MS <= ms < LATEST_MS:
        raise ControlError(f"{name} is out of range (1970 to 2100): {describe(value)}")
    return ms


def _text(d: dict[str, Any], key: str, *, required: bool = True, default: str = "") -> str:
    v = d.get(key)
    if v is None or (isinstance(v, str) and not v.strip()):
        if required:
            raise ControlError(f"{key} is required")
        return default
    if not isinstance(v, str):
        raise ControlError(f"{key} must be a string, got {type(v).__name__}")
    return v.strip()


@dataclass(frozen=True, slots=True)
class ReviewDecision:
    """A person's decision on a `needs_review` anomaly (`review_id` is the anomaly id).

    `at_ms` is the anomaly's window end: the decision applies to the asset
    right after the window it is about, whenever it was made.
    """

    review_id: str
    asset_id: str
    decision: str  # approve | reject | defer
    at_ms: int
    decided_by: str = ""
    note: str = ""
    decided_at: str = ""  # wall time of the decision, RFC 3339 (audit only)
    anomaly: dict[str, Any] = field(default_factory=dict)  # the anomaly's record, for approve

    @property
    def control_id(self) -> str:
        return stable_id("review", self.review_id, self.decision, self.decided_at)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> ReviewDecision:
        decision = _text(d, "decision").lower()
        if decision not in DECISIONS:
            raise ControlError(f"decision must be one of {', '.join(DECISIONS)}, got {describe(decision)}")
        anomaly = d.get("anomaly") or {}
        if not isinstance(anomaly, dict):
            raise ControlError("anomaly must be an object")
        return cls(
            review_id=_text(d, "review_id"),
            asset_id=_text(d, "asset_id"),
            decision=decision,
            at_ms=_time_ms(d.get("window_end") or anomaly.get("window_end"), "window_end"),
            decided_by=_text(d, "decided_by", required=False),
            note=_text(d, "note", required=False),
            decided_at=_text(d, "decided_at", required=False),
            anomaly=anomaly,
        )

    def to_dict(self) -> dict[str, Any]:
        return {
            "control_id": self.control_id,
            "review_id": self.review_id,
            "asset_id": self.asset_id,
            "decision": self.decision,
            "window_end": iso(self.at_ms),
            "decided_by": self.decided_by,
            "note": self.note,
            "decided_at": self.decided_at,
            "anomaly": self.anomaly,
        }


@dataclass(frozen=True, slots=True)
class MaintenanceRecord:
    """Completed (or cancelled) maintenance on an asset: the maintenance log's record.

    It closes the named work order (or every open one of the asset), clears
    the asset's open alarms and re-baselines its detectors at `completed_at`.
    `outcome` "no_fault_found" is feedback: the alarm was a false positive.
    """

    maintenance_id: str
    asset_id: str
    at_ms: int  # completed_at
    outcome: str = "repaired"
    work_order_id: str = ""
    technician_id: str = ""
    action: str = ""
    notes: str = ""
    parts: tuple[str, ...] = ()
    source: str = "cli"

    @property
    def control_id(self) -> str:
        return self.maintenance_id

    @property
    def completed_at(self) -> datetime:
        return ms_to_dt(self.at_ms)

    @property
    def rebaseline(self) -> bool:
        """Did the machine change? A repair or replacement does; no fault found or a cancellation does not."""
        return self.outcome in ("repaired", "replaced", "adjusted")

    @classmethod
    def from_dict(cls, d: dict[str, Any], source: str = "file") -> MaintenanceRecord:
        """A record from untrusted fields; `source` is the origin the caller verified (`cli:ana`, `kafka:t key=k`).

        A `source` field in `d` is ignored: the audit trail must not believe what a message says of itself.
        """
        if not isinstance(d, dict):
            raise ControlError(f"a maintenance record must be an object, got {type(d).__name__}")
        asset_id = _text(d, "asset_id")
        at_ms = _time_ms(d.get("completed_at"), "completed_at")
        outcome = _text(d, "outcome", required=False, default="repaired").lower()
        if outcome not in OUTCOMES:
            raise ControlError(f"outcome must be one of {', '.join(OUTCOMES)}, got {describe(outcome)}")
        parts = d.get("parts") or ()
        if isinstance(parts, str):
            parts = tuple(p.strip() for p in parts.split(",") if p.strip())
        elif not isinstance(parts, (list, tuple)) or not all(isinstance(p, str) for p in parts):
            raise ControlError("parts must be a list of strings")
        work_order_id = _text(d, "work_order_id", required=False)
        maintenance_id = _text(d, "maintenance_id", required=False) or stable_id(
            "maintenance", asset_id, work_order_id, at_ms)
        return cls(
            maintenance_id=maintenance_id,
            asset_id=asset_id,
            at_ms=at_ms,
            outcome=outcome,
            work_order_id=work_order_id,
            technician_id=_text(d, "technician_id", required=False),
            action=_text(d, "action", required=False),
            notes=_text(d, "notes", required=False),
            parts=tuple(parts),
            source=source,  # the verified origin, from the caller: never a field of the payload
        )

    def to_dict(self) -> dict[str, Any]:
        return {
            "maintenance_id": self.maintenance_id,
            "asset_id": self.asset_id,
            "completed_at": iso(self.at_ms),
            "outcome": self.outcome,
            "work_order_id": self.work_order_id,
            "technician_id": self.technician_id,
            "action": self.action,
            "notes": self.notes,
            "parts": list(self.parts),
            "source": self.source,
        }


WORK_ORDER_STATUSES = ("open", "scheduled", "in_progress")
_CHANGE_FIELDS = ("technician_id", "scheduled_start", "due_at", "priority", "status")


@dataclass(frozen=True, slots=True)
class WorkOrderChange:
    """A planner's change of one work order (`PATCH /api/work-orders/{id}`), applied at `effective_at`.

    Fields left None stay as they are. A technician or a start set by hand is
    a pin the plan keeps: the scheduler places the work order on that
    technician (and at that start) instead of choosing. `in_progress` pins the
    work where the plan had it. `seq` is the row's sequence number in
    `work_order_updates`, so a change read twice applies once.

    >>> c = WorkOrderChange.from_fields({"technician_id": "tech-2", "priority": 5}, work_order_id="wo1",
    ...     asset_id="pump-01", effective_at="2026-01-05T10:00:00Z", seq=7, by="ana")
    >>> c.technician_id, c.priority, c.at_ms, c.control_id == WorkOrderChange.from_fields(
    ...     {"technician_id": "tech-2"}, work_order_id="wo1", asset_id="pump-01", effective_at=0, seq=7).control_id
    ('tech-2', 5, 1767607200000, True)
    """

    work_order_id: str
    asset_id: str
    at_ms: int  # effective_at
    seq: int
    technician_id: str | None = None
    scheduled_start_ms: int | None = None
    due_at_ms: int | None = None
    priority: int | None = None
    status: str | None = None
    by: str = ""

    @property
    def control_id(self) -> str:
        return stable_id("work_order_change", self.work_order_id, self.seq)

    @classmethod
    def from_fields(cls, fields: dict[str, Any], *, work_order_id: str, asset_id: str, effective_at: Any, seq: int,
                    by: str = "") -> WorkOrderChange:
        """A change from the stored fields of a planner's update (checked again: the table is outside the flow)."""
        if not isinstance(fields, dict):
            raise ControlError(f"a work order change must be an object, got {type(fields).__name__}")
        unknown = sorted(set(fields) - set(_CHANGE_FIELDS))
        if unknown:
            raise ControlError(f"unknown work order fields: {describe(unknown)}")
        tech = _text(fields, "technician_id", required=False) or None
        status = _text(fields, "status", required=False).lower() or None
        if status is not None and status not in WORK_ORDER_STATUSES:
            raise ControlError(f"status must be one of {', '.join(WORK_ORDER_STATUSES)}, got {describe(status)}")
        prio = fields.get("priority")
        if prio is not None and (isinstance(prio, bool) or not isinstance(prio, int) or not 1 <= prio <= 5):
            raise ControlError(f"priority must be 1..5, got {describe(prio)}")
        start, due = fields.get("scheduled_start"), fields.get("due_at")
        return cls(
            work_order_id=work_order_id, asset_id=asset_id, at_ms=_time_ms(effective_at, "effective_at"),
            seq=int(seq), technician_id=tech,
            scheduled_start_ms=None if start is None else _time_ms(start, "scheduled_start"),
            due_at_ms=None if due is None else _time_ms(due, "due_at"),
            priority=prio, status=status, by=by,
        )

    def to_dict(self) -> dict[str, Any]:
        return {
            "control_id": self.control_id, "work_order_id": self.work_order_id, "asset_id": self.asset_id,
            "effective_at": iso(self.at_ms), "seq": self.seq, "technician_id": self.technician_id,
            "scheduled_start": None if self.scheduled_start_ms is None else iso(self.scheduled_start_ms),
            "due_at": None if self.due_at_ms is None else iso(self.due_at_ms),
            "priority": self.priority, "status": self.status, "by": self.by,
        }


Control = ReviewDecision | MaintenanceRecord | WorkOrderChange


@dataclass(frozen=True)
class ControlQueue:
    """One asset's controls waiting for its event time, and the ids of the last ones released (dedup)."""

    pending: tuple[Control, ...] = ()
    released: tuple[str, ...] = ()
    keep: int = 256


def hold(queue: ControlQueue | None, controls: list[Control] | tuple[Control, ...]) -> ControlQueue:
    """Queue controls not seen before, in (event time, id) order.

    >>> m = MaintenanceRecord("m1", "pump-01", at_ms=5)
    >>> q = hold(hold(None, [m]), [m]); len(q.pending)
    1
    """
    queue = queue or ControlQueue()
    seen = set(queue.released) | {c.control_id for c in queue.pending}
    new = [c for c in controls if c.control_id not in seen and not seen.add(c.control_id)]  # type: ignore[func-returns-value]
    if not new:
        return queue
    pending = tuple(sorted((*queue.pending, *new), key=lambda c: (c.at_ms, c.control_id)))
    return ControlQueue(pending, queue.released, queue.keep)


def release(queue: ControlQueue, until_ms: int | None) -> tuple[ControlQueue, list[Control]]:
    """The controls due by `until_ms` (all of them when None: the end of the stream)."""
    due = [c for c in queue.pending if until_ms is None or c.at_ms <= until_ms]
    if not due:
        return queue, []
    rest = queue.pending[len(due):]
    released = (*queue.released, *(c.control_id for c in due))[-queue.keep:]
    return ControlQueue(rest, released, queue.keep), due


def interleave(fb: Any, controls: list[Control]) -> list[Any]:
    """A closed batch of windows cut so that each control sits after the windows that end by its time.

    `fb` is a `FeatureBatch` (or None); controls are in time order.
    """
    if fb is None or len(fb) == 0:
        return list(controls)
    out: list[Any] = []
    start = 0
    for c in controls:
        cut = int(np.searchsorted(fb.window_end, c.at_ms, side="right"))
        if cut > start:
            out.append(slice_windows(fb, start, cut))
            start = cut
        out.append(c)
    if start < len(fb):
        out.append(fb if start == 0 else slice_windows(fb, start, len(fb)))
    return out


def slice_windows(fb: Any, a: int, b: int) -> Any:
    """Windows a..b of a `FeatureBatch`."""
    return type(fb)(fb.asset_id, fb.sensors, fb.window_start[a:b], fb.window_end[a:b], fb.values[a:b])
