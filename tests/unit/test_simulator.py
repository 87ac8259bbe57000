"""The simulated plant: determinism, injected events and their ground truth."""

from __future__ import annotations

import pickle

import numpy as np
import pytest

from smart_maintenance.config.registry import load_registry
from smart_maintenance.config.settings import SimulatorSettings
from smart_maintenance.operators.records import Readings
from smart_maintenance.sources.plant_model import FaultRates, PlantModel
from smart_maintenance.sources.simulator import GroundTruth, block_ticks, ground_truth

REGISTRY = load_registry()
SETTINGS = SimulatorSettings()  # 12 assets, 3 days, seed 7, 10 s


@pytest.fixture(scope="module")
def run() -> tuple[PlantModel, Readings, GroundTruth]:
    """The default 2-day plant, generated once in one call."""
    model = PlantModel(REGISTRY, SETTINGS)
    return model, model.generate(range(12), 0, model.n_ticks), ground_truth(REGISTRY, SETTINGS)


_SERIES: dict[int, dict[tuple[str, str], np.ndarray]] = {}


def by_asset(r: Readings) -> Readings:
    return r.take(np.lexsort((r.sensor.astype(str), r.ts, r.asset_id.astype(str))))


def assert_same(a: Readings, b: Readings) -> None:
    assert len(a) == len(b)
    assert (a.asset_id == b.asset_id).all() and (a.sensor == b.sensor).all()
    np.testing.assert_array_equal(a.ts, b.ts)
    np.testing.assert_array_equal(a.value, b.value)  # bit for bit, NaNs in the same places


def series(r: Readings, asset_id: str, sensor: str, t0: int, t1: int) -> tuple[np.ndarray, np.ndarray]:
    """One sensor's (ts, value) in [t0, t1); rows are indexed once per batch."""
    if id(r) not in _SERIES:
        keys = list(zip(r.asset_id.tolist(), r.sensor.tolist()))
        rows: dict[tuple[str, str], list[int]] = {}
        for i, k in enumerate(keys):
            rows.setdefault(k, []).append(i)
        _SERIES[id(r)] = {k: np.array(v) for k, v in rows.items()}
    i = _SERIES[id(r)].get((asset_id, sensor), np.empty(0, int))
    i = i[(r.ts[i] >= t0) & (r.ts[i] < t1)]
    return r.ts[i], r.value[i]


def test_same_seed_same_readings_other_seed_other_readings() -> None:
    a = PlantModel(REGISTRY, SETTINGS).generate(range(12), 100, 500)
    b = PlantModel(REGISTRY, SETTINGS).generate(range(12), 100, 500)
    c = PlantModel(REGISTRY, SETTINGS.model_copy(update={"seed": 8})).generate(range(12), 100, 500)
    assert_same(a, b)
    assert a.value.dtype == np.float64 and a.ts.dtype == np.int64 and a.asset_id.dtype == object
    assert not np.array_equal(a.value[: len(c)], c.value[: len(a)], equal_nan=True)


def test_resume_at_any_block_equals_the_uninterrupted_run(run) -> None:
    model, full, _ = run
    for tick0, n in ((0, 360), (9000, 360), (9037, 1), (16000, 7)):  # across stops, wear and a repair
        resumed = PlantModel(REGISTRY, SETTINGS).generate(range(12), tick0, n)
        lo, hi = model.tick_ms(tick0), model.tick_ms(tick0 + n)
        assert_same(resumed, full.take((full.ts >= lo) & (full.ts < hi)))


def test_partitions_and_block_sizes_do_not_change_an_assets_readings(run) -> None:
    model, full, _ = run
    span = (8640, 8640 + 1440)  # the second day's first four hours
    fresh = PlantModel(REGISTRY, SETTINGS)
    parts = [fresh.generate(range(p, 12, 5), t, min(45, span[1] - t)) for p in range(5) for t in range(*span, 45)]
    lo, hi = model.tick_ms(span[0]), model.tick_ms(span[1])
    assert_same(by_asset(Readings.concat(parts)), by_asset(full.take((full.ts >= lo) & (full.ts < hi))))


def test_readings_are_ordered_by_time_and_every_sensor_reports_every_tick(run) -> None:
    model, full, truth = run
    assert (np.diff(full.ts) >= 0).all()
    sensors = sum(len(model.type_of[a].sensors) for a in range(12))
    dropped = sum((d.end_ms - d.start_ms) // model.interval_ms for d in truth.dropouts)
    assert sensors * model.n_ticks - dropped <= len(full) <= sensors * model.n_ticks
    assert full.ts[0] == model.start_ms == 1767571200000  # 2026-01-05T00:00:00Z
    assert full.ts[-1] == model.start_ms + (model.n_ticks - 1) * 10_000


def test_ground_truth_is_a_stable_pure_function() -> None:
    truth = ground_truth(REGISTRY, SETTINGS)
    assert truth == ground_truth(REGISTRY, SETTINGS) == pickle.loads(pickle.dumps(truth))
    assert truth.counts() == {
        "degradations": 9, "failures": 6, "planned_stops": 7, "sensor_faults": 5,
        "dropouts": 46, "spikes": 79, "nans": 9, "setpoint_changes": 0,
    }
    day = ground_truth(REGISTRY, SETTINGS, until_ms=truth.start_ms + 86_400_000)
    assert day.stops == tuple(s for s in truth.stops if s.start_ms < day.end_ms)
    assert day.glitches == tuple(g for g in truth.glitches if g.ts_ms < day.end_ms)
    assert all(d.start_ms >= truth.start_ms + 24 * 3_600_000 for d in truth.degradations)  # healthy baseline
    with pytest.raises(ValueError, match="until_ms"):
        ground_truth(REGISTRY, SETTINGS.model_copy(update={"duration_s": None}))


def test_a_degradation_drives_its_sensors_to_failure_at_the_failure_time(run) -> None:
    model, full, truth = run
    deg = next(d for d in truth.degradations if d.failure_ms < truth.end_ms)
    spec = REGISTRY.asset_types[REGISTRY.asset(deg.asset_id).type]
    lead = spec.sensors[deg.sensors[0]]  # share 1.0
    tm, a = model.type_of[model.asset_ids.index(deg.asset_id)], model.asset_ids.index(deg.asset_id)
    clean, _, wear = model.clean(tm, np.array([a]), np.array([deg.start_ms, deg.failure_ms], np.int64))
    assert clean[1, 0, tm.sensors.index(deg.sensors[0])] == pytest.approx(lead.failure, abs=1e-9)
    assert wear[0, 0].max() == 0.0 and wear[1, 0].max() == 1.0
    _, before = series(full, deg.asset_id, deg.sensors[0], deg.start_ms - 3_600_000, deg.start_ms)
    _, last = series(full, deg.asset_id, deg.sensors[0], deg.failure_ms - 120_000, deg.failure_ms + 10_000)
    assert lead.normal[0] <= np.median(before) <= lead.normal[1]
    assert abs(np.median(last) - lead.failure) < 0.1 * abs(lead.failure - np.mean(lead.normal))
    hours = [np.median(series(full, deg.asset_id, deg.sensors[0], t - 3_600_000, t)[1])
             for t in np.linspace(deg.start_ms, deg.failure_ms, 6)[1:].astype(np.int64)]
    steps = np.diff(hours) * (1 if lead.failure_direction == "above" else -1)
    assert (steps > 0).all() and steps[-1] > 3 * steps[0]  # it accelerates


def test_a_planned_stop_puts_the_state_sensor_under_running_min_and_cools_down(run) -> None:
    _, full, truth = run
    stop = next(s for s in truth.stops if s.kind == "planned")
    t = REGISTRY.asset_types[REGISTRY.asset(stop.asset_id).type]
    _, running = series(full, stop.asset_id, t.state_sensor, stop.start_ms - 600_000, stop.start_ms)
    _, stopped = series(full, stop.asset_id, t.state_sensor, stop.start_ms + 120_000, stop.end_ms)
    _, again = series(full, stop.asset_id, t.state_sensor, stop.end_ms + 300_000, stop.end_ms + 900_000)
    assert (running >= t.running_min).all() and (again >= t.running_min).all()
    assert (stopped < t.running_min).all() and len(stopped) > 0
    temp = next(s for s, spec in t.sensors.items() if spec.unit == "degC")
    _, cooling = series(full, stop.asset_id, temp, stop.start_ms, stop.start_ms + 3_600_000)
    means = cooling[:360].reshape(6, 60).mean(axis=1)  # 10-minute means over the first hour
    assert (np.diff(means) < 0).all() and means[-1] < means[0] - 5  # it cools, smoothly


def test_values_are_finite_except_the_injected_nans(run) -> None:
    _, full, truth = run
    bad = {(a, s, int(t)) for a, s, t in zip(full.asset_id[~np.isfinite(full.value)],
                                           full.sensor[~np.isfinite(full.value)], full.ts[~np.isfinite(full.value)])}
    hidden = lambda g: any(  # noqa: E731
        e.asset_id == g.asset_id and e.sensor == g.sensor and e.start_ms <= g.ts_ms < e.end_ms
        for e in truth.dropouts + truth.sensor_faults
    )
    nans = {(g.asset_id, g.sensor, g.ts_ms) for g in truth.glitches if g.kind == "nan" and not hidden(g)}
    assert bad == nans and len(nans) >= 5
    assert not np.isinf(full.value).any()


def test_sensor_faults_and_dropouts_show_as_labelled(run) -> None:
    _, full, truth = run
    kinds = {f.kind for f in truth.sensor_faults}
    assert kinds == {"stuck", "out_of_range"}
    for f in truth.sensor_faults:
        _, v = series(full, f.asset_id, f.sensor, f.start_ms, f.end_ms)
        lo, hi = REGISTRY.sensor(f.asset_id, f.sensor).range
        if f.kind == "stuck":
            assert len(v) > 0 and ((v == f.value) | np.isnan(v)).all()
        else:
            assert len(v) > 0 and ((v > hi) | (v < lo) | np.isnan(v)).all()
    for d in truth.dropouts:
        assert len(series(full, d.asset_id, d.sensor, d.start_ms, d.end_ms)[0]) == 0
        assert len(series(full, d.asset_id, d.sensor, d.end_ms, d.end_ms + 10_000)[0]) == 1


def test_block_sizes_follow_speed_and_batch_size() -> None:
    assert block_ticks(0.0, 10.0, 60) == 360  # fast: whole chunks
    assert block_ticks(0.0, 10.0, 1_000_000) == 1  # a huge plant: one tick per batch
    assert block_ticks(1.0, 10.0, 60) == 1  # real time: one tick per batch
    assert block_ticks(60.0, 10.0, 60) == 6  # a minute per second: one wall second per batch
    assert block_ticks(70.0, 10.0, 60) == 6  # largest divisor of 360 under 7


def test_bad_arguments_are_rejected_and_settings_pickle() -> None:
    with pytest.raises(ValueError, match="RFC 3339"):
        PlantModel(REGISTRY, SETTINGS.model_copy(update={"start": "monday"}))
    with pytest.raises(ValueError, match="stop_hours"):
        FaultRates(stop_hours=(4.0, 1.0))
    with pytest.raises(ValueError, match="stuck_share"):
        FaultRates(stuck_share=1.5)
    with pytest.raises(ValueError, match="distinct"):
        PlantModel(REGISTRY, SETTINGS).generate([0, 0], 0, 1)
    rates = FaultRates(spikes_per_day=0.0)
    assert pickle.loads(pickle.dumps(rates)) == rates
    naive = PlantModel(REGISTRY, SETTINGS.model_copy(update={"start": "2026-01-05T00:00:00"}))
    assert naive.start_ms == PlantModel(REGISTRY, SETTINGS).start_ms
