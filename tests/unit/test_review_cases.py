import pickle
from datetime import timedelta

import pytest

from smart_maintenance.operators.judge.alarms import AlarmConfig, AlarmState, decide_case, queue_cases
from smart_maintenance.operators.judge.cases import TREND_POINTS, ReviewCase, case_id, close_case, fold_cases
from smart_maintenance.operators.notify import NotifyConfig, Rule, plan_notifications
from smart_maintenance.operators.records import Anomaly, ms_to_dt

MIN = 60_000
HOUR = 60 * MIN


def _a(minute: int, score: float = 0.65, severity: int = 2, sensor: str = "temp") -> Anomaly:
    start = ms_to_dt(minute * MIN)
    return Anomaly(f"an{minute}", "p1", start, start + timedelta(minutes=10), score, "needs_review", 0.5, severity,
                   (f"score {score}",), ((sensor, 1.0),))


def test_windows_less_than_a_gap_apart_join_one_case_with_its_summary():
    batch = [_a(0), _a(20, 0.8, 3, "vibration"), _a(60), _a(60 + 6 * 60 + 30)]  # the last starts 6h20 after 1:10
    case, out = fold_cases(None, "p1", batch, gap_ms=6 * HOUR)
    first, second = out
    assert (first.window_count, first.peak_score, first.severity) == (3, 0.8, 3)
    assert first.window_start == ms_to_dt(0) and first.window_end == ms_to_dt(70 * MIN)
    assert first.sensors == ("temp", "vibration")
    assert [s for _, s in first.trend] == [0.65, 0.8, 0.65]
    assert first.anomaly["anomaly_id"] == "an20"  # the peak window's record: an approval opens the alarm from it
    assert first.case_id == case_id("p1", 0) and first.opened
    assert second.window_count == 1 and second.case_id == case.case_id != first.case_id


def test_a_case_grows_across_batches_and_opens_once():
    case, out1 = fold_cases(None, "p1", [_a(0)])
    case, out2 = fold_cases(case, "p1", [_a(30), _a(90)])
    assert out1[0].opened and not out2[0].opened
    assert out2[0].case_id == out1[0].case_id and out2[0].window_count == 3


def test_trend_stays_small_and_keeps_the_peak():
    batch = [_a(i * 10, 0.6 + (0.3 if i == 77 else 0.0)) for i in range(200)]
    _, (c,) = fold_cases(None, "p1", batch)
    assert c.window_count == 200 and len(c.trend) <= TREND_POINTS
    assert max(s for _, s in c.trend) == pytest.approx(0.9)
    assert [t for t, _ in c.trend] == sorted(t for t, _ in c.trend)


def test_a_decision_closes_the_case_a_deferral_does_not():
    cfg = AlarmConfig(case_gap_ms=6 * HOUR)
    state, (c,) = queue_cases(None, "p1", [_a(0)], cfg)
    assert decide_case(state, c.case_id, "defer") is state
    assert decide_case(state, "another", "reject") is state
    closed = decide_case(state, c.case_id, "reject")
    assert closed.case is None
    _, (after,) = queue_cases(closed, "p1", [_a(20)], cfg)  # within the gap, but the case was decided
    assert after.case_id != c.case_id and after.opened
    assert close_case(None, "x", "approve") is None


def test_same_input_same_cases_and_state_pickles():
    batch = [_a(i * 45, 0.6 + i / 100) for i in range(30)]
    s1, o1 = queue_cases(AlarmState(), "p1", batch, AlarmConfig(case_gap_ms=HOUR))
    s2, o2 = queue_cases(AlarmState(), "p1", batch, AlarmConfig(case_gap_ms=HOUR))
    assert o1 == o2 and pickle.loads(pickle.dumps(s1)) == s1
    old = pickle.loads(pickle.dumps(AlarmState()))
    del old.__dict__["case"]  # a snapshot from before review cases
    s3, o3 = queue_cases(old, "p1", batch, AlarmConfig(case_gap_ms=HOUR))
    assert o3 == o1


def test_bad_gap_is_rejected():
    with pytest.raises(ValueError):
        fold_cases(None, "p1", [_a(0)], gap_ms=-1)
    with pytest.raises(ValueError):
        AlarmConfig(case_gap_ms=-1)


def test_one_notification_per_case_not_per_window():
    cfg = NotifyConfig(rules=(Rule(channels=("console",)),), rate_limit_per_hour=None, review_quiet_ms=0)
    case, out = fold_cases(None, "p1", [_a(0)])
    case, out2 = fold_cases(case, "p1", [_a(30), _a(60)])
    state, notes = None, []
    for c in (*out, *out2):
        state, ns = plan_notifications(state, c, site="north", cfg=cfg)
        notes += ns
    assert [(n.kind, n.subject_id) for n in notes] == [("review_needed", out[0].case_id)]
    assert "review case opened" in notes[0].title


def test_lone_anomaly_becomes_a_case_of_one_window():
    c = ReviewCase.from_anomaly(_a(5))
    assert (c.case_id, c.window_count, c.window_end) == ("an5", 1, ms_to_dt(15 * MIN))
