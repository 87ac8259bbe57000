"""A new normal is not a fault: tell a lasting step to a new stable level from a developing trend.

Each running window, every sensor's residual is its mean's robust z against
the fitted baseline. A *jump* (the residual moves by `jump_z` or more in one
window, from inside `calm_z`) opens a watch on that sensor; a developing
fault creeps and accelerates, it does not jump. While the watch lasts
(`settle_ms` of the asset's own windows), its windows are *settling*:
validation sends their persistent candidates to review (`needs_review`)
instead of confirming them, so a person sees an abrupt change at once but no
machine alarm opens for what may be a setpoint change. River's ADWIN (`river.drift.ADWIN`) then watches the residuals
after the jump: when they stay where they jumped to (ADWIN sees no change,
and the level is still `calm_z` or more from the old one), the step is a
new normal: the sensor's level columns in the baseline are moved by the
step, the detectors are refitted, and a `Rebaseline` audit record is kept
(and logged by the dataflow as a notice). When ADWIN sees the residuals
keep moving, or they return, the watch ends: a trend keeps alarming, a
glitch was a glitch. Watches do not open in the first `after_start_ms` of a
run (a start-up is not a step).

With `across`, a step is also seen where one window cannot show it: a step
inside a window leaves that window half way and the next one at the new
level, so the jump is judged against each of the last `span` running
residuals (`span`: the windows one step reaches its level in, one more than
the detector's context), from any calm one; the windows of a start-up are
not judged, and kept only when calm (a start-up away from the normal says
nothing of the level), so the first window past it is judged against the
level before the stop (a setpoint changed while the machine stood); and the
first window after a fit is judged against the fit's own centre (0: its
rows are the normal), as is the first window after a new normal is applied
(until then, none is judged: the residuals are still the old level's). No new constant: `jump_z`, `calm_z` and
`after_start_ms` as above.

Guarantees: deterministic (ADWIN is fed the same residuals in the same
order); the state pickles; only windows that were flagged are watched, and
the baseline moves only by a step that held.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from river import drift

AUDIT_KEEP = 16


@dataclass(frozen=True)
class NewNormalConfig:
    jump_z: float = 4.0
    calm_z: float = 2.0
    settle_ms: int = 2 * 3_600_000
    after_start_ms: int = 2 * 3_600_000
    min_settle_windows: int = 6
    adwin_delta: float = 0.002
    across: bool = False  # a step across a window boundary, a stop or a fit is a jump too (see above)

    def __post_init__(self) -> None:
        if not 0 < self.calm_z < self.jump_z or self.settle_ms <= 0 or self.min_settle_windows < 3:
            raise ValueError("need 0 < calm_z < jump_z, settle_ms > 0 and min_settle_windows >= 3")


@dataclass(frozen=True)
class Rebaseline:
    """Audit record: the sensor's normal level moved by `shift` (its units), decided at `at_ms`."""

    at_ms: int
    sensor: str
    since_ms: int  # the window where it jumped
    shift: float  # new level - old baseline level
    residual_z: float  # the step, in robust z of the old baseline
    reason: str = "new_normal"


@dataclass
class Watch:
    since_ms: int
    windows: int
    residuals: list[float]
    means: list[float]
    adwin: drift.ADWIN


@dataclass
class NewNormalState:
    last: dict[str, float] = field(default_factory=dict)  # last running residual per sensor
    watches: dict[str, Watch] = field(default_factory=dict)
    run_ms: int = 0  # running time since the last start
    pending: tuple[Rebaseline, ...] = ()  # found, applied at the next block boundary
    log: tuple[Rebaseline, ...] = ()
    recent: dict[str, list[float]] = field(default_factory=dict)  # `across`: last running residuals, past start-ups

    def __setstate__(self, saved: dict[str, object]) -> None:
        self.__dict__.update({"recent": {}, **saved})  # a snapshot taken before `recent` existed still loads


def settle_windows(cfg: NewNormalConfig, window_ms: int) -> int:
    return max(cfg.min_settle_windows, math.ceil(cfg.settle_ms / max(window_ms, 1)))


def watch_window(
    state: NewNormalState,
    residuals: dict[str, float],
    means: dict[str, float],
    centers: dict[str, float],
    *,
    running: bool,
    at_ms: int,
    window_ms: int,
    cfg: NewNormalConfig,
    span: int = 2,
) -> tuple[bool, list[Rebaseline]]:
    """Fold one window's residuals (robust z per sensor) in; return whether it is settling and any new normals.

    `span`: with `cfg.across`, the windows one step may take to reach its level."""
    if not running:
        state.run_ms = 0
        return False, []
    state.run_ms += window_ms
    need = settle_windows(cfg, window_ms)
    found: list[Rebaseline] = []
    for name, r in residuals.items():
        if not math.isfinite(r):
            continue
        before = state.last.get(name)
        state.last[name] = r
        w = state.watches.get(name)
        if cfg.across:
            recent = state.recent
            froms = recent.get(name, [0.0])  # none yet: the fit's centre
            starting = w is None and state.run_ms <= cfg.after_start_ms
            if not starting or abs(r) < cfg.calm_z:  # a start-up away from the normal says nothing of the level
                recent[name] = (froms + [r])[-span:]
            if w is None:
                if not starting and any(abs(b) < cfg.calm_z and abs(r - b) >= cfg.jump_z for b in froms):
                    _open(state, name, r, means[name], at_ms, cfg)
                continue
        elif w is None:
            if (before is not None and abs(before) < cfg.calm_z and abs(r - before) >= cfg.jump_z
                    and state.run_ms > cfg.after_start_ms):
                _open(state, name, r, means[name], at_ms, cfg)
            continue
        w.windows += 1
        w.residuals.append(r)
        w.means.append(means[name])
        w.adwin.update(r)  # type: ignore[no-untyped-call]  # river: no hints
        level = float(np.median(w.residuals))
        if w.adwin.drift_detected or abs(level) < cfg.calm_z:
            del state.watches[name]  # it kept moving (a trend) or came back (a glitch)
            continue
        if w.windows >= need:
            half = w.residuals[len(w.residuals) // 2:]
            if abs(float(np.median(half)) - float(np.median(w.residuals[: len(w.residuals) // 2]))) < cfg.calm_z:
                shift = float(np.median(w.means)) - centers[name]
                found.append(Rebaseline(at_ms, name, w.since_ms, shift, level))
            del state.watches[name]
    if found:
        state.log = (state.log + tuple(found))[-AUDIT_KEEP:]
        state.pending += tuple(found)
        for f in found:
            state.last[f.sensor] = 0.0
            if cfg.across:
                state.recent[f.sensor] = []  # nothing to judge from until the step is applied (the fit's centre)
    return bool(state.watches) or bool(state.pending), found  # settling until the new normal is applied


def _open(state: NewNormalState, name: str, r: float, mean: float, at_ms: int, cfg: NewNormalConfig) -> None:
    from river import drift

    adwin = drift.ADWIN(delta=cfg.adwin_delta, clock=1)  # type: ignore[no-untyped-call]  # river: no hints
    state.watches[name] = Watch(at_ms, 1, [r], [mean], adwin)
    state.watches[name].adwin.update(r)  # type: ignore[no-untyped-call]  # river: no hints
