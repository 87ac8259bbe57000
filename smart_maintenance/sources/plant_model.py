"""The simulated plant: deterministic sensor signals and the faults injected into them.

Every reading is a pure function of (registry, settings, asset, tick), so a
resumed run, a run split into other partitions, or a run at another speed
gives the same readings. Three kinds of randomness make that possible:

- smooth signals (load cycle drift, per-asset operating points) come from a
  counter-based hash of (seed, asset, stream, knot): no state at all;
- noise comes from `default_rng([seed, 0, asset, chunk])`, one draw per chunk
  of `CHUNK_TICKS` ticks, sliced to the ticks asked for;
- injected events come from their own seeded streams, generated up front:
  the machine timeline (planned stops, degradations ending in a failure and a
  repair) is a renewal process per asset, and short events (dropouts, spikes,
  NaNs, sensor faults) are drawn per asset and simulated day. `ground_truth`
  returns the same events as data, for the benchmarks.

Signals: a load cycle (daily curve, dips at the 06/14/22 h shift changes,
slow random drift) moves every sensor inside its normal band coherently;
temperatures follow load 20 minutes late and cool down / warm up with a 45
minute time constant when the asset stops; the rest stops within a minute.
A degradation blends each affected sensor from its normal value toward its
failure value with the accelerating shape (e^{3p}-1)/(e^3-1), reaching
`failure` (for share 1) at the failure time, when the repair stop begins.
"""

from __future__ import annotations

import bisect
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import overload

import numpy as np

from smart_maintenance.config.registry import AssetType, Registry, SensorSpec
from smart_maintenance.config.settings import SimulatorSettings
from smart_maintenance.operators.records import Readings, dt_to_ms

CHUNK_TICKS = 360
"""Ticks that share one noise draw; emitted blocks divide it so they never straddle two."""

HOUR_MS = 3_600_000
DAY_MS = 24 * HOUR_MS
LOAD_KNOT_MS = 3 * HOUR_MS  # load drift changes course every few hours
SENSOR_KNOT_MS = 6 * HOUR_MS
THERMAL_LAG_MS = 20 * 60_000
TAU_MECH_S = 20.0
TAU_THERMAL_S = 45 * 60.0
STOP_MEMORY_MS = int(10 * TAU_THERMAL_S * 1000)  # after this a stop no longer shows
WEAR_SHAPE = 3.0
NOISE_CACHE_BYTES = 256 * 2**20  # larger partitions redraw noise per block instead
_PAD = 2**62  # start of a padding event: never reached

_U64 = np.uint64


def _mix(x: np.ndarray) -> np.ndarray:
    """splitmix64 finaliser on uint64 arrays (wraps on overflow, by design)."""
    x = x + _U64(0x9E3779B97F4A7C15)
    x = (x ^ (x >> _U64(30))) * _U64(0xBF58476D1CE4E5B9)
    x = (x ^ (x >> _U64(27))) * _U64(0x94D049BB133111EB)
    mixed: np.ndarray = x ^ (x >> _U64(31))
    return mixed


SPIKE, NAN, STUCK, OOR, DROPOUT, SENTINEL, DRIFT = range(7)
"""Short-event kinds, in the order they apply to a block (a dropout hides everything but the last two)."""
SENTINELS = (-999.0, -9999.0, 9999.0, 32767.0, 65535.0, 0.0)
"""Codes a failing transmitter or gateway sends instead of a value."""
SCHEDULES = ("none", "nightly", "weekend", "nightly_weekend", "cycling")
"""Stop patterns an asset type can follow (besides its random planned stops)."""
PLANNED, REPAIR = 0, 1


def parse_start(start: str) -> int:
    """RFC 3339 text as epoch ms; a time without an offset is taken as UTC."""
    try:
        dt = datetime.fromisoformat(start)
    except ValueError as e:
        raise ValueError(f"start must be an RFC 3339 time, got {start!r}") from e
    return dt_to_ms(dt if dt.tzinfo else dt.replace(tzinfo=timezone.utc))


@dataclass(frozen=True, slots=True)
class FaultRates:
    """How often things happen, per asset and simulated day; durations as (min, max).

    The defaults give a 3-day run of 12 assets a handful of degradations, some
    stops, dozens of spikes and dropouts, and one or two sensor faults. No
    degradation or sensor fault starts in the first `healthy_hours`, so
    detectors can learn a clean baseline.
    """

    stops_per_day: float = 0.4
    stop_hours: tuple[float, float] = (1.0, 4.0)
    degradations_per_day: float = 0.4
    degradation_hours: tuple[float, float] = (6.0, 36.0)
    min_gap_hours: float = 2.0
    healthy_hours: float = 24.0
    dropouts_per_day: float = 1.0
    dropout_minutes: tuple[float, float] = (2.0, 10.0)
    spikes_per_day: float = 2.0
    nans_per_day: float = 0.5
    sensor_faults_per_day: float = 0.15
    stuck_share: float = 0.6
    stuck_hours: tuple[float, float] = (1.0, 6.0)
    out_of_range_hours: tuple[float, float] = (0.2, 2.0)
    # plant families (sources/plant_family.py); the defaults leave the plant above unchanged
    noise_scale: float = 1.0  # multiplies every sensor's noise
    load_steps: bool = False  # load moves between discrete levels instead of drifting smoothly
    schedules: tuple[tuple[str, str], ...] = ()  # (asset type, one of SCHEDULES): stops by the clock
    cycle_minutes: tuple[float, float] = (20.0, 45.0)  # "cycling": run and stop durations are drawn from this
    sentinel_faults_per_day: float = 0.0  # a sensor sends one of SENTINELS for a while
    sentinel_minutes: tuple[float, float] = (5.0, 40.0)
    drift_faults_per_day: float = 0.0  # a sensor's reading drifts off (calibration), then is fixed
    drift_hours: tuple[float, float] = (4.0, 12.0)
    dead_share: float = 0.0  # share of assets with one sensor that goes silent for good
    setpoint_share: float = 0.0  # share of assets whose operating point of one sensor moves for good (not a fault)

    def __post_init__(self) -> None:
        for name in ("stop_hours", "degradation_hours", "dropout_minutes", "stuck_hours", "out_of_range_hours",
                     "cycle_minutes", "sentinel_minutes", "drift_hours"):
            lo, hi = getattr(self, name)
            if not 0 < lo <= hi:
                raise ValueError(f"{name} must be (min, max) with 0 < min <= max, got {(lo, hi)}")
        for name in ("stops_per_day", "degradations_per_day", "min_gap_hours", "healthy_hours", "dropouts_per_day",
                     "spikes_per_day", "nans_per_day", "sensor_faults_per_day"):
            if not getattr(self, name) >= 0:
                raise ValueError(f"{name} must be >= 0, got {getattr(self, name)}")
        for name in ("stuck_share", "dead_share", "setpoint_share"):
            if not 0 <= getattr(self, name) <= 1:
                raise ValueError(f"{name} must be in [0, 1], got {getattr(self, name)}")
        if not self.noise_scale > 0 or not self.sentinel_faults_per_day >= 0 or not self.drift_faults_per_day >= 0:
            raise ValueError("need noise_scale > 0 and fault rates >= 0")
        bad = [p for _, p in self.schedules if p not in SCHEDULES]
        if bad:
            raise ValueError(f"schedules must be among {SCHEDULES}, got {bad}")


# --- sensor physics -----------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Physics:
    coupling: float  # follows load: +1 with it, -1 against it, 0 not at all
    thermal: bool  # lags load, cools and warms slowly
    idle: str  # when stopped: "floor" of its range, "ambient" temperature, or "hold" (supply voltage)
    noise: float  # sigma as a share of the normal band's width


_PHYSICS = {  # by unit: the registry says what a sensor measures only through its unit
    "degC": _Physics(0.6, True, "ambient", 0.03),
    "A": _Physics(0.8, False, "floor", 0.05),
    "m3/h": _Physics(0.9, False, "floor", 0.05),
    "t/h": _Physics(1.0, False, "floor", 0.05),
    "bar": _Physics(-0.2, False, "floor", 0.05),
    "mm/s": _Physics(0.5, False, "floor", 0.08),
    "rpm": _Physics(0.05, False, "floor", 0.05),
    "m/s": _Physics(0.05, False, "floor", 0.05),
    "V": _Physics(-0.3, False, "hold", 0.05),
}
_DEFAULT_PHYSICS = _Physics(0.5, False, "floor", 0.05)
AMBIENT_C = 20.0


@dataclass(frozen=True, eq=False)
class TypeModel:
    """One asset type's sensors as arrays over its sensors (in registry order)."""

    name: str
    sensors: tuple[str, ...]
    modes: tuple[str, ...]
    affected: tuple[tuple[str, ...], ...]  # per mode: sensors it moves, largest share first
    effects: np.ndarray  # (modes, sensors) share of the way to failure
    repair_hours: float
    state: int  # index of the state sensor, -1 without one
    state_cap: float  # a stopped asset's state sensor stays under this
    lo: np.ndarray
    hi: np.ndarray
    center: np.ndarray
    half: np.ndarray
    width: np.ndarray
    failure: np.ndarray
    idle: np.ndarray
    noise: np.ndarray
    coupling: np.ndarray
    thermal: np.ndarray
    hold: np.ndarray

    @staticmethod
    def of(name: str, t: AssetType) -> TypeModel:
        sensors = tuple(t.sensors)
        specs = [t.sensors[s] for s in sensors]
        phys = [_PHYSICS.get(sp.unit, _DEFAULT_PHYSICS) for sp in specs]

        def col(f: Callable[[SensorSpec, _Physics], float]) -> np.ndarray:
            return np.array([f(sp, ph) for sp, ph in zip(specs, phys)], dtype=float)

        lo, hi = col(lambda sp, _: sp.range[0]), col(lambda sp, _: sp.range[1])
        nlo, nhi = col(lambda sp, _: sp.normal[0]), col(lambda sp, _: sp.normal[1])
        idle = np.array([
            (nlo[i] + nhi[i]) / 2 if ph.idle == "hold"
            else min(max(AMBIENT_C, lo[i]), nlo[i]) if ph.idle == "ambient"
            else lo[i] + 0.02 * (nlo[i] - lo[i])
            for i, ph in enumerate(phys)
        ])
        state, cap = -1, math.inf
        if t.state_sensor is not None and t.running_min is not None:
            state, cap = sensors.index(t.state_sensor), 0.5 * t.running_min
            idle[state] = min(idle[state], 0.2 * t.running_min)
        modes = tuple(sorted(t.failure_modes))
        effects = np.array([[t.failure_modes[m].effects.get(s, 0.0) for s in sensors] for m in modes])
        effects = effects.reshape(len(modes), len(sensors))
        affected = tuple(
            tuple(s for s, _ in sorted(t.failure_modes[m].effects.items(), key=lambda kv: (-kv[1], kv[0])) if _ > 0)
            for m in modes
        )
        return TypeModel(
            name, sensors, modes, affected, effects, t.repair_hours, state, cap, lo, hi, (nlo + nhi) / 2,
            (nhi - nlo) / 2, nhi - nlo, col(lambda sp, _: sp.failure), idle,
            col(lambda sp, ph: ph.noise * (sp.normal[1] - sp.normal[0])), col(lambda _, ph: ph.coupling),
            np.array([ph.thermal for ph in phys]), np.array([ph.idle == "hold" for ph in phys]),
        )


@dataclass
class _Timeline:
    """One asset's machine events, drawn in time order from its own stream: every prefix is stable."""

    rng: np.random.Generator
    tm: TypeModel
    next_tick: int = 0
    stops: list[tuple[int, int, int]] = field(default_factory=list)  # (start, end, PLANNED | REPAIR)
    degradations: list[tuple[int, int, int, int]] = field(default_factory=list)  # (start, failure, repair_end, mode)

    def extend_to(self, tick: int, m: PlantModel) -> None:
        """Draw events until every one that starts at or before `tick` is known."""
        r = m.rates
        total = r.stops_per_day + r.degradations_per_day
        while self.next_tick <= tick:
            if total == 0:
                self.next_tick = _PAD
                return
            gap, pick, u, u_mode = self.rng.exponential(), self.rng.random(), self.rng.random(), self.rng.random()
            start = self.next_tick + m.ticks_of(gap * 24 / total)
            if pick < r.degradations_per_day / total:
                if not self.tm.modes or start < m.ticks_of(r.healthy_hours):
                    self.next_tick = start  # thinned: degradations wait for a healthy baseline
                    continue
                lo, hi = r.degradation_hours
                fail = start + m.ticks_of(lo + (hi - lo) * u)
                end = fail + m.ticks_of(self.tm.repair_hours)
                self.degradations.append((start, fail, end, int(u_mode * len(self.tm.modes))))
                self.stops.append((fail, end, REPAIR))
            else:
                lo, hi = r.stop_hours
                end = start + m.ticks_of(lo + (hi - lo) * u)
                self.stops.append((start, end, PLANNED))
            self.next_tick = end + m.ticks_of(r.min_gap_hours)

    def stops_near(self, t0: int, t1: int, memory: int) -> list[tuple[int, int]]:
        """Stops that start before t1 and still show (end + memory) after t0."""
        i = bisect.bisect_left(self.stops, t1, key=lambda s: s[0]) - 1
        out = []
        while i >= 0 and self.stops[i][1] + memory > t0:
            out.append(self.stops[i][:2])
            i -= 1
        return out

    def degradations_near(self, t0: int, t1: int) -> list[tuple[int, int, int, int]]:
        i = bisect.bisect_left(self.degradations, t1, key=lambda d: d[0]) - 1
        out = []
        while i >= 0 and self.degradations[i][2] > t0:
            out.append(self.degradations[i])
            i -= 1
        return out

    def forget_before(self, tick: int) -> None:
        self.stops = [s for s in self.stops if s[1] >= tick]
        self.degradations = [d for d in self.degradations if d[2] >= tick]


class PlantModel:
    """The plant of `registry.with_simulated(settings.assets)`, tick by tick.

    Tick k is at `start + k * interval_s`; the run has `n_ticks` ticks (None
    = forever). `generate` is pure; the caches it fills only save work.
    """

    def __init__(self, registry: Registry, settings: SimulatorSettings, rates: FaultRates | None = None) -> None:
        self.registry = registry.with_simulated(settings.assets)
        self.rates = rates or FaultRates()
        self.start_ms = parse_start(settings.start)
        self.interval_ms = int(round(settings.interval_s * 1000))
        if self.interval_ms < 1:
            raise ValueError(f"interval_s must be at least 0.001, got {settings.interval_s}")
        self.n_ticks = None if settings.duration_s is None else math.ceil(settings.duration_s * 1000 / self.interval_ms)
        self.seed = settings.seed % 2**64
        self.asset_ids = tuple(a.asset_id for a in self.registry.assets)
        used = {a.type for a in self.registry.assets}
        types = self.registry.asset_types
        self.types = {n: TypeModel.of(n, types[n]) for n in sorted(used)}
        self.type_of = tuple(self.types[a.type] for a in self.registry.assets)
        self.epoch_ticks = max(1, round(DAY_MS / self.interval_ms))
        self._stop_memory_ticks = math.ceil(STOP_MEMORY_MS / self.interval_ms)
        r = self.rates
        longest = max(self.ticks_of(h) for h in (r.stuck_hours[1], r.out_of_range_hours[1], r.dropout_minutes[1] / 60,
                                                  r.sentinel_minutes[1] / 60, r.drift_hours[1]))
        self._lookback_epochs = math.ceil(longest / self.epoch_ticks)  # epochs a short event can reach into
        patterns = dict(r.schedules)
        self.schedule_of = tuple(patterns.get(a.type, "none") for a in self.registry.assets)
        self._timelines: dict[int, _Timeline] = {}
        self._epochs: dict[tuple[int, int], list[tuple[int, int, int, int, float]]] = {}
        self._layouts: dict[tuple[int, ...], _Layout] = {}
        self._noise_cache: dict[tuple[bytes, int], np.ndarray] = {}

    # --- time ---------------------------------------------------------------

    def ticks_of(self, hours: float) -> int:
        """A duration in hours as a whole number of ticks (at least one)."""
        return max(1, round(hours * HOUR_MS / self.interval_ms))

    @overload
    def tick_ms(self, tick: int) -> int: ...
    @overload
    def tick_ms(self, tick: np.ndarray) -> np.ndarray: ...
    def tick_ms(self, tick: int | np.ndarray) -> int | np.ndarray:
        """Epoch ms of a tick, or of an int64 array of ticks."""
        return self.start_ms + tick * self.interval_ms

    @property
    def end_ms(self) -> int | None:
        return None if self.n_ticks is None else self.start_ms + self.n_ticks * self.interval_ms

    # --- readings -----------------------------------------------------------

    def generate(self, assets: Sequence[int], tick0: int, n: int) -> Readings:
        """Readings of `assets` (indices into `registry.assets`) for ticks [tick0, tick0+n).

        Ordered by tick, then asset index, then the type's sensor order; a
        sensor in a dropout sends nothing.
        """
        if n < 1 or tick0 < 0:
            raise ValueError(f"need n >= 1 and tick0 >= 0, got n={n} tick0={tick0}")
        layout = self._layout(tuple(assets))
        values, keeps = [], []
        for tm, idx in layout.groups:
            v, keep = self._type_block(tm, idx, tick0, n)
            values.append(v.reshape(n, -1))
            keeps.append(keep)
        value = np.concatenate(values, axis=1)[:, layout.perm].ravel()
        ts = np.repeat(self.tick_ms(np.arange(tick0, tick0 + n, dtype=np.int64)), len(layout.perm))
        out = Readings(np.tile(layout.asset_col, n), np.tile(layout.sensor_col, n), ts, value)
        if any(k is not None for k in keeps):
            full = [np.ones((n, v.shape[1]), bool) if k is None else k.reshape(n, -1) for k, v in zip(keeps, values)]
            out = out.take(np.concatenate(full, axis=1)[:, layout.perm].ravel())
        return out

    def _layout(self, assets: tuple[int, ...]) -> _Layout:
        if assets not in self._layouts:
            self._layouts[assets] = _Layout.of(self, assets)
        return self._layouts[assets]

    def _type_block(self, tm: TypeModel, idx: np.ndarray, tick0: int, n: int) -> tuple[np.ndarray, np.ndarray | None]:
        ts = self.tick_ms(np.arange(tick0, tick0 + n, dtype=np.int64))
        clean, m, wear = self.clean(tm, idx, ts)
        z = self._noise(idx, tick0, n, len(tm.sensors))
        sigma = tm.noise * self.rates.noise_scale * (0.8 + 0.4 * self._u(idx[:, None], 4, 0)) * (1.0 + 2.0 * wear)
        sigma = np.where(tm.thermal, sigma, sigma * (0.2 + 0.8 * m[..., None]))
        v = np.clip(clean + z * sigma, tm.lo, tm.hi)
        if tm.state >= 0:  # a stopped asset's state sensor stays clearly under running_min
            col = v[..., tm.state]
            col[m < 0.1] = np.minimum(col[m < 0.1], tm.state_cap)
        return v, self._inject(tm, idx, tick0, n, v, z)

    def _noise(self, idx: np.ndarray, tick0: int, n: int, s: int) -> np.ndarray:
        """Standard normal noise (t, a, s), drawn a chunk at a time per asset and sliced."""
        parts = []
        for c in range(tick0 // CHUNK_TICKS, (tick0 + n - 1) // CHUNK_TICKS + 1):
            first = c * CHUNK_TICKS
            lo, hi = max(tick0, first) - first, min(tick0 + n, first + CHUNK_TICKS) - first
            parts.append(self._chunk_noise(idx, c, s)[lo:hi])
        return parts[0] if len(parts) == 1 else np.concatenate(parts)

    def _chunk_noise(self, idx: np.ndarray, c: int, s: int) -> np.ndarray:
        key = (idx.tobytes(), c)
        if key in self._noise_cache:
            return self._noise_cache[key]
        out = np.empty((CHUNK_TICKS, len(idx), s))
        for j, a in enumerate(idx):
            out[:, j] = np.random.default_rng([self.seed, 0, int(a), c]).standard_normal((CHUNK_TICKS, s))
        # blocks smaller than a chunk come back for the rest of it; older chunks never do
        self._noise_cache = {k: v for k, v in self._noise_cache.items() if k[1] == c}
        out.flags.writeable = False
        if out.nbytes <= NOISE_CACHE_BYTES:
            self._noise_cache[key] = out
        return out

    def _inject(
        self, tm: TypeModel, idx: np.ndarray, tick0: int, n: int, v: np.ndarray, z: np.ndarray
    ) -> np.ndarray | None:
        """Apply spikes, NaNs, sensor faults (in that order) to `v`; return the dropout keep-mask."""
        keep = None
        t1 = tick0 + n
        for j, a in enumerate(idx):
            for kind, s, start, end, value in self.short_events(int(a), tick0, t1):
                r0, r1 = max(start, tick0) - tick0, min(end, t1) - tick0
                if kind == SPIKE:
                    v[r0, j, s] = np.clip(v[r0, j, s] + value, tm.lo[s], tm.hi[s])
                elif kind == NAN:
                    v[r0, j, s] = np.nan
                elif kind == STUCK:
                    v[r0:r1, j, s] = value
                elif kind == OOR:
                    sign = 1.0 if value > tm.hi[s] else -1.0
                    v[r0:r1, j, s] = value + sign * np.abs(z[r0:r1, j, s]) * 0.01 * (tm.hi[s] - tm.lo[s])
                elif kind == SENTINEL:
                    v[r0:r1, j, s] = value
                elif kind == DRIFT:  # the reading walks off linearly, `value` away at the end
                    ticks = np.arange(tick0 + r0, tick0 + r1)
                    v[r0:r1, j, s] += value * (ticks - start) / max(end - start, 1)
                else:
                    if keep is None:
                        keep = np.ones(v.shape, bool)
                    keep[r0:r1, j, s] = False
            dead = self.dead_sensor(int(a))
            if dead is not None and dead[1] < t1:
                if keep is None:
                    keep = np.ones(v.shape, bool)
                keep[max(dead[1], tick0) - tick0:, j, dead[0]] = False
        return keep

    # --- the noise-free signal ---------------------------------------------

    def clean(self, tm: TypeModel, idx: np.ndarray, ts: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Noise-free values (t, a, s), the mechanical running factor (t, a) and the wear (t, a, s)."""
        a, t = idx[None, :], ts[:, None]
        load, load_late = self._load(t, a), self._load(t - THERMAL_LAG_MS, a)
        s = np.arange(len(tm.sensors))
        drift = self._value_noise(t[..., None], a[..., None], 200 + s, SENSOR_KNOT_MS)
        offset = (self._u(a[..., None], 100 + s, 0) - 0.5) * 0.3
        follow = np.where(tm.thermal, load_late[..., None], load[..., None])
        v = tm.center + tm.half * (0.7 * (tm.coupling * follow + (1 - np.abs(tm.coupling)) * 0.5 * drift) + offset)
        for j, asset in enumerate(idx):
            sp = self.setpoint(int(asset))
            if sp is not None:  # a new operating point from then on, for good
                v[:, j, sp[0]] += np.where(ts >= self.tick_ms(sp[1]), sp[2], 0.0)
        wear = self._wear(tm, idx, ts)
        v = v + wear * (tm.failure - v)
        mech, thermal = self._running(idx, ts)
        run = np.where(tm.thermal, thermal[..., None], mech[..., None])
        run = np.where(tm.hold, 1.0, run)
        return tm.idle + (v - tm.idle) * run, mech, wear

    def _u(self, a: np.ndarray, stream: int | np.ndarray, k: int | np.ndarray) -> np.ndarray:
        """Uniform [0, 1) from a hash of (seed, asset, stream, k), broadcast over its arguments."""
        h = _mix(np.asarray(a).astype(_U64) + _U64(self.seed))
        h = _mix(h + np.asarray(stream).astype(_U64))
        h = _mix(h + np.asarray(k).astype(_U64))
        return (h >> _U64(11)).astype(np.float64) * 2.0**-53

    def _u1(self, a: int, stream: int) -> float:
        """`_u` for one asset and stream, as a float."""
        return float(self._u(np.array([a]), stream, 0)[0])

    def _value_noise(self, t: np.ndarray, a: np.ndarray, stream: int | np.ndarray, knot_ms: int) -> np.ndarray:
        """A smooth random curve in [-1, 1] through hashed knots every `knot_ms`."""
        k = t // knot_ms
        x = (t - k * knot_ms) / knot_ms
        ua, ub = self._u(a, stream, k), self._u(a, stream, k + 1)
        curve: np.ndarray = 2 * ua - 1 + 2 * (ub - ua) * x * x * (3 - 2 * x)
        return curve

    def _load(self, t: np.ndarray, a: np.ndarray) -> np.ndarray:
        """Load in [-1, 1]: daily curve (low at 03 h), shift-change dips, slow drift."""
        phase = ((self._u(a, 1, 0) - 0.5) * 3 * HOUR_MS).astype(np.int64)
        hour = ((t + phase) % DAY_MS) / HOUR_MS
        daily = -np.cos(2 * np.pi * (hour - 3) / 24)
        d = (hour - 6) % 8
        dip = -0.3 * np.exp(-0.5 * (np.minimum(d, 8 - d) * 6) ** 2)
        amp = 0.8 + 0.2 * self._u(a, 2, 0)
        wander = self._value_noise(t, a, 3, LOAD_KNOT_MS)
        if self.rates.load_steps:  # discrete load levels (a batch plant, a line that runs one product at a time)
            wander = np.round(wander * 2) / 2
        return np.clip(amp * (0.55 * daily + 0.35 * wander) + dip, -1, 1)

    def _running(self, idx: np.ndarray, ts: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Running factors in [0, 1] (1 = running) with a mechanical and a thermal time constant."""
        t0, t1 = self._tick_range(ts)
        spans = [self.timeline(int(a), t1).stops_near(t0, t1, self._stop_memory_ticks)
                 + self.scheduled_stops(int(a), t0, t1) for a in idx]
        if not any(spans):
            ones = np.ones((len(ts), len(idx)))
            return ones, ones
        se = self._event_ms(spans, 2)
        s, e, t = se[..., 0], se[..., 1], ts[:, None, None]
        inside, after = (t >= s) & (t < e), (t >= e) & (t - e < STOP_MEMORY_MS)
        since = np.clip(t - s, 0, None) / 1000.0
        out = []
        for tau in (TAU_MECH_S, TAU_THERMAL_S):
            fell = 1 - np.exp(-np.clip(e - s, 0, STOP_MEMORY_MS) / 1000.0 / tau)
            back = 1 - fell * np.exp(-np.clip(t - e, 0, None) / 1000.0 / tau)
            f = np.where(inside, np.exp(-since / tau), np.where(after, back, 1.0))
            out.append(np.prod(f, axis=2))
        return out[0], out[1]

    def _wear(self, tm: TypeModel, idx: np.ndarray, ts: np.ndarray) -> np.ndarray:
        """Each sensor's share of the way to failure (t, a, s); held through the repair stop."""
        t0, t1 = self._tick_range(ts)
        degs = [self.timeline(int(a), t1).degradations_near(t0, t1) for a in idx]
        if not any(degs):
            return np.zeros((len(ts), len(idx), len(tm.sensors)))
        sfr = self._event_ms(degs, 3)
        s, f, r, t = sfr[..., 0], sfr[..., 1], sfr[..., 2], ts[:, None, None]
        eff = np.zeros((len(idx), sfr.shape[1], len(tm.sensors)))  # padding moves nothing
        for j, ds in enumerate(degs):
            for i, d in enumerate(ds):
                eff[j, i] = tm.effects[d[3]]
        p = np.clip((t - s) / (f - s), 0.0, 1.0)
        shape = np.where((t >= s) & (t < r), np.expm1(WEAR_SHAPE * p) / math.expm1(WEAR_SHAPE), 0.0)
        wear: np.ndarray = np.sum(shape[..., None] * eff[None], axis=2)
        return wear

    def _event_ms(self, events: Sequence[Sequence[tuple[int, ...]]], fields: int) -> np.ndarray:
        """The first `fields` ticks of each asset's events as epoch ms (a, k, fields).

        Assets with fewer events are padded with events that are never reached.
        """
        out = np.full((len(events), max(map(len, events)), fields), _PAD, np.int64)
        out[..., 1:] += 1
        for j, evs in enumerate(events):
            for i, ev in enumerate(evs):
                out[j, i] = self.tick_ms(np.array(ev[:fields], np.int64))
        return out

    def _tick_range(self, ts: np.ndarray) -> tuple[int, int]:
        return int((ts[0] - self.start_ms) // self.interval_ms), int((ts[-1] - self.start_ms) // self.interval_ms) + 1

    # --- injected events ------------------------------------------------------

    def timeline(self, a: int, until: int) -> _Timeline:
        """Asset `a`'s machine timeline (stops, degradations), known at least up to tick `until`."""
        if a not in self._timelines:
            self._timelines[a] = _Timeline(np.random.default_rng([self.seed, 1, a, 0]), self.type_of[a])
        tl = self._timelines[a]
        tl.extend_to(until, self)
        return tl

    def short_events(self, a: int, t0: int, t1: int) -> list[tuple[int, int, int, int, float]]:
        """(kind, sensor, start, end, value) of asset `a` overlapping ticks [t0, t1), in the order they apply."""
        first = max(0, t0 // self.epoch_ticks - self._lookback_epochs)
        evs = [ev for e in range(first, (t1 - 1) // self.epoch_ticks + 1) for ev in self.epoch_events(a, e)]
        return sorted((ev for ev in evs if ev[2] < t1 and ev[3] > t0), key=lambda ev: (ev[0], ev[2]))

    def epoch_events(self, a: int, e: int) -> list[tuple[int, int, int, int, float]]:
        """The short events that start in asset `a`'s simulated day `e` (seeded by (seed, a, e))."""
        key = (a, e)
        if key not in self._epochs:
            self._epochs[key] = self._draw_epoch(a, e)
        return self._epochs[key]

    def _draw_epoch(self, a: int, e: int) -> list[tuple[int, int, int, int, float]]:
        rng, r, tm = np.random.default_rng([self.seed, 2, a, e]), self.rates, self.type_of[a]
        ns, big, base = len(tm.sensors), self.epoch_ticks, e * self.epoch_ticks
        days = big * self.interval_ms / DAY_MS
        width = tm.width
        out: list[tuple[int, int, int, int, float]] = []

        def draw(rate: float) -> tuple[int, np.ndarray, np.ndarray]:
            n = int(rng.poisson(rate * days))
            return n, rng.integers(ns, size=n), base + rng.integers(big, size=n)

        n, sen, st = draw(r.dropouts_per_day)
        dur = rng.uniform(*r.dropout_minutes, size=n) / 60
        out += [(DROPOUT, int(s), int(t), int(t) + self.ticks_of(d), 0.0) for s, t, d in zip(sen, st, dur)]
        n, sen, st = draw(r.spikes_per_day)
        mag = rng.uniform(3.0, 6.0, size=n) * np.where(rng.random(n) < 0.5, -1.0, 1.0)
        out += [(SPIKE, int(s), int(t), int(t) + 1, float(m * width[s])) for s, t, m in zip(sen, st, mag)]
        n, sen, st = draw(r.nans_per_day)
        out += [(NAN, int(s), int(t), int(t) + 1, math.nan) for s, t in zip(sen, st)]
        n, sen, st = draw(r.sensor_faults_per_day)
        stuck = rng.random(n) < r.stuck_share
        hours = np.where(stuck, rng.uniform(*r.stuck_hours, size=n), rng.uniform(*r.out_of_range_hours, size=n))
        above, frac = rng.random(n) < 0.5, rng.uniform(0.05, 0.3, size=n)
        healthy = self.ticks_of(r.healthy_hours)
        for i in range(n):
            s, t = int(sen[i]), int(st[i])
            if t < healthy:
                continue
            if stuck[i]:
                clean = self.clean(tm, np.array([a]), self.tick_ms(np.array([t], np.int64)))[0]
                out.append((STUCK, s, t, t + self.ticks_of(hours[i]), round(float(clean[0, 0, s]), 2)))
            else:
                span = tm.hi[s] - tm.lo[s]
                value = tm.hi[s] + frac[i] * span if above[i] else tm.lo[s] - frac[i] * span
                out.append((OOR, s, t, t + self.ticks_of(hours[i]), float(value)))
        if r.sentinel_faults_per_day > 0 or r.drift_faults_per_day > 0:
            out += self._draw_family_faults(np.random.default_rng([self.seed, 3, a, e]), a, e)
        return out

    def _draw_family_faults(self, rng: np.random.Generator, a: int, e: int) -> list[tuple[int, int, int, int, float]]:
        """Sentinel and drift sensor faults of asset `a`'s day `e` (their own stream: older kinds stay put)."""
        r, tm = self.rates, self.type_of[a]
        ns, big, base = len(tm.sensors), self.epoch_ticks, e * self.epoch_ticks
        days = big * self.interval_ms / DAY_MS
        healthy = self.ticks_of(r.healthy_hours)
        out: list[tuple[int, int, int, int, float]] = []
        for kind, rate, (lo, hi), unit_h in ((SENTINEL, r.sentinel_faults_per_day, r.sentinel_minutes, 1 / 60),
                                             (DRIFT, r.drift_faults_per_day, r.drift_hours, 1.0)):
            n = int(rng.poisson(rate * days))
            sen, st = rng.integers(ns, size=n), base + rng.integers(big, size=n)
            dur, pick, sign = rng.uniform(lo, hi, size=n) * unit_h, rng.integers(len(SENTINELS), size=n), rng.random(n)
            for i in range(n):
                s, t = int(sen[i]), int(st[i])
                if t < healthy:
                    continue
                value = SENTINELS[int(pick[i])] if kind == SENTINEL else (1.0 if sign[i] < 0.5 else -1.0) * tm.width[s]
                out.append((kind, s, t, t + self.ticks_of(float(dur[i])), float(value)))
        return out

    def scheduled_stops(self, a: int, t0: int, t1: int) -> list[tuple[int, int]]:
        """Asset `a`'s stops by the clock (its type's schedule) that start before t1 and still show after t0.

        nightly: 22:00 to 06:00; weekend: Saturday 00:00 to Monday 00:00 (UTC,
        each asset up to an hour early or late); nightly_weekend: both, the
        weekend from Friday 22:00; cycling: runs and stops of a few tens of
        minutes each, as a chiller or compressor follows demand.
        """
        pattern = self.schedule_of[a]
        if pattern == "none":
            return []
        lo_ms = int(self.tick_ms(t0 - self._stop_memory_ticks))
        hi_ms = int(self.tick_ms(t1))
        out: list[tuple[int, int]] = []
        if pattern == "cycling":
            lo, hi = self.rates.cycle_minutes
            run = int((lo + (hi - lo) * self._u1(a, 600)) * 60_000)
            stop = int((lo + (hi - lo) * self._u1(a, 601)) * 60_000)
            period, phase = run + stop, int(self._u1(a, 602) * (run + stop))
            k = (lo_ms - phase) // period - 1
            while phase + k * period + run < hi_ms:
                s_ms = phase + k * period + run
                out.append((s_ms, s_ms + stop))
                k += 1
        else:
            shift = int((self._u1(a, 603) - 0.5) * 2 * HOUR_MS)
            for day in range(lo_ms // DAY_MS - 3, hi_ms // DAY_MS + 2):
                base = day * DAY_MS + shift
                weekday = (day + 3) % 7  # 1970-01-01 was a Thursday; 0 = Monday
                if pattern in ("nightly", "nightly_weekend") and weekday < 4:
                    out.append((base + 22 * HOUR_MS, base + 30 * HOUR_MS))
                if pattern == "weekend" and weekday == 5:
                    out.append((base, base + 2 * DAY_MS))
                if pattern == "nightly_weekend" and weekday == 4:
                    out.append((base + 22 * HOUR_MS, base + 3 * DAY_MS + 6 * HOUR_MS))
        ticks = [(-(-(s - self.start_ms) // self.interval_ms), -(-(e - self.start_ms) // self.interval_ms))
                 for s, e in out]
        return [(max(s, 0), e) for s, e in ticks if s < t1 and e + self._stop_memory_ticks > t0 and e > 0]

    def setpoint(self, a: int) -> tuple[int, int, float] | None:
        """(sensor, tick, step) of asset `a`'s permanent change of operating point, or None (not a fault)."""
        r, tm = self.rates, self.type_of[a]
        if self.n_ticks is None or self._u1(a, 700) >= r.setpoint_share:
            return None
        movable = [i for i in range(len(tm.sensors)) if i != tm.state]
        s = movable[int(self._u1(a, 701) * len(movable))]
        healthy = self.ticks_of(r.healthy_hours)
        tick = healthy + int(self._u1(a, 702) * 0.6 * max(self.n_ticks - healthy, 0))
        sign = 1.0 if self._u1(a, 703) < 0.5 else -1.0
        return s, tick, float(sign * (0.5 + 0.5 * self._u1(a, 704)) * tm.half[s])

    def dead_sensor(self, a: int) -> tuple[int, int] | None:
        """(sensor, tick) from which one of asset `a`'s sensors sends nothing, for good, or None."""
        r, tm = self.rates, self.type_of[a]
        if self.n_ticks is None or self._u1(a, 800) >= r.dead_share:
            return None
        s = int(self._u1(a, 801) * len(tm.sensors))
        healthy = self.ticks_of(r.healthy_hours)
        return s, healthy + int(self._u1(a, 802) * 0.7 * max(self.n_ticks - healthy, 0))

    def forget_before(self, tick: int) -> None:
        """Drop cached events that can no longer touch ticks >= `tick` (long runs stay small)."""
        for tl in self._timelines.values():
            tl.forget_before(tick - self._stop_memory_ticks)
        oldest = tick // self.epoch_ticks - self._lookback_epochs
        for key in [k for k in self._epochs if k[1] < oldest]:
            del self._epochs[key]

    def asset_events(self, a: int, end: int) -> tuple[
        list[tuple[int, int, int]], list[tuple[int, int, int, int]], list[tuple[int, int, int, int, float]]
    ]:
        """Asset `a`'s stops, degradations and short events that start before tick `end` (uncached)."""
        fresh = _Timeline(np.random.default_rng([self.seed, 1, a, 0]), self.type_of[a])
        fresh.extend_to(end, self)
        short = [ev for e in range(0, max(0, end - 1) // self.epoch_ticks + 1) for ev in self._draw_epoch(a, e)]
        return (
            [s for s in fresh.stops if s[0] < end],
            [d for d in fresh.degradations if d[0] < end],
            [ev for ev in short if ev[2] < end],
        )


@dataclass(frozen=True)
class _Layout:
    """How one tuple of assets maps to type groups and output columns."""

    groups: tuple[tuple[TypeModel, np.ndarray], ...]
    perm: np.ndarray
    asset_col: np.ndarray
    sensor_col: np.ndarray

    @staticmethod
    def of(model: PlantModel, assets: tuple[int, ...]) -> _Layout:
        n = len(model.asset_ids)
        if not assets or len(set(assets)) != len(assets) or min(assets) < 0 or max(assets) >= n:
            raise ValueError(f"assets must be distinct indices in [0, {n}), got {assets[:8]}...")
        groups, cols = [], []
        for name, tm in model.types.items():
            idx = np.array([a for a in sorted(assets) if model.type_of[a].name == name], np.int64)
            if len(idx):
                groups.append((tm, idx))
                cols += [(int(a), s) for a in idx for s in range(len(tm.sensors))]
        perm = np.array(sorted(range(len(cols)), key=lambda i: cols[i]), np.int64)
        ids = [model.asset_ids[a] for a, _ in cols]
        names = [model.type_of[a].sensors[s] for a, s in cols]
        return _Layout(
            tuple(groups), perm, np.array(ids, dtype=object)[perm], np.array(names, dtype=object)[perm]
        )
