import pickle

import numpy as np

from smart_maintenance.operators.profile import AssetProfile, SensorLimits
from smart_maintenance.operators.records import FeatureBatch, Scored
from smart_maintenance.operators.validation import ValidationConfig, validate

SENSORS = ("speed", "temp")


def _scored(scores, *, speed=1500.0, temp_std=1.0, count=30, temp_max=60.0, warming=False):
    n = len(scores)
    v = np.zeros((n, 2, 8))
    v[:, 0] = [speed, 5.0, speed - 5, speed + 5, 0.0, speed, speed, count]
    v[:, 1] = [50.0, temp_std, 45.0, temp_max, 0.0, 50.0, 50.0, count]
    fb = FeatureBatch("m1", SENSORS, np.arange(n) * 60_000, np.arange(1, n + 1) * 60_000, v)
    s = np.array(scores, float)
    return Scored(fb, s, {"baseline": s, "iforest": s}, tuple((("temp", 1.0),) for _ in range(n)), np.full(n, warming))


PROFILE = AssetProfile(
    "m1", criticality=4, state_sensor="speed", running_min=300.0,
    limits=(("temp", SensorLimits(-20, 150, 40, 60, 95, True)),),
)
CFG = ValidationConfig()


def _statuses(scored, state=None):
    state, verdicts = validate(state, scored, PROFILE, CFG)
    return state, [v.status for v in verdicts]


def test_a_single_glitch_is_rejected_a_persistent_one_confirmed():
    _, st = _statuses(_scored([0.1, 0.9, 0.1, 0.1, 0.1, 0.9, 0.9, 0.9, 0.9]))
    assert st == ["normal", "rejected", "normal", "normal", "normal", "rejected", "rejected", "confirmed", "confirmed"]


def test_uncertain_scores_need_review():
    _, st = _statuses(_scored([0.65] * 4))
    assert st == ["rejected", "rejected", "needs_review", "needs_review"]


def test_a_stopped_asset_is_not_anomalous():
    _, st = _statuses(_scored([0.95] * 4, speed=0.0))
    assert st == ["rejected"] * 4
    state, verdicts = validate(None, _scored([0.95] * 4, speed=0.0), PROFILE, CFG)
    assert verdicts[0].anomaly.reasons == ("asset_stopped",)


def test_stuck_sensor_is_a_sensor_fault():
    state, _ = _statuses(_scored([0.1] * 5))
    _, st = _statuses(_scored([0.9] * 4, temp_std=0.0), state)
    assert st == ["rejected", "rejected", "sensor_fault", "sensor_fault"]


def test_out_of_range_and_dropout_are_sensor_faults():
    state, _ = _statuses(_scored([0.1] * 5))
    state2, verdicts = validate(state, _scored([0.9], temp_max=400.0), PROFILE, CFG)
    assert verdicts[0].status == "sensor_fault" and verdicts[0].anomaly.reasons == ("temp: out_of_range",)
    _, verdicts = validate(state, _scored([0.2], count=5), PROFILE, CFG)
    assert verdicts[0].status == "sensor_fault" and "dropout" in verdicts[0].anomaly.reasons[0]
    assert pickle.loads(pickle.dumps(state2)) == state2
