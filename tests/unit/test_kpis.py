"""Maintenance KPIs on plain tables: exact values, edge cases, and how rows are linked."""

from __future__ import annotations

import doctest

import pandas as pd
import pytest

from smart_maintenance.operators import kpis
from smart_maintenance.operators.kpis import Rate


def t(hours: float) -> str:
    return (pd.Timestamp("2026-01-05T00:00Z") + pd.Timedelta(hours=hours)).isoformat()


def test_doctests() -> None:
    assert doctest.testmod(kpis).failed == 0


def test_alarms_per_asset_week_counts_the_period_and_kinds() -> None:
    alarms = [{"alarm_id": f"a{i}", "kind": k, "opened_at": t(h)}
              for i, (k, h) in enumerate([("machine", -1), ("machine", 0), ("machine", 100), ("sensor_fault", 50),
                                          ("machine", 168), ("machine", 169)])]
    # 3 machine alarms in [0 h, 168 h] on 4 assets over one week
    assert kpis.alarms_per_asset_week(alarms, 4, t(0), t(168)) == pytest.approx(0.75)
    assert kpis.alarms_per_asset_week(alarms, 4, t(0), t(168), kinds=None) == pytest.approx(1.0)
    assert kpis.alarms_per_asset_week(alarms, 0, t(0), t(168)) is None
    assert kpis.alarms_per_asset_week([], 3, t(5), t(5)) is None
    assert kpis.alarms_per_asset_week([], 3, t(0), t(84)) == 0.0


def test_review_rate_uses_each_reviews_latest_decision() -> None:
    decisions = pd.DataFrame([
        {"seq": 1, "review_id": "r1", "decision": "approve", "decided_at": t(1)},
        {"seq": 2, "review_id": "r1", "decision": "reject", "decided_at": t(1)},  # same time: seq decides
        {"seq": 3, "review_id": "r2", "decision": "reject", "decided_at": t(3)},
        {"seq": 4, "review_id": "r2", "decision": "approve", "decided_at": t(4)},
        {"seq": 5, "review_id": "r3", "decision": "defer", "decided_at": t(5)},
    ])
    assert kpis.fp_rate_reviews(decisions) == Rate(1, 2)
    assert kpis.fp_rate_reviews([]) == Rate(0, 0) and Rate(0, 0).value is None


def test_outcome_rate_ignores_cancelled_visits() -> None:
    m = [{"outcome": o} for o in ("repaired", "no_fault_found", "no_fault_found", "cancelled", "replaced")]
    assert kpis.fp_rate_outcomes(m) == Rate(2, 4)
    assert str(kpis.fp_rate_outcomes(m)) == "50.0% (2 of 4)"


def test_fp_before_after_splits_each_asset_at_its_first_change() -> None:
    d = [{"review_id": f"r{i}", "asset_id": a, "decision": dec, "window_end": t(h), "decided_at": t(h + 1)}
         for i, (a, dec, h) in enumerate([
             ("p1", "reject", 1), ("p1", "reject", 2), ("p1", "approve", 3), ("p1", "reject", 10),
             ("p1", "approve", 11), ("p1", "approve", 12), ("p2", "reject", 1), ("p2", "approve", 20),
             ("p3", "reject", 5)])]  # p3 never had a threshold change: not in the split
    changes = [{"asset_id": "p1", "at": t(2)}, {"asset_id": "p1", "at": t(10)}, {"asset_id": "p2", "at": t(30)}]
    e = kpis.fp_before_after(d, changes)
    rows = {r.asset_id: r for r in e.per_asset.itertuples()}
    assert set(rows) == {"p1", "p2"}
    assert rows["p1"].before == Rate(2, 2) and rows["p1"].after == Rate(1, 4) and rows["p1"].changes == 2
    assert rows["p2"].before == Rate(1, 2) and rows["p2"].after == Rate(0, 0)
    assert e.before == Rate(3, 4) and e.after == Rate(1, 4)
    empty = kpis.fp_before_after(d, [])
    assert empty.per_asset.empty and empty.before == Rate(0, 0)


WORK = [
    {"work_order_id": "w1", "asset_id": "p1", "alarm_id": "a1", "kind": "repair", "created_at": t(1),
     "maintenance_id": None},
    {"work_order_id": "w2", "asset_id": "p1", "alarm_id": "a2", "kind": "repair", "created_at": t(50),
     "maintenance_id": "m2"},  # linked from the work order's side only
    {"work_order_id": "w3", "asset_id": "p2", "alarm_id": "a3", "kind": "repair", "created_at": t(10),
     "maintenance_id": None},
    {"work_order_id": "w4", "asset_id": "p2", "alarm_id": "a4", "kind": "repair", "created_at": t(20),
     "maintenance_id": None},  # still open
]
MAINT = [
    {"maintenance_id": "m1", "asset_id": "p1", "work_order_id": "w1", "completed_at": t(5), "outcome": "repaired"},
    {"maintenance_id": "m2", "asset_id": "p1", "work_order_id": "", "completed_at": t(60), "outcome": "replaced"},
    {"maintenance_id": "m3", "asset_id": "p2", "work_order_id": "w3", "completed_at": t(12),
     "outcome": "no_fault_found"},
    {"maintenance_id": "m4", "asset_id": "p2", "work_order_id": "w4", "completed_at": t(22), "outcome": "cancelled"},
]
ALARMS = [{"alarm_id": a, "asset_id": p, "kind": k, "opened_at": t(h)}
          for a, p, k, h in [("a1", "p1", "machine", 0), ("a2", "p1", "machine", 48), ("a3", "p2", "machine", 9),
                             ("a4", "p2", "machine", 19), ("a5", "p2", "sensor_fault", 30)]]


def test_mttr_links_maintenance_either_way_and_skips_cancelled() -> None:
    r = kpis.repair_times(WORK, MAINT).set_index("work_order_id")
    assert r["hours"].to_dict() == {"w1": 4.0, "w3": 2.0, "w2": 10.0}
    assert kpis.mttr_hours(WORK, MAINT) == pytest.approx(16 / 3)
    assert kpis.mttr_hours(WORK, []) is None


def test_lead_times_only_for_confirmed_faults() -> None:
    preds = [{"alarm_id": "a1", "made_at": t(1), "failure_at": t(30)},
             {"alarm_id": "a1", "made_at": t(4), "failure_at": t(20)},  # latest before the repair at 5 h
             {"alarm_id": "a1", "made_at": t(6), "failure_at": t(90)},  # after the repair: ignored
             {"alarm_id": "a4", "made_at": t(20), "failure_at": t(43)}]
    lead = kpis.detection_lead_times(ALARMS, WORK, MAINT, preds).set_index("alarm_id")
    assert sorted(lead.index) == ["a1", "a2", "a4"]  # a3 was no fault; a5 is a sensor fault
    assert lead.loc["a1", "lead_h"] == 5.0 and lead.loc["a1", "forecast_lead_h"] == 20.0
    assert lead.loc["a2", "lead_h"] == 12.0 and pd.isna(lead.loc["a2", "forecast_lead_h"])
    assert pd.isna(lead.loc["a4", "lead_h"]) and lead.loc["a4", "forecast_lead_h"] == 24.0  # cancelled: no repair
    assert kpis.median(lead["lead_h"]) == 8.5


def test_mtbf_between_repairs_and_by_exposure() -> None:
    m = kpis.mtbf(MAINT, n_assets=2, start=t(0), end=t(100))
    assert m == kpis.Mtbf(between_repairs_h=55.0, gaps=1, exposure_h=100.0, repairs=2)
    assert kpis.mtbf([], 2, t(0), t(100)) == kpis.Mtbf(None, 0, None, 0)
    assert kpis.mtbf(MAINT, 2, t(6), t(100)).repairs == 1  # the first repair is before the period


@pytest.mark.parametrize(("args", "score"), [
    ({}, 100), ({"open_severity": 3}, 64), ({"sensor_fault_open": True}, 90), ({"ttf_hours": 24.0}, 75),
    ({"ttf_hours": 72.0}, 90), ({"ttf_hours": 500.0}, 100), ({"recent_anomalies": 50}, 80),
    ({"open_severity": 5, "ttf_hours": 1.0, "recent_anomalies": 10}, 0),
])
def test_health_score(args: dict, score: int) -> None:
    assert kpis.health_score(**args) == score


def test_frame_accepts_rows_and_frames_alike() -> None:
    rows = [{"alarm_id": "a", "opened_at": "2026-01-05T10:00:00+01:00"}]
    a, b = kpis.frame(rows), kpis.frame(pd.DataFrame(rows))
    assert a["opened_at"][0] == b["opened_at"][0] == pd.Timestamp("2026-01-05T09:00Z")
    assert list(kpis.frame(None, ["kind", "at"]).columns) == ["kind", "at"]
