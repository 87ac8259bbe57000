import pickle

import numpy as np

from smart_maintenance.operators.detect.multivariate import drift_ratios, fit_multivariate, phase2_limit


def _normal(n=400, seed=0):
    """Two strongly correlated features and a third independent one."""
    rng = np.random.default_rng(seed)
    a = rng.normal(size=n)
    return np.column_stack([a, a + 0.1 * rng.normal(size=n), rng.normal(size=n)])


def test_t2_sees_a_broken_correlation_that_each_feature_alone_misses():
    model = fit_multivariate(_normal(), np.arange(3))
    ok, broken = np.array([[1.5, 1.5, 0.0]]), np.array([[1.5, -1.5, 0.0]])  # each |z| < 2
    stat, parts = model.statistic(np.vstack([ok, broken]))
    assert stat[0] < 1.0 < 10 * 1.0 < stat[1]
    assert np.allclose(parts.sum(axis=1)[1], stat[1], rtol=1e-4)  # contributions split T² exactly
    assert set(np.argsort(-parts[1])[:2]) == {0, 1}


def test_unused_columns_and_missing_values_are_ignored():
    x = np.column_stack([_normal(), np.full(400, np.nan)])
    model = fit_multivariate(x, np.array([0, 1, 2]))
    row = np.array([[0.0, 0.0, 0.0, 1e9], [0.0, np.nan, 0.0, np.nan]])
    stat, parts = model.statistic(row)
    assert stat.max() < 0.1 and parts.shape == (2, 3)


def test_q_residual_flags_rows_off_the_principal_plane():
    model = fit_multivariate(_normal(), np.arange(3), variance=0.9)  # keeps a+b and c, not a-b
    assert model.residual is not None
    stat, _ = model.statistic(np.array([[0.0, 0.0, 0.0], [1.0, -1.0, 0.0]]))
    assert stat[0] < 0.2 and stat[1] > 3.0


def test_phase2_limit_guards_small_fit_sets():
    x = _normal(30)
    model = fit_multivariate(x, np.arange(3))
    in_sample = np.quantile(model.statistic(x)[0], 0.99)
    assert in_sample < 0.8  # the small fit set's own rows sit well inside the new-row limit
    assert phase2_limit(30, 3, 0.99) > phase2_limit(3000, 3, 0.99) > 11.3  # chi2(3) 99% = 11.34
    assert phase2_limit(3, 3, 0.99) == 0.0


def test_drift_ratio_tells_a_wandering_level_from_noise():
    rng = np.random.default_rng(1)
    noise = rng.normal(size=400)
    warming = np.linspace(0, 20, 400) + rng.normal(size=400)
    r = drift_ratios(np.column_stack([noise, warming]))
    assert r[0] < 2.0 and r[1] > 20.0


def test_model_pickles_small():
    model = fit_multivariate(np.random.default_rng(2).normal(size=(400, 48)), np.arange(48))
    blob = pickle.dumps(model)
    assert len(blob) < 24 * 1024 and pickle.loads(blob).t2_ref == model.t2_ref


def test_a_rows_statistic_does_not_depend_on_how_many_rows_are_scored_with_it():
    """Live batches and a backfill score the same window in batches of different sizes: bit for bit the same."""
    rng = np.random.default_rng(3)
    x = rng.normal(size=(600, 40)) @ rng.normal(size=(40, 40))
    model = fit_multivariate(x, np.arange(40), variance=0.8)
    assert model.residual is not None
    rows = rng.normal(size=(300, 40)) @ rng.normal(size=(40, 40))
    together, parts = model.statistic(rows)
    for lo, size in ((0, 1), (1, 7), (8, 33), (41, 259)):
        alone, alone_parts = model.statistic(rows[lo:lo + size])
        np.testing.assert_array_equal(alone, together[lo:lo + size])
        np.testing.assert_array_equal(alone_parts, parts[lo:lo + size])
