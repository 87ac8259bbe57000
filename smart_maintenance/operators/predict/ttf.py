"""Time to failure: when does one feature's forecast cross its failure threshold?

Input is the recent history of one degrading feature of one asset (window
means, epoch ms and values) and the sensor's failure threshold with its
direction (`above`: failure when the value rises to it; `below`: when it falls
to it). Output is a `TtfEstimate`: the first time the forecast mean crosses the
threshold within the horizon, and an interval from the first crossing times of
the forecast's lower and upper bands.

Methods, chosen by `estimate_ttf` and named in `TtfEstimate.method`:

- `prophet`: Prophet's piecewise-linear trend (plus daily seasonality when the
  history spans more than two days) fitted to the log of the deviation from
  the healthy level (see `toward_failure`), its interval from Prophet's own
  uncertainty (`yhat_lower` / `yhat_upper`: future trend changes and
  observation noise). Why the log: on the raw values Prophet extrapolates
  the last slope, and on accelerating wear it forecast failure late (median
  1.8x the true remaining time on the simulator's alarms, intervals holding
  the truth 5% of the time); on the log scale the median is 0.88x (p10-p90
  0.68-1.09x) and 98% of the 80% intervals hold the true failure time, most
  of them with an open upper bound (`bench/prediction_latency.py`). Linear
  drifts come out early (about 0.5x): the safe side for maintenance;
- `trend_linear` / `trend_quadratic`: a least-squares polynomial in time
  (the better by BIC), for histories too short for Prophet; its band is the
  fit's prediction interval;
- `observed`: the last few points are already beyond the threshold: failure is
  now, no model needed;
- `insufficient_history`: too few points to say anything.

Why the interval is read this way: at every future time the upper band is at
or above the mean and the lower band at or under it, so for a rising failure
the upper band crosses first (the earliest plausible failure, `lo_ms`) and the
lower band last (`hi_ms`); falling failures swap the bands. `hi_ms` None: the
latest plausible failure lies beyond the horizon (open-ended); `lo_ms` None:
no failure is plausible within it; `lo_ms` can be set while `failure_at_ms`
is None: failure is not expected within the horizon but plausible from
`lo_ms`. (The quantiles of the crossing times of Prophet's trend sample paths,
without observation noise, held the truth only 38% of the time: too narrow.)

The horizon is capped at `max_extrapolation` times the history's span: a trend
seen over one day says little about next month.

Everything here is pure and deterministic: Prophet's uncertainty sampling
draws from numpy's global RNG, so `prophet_ttf` seeds it for the call and
restores it after (run it in a process pool, not a thread pool, where two
calls could interleave on that global state).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from statistics import NormalDist
from typing import Any, Literal

import numpy as np

Direction = Literal["above", "below"]
HOUR_MS = 3_600_000


@dataclass(frozen=True)
class TtfParams:
    """How a time to failure is estimated; carried in every request so a prediction can be reproduced."""

    max_points: int = 288  # fit on at most this many points (time-binned means beyond it)
    min_prophet_points: int = 48  # fewer points: the trend fallback
    min_trend_points: int = 4
    beyond_points: int = 3  # the mean of this many last points beyond the threshold: failed already
    max_extrapolation: float = 3.0  # horizon <= this x the history's span
    grid_points: int = 480  # forecast resolution over the horizon (crossings are interpolated)
    interval_width: float = 0.8
    uncertainty_samples: int = 200
    changepoint_prior_scale: float = 0.5  # wear bends the trend: let it follow (0.05: late, overconfident)
    changepoint_range: float = 0.95  # degradation accelerates late: allow changepoints near the end
    transform: Literal["log_deviation", "none"] = "log_deviation"  # see `toward_failure`
    base_fraction: float = 0.25  # the history's first share that sets the healthy level
    seed: int = 0

    def __post_init__(self) -> None:
        if not 2 <= self.min_trend_points <= self.min_prophet_points <= self.max_points:
            raise ValueError("need 2 <= min_trend_points <= min_prophet_points <= max_points")
        if not 0 < self.interval_width < 1 or self.uncertainty_samples < 10:
            raise ValueError("need 0 < interval_width < 1 and uncertainty_samples >= 10")
        if self.max_extrapolation <= 0 or self.grid_points < 10 or self.beyond_points < 1:
            raise ValueError("need max_extrapolation > 0, grid_points >= 10, beyond_points >= 1")
        if not 0 < self.changepoint_range <= 1 or self.changepoint_prior_scale <= 0:
            raise ValueError("need 0 < changepoint_range <= 1 and changepoint_prior_scale > 0")
        if self.transform not in ("log_deviation", "none") or not 0 < self.base_fraction <= 1:
            raise ValueError("transform must be 'log_deviation' or 'none', and 0 < base_fraction <= 1")


@dataclass(frozen=True)
class TtfEstimate:
    """When the feature is expected to reach its failure threshold (epoch ms), or None."""

    failure_at_ms: int | None
    lo_ms: int | None  # earliest plausible crossing (None: not within the horizon)
    hi_ms: int | None  # latest plausible crossing (None: beyond the horizon, open-ended)
    method: str
    horizon_ms: int  # the effective horizon after the end of the history
    inputs: dict[str, Any] = field(default_factory=dict)


def clean_history(ts_ms: np.ndarray, values: np.ndarray, max_points: int) -> tuple[np.ndarray, np.ndarray]:
    """Finite points in time order; more than `max_points` become time-binned means.

    >>> t, v = clean_history(np.arange(6) * 10, np.array([1, 2, np.nan, 4, 5, 6.0]), 2)
    >>> t.tolist(), v.tolist()
    ([5, 40], [1.5, 5.0])
    """
    ts = np.asarray(ts_ms, dtype=np.int64)
    v = np.asarray(values, dtype=np.float64)
    if ts.shape != v.shape or ts.ndim != 1:
        raise ValueError(f"ts_ms and values must be 1-d arrays of one length, got {ts.shape} and {v.shape}")
    ok = np.isfinite(v)
    ts, v = ts[ok], v[ok]
    order = np.argsort(ts, kind="stable")
    ts, v = ts[order], v[order]
    if len(ts) <= max_points:
        return ts, v
    edges = np.linspace(ts[0], ts[-1], max_points + 1)
    b = np.clip(np.searchsorted(edges, ts, side="right") - 1, 0, max_points - 1)
    n = np.bincount(b, minlength=max_points)
    keep = n > 0
    t_mean = np.bincount(b, weights=(ts - ts[0]).astype(np.float64), minlength=max_points)[keep] / n[keep]
    v_mean = np.bincount(b, weights=v, minlength=max_points)[keep] / n[keep]
    return ts[0] + np.round(t_mean).astype(np.int64), v_mean


def first_crossing(t: np.ndarray, y: np.ndarray, threshold: float, direction: Direction) -> int | None:
    """The first time `y` reaches the threshold (linear between grid points), or None.

    >>> first_crossing(np.array([0, 10, 20]), np.array([0.0, 1.0, 3.0]), 2.0, "above")
    15
    """
    hit = y >= threshold if direction == "above" else y <= threshold
    if not hit.any():
        return None
    i = int(np.argmax(hit))
    if i == 0:
        return int(t[0])
    y0, y1 = float(y[i - 1]), float(y[i])
    frac = (threshold - y0) / (y1 - y0) if y1 != y0 else 1.0
    return round(float(t[i - 1]) + frac * float(t[i] - t[i - 1]))


def _check_direction(direction: str) -> None:
    if direction not in ("above", "below"):
        raise ValueError(f"direction must be 'above' or 'below', got {direction!r}")


def _base_inputs(ts: np.ndarray, threshold: float, direction: str, horizon_ms: int, eff: int) -> dict[str, Any]:
    return {
        "n_points": len(ts),
        "history_start_ms": int(ts[0]) if len(ts) else None,
        "history_end_ms": int(ts[-1]) if len(ts) else None,
        "threshold": float(threshold),
        "direction": direction,
        "horizon_requested_ms": int(horizon_ms),
        "horizon_ms": int(eff),
    }


def _interval(
    grid: np.ndarray, mean: np.ndarray, lower: np.ndarray, upper: np.ndarray, threshold: float, direction: Direction
) -> tuple[int | None, int | None, int | None]:
    """First crossings of the mean and of the bands, as (failure_at, lo, hi)."""
    at = first_crossing(grid, mean, threshold, direction)
    early, late = (upper, lower) if direction == "above" else (lower, upper)
    lo = first_crossing(grid, early, threshold, direction)
    hi = first_crossing(grid, late, threshold, direction)
    if at is not None:  # sampled bands can graze the mean: keep lo <= at <= hi
        lo = at if lo is None else min(lo, at)
        hi = None if hi is None else max(hi, at)
    return at, lo, hi


def _grid(t_end: int, horizon: int, points: int) -> np.ndarray:
    return t_end + np.round(np.linspace(0.0, float(horizon), points + 1)).astype(np.int64)


def trend_ttf(
    ts_ms: np.ndarray,
    values: np.ndarray,
    threshold: float,
    direction: Direction,
    *,
    horizon_ms: int,
    params: TtfParams | None = None,
) -> TtfEstimate:
    """Fast fallback: a linear or quadratic trend in time (lower BIC wins), microseconds per call.

    The band is the fit's prediction interval (parameter covariance plus
    residual noise) at `params.interval_width`.
    """
    p = params or TtfParams()
    _check_direction(direction)
    ts, v = clean_history(ts_ms, values, p.max_points)
    span = int(ts[-1] - ts[0]) if len(ts) else 0
    eff = int(min(horizon_ms, p.max_extrapolation * span))
    inputs = _base_inputs(ts, threshold, direction, horizon_ms, eff)
    if len(ts) < max(p.min_trend_points, 4) or span <= 0:
        return TtfEstimate(None, None, None, "insufficient_history", eff, inputs)
    x = (ts - ts[-1]) / HOUR_MS  # hours before the end: well conditioned
    best: tuple[float, int, np.ndarray, np.ndarray, float] | None = None
    for deg in (1, 2) if len(ts) >= 6 else (1,):
        a = np.vander(x, deg + 1)
        coef, *_ = np.linalg.lstsq(a, v, rcond=None)
        resid = v - a @ coef
        dof = len(v) - deg - 1
        s2 = float(resid @ resid) / dof
        bic = len(v) * np.log(max(float(resid @ resid), 1e-300) / len(v)) + (deg + 1) * np.log(len(v))
        cov = s2 * np.linalg.pinv(a.T @ a)
        if best is None or bic < best[0] - 2.0:  # the quadratic must earn its keep
            best = (bic, deg, coef, cov, s2)
    _, deg, coef, cov, s2 = best  # type: ignore[misc]
    grid = _grid(int(ts[-1]), eff, p.grid_points)
    g = np.vander((grid - ts[-1]) / HOUR_MS, deg + 1)
    mean = g @ coef
    se = np.sqrt(np.einsum("ij,jk,ik->i", g, cov, g) + s2)
    z = NormalDist().inv_cdf(0.5 + p.interval_width / 2)
    at, lo, hi = _interval(grid, mean, mean - z * se, mean + z * se, threshold, direction)
    inputs |= {"degree": deg, "coef_per_hour": [round(float(c), 9) for c in coef], "interval_width": p.interval_width}
    return TtfEstimate(at, lo, hi, "trend_quadratic" if deg == 2 else "trend_linear", eff, inputs)


_PROPHET: list[type] = []


def _quiet_prophet() -> type:
    """Import Prophet once with its chatter off (plotly warning, cmdstanpy progress logs).

    The class returned builds its component matrix without `pd.crosstab`: Prophet calls that three
    times per fit and forecast, and on our short histories it cost about as much as the fit itself
    (cProfile of `prophet_ttf`: 3.2 s of 7.9 s in `regressor_column_matrix`). The matrix is the same
    (a unit test compares it with Prophet's), so are the forecasts.
    """
    if _PROPHET:
        return _PROPHET[0]
    logging.getLogger("prophet.plot").disabled = True
    logging.getLogger("prophet").setLevel(logging.ERROR)  # "falling back to Newton" is routine
    logging.getLogger("cmdstanpy").disabled = True
    import pandas as pd
    from prophet import Prophet

    class LeanProphet(Prophet):
        def regressor_column_matrix(self, seasonal_features: Any, modes: Any) -> tuple[Any, Any]:
            """Prophet's `regressor_column_matrix` with the binary matrix built in numpy."""
            pairs = [(i, str(c).split("_delim_")[0]) for i, c in enumerate(seasonal_features.columns)]

            def group(name: str, members: Any) -> None:  # Prophet's add_group_component, on a list
                wanted = set(members)
                cols = list(dict.fromkeys(i for i, c in pairs if c in wanted))
                pairs.extend((i, name) for i in cols)

            if self.train_holiday_names is not None:
                group("holidays", self.train_holiday_names.unique())
            for mode in ("additive", "multiplicative"):
                group(mode + "_terms", modes[mode])
                group("extra_regressors_" + mode, [r for r, p in self.extra_regressors.items() if p["mode"] == mode])
                modes[mode].append(mode + "_terms")
                modes[mode].append("extra_regressors_" + mode)
            modes[self.holidays_mode].append("holidays")
            rows = sorted({i for i, _ in pairs})
            names = sorted({c for _, c in pairs})
            row_at, name_at = {r: k for k, r in enumerate(rows)}, {c: k for k, c in enumerate(names)}
            counts = np.zeros((len(rows), len(names)), np.int64)
            for i, c in pairs:
                counts[row_at[i], name_at[c]] += 1
            component_cols = pd.DataFrame(counts, index=pd.Index(rows, name="col"),
                                          columns=pd.Index(names, name="component"))
            for name in ("additive_terms", "multiplicative_terms"):
                if name not in component_cols:
                    component_cols[name] = 0
            component_cols = component_cols.drop("zeros", axis=1, errors="ignore")
            if max(component_cols["additive_terms"] + component_cols["multiplicative_terms"]) > 1:
                raise Exception("A bug occurred in seasonal components.")
            if self.train_component_cols is not None:
                component_cols = component_cols[self.train_component_cols.columns]
                if not component_cols.equals(self.train_component_cols):
                    raise Exception("A bug occurred in constructing regressors.")
            return component_cols, modes

    _PROPHET.append(LeanProphet)
    return LeanProphet


def toward_failure(
    v: np.ndarray, threshold: float, direction: Direction, transform: str, base_fraction: float
) -> tuple[np.ndarray, float, dict[str, Any]] | None:
    """The series on a scale where failure is a rise to a threshold, and that threshold.

    `log_deviation`: log of the deviation from the healthy level (the median of
    the history's first `base_fraction`), floored at its noise scale (MAD):
    wear that grows exponentially, the usual shape (bearings, the simulator),
    becomes a straight line Prophet extrapolates well; a linear drift is then
    forecast early, the safe side. `none`: the values, negated for `below`.
    The transform is increasing toward failure, so crossing times are the same
    as on the original scale. None when the healthy level is already past the
    threshold (the log is undefined): the caller uses `none`.
    """
    sign = 1.0 if direction == "above" else -1.0
    if transform == "none":
        return sign * v, sign * threshold, {"transform": "none"}
    head = v[: max(3, int(len(v) * base_fraction))]
    base = float(np.median(head))
    d_thr = sign * (threshold - base)
    if d_thr <= 0:
        return None
    scale = max(1.4826 * float(np.median(np.abs(head - base))), 1e-3 * d_thr)
    z = np.log(np.maximum(sign * (v - base), 0.0) + scale)
    info = {"transform": "log_deviation", "base": round(base, 6), "noise_scale": round(scale, 6)}
    return z, float(np.log(d_thr + scale)), info


def prophet_ttf(
    ts_ms: np.ndarray,
    values: np.ndarray,
    threshold: float,
    direction: Direction,
    *,
    horizon_ms: int,
    params: TtfParams | None = None,
) -> TtfEstimate:
    """Fit Prophet to the history and read the crossing times off its forecast (~50 ms on 288 points)."""
    import pandas as pd

    p = params or TtfParams()
    _check_direction(direction)
    ts, v = clean_history(ts_ms, values, p.max_points)
    span = int(ts[-1] - ts[0]) if len(ts) else 0
    eff = int(min(horizon_ms, p.max_extrapolation * span))
    inputs = _base_inputs(ts, threshold, direction, horizon_ms, eff)
    if len(ts) < p.min_trend_points or span <= 0:
        return TtfEstimate(None, None, None, "insufficient_history", eff, inputs)
    scaled = toward_failure(v, threshold, direction, p.transform, p.base_fraction)
    if scaled is None:
        scaled = toward_failure(v, threshold, direction, "none", p.base_fraction)
    z, z_thr, info = scaled  # type: ignore[misc]
    daily = span > 2 * 24 * HOUR_MS
    model = _quiet_prophet()(
        growth="linear",
        daily_seasonality=daily,
        weekly_seasonality=False,
        yearly_seasonality=False,
        interval_width=p.interval_width,
        uncertainty_samples=p.uncertainty_samples,
        changepoint_prior_scale=p.changepoint_prior_scale,
        changepoint_range=p.changepoint_range,
    )
    grid = _grid(int(ts[-1]), eff, p.grid_points)
    saved = np.random.get_state()
    try:
        np.random.seed(p.seed)
        model.fit(pd.DataFrame({"ds": pd.to_datetime(ts, unit="ms"), "y": z}), seed=p.seed)
        fc = model.predict(pd.DataFrame({"ds": pd.to_datetime(grid, unit="ms")}))
    except (RuntimeError, ValueError) as e:  # the optimiser gave up on this series: say so, use the trend
        est = trend_ttf(ts, v, threshold, direction, horizon_ms=horizon_ms, params=p)
        return TtfEstimate(est.failure_at_ms, est.lo_ms, est.hi_ms, est.method, est.horizon_ms,
                           est.inputs | {"prophet_error": f"{type(e).__name__}: {e}"[:200]})
    finally:
        np.random.set_state(saved)
    mean, lower, upper = (fc[c].to_numpy(np.float64) for c in ("yhat", "yhat_lower", "yhat_upper"))
    at, lo, hi = _interval(grid, mean, lower, upper, z_thr, "above")
    inputs |= info | {
        "daily_seasonality": daily,
        "interval_width": p.interval_width,
        "uncertainty_samples": p.uncertainty_samples,
        "changepoint_prior_scale": p.changepoint_prior_scale,
        "changepoint_range": p.changepoint_range,
        "seed": p.seed,
    }
    return TtfEstimate(at, lo, hi, "prophet", eff, inputs)


def estimate_ttf(
    ts_ms: np.ndarray,
    values: np.ndarray,
    threshold: float,
    direction: Direction,
    *,
    horizon_ms: int,
    params: TtfParams | None = None,
) -> TtfEstimate:
    """The method the history supports: observed, Prophet, trend, or insufficient_history."""
    p = params or TtfParams()
    _check_direction(direction)
    if horizon_ms <= 0:
        raise ValueError(f"horizon_ms must be positive, got {horizon_ms}")
    ts, v = clean_history(ts_ms, values, p.max_points)
    if len(ts) >= p.beyond_points:
        level = float(np.mean(v[-p.beyond_points :]))
        if (level >= threshold) if direction == "above" else (level <= threshold):
            end = int(ts[-1])
            inputs = _base_inputs(ts, threshold, direction, horizon_ms, horizon_ms) | {"level": round(level, 6)}
            return TtfEstimate(end, end, end, "observed", int(horizon_ms), inputs)
    if len(ts) >= p.min_prophet_points:
        return prophet_ttf(ts, v, threshold, direction, horizon_ms=horizon_ms, params=p)
    return trend_ttf(ts, v, threshold, direction, horizon_ms=horizon_ms, params=p)
