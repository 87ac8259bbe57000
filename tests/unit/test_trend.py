"""Evidence that builds up over hours: a slow fault alarms before any one window is far out."""

from __future__ import annotations

import pickle

import numpy as np
import pytest

from smart_maintenance.operators.detect.detectors import DetectConfig, detect
from smart_maintenance.operators.detect.trend import TrendConfig, TrendState, trend_scores
from smart_maintenance.operators.judge.validation import ValidationConfig, validate
from smart_maintenance.operators.profile import AssetProfile
from smart_maintenance.operators.records import FeatureBatch

MIN = 60_000
HOUR = 60 * MIN
CFG = TrendConfig()


def _fold(t2: list[float], window_ms: int, running: list[bool] | None = None, state: TrendState | None = None):
    state = state or TrendState()
    run = np.ones(len(t2), bool) if running is None else np.array(running)
    return state, trend_scores(state, np.array(t2), run, np.ones(len(t2), bool), window_ms, CFG)


def test_a_lasting_rise_over_the_assets_own_level_is_decisive_and_its_usual_level_is_not() -> None:
    # an asset whose fit is a little tight: its T² sits at 10 for a day; that is its normal, not a fault
    _, quiet = _fold([10.0] * 300, 5 * MIN)
    assert quiet.max() == 0.0
    # the same asset, then six times its usual level for hours: decisive (0.9) after `decision` hour-units
    state, s = _fold([10.0] * 300 + [60.0] * 36, 5 * MIN)
    first = int(np.argmax(s >= 0.9))
    assert s[:300].max() == 0.0 and 300 < first
    assert (first - 300 + 1) * 5 * MIN == pytest.approx(CFG.decision / (6.0 - CFG.allowance) * HOUR, abs=5 * MIN)


def test_the_same_hours_give_the_same_score_whatever_the_window_length() -> None:
    ten = [1.0] * 24 * 6 + [6.0] * 6 * 6  # a day at its level, then six hours at six times it: 10-minute windows
    thirty = [1.0] * 24 * 2 + [6.0] * 6 * 2  # the same in 30-minute windows
    assert _fold(ten, 10 * MIN)[1][-1] == pytest.approx(_fold(thirty, 30 * MIN)[1][-1], abs=1e-9)


def test_the_evidence_holds_through_a_stop_and_a_spike_alone_adds_little() -> None:
    state, s = _fold([1.0] * 100 + [7.0] * 24, 10 * MIN)
    held = s[-1]
    _, after = _fold([0.0] * 30, 10 * MIN, running=[False] * 30, state=state)
    assert held > 0.6 and (after == held).all()  # wear does not heal while the machine stands
    _, spiked = _fold([1.0] * 100 + [5000.0] + [1.0] * 5, 10 * MIN)
    assert spiked.max() < 0.5  # one window counts as at most `clip` times the usual level


def test_trend_state_pickles_and_the_config_rejects_nonsense() -> None:
    state, s = _fold([1.0] * 50 + [6.0] * 20, 10 * MIN)
    again = pickle.loads(pickle.dumps(state))
    assert trend_scores(again, np.array([6.0]), np.ones(1, bool), np.ones(1, bool), 10 * MIN, CFG)[0] == \
        trend_scores(state, np.array([6.0]), np.ones(1, bool), np.ones(1, bool), 10 * MIN, CFG)[0]
    for bad in ({"allowance": 0.0}, {"clip": 3.0}, {"cap": 1.0}, {"span_ms": 0}, {"min_reference": 0}):
        with pytest.raises(ValueError):
            TrendConfig(**bad)


SENSORS = ("current", "flow", "pressure", "temp")


def _asset(n: int, wear_from: int, seed: int = 0) -> FeatureBatch:
    """5-minute windows of four sensors that follow one wandering load; from `wear_from` on, current and temp
    creep up together, slowly at first (the simulator's wear shape: expm1(3p) / expm1(3))."""
    rng = np.random.default_rng(seed)
    load = np.convolve(rng.normal(0, 1, n + 20), np.ones(20) / 20, mode="valid")[:n]
    p = np.clip((np.arange(n) - wear_from) / (n - wear_from), 0.0, 1.0)
    wear = np.expm1(3 * p) / np.expm1(3)
    means = np.stack([40 + 4 * load + 6 * wear, 100 + 10 * load, 6 - 0.5 * load, 60 + 2 * load + 8 * wear], axis=1)
    means += rng.normal(0, 1, (n, 4)) * np.array([0.5, 1.0, 0.08, 0.4])
    stds = np.array([1.0, 3.0, 0.2, 0.5])
    v = np.zeros((n, len(SENSORS), 8))
    v[:, :, 0], v[:, :, 1] = means, stds
    v[:, :, 2], v[:, :, 3] = means - 2 * stds, means + 2 * stds
    v[:, :, 5], v[:, :, 6], v[:, :, 7] = means, means, 30
    ws = np.arange(n, dtype=np.int64) * 5 * MIN
    return FeatureBatch("pump-x", SENSORS, ws, ws + 5 * MIN, v)


def _first_confirmed(cfg: DetectConfig, fb: FeatureBatch) -> int | None:
    profile = AssetProfile("pump-x")
    _, scored = detect(None, fb, profile, cfg)
    _, verdicts = validate(None, scored, profile, ValidationConfig(grace_windows=0))
    confirmed = [w for w, v in enumerate(verdicts) if v.status == "confirmed"]
    return confirmed[0] if confirmed else None


def test_a_slow_wear_is_confirmed_earlier_with_the_trend_evidence_and_not_before_it_starts() -> None:
    n, wear_from = 900, 400  # warm-up and a day and more of normal running, then 500 windows (42 h) of wear
    fb = _asset(n, wear_from)
    plain = _first_confirmed(DetectConfig(), fb)  # the daily refits learn the early wear: never confirmed
    summed = _first_confirmed(DetectConfig(trend=TrendConfig()), fb)
    assert summed is not None and wear_from < summed  # nothing before the wear starts
    assert plain is None or summed < plain - 24
    assert _first_confirmed(DetectConfig(trend=TrendConfig()), _asset(n, wear_from=n)) is None  # no wear, no alarm
