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
10-second temperatures both get windows of about `auto_samples` samples. A
slowly sampled asset's windows are no longer than `auto_max_ms` (but hold at
least `AUTO_MIN_SAMPLES` samples): 30 samples of 5-minute readings would be
2.5-hour windows, too coarse to see a fault develop.

Guarantees against hostile input:
- an asset holds at most `max_sensors` sensor names: readings of further
  sensors are refused, first come first kept, in arrival order, so the choice
  does not depend on batching; one dead letter (`too_many_sensors`) per batch
  and asset says how many, so a flood of names is not multiplied;
- a reading more than `future_ms` ahead of the asset's latest accepted time is
  held as a suspect and moves nothing. Once `future_confirm` distinct times in
  a row (without a reading at the stream's own time in between) agree the
  stream jumped (a restart after downtime, a gap in a file), the held readings
  are accepted in order; a reading at the stream's own time, or the end of the
  stream, turns the held ones into dead letters (`future_outlier`). So one
  reading dated a day ahead never makes a day of genuine readings `late`.
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any

import numpy as np
import orjson

from smart_maintenance.operators.ingest.features import window_features
from smart_maintenance.operators.records import (
    AssetReadings,
    FeatureBatch,
    Invalid,
    evolve,
    iso,
)

AUTO_PROBE = 8
AUTO_MIN_SAMPLES = 3  # the fewest samples a capped auto window holds
_NICE_S = (1, 2, 5, 10, 15, 20, 30, 60, 120, 300, 600, 900, 1800, 3600, 7200, 10800, 21600, 43200, 86400)
_NO_TIME = np.iinfo(np.int64).min // 2
_ALL_CLOSED = int(np.iinfo(np.int64).max)  # `_close` up to this: every buffered window


def _frozen(a: np.ndarray) -> np.ndarray:
    a.flags.writeable = False
    return a


# empty arrays shared by the states that emptied theirs (read-only: a state's arrays are replaced, never changed)
_EMPTY_CODE, _EMPTY_TS, _EMPTY_VALUE = (_frozen(np.empty(0, t)) for t in (np.int32, np.int64, np.float64))
_NO_MIN = int(np.iinfo(np.int64).max)  # the earliest buffered time of an empty buffer
_MIN_ROOM = 64  # the fewest readings a new buffer has room for


class _Columns:
    """The buffered readings' columns with room to grow, shared by a state and the states folded from it.

    A state owns the first `n` rows (`WindowState.n`); `fill` is the row count of the latest state that
    appended. A fold appends in place only when `fill` equals its state's `n` (no other state wrote past
    it), so rows a state can see are never changed, and a state folded twice copies instead of seeing the
    other branch's readings. Live, an item of a few readings then costs three small copies, not three
    copies of the whole buffer.
    """

    __slots__ = ("code", "ts", "value", "fill")

    def __init__(self, code: np.ndarray, ts: np.ndarray, value: np.ndarray, fill: int) -> None:
        self.code, self.ts, self.value, self.fill = code, ts, value, fill


_NO_COLUMNS = _Columns(_EMPTY_CODE, _EMPTY_TS, _EMPTY_VALUE, 0)  # no room: the first append allocates


def _appended(cols: _Columns, n: int, code: np.ndarray, ts: np.ndarray, value: np.ndarray) -> tuple[_Columns, int]:
    """The columns and row count of a state's `n` rows followed by these readings (see `_Columns`)."""
    end = n + len(ts)
    if end == n:
        return cols, n
    if cols.fill == n and end <= len(cols.ts):  # this state is the latest to write, and there is room
        cols.code[n:end], cols.ts[n:end], cols.value[n:end] = code, ts, value
        cols.fill = end
        return cols, end
    room = max(2 * end, _MIN_ROOM)  # doubling: each row is copied a bounded number of times on average
    new = _Columns(np.empty(room, np.int32), np.empty(room, np.int64), np.empty(room, np.float64), end)
    new.code[:n], new.ts[:n], new.value[:n] = cols.code[:n], cols.ts[:n], cols.value[:n]
    new.code[n:end], new.ts[n:end], new.value[n:end] = code, ts, value
    return new, end


def _view(a: np.ndarray, n: int) -> np.ndarray:
    v = a[:n]
    v.flags.writeable = False
    return v


def asset_phase_ms(asset_id: str, length_ms: int) -> int:
    """Where an asset's windows start within their length: a stable hash of its id (CRC-32, the same in every
    process and run), as Prometheus offsets each target's scrapes by a hash of its labels.

    >>> asset_phase_ms("pump-01", 2_000), asset_phase_ms("pump-02", 2_000), asset_phase_ms("pump-01", 900_000)
    (461, 551, 286461)
    """
    return zlib.crc32(asset_id.encode()) % length_ms


def window_end(t: int, length_ms: int, phase_ms: int) -> int:
    """The end of the window holding event time `t`.

    >>> window_end(1_999, 2_000, 0), window_end(2_000, 2_000, 0), window_end(1_999, 2_000, 500)
    (2000, 4000, 2500)
    """
    return ((t - phase_ms) // length_ms + 1) * length_ms + phase_ms


def window_ends(ts: np.ndarray, length_ms: int, phase_ms: int) -> np.ndarray:
    """`window_end` of each time in `ts` (no shift at all for aligned windows: this is on the reading path).

    >>> window_ends(np.array([1_999, 2_000]), 2_000, 0).tolist(), window_ends(np.array([1_999]), 2_000, 500).tolist()
    ([2000, 4000], [2500])
    """
    if not phase_ms:
        return (ts // length_ms + 1) * length_ms
    return ((ts - phase_ms) // length_ms + 1) * length_ms + phase_ms


_SMALL = 64  # at most this many readings in a batch: plain loops beat numpy's fixed cost per call


@dataclass(frozen=True)
class WindowConfig:
    length_ms: int | None  # None: choose from the data ("auto")
    lateness_ms: int = 30_000
    auto_samples: int = 30
    auto_samples_one_sensor: int = 6  # an asset with one sensor (a metric stream): shorter windows, see `_auto_length`
    auto_max_ms: int | None = 900_000  # the longest auto window of an asset with several sensors (None: no cap)
    max_sensors: int = 256
    future_ms: int | None = 3_600_000  # None: no future screening
    future_confirm: int = 3
    # windows of an asset start at `asset_phase_ms` within the length, not at multiples of it: the assets' windows
    # no longer all close in the same instant (`windows.phase_by_asset`)
    phase_by_asset: bool = False

    def __post_init__(self) -> None:
        if self.length_ms is not None and self.length_ms <= 0:
            raise ValueError(f"window length must be positive, got {self.length_ms} ms")
        if self.lateness_ms < 0:
            raise ValueError(f"allowed lateness must not be negative, got {self.lateness_ms} ms")
        if self.auto_samples < 2 or self.auto_samples_one_sensor < 2:
            raise ValueError(f"auto_samples must be at least 2, got {self.auto_samples}, "
                             f"{self.auto_samples_one_sensor} for one sensor")
        if self.auto_max_ms is not None and self.auto_max_ms <= 0:
            raise ValueError(f"auto_max_ms must be positive, got {self.auto_max_ms}")
        if self.max_sensors < 1:
            raise ValueError(f"max_sensors must be at least 1, got {self.max_sensors}")
        if self.future_ms is not None and self.future_ms <= 0:
            raise ValueError(f"future_ms must be positive, got {self.future_ms}")
        if self.future_confirm < 2:
            raise ValueError(f"future_confirm must be at least 2, got {self.future_confirm}")


@dataclass(frozen=True)
class WindowState:
    """One asset's open windows: the buffered readings not yet in a closed window.

    A state is a value: what it holds never changes, so a snapshot is the object itself. Its buffered
    readings are the first `n` rows of `cols`, which later states may extend in place (`_Columns`);
    `buf_code`, `buf_ts`, `buf_value` are read-only views of them. It pickles as before this buffer
    existed (the three arrays, only the filled rows), so snapshots load in either direction.
    """

    asset_id: str = ""
    length_ms: int | None = None
    sensors: tuple[str, ...] = ()
    max_ts: int = _NO_TIME
    closed_until: int = _NO_TIME  # end of the latest closed window
    late: int = 0
    cols: _Columns = field(default_factory=lambda: _NO_COLUMNS, repr=False)
    n: int = 0  # buffered readings: the first n rows of `cols`
    buf_min: int = _NO_MIN  # the earliest buffered time (`_close`'s first test, without a pass over the buffer)
    # readings far ahead of the stream, held until confirmed or refuted (see the module docstring)
    held_code: np.ndarray = field(default_factory=lambda: _EMPTY_CODE)
    held_ts: np.ndarray = field(default_factory=lambda: _EMPTY_TS)
    held_value: np.ndarray = field(default_factory=lambda: _EMPTY_VALUE)
    held_ref: int = _NO_TIME  # the asset's latest accepted time when they were held
    phase_ms: int = 0  # windows are [phase + k * length, phase + (k + 1) * length); fixed when the first one opens

    @property
    def buf_code(self) -> np.ndarray:
        return _view(self.cols.code, self.n)

    @property
    def buf_ts(self) -> np.ndarray:
        return _view(self.cols.ts, self.n)

    @property
    def buf_value(self) -> np.ndarray:
        return _view(self.cols.value, self.n)

    def __getstate__(self) -> dict[str, Any]:
        d = dict(self.__dict__)
        del d["cols"], d["n"], d["buf_min"]
        n, cols = self.n, self.cols  # the filled rows only (plain slices: numpy pickles a read-only array slower)
        d["buf_code"], d["buf_ts"], d["buf_value"] = cols.code[:n], cols.ts[:n], cols.value[:n]
        return d

    def __setstate__(self, d: dict[str, Any]) -> None:  # (a snapshot from before `phase_ms`: the class default, 0)
        d = dict(d)
        code, ts, value = d.pop("buf_code"), d.pop("buf_ts"), d.pop("buf_value")
        n = len(ts)  # the loaded arrays, no room: the first append moves them into a buffer with room
        d.update(cols=_Columns(code, ts, value, n) if n else _NO_COLUMNS, n=n, buf_min=int(ts.min()) if n else _NO_MIN)
        self.__dict__.update(d)


def _buffer_fields(code: np.ndarray, ts: np.ndarray, value: np.ndarray) -> dict[str, Any]:
    """`WindowState`'s buffer fields holding these readings (own arrays, with room for more)."""
    if len(ts) == 0:
        return {"cols": _NO_COLUMNS, "n": 0, "buf_min": _NO_MIN}
    cols, n = _appended(_NO_COLUMNS, 0, code, ts, value)
    return {"cols": cols, "n": n, "buf_min": int(ts.min())}


def buffered(state: WindowState, code: np.ndarray, ts: np.ndarray, value: np.ndarray) -> WindowState:
    """`state` with these readings as its buffer instead of its own (tests build states with it)."""
    return evolve(state, **_buffer_fields(code, ts, value))


@dataclass(frozen=True)
class WindowOutput:
    closed: FeatureBatch | None
    late: tuple[Invalid, ...] = ()
    control: Any = None  # a review decision or maintenance record released at this point (see controls.py)


_NOTHING = WindowOutput(None)  # immutable: shared by the many batches that close nothing


def _output(refused: tuple[Invalid, ...]) -> WindowOutput:
    return WindowOutput(None, refused) if refused else _NOTHING


def _encode_sensors(known: tuple[str, ...], names: np.ndarray,
                    max_sensors: int = 1 << 30) -> tuple[tuple[str, ...], np.ndarray]:
    """Map sensor names to codes in the asset's append-only vocabulary; -1 for names over `max_sensors`.

    New names join in order of first arrival, so which are kept does not depend on batching.
    A small batch (a few readings of a few sensors: many assets, each sending little) is coded in a
    plain loop, which gives the same codes as the vectorised path at a fraction of its fixed cost.
    """
    if len(names) <= _SMALL:
        return _encode_few(known, names.tolist(), max_sensors)
    uniq, first, inverse = np.unique(names, return_index=True, return_inverse=True)
    index = {s: i for i, s in enumerate(known)}
    vocab = list(known)
    codes = np.empty(len(uniq), np.int32)
    for j in np.argsort(first, kind="stable"):
        name = uniq[j]
        i = index.get(name)
        if i is None:
            if len(vocab) >= max_sensors:
                codes[j] = -1
                continue
            i = len(vocab)
            vocab.append(name)
            index[name] = i
        codes[j] = i
    return tuple(vocab), codes[inverse.reshape(-1)]


def _encode_few(known: tuple[str, ...], names: list[Any], max_sensors: int) -> tuple[tuple[str, ...], np.ndarray]:
    """`_encode_sensors` for a short list of names, in arrival order."""
    index = _index_of(known)
    try:  # the usual case: every name is known already (one dict per vocabulary, shared by the assets of a kind)
        return known, np.array([index[name] for name in names], np.int32)
    except (KeyError, TypeError):
        pass
    index = dict(index)
    vocab = known
    codes = []
    for name in names:
        i = index.get(name)
        if i is None:
            if len(vocab) >= max_sensors:
                codes.append(-1)
                continue
            i = index[name] = len(vocab)
            vocab = (*vocab, name)
        codes.append(i)
    return vocab, np.array(codes, np.int32)


@lru_cache(maxsize=4096)
def _index_of(known: tuple[str, ...]) -> dict[str, int]:
    """Code of each name of a vocabulary (read only: shared by every asset with the same sensors)."""
    return {s: i for i, s in enumerate(known)}


def _dead(asset_id: str, sensors: Any, ts: np.ndarray, value: np.ndarray, reason: str,
          detail: Any) -> tuple[Invalid, ...]:
    """Readings as dead letters; `detail(t)` words the reason for a reading at time t."""
    return tuple(
        Invalid(reason, detail(int(t)),
                orjson.dumps({"asset_id": asset_id, "sensor": str(s), "ts": iso(int(t)), "value": float(v)}).decode(),
                f"window:{asset_id}")
        for s, t, v in zip(sensors, ts, value, strict=True)
    )


def _too_many_sensors(asset_id: str, sensors: np.ndarray, ts: np.ndarray, limit: int) -> Invalid:
    """One dead letter for all of a batch's readings of sensors over the limit (a flood must not multiply).

    `raw` is JSON: the asset, how many readings, the first few sensor names and the time range.
    """
    names = list(dict.fromkeys(str(s)[:128] for s in sensors[:1000]))[:20]
    raw = orjson.dumps({"asset_id": asset_id, "readings": len(ts), "sensors": names,
                        "from": iso(int(ts.min())), "to": iso(int(ts.max()))}).decode()
    return Invalid("too_many_sensors", f"{len(ts)} reading(s) refused: the asset already has {limit} sensors "
                   f"(limits.max_sensors_per_asset)", raw, f"window:{asset_id}")


def _screen_future(state: WindowState, code: np.ndarray, ts: np.ndarray, value: np.ndarray,
                   cfg: WindowConfig) -> tuple[WindowState, np.ndarray, np.ndarray, np.ndarray, tuple[Invalid, ...]]:
    """Hold readings far ahead of the asset's stream; accept them once confirmed, refuse them once refuted."""
    jump = cfg.future_ms
    if jump is None:
        return state, code, ts, value, ()
    if len(state.held_ts) == 0 and len(ts):
        if not _jumps(state.max_ts, ts, jump):
            return state, code, ts, value, ()  # the common case: nothing ahead, nothing held
    keep: list[int] = []  # indices into the held + batch sequence, in arrival order
    all_code = np.concatenate([state.held_code, code])
    all_ts = np.concatenate([state.held_ts, ts])
    all_value = np.concatenate([state.held_value, value])
    held = list(range(len(state.held_ts)))
    refuted: list[int] = []
    refs: list[int] = []  # the latest accepted time when each refuted reading was held
    ref = state.max_ts
    for i in range(len(state.held_ts), len(all_ts)):
        t = int(all_ts[i])
        if ref == _NO_TIME:
            ref = t
            keep.append(i)
        elif t > ref + jump:
            # ahead, but not with the held ones (each within `jump` of the one before): start again. Against the
            # first held reading instead, readings `jump` or more apart (hourly, after a gap) never confirmed
            if held and abs(t - int(all_ts[held[-1]])) > jump:
                refuted += held
                refs += [ref] * len(held)
                held = []
            held.append(i)
            if len({int(all_ts[k]) for k in held}) >= cfg.future_confirm:  # the stream really moved on
                keep += held
                ref = max(int(all_ts[k]) for k in held)
                held = []
        else:
            refuted += held
            refs += [ref] * len(held)
            held = []
            keep.append(i)
            ref = max(ref, t)
    out: tuple[Invalid, ...] = ()
    if refuted:
        r = np.array(refuted, dtype=np.int64)
        out = _future_outliers(state, all_code[r], all_ts[r], all_value[r], refs, cfg)
    h = np.array(held, dtype=np.int64)
    state = evolve(state, held_code=all_code[h], held_ts=all_ts[h], held_value=all_value[h], held_ref=ref)
    k = np.array(keep, dtype=np.int64)
    return state, all_code[k], all_ts[k], all_value[k], out


def _jumps(max_ts: int, ts: np.ndarray, jump: int) -> bool:
    """Whether any reading is more than `jump` ahead of the latest time before it (`max_ts`, then the batch)."""
    if len(ts) > _SMALL:
        before = np.maximum.accumulate(np.concatenate(([max_ts], ts[:-1])))
        return bool(((before != _NO_TIME) & (ts > before + jump)).any())
    times = ts.tolist()
    if max_ts != _NO_TIME and max(times) <= max_ts + jump:  # the usual case: none is ahead even of `max_ts`
        return False
    latest = max_ts
    for t in times:  # a few readings: a plain loop, the same test
        if latest != _NO_TIME and t > latest + jump:
            return True
        latest = max(latest, t)
    return False


def _future_outliers(state: WindowState, code: np.ndarray, ts: np.ndarray, value: np.ndarray, refs: list[int],
                     cfg: WindowConfig) -> tuple[Invalid, ...]:
    latest = iter(refs)

    def why(t: int) -> str:
        ref = next(latest)
        jump_s = (cfg.future_ms or 0) / 1000
        return (f"{(t - ref) / 3_600_000:.1f} h ahead of the asset's stream (latest {iso(ref)}); not confirmed "
                f"by {cfg.future_confirm} distinct times in a row (limits.future_jump_s {jump_s:g} s)")

    return _dead(state.asset_id, [state.sensors[c] for c in code], ts, value, "future_outlier", why)


def drop_held(state: WindowState, cfg: WindowConfig) -> tuple[WindowState, tuple[Invalid, ...]]:
    """End of the stream: held readings were never confirmed, so they are future outliers."""
    if len(state.held_ts) == 0:
        return state, ()
    out = _future_outliers(state, state.held_code, state.held_ts, state.held_value,
                           [state.held_ref] * len(state.held_ts), cfg)
    empty = WindowState()
    return evolve(state, held_code=empty.held_code, held_ts=empty.held_ts, held_value=empty.held_value), out


@lru_cache(maxsize=4096)  # many assets of one kind share their interval: the same answer, once
def nice_length_ms(interval_ms: float, samples: int) -> int:
    """A readable window length close to `samples` intervals.

    >>> nice_length_ms(10_000, 30), nice_length_ms(1_000, 30), nice_length_ms(3_600_000, 30)
    (300000, 30000, 86400000)
    """
    target_s = max(interval_ms * samples / 1000.0, 1.0)
    best = min(_NICE_S, key=lambda s: abs(np.log(s / target_s)))
    return int(best * 1000)


def auto_length_ms(interval_ms: float, samples: int, max_ms: int | None) -> int:
    """`nice_length_ms`, no longer than `max_ms` unless that holds fewer than `AUTO_MIN_SAMPLES` intervals.

    >>> auto_length_ms(10_000, 30, 900_000), auto_length_ms(300_000, 30, 900_000), auto_length_ms(600_000, 30, 900_000)
    (300000, 900000, 1800000)
    """
    length = nice_length_ms(interval_ms, samples)
    if max_ms is None or length <= max_ms:
        return length
    return max(max_ms, nice_length_ms(interval_ms, AUTO_MIN_SAMPLES))


def _auto_length(code: np.ndarray, ts: np.ndarray, samples: int, one_sensor: int,
                 max_ms: int | None = None) -> int | None:
    """The auto length, from the readings up to the first sensor's AUTO_PROBE-th one; None if too early.

    Only a prefix fixed by arrival order is used, so the choice does not depend on batching. When that
    prefix holds one sensor only, the asset is a single metric stream: `one_sensor` samples per window
    (there is no other sensor to average over, and an incident of a few readings must not drown in a
    long window).

    >>> _auto_length(np.zeros(8, np.int32), np.arange(8) * 300_000, 30, 6)  # 5-minute readings, one sensor
    1800000
    >>> _auto_length(np.tile(np.arange(2, dtype=np.int32), 8), np.repeat(np.arange(8), 2) * 300_000, 30, 6)
    10800000
    """
    if len(code) < AUTO_PROBE or max(np.bincount(code).tolist()) < AUTO_PROBE:  # no sensor has enough readings yet:
        return None  # the loop below would find none (many young assets probe on every batch: keep this cheap)
    codes = code.tolist()
    counts: dict[int, int] = {}
    for i, c in enumerate(codes):  # short: ends after at most sensors * AUTO_PROBE readings
        counts[c] = k = counts.get(c, 0) + 1
        if k == AUTO_PROBE:
            interval = _median_gap(ts[: i + 1][code[: i + 1] == c].tolist())
            if max(codes[: i + 1]) == 0:  # one sensor: its own rule, uncapped
                return nice_length_ms(interval, one_sensor)
            return auto_length_ms(interval, samples, max_ms)
    return None


def _median_gap(times: list[int]) -> float:
    """The median positive gap between sorted `times` (1000.0 without one): `np.median` of `np.diff` in plain
    Python, the same value (an even count averages the two middle gaps as numpy does, in float64). Every asset
    probes its length once; numpy's fixed cost on the few readings of a probe was most of that probe.

    >>> _median_gap([0, 10, 30, 30, 60]), _median_gap([5, 0, 20]), _median_gap([7, 7]), _median_gap([1])
    (20.0, 10.0, 1000.0, 1000.0)
    """
    times = sorted(times)
    gaps = sorted(b - a for a, b in zip(times, times[1:]) if b > a)
    if not gaps:
        return 1000.0
    mid = len(gaps) // 2
    if len(gaps) % 2:
        return float(gaps[mid])
    return (float(gaps[mid - 1]) + float(gaps[mid])) / 2.0


def _late_readings(state: WindowState, asset_id: str, code: np.ndarray, ts: np.ndarray, value: np.ndarray,
                   late: list[int], length_ms: int, lateness_ms: int) -> tuple[Invalid, ...]:
    out = []
    for i in late:
        sensor = state.sensors[code[i]]
        t = int(ts[i])
        raw = orjson.dumps({"asset_id": asset_id, "sensor": sensor, "ts": iso(t), "value": float(value[i])}).decode()
        end = window_end(t, length_ms, state.phase_ms)
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
    assert state.length_ms is not None  # noqa: S101 narrows the type (an invariant)
    if state.n == 0 or upto < state.closed_until + state.length_ms:
        # every buffered reading's window ends after `closed_until` (one ending at or before it is late) and
        # ends are the length apart: none can end by `upto`. Live, most batches of an asset close
        # nothing; this spares them a pass over the buffer
        return state, None
    phase = state.phase_ms
    if window_end(state.buf_min, state.length_ms, phase) > upto:  # the earliest is still open
        return state, None
    code, ts, value = state.buf_code, state.buf_ts, state.buf_value
    ends = window_ends(ts, state.length_ms, phase)
    if upto == _ALL_CLOSED:  # a flush: every buffered window closes (the masks below would select all, keep none)
        fb = window_features(asset_id, state.sensors, code, ts, value, state.length_ms, phase)
        return evolve(state, closed_until=max(state.closed_until, int(ends.max())),
                      **_buffer_fields(_EMPTY_CODE, _EMPTY_TS, _EMPTY_VALUE)), fb
    done = ends <= upto
    if not done.any():
        return state, None
    keep = ~done
    fb = window_features(asset_id, state.sensors, code[done], ts[done], value[done], state.length_ms, phase)
    state = evolve(
        state,
        closed_until=max(state.closed_until, int(ends[done].max())),
        **_buffer_fields(code[keep], ts[keep], value[keep]),
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
    sensors, code = _encode_sensors(state.sensors, batch.sensor, cfg.max_sensors)
    if sensors is not state.sensors or state.asset_id != batch.asset_id:
        state = evolve(state, asset_id=batch.asset_id, sensors=sensors)
    ts, value = batch.ts.astype(np.int64, copy=False), batch.value.astype(np.float64, copy=False)
    refused: tuple[Invalid, ...] = ()
    over = code < 0 if len(sensors) >= cfg.max_sensors else None  # only an asset at its limit has codes of -1
    if over is not None and over.any():
        refused = (_too_many_sensors(batch.asset_id, batch.sensor[over], ts[over], cfg.max_sensors),)
        code, ts, value = code[~over], ts[~over], value[~over]
        if len(ts) == 0:
            return state, WindowOutput(None, refused)

    if state.length_ms is None:
        cols, n = _appended(state.cols, state.n, code, ts, value)
        buf_code, buf_ts, buf_value = _view(cols.code, n), _view(cols.ts, n), _view(cols.value, n)
        length = _auto_length(buf_code, buf_ts, cfg.auto_samples, cfg.auto_samples_one_sensor, cfg.auto_max_ms)
        if length is None:
            return evolve(state, cols=cols, n=n, buf_min=min(state.buf_min, int(ts.min()))), _output(refused)
        # replay everything seen so far through the fixed-length path
        state = evolve(state, length_ms=length, **_buffer_fields(_EMPTY_CODE, _EMPTY_TS, _EMPTY_VALUE))
        code, ts, value = buf_code, buf_ts, buf_value

    length_ms = state.length_ms
    assert length_ms is not None  # noqa: S101 narrows the type (an invariant)
    if cfg.phase_by_asset and state.n == 0 and state.closed_until == _NO_TIME:  # the asset's first window opens
        state = _phased(state, length_ms)
    phase = state.phase_ms
    state, code, ts, value, future = _screen_future(state, code, ts, value, cfg)
    refused += future
    if len(ts) == 0:
        return state, _output(refused)
    if len(ts) <= _SMALL:  # a few readings: the same test in a plain loop
        times = ts.tolist()
        earliest = min(times)
        max_ts, late = _late_few(times, state.max_ts, state.closed_until, length_ms, cfg.lateness_ms, phase)
    else:
        earliest = int(ts.min())
        running_max = np.maximum.accumulate(np.maximum(ts, state.max_ts))
        late_mask = window_ends(ts, length_ms, phase) <= np.maximum(running_max - cfg.lateness_ms, state.closed_until)
        max_ts, late = int(running_max[-1]), (np.flatnonzero(late_mask).tolist() if late_mask.any() else [])
    late_out: tuple[Invalid, ...] = ()
    if late:
        late_out = _late_readings(state, batch.asset_id, code, ts, value, late, length_ms, cfg.lateness_ms)
        ok = np.ones(len(ts), bool)
        ok[late] = False
        code, ts, value = code[ok], ts[ok], value[ok]
        earliest = int(ts.min()) if len(ts) else _NO_MIN
    cols, n = _appended(state.cols, state.n, code, ts, value)
    state = evolve(state, max_ts=max_ts, late=state.late + len(late_out), cols=cols, n=n,
                   buf_min=min(state.buf_min, earliest))
    state, closed = _close(state, batch.asset_id, state.max_ts - cfg.lateness_ms)
    return state, _output(refused + late_out) if closed is None else WindowOutput(closed, refused + late_out)


def _one_sensor(asset_id: str, ts: list[int]) -> AssetReadings:
    """Readings of one sensor at these times (for the examples)."""
    return AssetReadings(asset_id, np.array(["t"] * len(ts), dtype=object), np.array(ts, np.int64), np.ones(len(ts)))


def clock_due(state: WindowState, cfg: WindowConfig) -> int | None:
    """The event time at which the earliest open window may close on the clock (`close_due`); None: none may.

    A window may close on the clock only once the asset's stream has reached its end (`max_ts` at or past
    it): an asset that stopped sending inside a window (gone silent, a broker outage) keeps it open until
    it sends again or the idle close, as without the clock.

    >>> cfg = WindowConfig(length_ms=2_000, lateness_ms=1_000)
    >>> s, _ = window_readings(None, _one_sensor("p", [0, 1_000, 2_000]), cfg)
    >>> clock_due(s, cfg), clock_due(window_readings(None, _one_sensor("p", [0, 1_000]), cfg)[0], cfg)
    (3000, None)
    """
    length = state.length_ms
    if length is None or state.n == 0:
        return None
    end = window_end(state.buf_min, length, state.phase_ms)
    return end + cfg.lateness_ms if end <= state.max_ts else None


def close_due(state: WindowState, cfg: WindowConfig, upto_ms: int) -> tuple[WindowState, FeatureBatch | None]:
    """Close the windows due by event time `upto_ms` (end + allowed lateness at or before it) that the asset's
    stream has reached (end at or before its latest time); later windows stay open. Readings of a closed window
    that arrive afterwards are late, as after an event-time close.

    >>> cfg = WindowConfig(length_ms=2_000, lateness_ms=1_000)
    >>> s, _ = window_readings(None, _one_sensor("p", [0, 1_000, 2_000, 2_500]), cfg)
    >>> s, fb = close_due(s, cfg, 3_000); fb.window_end.tolist(), s.closed_until, s.n
    ([2000], 2000, 2)
    >>> close_due(s, cfg, 60_000)[1] is None  # the stream has not reached 4 s: [2 s, 4 s) stays open
    True
    """
    if state.length_ms is None:
        return state, None
    return _close(state, state.asset_id, min(upto_ms - cfg.lateness_ms, state.max_ts))


def _late_few(ts: list[int], max_ts: int, closed_until: int, length_ms: int, lateness_ms: int,
              phase_ms: int = 0) -> tuple[int, list[int]]:
    """The latest time after these readings, and which are late (as the vectorised test, reading by reading)."""
    if not ts:
        return max_ts, []
    latest = max(max_ts, max(ts))
    if window_end(min(ts), length_ms, phase_ms) > max(latest - lateness_ms, closed_until):
        return latest, []  # the usual case: even the earliest reading's window is open after the latest one
    late = []
    bound = max(max_ts - lateness_ms, closed_until)  # the watermark so far: rises with max_ts only
    for i, t in enumerate(ts):
        if t > max_ts:
            max_ts = t
            if t - lateness_ms > bound:
                bound = t - lateness_ms
        if window_end(t, length_ms, phase_ms) <= bound:
            late.append(i)
    return max_ts, late


def flush_windows(state: WindowState, cfg: WindowConfig) -> tuple[WindowState, FeatureBatch | None]:
    """Close every open window (end of a replay, or an asset gone idle in a live run).

    Readings that arrive later for a flushed window are late.
    """
    if state.length_ms is None:
        if state.n == 0:
            return state, None
        # too little data to choose a length: use the probe rule on what there is
        interval = _median_gap(state.buf_ts.tolist())
        length = auto_length_ms(interval, cfg.auto_samples, cfg.auto_max_ms)
        state = evolve(state, length_ms=length)
        if cfg.phase_by_asset and state.closed_until == _NO_TIME:
            state = _phased(state, length)
    return _close(state, state.asset_id, _ALL_CLOSED)


def _phased(state: WindowState, length_ms: int) -> WindowState:
    phase = asset_phase_ms(state.asset_id, length_ms)
    return state if phase == state.phase_ms else evolve(state, phase_ms=phase)
