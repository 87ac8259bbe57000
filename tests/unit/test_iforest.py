import pickle

import numpy as np
from sklearn.ensemble import IsolationForest

from smart_maintenance.operators.detect.iforest import compact, fit_forest


def test_compact_scores_equal_sklearn():
    rng = np.random.default_rng(0)
    train, test = rng.normal(size=(300, 20)), rng.normal(size=(500, 20)) * 2
    model = IsolationForest(n_estimators=40, max_samples=64, random_state=5).fit(train)
    assert np.allclose(compact(model).score(test), -model.score_samples(test), atol=1e-6)


def test_outliers_score_higher_and_model_is_small():
    rng = np.random.default_rng(1)
    forest = fit_forest(rng.normal(size=(64, 25)), n_trees=50, max_samples=64, seed=0)
    normal, outlier = forest.score(rng.normal(size=(50, 25))), forest.score(np.full((1, 25), 6.0))
    assert outlier[0] > normal.max()
    assert forest.nbytes < 120_000
    assert np.array_equal(pickle.loads(pickle.dumps(forest)).score(np.ones((3, 25))), forest.score(np.ones((3, 25))))
