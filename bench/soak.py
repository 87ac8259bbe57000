"""Soak: the simulator plant at a steady rate through the whole flow into PostgreSQL, watching memory.

    python bench/soak.py [--minutes 30] [--assets 12] [--speed 360]

Runs `python -m bytewax.run "smart_maintenance.dataflows.plant:build_flow()"` on the simulator paced at
`speed` x real time (360: an hour of plant per 10 s) for `--minutes`, samples the flow process's RSS
every 5 s, and at the end compares the readings stored with the readings the simulator produced.
RSS growth is the slope of a line fitted to the samples of the second half of the run (and after
the detectors' warm-up, the first simulated day plus 30 s), per hour, relative to the RSS at the
start of that half: one-time steps such as loading the embedding model at the first work order
are not leaks, and the run prints RSS at its quarters so they can be seen. Last line:
`soak_min=<n> rss_growth_pct_per_h=<x> lost=<n>`.
"""

from __future__ import annotations

import argparse
import os
import secrets
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import psutil
import psycopg

FLOW = "smart_maintenance.dataflows.plant:build_flow()"


def expected_readings(assets: int, seconds: float) -> int:
    from smart_maintenance.config.registry import load_registry
    from smart_maintenance.config.settings import SimulatorSettings
    from smart_maintenance.sources.plant_model import PlantModel

    model = PlantModel(load_registry().with_simulated(assets), SimulatorSettings(assets=assets, duration_s=seconds))
    total, step = 0, 360
    for tick in range(0, model.n_ticks, step):
        r = model.generate(range(assets), tick, min(step, model.n_ticks - tick))
        total += int(np.isfinite(r.value).sum())
        model.forget_before(tick + step)
    return total


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--minutes", type=float, default=30.0)
    ap.add_argument("--assets", type=int, default=12)
    ap.add_argument("--speed", type=float, default=360.0)
    ap.add_argument("--dsn", default=None)
    args = ap.parse_args()
    sim_seconds = args.minutes * 60 * args.speed

    with tempfile.TemporaryDirectory(prefix="sm-soak-") as tmp:
        dsn = args.dsn
        if dsn is None:
            from smart_maintenance.connectors.postgres.server import embedded_dsn

            dsn = embedded_dsn(Path(tmp) / "pgdata")
        schema = f"soak_{secrets.token_hex(4)}"
        env = dict(os.environ)
        env.update({
            "SMART_MAINTENANCE__SOURCE": "simulator",
            "SMART_MAINTENANCE__SIMULATOR__ASSETS": str(args.assets),
            "SMART_MAINTENANCE__SIMULATOR__SPEED": str(args.speed),
            "SMART_MAINTENANCE__SIMULATOR__DURATION_S": str(sim_seconds),
            "SMART_MAINTENANCE__POSTGRES__DSN": dsn,
            "SMART_MAINTENANCE__POSTGRES__SCHEMA_NAME": schema,
            "SMART_MAINTENANCE__CONSOLE": "false",
        })
        started = time.monotonic()
        proc = subprocess.Popen([sys.executable, "-m", "bytewax.run", FLOW], env=env,
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        samples: list[tuple[float, float]] = []
        try:
            while proc.poll() is None:
                try:
                    samples.append((time.monotonic() - started, psutil.Process(proc.pid).memory_info().rss / 1e6))
                except psutil.NoSuchProcess:
                    break
                time.sleep(5)
            rc = proc.wait()
        except KeyboardInterrupt:
            proc.send_signal(signal.SIGINT)
            proc.wait()
            raise
        if rc != 0:
            raise SystemExit(f"the flow exited with {rc}")
        elapsed = time.monotonic() - started
        with psycopg.connect(dsn) as conn:
            stored = conn.execute(f"SELECT count(*) FROM {schema}.readings").fetchone()[0]
            conn.execute(f"DROP SCHEMA {schema} CASCADE")
    expected = expected_readings(args.assets, sim_seconds)
    # a leak is steady growth: fit a line to the second half of the run, after the warm-up, the first model
    # fits and the one-time load of the embedding model at the first work order (about 400 MB)
    settled = max(0.5 * elapsed, 86_400 / args.speed + 30)
    later = [s for s in samples if s[0] >= settled] or samples
    (t0, rss0), (t1, _) = later[0], later[-1]
    slope_mb_per_s = float(np.polyfit([t for t, _ in later], [r for _, r in later], 1)[0]) if len(later) > 2 else 0.0
    growth = slope_mb_per_s * 3600 / rss0 * 100
    quarter = [samples[min(len(samples) - 1, int(q * (len(samples) - 1)))] for q in (0.0, 0.25, 0.5, 0.75, 1.0)]
    print(f"{elapsed / 60:.1f} min, {stored:,} readings stored ({stored / elapsed:,.0f}/s); RSS over the run: "
          + ", ".join(f"{r:.0f} MB at {t:.0f} s" for t, r in quarter)
          + f"; fitted from {t0:.0f} s to {t1:.0f} s: {slope_mb_per_s * 3600:+.1f} MB/h from {rss0:.0f} MB",
          file=sys.stderr)
    print(f"soak_min={elapsed / 60:.1f} rss_growth_pct_per_h={growth:.2f} lost={max(expected - stored, 0)}")


if __name__ == "__main__":
    main()
