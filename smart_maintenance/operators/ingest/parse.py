"""Turn raw payloads into columnar `Readings`, and bad input into `Invalid` values.

Wire format (see DESIGN.md): a JSON reading
``{"asset_id", "sensor", "ts", "value", "unit"?, "quality"?}``, a JSON frame
``{"asset_id", "ts", "values": {sensor: value}}`` (one reading per sensor), a
JSON list of those, or - on an MQTT topic ``plant/<site>/<asset_id>/<sensor>`` -
a bare number stamped with the time it was received. On such a topic a JSON
object may also leave out `asset_id` and `sensor`: the topic supplies them.
`unit` and `quality` are accepted and not kept (the registry owns units).

Parsing is per message (JSON is), but the result is one columnar batch and the
checks after it (`check_readings`, `split_by_asset`) are vectorised: they run on
every reading, so they must cost nanoseconds per reading, not microseconds.
"""

from __future__ import annotations

import math
import re
from datetime import datetime, timezone
from typing import Any

import numpy as np
import orjson
import pandas as pd

from smart_maintenance.operators.records import AssetReadings, Invalid, Parsed, RawMessages, Readings

RAW_LIMIT = 64 * 1024
"""Dead letters keep at most this many bytes of a payload."""

MIN_TS_MS = 631_152_000_000
"""1990-01-01T00:00:00Z: no plant historian we replay is older; earlier is a unit mistake."""

_EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)
_INT64_MAX = 2**63 - 1
_TOPIC = re.compile(r"^plant/([^/]+)/([^/]+)/([^/]+)$")


def parse_timestamp(x: Any) -> int | None:
    """Epoch milliseconds (number or numeric text) or RFC 3339 / ISO 8601 text to epoch ms.

    Text without an offset is UTC. Returns None when `x` is not a time.

    >>> parse_timestamp(1700000000000), parse_timestamp("1700000000000")
    (1700000000000, 1700000000000)
    >>> parse_timestamp("2023-11-14T22:13:20Z"), parse_timestamp("2023-11-14T23:13:20.5+01:00")
    (1700000000000, 1700000000500)
    >>> parse_timestamp("yesterday") is None, parse_timestamp(True) is None
    (True, True)
    """
    t = type(x)
    if t is str:
        return _text_ms(x)
    if t is int:
        return x if -_INT64_MAX <= x <= _INT64_MAX else None
    if t is float:
        return _float_ms(x)
    if isinstance(x, (bool, np.bool_)):
        return None
    if isinstance(x, (int, np.integer)):
        return parse_timestamp(int(x))
    if isinstance(x, (float, np.floating)):
        return _float_ms(float(x))
    return None


def _float_ms(x: float) -> int | None:
    if not math.isfinite(x) or abs(x) > 9.2e18:
        return None
    return int(round(x))


def _text_ms(s: str) -> int | None:
    s = s.strip()
    if not s:
        return None
    c = s[0]
    if c.isdigit() or c == "-":
        digits = s[1:] if c == "-" else s
        if digits.isdigit():  # also true for '²' and 5,000-digit strings, which int() refuses
            return parse_timestamp(int(s)) if s.isascii() and len(digits) <= 20 else None
        if len(s) < 10 or s[4] != "-":  # "2023-..." is a date; anything else numeric is ms
            try:
                return _float_ms(float(s))
            except ValueError:
                pass  # maybe ISO 8601 basic format: 20231114T221320Z
    try:
        dt = datetime.fromisoformat(s)
    except ValueError:
        try:  # RFC 3339 allows lower-case 't' and 'z'
            dt = datetime.fromisoformat(s.upper())
        except ValueError:
            return None
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=timezone.utc)
    d = dt - _EPOCH
    return d.days * 86_400_000 + d.seconds * 1000 + d.microseconds // 1000


def raw_text(payload: bytes | str) -> str:
    """A payload as dead-letter text: UTF-8 with replacement, at most `RAW_LIMIT` bytes."""
    if isinstance(payload, str):
        payload = payload.encode("utf-8", "replace")
    return payload[:RAW_LIMIT].decode("utf-8", "replace")


class _Out:
    """Column builders for one parse call; `row` records which message each reading came from."""

    __slots__ = ("asset", "sensor", "ts", "value", "row", "rejects")

    def __init__(self) -> None:
        self.asset: list[str] = []
        self.sensor: list[str] = []
        self.ts: list[int] = []
        self.value: list[float] = []
        self.row: list[int] = []
        self.rejects: list[tuple[int, Invalid]] = []

    def add(self, i: int, asset: str, sensor: str, ts: int, value: float) -> None:
        self.asset.append(asset)
        self.sensor.append(sensor)
        self.ts.append(ts)
        self.value.append(value)
        self.row.append(i)

    def readings(self) -> Readings:
        if not self.ts:
            return Readings.empty()
        return Readings(
            np.array(self.asset, dtype=object),
            np.array(self.sensor, dtype=object),
            np.array(self.ts, dtype=np.int64),
            np.array(self.value, dtype=np.float64),
        )


class _Reject(Exception):
    """Internal control flow: one message (or list item) is bad."""

    def __init__(self, reason: str, detail: str) -> None:
        self.reason, self.detail = reason, detail


def _is_number(v: Any) -> bool:
    t = type(v)
    return t is float or t is int


def _name(obj: dict, key: str, default: str | None) -> str:
    v = obj.get(key, default)
    if v is None:
        raise _Reject("missing_field", f"field {key!r} missing")
    if type(v) is int:
        return str(v)  # numeric asset ids are common in historians
    if type(v) is not str:
        raise _Reject("bad_shape", f"field {key!r} must be a string, got {type(v).__name__}")
    return v


def _asset(obj: dict, topic_asset: str | None) -> str:
    """The reading's asset; on a topic `plant/<site>/<asset_id>/...` the payload may not name another one.

    Broker ACLs confine a device to its topics: a payload that names another asset would escape them.
    """
    asset = _name(obj, "asset_id", topic_asset)
    if topic_asset is not None and asset != topic_asset:
        raise _Reject("asset_mismatch", f"payload asset_id {asset[:64]!r} disagrees with its topic's {topic_asset[:64]!r}")
    return asset


def _ts(obj: dict) -> int:
    v = obj.get("ts")
    if v is None:
        raise _Reject("missing_field", "field 'ts' missing")
    ms = parse_timestamp(v)
    if ms is None:
        raise _Reject("bad_timestamp", f"field 'ts' is not a time: {str(v)[:80]!r}")
    return ms


def _raw(src: bytes | dict, whole: bytes = b"") -> str:
    """Dead-letter text of a payload or of one item of a list, made only for rejects.

    An item nested too deeply for orjson to write back keeps the whole payload instead.
    """
    if isinstance(src, bytes):
        return raw_text(src)
    try:
        return raw_text(orjson.dumps(src))
    except (orjson.JSONEncodeError, TypeError):
        return raw_text(whole)


def _object(out: _Out, i: int, obj: dict, topic: tuple[str, str] | None, src: bytes | dict, origin: str) -> None:
    """One reading or frame. A frame with some bad values keeps the good ones."""
    asset_default, sensor_default = topic if topic else (None, None)
    if "values" in obj:
        asset, ts, values = _asset(obj, asset_default), _ts(obj), obj["values"]
        if type(values) is not dict or not values:
            raise _Reject("bad_shape", "frame 'values' must be a non-empty object of sensor: number")
        bad = []
        for sensor, v in values.items():
            if _is_number(v):
                out.add(i, asset, sensor, ts, float(v))
            else:
                bad.append(f"{sensor!r}={str(v)[:40]}")
        if bad:
            detail = "frame values not numbers: " + ", ".join(bad)
            out.rejects.append((i, Invalid("bad_value", detail, _raw(src), origin)))
        return
    if "value" not in obj and "sensor" not in obj and not topic:
        raise _Reject("bad_shape", "JSON object is neither a reading (value) nor a frame (values)")
    asset, sensor = _asset(obj, asset_default), _name(obj, "sensor", sensor_default)
    if "value" not in obj:
        raise _Reject("missing_field", "field 'value' missing")
    v = obj["value"]
    if not _is_number(v):
        raise _Reject("bad_value", f"field 'value' is not a number: {str(v)[:80]!r}")
    out.add(i, asset, sensor, _ts(obj), float(v))


def _bare(out: _Out, i: int, payload: bytes, doc: Any, topic: str | None, receive: int | None) -> None:
    m = _TOPIC.match(topic or "")
    if m is None:
        raise _Reject("bad_topic", f"a bare number needs a topic plant/<site>/<asset_id>/<sensor>, got {topic!r}")
    if doc is None:  # not JSON: NaN / inf text; check_readings reports it as non_finite
        try:
            doc = float(payload)
        except ValueError:
            raise _Reject("bad_json", "payload is neither JSON nor a number") from None
    if receive is None:
        raise _Reject("missing_field", "a bare number needs a receive time, none given")
    out.add(i, m.group(2), m.group(3), receive, float(doc))


def _one(out: _Out, i: int, payload: bytes, topic: str | None, origin: str, receive: int | None) -> None:
    try:
        try:
            doc = orjson.loads(payload)
        except orjson.JSONDecodeError as e:
            if _TOPIC.match(topic or "") and payload.strip():
                return _bare(out, i, payload, None, topic, receive)
            raise _Reject("bad_json", str(e)[:200]) from None
        m = _TOPIC.match(topic or "")
        names = (m.group(2), m.group(3)) if m else None
        if type(doc) is dict:
            return _object(out, i, doc, names, payload, origin)
        if _is_number(doc):
            return _bare(out, i, payload, doc, topic, receive)
        if names is not None and type(doc) is not list:
            raise _Reject("bad_value", f"payload is not a number: {raw_text(payload)[:80]!r}")
        if type(doc) is not list:
            raise _Reject("bad_shape", f"JSON {type(doc).__name__} is neither a reading nor a frame")
        if not doc:
            raise _Reject("bad_shape", "empty JSON list")
        for k, item in enumerate(doc):
            try:
                if type(item) is not dict:
                    raise _Reject("bad_shape", f"JSON {type(item).__name__} is neither a reading nor a frame")
                _object(out, i, item, names, item, origin)
            except _Reject as e:
                out.rejects.append((i, Invalid(e.reason, f"item {k}: {e.detail}", _raw(item, payload), origin)))
    except _Reject as e:
        out.rejects.append((i, Invalid(e.reason, e.detail, raw_text(payload), origin)))


def parse_indexed(
    msgs: RawMessages, receive_ms: tuple[int, ...] | None = None
) -> tuple[Readings, np.ndarray, list[tuple[int, Invalid]]]:
    """`parse_messages`, also saying which message each reading and reject came from.

    Sources that pace or checkpoint by message (the JSONL replay) need that.
    """
    n = len(msgs.payloads)
    if len(msgs.topics) != n or len(msgs.origins) != n or (receive_ms is not None and len(receive_ms) != n):
        raise ValueError("payloads, topics, origins and receive_ms must have the same length")
    out = _Out()
    for i in range(n):
        p = msgs.payloads[i]
        _one(out, i, p.encode() if isinstance(p, str) else p, msgs.topics[i], msgs.origins[i],
             None if receive_ms is None else receive_ms[i])
    return out.readings(), np.array(out.row, dtype=np.int64), out.rejects


def parse_messages(msgs: RawMessages, receive_ms: tuple[int, ...] | None = None) -> Parsed:
    """Decode a batch of payloads into readings and rejects.

    `receive_ms[i]` is when message i arrived (epoch ms): the time of a bare
    number. Without it bare numbers are rejected (`missing_field`), because a
    reading without a time cannot be windowed.

    >>> p = parse_messages(RawMessages((b'{"asset_id":"p1","ts":0,"values":{"t":1,"v":2}}', b'{'),
    ...                                (None, None), ("k:0", "k:1")))
    >>> list(p.readings.sensor), [r.reason for r in p.rejects]
    (['t', 'v'], ['bad_json'])
    """
    readings, _, rejects = parse_indexed(msgs, receive_ms)
    return Parsed(readings, tuple(inv for _, inv in rejects))


def check_readings(
    parsed: Parsed, *, now_ms: int, max_skew_ms: int, known_assets: frozenset[str] | None = None
) -> Parsed:
    """Reject readings no detector should see; keep the order of the rest.

    Reasons, first that applies: `missing_field` (empty asset_id or sensor),
    `non_finite` (NaN, inf), `absurd_timestamp` (before 1990 or more than
    `max_skew_ms` after `now_ms`), `unknown_asset` (strict registry: `known_assets`
    given and the asset is not in it). The batch is returned unchanged when all pass.
    """
    r = parsed.readings
    if not len(r):
        return parsed
    finite = np.isfinite(r.value)
    ts_ok = (r.ts >= MIN_TS_MS) & (r.ts <= now_ms + max_skew_ms)
    sensor_ok = r.sensor.astype(bool)  # bool("") is False; 7 ns per reading
    if known_assets is None:
        asset_ok, known = r.asset_id.astype(bool), None
    else:
        codes, uniques = pd.factorize(r.asset_id)  # one set lookup per distinct asset
        asset_ok = np.array([bool(u) for u in uniques], dtype=bool)[codes]
        known = np.array([u in known_assets for u in uniques], dtype=bool)[codes]
    ok = finite & ts_ok & sensor_ok & asset_ok
    if known is not None:
        ok &= known
    if ok.all():
        return parsed
    bad = np.flatnonzero(~ok)
    rejects = [_check_reject(r, int(i), bool(asset_ok[i] and sensor_ok[i]), bool(finite[i]), bool(ts_ok[i]))
               for i in bad]
    return Parsed(r.take(ok), parsed.rejects + tuple(rejects))


def _check_reject(r: Readings, i: int, names_ok: bool, finite: bool, ts_ok: bool) -> Invalid:
    row = {"asset_id": r.asset_id[i], "sensor": r.sensor[i], "ts": int(r.ts[i]), "value": float(r.value[i])}
    raw = orjson.dumps(row).decode()  # orjson writes NaN/inf as null; the detail keeps them
    if not names_ok:
        field = "asset_id" if not r.asset_id[i] else "sensor"
        return Invalid("missing_field", f"field {field!r} is empty", raw, "check")
    if not finite:
        return Invalid("non_finite", f"value is {row['value']}", raw, "check")
    if not ts_ok:
        return Invalid("absurd_timestamp", f"ts {row['ts']} is before 1990 or too far in the future", raw, "check")
    return Invalid("unknown_asset", f"asset {row['asset_id']!r} is not in the registry", raw, "check")


def split_by_asset(readings: Readings) -> list[AssetReadings]:
    """One `AssetReadings` per asset, sorted by asset_id, arrival order kept within each.

    >>> batch = Readings.of([("b", "t", 1, 0.0), ("a", "t", 2, 0.0), ("b", "t", 3, 0.0)])
    >>> [(a.asset_id, a.ts.tolist()) for a in split_by_asset(batch)]
    [('a', [2]), ('b', [1, 3])]
    """
    n = len(readings)
    if n == 0:
        return []
    first = readings.asset_id[0]
    if (readings.asset_id == first).all():  # one asset: the common case, no copies
        return [AssetReadings(str(first), readings.sensor, readings.ts, readings.value)]
    codes, uniques = pd.factorize(readings.asset_id, sort=True)  # codes follow asset_id order
    # a stable sort on a 16-bit key is a radix sort: 4 ms for 1M readings, 60 ms on int64
    key = codes.astype(np.uint16 if len(uniques) <= 65_536 else np.int64)
    order = np.argsort(key, kind="stable")
    bounds = np.cumsum(np.bincount(codes, minlength=len(uniques)))[:-1]
    parts = zip(np.split(readings.sensor[order], bounds), np.split(readings.ts[order], bounds),
                np.split(readings.value[order], bounds))
    return [AssetReadings(str(a), s, t, v) for a, (s, t, v) in zip(uniques, parts)]
