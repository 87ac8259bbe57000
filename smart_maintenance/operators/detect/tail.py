"""A stream's own extreme value: the level it exceeds with a given small probability (SPOT).

Siffer et al., "Anomaly Detection in Streams with Extreme Value Theory"
(KDD 2017): the values above a high quantile `t` of a stream (its peaks)
follow a generalised Pareto distribution whatever the stream's own law
(Pickands-Balkema-de Haan), so the value exceeded with probability `risk`
is

    z_q = t + sigma / gamma * ((risk / p_t) ** -gamma - 1)

with `p_t` the share of values above `t` and `sigma`, `gamma` the Pareto
scale and shape fitted to the peaks (here by the method of moments, which
needs no iterations). A gaussian stream gets a threshold a few of its
deviations out, a heavy-tailed or bursty one a much higher one: the same
`risk` means the same false-alarm rate on both, which one fixed threshold
cannot give.

`t` is river's streaming P² quantile (`stats.Quantile`); the peaks are the
latest `max_peaks` values above it (so the fit follows a stream that
changes). As SPOT does, a caller does not learn a value that reached the
threshold: an anomaly must not widen the tail that judges the next one.

Guarantees: deterministic; pickles and deep-copies; `threshold()` is None
until `min_peaks` peaks were seen.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
from river import stats


@dataclass
class TailThreshold:
    """The value a stream exceeds with probability `risk`, from a Pareto fit to its peaks over a quantile.

    >>> rng = np.random.default_rng(7)
    >>> gauss, heavy = TailThreshold(risk=1e-4), TailThreshold(risk=1e-4)
    >>> for g, h in zip(rng.normal(size=3000), rng.standard_t(2, size=3000)):
    ...     gauss.update(float(g)); heavy.update(float(h))
    >>> 3.0 < gauss.threshold() < 5.0, heavy.threshold() > 2 * gauss.threshold()
    (True, True)
    """

    risk: float = 1e-4
    level: float = 0.9  # the quantile `t` over which values are peaks
    min_peaks: int = 10
    max_peaks: int = 256
    quantile: stats.Quantile = field(default=None)  # type: ignore[assignment]  # set in __post_init__
    peaks: list[float] = field(default_factory=list)
    n: int = 0
    _cached: float | None = None
    _stale: bool = True

    def __post_init__(self) -> None:
        if not 0 < self.risk < 1 - self.level < 1:
            raise ValueError("need 0 < risk < 1 - level < 1")
        if not 2 <= self.min_peaks <= self.max_peaks:
            raise ValueError("need 2 <= min_peaks <= max_peaks")
        if self.quantile is None:
            self.quantile = stats.Quantile(self.level)

    def update(self, x: float) -> None:
        """Learn one value (a caller leaves out the values that reached `threshold()`)."""
        if not math.isfinite(x):
            return
        t = self.quantile.get()  # None until P² has its first five values
        if t is not None and x > t:
            self.peaks.append(x)
            if len(self.peaks) > self.max_peaks:
                del self.peaks[0]
            self._stale = True
        self.quantile.update(x)
        self.n += 1
        if self.n % 32 == 0:  # the quantile moves slowly: refit now and then without a new peak
            self._stale = True

    def threshold(self) -> float | None:
        """The value exceeded with probability `risk` (None: too few peaks yet)."""
        if self._stale:
            self._cached = self._fit()
            self._stale = False
        return self._cached

    def _fit(self) -> float | None:
        q = self.quantile.get()
        if len(self.peaks) < self.min_peaks or q is None:
            return None
        t = float(q)
        y = np.asarray(self.peaks) - t
        y = y[y > 0]
        if len(y) < self.min_peaks:
            return None
        m, v = float(y.mean()), float(y.var())
        if v <= 0 or m <= 0:
            return t + m  # peaks all alike (quantised values): the largest step seen is the tail
        ratio = m * m / v
        gamma = min(max(0.5 * (1 - ratio), -0.5), 0.5)  # method of moments, kept where it is stable
        sigma = m * (1 - gamma)  # the peaks' mean is sigma / (1 - gamma)
        tail = 1 - self.level
        if abs(gamma) < 1e-6:
            return t + sigma * math.log(tail / self.risk)
        return t + sigma / gamma * (math.pow(self.risk / tail, -gamma) - 1)
