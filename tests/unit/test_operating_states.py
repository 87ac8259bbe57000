"""Operating states learned from data: stops are not anomalies, start-up grace counts from a detected start."""

from __future__ import annotations

import pickle

import numpy as np

from smart_maintenance.operators.detect.detectors import DetectConfig, detect
from smart_maintenance.operators.detect.states import learned_running
from smart_maintenance.operators.judge.validation import ValidationConfig, validate
from smart_maintenance.operators.profile import AssetProfile
from smart_maintenance.operators.records import FeatureBatch, Scored

SENSORS = ("current", "speed", "temp", "voltage")
MIN = 60_000


def _batch(running: np.ndarray, seed: int = 0) -> FeatureBatch:
    """Windows of an unregistered motor: current and speed fall to the floor when stopped, temp cools slowly,
    voltage holds."""
    rng = np.random.default_rng(seed)
    n = len(running)
    v = np.zeros((n, len(SENSORS), 8))
    temp = 60.0
    for w in range(n):
        r = bool(running[w])
        temp += ((60.0 if r else 20.0) - temp) * 0.3  # a 15-minute thermal time constant
        means = [40.0 if r else 0.3, 1480.0 if r else 5.0, temp, 400.0]
        stds = [1.5 if r else 0.05, 5.0 if r else 0.5, 0.3, 2.0]
        for s in range(len(SENSORS)):
            m = means[s] + rng.normal(0, 1.0 if SENSORS[s] == "temp" else stds[s] / 5)  # temp follows the load
            v[w, s] = [m, stds[s], m - 2 * stds[s], m + 2 * stds[s], 0.0, m, m, 30]
    ws = np.arange(n, dtype=np.int64) * 5 * MIN
    return FeatureBatch("motor-x", SENSORS, ws, ws + 5 * MIN, v)


def test_stops_are_found_from_the_sensors_themselves() -> None:
    truth = np.ones(300, bool)
    for start in (60, 150, 250):  # three stops of 20 windows
        truth[start:start + 20] = False
    state, running = learned_running(None, _batch(truth))
    assert (running == truth).all()  # temp (cooling slowly) and voltage (held) are outvoted
    again = pickle.loads(pickle.dumps(state))
    _, more = learned_running(again, _batch(truth[:50], seed=1))
    assert more.all()


def test_an_unregistered_asset_does_not_learn_its_stops_and_does_not_alarm_on_them() -> None:
    truth = np.ones(400, bool)
    truth[300:330] = False
    fb = _batch(truth)
    cfg = DetectConfig(warmup_windows=96, baseline_size=96, detectors=("baseline",))
    state, scored = detect(None, fb, AssetProfile("motor-x"), cfg)
    assert scored.running is not None and not scored.running[300:330].any()
    stopped_scores = scored.score[300:330]
    assert (stopped_scores > 0.6).any()  # the detectors do see the stop as far from running normal...
    _, verdicts = validate(None, scored, AssetProfile("motor-x"), ValidationConfig(grace_windows=6))
    statuses = [v.status for v in verdicts[250:]]
    assert "confirmed" not in statuses and "needs_review" not in statuses  # ...but it is a stop, then a start
    reasons = {r for v in verdicts[300:336] if v.anomaly for r in v.anomaly.reasons}
    assert reasons <= {"asset_stopped", "start_up"} and reasons


def _cycling_scored(n: int, run: int, stop: int, score: float) -> Scored:
    running = np.array([(w % (run + stop)) < run for w in range(n)])
    fb = _batch(running)
    s = np.full(n, score)
    return Scored(fb, s, {"baseline": s, "iforest": s}, tuple((("current", 1.0),) for _ in range(n)),
                  np.zeros(n, bool), running=running)


def test_a_cycling_asset_gets_a_grace_of_a_quarter_of_its_runs_not_of_a_fixed_length() -> None:
    cfg = ValidationConfig(grace_windows=18)  # 90 minutes of 5-minute windows, longer than each 40-minute run
    quiet = _cycling_scored(120, run=8, stop=4, score=0.1)
    state, _ = validate(None, quiet, AssetProfile("chiller-x"), cfg)
    assert state.runs >= 3 and state.typical_run == 8
    fault = _cycling_scored(12, run=8, stop=4, score=0.95)
    _, verdicts = validate(state, fault, AssetProfile("chiller-x"), cfg)
    assert [v.status for v in verdicts][:8] == ["rejected"] * 2 + ["rejected"] * 2 + ["confirmed"] * 4
    assert verdicts[0].anomaly.reasons == ("start_up",)


def test_the_window_a_stop_falls_in_is_not_judged_as_running() -> None:
    truth = np.ones(200, bool)
    truth[100:120] = False
    fb = _batch(truth)
    v = fb.values.copy()
    for w in (99, 120):  # the stop falls in window 99 (half of it stopped), the start in window 120
        v[w, :2, 0] = (v[w - 1, :2, 0] + v[w + 1, :2, 0]) / 2  # the mean halfway between running and stopped
        v[w, :2, 2] = (0.3, 5.0)  # its minimum at the stopped floor
    v[99, :2, 6] = (0.3, 5.0)  # window 99 ends stopped; window 120 ends running (the start-up grace covers it)
    v[150, :2, 6] = -999.0  # a logger's sentinel code as the last reading of both: a sensor fault, not a stop
    _, running = learned_running(None, FeatureBatch(fb.asset_id, fb.sensors, fb.window_start, fb.window_end, v))
    assert not running[99] and running[120]
    assert running[98] and running[150]
    assert running[:99].all() and running[120:].all() and not running[100:120].any()
