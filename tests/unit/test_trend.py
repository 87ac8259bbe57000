"""Evidence that builds up over hours: a slow fault alarms before any one window is far out."""

from __future__ import annotations

import pickle

import numpy as np
import pytest

from smart_maintenance.operators.detect.detectors import DetectConfig, detect
from smart_maintenance.operators.detect.trend import (
    TrendConfig,
    TrendState,
    judged_sum,
    trend_evidence,
    trend_score,
    trend_scores,
)
from smart_maintenance.operators.judge.validation import ValidationConfig, validate
from smart_maintenance.operators.profile import AssetProfile, SensorLimits
from smart_maintenance.operators.records import FeatureBatch, Scored

MIN = 60_000
HOUR = 60 * MIN
CFG = TrendConfig()


def _fold(t2: list[float], window_ms: int, running: list[bool] | None = None, state: TrendState | None = None):
    state = state or TrendState()
    run = np.ones(len(t2), bool) if running is None else np.array(running)
    return state, trend_scores(state, trend_evidence(state, np.array(t2), run, np.ones(len(t2), bool), window_ms, CFG),
                               CFG)


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
    assert _fold([6.0], 10 * MIN, state=again)[1][0] == _fold([6.0], 10 * MIN, state=state)[1][0]
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
    _, verdicts = validate(None, scored, profile, ValidationConfig(grace_windows=0, trend=cfg.trend))
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


def _with_jump(fb: FeatureBatch, sensor: str, start: int, stop: int, by: float) -> FeatureBatch:
    """The same windows with one sensor's readings off by `by` from `start` to `stop`: a broken transmitter."""
    v = fb.values.copy()
    j = fb.sensors.index(sensor)
    v[start:stop, j, [0, 2, 3, 5]] += by  # mean, min, max, rms: its level, not its spread
    v[start:stop, j, 6] = (v[start:stop, j, 0] ** 2 + v[start:stop, j, 1] ** 2) ** 0.5
    return FeatureBatch(fb.asset_id, fb.sensors, fb.window_start, fb.window_end, v)


def _judged(evidence: list[float], faulty: range) -> list:
    """Validation of one-minute windows of a running asset whose detectors see nothing, with the trend evidence
    given; `faulty`: windows whose temperature reads out of its physical range (a broken transmitter)."""
    n = len(evidence)
    v = np.zeros((n, 2, 8))
    v[:, 0] = [1500.0, 5.0, 1495.0, 1505.0, 0.0, 1500.0, 1500.0, 30]
    v[:, 1] = [50.0, 1.0, 45.0, 55.0, 0.0, 50.0, 50.0, 30]
    v[list(faulty), 1, 3] = 400.0
    fb = FeatureBatch("m1", ("speed", "temp"), np.arange(n) * MIN, np.arange(1, n + 1) * MIN, v)
    low = np.full(n, 0.1)
    scored = Scored(fb, low, {"baseline": low, "iforest": low}, tuple((("temp", 1.0),) for _ in range(n)),
                    np.zeros(n, bool), trend=np.array(evidence))
    profile = AssetProfile("m1", state_sensor="speed", running_min=300.0,
                           limits=(("temp", SensorLimits(-20, 150, 40, 60, 95, True)),))
    return validate(None, scored, profile, ValidationConfig(grace_windows=0, trend=CFG))[1]


def test_a_broken_sensor_does_not_leave_the_trend_held_at_its_cap_after_it() -> None:
    # ten windows of a broken transmitter far from the asset's level, then the asset as usual (a little under
    # its allowance): summed and held at the cap, the fault's windows would open a machine alarm after it
    verdicts = _judged([0.0] * 10 + [1.0] * 10 + [-0.05] * 20, faulty=range(10, 20))
    assert [v.status for v in verdicts[10:20]] == ["sensor_fault"] * 10
    assert all(v.status == "normal" for v in verdicts[20:])
    assert max(v.score for v in verdicts[20:]) == 0.1  # the sum started again: nothing of the fault is left
    # the same evidence without the fault: ten hour-units over the asset's level is a machine alarm
    verdicts = _judged([0.0] * 10 + [1.0] * 10 + [-0.05] * 20, faulty=range(0))
    assert verdicts[20].status == "confirmed" and verdicts[20].anomaly.detector_scores["trend"] > 0.9


def test_the_judged_sum_starts_again_after_a_faulty_window_and_at_a_new_recent_level() -> None:
    cfg = TrendConfig()
    value = 0.0
    for _ in range(10):
        value = judged_sum(value, 1.0, False, cfg)
    assert value == cfg.cap and trend_score(value, cfg) > 0.9
    assert judged_sum(value, 1.0, True, cfg) == 0.0  # a faulty sensor's window: not counted, the sum restarts
    assert judged_sum(judged_sum(value, 1.0, True, cfg), 0.5, False, cfg) == 0.5  # and builds up from zero
    assert judged_sum(value, float("nan"), False, cfg) == 0.0  # no recent level (a new normal, a repair)


def test_validation_keeps_the_sum_across_batches() -> None:
    # the same windows in one batch or in two give the same verdicts (live and backfill agree)
    fb = _with_jump(_asset(900, wear_from=600), "flow", 700, 720, by=400.0)
    cfg = DetectConfig(trend=TrendConfig())
    vcfg = ValidationConfig(grace_windows=0, trend=cfg.trend)
    profile = AssetProfile("pump-x")
    _, scored = detect(None, fb, profile, cfg)
    _, whole = validate(None, scored, profile, vcfg)
    state, first = validate(None, _part(scored, 0, 650), profile, vcfg)
    state = pickle.loads(pickle.dumps(state))
    _, second = validate(state, _part(scored, 650, 900), profile, vcfg)
    assert [v.status for v in whole] == [v.status for v in first + second]
    assert [v.score for v in whole] == [v.score for v in first + second]


def _part(scored: Scored, a: int, b: int) -> Scored:
    """Windows a..b of a scored batch, as the flow would have sent them in a batch of their own."""
    fb = scored.features
    return Scored(
        FeatureBatch(fb.asset_id, fb.sensors, fb.window_start[a:b], fb.window_end[a:b], fb.values[a:b]),
        scored.score[a:b], {d: s[a:b] for d, s in scored.detector_scores.items()}, scored.contributions[a:b],
        scored.warming_up[a:b], scored.feature_contributions[a:b],
        None if scored.running is None else scored.running[a:b],
        None if scored.settling is None else scored.settling[a:b], (), None, scored.drifting[a:b],
        None if scored.trend is None else scored.trend[a:b])
