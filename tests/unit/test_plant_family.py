"""Randomized plant families: schedules, new sensor faults and setpoint changes are what the ground truth says."""

from __future__ import annotations

import pickle

import numpy as np

from smart_maintenance.config.registry import Asset, Registry
from smart_maintenance.config.settings import SimulatorSettings
from smart_maintenance.sources.plant_family import TEST_SEEDS, TUNING_SEEDS, draw_family, family_registry
from smart_maintenance.sources.plant_model import SENTINELS, FaultRates, PlantModel
from smart_maintenance.sources.simulator import ground_truth

HOUR = 3_600_000


def _plant(days: float = 3.0) -> tuple[Registry, SimulatorSettings]:
    full = family_registry()
    assets = tuple(Asset(asset_id=f"gearbox-{i}", type="gearbox") for i in range(4))
    reg = Registry(asset_types=full.asset_types, assets=assets)
    return reg, SimulatorSettings(assets=4, seed=3, interval_s=60.0, duration_s=days * 86_400)


def test_a_family_is_a_pure_function_of_its_seed_and_seeds_are_split() -> None:
    assert not set(TUNING_SEEDS) & set(TEST_SEEDS)
    a, b = draw_family(TEST_SEEDS[0]), draw_family(TEST_SEEDS[0])
    assert a == b and pickle.loads(pickle.dumps(a)) == a
    assert draw_family(TUNING_SEEDS[0]) != a
    modes = {(t, m) for t, spec in family_registry().asset_types.items() for m in spec.failure_modes}
    assert len(modes) >= 8
    assert all(not a.known.knows(x) for x in a.unknown_assets)


def test_nightly_stops_stop_the_machine_at_night() -> None:
    reg, sim = _plant()
    m = PlantModel(reg, sim, FaultRates(stops_per_day=0, degradations_per_day=0, schedules=(("gearbox", "nightly"),)))
    r = m.generate(range(4), 0, m.n_ticks)
    speed = r.take(r.sensor == "output_speed")
    hour = (speed.ts - m.start_ms) % (24 * HOUR) / HOUR
    night, day = speed.value[(hour > 2) & (hour < 4)], speed.value[(hour > 11) & (hour < 15)]
    assert np.median(night) < 0.2 * np.median(day)  # 2026-01-05 is a Monday: Mon-Thu nights stop


def test_sentinel_dead_and_setpoint_events_are_in_the_readings() -> None:
    rates = FaultRates(stops_per_day=0, degradations_per_day=0, dropouts_per_day=0, spikes_per_day=0,
                       nans_per_day=0, sensor_faults_per_day=0, sentinel_faults_per_day=0.5,
                       dead_share=1.0, setpoint_share=1.0)
    reg, sim = _plant()
    truth = ground_truth(reg, sim, rates=rates)
    r = PlantModel(reg, sim, rates).generate(range(4), 0, int(sim.duration_s / 60))
    sentinels = [f for f in truth.sensor_faults if f.kind == "sentinel"]
    dead = [f for f in truth.sensor_faults if f.kind == "dead"]
    assert sentinels and len(dead) == 4 and len(truth.setpoints) == 4
    for f in sentinels:
        sel = (r.asset_id == f.asset_id) & (r.sensor == f.sensor) & (r.ts >= f.start_ms) & (r.ts < f.end_ms)
        if sel.any():  # unless its sensor is already dead
            assert f.value in SENTINELS and (r.value[sel] == f.value).all()
    for f in dead:
        assert not ((r.asset_id == f.asset_id) & (r.sensor == f.sensor) & (r.ts >= f.start_ms)).any()
    for c in truth.setpoints:
        sel = (r.asset_id == c.asset_id) & (r.sensor == c.sensor)
        before = r.value[sel & (r.ts < c.at_ms) & (r.ts >= c.at_ms - 6 * HOUR)]
        after = r.value[sel & (r.ts >= c.at_ms + HOUR) & (r.ts < c.at_ms + 7 * HOUR)]
        if len(before) > 30 and len(after) > 30:
            assert np.sign(np.median(after) - np.median(before)) == np.sign(c.step)
