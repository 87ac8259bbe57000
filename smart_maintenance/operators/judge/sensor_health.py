"""Sensor health from the first reading: no learned model, no registry needed.

Each sensor of an asset keeps a few numbers (`SensorHealth`), folded in
window by window from its own features; the registry's physical range is
used when there is one. A window's sensor is faulty when:

- `sentinel`: its minimum or maximum is exactly one of the codes a failing
  transmitter or gateway sends (-999, -9999, 9999, 32767, 65535, ...); or
  it read exactly 0.0 for part of the window although it has never been
  near zero (its envelope is well clear of it, and it never read zero
  before), while the asset's other sensors held their levels (a stop brings
  several toward their floor at once, not all of them to exactly zero; one
  sensor alone sending 0.0 is a transmitter's "no value"; the others are the
  test, not the asset's running state, which a pressure reading 0.0 can
  itself turn to "stopped") in two readings or more (one is a glitch, a
  spike clipped to the floor). A burst shorter than a window shows only
  in the window's minimum or maximum, which is why this is judged on them;
- `out_of_range`: it left the registry's physical range;
- `impossible`: its mean jumped far outside the envelope learned in its
  first `envelope_ms` of running data (more than `jump_spans` envelope spans
  from either of its last two window means, when the asset ran in them, since
  a fault that begins inside a window leaves that window half way; and more
  than `far_spans` spans from the envelope), or went clearly negative although
  it never was near zero, or although no window mean of it ever was below zero
  (judged from its first running window, the envelope still being learned: a
  speed, flow, vibration or gauge out of its range below zero); a degradation
  creeps, a broken reading jumps. With `leap_needs_two` the leap must also
  hold without the window's highest and without its lowest reading: one
  reading is a glitch (a spike), which in a window of three readings (a
  5-minute rate, 15-minute windows) moves the mean as far as a broken sensor
  does. A
  leap is judged only while the asset runs (going negative at rest too: a
  speed drifting below zero while stopped); a stopped window neither widens
  the envelope nor starts its clock (a first night's stop would make the running swings look
  like jumps, and an asset that starts stopped would have its envelope
  complete before it ever ran), and a start from a stop is not a jump. Where
  the running state is unknown every window counts as running. Several
  sensors leaping in the same window are a change of duty the envelope never
  saw (or a start where running is unknown), not a broken reading;
- `stuck`: it reads exactly the same value for a whole window (its minimum
  is its maximum) while it was
  running, for longer than it has ever been flat before (judged against its
  own resolution: a sensor that is often flat for a window or two needs a
  run several times longer than its longest normal one; a sensor that was
  never flat is stuck after one window). Judged so while the asset runs
  (by its registry state sensor or its learned operating state): a zero sent
  by a sensor of a running machine is stuck. While stopped, a sensor that kept varying
  in `never_flat_windows` stopped windows is stuck when it reads one value
  for a whole stopped window, unless that value is its floor at rest (a
  speed or flow pinned at zero);
- `dropout`: it sent under `dropout_fraction` of its usual count while the
  asset's other sensors did not (when every sensor is short at once, it is a
  gateway gap: stale data, not a sensor fault);
- `silent`: it sent nothing for `silent_windows` windows in a row and for
  `silent_ms` (an hour) while the others did: dead for good. A shorter gap of
  one sensor is stale data, as a gateway gap is, not a fault.

`gross` faults (sentinel, out_of_range, impossible, stuck, silent) are certain
in one window: their `sensor_fault` alarm opens at once. A `dropout` needs
persistence like any other candidate.

>>> import numpy as np
>>> f = np.zeros((1, 8)); f[0] = [-999.0, 0.0, -999.0, -999.0, 0.0, 999.0, -999.0, 30]
>>> state, faults, gross = check_sensors({}, f, ("pressure",), limits={}, running=True, at_ms=0,
...                                      cfg=HealthConfig())
>>> faults, gross
({'pressure': 'sentinel'}, True)
"""

from __future__ import annotations

import math
from dataclasses import dataclass, fields
from typing import Any

import numpy as np

from smart_maintenance.operators.profile import COUNT, MAX, MEAN, MIN, RMS

SENTINEL_CODES = frozenset({-999.0, -9999.0, -99999.0, 9999.0, 99999.0, -32768.0, 32767.0, 65535.0,
                            -3.4028234663852886e38, 3.4028234663852886e38})
_SENTINELS = tuple(sorted(SENTINEL_CODES))
GROSS = frozenset({"sentinel", "out_of_range", "impossible", "stuck", "silent"})


@dataclass(frozen=True)
class HealthConfig:
    envelope_ms: int = 6 * 3_600_000  # the first hours of each sensor's data form its envelope
    jump_spans: float = 3.0
    far_spans: float = 3.0
    flatline_windows: int = 3  # a sensor that has been flat before must be flat this long, at least
    flat_factor: float = 3.0  # ... and this many times its longest normal flat run
    dropout_fraction: float = 0.5
    silent_windows: int = 3
    never_flat_windows: int = 24  # varied in this many running windows and never flat: one flat window is stuck
    silent_ms: int = 3_600_000  # ... and silent this long: shorter, one sensor's gap is stale data, not a fault
    # the window a stop falls in judges a leap no stop explains (beyond the running envelope and every reading the
    # sensor has sent at rest); off: a leap is judged only in running windows
    leap_at_stop: bool = False
    # a leap must hold without any one of the window's readings: one reading is a glitch (a spike), which in a
    # window of three readings moves the mean as far as a broken sensor does; off: the window mean alone
    leap_needs_two: bool = False
    # a leap is judged deep in a stop too (from the last mean at rest), when it is also far beyond every level a
    # stop explains (a start is not judged); and a sensor not yet run since its record began is judged by its sign
    # against its level at rest. Off: only running windows and the window a stop falls in
    leap_after_stop: bool = False

    def __post_init__(self) -> None:
        if self.envelope_ms < 0 or self.jump_spans <= 0 or self.far_spans <= 0 or self.flat_factor < 1:
            raise ValueError("need envelope_ms >= 0, jump_spans > 0, far_spans > 0 and flat_factor >= 1")
        if not 0 < self.dropout_fraction <= 1 or self.flatline_windows < 1 or self.silent_windows < 1 \
                or self.silent_ms < 0:
            raise ValueError("need 0 < dropout_fraction <= 1, flatline_windows >= 1, silent_windows >= 1, "
                             "silent_ms >= 0")


@dataclass(slots=True)
class SensorHealth:
    """What one sensor's own data says is normal for it (copied, never changed, once in a state)."""

    first_ms: int = -1  # start of its first running window with readings: the envelope's clock
    lo: float = math.inf  # envelope of running window means in its first envelope_ms
    hi: float = -math.inf
    last_mean: float = math.nan
    usual_count: float = 0.0
    windows: int = 0  # running windows with at least 3 readings
    flat: int = 0  # of which flat
    flat_run: int = 0
    longest_flat: int = 0  # longest flat run that was not a fault
    silent_run: int = 0
    zero_seen: bool = False  # it has read exactly 0.0 in a window that was not a fault (zero is a value it reads)
    last_ms: int = -1  # start of its last window with readings
    prev_mean: float = math.inf  # the mean before last_mean, when both windows ran (inf: none)
    rest_windows: int = 0  # stopped windows with at least 3 readings that varied
    rest_flat: int = 0  # stopped windows flat at a value other than its floor
    floor: float = math.inf  # the lowest reading it has sent at rest, outside a fault
    last_ran: bool = False  # the asset ran in the window of last_mean
    lowest: float = math.inf  # the lowest window mean it has sent, running or not, outside a fault
    ceiling: float = -math.inf  # the highest reading it has sent at rest, outside a fault (floor: the lowest)

    def clone(self) -> SensorHealth:
        return SensorHealth(self.first_ms, self.lo, self.hi, self.last_mean, self.usual_count, self.windows, self.flat,
                            self.flat_run, self.longest_flat, self.silent_run, self.zero_seen, self.last_ms,
                            self.prev_mean, self.rest_windows, self.rest_flat, self.floor, self.last_ran, self.lowest,
                            self.ceiling)

    def __reduce__(self) -> tuple[type[SensorHealth], tuple[Any, ...]]:
        # pickled positionally: every asset's validation state is pickled at each snapshot, and the default
        # (a dict of slot names) cost twice as much; a field added later goes last, with a default
        return SensorHealth, (self.first_ms, self.lo, self.hi, self.last_mean, self.usual_count, self.windows,
                              self.flat, self.flat_run, self.longest_flat, self.silent_run, self.zero_seen,
                              self.last_ms, self.prev_mean, self.rest_windows, self.rest_flat, self.floor,
                              self.last_ran, self.lowest, self.ceiling)

    def __setstate__(self, state: Any) -> None:
        """An older snapshot (a dict of slot names): the fields it does not hold take their defaults."""
        slots = state[1] if isinstance(state, tuple) else state
        for f in fields(self):
            setattr(self, f.name, (slots or {}).get(f.name, f.default))

    def span(self) -> float:
        mid = (self.lo + self.hi) / 2
        return max(self.hi - self.lo, 0.5 * abs(mid), 1e-6)


def is_sentinel(values: np.ndarray) -> np.ndarray:
    """Elementwise: is it exactly one of the sentinel codes?"""
    if values.size <= 64:  # a window or two of one asset: set lookups on Python floats (== as numpy's, NaN never)
        flat = [v in SENTINEL_CODES for v in values.ravel().tolist()]
        return np.array(flat, bool).reshape(values.shape)
    out = np.zeros(values.shape, bool)
    for code in _SENTINELS:  # ten codes: ten comparisons beat np.isin's sort on the few values of a window
        out |= values == code
    return out


def sentinel_windows(values: np.ndarray) -> np.ndarray:
    """Per window of a feature array (windows, sensors, features): does any sensor carry a sentinel code?

    A window or two of one asset (the usual call) in one pass on Python floats, without numpy's fixed cost per
    call; larger arrays vectorised (`_sentinel_windows_vectorised`, the same answer).
    """
    if values.shape[0] * values.shape[1] > 32:
        return _sentinel_windows_vectorised(values)
    return np.array([any(v in SENTINEL_CODES for pair in window for v in pair)
                     for window in values[:, :, MIN:MAX + 1].tolist()], bool)  # min and max are adjacent


def _sentinel_windows_vectorised(values: np.ndarray) -> np.ndarray:
    flagged: np.ndarray = (is_sentinel(values[:, :, MIN]) | is_sentinel(values[:, :, MAX])).any(axis=1)
    return flagged


_NEW = SensorHealth()


def check_sensors(
    health: dict[str, SensorHealth],
    f: np.ndarray,
    sensors: tuple[str, ...],
    *,
    limits: dict[str, tuple[float, float]],
    running: bool,
    at_ms: int,
    cfg: HealthConfig,
) -> tuple[dict[str, SensorHealth], dict[str, str], bool]:
    """One window (f: sensors x features) -> the sensors' new health, the faulty ones and why, any gross fault.

    `health` is not changed: the sensors' records are copied before they are updated.
    """
    out = dict(health)
    faults: dict[str, str] = {}
    rows = f.tolist()
    usual = [health[s].usual_count if s in health else 0.0 for s in sensors]
    ratios = [row[COUNT] / u for row, u in zip(rows, usual) if u >= 3]
    # the asset as a whole is short (a gateway gap): stale, not a sensor fault
    gap = bool(ratios) and float(np.median(ratios)) < cfg.dropout_fraction
    zeros = [row[MIN] == 0.0 or row[MAX] == 0.0 for row in rows]
    # one sensor sending 0.0 while the others hold their levels; several falling at once is a stop (or the gateway).
    # Not only while running: a pressure that reads 0.0 can make a machine look stopped to its learned states
    lone_zero = sum(zeros) == 1 and not any(
        _fell(health.get(name), row, at_ms, cfg) for name, row, zero in zip(sensors, rows, zeros) if not zero)
    # several sensors leaping off their envelopes in one window is a start or a stop the envelope never saw
    leaps = [_leaped(health.get(name), row, at_ms, cfg, running) for name, row in zip(sensors, rows)]
    together = sum(leaps) >= 2
    for name, row, zero, leaped in zip(sensors, rows, zeros, leaps):
        h = out.get(name, _NEW).clone()
        out[name] = h
        count, mean = row[COUNT], row[MEAN]
        if count == 0 or not math.isfinite(mean):
            if h.usual_count >= 3 and not gap:
                h.silent_run += 1
                if h.silent_run >= cfg.silent_windows and at_ms - h.last_ms >= cfg.silent_ms:
                    faults[name] = "silent"
            continue
        h.silent_run = 0
        h.last_ms = at_ms
        if h.first_ms < 0 and running:
            h.first_ms = at_ms  # the envelope's clock starts with the first running window
        why = _gross(h, row, limits.get(name), at_ms, cfg, leaped and not together, at_rest=not running)
        if why is None and zero and lone_zero and _zero_readings(row) >= 2 and _never_near_zero(h, at_ms, cfg):
            why = "sentinel"
        if why is None and h.usual_count >= 3 and not gap and count < cfg.dropout_fraction * h.usual_count:
            why = "dropout"
        if why is None and count >= 3:
            why = _flatline(h, row, cfg) if running else _flat_at_rest(h, row, cfg)
        if why is not None:
            faults[name] = why
        if why not in ("sentinel", "impossible", "out_of_range"):
            h.zero_seen = h.zero_seen or zero
            if running and at_ms - h.first_ms < cfg.envelope_ms:
                h.lo, h.hi = min(h.lo, mean), max(h.hi, mean)
            # a jump over two windows is judged only from steady running: from a stop, a start is such a jump
            h.prev_mean = h.last_mean if running and h.last_ran else math.inf
            h.last_mean, h.last_ran = mean, running
            h.lowest = min(h.lowest, mean)
            if not gap:
                h.usual_count = max(h.usual_count, float(count))
        if why is None and not running:
            h.floor = min(h.floor, row[MIN])
            h.ceiling = max(h.ceiling, row[MAX])
    return out, faults, any(w in GROSS for w in faults.values())


def _gross(h: SensorHealth, row: list[float], limit: tuple[float, float] | None, at_ms: int,
           cfg: HealthConfig, lone_leap: bool = False, at_rest: bool = False) -> str | None:
    """`lone_leap`: this sensor's mean leaped off its envelope (`_leaped`, judged on its record before this
    window) and no other sensor's did in the same window."""
    if row[MIN] in SENTINEL_CODES or row[MAX] in SENTINEL_CODES:
        return "sentinel"
    if limit is not None and (row[MIN] < limit[0] or row[MAX] > limit[1]):
        return "out_of_range"
    if h.first_ms < 0 or not math.isfinite(h.lo):
        return _negative_at_rest(h, row[MEAN]) if cfg.leap_after_stop else None
    mean, span = row[MEAN], h.span()
    # clearly negative although no window of it ever was: a speed, a flow, a vibration or a gauge reading below
    # zero by a tenth of its span is broken or out of its range. Not a comparison with the envelope, so judged
    # while it is still being learned (from its first running window: the span needs a level)
    if mean < -0.1 * span and h.lowest >= 0:
        return "impossible"
    if at_ms - h.first_ms < cfg.envelope_ms:
        return None
    if lone_leap and (not at_rest or _no_stop_explains(h, mean, cfg)):
        return "impossible"
    if h.lo > 0.1 * span and mean < -0.1 * span:  # never near zero, now clearly negative
        return "impossible"
    return None


def _leaped(h: SensorHealth | None, row: list[float], at_ms: int, cfg: HealthConfig,
            running: bool) -> bool:
    """Did its mean jump `jump_spans` envelope spans, to `far_spans` spans outside its envelope?

    Judged against each of its last two window means (the earlier one when the asset ran in both): a fault that
    begins inside a window leaves that window half way, so the jump shows whole only against the one before.

    After a stop (its last window at rest; `leap_after_stop`): a window still at rest (a fault that begins deep in
    a stop) is judged against its last window, and only when it is also `far_spans` spans beyond every level a
    stop explains: the readings at rest (the stop's own window among them, which begins at the running level) and
    the last mean at rest.
    A start is not judged: a machine near its failure may start far beyond where it stopped (wear does not wait
    for the machine to run), which only a machine alarm should say."""
    if h is None or h.first_ms < 0 or at_ms - h.first_ms < cfg.envelope_ms or not math.isfinite(h.lo):
        return False
    mean, span = row[MEAN], h.span()
    if not math.isfinite(mean):
        return False
    if h.last_ran:
        refs = (h.last_mean, h.prev_mean)
        return all(_leap_of(m, h, refs, span, cfg) for m in _means_judged(row, cfg))
    # from a stop, a start is such a jump; deep in a stop, judged only against the levels a stop explains
    if running or not cfg.leap_after_stop or not math.isfinite(h.ceiling):
        return False
    levels = (h.floor, h.ceiling, h.last_mean)
    far = cfg.far_spans * span
    return all(_leap_of(m, h, (h.last_mean,), span, cfg) and (m > max(levels) + far or m < min(levels) - far)
               for m in _means_judged(row, cfg))


def _negative_at_rest(h: SensorHealth, mean: float) -> str | None:
    """A sensor that has not run since its record began (a stop since a repair) has no envelope to judge a leap
    by, but its sign still tells: a window mean below zero by more than its lowest window mean ever was above it,
    and by more than its readings' spread at rest, in a sensor whose every window mean was above zero, is no
    noise around its level at rest (a temperature at rest near 20 reading -53 is broken; a vibration at rest near
    0.02 reading -0.01 is noise around zero)."""
    if not (math.isfinite(h.ceiling) and math.isfinite(mean) and math.isfinite(h.lowest)) or h.lowest <= 0:
        return None
    return "impossible" if mean < -max(h.lowest, h.ceiling - h.floor) else None


def _leap_of(mean: float, h: SensorHealth, refs: tuple[float, ...], span: float, cfg: HealthConfig) -> bool:
    outside = max(h.lo - mean, mean - h.hi, 0.0)
    jumped = any(math.isfinite(m) and abs(mean - m) > cfg.jump_spans * span for m in refs)
    return jumped and outside > cfg.far_spans * span


def _means_judged(row: list[float], cfg: HealthConfig) -> tuple[float, ...]:
    """The window's mean, or (`leap_needs_two`) its mean without its highest and without its lowest reading.

    A leap is judged on each: one reading alone (a spike, clipped to the range or not) cannot make it. The
    extremes are the readings that move the mean most, so a leap that holds without either holds without any
    one. A window of one reading is judged on it (there is no other to tell it by)."""
    mean, count = row[MEAN], row[COUNT]
    if not cfg.leap_needs_two or count < 2:
        return (mean,)
    total = mean * count
    return ((total - row[MAX]) / (count - 1), (total - row[MIN]) / (count - 1))


def _no_stop_explains(h: SensorHealth, mean: float, cfg: HealthConfig) -> bool:
    """A leap in a stopped window (`_leaped` judges it only against running means: the window a stop falls in) that
    no stop explains: `far_spans` envelope spans beyond every reading the sensor has sent at rest and beyond its
    last running means, too.

    A stop takes each sensor from its running level just before (which a degradation may have taken far off its
    envelope) toward its level at rest (which may lie outside the envelope: a suction pressure equalising, a speed
    falling to zero); the window the stop falls in lies between the two. A mean far beyond both is a broken
    reading, which a stop cannot hide. Before its first stop the sensor's level at rest is unknown, so nothing is
    judged at rest."""
    if not cfg.leap_at_stop or not math.isfinite(h.ceiling):
        return False
    far = cfg.far_spans * h.span()
    levels = [h.floor, h.ceiling] + ([m for m in (h.last_mean, h.prev_mean) if math.isfinite(m)] if h.last_ran else [])
    return mean > max(levels) + far or mean < min(levels) - far


def _zero_readings(row: list[float]) -> float:
    """About how many readings of the window were exactly zero, from its mean and rms: with k of n at zero and the
    rest near one level, mean² / rms² = (n - k) / n. One is a glitch (a spike clipped to the floor), not a code."""
    mean, rms, count = row[MEAN], row[RMS], row[COUNT]
    if not rms > 0:
        return count
    return count * max(0.0, 1.0 - (mean / rms) ** 2)


def _fell(h: SensorHealth | None, row: list[float], at_ms: int, cfg: HealthConfig) -> bool:
    """Did this sensor's window reach half its envelope's span beyond the envelope, toward zero?"""
    if h is None or h.first_ms < 0 or at_ms - h.first_ms < cfg.envelope_ms or not math.isfinite(h.lo):
        return False
    span = h.span()
    return (h.lo > 0 and row[MIN] < h.lo - 0.5 * span) or (h.hi < 0 and row[MAX] > h.hi + 0.5 * span)


def _never_near_zero(h: SensorHealth, at_ms: int, cfg: HealthConfig) -> bool:
    """Its envelope is complete and well clear of zero, and it never read exactly zero outside a fault."""
    if h.zero_seen or h.first_ms < 0 or at_ms - h.first_ms < cfg.envelope_ms or not math.isfinite(h.lo):
        return False
    span = h.span()
    return h.lo > 0.1 * span or h.hi < -0.1 * span


def _stuck_after(h: SensorHealth, cfg: HealthConfig) -> int:
    """Flat windows in a row that make this sensor stuck, from its own history of flat windows."""
    if h.flat - h.flat_run == 0 and h.windows - h.flat_run >= cfg.never_flat_windows:
        return 1  # it has never been flat: its resolution is far finer than its noise
    return max(cfg.flatline_windows, math.ceil(cfg.flat_factor * max(h.longest_flat, 1)))


def _flat(row: list[float]) -> bool:
    """Every reading of the window the same value: its minimum is its maximum.

    Judged on the extremes, which are readings, not on the std: a std computed from sums of squares keeps a
    rounding residue (2e-8 to 2e-7 for thirty readings of 1.95 or 7.57) that no fixed tolerance on it fits."""
    return row[MAX] - row[MIN] <= 1e-12 * max(1.0, abs(row[MEAN]))


def _flatline(h: SensorHealth, row: list[float], cfg: HealthConfig) -> str | None:
    """Count this running window's spread into `h` (a copy); "stuck" when the flat run is too long for it."""
    flat = _flat(row)
    h.windows += 1
    if not flat:
        run = h.flat_run
        if run and (run < _stuck_after(h, cfg) or run == 1):  # a short flat run is this sensor's resolution
            h.longest_flat = max(h.longest_flat, run)
        h.flat_run = 0
        return None
    h.flat += 1
    h.flat_run += 1
    if h.windows - h.flat_run < 3:  # it has hardly ever varied: nothing to compare with
        return None
    return "stuck" if h.flat_run >= _stuck_after(h, cfg) else None


def _flat_at_rest(h: SensorHealth, row: list[float], cfg: HealthConfig) -> str | None:
    """A stopped asset's window: "stuck" when a sensor that varies at rest reads one value throughout.

    At rest a sensor either keeps its noise (a temperature, a vibration pick-up) or lies pinned at its floor (a
    speed or a flow clipped at zero). Flat at its floor is rest; flat anywhere else, in a sensor that varied in
    `never_flat_windows` stopped windows and was never flat off its floor at rest, is a sensor that froze.
    A sensor that has been flat off its floor at rest (a coarse resolution) is not judged at rest.
    """
    if not _flat(row):
        h.rest_windows += 1
        return None
    if row[MIN] == h.floor:  # pinned at the lowest value it reads at rest: a floor, not a frozen value
        return None
    if h.rest_flat == 0 and h.rest_windows >= cfg.never_flat_windows:
        return "stuck"
    h.rest_flat += 1
    return None
