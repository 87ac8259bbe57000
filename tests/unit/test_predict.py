import pickle
from datetime import UTC, timedelta

import numpy as np

from smart_maintenance.operators.predict.requests import (
    PredictConfig,
    PredictionState,
    due_for_prediction,
    make_request,
    maybe_request,
    note_alarm,
    observe,
    predict,
    work_order_due,
)
from smart_maintenance.operators.profile import AssetProfile, SensorLimits
from smart_maintenance.operators.records import Alarm, FeatureBatch, ms_to_dt

H, STEP = 3_600_000, 300_000
PROFILE = AssetProfile(
    "pump-01",
    limits=(
        ("pressure", SensorLimits(0, 25, 5.5, 7.5, 2.5, rising=False)),
        ("vibration", SensorLimits(0, 50, 0.8, 3.5, 11.0, rising=True)),
    ),
    state_sensor="current",
    running_min=5.0,
)


def batch(first: int, n: int, means: dict[str, np.ndarray]) -> FeatureBatch:
    sensors = tuple(means)
    values = np.zeros((n, len(sensors), 8))
    for s, name in enumerate(sensors):
        values[:, s, :7] = np.asarray(means[name], float)[:, None]  # mean = min = ... (enough here)
        values[:, s, 7] = 30
    start = (first + np.arange(n, dtype=np.int64)) * STEP
    return FeatureBatch("pump-01", sensors, start, start + STEP, values)


def alarm(sensors=("pressure", "vibration"), status="open", kind="machine", at_ms=0) -> Alarm:
    t = ms_to_dt(at_ms)
    return Alarm("al-1", "pump-01", kind, status, 3, t, t, None, 0.9, 3, "an-1", sensors, "test")


def test_observe_keeps_a_bounded_float32_history_and_nan_for_stops():
    cfg = PredictConfig(history_windows=10)
    s = observe(None, batch(0, 8, {"vibration": np.arange(8.0), "current": np.full(8, 40.0)}), PROFILE, cfg)
    s = observe(s, batch(8, 4, {"current": [40, 0, 40, 40], "pressure": np.full(4, 6.0)}), PROFILE, cfg)
    assert s.sensors == ("vibration", "current", "pressure") and s.means.dtype == np.float32
    assert s.window_end.tolist() == [(k + 1) * STEP for k in range(2, 12)]
    assert np.isnan(s.means[-4:, 0]).all() and s.means[:6, 0].tolist() == [2, 3, 4, 5, 6, 7]
    assert np.isnan(s.means[-3]).all()  # the stopped window: no wear to learn from
    assert observe(s, batch(11, 1, {"current": [40.0]}), PROFILE, cfg) is s  # a replayed window is ignored


def test_observe_window_by_window_keeps_what_one_batch_keeps():
    # one window at a time with the same sensors (every live window) against the same windows in one batch
    cfg = PredictConfig(history_windows=10)
    means = {"vibration": np.linspace(1.0, 3.3, 12), "current": np.array([40.0] * 5 + [0.0] + [40.0] * 6)}
    whole = observe(None, batch(0, 12, means), PROFILE, cfg)
    s = None
    for k in range(12):
        s = observe(s, batch(k, 1, {name: v[k : k + 1] for name, v in means.items()}), PROFILE, cfg)
    assert s.sensors == whole.sensors and s.window_end.tobytes() == whole.window_end.tobytes()
    assert s.means.dtype == np.float32 and s.means.tobytes() == whole.means.tobytes()
    assert np.isnan(s.means[3]).all() and not np.isnan(s.means[4]).any()  # window 5 stopped: the 4th of the last 10


def test_rate_limit_per_asset_on_event_time():
    s = PredictionState()
    assert due_for_prediction(s, alarm(), 0, H)
    assert not due_for_prediction(s, alarm(kind="sensor_fault"), 0, H)
    assert not due_for_prediction(s, alarm(status="cleared"), 0, H)
    s = observe(s, batch(0, 48, {"vibration": np.linspace(2, 6, 48)}))
    s, req = maybe_request(s, alarm(), PROFILE, now_ms=10 * H)
    assert req is not None and s.last_request_ms == 10 * H
    assert maybe_request(s, alarm(), PROFILE, now_ms=10 * H + H - 1)[1] is None
    assert maybe_request(s, alarm(), PROFILE, now_ms=11 * H)[1] is not None
    assert note_alarm(note_alarm(s, alarm()), alarm(status="cleared")).open_alarm is None


def test_the_leading_sensor_is_furthest_toward_failure():
    n = 48
    s = observe(None, batch(0, n, {
        "pressure": np.r_[np.linspace(6.0, 4.5, n - 3), [4.5] * 3],  # 1.0 of 3.0 below normal: a third
        "vibration": np.r_[np.linspace(2.0, 7.25, n - 3), [7.25] * 3],  # 3.75 of 7.5 above normal: half
        "current": np.full(n, 90.0),  # far out, but the registry gives current no threshold here
    }))
    req = make_request(s, alarm(("current", "pressure", "vibration")), PROFILE)
    assert (req.sensor, req.threshold, req.direction) == ("vibration", 11.0, "above")
    assert req.selection["progress"] == {"pressure": 0.3333, "vibration": 0.5}
    assert make_request(s, alarm(("current",)), PROFILE) is None
    assert make_request(s, alarm(("pressure",)), PROFILE).direction == "below"


def test_predict_is_deterministic_and_records_what_it_used():
    ts = np.arange(288) * STEP
    wear = 2 + 9 * (np.exp(3 * np.clip((ts - 12 * H) / (18 * H), 0, None)) - 1) / (np.exp(3) - 1)
    vib = wear + np.random.default_rng(0).normal(0, 0.2, 288)
    s = observe(None, batch(0, 288, {"vibration": vib}))
    s, req = maybe_request(s, alarm(("vibration",)), PROFILE, now_ms=int(s.window_end[-1]))
    a, b = predict(req), predict(pickle.loads(pickle.dumps(req)))
    assert a == b and a.method == "prophet" and a.made_at == ms_to_dt(288 * STEP)
    assert a.made_at < a.lo <= a.failure_at <= a.hi and a.failure_at.tzinfo == UTC
    assert abs((a.failure_at - ms_to_dt(30 * H)).total_seconds()) < 2 * 3600  # truth: 11.0 at 30 h
    d = a.to_dict()
    assert d["inputs"]["n_points"] == 288 and d["inputs"]["threshold"] == 11.0 and d["sensor"] == "vibration"
    assert d["ttf_hours"] == round((a.failure_at - a.made_at).total_seconds() / 3600, 4)
    assert work_order_due(a, timedelta(hours=1)) == a.lo - timedelta(hours=1)
    assert len(pickle.dumps(s)) < 6_000 and pickle.loads(pickle.dumps(s)).means.tolist() == s.means.tolist()
    _valid_against_the_published_schema(d)


def _valid_against_the_published_schema(d: dict) -> None:
    """A prediction as the Kafka `predictions` topic carries it (orjson of `to_dict()`) follows its schema."""
    import json

    import jsonschema
    import orjson

    from smart_maintenance.connectors.kafka.sink import SCHEMAS

    schema = json.loads((SCHEMAS / "predictions.schema.json").read_text())
    jsonschema.validate(orjson.loads(orjson.dumps(d)), schema)
