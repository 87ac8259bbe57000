"""The tail threshold (operators/detect/tail.py): SPOT's extreme value per stream."""

import copy
import pickle

import numpy as np
import pytest

from smart_maintenance.operators.detect.tail import TailThreshold


def _fed(values, **kw):
    t = TailThreshold(**kw)
    for x in values:
        t.update(float(x))
    return t


def test_the_threshold_follows_the_tail_not_the_spread():
    rng = np.random.default_rng(11)
    gauss = _fed(rng.normal(size=4000))
    heavy = _fed(rng.standard_t(3, size=4000) / np.sqrt(3.0))  # the same variance, a heavier tail
    assert 3.0 < gauss.threshold() < 5.0
    assert heavy.threshold() > 1.5 * gauss.threshold()
    exceeded = np.mean(rng.normal(size=200_000) > gauss.threshold())
    assert exceeded < 1e-3  # near the risk asked for (1e-4), far from a quantile of the body


def test_a_smaller_risk_is_a_higher_threshold():
    x = np.random.default_rng(12).exponential(size=3000)
    a, b, c = (_fed(x, risk=r).threshold() for r in (1e-3, 1e-4, 1e-5))
    assert a < b < c and 5.0 < a < 9.0  # the exponential's 1e-3 quantile is 6.9


def test_none_until_enough_peaks_and_bad_values_are_ignored():
    t = _fed([1.0, 2.0, float("nan"), 3.0])
    assert t.threshold() is None and t.n == 3
    t = _fed(np.random.default_rng(13).normal(size=500))
    assert t.threshold() is not None


def test_the_state_pickles_and_deep_copies_and_goes_on_the_same():
    x = np.random.default_rng(14).normal(size=1200)
    t = _fed(x[:600])
    for other in (pickle.loads(pickle.dumps(t)), copy.deepcopy(t)):
        for v in x[600:]:
            other.update(float(v))
        assert other.threshold() == _fed(x).threshold()


def test_bad_arguments_are_refused():
    for bad in ({"risk": 0.0}, {"risk": 0.2}, {"level": 1.0}, {"min_peaks": 1}, {"min_peaks": 300}):
        with pytest.raises(ValueError):
            TailThreshold(**bad)
