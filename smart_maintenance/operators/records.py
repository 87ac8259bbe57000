"""The records that move between the parts of the flow.

Readings travel as columnar batches (numpy arrays), never one Python object
per reading: the hot path is per reading and a batch costs one Python call for
thousands of them. Timestamps inside batches are epoch milliseconds (int64,
UTC); records at the edges (anomalies, alarms) carry timezone-aware UTC
datetimes.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any, TypeVar

import numpy as np

_T = TypeVar("_T")


def window_length_ms(window_start: np.ndarray, window_end: np.ndarray) -> int:
    """The median window length of a batch of windows (one window, the usual case, without `np.median`)."""
    if len(window_start) == 1:
        return int(window_end[0] - window_start[0])
    return int(np.median(window_end - window_start))


def evolve(obj: _T, **changes: Any) -> _T:
    """`dataclasses.replace` for the per-asset state records (frozen, no `__post_init__`, no slots), 10x cheaper.

    `replace` re-runs `__init__` over every field; these states change several times per window of each
    asset, which with many small assets was a large share of the flow's time. Only for classes whose
    `__init__` does nothing but assign fields; unknown names are refused as `replace` refuses them.

    >>> from dataclasses import dataclass
    >>> @dataclass(frozen=True)
    ... class P:
    ...     x: int = 0
    ...     y: int = 0
    >>> evolve(P(1, 2), y=5)
    P(x=1, y=5)
    """
    new = object.__new__(type(obj))
    d = new.__dict__
    d.update(obj.__dict__)
    n = len(d)
    d.update(changes)
    if len(d) != n:  # a name that is no field (cheaper to count after than to compare the key sets before)
        raise TypeError(f"{type(obj).__name__} has no field {sorted(changes.keys() - obj.__dict__.keys())}")
    return new

FEATURES: tuple[str, ...] = ("mean", "std", "min", "max", "slope", "rms", "last", "count")
"""Per-sensor window features, in the order of `FeatureBatch.values`' last axis."""

STATUSES: tuple[str, ...] = ("confirmed", "needs_review", "rejected", "sensor_fault")

DETAIL_LIMIT = 1024
"""A dead letter's `detail` (and `origin`) keeps at most this many characters."""

RAW_CHARS = 64 * 1024
"""A dead letter's `raw` keeps at most this many characters (the parsers cut payloads at 64 KiB first)."""


def stable_id(*parts: object) -> str:
    """A deterministic 16-hex-digit identifier of its parts.

    >>> stable_id("pump-01", "machine", 1700000000000)
    '0eac40843716661e'
    """
    h = hashlib.blake2b(digest_size=8)
    for p in parts:
        h.update(str(p).encode())
        h.update(b"\x1f")
    return h.hexdigest()


def ms_to_dt(ms: int) -> datetime:
    """Epoch milliseconds to an aware UTC datetime."""
    return datetime.fromtimestamp(int(ms) / 1000.0, tz=timezone.utc)


def dt_to_ms(dt: datetime) -> int:
    """An aware datetime to epoch milliseconds."""
    return int(round(dt.timestamp() * 1000))


def iso(ms: int) -> str:
    """Epoch milliseconds as RFC 3339 UTC text (millisecond precision)."""
    return ms_to_dt(ms).isoformat(timespec="milliseconds").replace("+00:00", "Z")


@dataclass(frozen=True, slots=True)
class Invalid:
    """Input that could not become a reading: it goes to the dead letters.

    `reason` is a short code (`bad_json`, `missing_field`, `bad_value`,
    `non_finite`, `bad_timestamp`, `absurd_timestamp`, `unknown_asset`,
    `late`, ...); `detail` says what exactly was wrong; `raw` is the payload
    as received (decoded as UTF-8 with replacement); `origin` says where it came
    from (`file.csv:17`, `mqtt:plant/a/p1/temp`, `kafka:readings/0/42`).
    """

    reason: str
    detail: str
    raw: str
    origin: str

    def __post_init__(self) -> None:
        # every producer's text is bounded here, once: a 14 MB payload must not make a 14 MB detail
        if len(self.detail) > DETAIL_LIMIT:
            object.__setattr__(self, "detail", self.detail[:DETAIL_LIMIT] + "...")
        if len(self.raw) > RAW_CHARS:
            object.__setattr__(self, "raw", self.raw[:RAW_CHARS])
        if len(self.origin) > DETAIL_LIMIT:
            object.__setattr__(self, "origin", self.origin[:DETAIL_LIMIT] + "...")

    @property
    def dead_letter_id(self) -> str:
        return stable_id("dead_letter", self.origin, self.reason, self.raw)

    def to_dict(self) -> dict[str, Any]:
        return {
            "dead_letter_id": self.dead_letter_id,
            "reason": self.reason,
            "detail": self.detail,
            "raw": self.raw,
            "origin": self.origin,
        }


@dataclass(frozen=True, slots=True)
class Readings:
    """A columnar batch of readings, possibly from many assets.

    All arrays have the same length: `asset_id` and `sensor` are object arrays
    of `str`, `ts` is int64 epoch milliseconds (UTC), `value` is float64.
    Two optional columns say what the source said of each reading: `quality`
    (int16, `QUALITY_GOOD` / `QUALITY_UNCERTAIN`, `QUALITY_UNKNOWN` when not
    given) and `unit` (object array of `str` or None). None for a column means
    no reading of the batch has it, so sources without them pay nothing.
    """

    asset_id: np.ndarray
    sensor: np.ndarray
    ts: np.ndarray
    value: np.ndarray
    quality: np.ndarray | None = None
    unit: np.ndarray | None = None

    def __len__(self) -> int:
        return len(self.ts)

    @staticmethod
    def empty() -> Readings:
        return Readings(
            np.empty(0, dtype=object),
            np.empty(0, dtype=object),
            np.empty(0, dtype=np.int64),
            np.empty(0, dtype=np.float64),
        )

    @staticmethod
    def of(rows: list[tuple[str, str, int, float]], quality: list[int] | None = None) -> Readings:
        """Build a batch from `(asset_id, sensor, ts_ms, value)` rows (tests, small inputs)."""
        if not rows:
            return Readings.empty()
        a, s, t, v = zip(*rows)
        return Readings(
            np.array(a, dtype=object),
            np.array(s, dtype=object),
            np.array(t, dtype=np.int64),
            np.array(v, dtype=np.float64),
            None if quality is None else np.array(quality, dtype=np.int16),
        )

    def take(self, idx: np.ndarray) -> Readings:
        """The rows at `idx` (an index array or boolean mask)."""
        return Readings(self.asset_id[idx], self.sensor[idx], self.ts[idx], self.value[idx],
                        None if self.quality is None else self.quality[idx],
                        None if self.unit is None else self.unit[idx])

    def quality_or_unknown(self) -> np.ndarray:
        return self.quality if self.quality is not None else np.full(len(self), QUALITY_UNKNOWN, dtype=np.int16)

    def unit_or_none(self) -> np.ndarray:
        return self.unit if self.unit is not None else np.full(len(self), None, dtype=object)

    @staticmethod
    def concat(parts: list[Readings]) -> Readings:
        parts = [p for p in parts if len(p)]
        if not parts:
            return Readings.empty()
        if len(parts) == 1:
            return parts[0]
        quality = unit = None
        if any(p.quality is not None for p in parts):
            quality = np.concatenate([p.quality_or_unknown() for p in parts])
        if any(p.unit is not None for p in parts):
            unit = np.concatenate([p.unit_or_none() for p in parts])
        return Readings(
            np.concatenate([p.asset_id for p in parts]),
            np.concatenate([p.sensor for p in parts]),
            np.concatenate([p.ts for p in parts]),
            np.concatenate([p.value for p in parts]),
            quality,
            unit,
        )


QUALITY_GOOD, QUALITY_UNCERTAIN, QUALITY_BAD, QUALITY_UNKNOWN = 192, 64, 0, -1
"""Quality codes on a reading (OPC DA / Sparkplug convention; -1: the source did not say). Bad is never a reading."""


@dataclass(frozen=True, slots=True)
class Parsed:
    """What a source or the parse step yields: good readings and rejects."""

    readings: Readings
    rejects: tuple[Invalid, ...] = ()


@dataclass(frozen=True, slots=True)
class RawMessages:
    """Undecoded payloads from a message source (MQTT, Kafka).

    `topics[i]` is the MQTT topic or Kafka key of `payloads[i]` (or None),
    `origins[i]` says where it came from, for the dead letters, and
    `receive_ms[i]` when it arrived (the time of a bare-number MQTT payload),
    `topic_template` the layout of the topics (None: `plant/{site}/{asset_id}/{sensor}`).
    """

    payloads: tuple[bytes, ...]
    topics: tuple[str | None, ...]
    origins: tuple[str, ...]
    receive_ms: tuple[int, ...] | None = None
    topic_template: str | None = None


@dataclass(frozen=True, slots=True)
class AssetReadings:
    """The readings of one asset in one batch, in arrival order."""

    asset_id: str
    sensor: np.ndarray  # object array of str
    ts: np.ndarray  # int64 epoch ms
    value: np.ndarray  # float64
    quality: np.ndarray | None = None  # as on `Readings`: stored with the readings, not scored
    unit: np.ndarray | None = None

    def __len__(self) -> int:
        return len(self.ts)

    def __reduce__(self) -> tuple[Any, ...]:
        """Numeric columns pickled as raw bytes: Bytewax pickles every item that crosses to another process,
        and numpy's own pickling of a small array costs several times its copy.

        >>> import pickle
        >>> a = AssetReadings("p", np.array(["t"], dtype=object), np.array([5]), np.array([1.5]), np.array([0]))
        >>> b = pickle.loads(pickle.dumps(a)); (b.ts.tolist(), b.value.tolist(), b.quality.tolist(), b.ts.dtype)
        ([5], [1.5], [0], dtype('int64'))
        """
        return _asset_readings, (self.asset_id, _objects(self.sensor), *_raw(self.ts), *_raw(self.value),
                                 *_raw(self.quality), _objects(self.unit))


def _raw(a: np.ndarray | None) -> tuple[bytes | None, str | None]:
    if a is None or a.dtype.hasobject:
        return a, None  # type: ignore[return-value]  # pickled as it is
    return np.ascontiguousarray(a).tobytes(), a.dtype.str


def _array(data: Any, dtype: str | None) -> Any:
    return data if dtype is None else np.frombuffer(data, dtype=dtype).copy()  # writable, as before pickling


def _objects(a: np.ndarray | None) -> list[Any] | np.ndarray | None:
    """An object column (sensor names, units) of one asset's batch as a list to pickle: numpy pickles an object array
    through a slow generic path (~30 µs for 5 names, against ~3 µs as a list; names repeat as the same
    objects, which pickle's memo writes once)."""
    if a is None or not a.dtype.hasobject or a.ndim != 1:
        return a
    objects: list[Any] = a.tolist()
    return objects


def _object_array(data: list[Any] | np.ndarray | None) -> np.ndarray | None:
    if data is None or isinstance(data, np.ndarray):  # pickled as an array (before `_objects`)
        return data
    out = np.empty(len(data), dtype=object)
    out[:] = data
    return out


def _asset_readings(asset_id: str, sensor: list[Any] | np.ndarray, ts: bytes, ts_dtype: str, value: bytes,
                    value_dtype: str, quality: Any, quality_dtype: str | None,
                    unit: list[Any] | np.ndarray | None) -> AssetReadings:
    return AssetReadings(asset_id, _object_array(sensor), _array(ts, ts_dtype),  # type: ignore[arg-type]  # never None
                         _array(value, value_dtype), _array(quality, quality_dtype), _object_array(unit))


@dataclass(frozen=True, slots=True)
class FeatureBatch:
    """Closed windows of one asset with their per-sensor features.

    `values[w, s, f]` is feature `FEATURES[f]` of sensor `sensors[s]` in
    window `w`; NaN where the sensor had no reading in that window (count 0).
    """

    asset_id: str
    sensors: tuple[str, ...]
    window_start: np.ndarray  # int64 ms, shape (w,)
    window_end: np.ndarray  # int64 ms, shape (w,)
    values: np.ndarray  # float64, shape (w, s, len(FEATURES))

    def __len__(self) -> int:
        return len(self.window_start)

    def rows(self) -> list[dict[str, Any]]:
        """One dict per (window, sensor): the `features` stream's rows."""
        out = []
        for w in range(len(self.window_start)):
            ws, we = int(self.window_start[w]), int(self.window_end[w])
            for s, name in enumerate(self.sensors):
                f = self.values[w, s]
                if f[7] == 0:
                    continue
                row: dict[str, Any] = {
                    "asset_id": self.asset_id,
                    "window_start": iso(ws),
                    "window_end": iso(we),
                    "sensor": name,
                }
                for k, fname in enumerate(FEATURES):
                    row[fname] = None if np.isnan(f[k]) else float(f[k])
                row["count"] = int(f[7])
                out.append(row)
        return out


@dataclass(frozen=True, slots=True)
class Scored:
    """Detector output for one batch of windows of one asset.

    `score[w]` is the fused anomaly score in [0, 1]; `detector_scores` maps a
    detector name to its per-window scores in [0, 1]; `contributions[w]` lists
    `(sensor, share)` pairs, largest first, shares summing to 1, and
    `feature_contributions[w]` the same for single features (`sensor.feature`).
    """

    features: FeatureBatch
    score: np.ndarray
    detector_scores: dict[str, np.ndarray]
    contributions: tuple[tuple[tuple[str, float], ...], ...]
    warming_up: np.ndarray  # bool per window: detectors still learning the baseline
    # per window worth explaining: the top (sensor.feature, share) pairs
    feature_contributions: tuple[tuple[tuple[str, float], ...], ...] = ()
    running: np.ndarray | None = None  # bool per window, when the detectors learned it (no registry state sensor)
    settling: np.ndarray | None = None  # bool per window: a sensor jumped to a new level, not yet known to last
    rebaselines: tuple[Any, ...] = ()  # new normals found in this batch (detect/new_normal.py: Rebaseline)
    certain: np.ndarray | None = None  # bool per window: so far out that one window is enough (no persistence)
    drifting: tuple[tuple[str, ...], ...] = ()  # per window: a sensor drifting off the others (cross_sensor.py)
    # per window: the trend evidence's excess (detect/trend.py), summed by validation; NaN: the sum starts again
    trend: np.ndarray | None = None
    # per window: a start's score with the asset's earlier starts (detect/starts.py); NaN: no start, or not yet
    start_score: np.ndarray | None = None
    # per window and column: the baseline detector's robust z, |x - centre| / scale of its fit (0: unscored)
    baseline_z: np.ndarray | None = None


@dataclass(frozen=True, slots=True)
class Anomaly:
    """A window the detectors flagged, with the validation verdict."""

    anomaly_id: str
    asset_id: str
    window_start: datetime
    window_end: datetime
    score: float
    status: str  # one of STATUSES
    confidence: float
    severity: int  # 1..5
    reasons: tuple[str, ...]
    contributions: tuple[tuple[str, float], ...]
    detector_scores: dict[str, float] = field(default_factory=dict)
    sensors: tuple[str, ...] = ()  # for sensor_fault: the faulty sensors
    features: tuple[tuple[str, float], ...] = ()  # top contributing features: (sensor.feature, share)

    def to_dict(self) -> dict[str, Any]:
        return {
            "anomaly_id": self.anomaly_id,
            "asset_id": self.asset_id,
            "window_start": self.window_start.isoformat(),
            "window_end": self.window_end.isoformat(),
            "score": round(self.score, 6),
            "status": self.status,
            "confidence": round(self.confidence, 4),
            "severity": self.severity,
            "reasons": list(self.reasons),
            "contributions": [{"sensor": s, "share": round(v, 4)} for s, v in self.contributions],
            "detector_scores": {k: round(v, 6) for k, v in self.detector_scores.items()},
            "sensors": list(self.sensors),
            "features": [{"feature": f, "share": round(v, 4)} for f, v in self.features],
        }


@dataclass(frozen=True, slots=True)
class Alarm:
    """One state of an alarm episode: emitted when it opens, changes severity and clears.

    `alarm_id` is derived from the asset, the kind and the window that opened
    it, so every replay and restart gives the same id.
    """

    alarm_id: str
    asset_id: str
    kind: str  # "machine" or "sensor_fault"
    status: str  # "open" or "cleared"
    severity: int
    opened_at: datetime
    updated_at: datetime
    cleared_at: datetime | None
    peak_score: float
    anomaly_count: int
    last_anomaly_id: str
    sensors: tuple[str, ...]
    reason: str

    def to_dict(self) -> dict[str, Any]:
        return {
            "alarm_id": self.alarm_id,
            "asset_id": self.asset_id,
            "kind": self.kind,
            "status": self.status,
            "severity": self.severity,
            "opened_at": self.opened_at.isoformat(),
            "updated_at": self.updated_at.isoformat(),
            "cleared_at": self.cleared_at.isoformat() if self.cleared_at else None,
            "peak_score": round(self.peak_score, 6),
            "anomaly_count": self.anomaly_count,
            "last_anomaly_id": self.last_anomaly_id,
            "sensors": list(self.sensors),
            "reason": self.reason,
        }
