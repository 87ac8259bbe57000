"""CPU per one-off asset in a plain loop: N assets, one reading each, through the per-asset steps.

    python bench/one_off_loop.py [--assets 3000]

Each asset's single reading goes through `window_readings`, then at the end `flush_windows`, `detect`,
`validate` and `track` (the flow's steps, no Bytewax, no sinks). Last line: `ms_per_asset=<x>`.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from smart_maintenance.config.registry import load_registry
from smart_maintenance.config.settings import load_settings
from smart_maintenance.dataflows.steps import Steps
from smart_maintenance.operators.ingest.parse import split_by_asset
from smart_maintenance.operators.ingest.windows import flush_windows, window_readings
from smart_maintenance.operators.records import Readings


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--assets", type=int, default=3000)
    n = ap.parse_args().assets
    with tempfile.TemporaryDirectory(prefix="sm-oneoff-") as tmp:
        settings = load_settings(console=False, progress=False, data_dir=Path(tmp), log_level="WARNING",
                                 prediction={"enabled": False}, work={"enabled": False},
                                 incidents={"enabled": False}, notify={"channels": []})
    steps = Steps(settings, load_registry())
    rng = np.random.default_rng(1)
    ts = np.sort(rng.integers(1_767_225_600_000, 1_767_225_600_000 + 7_200_000, n))
    batches = [Readings.of([(f"stray-{i:06d}", "t", int(ts[i]), float(rng.normal()))]) for i in range(n)]
    states: dict[str, list[Any]] = {}

    def judge(s: list[Any], fb: Any) -> None:
        s[1], scored = steps.detect(s[1], fb)
        s[2], judged = steps.validate(s[2], scored)
        s[3], _ = steps.track(s[3], judged)

    t = time.process_time()
    for b in batches:
        for ar in split_by_asset(b):
            s = states.setdefault(ar.asset_id, [None, None, None, None])
            s[0], out = window_readings(s[0], ar, steps.window_cfg)
            if out.closed is not None:
                judge(s, out.closed)
    for s in states.values():
        s[0], closed = flush_windows(s[0], steps.window_cfg)
        if closed is not None:
            judge(s, closed)
    print(f"ms_per_asset={(time.process_time() - t) / n * 1000:.3f}")


if __name__ == "__main__":
    main()
