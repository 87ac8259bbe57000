"""Cost in the number of assets: the same readings per second from 100, 2,000 and 20,000 assets.

    python bench/assets_scale.py [--readings 1000000] [--hours 6] [--fit-assets 100]

1. Throughput. For each size, `--readings` readings over `--hours` of event time (the same readings per
   second for every size): each asset sends its 5 sensors together, its ticks offset from the others'
   so the plant's rate is even. At 100 assets that is a reading of each sensor every ~11 s (the simulator's
   plant); at 20,000 assets one every ~36 min. Default settings (auto window length: 30 samples per
   window whatever the rate, without the default 15-minute cap, so each size closes the same windows per
   reading; warm-up 2 h so that the 100-asset run fits its detectors), replayed from a
   CSV file through the detection path of the Bytewax flow (1 worker) with its sinks dropped, so the
   figure is the flow's own. `assets_20k_ratio` = readings/s at 20,000 / readings/s at 100.
2. Memory per asset, with tracemalloc, in a plain loop over the flow's per-asset steps (windows, detect,
   validate, track): `kb_per_asset_idle` after `--fit-assets` assets each closed a few windows (young:
   detectors not fitted), `kb_per_asset_fitted` after the same assets fitted their detectors (warm-up
   of 8 windows) and ran past a refit. Traced bytes of the four per-asset states kept / assets.
3. Blocking. In that plain loop (run again without tracemalloc) the assets all start at the same time
   and close their windows at the same event times, as in a live plant. `max_block_ms` is the largest
   time spent in `detect` for all the windows that close at one event time (what a live run spends at
   one window close), over warm-up fits and refits.

Last line: `assets_20k_ratio=<x> kb_per_asset_idle=<x> kb_per_asset_fitted=<x> max_block_ms=<x>
assets_20k_ratio_cpu=<x>` (the last: the same ratio in readings per CPU-second of this process, which other work on
a shared machine moves much less than the wall-clock rates).
"""

from __future__ import annotations

import argparse
import gc
import tempfile
import time
import tracemalloc
from collections import defaultdict
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.csv as pacsv
from rich.console import Console

from smart_maintenance.config.registry import load_registry
from smart_maintenance.config.settings import load_settings
from smart_maintenance.dataflows.steps import Steps
from smart_maintenance.operators.ingest.parse import split_by_asset
from smart_maintenance.operators.ingest.windows import flush_windows, window_readings
from smart_maintenance.operators.records import Readings

console = Console(stderr=True)
SENSORS = ("temperature", "vibration", "pressure", "current", "flow")
T0 = 1_767_225_600_000  # 2026-01-01T00:00Z


def readings(assets: int, total: int, hours: float, seed: int = 17) -> Readings:
    """`total` readings of `assets` assets x 5 sensors spread evenly over `hours`, in time order."""
    span_ms = int(hours * 3_600_000)
    ticks = max(1, total // (assets * len(SENSORS)))  # ticks per asset
    interval = span_ms / ticks
    rng = np.random.default_rng(seed)
    a = np.repeat(np.arange(assets), ticks)
    k = np.tile(np.arange(ticks), assets)
    ts = (T0 + k * interval + a * (interval / assets)).astype(np.int64)  # each asset offset within a tick
    order = np.argsort(ts, kind="stable")
    a, ts = a[order], ts[order]
    n = len(ts) * len(SENSORS)
    names = np.array([f"asset-{i:05d}" for i in range(assets)], dtype=object)
    level = np.array([60.0, 2.0, 5.0, 12.0, 30.0])
    value = (level[None, :] * (1 + 0.02 * rng.standard_normal((len(ts), len(SENSORS))))).reshape(-1)
    return Readings(np.repeat(names[a], len(SENSORS)), np.tile(np.array(SENSORS, dtype=object), len(ts)),
                    np.repeat(ts, len(SENSORS)), value[:n])


def settings_for(tmp: Path, **extra: Any) -> Any:
    """Defaults, but a 2 h warm-up, the detection path only, no recording length (warm-up not capped), and
    auto windows of 30 samples at every size: the default 15-minute cap would give the 20,000 assets (one
    reading per 36 min) windows of 3 samples, ten times the windows per reading of the 100, and the ratio
    would measure that work instead of the cost of many assets."""
    return load_settings(console=False, progress=False, data_dir=tmp, log_level="WARNING", source="replay",
                         windows={"auto_max_s": None},
                         detection={"warmup": "2h", **extra}, prediction={"enabled": False},
                         work={"enabled": False}, incidents={"enabled": False}, notify={"channels": []})


def flow_rate(assets: int, total: int, hours: float, tmp: Path) -> tuple[float, float]:
    """Readings per second of wall time and per CPU-second of this process."""
    from bytewax.run import cli_main
    from bytewax.testing import TestingSink

    from smart_maintenance.dataflows.plant import build_flow
    from smart_maintenance.recovery import set_recovery
    from smart_maintenance.sources.replay import ReplaySource

    r = readings(assets, total, hours)
    path = tmp / f"assets-{assets}.csv"
    pacsv.write_csv(pa.table({"ts": r.ts, "asset_id": r.asset_id.astype(str), "sensor": r.sensor.astype(str),
                              "value": r.value}), path)
    settings = settings_for(tmp)
    anomalies: list[Any] = []
    flow = build_flow(settings, source=ReplaySource([str(path)]), registry=load_registry(),
                      sinks={"anomalies": [TestingSink(anomalies)]})
    set_recovery(False)  # as `smart-maintenance replay` without --recovery declares
    t, cpu = time.perf_counter(), time.process_time()
    cli_main(flow, workers_per_process=1)
    return len(r) / (time.perf_counter() - t), len(r) / (time.process_time() - cpu)


def plain_states(assets: int, windows: int, tmp: Path, trace: bool = True) -> tuple[float, float]:
    """Per-asset steps in a plain loop: (traced KB of the states per asset, max ms in detect at one window end).

    tracemalloc slows allocation-heavy fits several times: time blocks with `trace=False`.
    """
    from smart_maintenance.logs import configure_logging

    settings = settings_for(tmp, warmup="8h", refit_period="12h")
    configure_logging(settings.log_level, settings.log_format)
    steps = Steps(settings, load_registry())
    steps.window_cfg = replace(steps.window_cfg, length_ms=3_600_000)  # hourly windows: few readings per window
    per_window = 4  # readings of each sensor in a window
    r = readings(assets, assets * len(SENSORS) * per_window * windows, windows)
    states: dict[str, list[Any]] = {}
    block: dict[int, float] = defaultdict(float)
    gc.collect()
    if trace:
        tracemalloc.start()
    base = tracemalloc.get_traced_memory()[0]
    chunk = assets * len(SENSORS) * per_window  # about one window of every asset per chunk, as live
    for lo in range(0, len(r), chunk):
        part = Readings(r.asset_id[lo:lo + chunk], r.sensor[lo:lo + chunk], r.ts[lo:lo + chunk],
                        r.value[lo:lo + chunk])
        for ar in split_by_asset(part):
            s = states.setdefault(ar.asset_id, [None, None, None, None])
            s[0], out = window_readings(s[0], ar, steps.window_cfg)
            if out.closed is not None:
                _judge(steps, s, out.closed, block)
    for s in states.values():
        s[0], closed = flush_windows(s[0], steps.window_cfg)
        if closed is not None:
            _judge(steps, s, closed, block)
    gc.collect()
    kb = (tracemalloc.get_traced_memory()[0] - base) / assets / 1024
    if trace:
        tracemalloc.stop()
    fitted = sum(1 for s in states.values() if s[1] is not None and s[1].fitted)
    console.print(f"{assets} assets x {windows} windows: {fitted} fitted, {kb:.1f} KB per asset, "
                  f"max {max(block.values()) * 1000:.0f} ms in detect at one window end")
    return kb, max(block.values()) * 1000


def _judge(steps: Steps, s: list[Any], fb: Any, block: dict[int, float]) -> None:
    t = time.perf_counter()
    s[1], scored = steps.detect(s[1], fb)
    block[int(fb.window_end[-1])] += time.perf_counter() - t
    s[2], judged = steps.validate(s[2], scored)
    s[3], _ = steps.track(s[3], judged)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--readings", type=int, default=1_000_000)
    ap.add_argument("--hours", type=float, default=6.0)
    ap.add_argument("--sizes", default="100,2000,20000")
    ap.add_argument("--fit-assets", type=int, default=100)
    args = ap.parse_args()
    sizes = [int(x) for x in args.sizes.split(",")]
    rates, cpu_rates = {}, {}
    # The flow imports scikit-learn and river.drift at the first fit, not at start (a process's start-up): load them
    # before timing, or the 100-asset run (it fits) would pay a one-off ~1 CPU-s import that the others do not
    import river.drift  # noqa: F401
    import sklearn.ensemble  # noqa: F401
    with tempfile.TemporaryDirectory(prefix="sm-assets-") as tmp:
        for n in sizes:
            rates[n], cpu = cpu_rates[n] = flow_rate(n, args.readings, args.hours, Path(tmp))
            console.print(f"{n:>6} assets: {rates[n]:,.0f} readings/s, {cpu:,.0f} readings per CPU-second")
        idle_kb, _ = plain_states(args.fit_assets, 3, Path(tmp))  # 3 windows: young, nothing fitted
        fitted_kb, _ = plain_states(args.fit_assets, 20, Path(tmp))  # 8-window warm-up, a refit at 12 h
        _, block_ms = plain_states(args.fit_assets, 20, Path(tmp), trace=False)  # the same, timed untraced
    ratio = rates[max(sizes)] / rates[min(sizes)]
    cpu_ratio = cpu_rates[max(sizes)][1] / cpu_rates[min(sizes)][1]  # what to compare on a shared, loaded machine
    print(f"assets_20k_ratio={ratio:.2f} kb_per_asset_idle={idle_kb:.1f} kb_per_asset_fitted={fitted_kb:.1f} "
          f"max_block_ms={block_ms:.0f} assets_20k_ratio_cpu={cpu_ratio:.2f}")


if __name__ == "__main__":
    main()
