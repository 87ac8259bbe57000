"""One asset's day through the detection path with one frame of 5,000 sensor names in its second hour.

    python bench/sensor_flood.py

A plain loop (no Bytewax): parse + check the frame, then window -> detect -> validate -> track over
a synthetic day of one asset at 10 s (`tests/synthetic.py`), the frame injected after 1/12 of it.
Run it against another checkout with `PYTHONPATH=<checkout>` to compare.
Last line: `sensors_kept=<n> rss_growth_mb=<m> seconds=<s>` (peak RSS over the day, minus before it).
"""

from __future__ import annotations

import resource
import sys
import time
from pathlib import Path

import orjson

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # tests.synthetic
from smart_maintenance.config.registry import load_registry
from smart_maintenance.config.settings import load_settings
from smart_maintenance.dataflows.steps import Steps
from smart_maintenance.operators.ingest.parse import check_readings, parse_messages
from smart_maintenance.operators.ingest.windows import flush_windows, window_readings
from smart_maintenance.operators.records import AssetReadings, RawMessages
from tests.synthetic import T0, asset_day, cut


def main() -> None:
    steps = Steps(load_settings(console=False, detection={"warmup_windows": 36, "baseline_size": 96}),
                  load_registry())
    frame = orjson.dumps({"asset_id": "x", "ts": T0 + 2 * 3_600_000 + 5,
                          "values": {f"s{i:05d}": 1.0 for i in range(5000)}})
    flood = check_readings(parse_messages(RawMessages((frame,), (None,), ("flood",))),
                           now_ms=T0 + 2 * 86_400_000, max_skew_ms=0).readings
    parts = cut(asset_day("x", seed=1), 1800)
    w = d = v = a = None
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    t = time.perf_counter()
    for i, part in enumerate(parts):
        batches = [part] + ([AssetReadings("x", flood.sensor, flood.ts, flood.value)] if i == len(parts) // 12 else [])
        for b in batches:
            w, out = window_readings(w, b, steps.window_cfg)
            if out.closed is not None:
                d, scored = steps.detect(d, out.closed)
                v, judged = steps.validate(v, scored)
                a, _ = steps.track(a, judged)
    w, _ = flush_windows(w, steps.window_cfg)
    seconds = time.perf_counter() - t
    growth = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) / 1024
    print(f"frame {len(frame) / 1024:.0f} KB", file=sys.stderr)
    print(f"sensors_kept={len(w.sensors)} rss_growth_mb={growth:.0f} seconds={seconds:.1f}")


if __name__ == "__main__":
    main()
