"""A lasting step to a new level re-baselines with an audit record; a developing trend keeps alarming."""

from __future__ import annotations

import pickle
from dataclasses import replace

import numpy as np

from smart_maintenance.operators.detect.detectors import DetectConfig, detect
from smart_maintenance.operators.detect.new_normal import NewNormalConfig, NewNormalState, Rebaseline, watch_window
from smart_maintenance.operators.judge.validation import ValidationConfig, validate
from smart_maintenance.operators.profile import AssetProfile

from .test_operating_states import SENSORS, _batch

CFG = DetectConfig(warmup_windows=96, baseline_size=96, detectors=("baseline", "multivariate"))
PROFILE = AssetProfile("motor-x")
T = 300


def _with(change, sensors: tuple[str, ...] = ("voltage",)) -> tuple:
    fb = _batch(np.ones(T + 150, bool))
    for w in range(T, len(fb)):
        d = change(w - T)
        for name in sensors:
            fb.values[w, SENSORS.index(name), [0, 2, 3, 5, 6]] += d  # mean, min, max, rms, last
    state, scored = detect(None, fb, PROFILE, CFG)
    _, verdicts = validate(None, scored, PROFILE, ValidationConfig(grace_windows=6))
    return state, scored, verdicts


def test_a_lasting_step_is_a_new_normal_not_an_alarm() -> None:
    state, scored, verdicts = _with(lambda k: 15.0)  # the supply moves from 400 V to 415 V, for good
    assert [(rb.sensor, rb.since_ms) for rb in scored.rebaselines] == [
        ("voltage", int(scored.features.window_start[T]))
    ]
    assert scored.rebaselines[0].shift > 10 and state.new_normal.log == scored.rebaselines
    assert scored.settling[T] and not scored.settling[-1]
    statuses = [v.status for v in verdicts[T:]]
    assert "confirmed" not in statuses and "needs_review" in statuses  # a person is asked while it settles
    assert scored.score[-20:].max() < 0.6  # scored against the moved baseline
    assert pickle.loads(pickle.dumps(state)).new_normal.log == state.new_normal.log


def test_a_trend_keeps_alarming() -> None:
    # creeps: 0.6 V (and A) a window; on two sensors at once, as a machine fault does (one alone is a sensor
    # drifting off the others: tests/unit/test_cross_sensor.py)
    _, scored, verdicts = _with(lambda k: 0.6 * k, ("voltage", "current"))
    assert scored.rebaselines == ()
    assert "confirmed" in [v.status for v in verdicts[T:]]


# `across` (detection.new_normal_across): a step the window-to-window jump cannot see
WIN = 900_000  # 15-minute windows: the watch settles in 8 of them
ACROSS = NewNormalConfig(across=True)


def _feed(levels: list[float | None], cfg: NewNormalConfig, fresh: bool = False) -> tuple[list[Rebaseline], set[int]]:
    """Residuals of one sensor window by window (None: the asset stopped); the new normals found and the windows
    a watch was open in. Unless `fresh`, the asset has run calm for a day first (the watch has a level)."""
    state = NewNormalState()
    if not fresh:
        levels = [0.3, -0.2] * 48 + levels
    found: list[Rebaseline] = []
    watched: set[int] = set()
    for w, r in enumerate(levels):
        _, new = watch_window(state, {"v": 0.0 if r is None else r}, {"v": 0.0 if r is None else r}, {"v": 0.0},
                              running=r is not None, at_ms=w * WIN, window_ms=WIN, cfg=cfg)
        found += new
        if "v" in state.watches:
            watched.add(w)
    return found, watched


def test_a_step_inside_a_window_shows_over_two_and_is_a_new_normal_with_across() -> None:
    steps = [0.1, 3.0] + [6.0 + 0.3 * (-1) ** k for k in range(20)]  # half way in one window, all of it in the next
    assert _feed(steps, NewNormalConfig()) == ([], set())  # 2.9 then 3.0: never a jump of 4 from a calm level
    found, _ = _feed(steps, ACROSS)
    assert [rb.sensor for rb in found] == ["v"] and found[0].shift > 5


def test_a_step_made_while_the_asset_stood_is_judged_past_the_start_up_with_across() -> None:
    steps = [0.2] * 4 + [None] * 12 + [6.0 + 0.3 * (-1) ** k for k in range(30)]  # stopped 3 h, back at a new level
    assert _feed(steps, NewNormalConfig()) == ([], set())  # the jump falls in the start-up, then it holds
    found, watched = _feed(steps, ACROSS)
    assert [rb.sensor for rb in found] == ["v"]
    assert min(watched) - 96 == 4 + 12 + 8  # the first window past the 2-hour start-up (8 windows)


def test_a_step_at_the_first_fitted_window_is_judged_from_the_fit_with_across() -> None:
    steps = [6.0 + 0.3 * (-1) ** k for k in range(30)]  # the step came with the fit: no window before it
    assert _feed(steps, NewNormalConfig(), fresh=True) == ([], set())
    found, _ = _feed(steps, ACROSS, fresh=True)
    assert [rb.sensor for rb in found] == ["v"]


def test_a_start_up_away_from_the_normal_is_not_a_level_to_judge_from() -> None:
    # the level was calm, the start-up runs far off for its 2 hours, then the machine is back where it was
    steps = [0.2] * 4 + [None] * 4 + [7.0] * 8 + [0.2 * (-1) ** k for k in range(30)]
    assert _feed(steps, ACROSS) == ([], set())


def test_a_calm_start_up_is_a_level_to_judge_from() -> None:
    # the machine stopped at a high load (3, not calm), starts calm and steps right after its start-up
    steps = [3.0] * 4 + [None] * 4 + [0.2] * 8 + [6.0 + 0.3 * (-1) ** k for k in range(30)]
    found, watched = _feed(steps, ACROSS)
    assert [rb.sensor for rb in found] == ["v"] and min(watched) - 96 == 16


def test_a_trend_fast_enough_to_jump_over_two_windows_is_watched_but_keeps_alarming_with_across() -> None:
    steps = [0.1 + 2.5 * k for k in range(40)]  # 5 robust z every two windows, from calm: a watch opens
    found, watched = _feed(steps, ACROSS)
    assert watched and found == []  # ... and it kept moving: no new normal, the trend keeps alarming


def test_after_a_new_normal_the_level_is_judged_from_the_moved_fit_with_across() -> None:
    across = replace(CFG, new_normal=ACROSS)

    def run(change) -> tuple:
        fb = _batch(np.ones(T + 150, bool))
        for w in range(T, len(fb)):
            fb.values[w, SENSORS.index("voltage"), [0, 2, 3, 5, 6]] += change(w - T)
        return fb, detect(None, fb, PROFILE, across)[1]

    fb, scored = run(lambda k: 15.0)
    assert len(scored.rebaselines) == 1
    found = int(np.searchsorted(fb.window_start, scored.rebaselines[0].at_ms)) - T
    # the supply steps again, the other way, in the window after the first new normal is found (before it is
    # applied): past the old level, never calm against the moved fit, and still a step from its centre
    _, scored = run(lambda k: 15.0 if k <= found else -15.0)
    assert len(scored.rebaselines) == 2 and scored.rebaselines[1].shift < -20


def test_a_watch_state_snapshotted_before_across_existed_loads_and_watches() -> None:
    old = NewNormalState(last={"v": 0.1})
    del old.__dict__["recent"]  # what a snapshot from before `across` holds
    state = pickle.loads(pickle.dumps(old))
    assert state.recent == {} and state.last == {"v": 0.1}
    for w in range(12):  # calm for 3 hours, then a step: judged from the restored (empty) level
        watch_window(state, {"v": 6.0 if w > 9 else 0.1}, {"v": 0.0}, {"v": 0.0}, running=True, at_ms=w * WIN,
                     window_ms=WIN, cfg=ACROSS)
    assert "v" in state.watches
