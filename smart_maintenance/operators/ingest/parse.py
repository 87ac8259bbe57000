"""Turn raw payloads into columnar `Readings`, and bad input into `Invalid` values.

Wire format (docs/operations.md, "Input formats"): a JSON reading
``{"asset_id", "sensor", "ts", "value", "unit"?, "quality"?}``, a JSON frame
``{"asset_id", "ts", "values": {sensor: value}}`` (one reading per sensor), a
JSON list of those, or - on an MQTT topic ``plant/<site>/<asset_id>/<sensor>`` -
a bare number stamped with the time it was received. On such a topic a JSON
object may also leave out `asset_id` and `sensor`: the topic supplies them.
The topic layout is a template (`RawMessages.topic_template`, from
`[mqtt] topic_template`), e.g. the Unified Namespace's
``{enterprise}/{site}/{area}/{line}/{asset_id}/{sensor}``.
`quality` (``good``/``uncertain``/``bad`` or an OPC quality 0..255, 192 good) and
`unit` are kept on the reading (a frame's `quality` applies to all its values,
its `units` is an object of sensor: unit): a bad quality is a dead letter
`bad_quality`, never a reading, and so is an uncertain one unless
`accept_uncertain` (as the OPC UA and Sparkplug sources do). Units are converted
to the registry's after the checks (`units.convert_units`).

Decoding is per message (orjson, so one bad message is one dead letter), but a
frame's values go into the columns in one step: a plain frame (`_plain_frame`)
costs a few Python operations whatever its number of sensors, and the columns
of the whole batch are built at once (`_Out.readings`). Frames and lists of
them are therefore the cheap way to send many readings per message.
The result is one columnar batch and the
checks after it (`check_readings`, `split_by_asset`) are vectorised: they run on
every reading, so they must cost nanoseconds per reading, not microseconds.
"""

from __future__ import annotations

import functools
import math
import re
from collections.abc import Mapping
from datetime import datetime, timezone
from typing import Any

import numpy as np
import orjson

from smart_maintenance.operators.ingest.codes import SMALL, distinct, factorize
from smart_maintenance.operators.ingest.guard import (
    MAX_NAME_LEN,
    describe,
    name_problem,
)
from smart_maintenance.operators.records import (
    QUALITY_BAD,
    QUALITY_GOOD,
    QUALITY_UNCERTAIN,
    QUALITY_UNKNOWN,
    AssetReadings,
    Invalid,
    Parsed,
    RawMessages,
    Readings,
)

RAW_LIMIT = 64 * 1024
"""Dead letters keep at most this many bytes of a payload."""

MAX_MESSAGE_BYTES = 1024 * 1024
"""Default largest message decoded (setting `limits.max_message_bytes`); larger ones are `too_large`."""

MIN_TS_MS = 631_152_000_000
"""1990-01-01T00:00:00Z: no plant historian we replay is older; earlier is a unit mistake."""

_EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)
_INT64_MAX = 2**63 - 1
DEFAULT_TOPIC_TEMPLATE = "plant/{site}/{asset_id}/{sensor}"
_LEVEL = re.compile(r"^\{([a-z_][a-z0-9_]*)\}$")


@functools.lru_cache(maxsize=64)
def topic_pattern(template: str) -> re.Pattern[str]:
    """The regex of a topic template: `{asset_id}` and `{sensor}` (each once) and any other `{name}` are one
    level each, the other levels are literal. `ValueError` for a template that cannot name a reading.

    >>> m = topic_pattern("{enterprise}/{site}/{area}/{line}/{asset_id}/{sensor}").match("acme/lyon/press/l2/p-7/temp")
    >>> m["asset_id"], m["sensor"]
    ('p-7', 'temp')
    >>> topic_pattern("plant/{site}/{asset_id}/{sensor}").match("plant/alarms/p-7") is None
    True
    """
    parts, seen = [], []
    for level in template.split("/"):
        m = _LEVEL.match(level)
        if m:
            name = m.group(1)
            if name in seen:
                raise ValueError(f"topic template {template!r} names {{{name}}} twice")
            seen.append(name)
            parts.append(f"(?P<{name}>[^/]+)")
        elif not level or any(c in level for c in "{}+#"):
            raise ValueError(f"topic template {template!r}: level {level!r} is neither literal nor {{name}}")
        else:
            parts.append(re.escape(level))
    if "asset_id" not in seen or "sensor" not in seen:
        raise ValueError(f"topic template {template!r} must name the levels {{asset_id}} and {{sensor}}")
    return re.compile("^" + "/".join(parts) + "$")


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
    """Column builders for one parse call, built per reading in C and per message in Python.

    Sensor names and values are extended straight from a frame's dict (`add_frame`), the rest in runs: one
    (asset, ts, message index, length) per frame or reading, expanded with `np.repeat` once per call, so a
    frame of 20 values costs one Python step, not twenty. `row` records which message each reading came from.
    """

    __slots__ = ("sensor", "value", "run_asset", "run_ts", "run_row", "run_len", "n", "rejects", "quality", "unit",
                 "accept_uncertain", "ts_text", "topic_asset")

    def __init__(self, accept_uncertain: bool = False) -> None:
        self.sensor: list[str] = []
        self.value: list[float | int] = []  # ints and floats as decoded; one conversion at the end
        self.run_asset: list[str] = []
        self.run_ts: list[int] = []
        self.run_row: list[int] = []
        self.run_len: list[int] = []
        self.n = 0
        self.rejects: list[tuple[int, Invalid]] = []
        self.quality: dict[int, int] = {}  # sparse: only readings whose source gave one
        self.unit: dict[int, str] = {}
        self.accept_uncertain = accept_uncertain
        # a time text -> its epoch ms (or None), for this call only: the readings of one plant tick share their
        # `ts` text (every sensor of every asset at a gateway's scan), and parsing it was a fifth of a message's cost
        self.ts_text: dict[str, int | None] = {}
        self.topic_asset: dict[str | None, str | None] = {None: None}  # a topic -> the asset it names, this call

    def add(self, i: int, asset: str, sensor: str, ts: int, value: float) -> None:
        self.sensor.append(sensor)
        self.value.append(value)
        self.run_asset.append(asset)
        self.run_ts.append(ts)
        self.run_row.append(i)
        self.run_len.append(1)
        self.n += 1

    def add_frame(self, i: int, asset: str, ts: int, values: dict[str, float | int]) -> None:
        """Every value of a frame, all of them known to be ints or floats (`_all_numbers`)."""
        self.sensor.extend(values)
        self.value.extend(values.values())
        self.run_asset.append(asset)
        self.run_ts.append(ts)
        self.run_row.append(i)
        self.run_len.append(len(values))
        self.n += len(values)

    def truncate(self, n: int) -> None:
        """Forget the readings added after the first `n` (runs never straddle a message)."""
        del self.sensor[n:], self.value[n:]
        while self.n > n:
            self.n -= self.run_len.pop()
            for col in (self.run_asset, self.run_ts, self.run_row):
                col.pop()
        for sparse in (self.quality, self.unit):
            for k in [k for k in sparse if k >= n]:
                del sparse[k]

    def mark(self, n: int, quality: int | None, unit: str | None) -> None:
        """The quality and unit of the readings added since the first `n`."""
        if quality is not None:
            self.quality.update(dict.fromkeys(range(n, self.n), quality))
        if unit is not None:
            self.unit.update(dict.fromkeys(range(n, self.n), unit))

    def rows(self) -> np.ndarray:
        """The index of the message each reading came from."""
        return self._expand(np.array(self.run_row, dtype=np.int64))

    def _expand(self, per_run: np.ndarray) -> np.ndarray:
        if len(self.run_len) == self.n:  # every run one reading: single-reading messages
            return per_run
        return np.repeat(per_run, np.array(self.run_len, dtype=np.int64))

    def readings(self) -> Readings:
        if not self.n:
            return Readings.empty()
        quality = unit = None
        if self.quality:
            quality = np.full(self.n, QUALITY_UNKNOWN, dtype=np.int16)
            quality[np.fromiter(self.quality, np.int64)] = np.fromiter(self.quality.values(), np.int16)
        if self.unit:
            unit = np.full(self.n, None, dtype=object)
            unit[np.fromiter(self.unit, np.int64)] = list(self.unit.values())
        asset = np.empty(len(self.run_asset), dtype=object)
        asset[:] = self.run_asset  # never a 2-d array, whatever the names
        sensor = np.empty(self.n, dtype=object)
        sensor[:] = self.sensor
        return Readings(
            self._expand(asset),
            sensor,
            self._expand(np.array(self.run_ts, dtype=np.int64)),
            np.array(self.value, dtype=np.float64),  # ints within 64 bits (orjson's range) and floats
            quality,
            unit,
        )


_NUMBER_TYPES = frozenset((int, float))


def _all_numbers(values: Any) -> bool:
    """Every item an int or a float (not a bool), checked in C: one set of the items' types."""
    return set(map(type, values)) <= _NUMBER_TYPES


class _Reject(Exception):
    """Internal control flow: one message (or list item) is bad."""

    def __init__(self, reason: str, detail: str) -> None:
        self.reason, self.detail = reason, detail


def _is_number(v: Any) -> bool:
    t = type(v)
    return t is float or t is int


def _name(obj: dict[str, Any], key: str, default: str | None) -> str:
    v = obj.get(key, default)
    if v is None:
        raise _Reject("missing_field", f"field {key!r} missing")
    if type(v) is int:
        return str(v)  # numeric asset ids are common in historians
    if type(v) is not str:
        raise _Reject("bad_shape", f"field {key!r} must be a string, got {type(v).__name__}")
    return v


def _asset(obj: dict[str, Any], topic_asset: str | None) -> str:
    """The reading's asset; on a topic `plant/<site>/<asset_id>/...` the payload may not name another one.

    Broker ACLs confine a device to its topics: a payload that names another asset would escape them.
    """
    asset = _name(obj, "asset_id", topic_asset)
    if topic_asset is not None and asset != topic_asset:
        raise _Reject(
            "asset_mismatch", f"payload asset_id {asset[:64]!r} disagrees with its topic's {topic_asset[:64]!r}"
        )
    return asset


_QUALITY_WORDS = {"good": QUALITY_GOOD, "uncertain": QUALITY_UNCERTAIN, "bad": QUALITY_BAD}
MAX_UNIT_LEN = 32


def quality_code(q: Any) -> int | None:
    """`good`/`uncertain`/`bad` (any case) or an OPC DA quality 0..255 as a quality code; None if neither.

    >>> quality_code("Good"), quality_code(192), quality_code(86), quality_code(24), quality_code(True)
    (192, 192, 64, 0, None)
    """
    if type(q) is str:
        return _QUALITY_WORDS.get(q.strip().lower())
    if type(q) is int and 0 <= q <= 255:  # bits 7..6: 11 good, 01 uncertain, 00 bad (10 undefined: bad)
        return QUALITY_GOOD if q >= 192 else QUALITY_UNCERTAIN if 64 <= q < 128 else QUALITY_BAD
    return None


def _quality(obj: dict[str, Any], accept_uncertain: bool) -> int | None:
    """The reading's quality code (None when not given); a bad one rejects it, as does an uncertain one
    unless `accept_uncertain`."""
    q = obj.get("quality")
    if q is None:
        return None
    code = quality_code(q)
    if code is None:
        raise _Reject("bad_quality", f"field 'quality' is neither good, uncertain, bad nor 0..255: {describe(q)}")
    if code == QUALITY_BAD or (code == QUALITY_UNCERTAIN and not accept_uncertain):
        kind = "bad" if code == QUALITY_BAD else "uncertain"
        raise _Reject("bad_quality", f"quality {describe(q)} is {kind}: not scored as a reading")
    return code


def _unit(v: Any) -> str | None:
    if v is None:
        return None
    if type(v) is not str or not 0 < len(v) <= MAX_UNIT_LEN or not v.isprintable():
        raise _Reject("bad_shape", f"field 'unit' must be printable text of 1..{MAX_UNIT_LEN} characters, "
                                   f"got {describe(v)}")
    return v


def _ts(obj: dict[str, Any], out: _Out) -> int:
    v = obj.get("ts")
    if v is None:
        raise _Reject("missing_field", "field 'ts' missing")
    ms = _cached_ts(v, out.ts_text)
    if ms is None:
        raise _Reject("bad_timestamp", f"field 'ts' is not a time: {describe(v)}")
    return ms


def _cached_ts(v: Any, texts: dict[str, int | None]) -> int | None:
    """`parse_timestamp(v)`, each distinct text parsed once per call (`_Out.ts_text`)."""
    if type(v) is not str:
        return parse_timestamp(v)
    try:
        return texts[v]
    except KeyError:
        ms = texts[v] = _text_ms(v)
        return ms


def _raw(src: bytes | dict[str, Any], whole: bytes = b"") -> str:
    """Dead-letter text of a payload or of one item of a list, made only for rejects.

    An item nested too deeply for orjson to write back keeps the whole payload instead.
    """
    if isinstance(src, bytes):
        return raw_text(src)
    try:
        return raw_text(orjson.dumps(src))
    except (orjson.JSONEncodeError, TypeError):
        return raw_text(whole)


_FRAME_KEYS = frozenset(("asset_id", "ts", "values"))


def _plain_frame(out: _Out, i: int, obj: dict[str, Any], topic_asset: str | None) -> bool:
    """Take the common frame in one step: exactly asset_id (text, the topic's if any), ts (epoch ms, int) and
    values (all numbers). False, having added nothing, for anything else: `_object` then decides."""
    if len(obj) != 3 or obj.keys() != _FRAME_KEYS:
        return False
    asset, ts, values = obj["asset_id"], obj["ts"], obj["values"]
    if (type(asset) is not str or (topic_asset is not None and asset != topic_asset) or type(ts) is not int
            or not -_INT64_MAX <= ts <= _INT64_MAX or type(values) is not dict or not values
            or not _all_numbers(values.values())):
        return False
    out.add_frame(i, asset, ts, values)
    return True


_READING_KEYS = frozenset(("asset_id", "sensor", "ts", "value"))


def _plain_reading(out: _Out, i: int, obj: dict[str, Any], topic_asset: str | None) -> bool:
    """Take the common reading in one step: exactly asset_id and sensor (text; the asset the topic's if any), ts (a
    time) and value (a number), as `_object` would take it. False, having added nothing, for anything else: `_object`
    then decides (and words the reject)."""
    if len(obj) != 4 or obj.keys() != _READING_KEYS:
        return False
    asset, sensor, value = obj["asset_id"], obj["sensor"], obj["value"]
    t = type(value)
    if (type(asset) is not str or type(sensor) is not str or (t is not float and t is not int)
            or (topic_asset is not None and asset != topic_asset)):
        return False
    ts = _cached_ts(obj["ts"], out.ts_text)
    if ts is None:
        return False
    out.add(i, asset, sensor, ts, value)
    return True


def _plain_run(out: _Out, msgs: RawMessages, i: int, pattern: re.Pattern[str], max_bytes: int) -> int:
    """Take the plain readings from message `i` on, as `_one` would take them, up to the first message that is
    not one (or the end); return its index.

    A plain reading is a payload of exactly asset_id and sensor (text, the asset its topic's if the topic names
    one), ts (a time) and value (a number): `_plain_reading`'s test. A run of them is taken in one loop, without
    `_one`'s calls per message and per column (a Kafka or MQTT message of one reading is the common input). The
    message where the run stops goes through `_one`, which decides it afresh: it may be plain after all (a
    `str` payload), anything else is `_one`'s, rejects included. So this only ever takes what `_one` would.
    """
    payloads, topics, n = msgs.payloads, msgs.topics, len(msgs.payloads)
    texts, topic_asset = out.ts_text, out.topic_asset
    sensors, values, assets, times, rows = out.sensor, out.value, out.run_asset, out.run_ts, out.run_row
    j = i
    try:
        while j < n:
            p = payloads[j]
            if type(p) is not bytes or len(p) > max_bytes:
                break
            try:
                doc = _loads(p)
            except orjson.JSONDecodeError:
                break
            if type(doc) is not dict or len(doc) != 4 or doc.keys() != _READING_KEYS:
                break
            asset, sensor, value, ts = doc["asset_id"], doc["sensor"], doc["value"], doc["ts"]
            t = type(value)
            if type(asset) is not str or type(sensor) is not str or (t is not float and t is not int):
                break
            topic = topics[j]
            try:
                named = topic_asset[topic]
            except KeyError:
                m = pattern.match(topic or "")
                named = topic_asset[topic] = m["asset_id"] if m else None
            if named is not None and asset != named:
                break
            if type(ts) is str:
                try:
                    ms = texts[ts]
                except KeyError:
                    ms = texts[ts] = _text_ms(ts)
            else:
                ms = parse_timestamp(ts)
            if ms is None:
                break
            sensors.append(sensor)
            values.append(value)
            assets.append(asset)
            times.append(ms)
            rows.append(j)
            j += 1
    except Exception:  # noqa: BLE001, S110 - an odd message (a topic that is no text): `_one` decides it
        pass
    if j > i:
        out.run_len.extend([1] * (j - i))
        out.n += j - i
    return j


_loads = orjson.loads


def _object(
    out: _Out, i: int, obj: dict[str, Any], topic: tuple[str, str] | None, src: bytes | dict[str, Any], origin: str
) -> None:
    """One reading or frame. A frame with some bad values keeps the good ones."""
    asset_default, sensor_default = topic if topic else (None, None)
    if "values" in obj:
        asset, ts, values = _asset(obj, asset_default), _ts(obj, out), obj["values"]
        if type(values) is not dict or not values:
            raise _Reject("bad_shape", "frame 'values' must be a non-empty object of sensor: number")
        quality = _quality(obj, out.accept_uncertain)
        units = obj.get("units")
        if units is not None and type(units) is not dict:
            raise _Reject("bad_shape", "frame 'units' must be an object of sensor: unit")
        units = {k: _unit(u) for k, u in units.items()} if units else None  # checked before any value is added
        if not units and _all_numbers(values.values()):  # the common case: one step for the whole frame
            n = out.n
            out.add_frame(i, asset, ts, values)
            if quality is not None:
                out.mark(n, quality, None)
            return
        bad: list[str] = []
        n_bad = 0
        for sensor, v in values.items():
            if _is_number(v):
                n = out.n
                out.add(i, asset, sensor, ts, v)
                if quality is not None or units:
                    out.mark(n, quality, units.get(sensor) if units else None)
            else:
                n_bad += 1
                if n_bad <= 10:  # the detail names a few; the raw payload has them all
                    bad.append(f"{describe(sensor, 40)}={describe(v, 40)}")
        if n_bad:
            more = f" and {n_bad - len(bad)} more" if n_bad > len(bad) else ""
            detail = "frame values not numbers: " + ", ".join(bad) + more
            out.rejects.append((i, Invalid("bad_value", detail, _raw(src), origin)))
        return
    if "value" not in obj and "sensor" not in obj and not topic:
        raise _Reject("bad_shape", "JSON object is neither a reading (value) nor a frame (values)")
    asset, sensor = _asset(obj, asset_default), _name(obj, "sensor", sensor_default)
    if "value" not in obj:
        raise _Reject("missing_field", "field 'value' missing")
    v = obj["value"]
    if not _is_number(v):
        raise _Reject("bad_value", f"field 'value' is not a number: {describe(v)}")
    ts, quality, unit = _ts(obj, out), _quality(obj, out.accept_uncertain), _unit(obj.get("unit"))
    n = out.n
    out.add(i, asset, sensor, ts, v)
    if quality is not None or unit is not None:
        out.mark(n, quality, unit)


def _bare(out: _Out, i: int, payload: bytes, doc: Any, topic: str | None, receive: int | None,
          pattern: re.Pattern[str]) -> None:
    m = pattern.match(topic or "")
    if m is None:
        layout = pattern.pattern.replace("(?P<", "<").replace(">[^/]+)", ">").strip("^$").replace("\\", "")
        raise _Reject("bad_topic", f"a bare number needs a topic {layout}, got {topic!r}")
    if doc is None:  # not JSON: NaN / inf text; check_readings reports it as non_finite
        try:
            doc = float(payload)
        except ValueError:
            raise _Reject("bad_json", "payload is neither JSON nor a number") from None
    if receive is None:
        raise _Reject("missing_field", "a bare number needs a receive time, none given")
    out.add(i, m["asset_id"], m["sensor"], receive, float(doc))


def _one(out: _Out, i: int, payload: bytes, topic: str | None, origin: str, receive: int | None,
         pattern: re.Pattern[str], max_bytes: int = MAX_MESSAGE_BYTES) -> None:
    """One message into `out`; whatever goes wrong with it becomes a reject of this message only."""
    mark = out.n
    try:
        if len(payload) > max_bytes:
            raise _Reject("too_large", f"message is {len(payload)} bytes (limit {max_bytes})")
        try:
            doc = orjson.loads(payload)
        except orjson.JSONDecodeError as e:
            if pattern.match(topic or "") and payload.strip():
                return _bare(out, i, payload, None, topic, receive, pattern)
            raise _Reject("bad_json", str(e)[:200]) from None
        m = pattern.match(topic or "")
        names = (m["asset_id"], m["sensor"]) if m else None
        if type(doc) is dict:
            topic_asset = names[0] if names else None
            if not _plain_reading(out, i, doc, topic_asset) and not _plain_frame(out, i, doc, topic_asset):
                _object(out, i, doc, names, payload, origin)
            return None
        if _is_number(doc):
            return _bare(out, i, payload, doc, topic, receive, pattern)
        if names is not None and type(doc) is not list:
            raise _Reject("bad_value", f"payload is not a number: {raw_text(payload)[:80]!r}")
        if type(doc) is not list:
            raise _Reject("bad_shape", f"JSON {type(doc).__name__} is neither a reading nor a frame")
        if not doc:
            raise _Reject("bad_shape", "empty JSON list")
        topic_asset = names[0] if names else None
        for k, item in enumerate(doc):
            if type(item) is dict and (_plain_reading(out, i, item, topic_asset)
                                       or _plain_frame(out, i, item, topic_asset)):
                continue
            try:
                if type(item) is not dict:
                    raise _Reject("bad_shape", f"JSON {type(item).__name__} is neither a reading nor a frame")
                _object(out, i, item, names, item, origin)
            except _Reject as e:
                out.rejects.append((i, Invalid(e.reason, f"item {k}: {e.detail}", _raw(item, payload), origin)))
    except _Reject as e:
        out.rejects.append((i, Invalid(e.reason, e.detail, raw_text(payload), origin)))
    except Exception as e:  # noqa: BLE001 - no message may stop the flow: a bug on odd input is a dead letter
        out.truncate(mark)  # none of this message's readings: it failed half-way
        out.rejects.append((i, Invalid("unparseable", f"{type(e).__name__} while decoding the message",
                                       raw_text(payload), origin)))


def parse_indexed(
    msgs: RawMessages, receive_ms: tuple[int, ...] | None = None, *, max_bytes: int = MAX_MESSAGE_BYTES,
    accept_uncertain: bool = False,
) -> tuple[Readings, np.ndarray, list[tuple[int, Invalid]]]:
    """`parse_messages`, also saying which message each reading and reject came from.

    Sources that pace or checkpoint by message (the JSONL replay) need that.
    """
    n = len(msgs.payloads)
    if len(msgs.topics) != n or len(msgs.origins) != n or (receive_ms is not None and len(receive_ms) != n):
        raise ValueError("payloads, topics, origins and receive_ms must have the same length")
    out = _Out(accept_uncertain)
    pattern = topic_pattern(msgs.topic_template or DEFAULT_TOPIC_TEMPLATE)
    i = 0
    while i < n:
        i = _plain_run(out, msgs, i, pattern, max_bytes)
        if i == n:
            break
        p = msgs.payloads[i]
        _one(out, i, p.encode() if isinstance(p, str) else p, msgs.topics[i], msgs.origins[i],
             None if receive_ms is None else receive_ms[i], pattern, max_bytes)
        i += 1
    return out.readings(), out.rows(), out.rejects


def parse_messages(msgs: RawMessages, receive_ms: tuple[int, ...] | None = None, *,
                   max_bytes: int = MAX_MESSAGE_BYTES, accept_uncertain: bool = False) -> Parsed:
    """Decode a batch of payloads into readings and rejects.

    `receive_ms[i]` is when message i arrived (epoch ms): the time of a bare
    number. Without it bare numbers are rejected (`missing_field`), because a
    reading without a time cannot be windowed. A message over `max_bytes` is
    `too_large`; any other failure while decoding one is `unparseable`: no
    message raises.

    >>> p = parse_messages(RawMessages((b'{"asset_id":"p1","ts":0,"values":{"t":1,"v":2}}', b'{'),
    ...                                (None, None), ("k:0", "k:1")))
    >>> list(p.readings.sensor), [r.reason for r in p.rejects]
    (['t', 'v'], ['bad_json'])
    """
    readings, _, rejects = parse_indexed(msgs, receive_ms, max_bytes=max_bytes, accept_uncertain=accept_uncertain)
    return Parsed(readings, tuple(inv for _, inv in rejects))


def check_readings(
    parsed: Parsed,
    *,
    now_ms: int,
    max_skew_ms: int,
    known_assets: frozenset[str] | None = None,
    known_sensors: Mapping[str, frozenset[str]] | None = None,
    max_name_len: int = MAX_NAME_LEN,
) -> Parsed:
    """Reject readings no detector should see; keep the order of the rest.

    Reasons, first that applies: `missing_field` (empty asset_id or sensor),
    `bad_name` (an id longer than `max_name_len` or with a control or
    non-printable character), `non_finite` (NaN, inf), `absurd_timestamp`
    (before 1990 or more than `max_skew_ms` after `now_ms`), `unknown_asset`
    (strict registry: `known_assets` given and the asset is not in it),
    `unknown_sensor` (strict registry: `known_sensors` given and the asset's
    entry does not list the sensor). The batch is returned unchanged when all pass.

    Names are checked once per distinct name in the batch, not per reading.

    >>> p = Parsed(Readings.of([("p1", "t", MIN_TS_MS, 1.0), ("p1\\r\\n", "t", MIN_TS_MS, 1.0)]), ())
    >>> [r.reason for r in check_readings(p, now_ms=MIN_TS_MS, max_skew_ms=0).rejects]
    ['bad_name']
    """
    r = parsed.readings
    if not len(r):
        return parsed
    finite = np.isfinite(r.value)
    ts_ok = (r.ts >= MIN_TS_MS) & (r.ts <= now_ms + max_skew_ms)
    if (len(r) <= SMALL and known_assets is None and known_sensors is None
            and all(_name_why(u, max_name_len) is None for u in distinct(r.asset_id))
            and all(_name_why(u, max_name_len) is None for u in distinct(r.sensor))):
        # a live poll's batch whose distinct names are all good, none looked up in a strict registry: no
        # reading needs its name's code (the verdicts below, without coding; on large batches pandas' codes
        # cost less than a dict's distinct names)
        ok = finite & ts_ok
        if ok.all():
            return parsed
        rejects = [_check_reject(r, int(i), None, None, bool(finite[i]), bool(ts_ok[i]), True)
                   for i in np.flatnonzero(~ok)]
        return Parsed(r.take(ok), parsed.rejects + tuple(rejects))
    a_codes, a_uniques = factorize(r.asset_id)  # one check per distinct name
    s_codes, s_uniques = factorize(r.sensor)
    # a missing name (None, NaN: a null cell of a columnar file) has code -1, which indexes the last slot:
    # each verdict list ends with the missing name's own
    a_why = [_name_why(u, max_name_len) for u in a_uniques] + [_MISSING_NAME]
    s_why = [_name_why(u, max_name_len) for u in s_uniques] + [_MISSING_NAME]
    asset_ok = np.array([w is None for w in a_why], dtype=bool)[a_codes]
    sensor_ok = np.array([w is None for w in s_why], dtype=bool)[s_codes]
    ok = finite & ts_ok & sensor_ok & asset_ok
    known = np.ones(len(r), dtype=bool)
    if known_assets is not None:
        known &= np.array([u in known_assets for u in a_uniques] + [False], dtype=bool)[a_codes]
    sensor_known = np.ones(len(r), dtype=bool)
    if known_sensors is not None:
        pair = a_codes.astype(np.int64) * max(len(s_uniques), 1) + s_codes
        pairs, inverse = np.unique(pair, return_inverse=True)
        width = max(len(s_uniques), 1)
        listed = np.array([s_uniques[p % width] in known_sensors.get(a_uniques[p // width], ()) for p in pairs],
                          dtype=bool)
        sensor_known = listed[inverse.reshape(-1)]
    ok &= known & sensor_known
    if ok.all():
        return parsed
    bad = np.flatnonzero(~ok)
    rejects = [_check_reject(r, int(i), a_why[a_codes[i]], s_why[s_codes[i]], bool(finite[i]), bool(ts_ok[i]),
                             bool(known[i]))
               for i in bad]
    return Parsed(r.take(ok), parsed.rejects + tuple(rejects))


_MISSING_NAME = "missing_field: is missing (null)"


def _name_why(name: Any, max_len: int) -> str | None:
    """None for a good id, else `missing_field: ...` or `bad_name: ...`."""
    if type(name) is not str:  # columnar sources give str; anything else is a bug upstream, not a name
        return f"bad_name: is a {type(name).__name__}, not text"
    if not name:
        return "missing_field: is empty"
    why = name_problem(name, max_len)
    return None if why is None else f"bad_name: {why}"


def _check_reject(r: Readings, i: int, asset_why: str | None, sensor_why: str | None, finite: bool, ts_ok: bool,
                  asset_known: bool) -> Invalid:
    asset, sensor = r.asset_id[i], r.sensor[i]
    row = {"asset_id": asset, "sensor": sensor, "ts": int(r.ts[i]), "value": float(r.value[i])}
    try:
        raw = orjson.dumps(row).decode()  # orjson writes NaN/inf as null; the detail keeps them
    except TypeError:  # a name that is not text (a bug upstream): keep what can be written
        raw = orjson.dumps({k: v if type(v) in (str, int, float) else describe(v) for k, v in row.items()}).decode()
    for field, why in (("asset_id", asset_why), ("sensor", sensor_why)):
        if why is not None:
            reason, _, text = why.partition(": ")
            return Invalid(reason, f"field {field!r} {text}", raw, "check")
    if not finite:
        return Invalid("non_finite", f"value is {row['value']}", raw, "check")
    if not ts_ok:
        return Invalid("absurd_timestamp", f"ts {row['ts']} is before 1990 or too far in the future", raw, "check")
    if not asset_known:
        return Invalid("unknown_asset", f"asset {describe(asset)} is not in the registry", raw, "check")
    return Invalid("unknown_sensor", f"sensor {describe(sensor)} is not listed for asset {describe(asset)}",
                   raw, "check")


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
        return [AssetReadings(str(first), readings.sensor, readings.ts, readings.value, readings.quality,
                              readings.unit)]
    codes, uniques = factorize(readings.asset_id, sort=True)  # codes follow asset_id order
    # a stable sort on a 16-bit key is a radix sort: 4 ms for 1M readings, 60 ms on int64
    key = codes.astype(np.uint16 if len(uniques) <= 65_536 else np.int64)
    order = np.argsort(key, kind="stable")
    ends = np.cumsum(np.bincount(codes, minlength=len(uniques))).tolist()
    starts = [0, *ends[:-1]]
    # plain slices: np.split costs two `swapaxes` per part, which with many small assets was most of this step
    sensor, ts, value = readings.sensor[order], readings.ts[order], readings.value[order]
    quality = readings.quality[order] if readings.quality is not None else None
    unit = readings.unit[order] if readings.unit is not None else None
    return [
        AssetReadings(str(a), sensor[lo:hi], ts[lo:hi], value[lo:hi],
                      None if quality is None else quality[lo:hi], None if unit is None else unit[lo:hi])
        for a, lo, hi in zip(uniques.tolist(), starts, ends)
    ]
