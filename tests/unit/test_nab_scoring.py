"""NAB's scoring rule (bench/nab.py) on hand-made files."""

import importlib.util
import math
import sys
from pathlib import Path

import pytest

_spec = importlib.util.spec_from_file_location("nab_bench", Path(__file__).parents[2] / "bench" / "nab.py")
nab = importlib.util.module_from_spec(_spec)
sys.modules["nab_bench"] = nab  # dataclasses look their module up while the file loads
_spec.loader.exec_module(nab)

N = 2000  # rows; probation = 300 rows; one label -> a 200-row window


def test_windows_are_a_tenth_of_the_file_over_the_labels_centred_on_each():
    assert nab.windows(N, [1000]) == [(900, 1100)]
    assert nab.windows(N, [800, 1500]) == [(750, 850), (1450, 1550)]
    assert nab.windows(N, [1000, 1010]) == [(950, 1060)]  # overlapping windows merge


def test_perfect_detector_scores_100_and_null_detector_0():
    files = [(N, [1000]), (N, [800, 1500])]
    perfect = [nab.score_file(n, labels, [a for a, _ in nab.windows(n, labels)]) for n, labels in files]
    null = [nab.score_file(n, labels, []) for n, labels in files]
    for profile in nab.PROFILES:
        assert nab.corpus_scores(perfect)[profile] == pytest.approx(100.0)
        assert nab.corpus_scores(null)[profile] == pytest.approx(0.0)


def test_an_early_detection_earns_more_than_a_late_one_and_only_the_first_counts():
    early = nab.score_file(N, [1000], [920]).raw["Standard"]
    late = nab.score_file(N, [1000], [1090]).raw["Standard"]
    assert 0.9 < early < 1.0 and 0.0 < late < 0.3
    # NAB's position: -(right edge - row + 1) / width = -(1100 - 920 + 1) / 201; scaledSigmoid(p) / scaledSigmoid(-1)
    p = -(1100 - 920 + 1) / 201
    assert early == pytest.approx((2 / (1 + math.exp(5 * p)) - 1) / (2 / (1 + math.exp(-5)) - 1), rel=1e-9)
    assert nab.score_file(N, [1000], [920, 930, 1090]).raw["Standard"] == pytest.approx(early)


def test_a_false_positive_costs_a_fp_weight_and_less_just_after_a_window():
    far = nab.score_file(N, [1000], [900, 1900])
    assert far.fp == 1 and far.raw["Standard"] == pytest.approx(1.0 - 0.11 * 1.0, abs=1e-3)
    assert far.raw["LowFP"] == pytest.approx(1.0 - 0.22 * 1.0, abs=1e-3)
    near = nab.score_file(N, [1000], [900, 1110])  # 10 rows after a 200-row window
    assert 1.0 - 0.11 < near.raw["Standard"] < 1.0
    before = nab.score_file(N, [1000], [500])  # no window before it: the full cost; the window is missed
    assert before.raw["Standard"] == pytest.approx(-0.11 - 1.0) and before.raw["LowFN"] == pytest.approx(-0.11 - 2.0)


def test_detections_in_the_probationary_period_are_ignored():
    assert nab.probation_rows(N) == 300 and nab.probation_rows(100_000) == 750
    assert nab.score_file(N, [1000], [100, 900]).raw["Standard"] == pytest.approx(1.0)
