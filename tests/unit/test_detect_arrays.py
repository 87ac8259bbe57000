"""Detection's per-window array helpers give exactly what the plain numpy they replace gives."""

import numpy as np
import pytest

from smart_maintenance.operators.detect.detectors import limit_scores
from smart_maintenance.operators.detect.finite import nan_to_num
from smart_maintenance.operators.profile import MEAN, AssetProfile, SensorLimits
from smart_maintenance.operators.records import FeatureBatch


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("nan", [0.0, 1.0])
def test_nan_to_num_is_numpys_bit_for_bit(dtype, nan):
    rng = np.random.default_rng(3)
    for bad in ([], [np.nan], [np.inf], [-np.inf], [np.nan, np.inf, -np.inf]):
        x = rng.normal(size=(2, 7)).astype(dtype)
        x.flat[: len(bad)] = bad
        got, want = nan_to_num(x, nan=nan), np.nan_to_num(x, nan=nan)
        assert got.dtype == want.dtype
        assert got.tobytes() == want.tobytes()
        assert got is not x and np.shares_memory(got, x) is False  # a new array, as numpy's


def _limit_scores_one_by_one(fb: FeatureBatch, profile: AssetProfile) -> tuple[np.ndarray, np.ndarray]:
    """The per-sensor loop `limit_scores` was (main before the burst branch), kept as the reference."""
    frac = np.zeros((len(fb), len(fb.sensors)))
    for s, name in enumerate(fb.sensors):
        lim = profile.limit(name)
        if lim is None:
            continue
        mean = fb.values[:, s, MEAN]
        if lim.rising:
            f = (mean - lim.normal_hi) / max(lim.failure - lim.normal_hi, 1e-9)
        else:
            f = (lim.normal_lo - mean) / max(lim.normal_lo - lim.failure, 1e-9)
        frac[:, s] = np.nan_to_num(np.clip(f, 0.0, None))
    worst = frac.max(axis=1) if frac.shape[1] else np.zeros(len(fb))
    return worst / (worst + 0.125), frac


def test_limit_scores_are_the_per_sensor_loops_bit_for_bit():
    limits = (
        ("flow", SensorLimits(0, 100, 20, 40, 5, rising=False)),
        ("pressure", SensorLimits(0, 10, 2, 6, 6, rising=True)),  # failure at the band's edge: the 1e-9 floor
        ("temperature", SensorLimits(0, 150, 40, 70, 95, rising=True)),
    )
    profile = AssetProfile("a", "pump", limits=limits)
    sensors = ("current", "flow", "pressure", "temperature", "vibration")  # two without limits
    rng = np.random.default_rng(7)
    values = rng.normal(50, 30, size=(6, len(sensors), 8))
    values[1, 1, MEAN] = np.nan  # a sensor without a reading in a window
    values[2, 3, MEAN] = np.inf
    values[3, 2, MEAN] = -np.inf
    fb = FeatureBatch("a", sensors, np.arange(6) * 60_000, np.arange(1, 7) * 60_000, values)
    for p, batch in ((profile, fb), (AssetProfile("b"), fb),
                     (profile, FeatureBatch("a", sensors[3:], fb.window_start, fb.window_end, values[:, 3:]))):
        got, want = limit_scores(batch, p), _limit_scores_one_by_one(batch, p)
        for g, w in zip(got, want, strict=True):
            assert g.tobytes() == w.tobytes()
