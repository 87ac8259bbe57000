"""The flow's own CPU per reading on the live plant, cut as a live source cuts it against as a backlog does.

    python bench/live_batches.py [--rate 100000] [--seconds 34] [--warm-s 26] [--poll-ms 10,25,200] [--assets 200]

Why the live flat rate stays well below the backlog drain rate of `bench/live.py`: the same readings cost the
flow more CPU in small batches. No broker, no database: `bench/live.py`'s plant (`--assets` x 5 sensors,
re-timed to `--rate` readings/s, 2 s windows, 1 s lateness, its warm-up), encoded as on the wire (RFC 3339),
split over 4 partitions by asset as Kafka keys them, and fed to the whole flow (`build_flow(live=True,
timed=True)`, 1 worker, `run_main`, sinks that drop what they get) as one `RawMessages` batch per partition
and `--poll-ms` of event time: what a source polling every `poll-ms` hands over when the broker delivers
smoothly. A Tansu consumer polled every 10 ms at 40,000/s got about 27 ms of data per batch
(2026-12-06): the broker's fetches set the batch, not only the poll. A backlog's 10,000-message batches
are ~200 ms of data at 200 assets.

CPU: `time.process_time()` from the first batch after `--warm-s` seconds of data (every asset's first fit
done) to the end, per reading fed in that span. Each asset's item through the window step holds
`poll-ms / tick` ticks (tick = streams / rate): per-item costs (the window step, Bytewax's per-key calls,
the split) are paid per asset and poll, not per reading. Each `--poll-ms` runs in its own process
(sequentially). Last line: `us_per_reading_<poll>ms=<x>` per poll and `batch_cost_ratio=<first / last>`.
"""

from __future__ import annotations

import sys
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import argparse
import os
import subprocess
import time
from collections.abc import Iterator
from datetime import timedelta
from typing import Any
from zlib import adler32

import numpy as np
from bytewax.outputs import DynamicSink, StatelessSinkPartition
from bytewax.testing import TestingSource, run_main

PARTITIONS = 4


class _Drop(DynamicSink[Any]):
    def build(self, step_id: str, worker_index: int, worker_count: int) -> StatelessSinkPartition[Any]:
        return _DropPart()


class _DropPart(StatelessSinkPartition[Any]):
    def write_batch(self, items: list[Any]) -> None:
        pass


def one(rate: float, seconds: float, warm_s: float, poll_ms: float, assets: int) -> tuple[float, int]:
    """CPU seconds per reading after the warm-up, and readings counted, for one poll interval."""
    from bench.live import (
        LATENESS_S,
        SIM_START_TICK,
        WARMUP_WINDOWS,
        WINDOW_S,
        encode,
        plant_model,
        retimed,
        streams_of,
    )
    from smart_maintenance.config.settings import load_settings
    from smart_maintenance.dataflows.plant import STREAMS, build_flow
    from smart_maintenance.operators.records import RawMessages

    model = plant_model(assets, 7)
    streams = streams_of(model)
    t0 = int(time.time() * 1000) - 3_600_000  # an hour ago: not "future" for the live checks
    readings, _ = retimed(model, SIM_START_TICK, int(rate * seconds / streams), t0, streams / rate * 1000)
    values = encode(readings, "rfc3339")
    names = readings.asset_id.tolist()
    part = np.array([adler32(str(a).encode()) % PARTITIONS for a in names])
    slot = (np.asarray(readings.ts, np.int64) - t0) // int(poll_ms)
    batches: list[tuple[int, RawMessages]] = []
    bounds = np.flatnonzero(np.diff(slot)) + 1
    for rows in np.split(np.arange(len(values)), bounds):
        for p in range(PARTITIONS):
            idx = rows[part[rows] == p].tolist()
            if idx:
                batches.append((int(slot[idx[0]]), RawMessages(
                    tuple(values[i] for i in idx), tuple(names[i] for i in idx), tuple(f"b:{i}" for i in idx),
                    tuple(int(readings.ts[i]) for i in idx))))
    warm_slot = int(warm_s * 1000 // poll_ms)
    mark: dict[str, float] = {}

    def fed() -> Iterator[RawMessages]:
        for s, msgs in batches:
            if s >= warm_slot and "cpu" not in mark:
                mark["cpu"], mark["n"] = time.process_time(), 0
            if "n" in mark:
                mark["n"] += len(msgs.payloads)
            yield msgs

    settings = load_settings(console=False, log_level="WARNING",
                             windows={"length_s": WINDOW_S, "allowed_lateness_s": LATENESS_S, "idle_close_s": 10},
                             detection={"warmup_windows": WARMUP_WINDOWS})
    flow = build_flow(settings, source=TestingSource(fed()), sinks={s: [_Drop()] for s in STREAMS}, live=True,
                      timed=True)
    run_main(flow, epoch_interval=timedelta(seconds=10))
    return (time.process_time() - mark["cpu"]) / max(mark["n"], 1), int(mark["n"])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rate", type=float, default=100_000.0)
    ap.add_argument("--seconds", type=float, default=34.0)
    ap.add_argument("--warm-s", type=float, default=26.0, help="seconds of data before CPU is counted (fits at 24 s)")
    ap.add_argument("--poll-ms", default="10,25,200")
    ap.add_argument("--assets", type=int, default=200)
    ap.add_argument("--one", type=float, default=None, help=argparse.SUPPRESS)  # a child: one poll interval
    args = ap.parse_args()
    if args.one is not None:
        us, n = one(args.rate, args.seconds, args.warm_s, args.one, args.assets)
        print(f"{us * 1e6:.3f} {n}")
        return
    figures = []
    for poll in [float(p) for p in args.poll_ms.split(",")]:
        cmd = [sys.executable, __file__, "--one", str(poll), "--rate", str(args.rate), "--seconds",
               str(args.seconds), "--warm-s", str(args.warm_s), "--assets", str(args.assets)]
        out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout.strip().splitlines()[-1]
        us, n = float(out.split()[0]), int(out.split()[1])
        figures.append((poll, us))
        print(f"poll {poll:g} ms: {us:.2f} µs per reading over {n:,} readings at {args.rate:,.0f}/s "
              f"(load average {os.getloadavg()[0]:.1f})", file=sys.stderr)
    print(" ".join(f"us_per_reading_{p:g}ms={us:.2f}" for p, us in figures)
          + f" batch_cost_ratio={figures[0][1] / figures[-1][1]:.2f}")


if __name__ == "__main__":
    main()
