"""Randomized univariate metric streams: machine and IT metrics with labelled incidents.

`draw_stream(seed)` turns one seed into one stream of the kind public
streaming-anomaly benchmarks hold: a machine temperature, vibration or
pressure, or an IT metric (CPU %, request rate, latency, disk use, memory),
sampled every 5 minutes to 1 hour for 2 weeks to 4 months, with daily and
weekly seasonality, a trend, a noise model (gaussian, heavy-tailed,
quantised or integer counts, bursty), occasional benign level changes (not
labelled), missing stretches, and 1 to 4 labelled incidents of varied kinds:
a spike or dip, a level shift that precedes a failure, a slow ramp to
failure, a variance burst, a flatline (stuck), a seasonality break, a
shutdown to zero.

Seeds are split once and for all: detection defaults may be chosen on
`TUNING_SEEDS` only; `TEST_SEEDS` are reported beside them and never tuned on.

Guarantees: a pure function of the seed (same seed, same stream). Each
incident's label is its start (and end); an incident never starts in the
first 20 % of a stream, and two never overlap.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

TUNING_SEEDS = tuple(range(1001, 1031))
TEST_SEEDS = tuple(range(9001, 9031))
INTERVALS_S = (300, 600, 900, 1800, 3600)
KINDS = ("temperature", "vibration", "pressure", "cpu", "request_rate", "latency", "disk", "memory")
INCIDENTS = ("spike", "dip", "level_shift", "ramp", "variance_burst", "flatline", "seasonality_break", "shutdown")
START_MS = 1_767_225_600_000  # 2026-01-01T00:00:00Z
DAY_S = 86_400


@dataclass(frozen=True)
class Incident:
    kind: str
    start_ms: int  # the label
    end_ms: int


@dataclass(frozen=True)
class MetricStream:
    seed: int
    kind: str
    noise: str
    interval_s: int
    ts: np.ndarray  # int64 epoch ms, increasing (missing stretches are absent rows)
    value: np.ndarray  # float64
    incidents: tuple[Incident, ...]
    benign_steps: int

    @property
    def name(self) -> str:
        return f"{self.kind}-{self.seed}"

    def describe(self) -> str:
        days = (self.ts[-1] - self.ts[0]) / 86_400_000
        return (f"{self.name} {self.noise} {self.interval_s // 60}min {days:.0f}d "
                f"[{','.join(i.kind for i in self.incidents)}]")


@dataclass(frozen=True)
class _Kind:
    level: tuple[float, float]  # range of the base level
    sigma: tuple[float, float]  # noise sd as a share of the level
    daily: tuple[float, float]  # daily amplitude, in noise sds
    weekly: tuple[float, float]  # weekend dip, in noise sds
    noises: tuple[str, ...]
    floor: float | None = 0.0  # values never go under this
    ceiling: float | None = None


_KINDS = {
    "temperature": _Kind((40, 90), (0.005, 0.02), (0.0, 4.0), (0.0, 1.0), ("gaussian", "quantised")),
    "vibration": _Kind((0.5, 5), (0.03, 0.1), (0.0, 1.0), (0.0, 0.5), ("heavy", "gaussian")),
    "pressure": _Kind((3, 12), (0.005, 0.02), (0.0, 2.0), (0.0, 1.0), ("gaussian", "quantised")),
    "cpu": _Kind((10, 50), (0.05, 0.15), (2.0, 6.0), (0.0, 3.0), ("bursty", "gaussian"), 0.0, 100.0),
    "request_rate": _Kind((20, 2000), (0.0, 0.0), (2.0, 8.0), (0.0, 4.0), ("counts",)),
    "latency": _Kind((40, 400), (0.05, 0.15), (0.0, 2.0), (0.0, 1.0), ("heavy", "bursty")),
    "disk": _Kind((20, 70), (0.002, 0.01), (0.0, 0.5), (0.0, 0.0), ("gaussian", "quantised"), 0.0, 100.0),
    "memory": _Kind((30, 80), (0.01, 0.03), (0.0, 2.0), (0.0, 1.0), ("gaussian", "bursty"), 0.0, 100.0),
}


def draw_stream(seed: int) -> MetricStream:
    """One stream, all drawn from `seed`.

    >>> s = draw_stream(1001)
    >>> len(s.ts) == len(s.value), 1 <= len(s.incidents) <= 4
    (True, True)
    >>> bool((draw_stream(1001).value == s.value).all())
    True
    """
    rng = np.random.default_rng(seed)
    kind = KINDS[int(rng.integers(len(KINDS)))]
    spec = _KINDS[kind]
    noise = spec.noises[int(rng.integers(len(spec.noises)))]
    interval = int(rng.choice(INTERVALS_S))
    days = float(rng.uniform(14, 120))
    n = min(int(days * DAY_S / interval), 20_000)
    t_s = np.arange(n) * interval
    level = float(rng.uniform(*spec.level))

    # the noise sd, in the metric's units
    sigma = level * float(rng.uniform(*spec.sigma)) if kind != "request_rate" else float(np.sqrt(level))
    hours = t_s / 3600.0
    phase = float(rng.uniform(0, 24))
    daily_amp = sigma * float(rng.uniform(*spec.daily))
    weekly_amp = sigma * float(rng.uniform(*spec.weekly))
    day_shape = np.sin(2 * np.pi * (hours - phase) / 24) + 0.3 * np.sin(4 * np.pi * (hours - phase) / 24)
    weekend = ((hours // 24) % 7 >= 5).astype(float)
    season = daily_amp * day_shape - weekly_amp * weekend
    trend = sigma * float(rng.uniform(-2, 2)) * (t_s / t_s[-1])
    if kind == "disk":  # disks fill up
        trend = sigma * float(rng.uniform(2, 8)) * (t_s / t_s[-1])
    wander = _ar1(rng, n, 0.98) * sigma * float(rng.uniform(0.1, 0.6))
    base = level + trend + wander
    seasonal = season.copy()

    # benign level changes: not labelled, the detector must live with them
    benign = int(rng.random() < 0.35) + int(rng.random() < 0.1)
    for _ in range(benign):
        at = int(rng.integers(int(0.1 * n), n))
        base[at:] += sigma * float(rng.uniform(2, 4)) * float(rng.choice((-1, 1)))

    incidents, effects = _incidents(rng, n, interval, seasonal_strong=daily_amp >= 2 * sigma)
    for effect in effects:
        base, seasonal = effect(base, seasonal, sigma, t_s)
    mean = base + seasonal
    value = _noisy(rng, mean, sigma, noise, level)
    for inc_kind, a, b in incidents:  # after the noise: a stuck sensor or a stopped machine has none
        if inc_kind == "flatline":
            value[a:b] = value[a - 1]
        elif inc_kind == "shutdown":
            value[a:b] = np.abs(rng.normal(0, 0.002 * level, b - a)) if rng.random() < 0.5 else 0.0
    if spec.floor is not None:
        value = np.maximum(value, spec.floor)
    if spec.ceiling is not None:
        value = np.minimum(value, spec.ceiling)

    keep = np.ones(n, bool)  # missing stretches: a collector down, a gap in the export
    for _ in range(int(rng.integers(0, 3))):
        at, span = int(rng.integers(0, n)), max(2, int(n * rng.uniform(0.002, 0.02)))
        keep[at:at + span] = False
    for _, a, _end in incidents:
        keep[a] = True  # the label is a row of the file, as in the published corpora
    ts = START_MS + t_s[keep].astype(np.int64) * 1000
    labelled = tuple(Incident(k, START_MS + int(t_s[a]) * 1000, START_MS + int(t_s[min(b, n - 1)]) * 1000)
                     for k, a, b in incidents)
    return MetricStream(seed, kind, noise, interval, ts, value[keep], labelled, benign)


def _ar1(rng: np.random.Generator, n: int, phi: float) -> np.ndarray:
    e = rng.normal(0, np.sqrt(1 - phi * phi), n)
    out = np.empty(n)
    acc = 0.0
    for i in range(n):
        acc = phi * acc + e[i]
        out[i] = acc
    return out


def _noisy(rng: np.random.Generator, mean: np.ndarray, sigma: float, noise: str, level: float) -> np.ndarray:
    n = len(mean)
    if noise == "counts":
        counts: np.ndarray = rng.poisson(np.maximum(mean, 0.0)).astype(float)
        return counts
    if noise == "heavy":
        heavy: np.ndarray = mean + sigma * rng.standard_t(3, n) / np.sqrt(3.0)
        return heavy
    if noise == "bursty":  # short positive bursts now and then
        bursts = (rng.random(n) < 0.01) * rng.exponential(3 * sigma, n)
        return mean + sigma * rng.normal(0, 1, n) + bursts
    x = mean + sigma * rng.normal(0, 1, n)
    if noise == "quantised":
        step = 10 ** np.floor(np.log10(max(sigma, 1e-9)))  # about one noise sd per step
        x = np.round(x / step) * step
    return x


def _incidents(rng: np.random.Generator, n: int, interval: int, *,
               seasonal_strong: bool) -> tuple[list[tuple[str, int, int]], list[Any]]:
    """1-4 incidents after the first 20 %, apart from each other; with how each changes the signal."""
    count = int(rng.integers(1, 5))
    per_day = DAY_S // interval
    slots = np.sort(rng.choice(np.arange(count * 4), count, replace=False))
    span = (0.95 - 0.2) * n / (count * 4)
    chosen: list[tuple[str, int, int]] = []
    effects = []
    kinds = [k for k in INCIDENTS if k != "seasonality_break" or seasonal_strong]
    for slot in slots:
        at = int(0.2 * n + (slot + rng.uniform(0.1, 0.6)) * span)
        k = kinds[int(rng.integers(len(kinds)))]
        sign = float(rng.choice((-1, 1)))
        size = float(rng.uniform(4, 10))
        if k in ("spike", "dip"):
            dur = int(rng.integers(1, 4))
            sgn = 1.0 if k == "spike" else -1.0
            effects.append(_add(at, at + dur, lambda m, s, sz=size * 1.5, g=sgn: g * sz * s * np.ones(m)))
        elif k == "level_shift":  # a shift that precedes a failure: it lasts until repaired, a day to a week
            dur = int(per_day * rng.uniform(1, 7))
            effects.append(_add(at, at + dur, lambda m, s, sz=size, g=sign: g * sz * s * np.ones(m)))
        elif k == "ramp":  # a slow ramp to failure over half a day to 4 days, then repaired
            dur = max(6, int(per_day * rng.uniform(0.5, 4)))
            effects.append(_add(at, at + dur, lambda m, s, sz=size * 1.5, g=sign: g * sz * s * np.linspace(0, 1, m)))
        elif k == "variance_burst":
            dur = max(4, int(per_day * rng.uniform(0.1, 1)))
            noise = rng.normal(0, 1, dur) * float(rng.uniform(4, 8))
            effects.append(_add(at, at + dur, lambda m, s, e=noise: e[:m] * s))
        elif k == "flatline":
            dur = max(6, int(per_day * rng.uniform(0.25, 2)))
            effects.append(_none())
        elif k == "seasonality_break":  # the daily pattern is gone (or turned around) for 1-3 days
            dur = int(per_day * rng.uniform(1, 3))
            effects.append(_season(at, at + dur, flip=bool(rng.random() < 0.5)))
        else:  # shutdown
            dur = max(3, int(per_day * rng.uniform(0.1, 1)))
            effects.append(_none())
        chosen.append((k, at, min(at + dur, n - 1)))
    return chosen, effects


def _add(a: int, b: int, shape):  # type: ignore[no-untyped-def]
    def effect(base, seasonal, sigma, t_s):  # type: ignore[no-untyped-def]
        base = base.copy()
        m = len(base[a:b])
        base[a:b] += shape(m, sigma)
        return base, seasonal
    return effect


def _season(a: int, b: int, flip: bool):  # type: ignore[no-untyped-def]
    def effect(base, seasonal, sigma, t_s):  # type: ignore[no-untyped-def]
        seasonal = seasonal.copy()
        seasonal[a:b] = -seasonal[a:b] if flip else 0.0
        return base, seasonal
    return effect


def _none() -> Any:
    def effect(base, seasonal, sigma, t_s):  # type: ignore[no-untyped-def]
        return base, seasonal
    return effect
