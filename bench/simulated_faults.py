"""The simulator's injected faults as a detection benchmark.

    python bench/simulated_faults.py [--assets 12] [--days 3] [--seed 7] [--slack-h 2]

Runs the default plant (12 assets, 3 simulated days at 10 s) through the whole
dataflow (testing sinks: no database) and scores its alarms against the
simulator's ground truth (`sources.simulator.ground_truth`):

- a degradation is *found* when a `machine` alarm of its asset opens between
  its start and its failure; its *lead fraction* is
  (failure - alarm open) / (failure - start): 1 = at the first sign, 0 = at failure;
- a *false alarm* is a `machine` alarm that opens outside every degradation
  period of its asset (from start to repair end + `slack_h`); planned stops,
  dropouts and glitches must not alarm. Counted per asset-week;
- a sensor fault (stuck, out of range) is *reported* when a `sensor_fault`
  alarm naming that sensor is open during the fault (or opens within one
  window after it).

Last line: `faults_found=<a>/<b> lead_frac=<median> false_per_asset_week=<x>`.
"""

from __future__ import annotations

import argparse
import time
from dataclasses import dataclass

import numpy as np
from bytewax.testing import TestingSink, run_main
from rich.console import Console
from rich.table import Table

from smart_maintenance.config.registry import load_registry
from smart_maintenance.config.settings import Settings, load_settings
from smart_maintenance.dataflows.plant import STREAMS, build_flow
from smart_maintenance.operators.records import Alarm, iso
from smart_maintenance.operators.whatif import Episode
from smart_maintenance.operators.whatif import episodes_of as episodes
from smart_maintenance.sources.simulator import Degradation, GroundTruth, SensorFault, ground_truth

console = Console(stderr=True, width=160)
WEEK_MS = 7 * 86_400_000


@dataclass(frozen=True)
class Scores:
    found: list[tuple[Degradation, Episode | None]]
    false_alarms: list[Episode]
    sensor_faults: list[tuple[SensorFault, Episode | None]]
    asset_weeks: float
    end_ms: int
    sensor_fault_alarms: int  # episodes: more than the faults means alarms that flap

    def lead_fracs(self) -> list[float]:
        """Lead fractions of the found degradations whose failure falls inside the run."""
        return [(d.failure_ms - e.opened_ms) / (d.failure_ms - d.start_ms)
                for d, e in self.found if e is not None and d.failure_ms <= self.end_ms]


def score(truth: GroundTruth, eps: list[Episode], n_assets: int, slack_ms: int, window_ms: int) -> Scores:
    machine = [e for e in eps if e.kind == "machine"]
    faults = [e for e in eps if e.kind == "sensor_fault"]
    found = []
    for d in truth.degradations:  # one still degrading at the end of the run counts until then
        hits = [e for e in machine
                if e.asset_id == d.asset_id and d.start_ms <= e.opened_ms <= min(d.failure_ms, truth.end_ms)]
        found.append((d, hits[0] if hits else None))
    false_alarms = [
        e for e in machine
        if not any(e.asset_id == d.asset_id and d.start_ms <= e.opened_ms <= d.repair_end_ms + slack_ms
                   for d in truth.degradations)
    ]
    reported = []
    for f in truth.sensor_faults:
        hits = [
            e for e in faults
            if e.asset_id == f.asset_id and f.sensor in e.sensors
            and e.opened_ms <= f.end_ms + window_ms and (e.cleared_ms is None or e.cleared_ms >= f.start_ms)
        ]
        reported.append((f, hits[0] if hits else None))
    weeks = n_assets * (truth.end_ms - truth.start_ms) / WEEK_MS
    return Scores(found, false_alarms, reported, weeks, truth.end_ms, len(faults))


def run(settings: Settings) -> tuple[GroundTruth, list[Alarm], float]:
    plant = load_registry(settings.registry).with_simulated(settings.simulator.assets)
    out: dict[str, list] = {s: [] for s in STREAMS}
    sinks = {s: [TestingSink(out[s])] for s in STREAMS}
    t = time.perf_counter()
    run_main(build_flow(settings, sinks=sinks))
    elapsed = time.perf_counter() - t
    return ground_truth(plant, settings.simulator), out["alarms"], elapsed


def report(s: Scores, truth: GroundTruth) -> None:
    t = Table(title="Injected degradations")
    for c in ("asset", "mode", "start", "failure", "alarm opened", "lead (h)", "lead fraction"):
        t.add_column(c)
    for d, e in s.found:
        if e is None:
            t.add_row(d.asset_id, d.mode, iso(d.start_ms), iso(d.failure_ms), "[red]missed[/red]", "", "")
        else:
            frac = (d.failure_ms - e.opened_ms) / (d.failure_ms - d.start_ms)
            t.add_row(d.asset_id, d.mode, iso(d.start_ms), iso(d.failure_ms), iso(e.opened_ms),
                      f"{(d.failure_ms - e.opened_ms) / 3.6e6:.1f}", f"{frac:.2f}")
    console.print(t)
    t = Table(title="Sensor faults")
    for c in ("asset", "sensor", "kind", "start", "end", "reported"):
        t.add_column(c)
    for f, e in s.sensor_faults:
        t.add_row(f.asset_id, f.sensor, f.kind, iso(f.start_ms), iso(f.end_ms),
                  iso(e.opened_ms) if e else "[red]no[/red]")
    console.print(t)
    t = Table(title="False machine alarms")
    for c in ("asset", "opened", "cleared", "sensors"):
        t.add_column(c)
    for e in s.false_alarms:
        cleared = iso(e.cleared_ms) if e.cleared_ms else "open"
        t.add_row(e.asset_id, iso(e.opened_ms), cleared, ",".join(sorted(e.sensors)))
    console.print(t)
    counts = truth.counts()
    console.print("ground truth:", counts)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--assets", type=int, default=12)
    p.add_argument("--days", type=float, default=3.0)
    p.add_argument("--seed", type=int, default=7)
    p.add_argument("--slack-h", type=float, default=2.0, help="after a repair, alarms this long are not false")
    a = p.parse_args()
    settings = load_settings(
        console=False, progress=False,
        simulator={"assets": a.assets, "duration_s": a.days * 86_400, "seed": a.seed},
    )
    truth, alarms, elapsed = run(settings)
    window_ms = 300_000
    s = score(truth, episodes(alarms), a.assets, int(a.slack_h * 3.6e6), window_ms)
    report(s, truth)
    found = sum(e is not None for _, e in s.found)
    lead = s.lead_fracs()
    sf = sum(e is not None for _, e in s.sensor_faults)
    console.print(f"run took {elapsed:.1f} s; sensor faults reported as sensor faults: {sf}/{len(s.sensor_faults)}")
    print(f"sensor_faults={sf}/{len(s.sensor_faults)} sensor_fault_alarms={s.sensor_fault_alarms} "
          f"false_alarms={len(s.false_alarms)} asset_weeks={s.asset_weeks:.2f}")
    print(f"faults_found={found}/{len(s.found)} lead_frac={float(np.median(lead)) if lead else 0.0:.2f} "
          f"false_per_asset_week={len(s.false_alarms) / s.asset_weeks:.2f}")


if __name__ == "__main__":
    main()
