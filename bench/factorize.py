"""pandas.factorize against `operators/ingest/codes.factorize`'s dict path, by batch size (CPU µs per call).

    python bench/factorize.py [--repeat 2000]

Columns as the flow codes them: asset ids of frames (5 readings per asset, 200 assets) and sensor names,
fresh `str` objects per batch as a JSON parser gives them (so no hash is cached). The dict path is what
`codes.factorize` uses up to `codes.SMALL` values; above, it calls pandas. Last line: `dict_us_<n>=... pd_us_<n>=...`.
"""

from __future__ import annotations

import sys
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import argparse
import time

import numpy as np
import orjson
import pandas as pd

import smart_maintenance.operators.ingest.codes as codes


def columns(n: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    assets = [f"asset-{i:03d}" for i in rng.integers(0, 200, n // 5 + 1) for _ in range(5)][:n]
    sensors = [("temp", "vib", "pres", "curr", "rpm")[i % 5] for i in range(n)]
    fresh = orjson.loads(orjson.dumps([assets, sensors]))
    return np.array(fresh[0], dtype=object), np.array(fresh[1], dtype=object)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeat", type=int, default=2000)
    args = ap.parse_args()
    rng = np.random.default_rng(0)
    codes.SMALL = 1 << 62  # the dict path at every size
    figures = []
    for n in (10, 100, 300, 512, 2000, 10000):
        reps = max(20, args.repeat * 100 // max(n, 100))
        batches = [columns(n, rng) for _ in range(4)]
        cost = {}
        for name, fn in (("dict", codes.factorize), ("pd", pd.factorize)):
            fresh = [columns(n, rng) for _ in range(reps)]
            t = time.process_time()
            for a, s in fresh:
                fn(a)
                fn(s)
            cost[name] = (time.process_time() - t) / reps / 2 * 1e6
        for a, s in batches:  # same results
            for col in (a, s):
                ours, theirs = codes.factorize(col), pd.factorize(col)
                assert ours[0].tolist() == theirs[0].tolist() and ours[1].tolist() == theirs[1].tolist()
        print(f"n={n}: dict {cost['dict']:.1f} µs, pandas {cost['pd']:.1f} µs per column", file=sys.stderr)
        figures += [f"dict_us_{n}={cost['dict']:.1f}", f"pd_us_{n}={cost['pd']:.1f}"]
    print(" ".join(figures))


if __name__ == "__main__":
    main()
