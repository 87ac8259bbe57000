"""`predict_rul`: a registered RUL model on an asset's window history (PredictionState's shape)."""

from __future__ import annotations

import json
import pickle
from dataclasses import replace
from datetime import timedelta
from pathlib import Path

import numpy as np
import pytest

from smart_maintenance.operators.predict.requests import PredictionState
from smart_maintenance.operators.predict.rul import RulEstimate, RulModel, RulParams
from smart_maintenance.operators.predict.rul_predict import cycle_length_ms, predict_rul, rul_applies, rul_run
from smart_maintenance.operators.records import dt_to_ms, stable_id
from smart_maintenance.stores.model_registry import ModelMeta, ModelRegistry
from smart_maintenance.training import CMAPSS_SENSORS, RunHistory, load_runs, train_rul

CMAPSS = Path("/work/shared/data/cmapss")
NAMES = ("temp", "pressure", "vib", "speed", "flow", "current")
PICK = [CMAPSS_SENSORS.index(c) for c in ("sensor_2", "sensor_3", "sensor_4", "sensor_7", "sensor_11", "sensor_12")]
T0 = 1_700_000_000_000
STEP = 300_000  # 5-minute windows


@pytest.fixture(scope="module")
def registered(tmp_path_factory: pytest.TempPathFactory) -> tuple[RulModel, ModelMeta, list[np.ndarray]]:
    """A small model on 20 FD001 engines, six sensors renamed as a plant's, round-tripped through the registry."""
    root = tmp_path_factory.mktemp("models")
    engines = load_runs(CMAPSS / "train_FD001.txt")
    runs = tuple(r[:, PICK] for r in engines.runs[:20])
    train_rul(RunHistory(runs, NAMES, tuple(map(str, range(20)))), "pump", root,
              params=RulParams(folds=2, max_iter=30, min_samples_leaf=20), holdout=0.0)
    model, meta = ModelRegistry(root).load("pump")
    tests = [r[:, PICK] for r in load_runs(CMAPSS / "test_FD001.txt").runs[:5]]
    return model, meta, tests


def history(run: np.ndarray, order: tuple[str, ...] = ("flow", "vib", "extra", "temp", "current", "speed", "pressure"),
            step: int = STEP) -> PredictionState:
    """The run as an asset's window means, columns in another order and one sensor the model does not use."""
    cols = {n: run[:, i] for i, n in enumerate(NAMES)} | {"extra": np.linspace(0, 1, len(run))}
    means = np.column_stack([cols[c] for c in order]).astype(np.float32)
    return PredictionState(sensors=order, window_end=T0 + step * np.arange(1, len(run) + 1, dtype=np.int64),
                           means=means)


def test_rul_applies_by_sensor_names(registered: tuple) -> None:
    _, meta, _ = registered
    assert rul_applies(meta, history(np.ones((3, 6))).sensors)
    assert not rul_applies(meta, ("temp", "vib"))


def test_a_prediction_from_the_model_at_the_last_window(registered: tuple) -> None:
    model, meta, tests = registered
    run = tests[0]
    state = history(run)
    p = predict_rul(model, meta, asset_id="pump-01", alarm_id="a1", sensors=state.sensors,
                    window_end=state.window_end, means=state.means)
    assert p is not None and p.method == "rul_model" and p.asset_id == "pump-01"
    est = model.predict(run.astype(np.float32).astype(np.float64))  # the same run, in the model's column order
    made = int(state.window_end[-1])
    assert dt_to_ms(p.made_at) == made and p.prediction_id == stable_id("prediction", "pump-01", "a1", made)
    assert dt_to_ms(p.lo) == made + round(est.lo * STEP)
    assert p.failure_at is not None and dt_to_ms(p.failure_at) == made + round(est.rul * STEP)
    assert (p.hi is None) == est.open_ended
    assert p.horizon_end - p.made_at == timedelta(milliseconds=125 * STEP)
    assert p.inputs["model_version"] == meta.version and p.inputs["data_sha256"] == meta.data_sha256
    assert p.inputs["cycle_from"] == "window_spacing" and p.inputs["cycle_ms"] == STEP
    assert p.inputs["cycles_seen"] == len(run) and p.sensor == ",".join(NAMES)
    json.dumps(p.to_dict())  # storable as is
    again = predict_rul(model, meta, asset_id="pump-01", alarm_id="a1", sensors=state.sensors,
                        window_end=state.window_end, means=state.means.copy())
    assert again == p and pickle.loads(pickle.dumps(p)) == p


def test_the_meta_cycle_length_wins_over_window_spacing(registered: tuple) -> None:
    model, meta, tests = registered
    hourly = replace(meta, params=meta.params | {"cycle_ms": 3_600_000})
    state = history(tests[1])
    p = predict_rul(model, hourly, asset_id="p", alarm_id="a", sensors=state.sensors, window_end=state.window_end,
                    means=state.means)
    assert p is not None and p.inputs["cycle_from"] == "model" and p.inputs["cycle_ms"] == 3_600_000
    assert cycle_length_ms(meta, np.array([0, 10, 10, 30, 40])) == (10, "window_spacing")
    assert cycle_length_ms(meta, np.array([5])) == (None, "none")


def test_stopped_windows_are_not_cycles(registered: tuple) -> None:
    model, meta, tests = registered
    state = history(tests[2])
    kw = {"asset_id": "p", "alarm_id": "a", "sensors": state.sensors}
    base = predict_rul(model, meta, window_end=state.window_end, means=state.means, **kw)
    gap = np.full((10, len(state.sensors)), np.nan, np.float32)  # a stop in the middle, ten windows long
    means = np.vstack([state.means[:50], gap, state.means[50:]])
    ends = T0 + STEP * np.arange(1, len(means) + 1, dtype=np.int64)
    stopped = predict_rul(model, meta, window_end=ends, means=means, **kw)
    assert stopped is not None and base is not None
    assert stopped.inputs["rul_cycles"] == base.inputs["rul_cycles"] and stopped.inputs["cycles_seen"] == len(tests[2])
    assert dt_to_ms(stopped.made_at) == int(ends[-1])


def test_the_model_does_not_apply_without_its_sensors_or_history(registered: tuple) -> None:
    model, meta, tests = registered
    state = history(tests[3])
    kw = {"asset_id": "p", "alarm_id": "a"}
    no_vib = [c for c in state.sensors if c != "vib"]
    cols = [state.sensors.index(c) for c in no_vib]
    assert predict_rul(model, meta, sensors=tuple(no_vib), window_end=state.window_end, means=state.means[:, cols],
                       **kw) is None
    short = history(tests[3][:29])  # fewer than min_history (30) windows
    assert predict_rul(model, meta, sensors=short.sensors, window_end=short.window_end, means=short.means, **kw) is None
    sparse = state.means.copy()
    sparse[5:, state.sensors.index("temp")] = np.nan  # one sensor mostly silent
    assert rul_run(meta, state.sensors, state.window_end, sparse) is None
    assert rul_run(meta, state.sensors, state.window_end, sparse, min_history=5) is not None
    with pytest.raises(ValueError, match="means must be"):
        rul_run(meta, state.sensors, state.window_end, state.means[:, :3])


class _Fixed:
    """A stand-in model that always says the same (the mapping to time is what is tested)."""

    columns = NAMES

    def __init__(self, est: RulEstimate) -> None:
        self.est = est

    def predict(self, run: np.ndarray) -> RulEstimate:
        assert run.shape[1] == len(NAMES)
        return self.est


@pytest.mark.parametrize(("est", "failure", "hi"), [
    (RulEstimate(125.0, 90.0, 125.0, 0.8, True), None, None),  # no wear seen: only "at least 90 cycles"
    (RulEstimate(110.0, 90.0, 125.0, 0.8, True), 110, None),  # open-ended interval, estimate below the cap
    (RulEstimate(20.0, 12.5, 31.0, 0.8, False), 20, 31),
])
def test_open_ended_intervals_and_time_mapping(registered: tuple, est: RulEstimate, failure: int | None,
                                               hi: int | None) -> None:
    _, meta, tests = registered
    state = history(tests[4])
    p = predict_rul(_Fixed(est), meta, asset_id="p", alarm_id="a", sensors=state.sensors,
                    window_end=state.window_end, means=state.means)
    made = int(state.window_end[-1])
    assert p is not None and dt_to_ms(p.lo) == made + round(est.lo * STEP)
    assert (None if p.failure_at is None else (dt_to_ms(p.failure_at) - made) // STEP) == failure
    assert (None if p.hi is None else (dt_to_ms(p.hi) - made) // STEP) == hi
    assert p.inputs["open_ended"] == est.open_ended


def test_the_flow_uses_the_asset_types_model_and_falls_back_to_prophet(registered: tuple, monkeypatch) -> None:
    from smart_maintenance.dataflows import offload as loop_steps
    from smart_maintenance.operators.predict.requests import PredictionRequest

    model, meta, tests = registered
    state = history(tests[0])
    monkeypatch.setitem(loop_steps._RUL_CACHE, ("models", "pump"), (model, meta))  # as the pool process caches it
    monkeypatch.setitem(loop_steps._RUL_CACHE, ("models", "motor"), None)  # a type without a model
    vib = state.means[:, state.sensors.index("vib")].astype(np.float64)
    request = PredictionRequest("pump-01", "a1", "vib", state.window_end, vib, threshold=float(vib.max()) * 1.5,
                                direction="above", horizon_ms=7 * 86_400_000, made_at_ms=int(state.window_end[-1]),
                                asset_type="pump", sensors=state.sensors, means=state.means)
    learned = loop_steps.predict_with_models(request, "models")
    assert learned.method == "rul_model" and learned.inputs["model_version"] == meta.version
    assert loop_steps.predict_with_models(replace(request, asset_type="motor"), "models").method != "rul_model"
    assert loop_steps.predict_with_models(request, None).method != "rul_model"


def test_outside_its_envelope_the_flow_falls_back_to_prophet_and_says_why(registered: tuple, monkeypatch) -> None:
    from smart_maintenance.dataflows import offload as loop_steps
    from smart_maintenance.operators.predict.requests import PredictionRequest

    model, meta, tests = registered
    run = tests[0].copy()
    run[-40:, 2] += 40 * np.std(tests[0][:, 2]) + 5.0  # vib far beyond anything in training
    state = history(run)
    direct = predict_rul(model, meta, asset_id="p", alarm_id="a", sensors=state.sensors,
                         window_end=state.window_end, means=state.means)
    assert direct is not None and direct.inputs["envelope"] == "outside"
    assert direct.inputs["outside_envelope"].startswith("vib at ")
    assert direct.failure_at is None and direct.hi is None and direct.lo == direct.made_at  # claims nothing
    monkeypatch.setitem(loop_steps._RUL_CACHE, ("models", "pump"), (model, meta))
    vib = state.means[:, state.sensors.index("vib")].astype(np.float64)
    request = PredictionRequest("pump-01", "a1", "vib", state.window_end, vib, threshold=float(vib.max()) * 1.5,
                                direction="above", horizon_ms=7 * 86_400_000, made_at_ms=int(state.window_end[-1]),
                                asset_type="pump", sensors=state.sensors, means=state.means)
    p = loop_steps.predict_with_models(request, "models")
    assert p.method != "rul_model"
    assert p.inputs["rul_model_declined"] == direct.inputs["outside_envelope"]
    assert p.inputs["rul_model_version"] == meta.version
