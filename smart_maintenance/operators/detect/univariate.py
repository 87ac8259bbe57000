"""A streaming detector for an asset with one sensor: a metric stream.

With one sensor there is nothing to correlate: the multivariate models see
five features of one signal. This detector judges each window of the
signal against its own recent past, in five ways, and keeps the largest:

- level: the window mean against the expected level, a slow exponential
  mean plus a time-of-day profile (24 hourly offsets, learned only when the
  window is shorter than 6 hours), in units of the usual residual;
- spike and dip: how far the window's max (min) goes above (below) its own
  mean, against the usual excursion, so a single reading that jumps is seen
  although the window mean barely moves;
- variance: the window's spread against the usual spread (log ratio), a
  burst of noise, or (`quiet`) a spread far under it, a value stuck;

and, over windows, a trend: two one-sided CUSUMs (`cusum.py`) on the signed
level residual, in usual residuals, less an allowance `trend_k`. The level
follows a slow ramp and lags it by a roughly constant amount that no single
window shows; the sum of those lags does, and it scores `certain_z` when it
reaches `trend_h`. Only a window's own deviation slows learning (a sum that
did would keep a lagging level lagging, and alarming, for ever).

Each of the window deviations is then put on its stream's own scale
(`tail.py`, SPOT): the value that deviation exceeds once in `1 / tail_risk`
windows on this stream becomes `certain_z`, above `flag_z` only. A calm
gaussian stream's spike of six usual deviations is then certain, while a
heavy-tailed or bursty stream, whose excursions reach that every day, needs
one as far out in its own tail.

It scores before it learns, and learns a flagged window four times slower
(`flagged_rate`): a lasting change becomes the new normal in a few dozen
windows instead of alarming for ever, one that comes and goes is not learned.
A window whose deviation reaches `certain_z` is `certain`: validation
confirms it without waiting for persistence (a one-window spike is the whole
incident).

The statistics are exponential means with a rate chosen per update (a plain
average over the first windows, the slower rate for flagged ones): river's
`stats.EWMean` fixes its fading factor when built, so it cannot do either.
The state pickles and deep-copies.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from smart_maintenance.operators.detect.cusum import Cusum
from smart_maintenance.operators.detect.tail import TailThreshold
from smart_maintenance.operators.profile import COUNT, MAX, MEAN, MIN, STD

HOUR_MS = 3_600_000
_EPS = 1e-9


@dataclass(frozen=True)
class UnivariateConfig:
    rate: float = 0.05  # exponential memory of the usual values, per window (about 20 windows)
    flagged_rate: float = 0.25  # a flagged window is learned at this share of `rate`
    flag_z: float = 4.0  # deviation above which a window counts as flagged (learned slowly)
    certain_z: float = 9.0  # deviation that confirms a window on its own (no persistence)
    z_scale: float = 5.0  # deviation that maps to a score of 0.5
    season_max_ms: int = 6 * HOUR_MS  # windows longer than this average the day out: no time-of-day profile
    trend_k: float = 2.0  # CUSUM allowance, in usual residuals: a residual above it adds to the trend sum
    trend_h: float = 6.0  # trend sum that makes a window certain (it scores certain_z * sum / trend_h)
    noise_share: float = 0.25  # the usual residual is learned at this share of the level's rate
    # each deviation's own tail (`tail.py`): the value it exceeds with this probability per window is made
    # `certain_z`; None: `certain_z` is the same number of usual deviations on every stream
    tail_risk: float | None = 1e-4
    tail_floor: float = 6.0  # the calibrated threshold is never under this (a tail fitted on too calm a stream)
    quiet: bool = True  # a window's spread far under the usual counts too (judged against its own tail)

    def __post_init__(self) -> None:
        if not 0 < self.rate < 1 or not 0 < self.flagged_rate <= 1:
            raise ValueError("need 0 < rate < 1 and 0 < flagged_rate <= 1")
        if not 0 < self.flag_z <= self.certain_z or self.z_scale <= 0:
            raise ValueError("need 0 < flag_z <= certain_z and z_scale > 0")
        if self.trend_k < 0 or self.trend_h <= 0:
            raise ValueError("need trend_k >= 0 and trend_h > 0")
        if not 0 < self.noise_share <= 1:
            raise ValueError("need 0 < noise_share <= 1")
        if self.tail_risk is not None and not 0 < self.tail_risk < 0.1:
            raise ValueError("need 0 < tail_risk < 0.1")
        if self.tail_floor <= self.flag_z:
            raise ValueError("need tail_floor > flag_z")


@dataclass
class EW:
    """An exponential mean whose rate is given with each value."""

    value: float = 0.0
    n: int = 0

    def update(self, x: float, rate: float) -> None:
        self.value = x if self.n == 0 else self.value + rate * (x - self.value)
        self.n += 1

    def get(self) -> float:
        return self.value


@dataclass
class UnivariateState:
    """One sensor's usual level, excursions and spread, and its time-of-day profile."""

    windows: int = 0
    level: EW = field(default_factory=EW)
    resid: EW = field(default_factory=EW)  # usual |residual| of the window mean
    up: EW = field(default_factory=EW)  # usual max - mean
    up_dev: EW = field(default_factory=EW)
    down: EW = field(default_factory=EW)  # usual mean - min
    down_dev: EW = field(default_factory=EW)
    log_std: EW = field(default_factory=EW)
    log_std_dev: EW = field(default_factory=EW)
    season: np.ndarray = field(default_factory=lambda: np.zeros(24))  # offset from the level, per hour of day
    season_n: np.ndarray = field(default_factory=lambda: np.zeros(24, np.int64))
    rise: Cusum = field(default_factory=Cusum)  # residuals above the usual, summed
    fall: Cusum = field(default_factory=Cusum)
    tails: dict[str, TailThreshold] = field(default_factory=dict)  # level, up, down, var, quiet: each one's tail


def _dev(x: float, mean: EW, dev: EW, floor: float) -> float:
    return (x - mean.get()) / max(dev.get(), floor, _EPS)


def score_windows(
    state: UnivariateState | None, values: np.ndarray, starts: np.ndarray, window_ms: int, warmup: int,
    cfg: UnivariateConfig,
) -> tuple[UnivariateState, np.ndarray]:
    """Deviation (in usual units, >= 0) of each window of one sensor; NaN while warming up or without data.

    `values[w]` is the sensor's feature row (`profile.FEATURES` order).

    >>> rng = np.random.default_rng(0)
    >>> x = np.zeros((60, 8)); x[:, MEAN] = 10 + rng.normal(0, 0.1, 60); x[:, STD] = 1.0
    >>> x[:, MAX] = x[:, MEAN] + 2 + rng.normal(0, 0.1, 60); x[:, MIN] = x[:, MEAN] - 2; x[:, COUNT] = 30
    >>> x[50, MAX] += 5  # one reading jumps
    >>> _, z = score_windows(None, x, np.arange(60) * 600_000, 600_000, 20, UnivariateConfig())
    >>> bool(np.isnan(z[:20]).all()), bool(z[20:50].max() < 4), bool(z[50] > 9)
    (True, True, True)
    """
    s = state if state is not None else UnivariateState()
    seasonal = 0 < window_ms <= cfg.season_max_ms
    z = np.full(len(values), np.nan)
    for w in range(len(values)):
        z_window = 0.0
        mean, std, lo, hi, count = (float(values[w, f]) for f in (MEAN, STD, MIN, MAX, COUNT))
        if not np.isfinite(mean) or count < 1:
            continue
        hour = int(starts[w] // HOUR_MS % 24)
        offset = float(s.season[hour]) if seasonal and s.season_n[hour] >= 2 else 0.0
        resid = mean - s.level.get() - offset if s.windows else 0.0
        up, down = hi - mean, mean - lo
        log_std = float(np.log(max(std, 0.0) + _EPS)) if np.isfinite(std) else s.log_std.get()
        if s.windows >= warmup:
            noise = max(s.resid.get(), 1e-3 * abs(s.level.get()), _EPS)
            z_level = abs(resid) / (1.25 * noise)
            z_up = _dev(up, s.up, s.up_dev, 0.1 * s.up.get())
            z_down = _dev(down, s.down, s.down_dev, 0.1 * s.down.get())
            z_var = _dev(log_std, s.log_std, s.log_std_dev, 0.1)
            z_quiet = -z_var if cfg.quiet else 0.0  # a spread that collapses: a value stuck, a flatline
            e = resid / (1.25 * noise)
            trend = max(s.rise.update(e, cfg.trend_k, cfg.trend_h), s.fall.update(-e, cfg.trend_k, cfg.trend_h))
            z_trend = cfg.certain_z * trend / cfg.trend_h
            if cfg.tail_risk is not None:
                z_level, z_up, z_down, z_var, z_quiet = (
                    _calibrate(s, name, z_c, cfg) for name, z_c in
                    (("level", z_level), ("up", z_up), ("down", z_down), ("var", z_var), ("quiet", z_quiet)))
            z_window = max(z_level, z_up, z_down, z_var, z_quiet, 0.0)
            z[w] = max(z_window, z_trend)
        # only the window's own deviation slows learning: were the sums to, a level that lags would lag for ever
        rate = cfg.rate * cfg.flagged_rate if z_window >= cfg.flag_z else cfg.rate
        # the usual residual is learned slower than the level: a ramp's lag builds up over `1 / rate` windows,
        # and a scale that followed as fast would take the lag for noise
        noise_rate = rate * cfg.noise_share
        _learn(s, rate, noise_rate, mean, resid, up, down, log_std)
        if seasonal and s.windows > 1:
            a = max(rate, 1.0 / (s.season_n[hour] + 1))
            s.season[hour] += a * (mean - s.level.get() - s.season[hour])
            s.season_n[hour] += 1
        s.windows += 1
    return s, z


def _calibrate(s: UnivariateState, name: str, z: float, cfg: UnivariateConfig) -> float:
    """Map a deviation so that its own tail threshold (at `tail_risk`) lands on `certain_z`; learn it.

    Only the tail moves: under `flag_z` a deviation is unchanged, above it is stretched (or squeezed) linearly
    so that the threshold becomes `certain_z`. A value that reached the threshold is not learned (SPOT).
    """
    assert cfg.tail_risk is not None  # noqa: S101 - the caller checks, narrows the type
    tail = s.tails.get(name)
    if tail is None:
        tail = s.tails[name] = TailThreshold(risk=cfg.tail_risk)
    thr = tail.threshold()
    if thr is None or z < thr:
        tail.update(z)
    if thr is None or z <= cfg.flag_z:
        return z
    thr = max(thr, cfg.tail_floor)
    return cfg.flag_z + (z - cfg.flag_z) * (cfg.certain_z - cfg.flag_z) / (thr - cfg.flag_z)


def _learn(s: UnivariateState, rate: float, noise_rate: float, mean: float, resid: float, up: float, down: float,
           log_std: float) -> None:
    """Fold one window in; the first windows are averaged plainly (the EW means start from them)."""
    r = max(rate, 1.0 / (s.windows + 1))
    noise = s.resid.get() if s.windows > 1 else abs(resid)
    s.resid.update(min(abs(resid), 4 * noise) if s.windows > 4 else abs(resid), max(noise_rate, 1.0 / (s.windows + 1)))
    s.up_dev.update(abs(up - s.up.get()) if s.windows else 0.0, r)
    s.down_dev.update(abs(down - s.down.get()) if s.windows else 0.0, r)
    s.log_std_dev.update(abs(log_std - s.log_std.get()) if s.windows else 0.0, r)
    s.level.update(mean, r)
    s.up.update(up, r)
    s.down.update(down, r)
    s.log_std.update(log_std, r)
