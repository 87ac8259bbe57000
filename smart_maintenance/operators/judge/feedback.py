"""What people tell the flow changes what it will flag: feedback-learned thresholds, audited.

A rejected review, or maintenance that found no fault, is a labelled false
positive: the asset's open threshold rises by `review_step` (up to
`max_open`). An approved review lowers it by half a step (never under the
configured threshold). Each change becomes a `threshold_changes` record, so
the audit trail says who or what moved it and when. Deciding again on the
same review (`review reject --force` after an approval, or `defer`) first
takes back what the earlier decision did: the threshold ends as if only the
last decision had been made.

    >>> from smart_maintenance.operators.controls import ReviewDecision
    >>> from smart_maintenance.operators.judge.validation import ValidationConfig
    >>> d = ReviewDecision("a1", "pump-01", "reject", at_ms=0, decided_by="ana", note="valve test")
    >>> state, changes = apply_control(None, d, ValidationConfig())
    >>> changes[0]["old_threshold"], changes[0]["new_threshold"], changes[0]["cause"]
    (0.6, 0.65, 'review rejected')
"""

from __future__ import annotations

from typing import Any

from smart_maintenance.operators.controls import (
    Control,
    MaintenanceRecord,
    ReviewDecision,
    WorkOrderChange,
)
from smart_maintenance.operators.judge.validation import (
    ValidationConfig,
    ValidationState,
    apply_review,
)
from smart_maintenance.operators.records import iso, stable_id


def _change_record(asset_id: str, state: ValidationState, control_id: str, cause: str, note: str) -> dict[str, Any]:
    c = state.threshold_log[-1]
    return {
        "change_id": stable_id("threshold", asset_id, control_id),
        "asset_id": asset_id,
        "at": iso(c.at_ms),
        "old_threshold": c.before,
        "new_threshold": c.after,
        "cause": cause,
        "control_id": control_id,
        "note": note,
    }


def apply_control(
    state: ValidationState | None, control: Control, cfg: ValidationConfig
) -> tuple[ValidationState, list[dict[str, Any]]]:
    """Fold a review decision or a maintenance record into the asset's validation state."""
    state = state or ValidationState()
    if isinstance(control, ReviewDecision):
        if control.decision == "defer" and not any(c.anomaly_id == control.review_id for c in state.threshold_log):
            return state, []  # nothing decided before: nothing to take back
        approved = {"approve": True, "reject": False, "defer": None}[control.decision]
        state = apply_review(state, approved=approved, anomaly_id=control.review_id, at_ms=control.at_ms, cfg=cfg)
        cause = {True: "review approved", False: "review rejected", None: "review deferred"}[approved]
        return state, [_change_record(control.asset_id, state, control.control_id, cause, control.note)]
    if isinstance(control, MaintenanceRecord):
        changes = []
        if control.outcome == "no_fault_found":
            state = apply_review(state, approved=False, anomaly_id=control.maintenance_id, at_ms=control.at_ms, cfg=cfg)
            changes.append(_change_record(control.asset_id, state, control.control_id, "no fault found", control.notes))
        if control.rebaseline:  # a changed machine: persistence and sensor-health history start again
            state = ValidationState(open_offset=state.open_offset, threshold_log=state.threshold_log)
        return state, changes
    if isinstance(control, WorkOrderChange):
        return state, []  # a planner's change of work says nothing of the asset's condition
    raise TypeError(f"not a control: {type(control).__name__}")
