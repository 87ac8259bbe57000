import numpy as np

from smart_maintenance.operators.ingest.features import window_features
from smart_maintenance.operators.records import FEATURES


def test_features_of_two_sensors_in_two_windows():
    ts = np.array([0, 30_000, 0, 60_000, 90_000])
    code = np.array([0, 0, 1, 0, 0])
    value = np.array([1.0, 3.0, 7.0, 10.0, 10.0])
    fb = window_features("p1", ("temp", "flow"), code, ts, value, 60_000)
    assert fb.window_start.tolist() == [0, 60_000]
    first = dict(zip(FEATURES, fb.values[0, 0]))
    assert first["mean"] == 2.0 and first["std"] == 1.0 and first["min"] == 1.0 and first["max"] == 3.0
    assert first["slope"] == 2.0 / 30 and first["last"] == 3.0 and first["count"] == 2
    assert np.isclose(first["rms"], np.sqrt(5.0))
    assert fb.values[0, 1, 0] == 7.0 and fb.values[0, 1, 4] == 0.0  # one reading: no slope
    assert np.isnan(fb.values[1, 1, 0]) and fb.values[1, 1, 7] == 0  # flow silent in window 2
    rows = fb.rows()
    assert [(r["window_start"], r["sensor"]) for r in rows] == [
        ("1970-01-01T00:00:00.000Z", "temp"), ("1970-01-01T00:00:00.000Z", "flow"), ("1970-01-01T00:01:00.000Z", "temp")
    ]
