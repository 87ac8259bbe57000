"""Validate scored windows: suppress false positives, tell sensor faults from machine faults.

Rules, in the order they apply to each window:

1. operating state: a stopped asset is not anomalous, and neither are the
   first `grace_windows` windows after it starts again (warming up);
2. sensor health: a sensor that drops out (under `dropout_fraction` of its
   usual count), reads outside its physical range, or is stuck (zero spread
   for `flatline_windows` windows although it used to vary) is faulty; when
   faulty sensors carry most of the deviation the window is a `sensor_fault`;
3. persistence: a candidate (score >= open threshold) becomes an anomaly only
   when k of the last n windows were candidates; a lone glitch is `rejected`;
4. confidence: a persistent candidate is `confirmed` when its score reaches
   the confirm threshold and either two detectors agree, the physical limits
   say so, or one detector is decisive (>= `decisive_score`: an
   IsolationForest cannot score a point far outside its training range much
   higher than one just outside it, so a huge deviation seen by the baseline
   alone is still certain); otherwise it `needs_review` by a person.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

import numpy as np

from smart_maintenance.operators.profile import COUNT, MAX, MEAN, MIN, STD, AssetProfile
from smart_maintenance.operators.records import Anomaly, Scored, ms_to_dt, stable_id


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

    def __post_init__(self) -> None:
        if not 0 < self.open_threshold <= self.confirm_threshold < 1:
            raise ValueError("need 0 < open_threshold <= confirm_threshold < 1")
        if not 1 <= self.persistence_k <= self.persistence_n <= 64:
            raise ValueError("need 1 <= persistence_k <= persistence_n <= 64")


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
class ValidationState:
    candidates: int = 0  # bit i: window i back was a machine candidate
    faults: int = 0  # bit i: window i back had a sensor fault
    since_stop: int = 1 << 30  # windows since the asset last ran stopped
    usual_count: dict[str, float] = field(default_factory=dict)
    varied: frozenset[str] = frozenset()
    flat_runs: dict[str, int] = field(default_factory=dict)


def _popcount(bits: int, n: int) -> int:
    return (bits & ((1 << n) - 1)).bit_count()


def _faulty_sensors(
    state: ValidationState, f: np.ndarray, sensors: tuple[str, ...], profile: AssetProfile, cfg: ValidationConfig,
    running: bool,
) -> tuple[ValidationState, dict[str, str]]:
    """Sensor health of one window (f: sensors x features); returns the faulty sensors and why."""
    faults: dict[str, str] = {}
    usual, flat_runs, varied = dict(state.usual_count), dict(state.flat_runs), set(state.varied)
    for s, name in enumerate(sensors):
        count, std, mean = f[s, COUNT], f[s, STD], f[s, MEAN]
        expected = usual.get(name, 0.0)
        if expected >= 3 and count < cfg.dropout_fraction * expected:
            faults[name] = "dropout"
            continue
        usual[name] = max(expected, float(count))
        lim = profile.limit(name)
        if lim is not None and (f[s, MIN] < lim.range_lo or f[s, MAX] > lim.range_hi):
            faults[name] = "out_of_range"
        if count >= 3 and running:
            flat = std <= 1e-9 * max(1.0, abs(mean))
            if flat and name in varied:
                flat_runs[name] = flat_runs.get(name, 0) + 1
                if flat_runs[name] >= cfg.flatline_windows:
                    faults.setdefault(name, "stuck")
            else:
                flat_runs[name] = 0
                if not flat:
                    varied.add(name)
    return replace(state, usual_count=usual, flat_runs=flat_runs, varied=frozenset(varied)), faults


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
    running_all = profile.running(fb)
    n = cfg.persistence_n
    verdicts: list[Verdict] = []
    for w in range(len(fb)):
        running = bool(running_all[w])
        score = float(scored.score[w])
        state, faults = _faulty_sensors(state, fb.values[w], fb.sensors, profile, cfg, running)
        since_stop = 0 if not running else state.since_stop + 1
        candidate = score >= cfg.open_threshold and not scored.warming_up[w]
        contrib = dict(scored.contributions[w])
        fault_share = sum(contrib.get(s, 0.0) for s in faults)
        is_fault = bool(faults) and (not candidate or fault_share >= 0.5 or not contrib)
        is_candidate = candidate and running and since_stop > cfg.grace_windows and not is_fault
        state = replace(
            state,
            since_stop=since_stop,
            candidates=((state.candidates << 1) | is_candidate) & ((1 << n) - 1),
            faults=((state.faults << 1) | is_fault) & ((1 << n) - 1),
        )
        reasons: list[str]
        if is_fault:
            status = "sensor_fault"
            reasons = [f"{s}: {why}" for s, why in sorted(faults.items())]
        elif not candidate:
            verdicts.append(Verdict(int(fb.window_start[w]), int(fb.window_end[w]), "normal", score, running))
            continue
        elif not running:
            status, reasons = "rejected", ["asset_stopped"]
        elif since_stop <= cfg.grace_windows:
            status, reasons = "rejected", ["start_up"]
        else:
            k = _popcount(state.candidates, n)
            agree = [d for d, s in scored.detector_scores.items() if s[w] >= cfg.open_threshold]
            if k < cfg.persistence_k:
                status, reasons = "rejected", [f"not_persistent ({k} of last {n})"]
            elif score >= cfg.confirm_threshold and (
                len(agree) >= 2 or "limits" in agree or max(s[w] for s in scored.detector_scores.values()) >= cfg.decisive_score
            ):
                status, reasons = "confirmed", [f"persistent ({k} of last {n})", "detectors: " + ",".join(agree)]
            else:
                status = "needs_review"
                reasons = [f"persistent ({k} of last {n})", "uncertain: " + (",".join(agree) or "fused score only")]
        verdicts.append(_verdict(scored, w, status, reasons, faults, state, profile, cfg, running))
    return state, verdicts


def _verdict(
    scored: Scored, w: int, status: str, reasons: list[str], faults: dict[str, str], state: ValidationState,
    profile: AssetProfile, cfg: ValidationConfig, running: bool,
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
    )
    fault_persistent = status == "sensor_fault" and _popcount(state.faults, n) >= cfg.persistence_k
    return Verdict(start, end, status, score, running, fault_persistent, anomaly)
