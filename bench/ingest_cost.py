"""CPU per message of `parse_messages` and per item of `window_readings` on the live plant's data, no flow.

    python bench/ingest_cost.py [--repeat 5]

Parse: `bench/live.py`'s plant (200 assets x 5 sensors, 40,000 readings/s, so 25 ms ticks) encoded as on the wire
(one JSON reading per message, RFC 3339 `ts`), cut into batches of 270 messages (what a live Kafka partition
delivered per poll on Tansu, docs/performance.md). Window: one asset's items of 5 ticks x 5 sensors (25
readings) through `window_readings` with 2 s windows and 1 s lateness (a window closes every 16 items), as a
live source hands them to the window step. CPU is `time.process_time()` (steadier than wall time on a shared
machine); each figure is the median of `--repeat` passes. Last line: `parse_us_per_message=<x>
window_us_per_item=<x>`.
"""

from __future__ import annotations

import sys
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import argparse
import os
import statistics
import time

import numpy as np

from bench.live import SIM_START_TICK, asset_keys, encode, plant_model, retimed
from smart_maintenance.operators.ingest.parse import parse_messages
from smart_maintenance.operators.ingest.windows import WindowConfig, window_readings
from smart_maintenance.operators.records import AssetReadings, RawMessages

BATCH = 270
T0_MS = 1_796_600_000_000


def parse_cost(repeat: int) -> float:
    readings, _ = retimed(plant_model(200, 7), SIM_START_TICK, 60, T0_MS, 25.0)
    values = encode(readings, "rfc3339")
    keys = [k.decode() for k in asset_keys(readings)]
    batches = [RawMessages(tuple(values[i:i + BATCH]), tuple(keys[i:i + BATCH]),
                           tuple(f"kafka:t/0/{j}" for j in range(i, i + BATCH)))
               for i in range(0, len(values) - BATCH, BATCH)]
    runs = []
    for _ in range(repeat):
        t = time.process_time()
        for b in batches:
            parse_messages(b)
        runs.append((time.process_time() - t) / (len(batches) * BATCH) * 1e6)
    return statistics.median(runs)


def window_cost(repeat: int, items: int = 20_000) -> float:
    cfg = WindowConfig(length_ms=2000, lateness_ms=1000)
    sensors = np.array(["temperature", "vibration", "pressure", "current", "flow"], dtype=object)
    rng = np.random.default_rng(7)
    batches = [AssetReadings("pump-01", np.tile(sensors, 5),
                             np.repeat(T0_MS + (np.arange(5) + 5 * k) * 25, 5).astype(np.int64), rng.normal(size=25))
               for k in range(items)]
    runs = []
    for _ in range(repeat):
        state = None
        t = time.process_time()
        for b in batches:
            state, _ = window_readings(state, b, cfg)
        runs.append((time.process_time() - t) / items * 1e6)
    return statistics.median(runs)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeat", type=int, default=5)
    args = ap.parse_args()
    parse_us, window_us = parse_cost(args.repeat), window_cost(args.repeat)
    print(f"load average {os.getloadavg()[0]:.1f}", file=sys.stderr)
    print(f"parse_us_per_message={parse_us:.2f} window_us_per_item={window_us:.2f}")


if __name__ == "__main__":
    main()
