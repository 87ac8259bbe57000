"""Property tests of the message parser: any bytes on any topic, and the checks after it.

The strategies and `audit_messages` are shared with `bench/fuzz.py`, which runs
the same properties at volume. An audit returns a list of problems (empty when
the contract holds) instead of asserting, so the bench can count them:

- every payload ends as >= 1 reading or >= 1 reject (a JSON list: every item does);
- every reject has a documented reason, a detail, the message's origin, and as
  raw the payload text (or, for a list item, that item's JSON) cut to RAW_LIMIT;
- a JSON list parses as the concatenation of its object items parsed alone;
- a reading accepted from an object echoes that object's fields;
- `check_readings` partitions the readings exactly, keeps their order, and what
  it keeps is finite, named and timed within [1990, now + max skew].
"""

from __future__ import annotations

import math
import re
from datetime import datetime, timedelta, timezone

import numpy as np
import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from smart_maintenance.operators.ingest.guard import name_problem
from smart_maintenance.operators.ingest.parse import (
    MIN_TS_MS,
    check_readings,
    parse_indexed,
    parse_messages,
    parse_timestamp,
    raw_text,
    split_by_asset,
)
from smart_maintenance.operators.records import Parsed, RawMessages, Readings, iso

NOW = 1_767_225_600_000  # 2026-01-01T00:00:00Z: `now` is passed in, never read
SKEW = 86_400_000
PARSE_REASONS = frozenset({"bad_json", "bad_shape", "missing_field", "bad_value", "bad_timestamp", "bad_topic",
                           "too_large", "unparseable", "asset_mismatch", "bad_quality"})
CHECK_REASONS = frozenset({"missing_field", "bad_name", "non_finite", "absurd_timestamp", "unknown_asset",
                           "unknown_sensor"})
PRINTABLE = st.characters(codec="utf-8", exclude_characters="/",
                          exclude_categories=("Cc", "Cf", "Cs", "Co", "Cn", "Zl", "Zp", "Zs"))
FUZZ = settings(max_examples=150, derandomize=True, database=None, deadline=None,
                suppress_health_check=list(HealthCheck))

# -- strategies -------------------------------------------------------------------------------------------

names = st.one_of(st.sampled_from(["pump-01", "p1", "temp", "vibration", "", " ", "a/b", "ü-7"]), st.text(max_size=12))
good_names = st.one_of(st.sampled_from(["pump-01", "comp-7", "temp", "vibration"]),
                       st.text(PRINTABLE, min_size=1, max_size=10))
any_json = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**63), 2**64 - 1) | st.floats(allow_nan=False) | st.text(max_size=8),
    lambda c: st.lists(c, max_size=3) | st.dictionaries(st.text(max_size=4), c, max_size=3),
    max_leaves=8,
)
LITERALS = ("NaN", "Infinity", "-Infinity", "1e999", "-1e999", "01", ".5", "1.", "+1", "0x10", "1_0", "nan", "-0")
big_ints = st.integers(-10**30, 10**30).map(lambda n: f"\x00LIT:{n}\x00")  # orjson writes 64 bits at most
literal = st.sampled_from(LITERALS).map(lambda s: f"\x00LIT:{s}\x00")  # spliced into the JSON text unquoted
good_ts = st.integers(MIN_TS_MS, NOW).flatmap(lambda ms: st.sampled_from([ms, iso(ms), str(ms), float(ms)]))
ts_values = st.one_of(
    good_ts, st.integers(-2**63, 2**63 - 1), big_ints, st.floats(), literal,
    st.from_regex(r"-?[0-9]{1,25}(\.[0-9]{0,6})?([eE][+-]?[0-9]{1,3})?", fullmatch=True),
    st.sampled_from(["", "now", "2023-13-01T00:00:00Z", "0001-01-01T00:00:00+01:00", "9999-12-31T23:59:59-23:59",
                     "2023-11-14t22:13:20z", "20231114T221320Z", "2023-W46", " 1700000000000 ", "-", "\x00LONG"]),
    st.text(max_size=30), any_json,
)
good_numbers = st.floats(allow_nan=False, allow_infinity=False) | st.integers(-10**6, 10**6)
numbers = st.one_of(good_numbers, st.integers(-2**63, 2**64 - 1), big_ints, literal, any_json)
BAD = {"asset_id": names | st.integers(-10**6, 10**6) | any_json, "sensor": names | any_json, "ts": ts_values,
       "value": numbers, "values": st.dictionaries(names, numbers, max_size=5) | any_json}
field_values = st.one_of(*BAD.values())
"""Any value of any field: the pool the bench splices into valid messages."""


@st.composite
def objects(draw: st.DrawFn) -> dict:
    """A valid reading or frame with 0-3 fields dropped, mistyped, duplicated or added."""
    obj: dict = {"asset_id": draw(good_names), "ts": draw(good_ts)}
    if draw(st.booleans()):
        obj["values"] = draw(st.dictionaries(good_names, good_numbers, min_size=1, max_size=5))
    else:
        obj["sensor"], obj["value"] = draw(good_names), draw(good_numbers)
    for _ in range(draw(st.integers(0, 3))):
        key = draw(st.sampled_from(["asset_id", "sensor", "ts", "value", "values", "unit", "quality"]))
        how = draw(st.sampled_from(["drop", "bad", "bad", "dup"]))
        if how == "drop":
            obj.pop(key, None)
        else:  # "dup": a second "key": ... in the text, after the first
            obj[f"\x00DUP{key}" if how == "dup" else key] = draw(BAD.get(key, any_json))
    return obj


documents = st.one_of(objects(), objects(), st.lists(st.one_of(objects(), any_json), max_size=6), any_json)


def to_bytes(doc: object) -> bytes:
    """JSON text of `doc` with the markers replaced: bare literals, duplicate keys, long strings."""
    text = orjson.dumps(doc)
    text = re.sub(rb'"\\u0000LIT:([^"\\]*)\\u0000"', rb"\1", text)
    text = re.sub(rb'"\\u0000DUP', b'"', text)
    return text.replace(b"\\u0000LONG", b"x" * 70_000)


BARE = (b"21.5", b"-7", b"NaN", b" inf ", b"-Infinity", b"1e999", b"0x1F", b"1_000", b"", b"  ", b"true", b'"12.5"',
        b"12,5", b"\xff", b"[]", b"{}", b"null")
MUTATIONS = ("truncate", "flip", "utf8", "bom", "nest", "deep", "long", "pad", "splice")


def mutate(data: bytes, how: str, at: int, byte: int, other: bytes = b"") -> bytes:
    """One byte-level mutation of a payload; `at` is a position, `byte` a byte value."""
    at = at % (len(data) + 1)
    if how == "truncate":
        return data[:at]
    if how == "flip":
        return data[:at] + bytes([byte]) + data[at + 1:]
    if how == "utf8":
        return data[:at] + (b"\xff", b"\xc3", b"\xed\xa0\x80", b"\x00", b"\xef\xbb\xbf")[byte % 5] + data[at:]
    if how in ("nest", "deep"):
        k = (1, 2, 255, 1023)[byte % 4] if how == "nest" else 1100
        return b"[" * k + data + b"]" * k
    if how == "long":
        return data.replace(b'"', b'"' + b"x" * 70_000, 1)
    if how == "splice":
        return data[:at] + other[at % (len(other) + 1):]
    return {"bom": b"\xef\xbb\xbf" + data, "pad": b" \n\t" + data + b"\r\n"}.get(how, data)


@st.composite
def payloads(draw: st.DrawFn) -> bytes:
    kind = draw(st.sampled_from(["doc"] * 6 + ["bare", "binary"]))
    if kind == "bare":
        return draw(st.sampled_from(BARE))
    if kind == "binary":
        return draw(st.binary(max_size=64))
    data = to_bytes(draw(documents))
    how = draw(st.sampled_from(("none",) * 9 + MUTATIONS))
    return mutate(data, how, draw(st.integers(0, 2**16)), draw(st.integers(0, 255)), BARE[0])


topics = st.one_of(st.none(), st.builds("plant/{}/{}/{}".format, names, names, names),
                   st.sampled_from(["plant/north/pump-01/temp", "plant/a/b", "plant/a/b/c/d", "plant//p/t", "x/y/z/w"]),
                   st.text(max_size=20))


@st.composite
def batches(draw: st.DrawFn, max_size: int = 12) -> tuple[RawMessages, tuple[int, ...] | None]:
    p = draw(st.lists(payloads(), min_size=1, max_size=max_size))
    t = draw(st.lists(topics, min_size=len(p), max_size=len(p)))
    receive = draw(st.none() | st.lists(st.integers(-2**62, 2**62), min_size=len(p), max_size=len(p)).map(tuple))
    return RawMessages(tuple(p), tuple(t), tuple(f"fuzz:{i}" for i in range(len(p)))), receive


# -- the audit ----------------------------------------------------------------------------------------------


def _dumps(x: object) -> bytes:
    try:
        return orjson.dumps(x)
    except orjson.JSONEncodeError:  # nested deeper than orjson writes (255)
        return b""


def rows(r: Readings) -> list[tuple]:
    return list(zip(r.asset_id.tolist(), r.sensor.tolist(), r.ts.tolist(),
                    [("nan" if math.isnan(v) else v) for v in r.value.tolist()]))


def audit_messages(msgs: RawMessages, receive: tuple[int, ...] | None = None) -> tuple[Parsed, list[str]]:
    """Parse and check a batch; the checked result and every way it breaks the contract."""
    try:
        readings, row, rejects = parse_indexed(msgs, receive)
    except Exception as e:  # noqa: BLE001 - a crash is a finding, counted by the caller
        return Parsed(Readings.empty()), [f"#* crash:{type(e).__name__}: {e}"[:200]]
    problems: list[str] = []  # "#<payload> kind: detail"; "#*" for the whole batch
    got = {i for i, _ in rejects} | set(row.tolist())
    for i, payload in enumerate(msgs.payloads):
        docs, found = _doc(payload), []
        if i not in got:
            kind = "silent_empty_list" if docs == [] else "silent"
            found.append(f"{kind}: payload left no reading and no reject: {raw_text(payload)[:60]!r}")
        raws = {raw_text(payload)} | {raw_text(_dumps(x)) for x in (docs if type(docs) is list else [])}
        for j, inv in rejects:
            if j == i and (inv.reason not in PARSE_REASONS or not inv.detail or inv.origin != msgs.origins[i]
                           or inv.raw not in raws):
                found.append(f"bad_reject: {inv.reason!r} {inv.detail[:60]!r} raw={inv.raw[:40]!r}")
        mine = readings.take(row == i)
        if type(docs) is dict:
            found += _echo(docs, _topic_names(msgs.topics[i]), mine)
        elif type(docs) is list:
            found += _as_items(docs, msgs.topics[i], receive[i] if receive else None, mine, rejects, i)
        problems += [f"#{i} {p}" for p in found]  # which payload: the bench counts payloads
    return _audit_check(Parsed(readings, tuple(inv for _, inv in rejects)), problems)


def _doc(payload: bytes) -> object:
    try:
        return orjson.loads(payload)
    except orjson.JSONDecodeError:
        return None


def _topic_names(topic: str | None) -> tuple[str, str] | None:
    m = re.match(r"^plant/([^/]+)/([^/]+)/([^/]+)$", topic or "")
    return (m.group(2), m.group(3)) if m else None


def _echo(obj: dict, topic: tuple[str, str] | None, got: Readings) -> list[str]:
    """Readings accepted from an object carry its own asset, sensor, time and value."""
    if not len(got):
        return []
    asset = obj.get("asset_id", topic[0] if topic else None)
    if "values" in obj:
        want = obj["values"] if type(obj["values"]) is dict else {}
    else:
        sensor = obj.get("sensor", topic[1] if topic else None)
        want = {str(sensor): obj.get("value")} if type(sensor) in (str, int) else {}  # numeric names become text
    ts = parse_timestamp(obj.get("ts"))
    for a, s, t, v in rows(got):
        w = want.get(s) if type(s) is str else None
        if a != str(asset) or t != ts or type(w) not in (int, float) or float(w) != v:
            return [f"not_echoed: reading {(a, s, t, v)!r:.80} from {obj!s:.80}"]
    return []


def _as_items(doc: list, topic: str | None, receive: int | None, got: Readings, rejects: list, i: int) -> list[str]:
    """A list parses like its object items one by one; any other item, or no item at all, is a bad_shape reject."""
    if not doc:
        mine = [inv.reason for j, inv in rejects if j == i]
        return [] if mine == ["bad_shape"] and len(got) == 0 else [f"empty_list: {len(got)} readings {mine}"]
    alone = [(parse_messages(RawMessages((_dumps(x),), (topic,), ("item",)), (receive or 0,))
              if type(x) is dict else None) for x in doc]
    want = [r for p in alone if p for r in rows(p.readings)]
    reasons = sorted([inv.reason for p in alone if p for inv in p.rejects] + ["bad_shape"] * alone.count(None))
    mine = sorted(inv.reason for j, inv in rejects if j == i)
    if rows(got) != want or mine != reasons:
        return [f"list_not_items: {len(got)} readings {mine} vs items alone {len(want)} {reasons}"]
    return []


def _audit_check(parsed: Parsed, problems: list[str]) -> tuple[Parsed, list[str]]:
    r = parsed.readings
    out = check_readings(parsed, now_ms=NOW, max_skew_ms=SKEW)
    new = out.rejects[len(parsed.rejects):]
    if len(out.readings) + len(new) != len(r):
        problems.append(f"#* check_count: {len(r)} in, {len(out.readings)} kept + {len(new)} rejected")
    ok = np.array([bool(a) and bool(s) and type(a) is str and type(s) is str
                   and name_problem(a) is None and name_problem(s) is None for a, s in zip(r.asset_id, r.sensor)],
                  dtype=bool) & np.isfinite(r.value) & (r.ts >= MIN_TS_MS) & (r.ts <= NOW + SKEW)
    if rows(out.readings) != rows(r.take(ok)):
        problems.append("#* check_order: kept readings are not the passing ones in order")
    if any(inv.reason not in CHECK_REASONS or not inv.detail or not inv.raw for inv in new):
        problems.append("#* bad_reject: check reject without a documented reason, detail or raw")
    if out.readings.ts.dtype != np.int64 or out.readings.value.dtype != np.float64:
        problems.append("#* dtype: readings columns are not int64 / float64")
    return out, problems


# -- properties ---------------------------------------------------------------------------------------------


@FUZZ
@given(batches())
def test_any_payload_on_any_topic_ends_as_readings_or_rejects(batch: tuple) -> None:
    msgs, receive = batch
    _, problems = audit_messages(msgs, receive)
    assert problems == []


@st.composite
def clean_messages(draw: st.DrawFn) -> tuple[bytes, str | None, list[tuple]]:
    """A valid reading, frame or list, and the rows it must give."""
    name = st.text(PRINTABLE, min_size=1, max_size=8)
    asset, ms, on_topic = draw(name), draw(st.integers(MIN_TS_MS, NOW)), draw(st.booleans())
    stamp = draw(st.sampled_from([ms, iso(ms), str(ms), float(ms)]))
    values = draw(
        st.dictionaries(name, st.floats(allow_nan=False, allow_infinity=False, width=64), min_size=1, max_size=4)
    )
    sensor = next(iter(values))
    if on_topic:
        doc: object = {"ts": stamp, "value": values[sensor]}
    elif draw(st.booleans()):
        doc = [{"asset_id": asset, "sensor": s, "ts": stamp, "value": v} for s, v in values.items()]
    else:
        doc = {"asset_id": asset, "ts": stamp, "values": values}
    want = [(asset, sensor, ms, values[sensor])] if on_topic else [(asset, s, ms, v) for s, v in values.items()]
    return orjson.dumps(doc), (f"plant/site/{asset}/{sensor}" if on_topic else None), want


@FUZZ
@given(st.lists(clean_messages(), min_size=1, max_size=8))
def test_valid_messages_parse_exactly_and_pass_the_checks(items: list) -> None:
    msgs = RawMessages(tuple(p for p, _, _ in items), tuple(t for _, t, _ in items), ("ok",) * len(items))
    out, problems = audit_messages(msgs)
    assert problems == [] and out.rejects == ()
    assert rows(out.readings) == [r for _, _, want in items for r in want]


@FUZZ
@given(st.one_of(ts_values, st.text(), st.binary().map(lambda b: b.decode("latin-1")), st.floats()))
def test_parse_timestamp_never_raises(x: object) -> None:
    ms = parse_timestamp(x)
    assert ms is None or (type(ms) is int and -2**63 < ms < 2**63)


@FUZZ
@given(st.integers(MIN_TS_MS, 4_102_444_800_000), st.integers(-23 * 60, 23 * 60), st.integers(0, 999_999))
def test_parse_timestamp_round_trips_rfc3339(ms: int, offset_min: int, us: int) -> None:
    assert parse_timestamp(iso(ms)) == ms
    dt = datetime.fromtimestamp(ms // 1000, timezone(timedelta(minutes=offset_min))) + timedelta(microseconds=us)
    assert parse_timestamp(dt.isoformat()) == ms // 1000 * 1000 + us // 1000


readings_rows = st.lists(st.tuples(names, names, st.integers(-2**62, 2**62) | st.integers(MIN_TS_MS, NOW),
                                   st.floats() | st.floats(-1e9, 1e9)), max_size=40)


@FUZZ
@given(readings_rows, st.none() | st.frozensets(names, max_size=4))
def test_check_readings_partitions_in_order(raw_rows: list, known: frozenset | None) -> None:
    r = Readings.of(raw_rows)
    out = check_readings(Parsed(r), now_ms=NOW, max_skew_ms=SKEW, known_assets=known)
    ok = (np.array([bool(a) and bool(s) and name_problem(a) is None and name_problem(s) is None
                    and (known is None or a in known) for a, s, _, _ in raw_rows], dtype=bool)
          & np.isfinite(r.value) & (r.ts >= MIN_TS_MS) & (r.ts <= NOW + SKEW)) if raw_rows else np.zeros(0, bool)
    assert rows(out.readings) == rows(r.take(ok))
    assert len(out.rejects) == int((~ok).sum()) and {x.reason for x in out.rejects} <= CHECK_REASONS
    assert all(x.origin == "check" and x.detail and orjson.loads(x.raw)["ts"] >= -2**63 for x in out.rejects)


@FUZZ
@given(readings_rows)
def test_split_by_asset_is_a_permutation_grouping(raw_rows: list) -> None:
    r = Readings.of(raw_rows)
    parts = split_by_asset(r)
    assert [p.asset_id for p in parts] == sorted(set(r.asset_id.tolist()))
    got = [
        x for p in parts for x in rows(Readings(np.array([p.asset_id] * len(p), dtype=object), p.sensor, p.ts, p.value))
    ]
    assert got == sorted(rows(r), key=lambda x: x[0])  # a stable sort: arrival order within an asset


# -- bugs the fuzzing found, fixed: kept as regression tests ---------------------------------------------------


@pytest.mark.parametrize("text", ["²", "-²", "9" * 5000])
def test_digit_text_that_int_refuses_is_not_a_time(text: str) -> None:
    assert parse_timestamp(text) is None
    p = parse_messages(RawMessages((orjson.dumps({"asset_id": "p", "sensor": "t", "ts": text, "value": 1}),),
                                   (None,), ("o",)))
    assert [x.reason for x in p.rejects] == ["bad_timestamp"]


def test_a_deeply_nested_list_item_is_a_reject() -> None:
    deep = b"[" + b"[" * 300 + b"]" * 300 + b', {"asset_id": "p", "sensor": "t", "ts": 1700000000000, "value": 1}]'
    p = parse_messages(RawMessages((deep,), (None,), ("o",)))
    assert len(p.readings) == 1 and [x.reason for x in p.rejects] == ["bad_shape"]


def test_an_empty_list_leaves_a_trace() -> None:
    p = parse_messages(RawMessages((b"[]", b" [ ] "), (None, "plant/s/p1/t"), ("o:0", "o:1")))
    assert [(x.reason, x.raw, x.origin) for x in p.rejects] == [
        ("bad_shape", "[]", "o:0"),
        ("bad_shape", " [ ] ", "o:1"),
    ]
