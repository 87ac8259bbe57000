"""One sensor drifting off while the others stay consistent is a sensor fault, not a machine alarm."""

from __future__ import annotations

import pickle
from dataclasses import replace

import numpy as np
import pytest

from smart_maintenance.operators.detect.cross_sensor import (
    CrossSensorConfig,
    CrossSensorState,
    fit_cross_sensor,
    watch_drift,
)
from smart_maintenance.operators.detect.detectors import DetectConfig, detect
from smart_maintenance.operators.judge.validation import ValidationConfig, validate
from smart_maintenance.operators.profile import AssetProfile

from .test_operating_states import SENSORS, _batch

NAMES = ("current", "flow", "pressure", "temp")
CFG = CrossSensorConfig(after_start_ms=0, sustain_ms=0, fit_margin=0.0)  # the test itself; the defaults hold it longer
MIN = 60_000


def _plant(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Window means of four sensors that all follow one load (each with its own noise), and their stds."""
    rng = np.random.default_rng(seed)
    load = np.cumsum(rng.normal(0, 0.2, n))
    load = (load - load.mean()) / load.std()
    levels = np.stack([40 + 2 * load, 100 + 5 * load, 6 - 0.3 * load, 60 + load], axis=1)
    levels += rng.normal(0, 1, (n, 4)) * np.array([0.3, 0.8, 0.05, 0.2])
    return levels, np.tile([1.0, 3.0, 0.2, 0.5], (n, 1))


def _model():
    levels, stds = _plant(500, seed=1)
    model = fit_cross_sensor(levels, stds, NAMES, CFG)
    assert model is not None
    return model


def _watch(levels, stds, running=None, watched=frozenset(), cfg=CFG):
    running = np.ones(len(levels), bool) if running is None else running
    return watch_drift(CrossSensorState(), _model(), levels, stds, running, [watched] * len(levels), MIN, cfg)


def _ramp(n: int, size: float) -> np.ndarray:
    return np.linspace(0.0, size, n)


def test_one_sensor_walking_off_is_named_and_a_machine_fault_is_not() -> None:
    levels, stds = _plant(120, seed=2)
    drifted = levels.copy()
    drifted[:, 1] += _ramp(120, 40.0)  # flow reads high, more and more (8 of its normal stds at the end): the others
    # still agree with each other
    _, found = _watch(drifted, stds)
    assert found[:10] == ((),) * 10 and found[-1] == ("flow",)
    assert {s for f in found for s in f} == {"flow"}  # never a neighbour, although its prediction moved too
    machine = levels.copy()
    machine[:, 1] += _ramp(120, 40.0)
    machine[:, 3] += _ramp(120, 3.0)  # and temp rises with it, against the load: the machine, not a sensor
    _, found = _watch(machine, stds)
    assert not any(found)


def test_an_offset_inside_the_sensors_normal_range_is_not_a_drift() -> None:
    levels, stds = _plant(120, seed=6)
    levels[:, 1] += _ramp(120, 12.0)  # far beyond flow's noise (0.8), but under 3 of its normal stds (about 5)
    assert not any(_watch(levels, stds)[1])


def test_a_sensor_getting_noisier_is_not_a_calibration_drift() -> None:
    levels, stds = _plant(120, seed=3)
    levels[:, 1] += _ramp(120, 40.0)
    noisier = stds.copy()
    noisier[:, 1] *= 3.0
    assert _watch(levels, stds)[1][-1] == ("flow",)
    assert not any(_watch(levels, noisier)[1])


def test_stops_starts_and_new_levels_are_not_drifts_and_a_fixed_sensor_clears() -> None:
    levels, stds = _plant(160, seed=4)
    levels[:120, 1] += _ramp(120, 40.0)  # then put right
    state, found = _watch(levels, stds)
    assert found[119] == ("flow",) and found[-1] == ()
    assert not any(_watch(levels[:120], stds[:120], watched=frozenset({"flow"}))[1])  # a step under watch
    assert not any(_watch(levels[:120], stds[:120], running=np.zeros(120, bool))[1])
    starting = CrossSensorConfig(after_start_ms=200 * MIN)  # every window within the start-up
    assert not any(_watch(levels[:120], stds[:120], cfg=starting)[1])
    again = pickle.loads(pickle.dumps(state))
    assert (again.up == state.up).all() and again.run_ms == state.run_ms == 160 * MIN


def test_too_few_sensors_or_windows_give_no_model_and_bad_settings_are_refused() -> None:
    levels, stds = _plant(500, seed=5)
    assert fit_cross_sensor(levels[:, :2], stds[:, :2], NAMES[:2]) is None  # two: either could be the one
    assert fit_cross_sensor(levels[:5], stds[:5], NAMES) is None
    with pytest.raises(ValueError):
        CrossSensorConfig(noise_factor=1.0)


def test_through_the_detectors_a_drifting_sensor_is_a_sensor_fault_not_a_machine_alarm() -> None:
    fb = _batch(np.ones(450, bool))
    s = SENSORS.index("voltage")
    for w in range(300, 450):
        fb.values[w, s, [0, 2, 3, 5, 6]] += 0.6 * (w - 300)  # the voltage reading creeps, nothing else moves
    cfg = DetectConfig(warmup_windows=96, baseline_size=96, detectors=("baseline", "multivariate"),
                       cross_sensor=CrossSensorConfig(sustain_ms=0, fit_margin=0.0))
    state, scored = detect(None, fb, AssetProfile("motor-x"), cfg)
    assert scored.drifting[-1] == ("voltage",)
    _, verdicts = validate(None, scored, AssetProfile("motor-x"), ValidationConfig(grace_windows=6))
    statuses = [v.status for v in verdicts[300:]]
    assert "confirmed" not in statuses and "needs_review" not in statuses
    assert verdicts[-1].status == "sensor_fault" and verdicts[-1].anomaly.reasons == ("voltage: drift",)
    assert pickle.loads(pickle.dumps(state)).cross.sensors == state.cross.sensors


def test_an_asset_that_cycles_is_held_a_quarter_of_its_typical_run_not_two_hours() -> None:
    levels, stds = _plant(400, seed=7)
    levels[:, 1] += _ramp(400, 80.0)
    running = np.arange(400) % 40 < 30  # runs of 30 minutes, stops of 10: never two hours in a row
    cfg = CrossSensorConfig(through_stops=False, sustain_ms=0, fit_margin=0.0)  # the default two-hour hold
    state, found = _watch(levels, stds, running=running, cfg=cfg)
    assert state.runs == 10 and state.typical_run_ms == 30 * MIN
    flagged = [w for w, f in enumerate(found) if f]
    assert flagged and all(w % 40 >= 7 for w in flagged)  # judged after 7.5 minutes of each run (the 8th window)


def test_a_drift_stays_reported_through_a_stop_and_the_start_up_and_clears_once_judged_fixed() -> None:
    levels, stds = _plant(200, seed=8)
    levels[:120, 1] += _ramp(120, 40.0)  # flow drifts off, then (in the stop from window 120 on) is put right
    running = np.ones(200, bool)
    running[120:150] = False
    cfg = replace(CFG, after_start_ms=10 * MIN)
    _, found = _watch(levels, stds, running=running, cfg=cfg)
    assert found[119] == ("flow",)
    assert set(found[120:160]) == {("flow",)}  # stopped, then starting: nothing says it was fixed
    assert found[-1] == ()  # judged again after the start-up: it fits the others
    _, found = _watch(levels, stds, running=running, cfg=replace(cfg, through_stops=False))
    assert set(found[120:160]) == {()}  # without: an alarm that clears at every stop and opens again


def test_a_drift_is_reported_only_once_it_has_lasted_and_only_where_the_others_predict_the_sensor() -> None:
    levels, stds = _plant(120, seed=9)
    levels[:, 1] += _ramp(120, 40.0)
    _, at_once = _watch(levels, stds)
    _, lasting = _watch(levels, stds, cfg=replace(CFG, sustain_ms=30 * MIN, fast_factor=1.0))
    first = next(w for w, f in enumerate(at_once) if f)
    assert next(w for w, f in enumerate(lasting) if f) == first + 29  # the 30th window that met the test
    rng = np.random.default_rng(10)
    plain, _ = _plant(120, seed=9)
    own = np.concatenate([plain, 20 + rng.normal(0, 1, (120, 1))], axis=1)  # a fifth sensor nothing predicts
    fit, fit_stds = _plant(500, seed=1)
    fit = np.concatenate([fit, 20 + rng.normal(0, 1, (500, 1))], axis=1)
    model = fit_cross_sensor(fit, np.ones((500, 5)), (*NAMES, "other"), CFG)
    assert model is not None and model.explained[4] < 0.1 < 0.9 < model.explained[0]
    own[:, 4] += _ramp(120, 8.0)  # the four agree, and "other" walks off by 8 of its stds

    def drifting(cfg: CrossSensorConfig) -> set[str]:
        found = watch_drift(CrossSensorState(), model, own, np.ones((120, 5)), np.ones(120, bool),
                            [frozenset()] * 120, MIN, cfg)[1]
        return {s for f in found for s in f}

    assert drifting(CFG) == {"other"}  # its own wander looks like a drift when nothing predicts it
    assert drifting(replace(CFG, min_explained=0.5)) == set()


def test_a_sensor_that_was_already_far_off_its_prediction_in_the_fit_needs_twice_that_to_drift() -> None:
    fit, fit_stds = _plant(500, seed=1)
    fit[100:103, 1] += 30.0  # flow once read 6 of its stds off what the others predicted, in the normal data
    model = fit_cross_sensor(fit, fit_stds, NAMES, CFG)
    assert model is not None and model.fit_offset[1] > 5.0 > 1.0 > model.fit_offset[0]
    levels, stds = _plant(120, seed=2)
    levels[:, 1] += _ramp(120, 40.0)  # 8 of its stds at the end: more than 4, less than twice 6

    def drifting(cfg: CrossSensorConfig) -> set[str]:
        found = watch_drift(CrossSensorState(), model, levels, stds, np.ones(120, bool), [frozenset()] * 120, MIN,
                            cfg)[1]
        return {s for f in found for s in f}

    assert drifting(CFG) == {"flow"}
    assert drifting(replace(CFG, fit_margin=2.0)) == set()


def test_a_larger_offset_is_reported_sooner_up_to_fast_factor_times() -> None:
    levels, stds = _plant(120, seed=11)
    levels[20:, 1] += 80.0  # flow reads 80 high at once: about 16 of its stds, four times the 4 needed
    cfg = replace(CFG, sustain_ms=60 * MIN, fast_factor=1.0)
    _, at_once = _watch(levels, stds)
    first = next(w for w, f in enumerate(at_once) if f)
    _, slow = _watch(levels, stds, cfg=cfg)
    _, fast = _watch(levels, stds, cfg=replace(cfg, fast_factor=3.0))
    assert next(w for w, f in enumerate(slow) if f) == first + 59  # an hour of windows that met the test
    assert next(w for w, f in enumerate(fast) if f) == first + 19  # each counted three times: 20 minutes


def test_a_sensor_with_a_level_in_few_windows_is_left_out_of_the_model_not_the_whole_asset() -> None:
    levels, stds = _plant(500, seed=1)
    levels[np.arange(500) % 3 != 0, 3] = np.nan  # temp sampled slowly: a level in a third of the windows
    model = fit_cross_sensor(levels, stds, NAMES, CFG)
    assert model is not None and model.sensors == ("current", "flow", "pressure")
