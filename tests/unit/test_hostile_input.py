"""Hostile input at the ingest edge: nesting, huge fields, odd names, sensor floods, future times, asset floods."""

from __future__ import annotations

import pickle
import sys

import numpy as np
import orjson
import pytest

from smart_maintenance.operators.ingest.guard import describe, name_problem
from smart_maintenance.operators.ingest.limits import (
    AssetAdmission,
    after_eviction_alarms,
    after_eviction_validation,
    refused,
)
from smart_maintenance.operators.ingest.parse import MIN_TS_MS, check_readings, parse_messages
from smart_maintenance.operators.ingest.windows import WindowConfig, drop_held, flush_windows, window_readings
from smart_maintenance.operators.judge.alarms import AlarmState
from smart_maintenance.operators.judge.validation import ValidationState
from smart_maintenance.operators.records import DETAIL_LIMIT, AssetReadings, Invalid, Parsed, RawMessages, Readings

T0 = 1_767_225_600_000  # 2026-01-01T00:00Z
HOUR = 3_600_000


def nested(depth: int, leaf: object = 1) -> object:
    v: object = leaf
    for _ in range(depth):
        v = [v]
    return v


def deep_json(depth: int) -> bytes:
    """A list nested `depth` levels as JSON text (orjson itself refuses to write more than 254)."""
    return b"[" * depth + b"1" + b"]" * depth


def parse(*payloads: bytes) -> Parsed:
    n = len(payloads)
    return parse_messages(RawMessages(payloads, (None,) * n, tuple(f"t:{i}" for i in range(n))))


# -- nothing escapes a message ---------------------------------------------------------------------------


@pytest.mark.parametrize("field", ["value", "ts", "frame", "asset_id", "sensor"])
def test_a_field_nested_1000_levels_is_a_dead_letter_and_the_next_message_still_parses(field: str) -> None:
    deep = deep_json(1000)
    docs = {
        "value": b'{"asset_id":"p1","sensor":"t","ts":%d,"value":%s}' % (T0, deep),
        "ts": b'{"asset_id":"p1","sensor":"t","ts":%s,"value":1}' % deep,
        "frame": b'{"asset_id":"p1","ts":%d,"values":{"t":%s}}' % (T0, deep),
        "asset_id": b'{"asset_id":%s,"sensor":"t","ts":%d,"value":1}' % (deep, T0),
        "sensor": b'{"asset_id":"p1","sensor":%s,"ts":%d,"value":1}' % (deep, T0),
    }
    good = b'{"asset_id":"p1","sensor":"t","ts":%d,"value":2.5}' % T0
    old = sys.getrecursionlimit()
    sys.setrecursionlimit(200)  # str() of a 1000-deep list recursed past any limit: prove nothing recurses
    try:
        p = parse(docs[field], good)
    finally:
        sys.setrecursionlimit(old)
    assert p.readings.value.tolist() == [2.5]
    [rej] = p.rejects
    assert rej.origin == "t:0" and rej.reason in {"bad_value", "bad_timestamp", "bad_shape"}
    assert len(rej.detail) < 200 and "[[[" not in rej.detail


def test_an_unexpected_failure_in_one_message_is_unparseable_and_keeps_no_half_of_it(monkeypatch) -> None:
    import smart_maintenance.operators.ingest.parse as parse_mod

    real = parse_mod._cached_ts  # every path that reads a `ts` goes through it

    def explode(v: object, texts: dict) -> int | None:
        if v == 0:  # the "boom" reading's time
            raise MemoryError("simulated")
        return real(v, texts)

    monkeypatch.setattr(parse_mod, "_cached_ts", explode)
    p = parse(b'[{"asset_id":"p1","sensor":"t","ts":%d,"value":1},{"asset_id":"boom","sensor":"t","ts":0,"value":1}]'
              % T0, b'{"asset_id":"p2","sensor":"t","ts":%d,"value":3}' % T0)
    assert [r.reason for r in p.rejects] == ["unparseable"]
    assert p.readings.asset_id.tolist() == ["p2"]  # nothing of the failed message, all of the next


def test_messages_over_the_size_limit_are_too_large_without_being_decoded() -> None:
    big = b'{"asset_id":"p1","sensor":"t","ts":%d,"value":1,"pad":"%s"}' % (T0, b"x" * 5000)
    p = parse_messages(RawMessages((big,), (None,), ("o",)), max_bytes=4096)
    assert [r.reason for r in p.rejects] == ["too_large"] and len(p.readings) == 0


def test_dead_letter_detail_raw_and_origin_are_capped() -> None:
    inv = Invalid("bad_value", "d" * 15_000_000, "r" * 15_000_000, "o" * 5000)
    assert len(inv.detail) == DETAIL_LIMIT + 3 and len(inv.raw) == 64 * 1024 and len(inv.origin) == DETAIL_LIMIT + 3
    frame = {"asset_id": "p1", "ts": T0, "values": {f"s{i}": "x" * 100 for i in range(2000)}}
    [rej] = parse(orjson.dumps(frame)).rejects
    assert len(rej.detail) <= DETAIL_LIMIT + 3 and "and 1990 more" in rej.detail


def test_describe_is_bounded_and_never_recurses() -> None:
    assert describe(nested(5000)) == "a JSON list of 1 item(s)"
    assert describe(10**5000).startswith("an integer of about")
    assert len(describe("x" * 10**6)) <= 83


# -- names at the edge -----------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["x" * 129, "pump\r\n01", "a\x00b", "tab\there", "zero\u200bwidth", "line\u2028sep"])
def test_bad_names_are_dead_letters_with_their_field(name: str) -> None:
    for asset, sensor, field in ((name, "t", "'asset_id'"), ("p1", name, "'sensor'")):
        batch = Parsed(Readings.of([(asset, sensor, T0, 1.0), ("p1", "t", T0, 2.0)]))
        out = check_readings(batch, now_ms=T0, max_skew_ms=0)
        assert out.readings.value.tolist() == [2.0]
        [rej] = out.rejects
        assert rej.reason == "bad_name" and rej.detail.startswith(f"field {field}")


def test_name_length_limit_is_a_setting_and_unicode_names_pass() -> None:
    assert name_problem("ü-7 Pumpe Nord", 128) is None and name_problem("x" * 128, 128) is None
    batch = Parsed(Readings.of([("x" * 40, "t", T0, 1.0)]))
    assert [r.reason for r in check_readings(batch, now_ms=T0, max_skew_ms=0, max_name_len=32).rejects] == ["bad_name"]


def test_strict_registry_covers_sensors() -> None:
    batch = Parsed(Readings.of([("p1", "t", T0, 1.0), ("p1", "rogue", T0, 2.0), ("p9", "t", T0, 3.0)]))
    out = check_readings(batch, now_ms=T0, max_skew_ms=0, known_assets=frozenset({"p1"}),
                         known_sensors={"p1": frozenset({"t"})})
    assert out.readings.value.tolist() == [1.0]
    assert sorted(r.reason for r in out.rejects) == ["unknown_asset", "unknown_sensor"]


# -- sensors per asset -----------------------------------------------------------------------------------


def _frame(asset: str, ts: int, sensors: list[str], value: float = 1.0) -> AssetReadings:
    n = len(sensors)
    return AssetReadings(asset, np.array(sensors, dtype=object), np.full(n, ts, np.int64), np.full(n, value))


def test_sensors_over_the_limit_are_dead_letters_first_come_first_kept() -> None:
    cfg = WindowConfig(length_ms=60_000, max_sensors=4)
    state, out = window_readings(None, _frame("p1", T0, ["z", "y", "x"]), cfg)
    state, out = window_readings(state, _frame("p1", T0 + 1000, [f"s{i:04d}" for i in range(5000)] + ["z"]), cfg)
    assert state.sensors == ("z", "y", "x", "s0000")
    [dead] = out.late
    assert dead.reason == "too_many_sensors" and orjson.loads(dead.raw)["readings"] == 4999
    assert len(pickle.dumps(state)) < 20_000  # memory follows the sensors kept, not the names sent
    state, fb = flush_windows(state, cfg)
    assert fb is not None and fb.values.shape[1] == 4


def test_sensor_limit_does_not_depend_on_batching() -> None:
    cfg = WindowConfig(length_ms=60_000, max_sensors=3)
    names = ["d", "a", "c", "b", "e"]
    one, _ = window_readings(None, _frame("p1", T0, names), cfg)
    two = None
    for name in names:
        two, _ = window_readings(two, _frame("p1", T0, [name]), cfg)
    assert one.sensors == two.sensors == ("d", "a", "c")


# -- time that cannot be hijacked ----------------------------------------------------------------------------


def _stream(start: int, n: int, step: int = 10_000) -> list[AssetReadings]:
    return [_frame("p1", start + i * step, ["t"], float(i)) for i in range(n)]


def _run(batches: list[AssetReadings], cfg: WindowConfig) -> tuple[list[Invalid], int]:
    state, dead, kept = None, [], 0
    for b in batches:
        state, out = window_readings(state, b, cfg)
        dead += out.late
        kept += 0 if out.closed is None else int(out.closed.values[:, :, 7].sum())
    state, held = drop_held(state, cfg)
    state, last = flush_windows(state, cfg)
    kept += 0 if last is None else int(last.values[:, :, 7].sum())
    return dead + list(held), kept


def test_one_reading_23_h_ahead_is_a_future_outlier_and_every_genuine_reading_is_kept() -> None:
    cfg = WindowConfig(length_ms=60_000, lateness_ms=30_000)
    before, after = _stream(T0, 100), _stream(T0 + 100 * 10_000, 500)
    dead, kept = _run(before + [_frame("p1", T0 + 23 * HOUR, ["t"], 99.0)] + after, cfg)
    assert [d.reason for d in dead] == ["future_outlier"] and "22.7 h ahead" in dead[0].detail
    assert kept == 600


def test_the_outlier_is_refused_whatever_the_batching() -> None:
    cfg = WindowConfig(length_ms=60_000)
    rows = _stream(T0, 50) + [_frame("p1", T0 + 23 * HOUR, ["t"])] + _stream(T0 + 50 * 10_000, 50)
    whole = AssetReadings("p1", np.concatenate([r.sensor for r in rows]), np.concatenate([r.ts for r in rows]),
                          np.concatenate([r.value for r in rows]))
    assert _run([whole], cfg) == _run(rows, cfg)


def test_a_frame_ahead_is_one_time_not_a_confirmation() -> None:
    cfg = WindowConfig(length_ms=60_000, future_confirm=3)
    dead, kept = _run(_stream(T0, 10) + [_frame("p1", T0 + 23 * HOUR, ["a", "b", "c", "d"])] + _stream(T0 + 10**5, 5),
                      cfg)
    assert [d.reason for d in dead] == ["future_outlier"] * 4 and kept == 15


def test_a_genuine_jump_after_downtime_is_accepted_once_confirmed() -> None:
    cfg = WindowConfig(length_ms=60_000, future_confirm=3)
    dead, kept = _run(_stream(T0, 60) + _stream(T0 + 72 * HOUR, 60), cfg)
    assert dead == [] and kept == 120


def test_hourly_readings_after_a_gap_are_accepted_once_confirmed() -> None:
    # readings as far apart as future_ms: three distinct times span two hours, more than the jump itself
    cfg = WindowConfig(length_ms=6 * HOUR, future_confirm=3)
    dead, kept = _run(_stream(T0, 30, HOUR) + _stream(T0 + 47 * HOUR, 30, HOUR), cfg)
    assert dead == [] and kept == 60


def test_held_readings_at_the_end_of_the_stream_are_future_outliers() -> None:
    cfg = WindowConfig(length_ms=60_000, future_confirm=3)
    dead, kept = _run(_stream(T0, 10) + _stream(T0 + 5 * HOUR, 2), cfg)
    assert [d.reason for d in dead] == ["future_outlier"] * 2 and kept == 10


def test_window_state_with_held_readings_pickles() -> None:
    cfg = WindowConfig(length_ms=60_000)
    state = None
    for b in _stream(T0, 5) + [_frame("p1", T0 + 9 * HOUR, ["t"])]:
        state, _ = window_readings(state, b, cfg)
    again = pickle.loads(pickle.dumps(state))
    assert again.held_ts.tolist() == [T0 + 9 * HOUR] and again.max_ts == T0 + 40_000


# -- assets in memory ------------------------------------------------------------------------------------------


def test_admission_bounds_assets_held_and_new_ones_per_minute() -> None:
    adm = AssetAdmission(max_assets=3, max_new_per_min=2)
    assert [adm.admit(a, 0) for a in ("a", "b", "c")] == [None, None, "new_asset_rate"]
    assert adm.admit("a", 1000) is None  # held: no new admission
    assert adm.admit("c", 60_001) is None and adm.admit("d", 60_002) == "too_many_assets"
    adm.forget("a")
    assert adm.admit("d", 60_003) is None and len(adm) == 3
    with pytest.raises(ValueError):
        AssetAdmission(0, None)


def test_refused_readings_are_each_a_dead_letter() -> None:
    out = refused(_frame("rogue", T0, ["a", "b"]), "too_many_assets", 7)
    assert [r.reason for r in out] == ["too_many_assets"] * 2 and "7 assets" in out[0].detail
    assert orjson.loads(out[1].raw)["sensor"] == "b"


def test_eviction_keeps_only_what_data_cannot_teach_again() -> None:
    assert after_eviction_validation(ValidationState(candidates=5, runs=3, typical_run=40.0)) is None
    learned = after_eviction_validation(ValidationState(candidates=5, open_offset=0.1))
    assert learned == ValidationState(open_offset=0.1)
    assert after_eviction_alarms(AlarmState()) is None
    assert after_eviction_alarms(None) is None
    open_alarm = AlarmState(open={"machine": object()})  # type: ignore[dict-item]
    assert after_eviction_alarms(open_alarm) is open_alarm


def test_readings_within_skew_pass_check_and_are_then_screened_by_time() -> None:
    # check_readings keeps a reading 23 h ahead of its asset (it is within the wall-clock skew);
    # the window step is what quarantines it
    batch = Parsed(Readings.of([("p1", "t", T0 + 23 * HOUR, 1.0)]))
    assert len(check_readings(batch, now_ms=T0, max_skew_ms=24 * HOUR).readings) == 1
    assert MIN_TS_MS < T0


def test_a_maintenance_record_with_a_nested_time_is_a_dead_letter() -> None:
    from smart_maintenance.sources.controls import parse_maintenance_message

    old = sys.getrecursionlimit()
    sys.setrecursionlimit(300)
    try:
        inv = parse_maintenance_message(b'{"asset_id":"p1","completed_at":%s}' % deep_json(1000), "k:0")
    finally:
        sys.setrecursionlimit(old)
    assert isinstance(inv, Invalid) and inv.reason == "bad_maintenance" and "a JSON list" in inv.detail
