"""Randomized plant families: plants the detection defaults were not tuned on.

`draw_family(seed)` turns one seed into a whole plant: which asset types
(the built-in four plus fans, gearboxes and chillers), how many assets, the
sampling interval (1 s to 5 min), the run length, the noise, the load
profile, stops by the clock (nightly, weekend, demand cycling), the rates of
equipment degradations (14 failure modes over 7 types) and of sensor faults
(stuck, out of range, sentinel codes, drift, sensors that die), permanent
setpoint changes (a new normal, not a fault), and which assets the registry
that the flow is given does NOT list (they get no physical ranges, no state
sensor and no failure thresholds: everything must come from their data).

Seeds are split once and for all: defaults are chosen on `TUNING_SEEDS`
only; `TEST_SEEDS` are reported beside them and never tuned on.

Guarantees: a pure function of the seed (same seed, same plant); the
simulator's readings and ground truth follow from it as for any plant.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from smart_maintenance.config.registry import Asset, Registry, load_registry
from smart_maintenance.config.settings import SimulatorSettings
from smart_maintenance.sources.plant_model import FaultRates

TUNING_SEEDS = (101, 102, 103, 104, 105)
TEST_SEEDS = (901, 902, 903, 904, 905)
INTERVALS_S = (1.0, 2.0, 5.0, 10.0, 20.0, 30.0, 60.0, 120.0, 300.0)
MAX_READINGS = 2_000_000  # per family: keeps a bench run of ten families within minutes on one core
EXTRA_TYPES = ("fan", "gearbox", "chiller")

_S = dict  # a sensor spec, as the registry TOML would write it
EXTRA_TYPE_SPECS: dict[str, dict[str, Any]] = {
    "fan": {
        "skills": ["mechanical", "hvac"],
        "repair_hours": 3.0,
        "sensors": {
            "vibration": _S(unit="mm/s", range=[0.0, 40.0], normal=[1.0, 3.0], failure=10.0),
            "bearing_temp": _S(unit="degC", range=[-20.0, 150.0], normal=[35.0, 50.0], failure=90.0),
            "current": _S(unit="A", range=[0.0, 60.0], normal=[12.0, 18.0], failure=35.0),
            "airflow": _S(unit="m3/h", range=[0.0, 20000.0], normal=[8000.0, 11000.0], failure=4000.0,
                          failure_direction="below"),
            "speed": _S(unit="rpm", range=[0.0, 2000.0], normal=[960.0, 990.0], failure=850.0,
                        failure_direction="below"),
        },
        "failure_modes": {
            "imbalance": {"effects": {"vibration": 1.0, "current": 0.3}},
            "belt_wear": {"effects": {"speed": 1.0, "airflow": 0.8}},
        },
    },
    "gearbox": {
        "skills": ["mechanical", "gearboxes"],
        "repair_hours": 5.0,
        "sensors": {
            "vibration": _S(unit="mm/s", range=[0.0, 50.0], normal=[1.5, 4.0], failure=14.0),
            "oil_temp": _S(unit="degC", range=[-20.0, 160.0], normal=[45.0, 65.0], failure=105.0),
            "bearing_temp": _S(unit="degC", range=[-20.0, 160.0], normal=[40.0, 60.0], failure=100.0),
            "output_speed": _S(unit="rpm", range=[0.0, 600.0], normal=[280.0, 300.0], failure=230.0,
                               failure_direction="below"),
            "load": _S(unit="t/h", range=[0.0, 200.0], normal=[80.0, 120.0], failure=190.0),
        },
        "failure_modes": {
            "gear_tooth_wear": {"effects": {"vibration": 1.0, "oil_temp": 0.4}},
            "lubrication_loss": {"effects": {"oil_temp": 1.0, "bearing_temp": 0.7}},
        },
    },
    "chiller": {
        "skills": ["refrigeration", "hvac"],
        "repair_hours": 6.0,
        "sensors": {
            "supply_temp": _S(unit="degC", range=[-30.0, 60.0], normal=[6.0, 8.0], failure=14.0),
            "condenser_pressure": _S(unit="bar", range=[0.0, 30.0], normal=[11.0, 13.0], failure=20.0),
            "evaporator_pressure": _S(unit="bar", range=[0.0, 15.0], normal=[3.5, 4.5], failure=2.0,
                                      failure_direction="below"),
            "compressor_current": _S(unit="A", range=[0.0, 300.0], normal=[120.0, 160.0], failure=240.0),
            "vibration": _S(unit="mm/s", range=[0.0, 40.0], normal=[0.8, 2.5], failure=9.0),
        },
        "failure_modes": {
            "refrigerant_leak": {"effects": {"evaporator_pressure": 1.0, "supply_temp": 0.6}},
            "condenser_fouling": {"effects": {"condenser_pressure": 1.0, "compressor_current": 0.5}},
        },
    },
}


@dataclass(frozen=True)
class PlantFamily:
    """One randomized plant: what the simulator runs, and what the flow is told about it."""

    seed: int
    plant: Registry  # every simulated asset, with its true type
    known: Registry  # the registry the flow gets: some assets (and every fan, gearbox, chiller) are absent
    simulator: SimulatorSettings
    rates: FaultRates

    @property
    def unknown_assets(self) -> tuple[str, ...]:
        return tuple(a.asset_id for a in self.plant.assets if not self.known.knows(a.asset_id))

    def describe(self) -> str:
        s, r = self.simulator, self.rates
        types = sorted({a.type for a in self.plant.assets})
        sched = ",".join(f"{t}:{p}" for t, p in r.schedules) or "none"
        return (f"seed={self.seed} assets={s.assets} ({','.join(types)}; {len(self.unknown_assets)} not in registry) "
                f"interval={s.interval_s:g}s days={(s.duration_s or 0) / 86_400:.1f} noise={r.noise_scale:.2f} "
                f"load_steps={r.load_steps} schedules={sched}")


def family_registry() -> Registry:
    """The built-in registry's types plus fans, gearboxes and chillers (14 failure modes in all)."""
    base = load_registry()
    extra = Registry.model_validate({"asset_types": EXTRA_TYPE_SPECS})
    return Registry(asset_types={**base.asset_types, **extra.asset_types}, assets=(), technicians=base.technicians)


def draw_family(seed: int) -> PlantFamily:
    """The plant of family `seed` (see the module docstring)."""
    rng = np.random.default_rng([seed, 16])
    full = family_registry()
    n_types = int(rng.integers(2, 5))
    types = sorted(rng.choice(sorted(full.asset_types), size=n_types, replace=False).tolist())
    interval = float(rng.choice(INTERVALS_S))
    days = float(rng.uniform(3.0, 7.0))
    sensors = 5
    n_assets = int(rng.integers(6, 13))
    ticks = days * 86_400 / interval
    if n_assets * sensors * ticks > MAX_READINGS:  # fast sampling: fewer assets, then fewer days
        n_assets = max(3, int(MAX_READINGS / (sensors * ticks)))
        days = min(days, MAX_READINGS / (sensors * n_assets) * interval / 86_400)
    assets: list[Asset] = []
    for i in range(n_assets):
        t = types[i % len(types)]
        k = sum(a.type == t for a in assets) + 1
        assets.append(Asset(asset_id=f"{t}-{seed}-{k:02d}", type=t, site="family", criticality=1 + i % 5))
    plant = Registry(asset_types=full.asset_types, assets=tuple(assets), technicians=full.technicians)
    absent_share = float(rng.uniform(0.2, 0.6))
    absent = rng.random(n_assets) < absent_share
    known_assets = tuple(a for a, out in zip(assets, absent)
                         if not out and a.type not in EXTRA_TYPES)
    known = Registry(asset_types={k: v for k, v in full.asset_types.items() if k not in EXTRA_TYPES},
                     assets=known_assets, technicians=full.technicians)
    patterns = ("none", "nightly", "weekend", "nightly_weekend", "cycling")
    schedules = tuple((t, str(rng.choice(patterns, p=(0.4, 0.15, 0.1, 0.15, 0.2)))) for t in types)
    rates = FaultRates(
        stops_per_day=float(rng.uniform(0.1, 0.8)),
        degradations_per_day=float(rng.uniform(0.15, 0.45)),
        degradation_hours=(float(rng.uniform(4.0, 10.0)), float(rng.uniform(18.0, 40.0))),
        healthy_hours=24.0,
        dropouts_per_day=float(rng.uniform(0.5, 4.0)),
        spikes_per_day=float(rng.uniform(0.5, 4.0)),
        nans_per_day=float(rng.uniform(0.0, 1.0)),
        sensor_faults_per_day=float(rng.uniform(0.03, 0.1)),
        stuck_share=float(rng.uniform(0.3, 0.8)),
        stuck_hours=(1.0, float(rng.uniform(4.0, 24.0))),
        noise_scale=float(np.exp(rng.uniform(np.log(0.5), np.log(2.0)))),
        load_steps=bool(rng.random() < 0.4),
        schedules=tuple(s for s in schedules if s[1] != "none"),
        sentinel_faults_per_day=float(rng.uniform(0.02, 0.08)),
        drift_faults_per_day=float(rng.uniform(0.0, 0.04)),
        dead_share=float(rng.uniform(0.0, 0.15)),
        setpoint_share=float(rng.uniform(0.1, 0.35)),
    )
    sim = SimulatorSettings(assets=n_assets, seed=seed, interval_s=interval, duration_s=round(days * 86_400),
                            start="2026-03-02T00:00:00Z", partitions=2, maintenance_log=True)
    return PlantFamily(seed, plant, known, sim, rates)
