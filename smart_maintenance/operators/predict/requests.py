"""Time-to-failure predictions per asset: what to forecast, when, and the record it makes.

Per asset, `PredictionState` keeps a bounded history of window means of every
sensor (the last `history_windows` windows, float32: 288 windows x 5 sensors
pickle to ~8 KB), fed by `observe` from each `FeatureBatch`. When an asset
has an open machine alarm, `maybe_request` (rate limited per asset, on event
time) picks the leading degrading sensor and cuts a `PredictionRequest`: a
small, picklable, self-contained value. `predict(request)` turns it into a
`Prediction` (Prophet or a trend fallback, see `ttf.py`); it is pure and
deterministic, seeded from the request, so the same request gives the same
prediction in any process, on any run.

Keeping prediction off the hot path (the design for `dataflows/`)
-----------------------------------------------------------------
A prediction costs 40-90 ms (Prophet fit, forecast, 200 uncertainty
samples); detection of one window of one asset costs well under 1 ms. Called
inline, each prediction stalls every asset behind it (measured: detection
wall time x1.9, p99 per-block latency 5.5 -> 91 ms); offloaded as below,
x1.03 and 8 ms on 2 cores (`bench/prediction_latency.py`). So:

1. `track_alarms` also hands on the windows it judged: one keyed item
   `(asset_id, (FeatureBatch, [Alarm]))`. A `StatefulLogic` keyed by asset
   (`predict_ttf`) calls `advance` on it: history, alarms, rate limit, tens of
   microseconds. One item rather than two merged streams, so what is
   requested depends only on the asset's own ordered stream;
2. a request is *submitted* as `pool.submit(predict, request)` and `on_item`
   returns at once. The pool is one per worker process, created lazily on
   first use: `ProcessPoolExecutor(max_workers=1, mp_context=forkserver)`
   at nice 10 and idle priority until the flow waits for it
   (`dataflows/offload.py`) (never fork a process running Bytewax's
   threads; a process, not a thread, because a fit holds the GIL and
   Prophet samples from numpy's global RNG; idle, so detection keeps the
   CPU);
3. finished futures are emitted on later activations: every `on_item`, and
   `on_notify` with `notify_at` = now + 0.2 s while any are pending;
   `on_eof` waits for the rest, so a backfill loses none;
4. the snapshot is `(PredictionState, pending requests)`: after a resume the
   pending requests are submitted again and, `predict` being pure, give the
   same predictions with the same ids (sinks upsert by `prediction_id`).

Only *when* a prediction is emitted depends on the pool; its content depends
on the request alone, and every time in it is event time (`made_at` is the
window end), never the wall clock. Downstream, the work-order step keyed by
asset keeps per alarm the prediction with the latest `made_at` (order-free)
and sets the due time with `work_order_due`.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from typing import Any, cast

import numpy as np

from smart_maintenance.operators.predict.ttf import HOUR_MS, TtfParams, estimate_ttf
from smart_maintenance.operators.profile import MEAN, AssetProfile, SensorLimits
from smart_maintenance.operators.records import (
    Alarm,
    FeatureBatch,
    iso,
    ms_to_dt,
    stable_id,
)

DAY_MS = 24 * HOUR_MS


@dataclass(frozen=True)
class PredictConfig:
    history_windows: int = 288  # a day of 5-minute windows
    min_interval_ms: int = HOUR_MS  # at most one prediction per asset per hour of event time
    horizon_ms: int = 7 * DAY_MS  # further capped by TtfParams.max_extrapolation x the history's span
    recent_windows: int = 3  # windows whose mean is a sensor's current level (leading-sensor choice)
    ttf: TtfParams = field(default_factory=TtfParams)

    def __post_init__(self) -> None:
        if self.history_windows < self.ttf.min_trend_points:
            raise ValueError("history_windows must hold at least ttf.min_trend_points windows")
        if self.min_interval_ms < 0 or self.horizon_ms <= 0 or self.recent_windows < 1:
            raise ValueError("need min_interval_ms >= 0, horizon_ms > 0, recent_windows >= 1")


@dataclass(frozen=True, eq=False)
class PredictionState:
    """One asset's recent window means (rows: windows, columns: `sensors`) and its rate limit."""

    sensors: tuple[str, ...] = ()
    window_end: np.ndarray = field(default_factory=lambda: np.empty(0, np.int64))
    means: np.ndarray = field(default_factory=lambda: np.empty((0, 0), np.float32))
    last_request_ms: int | None = None  # event time of the asset's last request
    open_alarm: Alarm | None = None  # the open machine alarm: predictions refresh while it lasts


@dataclass(frozen=True, eq=False)
class PredictionRequest:
    """Everything `predict` needs: small (a few KB), picklable, self-contained."""

    asset_id: str
    alarm_id: str
    sensor: str
    ts: np.ndarray  # int64 epoch ms of the window ends
    values: np.ndarray  # float64 window means (NaN: no reading or the asset was stopped)
    threshold: float
    direction: str  # "above" | "below"
    horizon_ms: int
    made_at_ms: int  # the latest window end the asset had seen: event time
    params: TtfParams = field(default_factory=TtfParams)
    selection: dict[str, Any] = field(default_factory=dict)  # why this sensor
    # set when the asset's type has a learned RUL model: the whole history, for `predict_rul`
    asset_type: str = ""
    sensors: tuple[str, ...] = ()
    means: np.ndarray | None = None


@dataclass(frozen=True)
class Prediction:
    """A time-to-failure estimate for one alarm: the `predictions` stream's record."""

    prediction_id: str
    asset_id: str
    alarm_id: str
    sensor: str
    method: str  # prophet | trend_linear | trend_quadratic | observed | insufficient_history | ...
    made_at: datetime  # event time: the window end the request was cut at
    failure_at: datetime | None  # None: no crossing within the horizon
    lo: datetime | None  # earliest plausible failure (None: not within the horizon)
    hi: datetime | None  # latest plausible failure (None: beyond the horizon)
    horizon_end: datetime
    inputs: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        def hours(t: datetime | None) -> float | None:
            return None if t is None else round((t - self.made_at).total_seconds() / 3600.0, 4)

        def text(t: datetime | None) -> str | None:
            return None if t is None else t.isoformat()

        return {
            "prediction_id": self.prediction_id,
            "asset_id": self.asset_id,
            "alarm_id": self.alarm_id,
            "sensor": self.sensor,
            "method": self.method,
            "made_at": self.made_at.isoformat(),
            "failure_at": text(self.failure_at),
            "lo": text(self.lo),
            "hi": text(self.hi),
            "ttf_hours": hours(self.failure_at),
            "lo_hours": hours(self.lo),
            "hi_hours": hours(self.hi),
            "horizon_end": self.horizon_end.isoformat(),
            "inputs": dict(self.inputs),
        }


def observe(
    state: PredictionState | None,
    fb: FeatureBatch,
    profile: AssetProfile | None = None,
    cfg: PredictConfig | None = None,
) -> PredictionState:
    """Append the batch's window means; with a profile, stopped windows become NaN (not wear).

    Windows at or before the last one seen are ignored (a replayed batch after a resume).
    """
    state = state or PredictionState()
    cfg = cfg or PredictConfig()
    new = fb.window_end > state.window_end[-1] if len(state.window_end) else np.ones(len(fb), bool)
    if not new.any():
        return state
    if fb.sensors == state.sensors:  # the usual window: the sensors it had, in their order (no new column)
        sensors, old = state.sensors, state.means
        rows = fb.values[new][:, :, MEAN].astype(np.float32)  # as the assignment below casts: the same values
    else:
        sensors = state.sensors + tuple(s for s in fb.sensors if s not in state.sensors)
        rows = np.full((int(new.sum()), len(sensors)), np.nan, np.float32)
        rows[:, [sensors.index(s) for s in fb.sensors]] = fb.values[new][:, :, MEAN]
        old = np.full((len(state.window_end), len(sensors)), np.nan, np.float32)
        old[:, : len(state.sensors)] = state.means
    if profile is not None:
        stopped = ~profile.running(fb)[new]
        if stopped.any():
            rows[stopped] = np.nan
    means = np.vstack([old, rows])[-cfg.history_windows :]
    ends = np.concatenate([state.window_end, fb.window_end[new].astype(np.int64)])[-cfg.history_windows :]
    seen = cast(np.ndarray, ~np.isnan(means).all(axis=0))  # a sensor gone for the whole history is forgotten
    if not seen.all():
        sensors, means = tuple(s for s, k in zip(sensors, seen) if k), means[:, seen]
    return replace(state, sensors=sensors, window_end=ends, means=np.ascontiguousarray(means))


def note_alarm(state: PredictionState | None, alarm: Alarm) -> PredictionState:
    """Remember the asset's open machine alarm (predictions refresh while it is open)."""
    state = state or PredictionState()
    if alarm.kind != "machine":
        return state
    if alarm.status == "open":
        return replace(state, open_alarm=alarm)
    if state.open_alarm is not None and state.open_alarm.alarm_id == alarm.alarm_id:
        return replace(state, open_alarm=None)
    return state


def due_for_prediction(state: PredictionState | None, alarm: Alarm | None, now_ms: int, min_interval_ms: int) -> bool:
    """An open machine alarm and no request for this asset in the last `min_interval_ms` (event time)."""
    if alarm is None or alarm.kind != "machine" or alarm.status != "open":
        return False
    last = state.last_request_ms if state is not None else None
    return last is None or now_ms - last >= min_interval_ms


def _progress(level: float, limit: SensorLimits) -> float:
    """How far a level has gone from the normal band's edge toward the failure value (1 = failed)."""
    if limit.rising:
        return (level - limit.normal_hi) / max(limit.failure - limit.normal_hi, 1e-12)
    return (limit.normal_lo - level) / max(limit.normal_lo - limit.failure, 1e-12)


def make_request(
    state: PredictionState | None, alarm: Alarm, profile: AssetProfile, cfg: PredictConfig | None = None
) -> PredictionRequest | None:
    """A request for the alarm's leading degrading sensor, or None when no alarm sensor can be forecast.

    Candidates are the alarm's sensors (largest contribution first) that have
    a registry failure threshold and enough history; the leader is the one
    furthest along from its normal band toward its failure value (mean of the
    last `recent_windows` windows), ties going to the larger contribution.
    """
    cfg = cfg or PredictConfig()
    if state is None or not len(state.window_end):
        return None
    scored: list[tuple[float, int, str]] = []
    for rank, sensor in enumerate(alarm.sensors):
        limit = profile.limit(sensor)
        if limit is None or sensor not in state.sensors:
            continue
        v = state.means[:, state.sensors.index(sensor)]
        finite = v[np.isfinite(v)]
        if len(finite) < cfg.ttf.min_trend_points:
            continue
        scored.append((_progress(float(np.mean(finite[-cfg.recent_windows :])), limit), rank, sensor))
    if not scored:
        return None
    _, _, sensor = max(scored, key=lambda c: (c[0], -c[1]))
    limit = profile.limit(sensor)
    return PredictionRequest(
        asset_id=alarm.asset_id,
        alarm_id=alarm.alarm_id,
        sensor=sensor,
        ts=state.window_end.copy(),
        values=state.means[:, state.sensors.index(sensor)].astype(np.float64),
        threshold=float(limit.failure),  # type: ignore[union-attr]
        direction="above" if limit.rising else "below",  # type: ignore[union-attr]
        horizon_ms=cfg.horizon_ms,
        made_at_ms=int(state.window_end[-1]),
        params=cfg.ttf,
        selection={"progress": {s: round(p, 4) for p, _, s in sorted(scored, key=lambda c: c[1])}},
    )


def maybe_request(
    state: PredictionState | None,
    alarm: Alarm | None,
    profile: AssetProfile,
    now_ms: int,
    cfg: PredictConfig | None = None,
) -> tuple[PredictionState, PredictionRequest | None]:
    """Rate limit, then cut a request; the state remembers when (event time `now_ms`: the latest window end)."""
    cfg = cfg or PredictConfig()
    state = state or PredictionState()
    if not due_for_prediction(state, alarm, now_ms, cfg.min_interval_ms):
        return state, None
    request = make_request(state, alarm, profile, cfg)  # type: ignore[arg-type]
    if request is None:
        return state, None
    return replace(state, last_request_ms=now_ms), request


def advance(
    state: PredictionState | None,
    fb: FeatureBatch,
    alarms: list[Alarm] | tuple[Alarm, ...],
    profile: AssetProfile,
    cfg: PredictConfig | None = None,
) -> tuple[PredictionState, PredictionRequest | None]:
    """One dataflow activation: fold in the windows and the alarms they changed, maybe cut a request.

    Takes the windows and their alarms as one item, so what is requested
    depends only on the asset's own ordered stream (never on how two merged
    streams interleave). Event time is the batch's last window end.
    """
    cfg = cfg or PredictConfig()
    state = observe(state, fb, profile, cfg)
    for a in alarms:
        state = note_alarm(state, a)
    if not len(state.window_end):
        return state, None
    return maybe_request(state, state.open_alarm, profile, int(state.window_end[-1]), cfg)


def _dt(ms: int | None) -> datetime | None:
    return None if ms is None else ms_to_dt(ms)


def predict(request: PredictionRequest) -> Prediction:
    """Forecast the request's sensor to its failure threshold. Pure: seeded from the request's params."""
    r = request
    est = estimate_ttf(r.ts, r.values, r.threshold, r.direction, horizon_ms=r.horizon_ms, params=r.params)  # type: ignore[arg-type]
    end_ms = est.inputs.get("history_end_ms") or r.made_at_ms  # the horizon starts at the sensor's last point
    inputs = dict(est.inputs) | {"sensor": r.sensor} | r.selection
    for k in ("history_start_ms", "history_end_ms"):  # epoch ms -> RFC 3339 in the stored record
        ms = inputs.pop(k, None)
        inputs[k.removesuffix("_ms")] = None if ms is None else iso(ms)
    return Prediction(
        prediction_id=stable_id("prediction", r.asset_id, r.alarm_id, r.made_at_ms),
        asset_id=r.asset_id,
        alarm_id=r.alarm_id,
        sensor=r.sensor,
        method=est.method,
        made_at=ms_to_dt(r.made_at_ms),
        failure_at=_dt(est.failure_at_ms),
        lo=_dt(est.lo_ms),
        hi=_dt(est.hi_ms),
        horizon_end=ms_to_dt(end_ms + est.horizon_ms),
        inputs=inputs,
    )


def work_order_due(prediction: Prediction, margin: timedelta = timedelta(hours=4)) -> datetime | None:
    """When the work should be done: the earliest plausible failure less a margin (the repair time), not before
    `made_at`.

    None when no failure is forecast within the horizon (the work order keeps its default due time).
    """
    first = prediction.lo or prediction.failure_at
    if first is None:
        return None
    return max(first - margin, prediction.made_at)


@dataclass(frozen=True)
class PredictSnapshot:
    state: PredictionState | None
    pending: tuple[PredictionRequest, ...] = ()
