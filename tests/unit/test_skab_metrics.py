"""The SKAB benchmark's scoring (bench/skab.py) on hand-made series."""

import importlib.util
import sys
from pathlib import Path

import numpy as np

_spec = importlib.util.spec_from_file_location("skab_bench", Path(__file__).parents[2] / "bench" / "skab.py")
skab = importlib.util.module_from_spec(_spec)
sys.modules["skab_bench"] = skab  # dataclasses look their module up while the file loads
_spec.loader.exec_module(skab)


def _result(pred, anomaly, cps):
    n = len(anomaly)
    cp = np.zeros(n, bool)
    cp[cps] = True
    ts = np.arange(n, dtype=np.int64) * 1000
    return skab.FileResult("f", ts, np.asarray(pred, bool), np.asarray(anomaly, bool), cp)


def test_point_wise_scores_count_only_the_test_part():
    anomaly = np.zeros(1000, bool)
    anomaly[600:800] = True
    pred = np.zeros(1000, bool)
    pred[:400] = True  # the fit part does not count
    pred[650:850] = True
    f1, far, mar = skab.outlier_scores([_result(pred, anomaly, [600, 800])])
    assert (round(f1, 4), round(far, 2), round(mar, 2)) == (0.75, 12.5, 25.0)


def test_nab_is_100_for_a_perfect_detector_and_0_for_the_null_one():
    anomaly = np.zeros(1000, bool)
    anomaly[600:800] = True
    perfect = skab.nab_scores([_result(anomaly, anomaly, [600, 800])])
    null = skab.nab_scores([_result(np.zeros(1000, bool), anomaly, [600, 800])])
    # a predicted changepoint from rolling_max_30 + diff lands on the onset and 30 s after the end
    assert perfect[1:] == (0, 0) and 50 < perfect[0]["Standard"] < 100  # the end is seen 29 s late
    assert null == ({"Standard": 0.0, "LowFP": 0.0, "LowFN": 0.0}, 2, 0)


def test_late_detection_scores_less_and_overlapping_windows_are_cut():
    assert skab._scaled(0, 0, 60_000, 1.0, -0.11) == 1.0
    assert 0.4 < skab._scaled(30_000, 0, 60_000, 1.0, -0.11) < 0.5
    assert skab.nab_windows(np.array([0, 30_000]), np.array([True, True])) == [(0, 60_000), (60_000, 90_000)]
    cps = skab.predicted_changepoints(np.r_[np.zeros(40), np.ones(10), np.zeros(60)].astype(bool))
    assert np.flatnonzero(cps).tolist() == [40, 79]  # as pandas: rolling(30).max().diff().abs()


def test_the_split_bounds_far_over_files_so_one_noisy_file_in_few_is_not_averaged_away():
    anomaly = np.zeros(1000, bool)
    quiet, noisy = np.zeros(1000, bool), np.zeros(1000, bool)
    noisy[400:700] = True  # 300 false rows of 600: FAR 50 % on this file
    files = [_result(quiet, anomaly, [])] * 4 + [_result(noisy, anomaly, [])]
    pooled = skab.outlier_scores(files)[1]
    assert round(pooled, 2) == 10.0  # under 15 % pooled over these five files ...
    assert skab.far_bound(files) > 15.0  # ... but the next five may well hold two such files
    assert skab.far_bound(files[:4]) == 0.0 and skab.far_bound(files, seed=0) == skab.far_bound(files, seed=0)
