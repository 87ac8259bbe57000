"""Validate scored windows: suppress false positives, tell sensor faults from machine faults.

Rules, in the order they apply to each window:

1. operating state: a stopped asset is not anomalous, and neither are the
   first `grace_windows` windows after it starts again (warming up; on an
   asset that cycles, a quarter of its typical run, at least one window, and
   with `grace_within_run` fewer windows than the typical run); a cycling
   asset's start that the detectors scored with its own earlier starts
   (`Scored.start_score`, detect/starts.py) is judged on that score instead;
2. sensor health (`sensor_health.py`, from the first reading, no model or
   registry needed): sentinel codes, out of the physical range, impossible
   jumps out of the sensor's early envelope, stuck for longer than the sensor
   is ever flat, silent or dropping out while the asset's other sensors report
   (a gap of the whole asset is stale data, not a sensor fault); and, from the
   detectors' cross-sensor model (`detect/cross_sensor.py`), a `drift`: one
   sensor walking off what the others predict while they stay consistent
   with each other (a calibration drift). When faulty
   sensors carry most of the deviation (or there is none) the window is a
   `sensor_fault`, else a machine candidate too (a stuck sensor on a failing
   machine: both are reported). A gross fault's alarm opens at once; a
   dropout's needs persistence. With the trend evidence on (`trend`), its
   sum (`detect/trend.py`) is kept here, where the faulty sensors are known:
   a window with a faulty sensor does not count and the sum starts again
   after it; the sum's score joins the window's score and its detectors;
3. persistence: a candidate (score >= open threshold) becomes an anomaly only
   when k of the last n windows were candidates; a lone glitch is `rejected`.
   With `persist_across_stops`, the n windows are the last n that could be
   judged (running, past the start-up grace), so an asset that runs in short
   bursts carries its evidence from one run to the next, when it lasted to
   the end of the run; a stop longer than the asset's usual cycle (its
   typical run plus its typical stop), or any stop before it has completed 3
   runs, forgets it (off in a bare `ValidationConfig`; on in the settings,
   where learned operating states call the window a stop falls in a stop:
   without that it costs false alarms on cycling assets, docs/quality.md);
4. confidence: a persistent candidate is `confirmed` when its score reaches
   the confirm threshold and either two detectors agree, the physical limits
   say so, or one detector is decisive (>= `decisive_score`: an
   IsolationForest cannot score a point far outside its training range much
   higher than one just outside it, so a huge deviation seen by the baseline
   alone is still certain); with `confirm_trend`, also when the per-feature
   baseline is its top detector, no sensor is settling at a new level, and
   the top feature's robust z has a significant upward trend over the
   stretch (one-sided Mann-Kendall at alpha 0.05, `_trending`): wear grows a
   deviation, a step to a new level (a setpoint, a repair, a load change)
   holds it; otherwise it `needs_review` by a person.

The open threshold is per asset: `ValidationState.open_offset` moves it, and
review decisions move the offset (`apply_review`: a rejected anomaly, a false
positive, raises the asset's threshold by `review_step`; an approved one
lowers it back by half a step, never under the configured one), with an audit
trail of the last changes in the state. Every confirmed or needs_review
anomaly names its top contributing features in its reasons
(`features: Current.std 41%, ...`), next to the sensors' shares in
`contributions`.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass, field, replace

import numpy as np

from smart_maintenance.operators.detect.trend import TrendConfig, judged_sum, trend_score
from smart_maintenance.operators.judge.sensor_health import HealthConfig, SensorHealth, check_sensors
from smart_maintenance.operators.profile import AssetProfile
from smart_maintenance.operators.records import Anomaly, Scored, evolve, ms_to_dt, stable_id, window_length_ms


@dataclass(frozen=True)
class ValidationConfig:
    open_threshold: float = 0.6
    confirm_threshold: float = 0.75
    persistence_k: int = 3
    persistence_n: int = 5
    flatline_windows: int = 3
    dropout_fraction: float = 0.5
    grace_windows: int = 18
    decisive_score: float = 0.9
    review_step: float = 0.05  # a rejected anomaly raises the asset's open threshold by this much
    max_open: float = 0.95  # reviews never raise the open threshold above this
    explain_features: int = 3  # top features carried by an anomaly
    # durations (ms): when set, they replace grace_windows and persistence_k/n per asset from its window length
    grace_ms: int | None = None
    persistence_ms: int | None = None
    # the trend evidence's sum (detect/trend.py): set with the detectors' `trend`; None: the evidence is ignored
    trend: TrendConfig | None = None
    # persistence counts only the windows that could be judged, across stops no longer than the asset's cycle
    persist_across_stops: bool = False
    # sensor health judges a leap no stop explains in the window a stop falls in (HealthConfig.leap_at_stop)
    leap_at_stop: bool = False
    # a leap of a sensor's mean must hold without any one reading of the window (HealthConfig.leap_needs_two)
    leap_needs_two: bool = False
    # sensor health judges a leap after a stop too, and a sensor not yet run by its sign (HealthConfig.leap_after_stop)
    leap_after_stop: bool = False
    # a cycling asset's start-up grace never covers its whole typical run: at least one window of each run is judged
    grace_within_run: bool = False
    # a persistent candidate led by the baseline detector whose top feature's robust z trends up over the stretch
    # (one-sided Mann-Kendall, alpha TREND_ALPHA) is confirmed: wear grows a deviation, a step to a new normal holds it
    confirm_trend: bool = False

    def __post_init__(self) -> None:
        if not 0 < self.open_threshold <= self.confirm_threshold < 1:
            raise ValueError("need 0 < open_threshold <= confirm_threshold < 1")
        if not 1 <= self.persistence_k <= self.persistence_n <= 64:
            raise ValueError("need 1 <= persistence_k <= persistence_n <= 64")
        if not 0 <= self.review_step < 0.5 or not self.open_threshold <= self.max_open < 1:
            raise ValueError("need 0 <= review_step < 0.5 and open_threshold <= max_open < 1")
        if any(v is not None and v < 0 for v in (self.grace_ms, self.persistence_ms)):
            raise ValueError("grace_ms and persistence_ms must not be negative")

    def for_window(self, window_ms: int) -> ValidationConfig:
        """This config in an asset's own windows of `window_ms`.

        Start-up grace: ceil(grace / window) windows. Persistence: n windows
        cover the duration (at least 3, at most 64) and k keeps the configured
        share k/n (3 of 5 by default), so 25 minutes of 30-second windows is 30
        of 50, and of 2.5-hour windows 2 of 3.

        >>> c = ValidationConfig(grace_ms=5_400_000, persistence_ms=1_500_000).for_window(30_000)
        >>> c.grace_windows, c.persistence_k, c.persistence_n
        (180, 30, 50)
        >>> c = ValidationConfig(grace_ms=5_400_000, persistence_ms=1_500_000).for_window(9_000_000)
        >>> c.grace_windows, c.persistence_k, c.persistence_n
        (1, 2, 3)
        """
        if window_ms <= 0 or (self.grace_ms is None and self.persistence_ms is None):
            return self
        return _for_window(self, window_ms)

    def _for_window(self, window_ms: int) -> ValidationConfig:
        out = replace(self, grace_ms=None, persistence_ms=None)
        if self.grace_ms is not None:
            out = replace(out, grace_windows=math.ceil(self.grace_ms / window_ms))
        if self.persistence_ms is not None:
            n = min(64, max(3, math.ceil(self.persistence_ms / window_ms)))
            k = max(1, min(n, math.ceil(n * self.persistence_k / self.persistence_n - 1e-9)))
            out = replace(out, persistence_k=k, persistence_n=n)
        return out


@functools.lru_cache(maxsize=1024)
def _for_window(cfg: ValidationConfig, window_ms: int) -> ValidationConfig:
    """`ValidationConfig.for_window`, remembered: every window of every asset asks (same config, same answer)."""
    return cfg._for_window(window_ms)


@dataclass(frozen=True)
class Verdict:
    """The validation outcome of one window; `status` is "normal" or one of records.STATUSES."""

    window_start: int
    window_end: int
    status: str
    score: float
    running: bool
    fault_persistent: bool = False
    anomaly: Anomaly | None = None


@dataclass(frozen=True)
class ThresholdChange:
    """One review decision's effect on an asset's open threshold (the audit trail)."""

    at_ms: int
    anomaly_id: str
    approved: bool | None  # None: a decision withdrawn
    before: float
    after: float


@dataclass(frozen=True)
class ValidationState:
    candidates: int = 0  # bit i: window i back was a machine candidate
    faults: int = 0  # bit i: window i back had a sensor fault
    since_stop: int = 1 << 30  # windows since the asset last ran stopped
    health: dict[str, SensorHealth] = field(default_factory=dict)  # each sensor's own normal (sensor_health.py)
    open_offset: float = 0.0  # learned from reviews: added to the configured open threshold
    threshold_log: tuple[ThresholdChange, ...] = ()  # the last AUDIT_KEEP changes, oldest first
    window_ms: int = 0  # the asset's window length, from its first windows (durations are counted in it)
    run_windows: int = 0  # windows since the asset last started
    typical_run: float = 0.0  # average length of its completed runs (windows), once `runs` >= 3
    runs: int = 0
    trend: float = 0.0  # the trend evidence's sum, in hour-units (detect/trend.py: `judged_sum`)
    stop_windows: int = 0  # windows since the asset last stopped (0 while it runs)
    typical_stop: float = 0.0  # average length of its completed stops (windows), as `typical_run`
    # `confirm_trend`: the baseline's robust z per column at each judged candidate since the last judged normal
    # window (the stretch), the latest STRETCH_KEEP, oldest first
    stretch_z: tuple[tuple[float, ...], ...] = ()


AUDIT_KEEP = 16
# the stretch's windows kept for its trend: as many as persistence may count (`persistence_n` <= 64, the longest
# evidence validation keeps of a window), so the state stays bounded on a step held for days
STRETCH_KEEP = 64
# the trend test's level: the conventional 5 %, one-sided (a deviation growing away from normal), not a fitted value
TREND_ALPHA = 0.05


def open_threshold(state: ValidationState | None, cfg: ValidationConfig) -> float:
    """The asset's open threshold now: the configured one plus what reviews taught."""
    offset = state.open_offset if state is not None else 0.0
    return min(cfg.open_threshold + offset, cfg.max_open)


def apply_review(
    state: ValidationState | None, *, approved: bool | None, anomaly_id: str, at_ms: int, cfg: ValidationConfig
) -> ValidationState:
    """Fold one review decision into the asset's threshold.

    Rejected (a false positive): the open threshold rises by `review_step`, up
    to `max_open`. Approved: it falls by half a step, never under the
    configured threshold. `approved=None` withdraws a decision (deferred after
    all). A second decision on the same anomaly first takes back what the
    first one did, so a person who changes their mind leaves the threshold as
    if only the last decision had been made. Every change is kept in
    `threshold_log`.

    >>> s = apply_review(None, approved=False, anomaly_id="a1", at_ms=0, cfg=ValidationConfig())
    >>> round(open_threshold(s, ValidationConfig()), 2), s.threshold_log[0].after
    (0.65, 0.65)
    >>> s = apply_review(s, approved=None, anomaly_id="a1", at_ms=1, cfg=ValidationConfig())
    >>> round(open_threshold(s, ValidationConfig()), 2)
    0.6
    """
    state = state or ValidationState()
    before = open_threshold(state, cfg)
    offset = state.open_offset - _effect(state, anomaly_id)
    if approved is not None:
        offset += cfg.review_step if not approved else -cfg.review_step / 2
    offset = min(max(offset, 0.0), cfg.max_open - cfg.open_threshold)
    state = evolve(state, open_offset=offset)
    change = ThresholdChange(at_ms, anomaly_id, approved, round(before, 6), round(open_threshold(state, cfg), 6))
    return evolve(state, threshold_log=(state.threshold_log + (change,))[-AUDIT_KEEP:])


def _effect(state: ValidationState, anomaly_id: str) -> float:
    """How far the anomaly's standing decision moved the threshold (0 when it has none in the audit trail).

    The decisions on one anomaly chain: each recorded change is relative to
    the one before it, so their sum is what the standing decision did.
    """
    return sum(c.after - c.before for c in state.threshold_log if c.anomaly_id == anomaly_id)


def _popcount(bits: int, n: int) -> int:
    return (bits & ((1 << n) - 1)).bit_count()


def _severity(score: float, profile: AssetProfile, cfg: ValidationConfig) -> int:
    base = 1 + int(4 * (score - cfg.open_threshold) / max(1 - cfg.open_threshold, 1e-9))
    return int(min(5, max(1, base) + (profile.criticality >= 4)))


def validate(
    state: ValidationState | None, scored: Scored, profile: AssetProfile, cfg: ValidationConfig
) -> tuple[ValidationState, list[Verdict]]:
    """Judge each window of a scored batch, in order."""
    if state is None:
        state = ValidationState()
    fb = scored.features
    if not state.window_ms and len(fb):
        state = evolve(state, window_ms=window_length_ms(fb.window_start, fb.window_end))
    cfg = cfg.for_window(state.window_ms)
    running_all = scored.running if scored.running is not None else profile.running(fb)
    n = cfg.persistence_n
    open_at = open_threshold(state, cfg)
    confirm_at = max(cfg.confirm_threshold, open_at)
    verdicts: list[Verdict] = []
    hcfg = _health_config(cfg.flatline_windows, cfg.dropout_fraction, cfg.leap_at_stop, cfg.leap_needs_two,
                          cfg.leap_after_stop)
    limits = {name: (lim.range_lo, lim.range_hi) for name, lim in profile.limits}
    evidence, trend = scored.trend, state.trend
    if evidence is not None and cfg.trend is not None:  # the sum's score, filled in window by window below
        scored = replace(scored, score=scored.score.copy(),
                         detector_scores={**scored.detector_scores, "trend": np.zeros(len(fb))})
    if scored.start_score is not None:  # a start's score may replace the window's (`_start_score`)
        scored = replace(scored, score=scored.score.copy())
    for w in range(len(fb)):
        running = bool(running_all[w])
        health, faults, gross = check_sensors(state.health, fb.values[w], fb.sensors, limits=limits, running=running,
                                              at_ms=int(fb.window_start[w]), cfg=hcfg)
        if w < len(scored.drifting):
            for sensor in scored.drifting[w]:
                faults.setdefault(sensor, "drift")
        if evidence is not None and cfg.trend is not None:
            trend = judged_sum(trend, float(evidence[w]), bool(faults), cfg.trend)
            scored.detector_scores["trend"][w] = trend_score(trend, cfg.trend)
            scored.score[w] = max(scored.score[w], scored.detector_scores["trend"][w])
        score = float(scored.score[w])
        since_stop = 0 if not running else state.since_stop + 1
        state = _count_runs(state, running)
        grace = _grace(state, cfg)
        start = _start_score(scored, w, state, since_stop, grace, cfg)
        if start is not None:  # a cycling asset's start, judged with its own earlier starts: no grace over it
            summed = float(scored.detector_scores["trend"][w]) if "trend" in scored.detector_scores else 0.0
            score = scored.score[w] = max(start, summed)
            grace = 0
        candidate = score >= open_at and not scored.warming_up[w]
        contrib = dict(scored.contributions[w])
        fault_share = sum(contrib.get(s, 0.0) for s in faults)
        is_fault = bool(faults) and (not candidate or fault_share >= 0.5 or not contrib)
        is_candidate = candidate and running and since_stop > grace and not is_fault
        state = evolve(
            state,
            health=health,  # nothing above reads it: set with the rest (one copy of the state per window)
            trend=trend,
            since_stop=since_stop,
            candidates=_history(state, is_candidate, running and since_stop > grace, cfg),
            faults=((state.faults << 1) | bool(faults)) & ((1 << n) - 1),
        )
        if cfg.confirm_trend:
            state = _stretch(state, scored, w, is_candidate, running and since_stop > grace and not candidate)
        reasons: list[str]
        if is_fault:
            status = "sensor_fault"
            reasons = [f"{s}: {why}" for s, why in sorted(faults.items())]
        elif not candidate:
            verdicts.append(Verdict(int(fb.window_start[w]), int(fb.window_end[w]), "normal", score, running))
            continue
        elif not running:
            status, reasons = "rejected", ["asset_stopped"]
        elif since_stop <= grace:
            status, reasons = "rejected", ["start_up"]
        else:
            k = _popcount(state.candidates, n)
            agree = [d for d, s in scored.detector_scores.items() if s[w] >= open_at]
            certain = scored.certain is not None and bool(scored.certain[w])
            if certain and score >= confirm_at:  # one window this far out is the whole incident (a spike)
                status, reasons = "confirmed", [f"certain ({k} of last {n})", "detectors: " + ",".join(agree)]
            elif k < cfg.persistence_k:
                status, reasons = "rejected", [f"not_persistent ({k} of last {n})"]
            elif scored.settling is not None and scored.settling[w]:
                # a sensor jumped to a new level: until it lasts (a new normal) or moves on (a fault), a person decides
                status, reasons = "needs_review", [f"persistent ({k} of last {n})", "new_level_settling"]
            elif score >= confirm_at and (
                len(agree) >= 2 or "limits" in agree or _decisive(scored, w, cfg.decisive_score)
            ):
                status, reasons = "confirmed", [f"persistent ({k} of last {n})", "detectors: " + ",".join(agree)]
            elif cfg.confirm_trend and _led_by(scored, w, "baseline") and (
                (p := _trending(scored, w, state)) < TREND_ALPHA
            ):
                status = "confirmed"
                reasons = [f"persistent ({k} of last {n})",
                           f"baseline deviation trending (p={p:.3f}, {len(state.stretch_z)} windows)"]
            else:
                status = "needs_review"
                reasons = [f"persistent ({k} of last {n})", "uncertain: " + (",".join(agree) or "fused score only")]
        verdicts.append(_verdict(scored, w, status, reasons, faults, state, profile, cfg, running, gross))
    return state, verdicts


@functools.lru_cache(maxsize=64)
def _health_config(flatline_windows: int, dropout_fraction: float, leap_at_stop: bool = False,
                   leap_needs_two: bool = False, leap_after_stop: bool = False) -> HealthConfig:
    """The sensor-health config of a validation config: the same for every window of every asset, built once."""
    return HealthConfig(flatline_windows=flatline_windows, dropout_fraction=dropout_fraction,
                        leap_at_stop=leap_at_stop, leap_needs_two=leap_needs_two, leap_after_stop=leap_after_stop)


def _count_runs(state: ValidationState, running: bool) -> ValidationState:
    if running:
        if state.stop_windows and state.runs:  # a stop between two runs just ended
            typical = state.stop_windows if state.runs == 1 else 0.8 * state.typical_stop + 0.2 * state.stop_windows
            state = evolve(state, stop_windows=0, typical_stop=typical)
        return evolve(state, run_windows=state.run_windows + 1, stop_windows=0)
    if state.run_windows == 0:
        return evolve(state, stop_windows=state.stop_windows + 1)
    runs = state.runs + 1  # a run just ended
    typical = state.run_windows if runs == 1 else 0.8 * state.typical_run + 0.2 * state.run_windows
    return evolve(state, run_windows=0, runs=runs, typical_run=typical, stop_windows=1)


def _history(state: ValidationState, candidate: bool, judged: bool, cfg: ValidationConfig) -> int:
    """The candidate bits after this window: bit i is the i-th last window counted for persistence.

    By default every window counts (a stopped one or one in the start-up
    grace as no candidate). With `persist_across_stops` only the windows that
    could be judged count, so the evidence of short runs adds up. A stop
    forgets it when the run's last judged window was no candidate (evidence
    that did not last to the stop: a start-up transient), when it is longer
    than the asset's cycle (typical run plus typical stop, learned as the
    grace learns it: from 3 runs on), and any stop before that.
    """
    n = cfg.persistence_n
    if not cfg.persist_across_stops:
        return ((state.candidates << 1) | candidate) & ((1 << n) - 1)
    if judged:
        return ((state.candidates << 1) | candidate) & ((1 << n) - 1)
    if state.stop_windows and (
        state.runs < 3 or state.stop_windows > state.typical_run + state.typical_stop or not state.candidates & 1
    ):
        return 0
    return state.candidates


def _grace(state: ValidationState, cfg: ValidationConfig) -> int:
    """Start-up grace in windows: the configured one, or a quarter of the asset's typical run when it cycles.

    An asset that starts and stops every half hour would otherwise never be
    judged; its starts are part of its normal, and its baseline learned them.
    With `grace_within_run` the grace is also shorter than the typical run
    (in whole windows), so an asset whose runs last one window (a 15-minute
    window on a demand-cycling machine) has that window judged instead of
    none of its running windows ever.

    >>> s = ValidationState(runs=5, typical_run=1.2)
    >>> _grace(s, ValidationConfig()), _grace(s, ValidationConfig(grace_within_run=True))
    (1, 0)
    >>> _grace(ValidationState(runs=5, typical_run=2.0), ValidationConfig(grace_within_run=True))
    1
    """
    if state.runs < 3:
        return cfg.grace_windows
    grace = min(cfg.grace_windows, max(1, int(state.typical_run // 4)))
    if cfg.grace_within_run:  # runs of one window: that window is all the asset shows, and its baseline learned it
        grace = min(grace, max(0, round(state.typical_run) - 1))
    return grace


def _start_score(scored: Scored, w: int, state: ValidationState, since_stop: int, grace: int,
                 cfg: ValidationConfig) -> float | None:
    """The score a start window is judged with instead of being in the grace, or None (judged as before).

    Only a cycling asset's start (its first running window, which the grace
    would cover, on an asset whose typical run shortened the grace: 3 runs
    seen, under four graces long) that the detectors scored with its earlier
    starts (detect/starts.py). Longer-running assets keep their whole grace.

    >>> import numpy as np
    >>> from smart_maintenance.operators.records import FeatureBatch
    >>> fb = FeatureBatch("m", ("a",), np.array([0]), np.array([900_000]), np.zeros((1, 1, 8)))
    >>> sc = Scored(fb, np.array([0.9]), {}, ((),), np.zeros(1, bool), start_score=np.array([0.2]))
    >>> cyc, cfg = ValidationState(runs=5, typical_run=2.6), ValidationConfig(grace_windows=6)
    >>> _start_score(sc, 0, cyc, 1, 1, cfg), _start_score(sc, 0, cyc, 2, 1, cfg)
    (0.2, None)
    >>> _start_score(sc, 0, ValidationState(runs=5, typical_run=60.0), 1, 6, cfg)
    """
    if scored.start_score is None or since_stop != 1 or grace < 1:
        return None
    if state.runs < 3 or state.typical_run >= 4 * cfg.grace_windows:
        return None
    start = float(scored.start_score[w])
    return None if math.isnan(start) else start


def _led_by(scored: Scored, w: int, detector: str) -> bool:
    """Is `detector` the window's top detector (ties count for it)?"""
    mine = scored.detector_scores.get(detector)
    return mine is not None and bool(mine[w] >= max(s[w] for s in scored.detector_scores.values()))


def _stretch(state: ValidationState, scored: Scored, w: int, candidate: bool, normal: bool) -> ValidationState:
    """The stretch after this window: a judged candidate's z row joins it, a judged normal window ends it.

    A stopped window, one in the start-up grace or a sensor fault leaves it as
    it is, unless persistence has forgotten every candidate (a long stop). A
    row of another width (the detectors' columns changed) starts a new stretch.
    """
    if normal or not state.candidates:
        return evolve(state, stretch_z=()) if state.stretch_z else state
    if not candidate or scored.baseline_z is None:
        return state
    row = tuple(scored.baseline_z[w].tolist())
    kept = state.stretch_z if state.stretch_z and len(state.stretch_z[0]) == len(row) else ()
    return evolve(state, stretch_z=(kept + (row,))[-STRETCH_KEEP:])


def _trending(scored: Scored, w: int, state: ValidationState) -> float:
    """The one-sided p-value that the window's top column's robust z trends up over the stretch (1.0: no test).

    Mann-Kendall: Kendall's tau of the z against their order (scipy: exact up
    to 33 windows without ties). It is rank-based, so it asks whether the deviation keeps
    growing, not by how much; a step held after its jump has no trend. With
    fewer than 4 windows it cannot reach 0.05 (the smallest one-sided p of 3
    is 1/6, of 4 it is 1/24): the test's own property, not a set minimum.

    >>> import numpy as np
    >>> from smart_maintenance.operators.records import FeatureBatch
    >>> fb = FeatureBatch("m", ("a",), np.zeros(1, int), np.ones(1, int), np.zeros((1, 1, 8)))
    >>> sc = Scored(fb, np.ones(1), {}, ((),), np.zeros(1, bool), baseline_z=np.array([[6.0, 1.0]]))
    >>> rising = ValidationState(stretch_z=((3.0, 1.0), (4.0, 2.0), (5.0, 1.0), (6.0, 1.0)))
    >>> round(_trending(sc, 0, rising), 4), round(_trending(sc, 0, ValidationState(stretch_z=rising.stretch_z[:3])), 4)
    (0.0417, 0.1667)
    """
    z = scored.baseline_z
    if z is None or len(state.stretch_z) < 2 or len(state.stretch_z[0]) != z.shape[1]:
        return 1.0
    from scipy.stats import kendalltau  # at the first test: scipy.stats is ~40 % of a process's import CPU

    top = int(np.argmax(z[w]))
    series = [row[top] for row in state.stretch_z]
    p = float(kendalltau(np.arange(len(series)), series, alternative="greater").pvalue)
    return 1.0 if math.isnan(p) else p


def _decisive(scored: Scored, w: int, at: float) -> bool:
    decisive: bool = max(s[w] for s in scored.detector_scores.values()) >= at
    return decisive


def _verdict(
    scored: Scored, w: int, status: str, reasons: list[str], faults: dict[str, str], state: ValidationState,
    profile: AssetProfile, cfg: ValidationConfig, running: bool, gross: bool = False,
) -> Verdict:
    fb = scored.features
    start, end = int(fb.window_start[w]), int(fb.window_end[w])
    score = float(scored.score[w])
    n = cfg.persistence_n
    detector = {d: float(s[w]) for d, s in scored.detector_scores.items()}
    persistence = _popcount(state.candidates if status != "sensor_fault" else state.faults, n) / n
    agreement = sum(v >= cfg.open_threshold for v in detector.values()) / max(len(detector), 1)
    confidence = (score + persistence + agreement) / 3
    severity = _severity(score, profile, cfg) if status != "sensor_fault" else 2 + (profile.criticality >= 4)
    anomaly = Anomaly(
        anomaly_id=stable_id("anomaly", fb.asset_id, start),
        asset_id=fb.asset_id,
        window_start=ms_to_dt(start),
        window_end=ms_to_dt(end),
        score=score,
        status=status,
        confidence=confidence,
        severity=severity,
        reasons=tuple(reasons),
        contributions=scored.contributions[w],
        detector_scores=detector,
        sensors=tuple(sorted(faults)),
        features=scored.feature_contributions[w][: cfg.explain_features]
        if status not in ("rejected", "sensor_fault") and w < len(scored.feature_contributions)
        else (),
    )
    # a stuck sensor on a failing machine is still a faulty sensor: both are reported; a gross fault is certain at once
    fault_persistent = gross or (bool(faults) and _popcount(state.faults, n) >= cfg.persistence_k)
    return Verdict(start, end, status, score, running, fault_persistent, anomaly)
