"""parse_timestamp, parse_messages, check_readings, split_by_asset on plain values."""

from __future__ import annotations

import math

import numpy as np
import orjson
import pytest

from smart_maintenance.operators.ingest.parse import (
    MIN_TS_MS,
    RAW_LIMIT,
    check_readings,
    parse_indexed,
    parse_messages,
    parse_timestamp,
    split_by_asset,
)
from smart_maintenance.operators.records import Parsed, RawMessages, Readings

T0 = 1_700_000_000_000  # 2023-11-14T22:13:20Z


def msgs(*payloads: bytes | str, topics: tuple[str | None, ...] | None = None) -> RawMessages:
    enc = tuple(p.encode() if isinstance(p, str) else p for p in payloads)
    return RawMessages(enc, topics or (None,) * len(enc), tuple(f"test:{i}" for i in range(len(enc))))


def rows(p: Parsed) -> list[tuple[str, str, int, float]]:
    r = p.readings
    return list(zip(r.asset_id.tolist(), r.sensor.tolist(), r.ts.tolist(), r.value.tolist()))


@pytest.mark.parametrize(
    ("x", "ms"),
    [
        (T0, T0),
        (float(T0) + 0.4, T0),
        (np.int64(T0), T0),
        (str(T0), T0),
        (" 1700000000000 ", T0),
        ("1.7e12", T0),
        ("2023-11-14T22:13:20Z", T0),
        ("2023-11-14T22:13:20.123Z", T0 + 123),
        ("2023-11-14T22:13:20.123456789Z", T0 + 123),
        ("2023-11-14t22:13:20z", T0),
        ("2023-11-15T00:13:20+02:00", T0),
        ("2023-11-14T17:13:20-0500", T0),
        ("2023-11-14 22:13:20", T0),  # naive = UTC
        ("20231114T221320Z", T0),
        ("1969-12-31T23:59:59.999Z", -1),
    ],
)
def test_parse_timestamp_forms(x: object, ms: int) -> None:
    assert parse_timestamp(x) == ms


@pytest.mark.parametrize("x", [None, True, False, "", "soon", "2023-13-01T00:00:00Z", math.nan, math.inf, [T0], 2**70])
def test_parse_timestamp_rejects(x: object) -> None:
    assert parse_timestamp(x) is None


def test_readings_frames_and_lists() -> None:
    p = parse_messages(msgs(
        '{"asset_id":"p1","sensor":"temp","ts":1700000000000,"value":50.5,"unit":"degC","quality":"good"}',
        '{"asset_id":"p1","ts":"2023-11-14T22:13:21Z","values":{"vib":2,"pres":6.5}}',
        '[{"asset_id":"p2","sensor":"temp","ts":1700000000002,"value":-1},'
        ' {"asset_id":"p2","ts":1700000000003,"values":{"flow":120.0}}]',
    ))
    assert p.rejects == ()
    assert rows(p) == [
        ("p1", "temp", T0, 50.5),
        ("p1", "vib", T0 + 1000, 2.0),
        ("p1", "pres", T0 + 1000, 6.5),
        ("p2", "temp", T0 + 2, -1.0),
        ("p2", "flow", T0 + 3, 120.0),
    ]
    assert p.readings.ts.dtype == np.int64 and p.readings.value.dtype == np.float64
    assert list(p.readings.quality) == [192, -1, -1, -1, -1]  # kept; -1: not given
    assert list(p.readings.unit) == ["degC", None, None, None, None]


def test_bare_numbers_need_a_plant_topic_and_a_receive_time() -> None:
    topic = "plant/north/pump-01/temp"
    m = msgs("21.5", "NaN", "7", "8", topics=(topic, topic, "sensors/x", None))
    p = parse_messages(m, receive_ms=(T0, T0 + 1, T0 + 2, T0 + 3))
    assert rows(p)[0] == ("pump-01", "temp", T0, 21.5)
    assert math.isnan(rows(p)[1][3])  # check_readings reports it as non_finite
    assert [(r.reason, r.origin) for r in p.rejects] == [("bad_topic", "test:2"), ("bad_topic", "test:3")]
    no_time = parse_messages(msgs("21.5", topics=("plant/north/pump-01/temp",)))
    assert [r.reason for r in no_time.rejects] == ["missing_field"]
    assert "receive time" in no_time.rejects[0].detail
    # an object on a plant topic takes asset and sensor from the topic
    obj = parse_messages(msgs('{"ts":1700000000000,"value":3}', topics=("plant/s/m-7/rpm",)))
    assert rows(obj) == [("m-7", "rpm", T0, 3.0)]


@pytest.mark.parametrize(
    ("payload", "reason", "detail"),
    [
        ('{"asset_id":"p1","sensor":"t","ts":1', "bad_json", ""),
        (b"\xff\xfe", "bad_json", ""),
        ('{"asset_id":"p1","sensor":"t","ts":1700000000000}', "missing_field", "field 'value' missing"),
        ('{"sensor":"t","ts":1700000000000,"value":1}', "missing_field", "field 'asset_id' missing"),
        ('{"asset_id":"p1","sensor":"t","value":1}', "missing_field", "field 'ts' missing"),
        ('{"asset_id":"p1","sensor":"t","ts":1700000000000,"value":"1.5"}', "bad_value", "not a number"),
        ('{"asset_id":"p1","sensor":"t","ts":1700000000000,"value":true}', "bad_value", "not a number"),
        ('{"asset_id":"p1","sensor":"t","ts":1700000000000,"value":null}', "bad_value", "not a number"),
        ('{"asset_id":"p1","sensor":"t","ts":"noon","value":1}', "bad_timestamp", "'noon'"),
        ('{"asset_id":["p1"],"sensor":"t","ts":1,"value":1}', "bad_shape", "must be a string"),
        ('"hello"', "bad_shape", "neither a reading nor a frame"),
        ('{"temperature":21}', "bad_shape", "neither a reading"),
        ('{"asset_id":"p1","ts":1,"values":[1,2]}', "bad_shape", "values"),
        ("[1, 2]", "bad_shape", "item 0"),
        ("7", "bad_topic", "plant/<site>/<asset_id>/<sensor>"),
    ],
)
def test_each_reject_reason(payload: str | bytes, reason: str, detail: str) -> None:
    p = parse_messages(msgs(payload))
    assert len(p.readings) == 0
    assert [r.reason for r in p.rejects][:1] == [reason]
    assert detail in p.rejects[0].detail and p.rejects[0].origin == "test:0"
    assert p.rejects[0].raw  # the payload text, for the dead letters


def test_frame_keeps_good_values_and_rejects_bad_ones_once() -> None:
    p = parse_messages(msgs('{"asset_id":"p1","ts":1700000000000,"values":{"a":1,"b":"x","c":false,"d":2}}'))
    assert rows(p) == [("p1", "a", T0, 1.0), ("p1", "d", T0, 2.0)]
    [rej] = p.rejects
    assert rej.reason == "bad_value" and "'b'='x'" in rej.detail and "'c'=False" in rej.detail
    assert orjson.loads(rej.raw)["values"]["b"] == "x"


def test_raw_is_replacement_decoded_and_truncated() -> None:
    big = b'{"asset_id":"' + b"\xff" + b"a" * (2 * RAW_LIMIT) + b'"'  # invalid JSON, invalid UTF-8
    [rej] = parse_messages(msgs(big)).rejects
    assert rej.reason == "bad_json"
    assert rej.raw.startswith('{"asset_id":"\ufffdaaa') and len(rej.raw.encode()) <= RAW_LIMIT + 2


def test_parse_messages_checks_lengths() -> None:
    with pytest.raises(ValueError, match="same length"):
        parse_messages(RawMessages((b"1",), (None, None), ("a",)))
    with pytest.raises(ValueError, match="same length"):
        parse_messages(msgs("1", "2"), receive_ms=(1,))


NOW = T0 + 3_600_000


def test_check_readings_each_reason_in_order() -> None:
    r = Readings.of([
        ("p1", "t", T0, 1.0),
        ("", "t", T0, 2.0),
        ("p1", "", T0, 3.0),
        ("p1", "t", T0, math.nan),
        ("p1", "t", T0, -math.inf),
        ("p1", "t", MIN_TS_MS - 1, 4.0),
        ("p1", "t", NOW + 61_000, 5.0),
        ("zz", "t", T0, 6.0),
        ("p2", "t", NOW + 60_000, 7.0),
    ])
    prior = parse_messages(msgs("{")).rejects
    out = check_readings(Parsed(r, prior), now_ms=NOW, max_skew_ms=60_000, known_assets=frozenset({"p1", "p2", ""}))
    assert out.readings.value.tolist() == [1.0, 7.0]
    assert [x.reason for x in out.rejects] == [
        "bad_json", "missing_field", "missing_field", "non_finite", "non_finite",
        "absurd_timestamp", "absurd_timestamp", "unknown_asset",
    ]
    assert out.rejects[1].detail == "field 'asset_id' is empty" and out.rejects[2].detail == "field 'sensor' is empty"
    assert all(x.origin == "check" for x in out.rejects[1:])
    assert orjson.loads(out.rejects[3].raw) == {"asset_id": "p1", "sensor": "t", "ts": T0, "value": None}
    assert out.rejects[3].detail == "value is nan"
    # without a registry unknown assets pass
    open_ = check_readings(Parsed(r), now_ms=NOW, max_skew_ms=60_000, known_assets=None)
    assert open_.readings.value.tolist() == [1.0, 6.0, 7.0]


def test_check_readings_returns_the_same_batch_when_all_pass() -> None:
    p = Parsed(Readings.of([("p1", "t", T0, 1.0), ("p2", "v", T0 + 1, 2.0)]))
    assert check_readings(p, now_ms=NOW, max_skew_ms=0, known_assets=frozenset({"p1", "p2"})) is p
    empty = Parsed(Readings.empty())
    assert check_readings(empty, now_ms=NOW, max_skew_ms=0, known_assets=None) is empty


def test_split_by_asset_sorts_assets_and_keeps_arrival_order() -> None:
    r = Readings.of([("b", "t", 5, 1.0), ("a", "t", 9, 2.0), ("c", "v", 1, 3.0), ("a", "v", 3, 4.0),
                     ("b", "v", 4, 5.0)])
    parts = split_by_asset(r)
    assert [(p.asset_id, p.sensor.tolist(), p.ts.tolist(), p.value.tolist()) for p in parts] == [
        ("a", ["t", "v"], [9, 3], [2.0, 4.0]),
        ("b", ["t", "v"], [5, 4], [1.0, 5.0]),
        ("c", ["v"], [1], [3.0]),
    ]
    assert split_by_asset(Readings.empty()) == []
    one = Readings.of([("p1", "t", 2, 1.0), ("p1", "t", 1, 2.0)])
    [only] = split_by_asset(one)
    assert only.asset_id == "p1" and only.ts is one.ts  # one asset: no copy


def test_split_by_asset_matches_a_naive_grouping() -> None:
    rng = np.random.default_rng(3)
    names = np.array([f"a{i:03d}" for i in range(300)], dtype=object)
    r = Readings(names[rng.integers(0, 300, 5000)], np.full(5000, "s", dtype=object),
                 rng.integers(0, 10**6, 5000), rng.normal(size=5000))
    parts = split_by_asset(r)
    assert [p.asset_id for p in parts] == sorted(set(r.asset_id.tolist()))
    for p in parts:
        mask = r.asset_id == p.asset_id
        assert p.ts.tolist() == r.ts[mask].tolist() and p.value.tolist() == r.value[mask].tolist()


def test_on_a_plant_topic_a_payload_may_not_name_another_asset() -> None:
    topic = "plant/north/pump-01/temp"
    p = parse_messages(msgs('{"asset_id":"pump-01","ts":1700000000000,"value":3}',
                            '{"asset_id":"boiler-09","ts":1700000000000,"value":3}',
                            '{"asset_id":"boiler-09","ts":1700000000000,"values":{"temp":1}}',
                            '[{"ts":1700000000000,"value":4},{"asset_id":"boiler-09","ts":1700000000000,"value":5}]',
                            '{"asset_id":"boiler-09","sensor":"temp","ts":1700000000000,"value":3}',
                            topics=(topic, topic, topic, topic, "readings")))  # not a plant topic: payload names it
    assert list(zip(p.readings.asset_id, p.readings.value)) == [("pump-01", 3.0), ("pump-01", 4.0), ("boiler-09", 3.0)]
    assert [(r.reason, r.origin) for r in p.rejects] == [
        ("asset_mismatch", "test:1"), ("asset_mismatch", "test:2"), ("asset_mismatch", "test:3")]
    assert p.rejects[2].detail.startswith("item 1: payload asset_id 'boiler-09' disagrees")


def test_frames_in_bulk_keep_rows_quality_and_reject_non_numbers() -> None:
    """The whole-frame path: message index per reading, a frame's quality on each value, bools are not numbers."""
    p = msgs('{"asset_id":"p1","sensor":"s","ts":1700000000000,"value":1}',
             '[{"asset_id":"p1","ts":1700000000000,"values":{"a":1,"b":2.5}},'
             ' {"asset_id":"p2","ts":1700000000001,"values":{"a":3},"quality":"good"}]',
             '{"asset_id":"p3","ts":1700000000000,"values":{"a":true,"b":4}}',
             '{"asset_id":"p4","ts":1700000000000,"values":{"a":18446744073709551615,"b":-1}}')
    readings, row, rejects = parse_indexed(p)
    assert list(zip(readings.asset_id, readings.sensor, readings.ts.tolist(), readings.value.tolist())) == [
        ("p1", "s", T0, 1.0), ("p1", "a", T0, 1.0), ("p1", "b", T0, 2.5), ("p2", "a", T0 + 1, 3.0),
        ("p3", "b", T0, 4.0), ("p4", "a", T0, 2.0**64), ("p4", "b", T0, -1.0)]
    assert row.tolist() == [0, 1, 1, 1, 2, 3, 3]
    assert readings.value.dtype == np.float64 and readings.ts.dtype == np.int64
    assert readings.quality is not None and readings.quality.tolist() == [-1, -1, -1, 192, -1, -1, -1]
    assert [(i, r.reason) for i, r in rejects] == [(2, "bad_value")] and "'a'=True" in rejects[0][1].detail


@pytest.mark.parametrize("missing", [None, float("nan")])
@pytest.mark.parametrize("copies", [1, 300])  # a small batch and one past the dict path (pandas' codes)
def test_a_null_name_is_rejected_not_given_another_names_verdict(missing, copies):
    """A null cell of a columnar file codes as -1, which once indexed the last name's verdict and passed."""
    for row in ((missing, "t", MIN_TS_MS, 1.0), ("p1", missing, MIN_TS_MS, 1.0)):
        p = Parsed(Readings.of([row, ("p1", "t", MIN_TS_MS, 1.0)] * copies), ())
        for strict in (False, True):
            out = check_readings(p, now_ms=MIN_TS_MS, max_skew_ms=0,
                                 known_assets=frozenset({"p1"}) if strict else None,
                                 known_sensors={"p1": frozenset({"t"})} if strict else None)
            assert list(out.readings.asset_id) == ["p1"] * copies
            assert list(out.readings.sensor) == ["t"] * copies
            assert {r.reason for r in out.rejects} == {"missing_field"} and len(out.rejects) == copies


PLAIN_READING_CASES = [
    '{"asset_id":"p1","sensor":"t","ts":"2023-11-14T22:13:20Z","value":1.5}',
    '{"asset_id":"p1","sensor":"v","ts":"2023-11-14T22:13:20Z","value":2}',  # the same time text again
    '{"asset_id":"p1","sensor":"t","ts":"2023-11-14T23:13:20.5+01:00","value":3}',  # the same time, other text
    f'{{"asset_id":"p2","sensor":"t","ts":{T0},"value":4.0}}',
    f'{{"asset_id":"p2","sensor":"t","ts":"{T0}","value":5.0}}',
    '{"asset_id":"p3","sensor":"t","ts":"yesterday","value":6.0}',  # bad_timestamp, twice (a cached failure)
    '{"asset_id":"p3","sensor":"u","ts":"yesterday","value":6.5}',
    '{"asset_id":"p3","sensor":"t","ts":null,"value":6.0}',
    '{"asset_id":7,"sensor":"t","ts":"2023-11-14T22:13:20Z","value":7.0}',  # a numeric asset id becomes text
    '{"asset_id":"p4","sensor":5,"ts":"2023-11-14T22:13:20Z","value":8.0}',
    '{"asset_id":"p4","sensor":"t","ts":"2023-11-14T22:13:20Z","value":true}',
    '{"asset_id":"p4","sensor":"t","ts":"2023-11-14T22:13:20Z","value":"9"}',
    '{"asset_id":"p4","sensor":"t","ts":"2023-11-14T22:13:20Z","value":null}',
    '{"asset_id":"p5","sensor":"t","ts":"2023-11-14T22:13:20Z","value":1,"unit":"degC"}',
    '{"asset_id":"p5","sensor":"t","ts":"2023-11-14T22:13:20Z","value":1,"quality":"bad"}',
    '{"asset_id":"p5","sensor":"t","ts":"2023-11-14T22:13:20Z"}',
    '{"sensor":"t","ts":"2023-11-14T22:13:20Z","value":1,"site":"x"}',
    '[{"asset_id":"p6","sensor":"t","ts":"2023-11-14T22:13:20Z","value":1},'
    ' {"asset_id":"p6","sensor":"t","ts":"2023-11-14T22:13:21Z","value":"x"},'
    f' {{"asset_id":"p6","ts":{T0},"values":{{"a":1,"b":2}}}}]',
]


def test_plain_readings_parse_as_the_general_path_does(monkeypatch: pytest.MonkeyPatch) -> None:
    import smart_maintenance.operators.ingest.parse as parse_mod

    batch = msgs(*PLAIN_READING_CASES, '{"asset_id":"other","sensor":"t","ts":"2023-11-14T22:13:20Z","value":1}',
                 '{"asset_id":"p7","sensor":"t","ts":"2023-11-14T22:13:20Z","value":2}',
                 topics=(None,) * len(PLAIN_READING_CASES) + ("plant/s1/p7/t", "plant/s1/p7/t"))
    fast = parse_indexed(batch)
    monkeypatch.setattr(parse_mod, "_plain_run", lambda out, msgs, i, *a: i)  # no run taken in one loop
    monkeypatch.setattr(parse_mod, "_plain_reading", lambda *a: False)  # every reading through `_object`
    monkeypatch.setattr(parse_mod, "_cached_ts", lambda v, texts: parse_timestamp(v))  # and no time text cache
    general = parse_indexed(batch)
    assert rows(Parsed(fast[0], ())) == rows(Parsed(general[0], ()))
    assert fast[1].tolist() == general[1].tolist()
    assert [(i, r.reason, r.detail) for i, r in fast[2]] == [(i, r.reason, r.detail) for i, r in general[2]]
    assert (len(fast[0]), len(fast[2])) == (12, 11)  # the cases above are what they say


def _general(monkeypatch: pytest.MonkeyPatch, batch: RawMessages) -> tuple:
    import smart_maintenance.operators.ingest.parse as parse_mod

    with monkeypatch.context() as m:
        m.setattr(parse_mod, "_plain_run", lambda out, msgs, i, *a: i)  # every message through `_one`
        return parse_indexed(batch, max_bytes=120)


def _outcome(parsed: tuple) -> tuple:
    readings, rows_of, rejects = parsed
    return (rows(Parsed(readings, ())), rows_of.tolist(),
            [(i, r.reason, r.detail, r.raw, r.origin) for i, r in rejects])


def test_runs_of_plain_readings_parse_as_message_by_message(monkeypatch: pytest.MonkeyPatch) -> None:
    """`_plain_run` takes runs of plain readings in one loop; where a run stops (first message, last message,
    two odd ones in a row, odd topics, a text payload, one over the size limit) `_one` takes over, and the
    readings, the message each came from and the rejects are those of the message-by-message path."""
    plain = '{"asset_id":"p%d","sensor":"t","ts":"2023-11-14T22:13:2%dZ","value":%d}'
    at = '"ts":"2023-11-14T22:13:20Z"'
    odd = [
        '{"asset_id":"p1","sensor":"t","ts":"yesterday","value":1}',
        "{",
        '{"asset_id":"p9","ts":' + str(T0) + ',"values":{"a":1}}',
        '{"asset_id":"p1","sensor":"t",' + at + ',"value":1,"x":' + "1" * 90 + "}",
        '{"asset_id":"p1","sensor":"' + "s" * 100 + '",' + at + ',"value":1}',  # plain, but over max_bytes
        "[]",
        "3.5",
        '{"asset_id":"p1","sensor":"t",' + at + ',"value":true}',
    ]
    rng = np.random.default_rng(3)
    for trial in range(60):
        n = int(rng.integers(1, 12))
        payloads: list[bytes | str] = []
        topics: list[object] = []
        for k in range(n):
            p = plain % (k % 3, k % 4, k) if rng.random() < 0.6 else odd[int(rng.integers(len(odd)))]
            payloads.append(p if rng.random() < 0.2 else p.encode())  # some as text (MQTT gives bytes, tests str)
            topics.append([None, "p1", "plant/s1/p1/t", "plant/s1/p2/t", b"plant/s1/p1/t"][int(rng.integers(5))])
        batch = RawMessages(tuple(payloads), tuple(topics),  # type: ignore[arg-type]  # bytes: a bug upstream
                            tuple(f"test:{trial}/{k}" for k in range(n)))
        fast = parse_indexed(batch, max_bytes=120)
        assert _outcome(fast) == _outcome(_general(monkeypatch, batch)), trial
