import pickle

import numpy as np
import pytest

from smart_maintenance.operators.predict.ttf import (
    TtfParams,
    clean_history,
    estimate_ttf,
    first_crossing,
    prophet_ttf,
    trend_ttf,
)

H = 3_600_000
WEEK = 7 * 24 * H


def wear(remaining_h: float, sign: float = 1.0, n: int = 288, seed: int = 0):
    """A day of 5-minute window means: healthy, then the simulator's accelerating wear from 6 to 11 (or 6 to 1)."""
    ts = np.arange(n, dtype=np.int64) * 300_000
    fail = int(ts[-1] + remaining_h * H)
    p = np.clip((ts - (fail - 24 * H)) / (24 * H), 0, None)
    shape = (np.exp(3 * p) - 1) / (np.exp(3) - 1)
    values = 6 + sign * (5 * shape + np.random.default_rng(seed).normal(0, 0.3, n))
    return ts, values, fail


@pytest.mark.parametrize("sign, direction", [(1.0, "above"), (-1.0, "below")])
def test_prophet_finds_the_crossing_of_accelerating_wear(sign, direction):
    ts, v, fail = wear(6.0, sign)
    e = prophet_ttf(ts, v, 6 + 5 * sign, direction, horizon_ms=WEEK)
    assert e.method == "prophet" and e.inputs["transform"] == "log_deviation"
    assert abs(e.failure_at_ms - fail) < 0.25 * 6 * H  # within 1.5 h of 6 h to go
    assert e.lo_ms <= fail <= e.hi_ms
    assert e.inputs["n_points"] == 288 and e.horizon_ms == 3 * (ts[-1] - ts[0])  # capped at 3x the span


def test_prophet_is_deterministic_and_restores_the_global_rng():
    ts, v, _ = wear(6.0, seed=1)
    np.random.seed(123)
    before = np.random.get_state()[1].copy()
    a = prophet_ttf(ts, v, 11.0, "above", horizon_ms=WEEK)
    assert (np.random.get_state()[1] == before).all()
    np.random.seed(99)  # the caller's RNG must not matter
    b = prophet_ttf(ts, v, 11.0, "above", horizon_ms=WEEK)
    assert (a.failure_at_ms, a.lo_ms, a.hi_ms, a.inputs) == (b.failure_at_ms, b.lo_ms, b.hi_ms, b.inputs)


def test_a_flat_series_never_fails_within_the_horizon():
    ts = np.arange(288, dtype=np.int64) * 300_000
    v = 2.0 + np.random.default_rng(2).normal(0, 0.3, 288)
    e = estimate_ttf(ts, v, 11.0, "above", horizon_ms=WEEK)
    assert (e.method, e.failure_at_ms, e.hi_ms) == ("prophet", None, None)
    t = trend_ttf(ts[-20:], v[-20:], 11.0, "above", horizon_ms=WEEK)
    assert t.method.startswith("trend_") and t.failure_at_ms is None


def test_short_histories_use_the_trend_and_say_so():
    ts = np.arange(20, dtype=np.int64) * 300_000  # 95 minutes: too short for Prophet
    v = 3.0 - 0.5 * (ts / H) + np.random.default_rng(3).normal(0, 0.02, 20)  # falls 0.5 per hour
    e = estimate_ttf(ts, v, 1.0, "below", horizon_ms=WEEK)  # reaches 1.0 at 4 h
    assert e.method == "trend_linear"
    assert abs(e.failure_at_ms - 4 * H) < 0.1 * H
    assert e.lo_ms <= 4 * H <= e.hi_ms
    assert estimate_ttf(ts[:3], v[:3], 1.0, "below", horizon_ms=WEEK).method == "insufficient_history"


def test_already_beyond_the_threshold_is_failure_now():
    ts = np.arange(60, dtype=np.int64) * 300_000
    v = np.r_[np.full(57, 5.0), 11.5, 11.2, 11.4]
    e = estimate_ttf(ts, v, 11.0, "above", horizon_ms=WEEK)
    assert (e.method, e.failure_at_ms, e.lo_ms, e.hi_ms) == ("observed", ts[-1], ts[-1], ts[-1])


def test_crossings_bins_and_arguments():
    assert first_crossing(np.array([0, 10, 20]), np.array([3.0, 2.0, 0.0]), 1.0, "below") == 15
    assert first_crossing(np.array([0, 10]), np.array([0.0, 0.5]), 1.0, "above") is None
    t, v = clean_history(np.arange(1000) * 10, np.arange(1000.0), 100)
    assert len(t) == 100 and v[0] == 4.5 and t[-1] == 9945
    with pytest.raises(ValueError, match="direction"):
        trend_ttf(t, v, 1.0, "up", horizon_ms=H)  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        TtfParams(min_prophet_points=2, min_trend_points=4)
    assert pickle.loads(pickle.dumps(TtfParams())) == TtfParams()


@pytest.mark.parametrize("daily", [False, True])
def test_the_lean_prophet_builds_prophets_component_matrix_and_forecast(daily: bool) -> None:
    import pandas as pd
    from prophet import Prophet

    from smart_maintenance.operators.predict.ttf import _quiet_prophet

    df = pd.DataFrame({"ds": pd.date_range("2026-01-01", periods=600, freq="10min"),
                       "y": np.sin(np.arange(600) / 20)})
    out = []
    for cls in (Prophet, _quiet_prophet()):
        m = cls(daily_seasonality=daily, weekly_seasonality=False, yearly_seasonality=False, uncertainty_samples=50)
        m.fit(df, seed=0)
        *_, component_cols, modes = m.make_all_seasonality_features(m.setup_dataframe(df.copy()))
        np.random.seed(3)
        out.append((component_cols, modes, m.predict(df.iloc[:50])))
    (cc, modes, fc), (lean_cc, lean_modes, lean_fc) = out
    assert cc.equals(lean_cc) and list(cc.dtypes) == list(lean_cc.dtypes) and modes == lean_modes
    assert fc.equals(lean_fc)
