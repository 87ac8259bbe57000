"""A lasting step to a new level re-baselines with an audit record; a developing trend keeps alarming."""

from __future__ import annotations

import pickle

import numpy as np

from smart_maintenance.operators.detect.detectors import DetectConfig, detect
from smart_maintenance.operators.judge.validation import ValidationConfig, validate
from smart_maintenance.operators.profile import AssetProfile

from .test_operating_states import SENSORS, _batch

CFG = DetectConfig(warmup_windows=96, baseline_size=96, detectors=("baseline", "multivariate"))
PROFILE = AssetProfile("motor-x")
T = 300


def _with(change, sensors: tuple[str, ...] = ("voltage",)) -> tuple:
    fb = _batch(np.ones(T + 150, bool))
    for w in range(T, len(fb)):
        d = change(w - T)
        for name in sensors:
            fb.values[w, SENSORS.index(name), [0, 2, 3, 5, 6]] += d  # mean, min, max, rms, last
    state, scored = detect(None, fb, PROFILE, CFG)
    _, verdicts = validate(None, scored, PROFILE, ValidationConfig(grace_windows=6))
    return state, scored, verdicts


def test_a_lasting_step_is_a_new_normal_not_an_alarm() -> None:
    state, scored, verdicts = _with(lambda k: 15.0)  # the supply moves from 400 V to 415 V, for good
    assert [(rb.sensor, rb.since_ms) for rb in scored.rebaselines] == [
        ("voltage", int(scored.features.window_start[T]))
    ]
    assert scored.rebaselines[0].shift > 10 and state.new_normal.log == scored.rebaselines
    assert scored.settling[T] and not scored.settling[-1]
    statuses = [v.status for v in verdicts[T:]]
    assert "confirmed" not in statuses and "needs_review" in statuses  # a person is asked while it settles
    assert scored.score[-20:].max() < 0.6  # scored against the moved baseline
    assert pickle.loads(pickle.dumps(state)).new_normal.log == state.new_normal.log


def test_a_trend_keeps_alarming() -> None:
    # creeps: 0.6 V (and A) a window; on two sensors at once, as a machine fault does (one alone is a sensor
    # drifting off the others: tests/unit/test_cross_sensor.py)
    _, scored, verdicts = _with(lambda k: 0.6 * k, ("voltage", "current"))
    assert scored.rebaselines == ()
    assert "confirmed" in [v.status for v in verdicts[T:]]
