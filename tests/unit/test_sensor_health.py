"""Sensor health from the sensor's own data: no registry, no learned model."""

from __future__ import annotations

import pickle

import numpy as np

from smart_maintenance.operators.judge.sensor_health import HealthConfig, check_sensors

CFG = HealthConfig(envelope_ms=10 * 60_000)
W = 60_000  # one-minute windows
SENSORS = ("temp", "flow")


def _window(temp: float, flow: float = 100.0, *, temp_std: float = 0.5, temp_count: int = 30,
            flow_count: int = 30, temp_min: float | None = None) -> np.ndarray:
    f = np.zeros((2, 8))
    lo = temp - temp_std if temp_min is None else temp_min
    f[0] = [temp, temp_std, lo, temp + temp_std, 0.0, temp, temp, temp_count]
    f[1] = [flow, 2.0, flow - 2, flow + 2, 0.0, flow, flow, flow_count]
    return f


def _run(windows: list[np.ndarray], health=None, t0: int = 0) -> tuple[dict, list[dict[str, str]], list[bool]]:
    """Windows from window t0 on (the health of the earlier ones in `health`)."""
    health = health or {}
    faults, gross = [], []
    for i, f in enumerate(windows):
        health, fl, g = check_sensors(health, f, SENSORS, limits={}, running=True, at_ms=(t0 + i) * W, cfg=CFG)
        faults.append(fl)
        gross.append(g)
    return health, faults, gross


def _normal(n: int, seed: int = 0) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    return [_window(50 + rng.normal(0, 1), 100 + rng.normal(0, 3)) for _ in range(n)]


def test_a_sentinel_is_a_gross_fault_in_the_very_first_window() -> None:
    _, faults, gross = _run([_window(-999.0, temp_std=0.0)])
    assert faults == [{"temp": "sentinel"}] and gross == [True]
    _, faults, _ = _run([_window(50.0, temp_min=-9999.0)])  # a burst inside the window shows in its minimum
    assert faults == [{"temp": "sentinel"}]


def test_a_sensor_that_never_was_flat_is_stuck_after_one_flat_window() -> None:
    health, faults, _ = _run(_normal(30))
    assert not any(faults)
    _, faults, gross = _run([_window(51.3, temp_std=0.0)], health, 30)
    assert faults == [{"temp": "stuck"}] and gross == [True]
    assert pickle.loads(pickle.dumps(health)) == health


def test_a_coarse_sensor_that_is_often_flat_needs_a_much_longer_run() -> None:
    windows = []
    for i in range(40):  # flat for two windows in every five: its resolution, not a fault
        windows.append(_window(50.0, temp_std=0.0 if i % 5 in (1, 2) else 0.3))
    health, faults, _ = _run(windows)
    assert not any(faults)
    _, faults, _ = _run([_window(50.0, temp_std=0.0)] * 8, health, 40)
    stuck_from = next(i for i, f in enumerate(faults) if f)
    assert stuck_from == 5  # longest normal run 2, three times that: the 6th flat window


def test_an_impossible_jump_is_a_fault_a_slow_creep_is_not() -> None:
    health, _, _ = _run(_normal(20))
    creep = [_window(50 + 3 * k) for k in range(40)]  # a degradation: 120 degrees over 40 windows
    _, faults, _ = _run(creep, health, 20)
    assert not any(faults)
    _, faults, gross = _run([_window(400.0)], health, 20)
    assert faults == [{"temp": "impossible"}] and gross == [True]
    _, faults, _ = _run([_window(-30.0)], health, 20)  # never near zero, now clearly negative
    assert faults == [{"temp": "impossible"}]


def test_a_gap_of_the_whole_asset_is_not_a_fault_one_sensor_silent_for_an_hour_is() -> None:
    health, _, _ = _run(_normal(10))
    _, faults, _ = _run([_window(50.0, temp_count=4, flow_count=4)] * 3, health, 10)
    assert not any(faults)  # every sensor short at once: the gateway, stale data
    dead = _window(np.nan, temp_count=0)
    _, faults, gross = _run([dead] * 70, health, 10)  # its last readings in window 9, silent from window 10 on
    temp = [f.get("temp") for f in faults]
    assert temp[:59] == [None] * 59  # minutes of one sensor's gap: stale data, not a fault
    assert temp[59:] == ["silent"] * 11 and gross[59]  # an hour without a reading: silent, at once


def _zeroed(zeros: int, level: float = 52.5, n: int = 30) -> np.ndarray:
    """A window of temp whose `zeros` readings of `n` were exactly 0.0, the rest at `level`."""
    f = _window(level * (n - zeros) / n, temp_min=0.0)
    f[0, 5] = level * np.sqrt((n - zeros) / n)  # rms
    return f


def test_zeros_over_part_of_a_window_are_a_sentinel_but_a_stop_or_a_sensor_that_reads_zero_is_not() -> None:
    health, _, _ = _run(_normal(20))
    _, faults, gross = _run([_zeroed(10)], health, 20)  # a third of the window read 0.0
    assert faults == [{"temp": "sentinel"}] and gross == [True]
    _, faults, _ = _run([_zeroed(1)], health, 20)  # one reading at 0.0: a glitch clipped to the floor
    assert not any(faults)
    stop = _zeroed(10)
    stop[1, 2] = 0.0  # flow went to its floor in the same window: the asset stopping
    _, faults, _ = _run([stop], health, 20)
    assert not any(faults)
    stop[1, 2] = 40.0  # or fell far below its levels without reaching zero: still a stop
    _, faults, _ = _run([stop], health, 20)
    assert not any(faults)
    _, faults, _ = _run([_zeroed(10)], health, 2)  # before its envelope is learned: not judged
    assert not any(faults)
    stopped = {}
    for i, f in enumerate(_normal(20)):  # a sensor seen at exactly 0.0 while stopped reads zero for real
        if i == 15:
            f[0, 2] = 0.0
        stopped, _, _ = check_sensors(stopped, f, SENSORS, limits={}, running=i != 15, at_ms=i * W, cfg=CFG)
    _, faults, _ = _run([_zeroed(10)], stopped, 20)
    assert not any(faults)


def test_a_zero_code_is_a_sentinel_even_when_the_machine_looks_stopped() -> None:
    # a pressure reading 0.0 can make the learned operating state say "stopped"; the others holding their levels
    # still say it is the sensor
    health, _, _ = _run(_normal(20))
    _, faults, gross = check_sensors(health, _zeroed(10), SENSORS, limits={}, running=False, at_ms=20 * W, cfg=CFG)
    assert faults == {"temp": "sentinel"} and gross


def test_sensors_leaping_together_are_a_start_the_envelope_never_saw_not_an_impossible_reading() -> None:
    rng = np.random.default_rng(1)
    stopped = [_window(2 + rng.normal(0, 0.1), 1 + rng.normal(0, 0.1)) for _ in range(20)]
    health, faults, _ = _run(stopped)  # the envelope learned while the machine stood still
    assert not any(faults)
    _, faults, _ = _run([_window(60.0, 100.0)], health, 20)  # it starts: every level leaps at once
    assert not any(faults)
    _, faults, gross = _run([_window(60.0, 1.0)], health, 20)  # one alone leaping is still impossible
    assert faults == [{"temp": "impossible"}] and gross == [True]


def test_stuck_is_judged_on_the_extremes_not_on_a_std_with_a_rounding_residue() -> None:
    health, _, _ = _run(_normal(30))
    frozen = _window(1.95, temp_std=2.11e-8)  # thirty readings of 1.95: the std from sums of squares is not zero
    frozen[0, 2] = frozen[0, 3] = 1.95
    _, faults, gross = _run([frozen], health, 30)
    assert faults == [{"temp": "stuck"}] and gross == [True]


def _rest(temp: float, spread: float = 0.3, *, lowest: float | None = None) -> np.ndarray:
    f = _window(temp, 0.0, temp_std=spread, flow_count=30)
    f[1, 1:4] = 0.0  # flow pinned at zero: a stopped pump
    if lowest is not None:
        f[0, 2] = lowest
    return f


def _stopped(windows: list[np.ndarray], health: dict, t0: int,
             cfg: HealthConfig = CFG) -> tuple[dict, list[dict[str, str]]]:
    out = []
    for i, f in enumerate(windows):
        health, fl, _ = check_sensors(health, f, SENSORS, limits={}, running=False, at_ms=(t0 + i) * W, cfg=cfg)
        out.append(fl)
    return health, out


def test_a_sensor_that_varies_at_rest_is_stuck_when_it_freezes_while_stopped_but_a_floor_is_rest() -> None:
    young, _, _ = _run(_normal(20))
    rng = np.random.default_rng(2)
    health, faults = _stopped([_rest(20 + rng.normal(0, 0.5)) for _ in range(30)], young, 20)
    assert not any(faults)  # flow pinned at its floor (zero) all along: rest, not a frozen sensor
    _, faults = _stopped([_rest(21.37, 0.0)], health, 50)  # temp reads 21.37 throughout a stopped window
    assert faults == [{"temp": "stuck"}]
    _, faults = _stopped([_rest(21.37, 0.0)], young, 20)  # ... but not judged on a young record of rest
    assert not any(faults)
    coarse = dict(health, temp=health["temp"].clone())
    coarse["temp"].rest_flat = 1  # it has been flat at rest before, off its floor: a coarse resolution
    _, faults = _stopped([_rest(21.37, 0.0)], coarse, 50)
    assert not any(faults)


def test_a_jump_that_straddles_two_windows_is_still_impossible() -> None:
    health, _, _ = _run(_normal(20))
    half = _window(110.0, temp_std=60.0)  # the fault began half way through this window: 2.4 spans from 50
    _, faults, _ = _run([half, _window(170.0), _window(170.0)], health, 20)  # 2.4 spans on, 4.8 in two windows
    assert faults == [{}, {"temp": "impossible"}, {"temp": "impossible"}]


def test_flat_at_its_floor_at_rest_is_a_pinned_sensor_flat_off_it_is_frozen() -> None:
    health, _, _ = _run(_normal(20))
    rng = np.random.default_rng(3)
    clipped = []
    for _ in range(30):  # at rest temp reads a little above zero, some readings clipped to it: its floor is 0
        f = _rest(0.03 + rng.uniform(0, 0.02), 0.02, lowest=0.0)
        clipped.append(f)
    health, faults = _stopped(clipped, health, 20)
    assert not any(faults)
    _, faults = _stopped([_rest(0.0, 0.0)], health, 50)  # every reading at its floor: pinned, at rest
    assert not any(faults)
    _, faults = _stopped([_rest(0.01, 0.0)], health, 50)  # one value off its floor throughout: frozen
    assert faults == [{"temp": "stuck"}]


def test_a_start_seen_over_two_windows_is_not_a_jump_from_the_stop() -> None:
    health, _, _ = _run(_normal(20))
    steps = [(0.0, False), (60.0, True), (130.0, True)]  # stopped, a start half way through, running high
    faults = []
    for i, (temp, running) in enumerate(steps):
        f = _window(temp, temp_std=1.0)
        health, fl, _ = check_sensors(health, f, SENSORS, limits={}, running=running, at_ms=(20 + i) * W, cfg=CFG)
        faults.append(fl)
    assert faults == [{}, {}, {}]  # 130 is 5 spans from the stop, but the stop is no steady level to jump from


def test_the_envelope_is_learned_from_running_windows_and_impossible_judged_only_while_running() -> None:
    rng = np.random.default_rng(3)
    night = [_window(20 + rng.normal(0, 0.3)) for _ in range(12)]  # the first night's stop: vibration at rest
    health, faults = _stopped(night, {}, 0)
    assert not any(faults)
    day = [_window(60 + rng.normal(0, 1)) for _ in range(15)]  # it runs: the vibration alone rises to its level
    health, faults, _ = _run(day, health, 12)
    assert not any(faults)  # learned on the stop, 60 would be 4 spans off an envelope at 20: impossible
    assert 55 < health["temp"].lo < health["temp"].hi < 65
    _, faults, gross = _run([_window(400.0)], health, 27)  # a broken reading while running is still impossible
    assert faults == [{"temp": "impossible"}] and gross == [True]
    _, faults = _stopped([_window(400.0)], health, 27)  # at rest a leap is not judged: no running window to leap from
    assert not any(faults)
    _, faults = _stopped([_window(-5.0)], health, 27)  # ... but a speed drifting below zero at rest is impossible
    assert faults == [{"temp": "impossible"}]


def test_a_start_from_a_stop_is_not_a_jump_a_leap_between_running_windows_is() -> None:
    health, _, _ = _run(_normal(20))  # running at 50: span 25, so 75 off the last mean and the envelope is a leap
    health, faults = _stopped([_window(2.0)], health, 20)  # a cycling stop: the worn machine rests near zero
    assert not any(faults)
    _, faults, _ = _run([_window(150.0), _window(152.0)], health, 21)  # it starts where its wear has taken it
    assert not any(faults)
    _, faults, _ = _run([_window(150.0), _window(400.0)], health, 21)  # ... then a leap while running
    assert faults == [{}, {"temp": "impossible"}]


def test_clearly_negative_from_a_sensor_never_below_zero_is_impossible_even_while_its_envelope_is_learned() -> None:
    rng = np.random.default_rng(5)
    rest = [_rest(0.02 + abs(rng.normal(0, 0.01)), 0.01) for _ in range(6)]  # a vibration at rest: near zero
    health, faults = _stopped(rest, {}, 0)
    health, more, _ = _run([_window(3.0 + rng.normal(0, 0.1)) for _ in range(3)], health, 6)  # 3 of 10 minutes run
    assert not any(faults + more)
    assert health["temp"].lowest > 0 and pickle.loads(pickle.dumps(health)) == health  # its lowest mean is kept
    _, faults, gross = _run([_window(-2.0)], health, 9)  # below zero, out of its range: its envelope is not complete
    assert faults == [{"temp": "impossible"}] and gross == [True]
    _, faults = _stopped([_rest(-2.0)], health, 9)  # at rest too
    assert faults == [{"temp": "impossible"}]
    _, faults = _stopped([_rest(-0.1, 0.01)], health, 9)  # a little below zero is not clearly below it
    assert not any(faults)


def test_a_sensor_that_has_read_below_zero_is_not_judged_by_its_sign() -> None:
    rng = np.random.default_rng(6)
    health, faults = _stopped([_rest(-0.5 + rng.normal(0, 0.05)) for _ in range(6)], {}, 0)  # a chiller at rest
    health, more, _ = _run([_window(x) for x in np.linspace(0.05, 3.0, 12)], health, 6)  # running from near zero
    assert not any(faults + more)
    _, faults = _stopped([_rest(-2.0)], health, 18)  # its envelope reaches zero, and it has been below zero
    assert not any(faults)
    never, _ = _stopped([_rest(0.5 + rng.normal(0, 0.05)) for _ in range(6)], {}, 0)  # the same, never below zero
    never, _, _ = _run([_window(x) for x in np.linspace(0.05, 3.0, 12)], never, 6)
    _, faults = _stopped([_rest(-2.0)], never, 18)
    assert faults == [{"temp": "impossible"}]


LEAP = HealthConfig(envelope_ms=10 * 60_000, leap_at_stop=True)


def _stop_window(temp: float, health: dict, t: int, cfg: HealthConfig = LEAP) -> dict[str, str]:
    """The window a stop falls in: the learned states call it stopped, the flow half way to its rest."""
    _, faults, _ = check_sensors(health, _window(temp, 60.0), SENSORS, limits={}, running=False, at_ms=t * W, cfg=cfg)
    return faults


def test_the_window_a_stop_falls_in_judges_a_leap_no_stop_explains() -> None:
    rng = np.random.default_rng(7)
    night, _ = _stopped([_rest(20 + rng.normal(0, 0.3)) for _ in range(12)], {}, 0)  # at rest near 20
    health, faults, _ = _run(_normal(20), night, 12)  # then running near 50: span 25, so 75 is a leap
    assert not any(faults)
    assert 19 < health["temp"].floor < health["temp"].ceiling < 21
    assert pickle.loads(pickle.dumps(health)) == health  # its highest reading at rest is kept
    assert _stop_window(400.0, health, 32) == {"temp": "impossible"}  # no stop takes it there
    assert _stop_window(400.0, health, 32, CFG) == {}  # the setting off: judged only while running, as before
    assert _stop_window(20.0, health, 32) == {}  # toward its level at rest: a stop
    worn, faults, _ = _run([_window(50.0 + 30 * i) for i in range(1, 10)], health, 32)  # a wear creeping to 320
    assert not any(faults)
    assert _stop_window(180.0, worn, 41) == {}  # the stop's window half way from 320 to rest: a stop, not a leap
    assert _stop_window(450.0, worn, 41) == {"temp": "impossible"}  # beyond both: no stop
    fresh, _, _ = _run(_normal(20), {}, 0)  # never stopped: where a stop takes it is unknown, not judged at rest
    assert _stop_window(400.0, fresh, 20) == {}


def test_a_leap_to_the_level_the_sensor_shows_at_rest_is_a_stop() -> None:
    rng = np.random.default_rng(8)
    night, _ = _stopped([_rest(200 + rng.normal(0, 0.5)) for _ in range(12)], {}, 0)  # a suction pressure at rest
    health, _, _ = _run(_normal(20), night, 12)  # running near 50: 200 is 6 spans off the envelope
    assert _stop_window(195.0, health, 32) == {}  # the stop's window equalising toward 200: explained by a stop
    assert _stop_window(400.0, health, 32) == {"temp": "impossible"}  # 8 spans beyond it: not


TWO = HealthConfig(envelope_ms=10 * 60_000, leap_needs_two=True)


def _three(*readings: float) -> np.ndarray:
    """A window of a slowly sampled asset (a reading every 5 minutes, 15-minute windows): `temp`'s readings."""
    r = np.array(readings)
    f = np.zeros((2, 8))
    f[0] = [r.mean(), r.std(), r.min(), r.max(), 0.0, np.sqrt((r ** 2).mean()), r[-1], len(r)]
    f[1] = [100.0, 2.0, 98.0, 102.0, 0.0, 100.0, 100.0, 3]
    return f


def test_a_leap_that_one_reading_makes_is_a_glitch_two_readings_are_a_fault() -> None:
    for sign in (1.0, -1.0):  # a level above zero leaping up, and one below zero (a vacuum) leaping down
        rng = np.random.default_rng(9)
        health: dict = {}
        for i in range(20):  # three readings a window near 50: envelope about 47-53, span 25 (half the level)
            window = _three(*(sign * (50 + rng.normal(0, 1, 3))))
            health, faults, _ = check_sensors(health, window, SENSORS, limits={}, running=True, at_ms=i * W, cfg=TWO)
            assert not faults

        def judged(cfg: HealthConfig, *readings: float, h: dict = health, s: float = sign) -> dict[str, str]:
            window = _three(*(s * np.array(readings)))
            return check_sensors(h, window, SENSORS, limits={}, running=True, at_ms=20 * W, cfg=cfg)[1]

        assert judged(TWO, 50.0, 50.5, 300.0) == {}  # one spike: the mean (133) leaps, the other two readings do not
        assert judged(CFG, 50.0, 50.5, 300.0) == {"temp": "impossible"}  # the setting off: the mean alone
        assert judged(TWO, 50.0, 300.0, 300.0) == {"temp": "impossible"}  # two readings off: a broken sensor
        assert judged(TWO, 300.0, 301.0, 299.0) == {"temp": "impossible"}
        assert judged(TWO, 300.0) == {"temp": "impossible"}  # one reading in the window: judged on it


AFTER = HealthConfig(envelope_ms=10 * 60_000, leap_at_stop=True, leap_after_stop=True)


def test_a_fault_that_begins_deep_in_a_stop_is_a_leap_from_the_level_at_rest() -> None:
    # a gearbox's oil at rest near 20, running near 50; through a long stop its reading leaps to 200
    rng = np.random.default_rng(11)
    night, _ = _stopped([_rest(20 + rng.normal(0, 0.3)) for _ in range(12)], {}, 0)
    health, _, _ = _run(_normal(20), night, 12)
    for cfg, fault in ((AFTER, {"temp": "impossible"}), (LEAP, {})):  # the setting off: a stop's windows unjudged
        _, faults = _stopped([_rest(21.0), _rest(20.5), _rest(200.0), _rest(201.0)], health, 32, cfg)
        assert faults == [{}, {}, fault, fault]  # judged from the last mean at rest, which the fault leaves as it was
    h, faults = _stopped([_rest(21.0), _rest(45.0), _rest(20.0)], health, 32, AFTER)
    assert faults == [{}, {}, {}]  # warming back toward its running level at rest (a restart's heat): no leap
    assert pickle.loads(pickle.dumps(h)) == h


def test_a_start_is_not_judged_for_a_leap_wear_does_not_wait_for_the_machine_to_run() -> None:
    rng = np.random.default_rng(12)
    night, _ = _stopped([_rest(2 + rng.normal(0, 0.1)) for _ in range(12)], {}, 0)  # a motor current at rest
    health, _, _ = _run(_normal(20), night, 12)  # running near 50: span 25
    health, _ = _stopped([_rest(2.0)], health, 32, AFTER)

    def start(temp: float, cfg: HealthConfig = AFTER) -> dict[str, str]:
        return check_sensors(health, _window(temp), SENSORS, limits={}, running=True, at_ms=33 * W, cfg=cfg)[1]

    assert start(400.0) == {}  # a start is not judged: a machine near its failure may start far beyond its level
    assert start(30.0) == {}


def test_a_sensor_that_rests_far_from_its_running_level_may_jump_there_during_a_stop() -> None:
    rng = np.random.default_rng(15)
    night, _ = _stopped([_rest(200 + rng.normal(0, 0.5)) for _ in range(12)], {}, 0)  # a suction pressure at rest
    health, _, _ = _run(_normal(20), night, 12)  # running near 50: 200 is 6 spans off the envelope
    _, faults = _stopped([_rest(45.0), _rest(198.0), _rest(400.0)], health, 32, AFTER)
    assert faults == [{}, {}, {"temp": "impossible"}]  # equalising to its level at rest: a stop; 400: beyond it


def test_a_sensor_not_yet_run_since_its_record_began_is_judged_by_its_sign_at_rest() -> None:
    # a repair reset the record during a stop: no envelope yet, only readings at rest near 20
    rng = np.random.default_rng(13)
    rest = [_rest(20 + rng.normal(0, 0.3), lowest=-20.0 if i == 2 else None) for i in range(6)]  # one glitch at -20
    health, faults = _stopped(rest, {}, 0, AFTER)
    assert not any(faults) and health["temp"].first_ms < 0
    _, faults = _stopped([_rest(-53.0)], health, 6, AFTER)
    assert faults == [{"temp": "impossible"}]
    _, faults = _stopped([_rest(-53.0)], health, 6, LEAP)  # the setting off: no envelope, nothing judged
    assert faults == [{}]
    vib, _ = _stopped([_rest(0.02 + abs(rng.normal(0, 0.01)), 0.01) for _ in range(6)], {}, 0, AFTER)
    _, faults = _stopped([_rest(-0.01, 0.01)], vib, 6, AFTER)  # near zero at rest: its sign is noise
    assert faults == [{}]


def test_a_sensor_equalising_at_rest_does_not_make_another_s_leap_a_change_of_duty() -> None:
    # the flow's level at rest is 300 (a suction side equalising), running 100; deep in a stop it climbs back to it
    # in the same window as the temperature leaps to 400: one broken sensor, not two sensors leaping together
    rng = np.random.default_rng(16)
    health: dict = {}
    for i in range(12):
        health, _, _ = check_sensors(health, _window(20 + rng.normal(0, 0.3), 300 + rng.normal(0, 1)), SENSORS,
                                     limits={}, running=False, at_ms=i * W, cfg=AFTER)
    health, _, _ = _run(_normal(20), health, 12)
    out = []
    for i, f in enumerate([_window(21.0, 40.0), _window(400.0, 300.0)]):
        health, fl, _ = check_sensors(health, f, SENSORS, limits={}, running=False, at_ms=(32 + i) * W, cfg=AFTER)
        out.append(fl)
    assert out == [{}, {"temp": "impossible"}]
