"""Detection on plants the defaults were not tuned on: randomized plant families.

    python bench/generalization.py [--tuning 101,102] [--test 901,902] [--set validation.persistence_k=2 ...]

Each seed is a whole plant (`sources/plant_family.py`): its asset types,
1 s to 5 min sampling, noise, load profile, stops by the clock (nightly,
weekend, demand cycling), 14 equipment failure modes, stuck / out-of-range /
sentinel / drift / dead sensors, permanent setpoint changes (not faults), and
assets the flow's registry does not list. Each plant is replayed through the
real dataflow (testing sinks, no database; prediction and work orders off,
they are downstream of the alarms) with the settings under test, and scored
as `bench/simulated_faults.py` scores the default plant:

- a degradation is found when a `machine` alarm of its asset opens between its
  start and its failure; lead fraction = (failure - open) / (failure - start);
- a false alarm is a `machine` alarm that opens outside every degradation of
  its asset (start to repair end + 2 h): stops, restarts, load changes,
  setpoint changes, glitches, dropouts and sensor faults must not raise one;
- a sensor fault is reported when a `sensor_fault` alarm naming that sensor is
  open during it (or opens within one window after it).

Defaults are chosen on the tuning seeds only; the test seeds are printed
beside them and never tuned on. Last line, on the test seeds:
`gen_faults_found=<a>/<b> gen_sensor_faults=<a>/<b> gen_lead_frac=<x> gen_false_per_asset_week=<x>`.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections import Counter
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
from bytewax.testing import TestingSink, run_main
from rich.console import Console
from rich.table import Table

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from bench.simulated_faults import Scores, episodes, score  # noqa: E402
from smart_maintenance.config.settings import Settings, load_settings  # noqa: E402
from smart_maintenance.dataflows.plant import STREAMS, build_flow  # noqa: E402
from smart_maintenance.operators.ingest.windows import auto_length_ms  # noqa: E402
from smart_maintenance.operators.records import Alarm  # noqa: E402
from smart_maintenance.sources.plant_family import TEST_SEEDS, TUNING_SEEDS, PlantFamily, draw_family  # noqa: E402
from smart_maintenance.sources.simulator import GroundTruth, SimulatorSource, ground_truth, simulated_maintenance  # noqa: E402

console = Console(stderr=True, width=180)
SLACK_MS = 2 * 3_600_000


@dataclass
class Tally:
    """Pooled scores over a set of families."""

    found: int = 0
    faults: int = 0
    sensor_found: int = 0
    sensor_faults: int = 0
    leads: list[float] = field(default_factory=list)
    false_alarms: int = 0
    asset_weeks: float = 0.0
    sensor_fault_alarms: int = 0
    healthy_sensor_alarms: int = 0  # sensor-fault alarms that match no injected sensor fault
    missed_sensor_kinds: Counter[str] = field(default_factory=Counter)
    missed_modes: list[str] = field(default_factory=list)

    def add(self, s: Scores) -> None:
        self.found += sum(e is not None for _, e in s.found)
        self.faults += len(s.found)
        self.sensor_found += sum(e is not None for _, e in s.sensor_faults)
        self.sensor_faults += len(s.sensor_faults)
        self.leads += s.lead_fracs()
        self.false_alarms += len(s.false_alarms)
        self.asset_weeks += s.asset_weeks
        self.sensor_fault_alarms += s.sensor_fault_alarms
        self.missed_sensor_kinds.update(f.kind for f, e in s.sensor_faults if e is None)
        self.missed_modes += [d.mode for d, e in s.found if e is None]

    @property
    def lead(self) -> float:
        return float(np.median(self.leads)) if self.leads else 0.0

    @property
    def false_rate(self) -> float:
        return self.false_alarms / self.asset_weeks if self.asset_weeks else 0.0


def healthy_alarms(truth: GroundTruth, alarms: list[Alarm], window_ms: int) -> int:
    """Sensor-fault alarm episodes that name no sensor with an injected fault open then (same matching as `score`)."""
    return sum(
        not any(f.asset_id == e.asset_id and f.sensor in e.sensors and e.opened_ms <= f.end_ms + window_ms
                and (e.cleared_ms is None or e.cleared_ms >= f.start_ms) for f in truth.sensor_faults)
        for e in episodes(alarms) if e.kind == "sensor_fault"
    )


def family_settings(family: PlantFamily, overrides: dict[str, dict[str, Any]]) -> Settings:
    base: dict[str, dict[str, Any]] = {"prediction": {"enabled": False}, "work": {"enabled": False}}
    for section, values in overrides.items():
        base.setdefault(section, {}).update(values)
    return load_settings(console=False, progress=False, source="simulator", log_level="WARNING",
                         simulator=family.simulator.model_dump(), **base)


def run_family(family: PlantFamily, settings: Settings) -> tuple[GroundTruth, list[Alarm], float]:
    truth = ground_truth(family.plant, family.simulator, rates=family.rates)
    repairs = simulated_maintenance(truth)
    out: dict[str, list] = {s: [] for s in STREAMS}
    sinks = {s: [TestingSink(out[s])] for s in STREAMS}
    source = SimulatorSource(family.simulator, family.plant, rates=family.rates)
    t = time.perf_counter()
    flow = build_flow(settings, source=source, sinks=sinks, registry=family.known,
                      static_controls=lambda asset_id: [r for r in repairs if r.asset_id == asset_id])
    run_main(flow)
    return truth, out["alarms"], time.perf_counter() - t


def window_ms(family: PlantFamily, settings: Settings) -> int:
    """The window length the flow gives the family's assets: auto windows are capped as the flow caps them."""
    length = settings.windows.length_s
    if length == "auto":
        cap = settings.windows.auto_max_s
        return auto_length_ms(family.simulator.interval_s * 1000, settings.windows.auto_samples,
                              None if cap is None else int(cap * 1000))
    return int(float(length) * 1000)


def run_seeds(seeds: tuple[int, ...], overrides: dict[str, dict[str, Any]], label: str,
              drift_per_day: float | None = None) -> tuple[Tally, Table]:
    tally = Tally()
    t = Table(title=f"{label} seeds")
    for c in ("family", "found", "sensor faults", "false", "asset-weeks", "missed", "s"):
        t.add_column(c)
    for seed in seeds:
        family = draw_family(seed)
        if drift_per_day is not None:  # a stress variant: more calibration drifts than the family drew
            family = replace(family, rates=replace(family.rates, drift_faults_per_day=drift_per_day))
        settings = family_settings(family, overrides)
        truth, alarms, elapsed = run_family(family, settings)
        s = score(truth, episodes(alarms), family.simulator.assets, SLACK_MS, window_ms(family, settings))
        tally.add(s)
        tally.healthy_sensor_alarms += healthy_alarms(truth, alarms, window_ms(family, settings))
        missed = [d.mode for d, e in s.found if e is None] + [f"{f.kind}!" for f, e in s.sensor_faults if e is None]
        t.add_row(family.describe(), f"{sum(e is not None for _, e in s.found)}/{len(s.found)}",
                  f"{sum(e is not None for _, e in s.sensor_faults)}/{len(s.sensor_faults)}",
                  str(len(s.false_alarms)), f"{s.asset_weeks:.2f}", ",".join(missed), f"{elapsed:.0f}")
        console.print(f"[{label}] {family.describe()}: {elapsed:.0f} s", style="dim")
    return tally, t


def parse_overrides(items: list[str]) -> dict[str, dict[str, Any]]:
    """`section.field=value` (value as JSON when it parses, else as text) -> nested overrides."""
    out: dict[str, dict[str, Any]] = {}
    for item in items:
        key, _, raw = item.partition("=")
        section, _, name = key.partition(".")
        if not section or not name or not _:
            raise SystemExit(f"--set wants section.field=value, got {item!r}")
        try:
            value = json.loads(raw)
        except json.JSONDecodeError:
            value = raw
        out.setdefault(section, {})[name] = value
    return out


def line(prefix: str, t: Tally) -> str:
    return (f"{prefix}faults_found={t.found}/{t.faults} {prefix}sensor_faults={t.sensor_found}/{t.sensor_faults} "
            f"{prefix}lead_frac={t.lead:.2f} {prefix}false_per_asset_week={t.false_rate:.2f}")


def seed_arguments(p: argparse.ArgumentParser, tuning: tuple[int, ...], test: tuple[int, ...]) -> None:
    """`--tuning`, `--test` (comma-separated seeds) and `--set section.field=value`, as the seeded benches take them."""
    seeds = lambda s: tuple(int(x) for x in s.split(",") if x)  # noqa: E731
    p.add_argument("--tuning", type=seeds, default=tuning)
    p.add_argument("--test", type=seeds, default=test)
    p.add_argument("--set", action="append", default=[], help="a setting under test: section.field=value")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    seed_arguments(p, TUNING_SEEDS, TEST_SEEDS)
    p.add_argument("--drift-per-day", type=float, default=None,
                   help="calibration drifts per asset-day in every family (a stress variant; use it on tuning seeds)")
    a = p.parse_args()
    overrides = parse_overrides(a.set)
    tuned, t1 = run_seeds(a.tuning, overrides, "tuning", a.drift_per_day)
    test, t2 = run_seeds(a.test, overrides, "test", a.drift_per_day)
    console.print(t1)
    console.print(t2)
    t = Table(title="tuning seeds beside test seeds")
    for c in ("", "faults found", "sensor faults", "median lead", "false / asset-week", "sensor-fault alarms",
              "on healthy sensors", "missed sensor faults", "missed modes"):
        t.add_column(c)
    for name, x in (("tuning", tuned), ("test", test)):
        t.add_row(name, f"{x.found}/{x.faults}", f"{x.sensor_found}/{x.sensor_faults}", f"{x.lead:.2f}",
                  f"{x.false_rate:.2f}", str(x.sensor_fault_alarms), str(x.healthy_sensor_alarms),
                  dict(x.missed_sensor_kinds).__repr__(),
                  ",".join(sorted(x.missed_modes)))
    console.print(t)
    print(line("tune_", tuned))
    print(line("gen_", test))


if __name__ == "__main__":
    main()
