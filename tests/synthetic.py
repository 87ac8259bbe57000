"""Small synthetic plants for tests: plain numpy, seeded."""

from __future__ import annotations

import numpy as np

from smart_maintenance.operators.records import AssetReadings, Parsed, Readings

T0 = 1_767_225_600_000  # 2026-01-01T00:00:00Z
SENSORS = ("a", "b", "c", "d", "e")
LEVELS = np.array([1.0, 10.0, 100.0, 5.0, 50.0])


def asset_day(
    asset_id: str = "x",
    *,
    hours: float = 24.0,
    interval_s: int = 10,
    seed: int = 1,
    drift_last_h: float = 0.0,
    drift_sensor: str = "a",
) -> AssetReadings:
    """One asset, five sensors at a fixed rate with 2% noise; optionally a quadratic drift at the end."""
    rng = np.random.default_rng(seed)
    n = int(hours * 3600 / interval_s)
    ts = T0 + np.arange(n, dtype=np.int64) * interval_s * 1000
    t = np.repeat(ts, len(SENSORS))
    s = np.tile(np.array(SENSORS, dtype=object), n)
    v = np.tile(LEVELS, n) * (1 + 0.02 * rng.normal(size=len(t)))
    if drift_last_h:
        start = ts[-1] - drift_last_h * 3_600_000
        d = (t > start) & (s == drift_sensor)
        v[d] *= 1 + ((t[d] - start) / (drift_last_h * 3_600_000)) ** 2 * 3
    return AssetReadings(asset_id, s, t, v)


def cut(batch: AssetReadings, size: int) -> list[AssetReadings]:
    return [
        AssetReadings(batch.asset_id, batch.sensor[i : i + size], batch.ts[i : i + size], batch.value[i : i + size])
        for i in range(0, len(batch), size)
    ]


def as_parsed(batches: list[AssetReadings], rows: int) -> list[Parsed]:
    """Interleave several assets' readings into multi-asset source batches of `rows` per asset."""
    out = []
    longest = max(len(b) for b in batches)
    for i in range(0, longest, rows):
        parts = [
            Readings(
                np.full(len(b.ts[i : i + rows]), b.asset_id, dtype=object),
                b.sensor[i : i + rows],
                b.ts[i : i + rows],
                b.value[i : i + rows],
            )
            for b in batches
        ]
        out.append(Parsed(Readings.concat(parts)))
    return out
