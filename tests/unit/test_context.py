import numpy as np

from smart_maintenance.operators.detect.context import base_rows, context_rows, feature_names, history_length
from smart_maintenance.operators.records import FeatureBatch


def _batch(values, start=0):
    """One-sample windows of one sensor: mean = min = max = last = value, std = slope = 0."""
    v = np.asarray(values, float)
    feats = np.stack([v, 0 * v, v, v, 0 * v, v, v, np.ones_like(v)], axis=1)[:, None, :]
    ws = (np.arange(len(v)) + start) * 1000
    return FeatureBatch("x", ("a",), ws, ws + 1000, feats)


def _rows(values, context, lag, cuts):
    history = np.empty((0, 1, 6))
    out = []
    for lo, hi in zip([0] + cuts, cuts + [len(values)]):
        history, rows = context_rows(history, base_rows(_batch(values[lo:hi], lo), ("a",)), context, lag)
        out.append(rows)
    return np.concatenate(out)


def test_context_aggregates_the_last_windows_and_change_looks_back():
    values = np.arange(10.0) ** 2
    rows = _rows(values, 3, 4, [])
    assert feature_names(4) == ("mean", "std", "min", "max", "slope", "change")
    assert rows.shape == (10, 6)
    # window 6 sees windows 4..6: values 16, 25, 36
    assert np.allclose(rows[6, :4], [77 / 3, np.std([16, 25, 36]), 16, 36])
    # change: context mean now minus context mean 4 windows earlier (windows 0..2)
    assert np.isclose(rows[6, 5], 77 / 3 - 5 / 3)
    assert np.isnan(rows[3, 5]) and not np.isnan(rows[0, 0])  # early rows have partial context, no change yet


def test_rows_do_not_depend_on_batching():
    values = np.random.default_rng(0).normal(size=50)
    whole = _rows(values, 5, 7, [])
    cut = _rows(values, 5, 7, [1, 2, 9, 30, 31])
    assert np.allclose(whole, cut, equal_nan=True)
    assert history_length(5, 7) == 11


def test_missing_sensor_windows_are_skipped_in_the_context():
    fb = _batch([1.0, 2.0, 3.0])
    values = fb.values.copy()
    values[1, 0, :7] = np.nan
    values[1, 0, 7] = 0
    fb = FeatureBatch("x", ("a",), fb.window_start, fb.window_end, values)
    _, rows = context_rows(np.empty((0, 1, 6)), base_rows(fb, ("a",)), 3, 0)
    assert np.allclose(rows[2, :4], [2.0, 1.0, 1.0, 3.0])
