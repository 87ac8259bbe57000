"""Readings as JSON lines, encoded column-wise: shared by the JSONL file sink and the Kafka readings publisher.

pyarrow (~0.05-0.07 CPU-s to import, with `pyarrow.compute`) is imported at the first encoding: a flow process
imports this module with its sinks but encodes readings only with `out_dir` set or when it publishes readings.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
import orjson

from smart_maintenance.operators.ingest.codes import factorize
from smart_maintenance.operators.records import QUALITY_UNKNOWN, Readings

if TYPE_CHECKING:
    import pyarrow as pa

_DAY_MS = 86_400_000
_FIRST_DAY, _END_DAY = -719_162, 2_932_897  # 0001-01-01 and 10000-01-01 in days since 1970
_TWO_DIGITS = np.array([b"%02d" % i for i in range(100)], dtype="S2")
_THREE_DIGITS = np.array([b"%03d" % i for i in range(1000)], dtype="S3")
_TS_LAYOUT = np.dtype({  # YYYY-MM-DDTHH:MM:SS.mmmZ
    "names": ["date", "t", "hh", "c1", "mm", "c2", "ss", "dot", "ms", "z"],
    "formats": ["S10", "S1", "S2", "S1", "S2", "S1", "S2", "S1", "S3", "S1"],
    "offsets": [0, 10, 11, 13, 14, 16, 17, 19, 20, 23],
    "itemsize": 24,
})


def readings_jsonl(batch: Readings) -> bytes:
    """One JSON line per reading: asset_id, sensor, ts (RFC 3339 UTC, ms), value (null if not finite), and
    the `quality` and `unit` the source gave, on the readings that have them.

    >>> rd = Readings.of([("p", "t", 0, 1.5), ("p", "t", 1000, 2.0)], quality=[192, -1])
    >>> print(readings_jsonl(rd).decode(), end="")
    {"asset_id":"p","sensor":"t","ts":"1970-01-01T00:00:00.000Z","value":1.5,"quality":192}
    {"asset_id":"p","sensor":"t","ts":"1970-01-01T00:00:01.000Z","value":2.0}
    """
    n = len(batch)
    if n == 0:
        return b""
    import pyarrow as pa
    import pyarrow.compute as pc

    a_codes, assets = factorize(batch.asset_id)
    s_codes, sensors = factorize(batch.sensor)
    pair_codes, pairs = factorize(a_codes * len(sensors) + s_codes)
    prefixes = [
        b'{"asset_id":' + orjson.dumps(str(assets[p // len(sensors)]))
        + b',"sensor":' + orjson.dumps(str(sensors[p % len(sensors)])) + b',"ts":"'
        for p in pairs.tolist()
    ]
    prefix = pa.array(prefixes, pa.large_binary()).take(pa.array(pair_codes))
    ts = _ts_text(np.asarray(batch.ts, dtype=np.int64))
    values = pa.array(orjson.dumps(batch.value.tolist())[1:-1].split(b","), pa.large_binary())
    lines = pc.binary_join_element_wise(
        prefix, ts, pa.scalar(b'","value":', pa.large_binary()), values, _said(batch),
        pa.scalar(b"}\n", pa.large_binary()), pa.scalar(b"", pa.large_binary()),
    )
    offsets = np.frombuffer(lines.buffers()[1], dtype=np.int64)
    return memoryview(lines.buffers()[2])[offsets[lines.offset]: offsets[lines.offset + n]].tobytes()


def _said(batch: Readings) -> pa.Array | pa.Scalar:
    """`,"quality":Q` and `,"unit":U` for each reading whose source gave them (empty for the rest)."""
    import pyarrow as pa

    if batch.quality is None and batch.unit is None:
        return pa.scalar(b"", pa.large_binary())
    quality = batch.quality_or_unknown()
    q_codes, q_names = factorize(quality)
    q_text = np.array([b"" if q == QUALITY_UNKNOWN else b',"quality":%d' % q for q in q_names.tolist()],
                      dtype=object)[q_codes]
    u_codes, u_names = factorize(batch.unit_or_none())  # None is -1
    u_text = np.array([b',"unit":' + orjson.dumps(str(u)) for u in u_names] + [b""], dtype=object)[u_codes]
    return pa.array((q_text + u_text).tolist(), pa.large_binary())


def _ts_text(ts: np.ndarray) -> pa.Array:
    """`YYYY-MM-DDTHH:MM:SS.mmmZ` for epoch ms, built with integer arithmetic (no row loop)."""
    import pyarrow as pa

    day, ms_of_day = np.divmod(ts, _DAY_MS)
    if day.min() < _FIRST_DAY or day.max() >= _END_DAY:  # years without four digits: the general path
        text = np.char.add(np.datetime_as_string(ts.astype("datetime64[ms]"), unit="ms"), "Z")
        return pa.array(text.tolist(), pa.large_string()).cast(pa.large_binary())
    lo, hi = int(day.min()), int(day.max())
    if hi - lo < len(ts):  # the usual case: a replay spans few days
        days, day_codes = np.arange(lo, hi + 1), day - lo
    else:
        days, day_codes = np.unique(day, return_inverse=True)
    out = np.empty(len(ts), dtype=_TS_LAYOUT)
    out["date"] = np.datetime_as_string(days.astype("datetime64[D]"), unit="D").astype("S10")[day_codes]
    ms_of_day = ms_of_day.astype(np.int32)
    out["hh"] = _TWO_DIGITS[ms_of_day // 3_600_000]
    out["mm"] = _TWO_DIGITS[ms_of_day // 60_000 % 60]
    out["ss"] = _TWO_DIGITS[ms_of_day // 1000 % 60]
    out["ms"] = _THREE_DIGITS[ms_of_day % 1000]
    for name, char in (("t", b"T"), ("c1", b":"), ("c2", b":"), ("dot", b"."), ("z", b"Z")):
        out[name] = char
    return pa.array(out.view("S24").ravel(), pa.binary(24)).cast(pa.large_binary())
