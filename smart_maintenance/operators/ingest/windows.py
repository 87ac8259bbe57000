"""Event-time tumbling windows per asset, with allowed lateness.

The watermark of an asset is the largest event time it has reported minus the
allowed lateness. A window closes once its end is at or before the watermark;
a reading whose window end is at or before the watermark *as of that reading*
is late: it is counted and returned as an `Invalid("late", ...)`, never
dropped silently. Because lateness is judged per reading against the running
maximum, the result does not depend on how the stream was cut into batches:
a live run (small batches) and a backfill (large ones) close the same windows
with the same readings.

With `length_ms=None` ("auto") the length is chosen from the asset's own
rate: `auto_samples` times the median interval of the first sensor to report
`AUTO_PROBE` readings, rounded to a readable length. So 1 Hz vibration and
hourly temperatures both get windows of about `auto_samples` samples.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np
import orjson

from smart_maintenance.operators.ingest.features import window_features
from smart_maintenance.operators.records import (
    AssetReadings,
    FeatureBatch,
    Invalid,
    iso,
)

AUTO_PROBE = 8
_NICE_S = (1, 2, 5, 10, 15, 20, 30, 60, 120, 300, 600, 900, 1800, 3600, 7200, 10800, 21600, 43200, 86400)
_NO_TIME = np.iinfo(np.int64).min // 2


@dataclass(frozen=True)
class WindowConfig:
    length_ms: int | None  # None: choose from the data ("auto")
    lateness_ms: int = 30_000
    auto_samples: int = 30

    def __post_init__(self) -> None:
        if self.length_ms is not None and self.length_ms <= 0:
            raise ValueError(f"window length must be positive, got {self.length_ms} ms")
        if self.lateness_ms < 0:
            raise ValueError(f"allowed lateness must not be negative, got {self.lateness_ms} ms")
        if self.auto_samples < 2:
            raise ValueError(f"auto_samples must be at least 2, got {self.auto_samples}")


@dataclass(frozen=True)
class WindowState:
    """One asset's open windows: the buffered readings not yet in a closed window.

    Arrays are replaced, never mutated, so a snapshot is the object itself.
    """

    asset_id: str = ""
    length_ms: int | None = None
    sensors: tuple[str, ...] = ()
    max_ts: int = _NO_TIME
    closed_until: int = _NO_TIME  # end of the latest closed window
    late: int = 0
    buf_code: np.ndarray = field(default_factory=lambda: np.empty(0, np.int32))
    buf_ts: np.ndarray = field(default_factory=lambda: np.empty(0, np.int64))
    buf_value: np.ndarray = field(default_factory=lambda: np.empty(0, np.float64))


@dataclass(frozen=True)
class WindowOutput:
    closed: FeatureBatch | None
    late: tuple[Invalid, ...] = ()
    control: Any = None  # a review decision or maintenance record released at this point (see controls.py)


def _encode_sensors(known: tuple[str, ...], names: np.ndarray) -> tuple[tuple[str, ...], np.ndarray]:
    """Map sensor names to codes in the asset's append-only vocabulary."""
    uniq, inverse = np.unique(names, return_inverse=True)
    index = {s: i for i, s in enumerate(known)}
    vocab = list(known)
    codes = np.empty(len(uniq), np.int32)
    for j, name in enumerate(uniq):
        i = index.get(name)
        if i is None:
            i = len(vocab)
            vocab.append(name)
            index[name] = i
        codes[j] = i
    return tuple(vocab), codes[inverse]


def nice_length_ms(interval_ms: float, samples: int) -> int:
    """A readable window length close to `samples` intervals.

    >>> nice_length_ms(10_000, 30), nice_length_ms(1_000, 30), nice_length_ms(3_600_000, 30)
    (300000, 30000, 86400000)
    """
    target_s = max(interval_ms * samples / 1000.0, 1.0)
    best = min(_NICE_S, key=lambda s: abs(np.log(s / target_s)))
    return int(best * 1000)


def _auto_length(code: np.ndarray, ts: np.ndarray, samples: int) -> int | None:
    """The auto length, from the readings up to the first sensor's AUTO_PROBE-th one; None if too early.

    Only a prefix fixed by arrival order is used, so the choice does not depend on batching.
    """
    if len(code) == 0:
        return None
    counts = np.zeros(code.max() + 1, np.int64)
    for i, c in enumerate(code):  # short: ends after at most sensors * AUTO_PROBE readings
        counts[c] += 1
        if counts[c] == AUTO_PROBE:
            probe = np.sort(ts[: i + 1][code[: i + 1] == c])
            gaps = np.diff(probe)
            gaps = gaps[gaps > 0]
            interval = float(np.median(gaps)) if len(gaps) else 1000.0
            return nice_length_ms(interval, samples)
    return None


def _late_readings(state: WindowState, asset_id: str, code: np.ndarray, ts: np.ndarray, value: np.ndarray,
                   late: np.ndarray, length_ms: int, lateness_ms: int) -> tuple[Invalid, ...]:
    out = []
    for i in np.flatnonzero(late):
        sensor = state.sensors[code[i]]
        t = int(ts[i])
        raw = orjson.dumps({"asset_id": asset_id, "sensor": sensor, "ts": iso(t), "value": float(value[i])}).decode()
        end = (t // length_ms + 1) * length_ms
        out.append(
            Invalid(
                "late",
                f"window ending {iso(end)} had closed (allowed lateness {lateness_ms / 1000:g} s)",
                raw,
                f"window:{asset_id}",
            )
        )
    return tuple(out)


def _close(state: WindowState, asset_id: str, upto: int) -> tuple[WindowState, FeatureBatch | None]:
    """Close the buffered windows ending at or before `upto`."""
    assert state.length_ms is not None
    if len(state.buf_ts) == 0:
        return state, None
    ends = (state.buf_ts // state.length_ms + 1) * state.length_ms
    done = ends <= upto
    if not done.any():
        return state, None
    keep = ~done
    fb = window_features(
        asset_id, state.sensors, state.buf_code[done], state.buf_ts[done], state.buf_value[done], state.length_ms
    )
    state = replace(
        state,
        closed_until=max(state.closed_until, int(ends[done].max())),
        buf_code=state.buf_code[keep],
        buf_ts=state.buf_ts[keep],
        buf_value=state.buf_value[keep],
    )
    return state, fb


def window_readings(
    state: WindowState | None, batch: AssetReadings, cfg: WindowConfig
) -> tuple[WindowState, WindowOutput]:
    """Fold one batch of an asset's readings into its windows; return what closed and what came late."""
    if state is None:
        state = WindowState(asset_id=batch.asset_id, length_ms=cfg.length_ms)
    if len(batch) == 0:
        return state, WindowOutput(None)
    sensors, code = _encode_sensors(state.sensors, batch.sensor)
    state = replace(state, asset_id=batch.asset_id, sensors=sensors)
    ts, value = batch.ts.astype(np.int64, copy=False), batch.value.astype(np.float64, copy=False)

    if state.length_ms is None:
        buf_code = np.concatenate([state.buf_code, code])
        buf_ts = np.concatenate([state.buf_ts, ts])
        buf_value = np.concatenate([state.buf_value, value])
        length = _auto_length(buf_code, buf_ts, cfg.auto_samples)
        if length is None:
            return replace(state, buf_code=buf_code, buf_ts=buf_ts, buf_value=buf_value), WindowOutput(None)
        # replay everything seen so far through the fixed-length path
        state = replace(state, length_ms=length, buf_code=np.empty(0, np.int32),
                        buf_ts=np.empty(0, np.int64), buf_value=np.empty(0, np.float64))
        code, ts, value = buf_code, buf_ts, buf_value

    length_ms = state.length_ms
    assert length_ms is not None
    running_max = np.maximum.accumulate(np.maximum(ts, state.max_ts))
    late = (ts // length_ms + 1) * length_ms <= np.maximum(running_max - cfg.lateness_ms, state.closed_until)
    late_out: tuple[Invalid, ...] = ()
    if late.any():
        late_out = _late_readings(state, batch.asset_id, code, ts, value, late, length_ms, cfg.lateness_ms)
        ok = ~late
        code, ts, value = code[ok], ts[ok], value[ok]
    state = replace(
        state,
        max_ts=int(running_max[-1]),
        late=state.late + len(late_out),
        buf_code=np.concatenate([state.buf_code, code]),
        buf_ts=np.concatenate([state.buf_ts, ts]),
        buf_value=np.concatenate([state.buf_value, value]),
    )
    state, closed = _close(state, batch.asset_id, state.max_ts - cfg.lateness_ms)
    return state, WindowOutput(closed, late_out)


def flush_windows(state: WindowState, cfg: WindowConfig) -> tuple[WindowState, FeatureBatch | None]:
    """Close every open window (end of a replay, or an asset gone idle in a live run).

    Readings that arrive later for a flushed window are late.
    """
    if state.length_ms is None:
        if len(state.buf_ts) == 0:
            return state, None
        # too little data to choose a length: use the probe rule on what there is
        gaps = np.diff(np.sort(state.buf_ts))
        gaps = gaps[gaps > 0]
        interval = float(np.median(gaps)) if len(gaps) else 1000.0
        state = replace(state, length_ms=nice_length_ms(interval, cfg.auto_samples))
    return _close(state, state.asset_id, np.iinfo(np.int64).max)
