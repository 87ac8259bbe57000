"""Maintenance KPIs over plain tables: what the `report` command shows, computed honestly.

Every function takes lists of dicts or pandas DataFrames with the columns of
the PostgreSQL tables of the same name (`alarms`, `work_orders`,
`maintenance_log`, `review_decisions`, `threshold_changes`, `predictions`)
and returns plain values. Times are aware UTC; the period is event time (the
time of the data), so a replay of last year's recordings reports last year.

Definitions (docs/reports.md says the same for readers of the report):

* alarms per asset-week = alarms opened in the period / (assets x weeks).
* false-positive rate from review cases = rejected / (approved + rejected), using
  each case's latest decision; deferred cases are not decided.
* false-positive rate from maintenance = `no_fault_found` / maintenance
  records that are not `cancelled` (a cancelled visit says nothing).
* FP rate before/after feedback: per asset, split decided reviews at the
  asset's first `threshold_changes` row: before = anomaly windows ending at or
  before the change (they were flagged under the old threshold), after = later.
* detection lead time = repair time - alarm opened, for machine alarms whose
  work order was closed by maintenance that found a fault (`repaired`,
  `replaced`, `adjusted`). The machine was still repairable then, so this is a
  lower bound of the warning before an actual failure. The forecast lead is
  the alarm's latest time-to-failure forecast (`failure_at`) - alarm opened.
* MTTR = mean of maintenance completed_at - work order created_at over work
  orders closed by maintenance (any outcome but `cancelled`): time to restore,
  waiting for a technician included.
* MTBF = mean time between consecutive repairs of the same asset; also the
  exposure estimate (asset-hours in the period / repairs in it), which exists
  as soon as there is one repair.

>>> alarms = [{"alarm_id": "a1", "asset_id": "p1", "kind": "machine", "opened_at": "2026-01-01T10:00Z"},
...           {"alarm_id": "a2", "asset_id": "p2", "kind": "machine", "opened_at": "2026-01-03T10:00Z"}]
>>> alarms_per_asset_week(alarms, n_assets=2, start="2026-01-01", end="2026-01-08")
1.0
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any, TypeAlias

import pandas as pd

REPAIR_OUTCOMES: tuple[str, ...] = ("repaired", "replaced", "adjusted")
"""Maintenance outcomes that confirm a real fault on the machine."""

_TIME_COLUMNS = ("opened_at", "updated_at", "cleared_at", "created_at", "due_at", "closed_at", "completed_at",
                 "window_end", "decided_at", "at", "made_at", "failure_at", "lo", "hi", "start_at", "end_at")

Table: TypeAlias = pd.DataFrame | Iterable[Mapping[str, Any]]


def frame(rows: Table | None, columns: Iterable[str] = ()) -> pd.DataFrame:
    """A DataFrame of `rows` with the known time columns as aware UTC timestamps.

    Missing `columns` are added empty, so callers can rely on them.

    >>> frame([{"at": "2026-01-01T10:00:00Z"}], columns=["asset_id"]).dtypes.astype(str).to_dict()
    {'at': 'datetime64[us, UTC]', 'asset_id': 'object'}
    """
    df = rows.copy() if isinstance(rows, pd.DataFrame) else pd.DataFrame(list(rows or []))
    for c in columns:
        if c not in df.columns:
            df[c] = pd.Series(dtype="datetime64[us, UTC]" if c in _TIME_COLUMNS else object)
    for c in df.columns:
        if c in _TIME_COLUMNS and not isinstance(df[c].dtype, pd.DatetimeTZDtype):
            df[c] = pd.to_datetime(df[c], utc=True, format="ISO8601").astype("datetime64[us, UTC]")
    return df


def _ts(t: datetime | str | pd.Timestamp) -> pd.Timestamp:
    ts = pd.Timestamp(t)
    return ts.tz_localize("UTC") if ts.tzinfo is None else ts.tz_convert("UTC")


@dataclass(frozen=True, slots=True)
class Rate:
    """`hits` out of `total`, e.g. rejected out of decided reviews.

    >>> str(Rate(1, 4)), str(Rate(0, 0)), Rate(1, 4).value
    ('25.0% (1 of 4)', 'n/a (none)', 0.25)
    """

    hits: int
    total: int

    @property
    def value(self) -> float | None:
        return self.hits / self.total if self.total else None

    def __str__(self) -> str:
        return f"{100 * self.hits / self.total:.1f}% ({self.hits} of {self.total})" if self.total else "n/a (none)"


def alarms_per_asset_week(
    alarms: Table, n_assets: int, start: datetime | str, end: datetime | str,
    kinds: Collection[str] | None = ("machine",),
) -> float | None:
    """Alarms of `kinds` (None: all) opened in [start, end], per asset and week; None for an empty period."""
    start_ts, end_ts = _ts(start), _ts(end)
    weeks: float = (end_ts - start_ts) / pd.Timedelta(days=7)
    if n_assets <= 0 or weeks <= 0:
        return None
    df = frame(alarms, ["opened_at", "kind"])
    if kinds is not None:
        df = df[df["kind"].isin(list(kinds))]
    n = int(((df["opened_at"] >= start_ts) & (df["opened_at"] <= end_ts)).sum())
    return n / (n_assets * weeks)


def latest_decisions(decisions: Table) -> pd.DataFrame:
    """Each review's latest decision (by `decided_at`, then `seq` when present)."""
    df = frame(decisions, ["review_id", "asset_id", "decision", "window_end", "decided_at"])
    order = ["decided_at", "seq"] if "seq" in df.columns else ["decided_at"]
    return df.sort_values(order, kind="stable").drop_duplicates("review_id", keep="last").reset_index(drop=True)


def _review_rate(df: pd.DataFrame) -> Rate:
    decided = df[df["decision"].isin(["approve", "reject"])]
    return Rate(int((decided["decision"] == "reject").sum()), len(decided))


def fp_rate_reviews(decisions: Table) -> Rate:
    """Rejected out of decided (approved or rejected) reviews; deferrals are undecided.

    >>> fp_rate_reviews([{"review_id": "r1", "decision": "defer", "decided_at": "2026-01-01T10:00Z"},
    ...                  {"review_id": "r1", "decision": "reject", "decided_at": "2026-01-01T11:00Z"},
    ...                  {"review_id": "r2", "decision": "approve", "decided_at": "2026-01-01T12:00Z"},
    ...                  {"review_id": "r3", "decision": "defer", "decided_at": "2026-01-01T12:00Z"}])
    Rate(hits=1, total=2)
    """
    return _review_rate(latest_decisions(decisions))


def fp_rate_outcomes(maintenance: Table) -> Rate:
    """`no_fault_found` out of maintenance records that were not cancelled.

    >>> fp_rate_outcomes([{"outcome": "repaired"}, {"outcome": "no_fault_found"}, {"outcome": "cancelled"}])
    Rate(hits=1, total=2)
    """
    df = frame(maintenance, ["outcome"])
    done = df[df["outcome"] != "cancelled"]
    return Rate(int((done["outcome"] == "no_fault_found").sum()), len(done))


@dataclass(frozen=True)
class FeedbackEffect:
    """False-positive share of decided reviews before and after each asset's first threshold change.

    `per_asset` has columns asset_id, first_change_at, changes, before, after
    (the last two are `Rate`s); `before` and `after` sum them over those assets.
    """

    per_asset: pd.DataFrame
    before: Rate
    after: Rate


def fp_before_after(decisions: Table, threshold_changes: Table) -> FeedbackEffect:
    """Split each asset's decided reviews at its first threshold change (by the anomaly's window end).

    >>> d = [{"review_id": "r1", "asset_id": "p1", "decision": "reject", "window_end": "2026-01-01T10:00Z",
    ...       "decided_at": "2026-01-01T11:00Z"},
    ...      {"review_id": "r2", "asset_id": "p1", "decision": "approve", "window_end": "2026-01-02T10:00Z",
    ...       "decided_at": "2026-01-02T11:00Z"}]
    >>> t = [{"asset_id": "p1", "at": "2026-01-01T10:00Z"}]
    >>> e = fp_before_after(d, t); str(e.before), str(e.after)
    ('100.0% (1 of 1)', '0.0% (0 of 1)')
    """
    latest = latest_decisions(decisions)
    changes = frame(threshold_changes, ["asset_id", "at"])
    rows = []
    for asset_id, group in changes.groupby("asset_id", sort=True):
        first = group["at"].min()
        mine = latest[latest["asset_id"] == asset_id]
        rows.append({
            "asset_id": asset_id,
            "first_change_at": first,
            "changes": len(group),
            "before": _review_rate(mine[mine["window_end"] <= first]),
            "after": _review_rate(mine[mine["window_end"] > first]),
        })
    per_asset = pd.DataFrame(rows, columns=["asset_id", "first_change_at", "changes", "before", "after"])

    def total(col: str) -> Rate:
        return Rate(sum(r.hits for r in per_asset[col]), sum(r.total for r in per_asset[col]))

    return FeedbackEffect(per_asset, total("before"), total("after"))


def _maintenance_by_order(work_orders: pd.DataFrame, maintenance: pd.DataFrame) -> pd.DataFrame:
    """Work orders joined to the maintenance that closed them (by either side's reference)."""
    m = maintenance[["maintenance_id", "work_order_id", "completed_at", "outcome"]]
    w = work_orders[["work_order_id", "asset_id", "alarm_id", "kind", "created_at", "maintenance_id"]]
    by_order = w.merge(m.drop(columns="maintenance_id"), on="work_order_id", how="inner")
    by_id = w.merge(m.drop(columns="work_order_id"), on="maintenance_id", how="inner")
    both = pd.concat([by_order, by_id], ignore_index=True)
    both = both[both["outcome"] != "cancelled"]
    # the first maintenance that closed the order
    return both.sort_values("completed_at", kind="stable").drop_duplicates("work_order_id").reset_index(drop=True)


_WO = ["work_order_id", "asset_id", "alarm_id", "kind", "created_at", "maintenance_id"]
_ML = ["maintenance_id", "asset_id", "work_order_id", "completed_at", "outcome"]


def repair_times(work_orders: Table, maintenance: Table) -> pd.DataFrame:
    """Per closed work order: created_at, completed_at, outcome and `hours` between them.

    >>> w = [{"work_order_id": "w1", "asset_id": "p1", "alarm_id": "a1", "kind": "repair",
    ...       "created_at": "2026-01-01T10:00Z", "maintenance_id": None}]
    >>> m = [{"maintenance_id": "m1", "asset_id": "p1", "work_order_id": "w1",
    ...       "completed_at": "2026-01-01T16:00Z", "outcome": "repaired"}]
    >>> repair_times(w, m)["hours"].tolist()
    [6.0]
    """
    df = _maintenance_by_order(frame(work_orders, _WO), frame(maintenance, _ML))
    df["hours"] = (df["completed_at"] - df["created_at"]).dt.total_seconds() / 3600.0
    return df


def mttr_hours(work_orders: Table, maintenance: Table) -> float | None:
    """Mean time to restore: work order raised -> maintenance completed, in hours (None without any)."""
    hours = repair_times(work_orders, maintenance)["hours"]
    return float(hours.mean()) if len(hours) else None


def detection_lead_times(alarms: Table, work_orders: Table, maintenance: Table,
                         predictions: Table | None = None) -> pd.DataFrame:
    """Per machine alarm: hours from opening to the repair of a confirmed fault, and to the forecast failure.

    Columns: alarm_id, asset_id, opened_at, repaired_at, lead_h (None when no
    repair confirmed a fault yet), failure_at, forecast_lead_h (from the latest
    forecast made before the repair). Alarms that maintenance found to be no
    fault are left out.

    >>> a = [{"alarm_id": "a1", "asset_id": "p1", "kind": "machine", "opened_at": "2026-01-01T10:00Z"}]
    >>> w = [{"work_order_id": "w1", "asset_id": "p1", "alarm_id": "a1", "kind": "repair",
    ...       "created_at": "2026-01-01T10:05Z", "maintenance_id": None}]
    >>> m = [{"maintenance_id": "m1", "asset_id": "p1", "work_order_id": "w1",
    ...       "completed_at": "2026-01-02T10:00Z", "outcome": "replaced"}]
    >>> p = [{"alarm_id": "a1", "made_at": "2026-01-01T12:00Z", "failure_at": "2026-01-03T10:00Z"}]
    >>> detection_lead_times(a, w, m, p)[["lead_h", "forecast_lead_h"]].values.tolist()
    [[24.0, 48.0]]
    """
    al = frame(alarms, ["alarm_id", "asset_id", "kind", "opened_at"])
    al = al[al["kind"] == "machine"][["alarm_id", "asset_id", "opened_at"]]
    closed = _maintenance_by_order(frame(work_orders, _WO), frame(maintenance, _ML))
    false_alarms = set(closed.loc[closed["outcome"] == "no_fault_found", "alarm_id"])
    repairs = (closed[closed["outcome"].isin(REPAIR_OUTCOMES)].groupby("alarm_id")["completed_at"].min()
               .rename("repaired_at"))
    out = al[~al["alarm_id"].isin(false_alarms)].merge(repairs, left_on="alarm_id", right_index=True, how="left")
    out["lead_h"] = (out["repaired_at"] - out["opened_at"]).dt.total_seconds() / 3600.0
    pred = frame(predictions, ["alarm_id", "made_at", "failure_at"])
    pred = pred.merge(out[["alarm_id", "repaired_at"]], on="alarm_id")
    pred = pred[pred["repaired_at"].isna() | (pred["made_at"] <= pred["repaired_at"])]
    latest = pred.sort_values("made_at", kind="stable").drop_duplicates("alarm_id", keep="last")
    out = out.merge(latest[["alarm_id", "failure_at"]], on="alarm_id", how="left")
    out["forecast_lead_h"] = (out["failure_at"] - out["opened_at"]).dt.total_seconds() / 3600.0
    return out.reset_index(drop=True)


@dataclass(frozen=True, slots=True)
class Mtbf:
    """Mean time between failures, two ways (hours; None when there is too little history)."""

    between_repairs_h: float | None  # mean gap between consecutive repairs of one asset
    gaps: int  # how many such gaps
    exposure_h: float | None  # asset-hours in the period / repairs in it
    repairs: int


def mtbf(maintenance: Table, n_assets: int, start: datetime | str, end: datetime | str) -> Mtbf:
    """MTBF from the repairs (`REPAIR_OUTCOMES`) completed in [start, end].

    >>> m = [{"asset_id": "p1", "completed_at": "2026-01-01T00:00Z", "outcome": "repaired"},
    ...      {"asset_id": "p1", "completed_at": "2026-01-03T00:00Z", "outcome": "replaced"},
    ...      {"asset_id": "p2", "completed_at": "2026-01-02T00:00Z", "outcome": "no_fault_found"}]
    >>> mtbf(m, n_assets=2, start="2026-01-01", end="2026-01-04")
    Mtbf(between_repairs_h=48.0, gaps=1, exposure_h=72.0, repairs=2)
    """
    start_ts, end_ts = _ts(start), _ts(end)
    df = frame(maintenance, ["asset_id", "completed_at", "outcome"])
    df = df[df["outcome"].isin(REPAIR_OUTCOMES) & (df["completed_at"] >= start_ts) & (df["completed_at"] <= end_ts)]
    gaps = (df.sort_values("completed_at").groupby("asset_id")["completed_at"].diff().dropna()
            .dt.total_seconds() / 3600.0)
    hours = (end_ts - start_ts).total_seconds() / 3600.0
    return Mtbf(
        between_repairs_h=float(gaps.mean()) if len(gaps) else None,
        gaps=len(gaps),
        exposure_h=n_assets * hours / len(df) if len(df) and hours > 0 else None,
        repairs=len(df),
    )


def health_score(open_severity: int = 0, sensor_fault_open: bool = False, ttf_hours: float | None = None,
                 recent_anomalies: int = 0) -> int:
    """A simple 0..100 health score of one asset (100 = nothing to worry about).

    100, minus 12 x the highest severity of its open machine alarms, minus 10
    with an open sensor-fault alarm, minus 25 when failure is forecast within
    24 h (10 within 72 h), minus 2 per confirmed anomaly in the last 24 h of the
    period (at most 20); never below 0.

    >>> health_score(), health_score(open_severity=4, ttf_hours=30.0), health_score(5, True, 2.0, 30)
    (100, 42, 0)
    """
    score = 100 - 12 * open_severity - (10 if sensor_fault_open else 0) - min(20, 2 * recent_anomalies)
    if ttf_hours is not None:
        score -= 25 if ttf_hours <= 24 else 10 if ttf_hours <= 72 else 0
    return max(0, score)


def median(values: Iterable[float | None]) -> float | None:
    """The median of the known values, None without any.

    >>> median([3.0, None, 1.0, float("nan")]), median([])
    (2.0, None)
    """
    s = pd.Series([v for v in values if v is not None], dtype=float).dropna()
    return float(s.median()) if len(s) else None
