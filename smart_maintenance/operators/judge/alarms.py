"""Alarm episodes per asset and kind, with hysteresis.

A `machine` alarm opens on a confirmed anomaly and stays open while windows
keep scoring at or above the clear threshold; it clears after
`clear_windows` windows in a row under it (a stopped asset counts as under).
A `sensor_fault` alarm opens when sensor faults persist (k of n windows) and
clears after `clear_windows` healthy windows. Each change is emitted as an
`Alarm` state; its `alarm_id` comes from the asset, the kind and the window
that opened it, so replays and restarts reproduce it.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import Any

from smart_maintenance.operators.controls import (
    Control,
    MaintenanceRecord,
    ReviewDecision,
)
from smart_maintenance.operators.judge.cases import DEFAULT_GAP_MS, OpenCase, ReviewCase, close_case, fold_cases
from smart_maintenance.operators.judge.validation import Verdict
from smart_maintenance.operators.records import Alarm, Anomaly, dt_to_ms, ms_to_dt, stable_id


@dataclass(frozen=True)
class AlarmConfig:
    clear_threshold: float = 0.4
    clear_windows: int = 3
    case_gap_ms: int = DEFAULT_GAP_MS  # uncertain windows less than this apart join one review case

    def __post_init__(self) -> None:
        if self.clear_windows < 1:
            raise ValueError("clear_windows must be at least 1")
        if self.case_gap_ms < 0:
            raise ValueError("case_gap_ms must not be negative")


@dataclass(frozen=True)
class Episode:
    alarm_id: str
    kind: str
    opened_ms: int
    severity: int
    peak_score: float
    anomaly_count: int
    last_anomaly_id: str
    sensors: tuple[str, ...]
    reason: str
    quiet: int = 0  # windows in a row that count toward clearing


@dataclass(frozen=True)
class AlarmState:
    open: dict[str, Episode] = field(default_factory=dict)
    case: OpenCase | None = None  # the asset's review case that still takes uncertain windows


def _emit(asset_id: str, e: Episode, status: str, at_ms: int) -> Alarm:
    return Alarm(
        alarm_id=e.alarm_id,
        asset_id=asset_id,
        kind=e.kind,
        status=status,
        severity=e.severity,
        opened_at=ms_to_dt(e.opened_ms),
        updated_at=ms_to_dt(at_ms),
        cleared_at=ms_to_dt(at_ms) if status == "cleared" else None,
        peak_score=e.peak_score,
        anomaly_count=e.anomaly_count,
        last_anomaly_id=e.last_anomaly_id,
        sensors=e.sensors,
        reason=e.reason,
    )


def _opens(kind: str, v: Verdict) -> bool:
    if kind == "machine":
        return v.status == "confirmed"
    return v.fault_persistent


def _active(kind: str, v: Verdict, cfg: AlarmConfig) -> bool:
    """Does this window keep an open alarm of `kind` going?"""
    if kind == "machine":
        return v.running and v.status != "sensor_fault" and v.score >= cfg.clear_threshold
    # a faulty sensor on a machine that is also failing keeps its own alarm open
    return v.status == "sensor_fault" or (v.anomaly is not None and bool(v.anomaly.sensors))


def track_alarms(
    state: AlarmState | None, asset_id: str, verdicts: list[Verdict], cfg: AlarmConfig
) -> tuple[AlarmState, list[Alarm]]:
    """Fold window verdicts into the asset's alarm episodes; return the alarm states that changed."""
    if state is None:
        state = AlarmState()
    episodes = dict(state.open)
    out: list[Alarm] = []
    for v in verdicts:
        for kind in ("machine", "sensor_fault"):
            e = episodes.get(kind)
            a = v.anomaly
            if e is None:
                if _opens(kind, v) and a is not None:
                    e = Episode(
                        alarm_id=stable_id("alarm", asset_id, kind, v.window_start),
                        kind=kind,
                        opened_ms=v.window_end,
                        severity=a.severity,
                        peak_score=v.score,
                        anomaly_count=1,
                        last_anomaly_id=a.anomaly_id,
                        sensors=a.sensors if kind == "sensor_fault" else tuple(s for s, _ in a.contributions[:3]),
                        reason="; ".join(a.reasons),
                    )
                    episodes[kind] = e
                    out.append(_emit(asset_id, e, "open", v.window_end))
                continue
            if _active(kind, v, cfg):
                changed = False
                if a is not None and a.status in ("confirmed", "needs_review", "sensor_fault"):
                    sensors = e.sensors
                    if kind == "sensor_fault":
                        sensors = tuple(sorted(set(e.sensors) | set(a.sensors)))
                    changed = a.severity > e.severity or sensors != e.sensors
                    e = replace(
                        e,
                        severity=max(e.severity, a.severity),
                        peak_score=max(e.peak_score, v.score),
                        anomaly_count=e.anomaly_count + 1,
                        last_anomaly_id=a.anomaly_id,
                        sensors=sensors,
                    )
                episodes[kind] = replace(e, quiet=0)
                if changed:
                    out.append(_emit(asset_id, episodes[kind], "open", v.window_end))
                continue
            e = replace(e, quiet=e.quiet + 1)
            if e.quiet >= cfg.clear_windows:
                del episodes[kind]
                out.append(_emit(asset_id, e, "cleared", v.window_end))
            else:
                episodes[kind] = e
    return replace(state, open=episodes), out


# tuple[Anomaly, ...] once dataflows/steps.py stops reusing its `reviews` variable for the review cases
def reviews_needed(before: AlarmState | None, changes: list[Alarm], anomalies: list[Anomaly]) -> tuple[Any, ...]:
    """The `needs_review` anomalies that a person must look at: those outside an open machine alarm.

    Inside an open machine alarm an uncertain window asks nothing new: the
    alarm already says the machine is failing, and the window is counted in
    its episode. `before` is the asset's alarm state before `track_alarms`
    folded the batch, `changes` what it returned; `anomalies` are in window order.

    >>> from datetime import datetime, timezone
    >>> from types import SimpleNamespace as NS
    >>> t = lambda h: datetime(2024, 1, 1, h, tzinfo=timezone.utc)
    >>> opened = NS(kind="machine", status="open", updated_at=t(2))
    >>> [a.window_end.hour for a in reviews_needed(None, [opened], [NS(window_end=t(1)), NS(window_end=t(3))])]
    [1]
    """
    events = sorted((a.updated_at, a.status) for a in changes if a.kind == "machine")
    alarm_open = before is not None and "machine" in before.open
    out: list[Anomaly] = []
    i = 0
    for anomaly in anomalies:
        while i < len(events) and events[i][0] <= anomaly.window_end:
            alarm_open = events[i][1] == "open"
            i += 1
        if not alarm_open:
            out.append(anomaly)
    return tuple(out)


def clear_all(
    state: AlarmState | None, asset_id: str, at_ms: int, reason: str, work_order_id: str = ""
) -> tuple[AlarmState, list[Alarm]]:
    """Maintenance on the asset: its open alarms clear at `at_ms` (the repair, not the data, ended them).

    With `work_order_id`, only the alarm that work order was raised for (a repair of one fault leaves
    another open).
    """
    if state is None or not state.open:
        return state or AlarmState(), []
    hit = {k: e for k, e in state.open.items()
           if not work_order_id or stable_id("work_order", e.alarm_id) == work_order_id}
    out = [_emit(asset_id, replace(e, reason=f"{e.reason}; cleared: {reason}".strip("; ")), "cleared", at_ms)
           for _, e in sorted(hit.items())]
    return replace(state, open={k: e for k, e in state.open.items() if k not in hit}), out


def open_from_review(
    state: AlarmState | None, asset_id: str, anomaly: dict[str, Any]
) -> tuple[AlarmState, list[Alarm]]:
    """A person approved a `needs_review` anomaly: it opens a machine alarm (if none is open) as if confirmed.

    `anomaly` is the anomaly's record (`Anomaly.to_dict()`), as the review queue holds it.
    """
    state = state or AlarmState()
    if "machine" in state.open or not anomaly:
        return state, []
    start_ms = dt_to_ms(datetime.fromisoformat(anomaly["window_start"]))
    end_ms = dt_to_ms(datetime.fromisoformat(anomaly["window_end"]))
    sensors = tuple(c["sensor"] for c in anomaly.get("contributions", ())[:3])
    e = Episode(
        alarm_id=stable_id("alarm", asset_id, "machine", start_ms),
        kind="machine",
        opened_ms=end_ms,
        severity=int(anomaly.get("severity", 3)),
        peak_score=float(anomaly.get("score", 0.0)),
        anomaly_count=1,
        last_anomaly_id=str(anomaly.get("anomaly_id", "")),
        sensors=sensors,
        reason="approved by review: " + "; ".join(anomaly.get("reasons", ())),
    )
    return replace(state, open=dict(state.open) | {"machine": e}), [_emit(asset_id, e, "open", end_ms)]


def apply_control(state: AlarmState | None, control: Control) -> tuple[AlarmState | None, list[Alarm]]:
    """Fold a control into the asset's alarms: maintenance (unless cancelled) clears every open alarm; a review
    decision closes its case (approve and reject; defer keeps it open), and an approval opens a machine alarm
    from the case's peak window; anything else changes nothing."""
    if isinstance(control, MaintenanceRecord) and control.outcome != "cancelled":
        return clear_all(state, control.asset_id, control.at_ms, f"maintenance {control.outcome}",
                         control.work_order_id)
    if isinstance(control, ReviewDecision):
        changed: list[Alarm] = []
        if control.decision == "approve":
            state, changed = open_from_review(state, control.asset_id, control.anomaly)
        return decide_case(state, control.review_id, control.decision), changed
    return state, []


def queue_cases(state: AlarmState | None, asset_id: str, uncertain: list[Anomaly], cfg: AlarmConfig
                ) -> tuple[AlarmState | None, tuple[ReviewCase, ...]]:
    """Fold the batch's uncertain windows that need a person (see `reviews_needed`) into review cases."""
    if not uncertain:
        return state, ()
    state = state or AlarmState()
    case, changed = fold_cases(getattr(state, "case", None), asset_id, uncertain, cfg.case_gap_ms)
    return replace(state, case=case), changed


def decide_case(state: AlarmState | None, review_id: str, decision: str) -> AlarmState | None:
    """A decision reached the flow: an approved or rejected open case takes no more windows."""
    if state is None:
        return None
    case = getattr(state, "case", None)  # a snapshot from before review cases has none
    after = close_case(case, review_id, decision)
    return state if after is case else replace(state, case=after)
