import pickle
from datetime import datetime, timezone

import numpy as np
import pytest

from smart_maintenance.operators.predict.rul import (
    RulEstimate,
    RulParams,
    _Member,
    fit_rul_model,
    forward_fill,
    nasa_score,
    params_dict,
    rul_target,
    run_features,
)
from smart_maintenance.stores.model_registry import ModelRegistry, RegistryError, data_sha256

COLUMNS = ("temp", "pressure", "const", "noise")
PARAMS = RulParams(cap=60.0, folds=3, max_iter=40, min_samples_leaf=10, min_history=10)


def synthetic_run(length: int, rng: np.random.Generator) -> np.ndarray:
    """Wear grows exponentially towards failure at the last row; one constant and one noise sensor."""
    wear = np.exp(-(length - 1 - np.arange(length)) / 20.0)
    noise = rng.normal(0, 0.03, size=(length, 4))
    return np.c_[1 + wear, 5 - 2 * wear, np.full(length, 7.0), np.zeros(length)] + noise * [1, 1, 0, 1]


@pytest.fixture(scope="module")
def runs():
    rng = np.random.default_rng(3)
    return [synthetic_run(int(n), rng) for n in rng.integers(80, 140, size=12)]


@pytest.fixture(scope="module")
def model(runs):
    return fit_rul_model(runs, COLUMNS, PARAMS)


def test_target_is_capped_and_score_matches_known_values():
    assert rul_target(5, cap=3.0).tolist() == [3.0, 3.0, 2.0, 1.0, 0.0]
    assert rul_target(3).tolist() == [2.0, 1.0, 0.0]
    # 13 cycles early and 10 late both cost e - 1; exact predictions cost nothing
    assert nasa_score(np.array([0.0, 20.0, 5.0]), np.array([13.0, 10.0, 5.0])) == pytest.approx(2 * (np.e - 1))


def test_features_use_no_future_cycles():
    z = np.random.default_rng(0).normal(size=(70, 3))
    member = _Member(np.array([0.5, -1.0, 2.0]), 0.1, None)
    full = run_features(z, [member])
    assert full.shape == (70, 12 + 3 * 3 + 1)
    for t in (1, 2, 25, 61):
        assert np.allclose(run_features(z[:t], [member]), full[:t], rtol=1e-9, atol=1e-9)
    assert np.allclose(run_features(z[:40], [member], last_only=True), full[39:40])


def test_forward_fill_is_causal():
    z = np.array([[np.nan, 1.0], [2.0, np.nan], [np.nan, 3.0]])
    assert forward_fill(z).tolist() == [[0.0, 1.0], [2.0, 1.0], [2.0, 3.0]]


def test_model_drops_constant_sensor_and_rul_decreases(model, runs):
    assert [COLUMNS[j] for j in model.kept] == ["temp", "pressure", "noise"]
    run = synthetic_run(120, np.random.default_rng(99))
    estimates = [model.predict(run[:t]) for t in (40, 80, 100, 110, 118)]
    ruls = [e.rul for e in estimates]
    assert all(a > b for a, b in zip(ruls, ruls[1:])), ruls
    assert ruls[0] >= 50 and ruls[-1] <= 10
    for e in estimates:
        assert isinstance(e, RulEstimate) and e.coverage == 0.8
        assert 0.0 <= e.lo <= e.rul <= e.hi <= PARAMS.cap
        assert e.open_ended == (e.hi >= PARAMS.cap)
    assert set(model.metrics) >= {"oof_rmse", "oof_coverage", "bias"}


def test_model_pickles_and_predicts_the_same(model, runs):
    again = pickle.loads(pickle.dumps(model))
    assert np.array_equal(np.vstack(again.predict_runs(runs)), np.vstack(model.predict_runs(runs)))
    assert [len(a) for a in model.predict_runs([])] == [0, 0, 0]
    with pytest.raises(ValueError, match="columns"):
        model.predict(np.ones((10, 3)))


def test_registry_round_trip(tmp_path, model, runs):
    registry = ModelRegistry(tmp_path)
    now = datetime(2026, 1, 5, tzinfo=timezone.utc)
    digest = data_sha256(runs)
    first = registry.save("pump", model, data_sha256=digest, metrics={"rmse": 1.5}, params=params_dict(PARAMS), now=now)
    second = registry.save("pump", model, data_sha256=digest, metrics=model.metrics, now=now.replace(hour=1))
    assert (first.version, second.version) == ("v0001", "v0002")
    assert registry.latest("pump") == second and registry.latest("fan") is None
    loaded, meta = registry.load("pump", "v0001")
    assert meta.data_sha256 == digest == data_sha256([r.copy() for r in runs]) != data_sha256(runs[1:])
    assert meta.metrics == {"rmse": 1.5} and meta.params["cap"] == 60.0
    assert meta.created_at == "2026-01-05T00:00:00.000Z"
    assert np.array_equal(loaded.predict_runs(runs[:2])[0], model.predict_runs(runs[:2])[0])
    assert registry.asset_types() == ["pump"]
    (tmp_path / "pump" / "v0002" / "model.pkl").write_bytes(b"truncated")
    with pytest.raises(RegistryError, match="hash"):
        registry.load("pump")
    with pytest.raises(ValueError, match="asset_type"):
        registry.save("../etc", model, data_sha256=digest)


def test_params_reject_bad_values():
    with pytest.raises(ValueError):
        RulParams(folds=1)
    with pytest.raises(ValueError):
        RulParams(bin_edges=(50.0, 25.0))


def test_runs_like_training_stay_inside_the_envelope(model):
    rng = np.random.default_rng(99)  # new engines from the same process
    fresh = [synthetic_run(int(n), rng) for n in rng.integers(80, 140, size=20)]
    assert sum(w is not None for w in model.outside(fresh)) <= 1
    assert model.predict(fresh[0]).outside is None


def test_a_fault_mode_the_model_never_saw_is_flagged_and_its_interval_widens(model):
    rng = np.random.default_rng(7)
    unseen = []
    for n in rng.integers(80, 140, size=10):
        r = synthetic_run(int(n), rng)
        r[:, 1] = 10 - r[:, 1]  # pressure rises with wear instead of falling: a fault mode not in training
        unseen.append(r)
    why = model.outside(unseen)
    assert all(w is not None for w in why), why
    assert "unlike in training" in why[0] or "pressure" in why[0]
    est = model.predict(unseen[0])
    assert est.outside == why[0] and (est.lo, est.hi, est.open_ended) == (0.0, PARAMS.cap, True)


def test_a_sensor_far_beyond_its_training_range_is_named(model, runs):
    r = runs[0].copy()
    r[-30:, 0] += 50.0  # temp far above anything seen
    why = model.outside([r])[0]
    assert why is not None and why.startswith("temp at ")


def test_models_pickled_before_the_envelope_existed_still_predict(model, runs):
    old = pickle.loads(pickle.dumps(model))
    del old.__dict__["envelope"]  # what unpickling an older model gives
    assert old.outside(runs[:2]) == [None, None]
    assert old.predict(runs[0]).outside is None
