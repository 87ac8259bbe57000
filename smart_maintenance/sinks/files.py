"""JSONL file sinks: every stream of a replay as one `<stream>.jsonl` file.

Each worker opens the file with O_APPEND and writes a whole batch with one
`write()`, so workers appending to the same file interleave whole lines, never
parts of them. Readings are the volume: their lines are assembled column-wise
(names JSON-escaped once per asset and sensor, timestamps formatted with
integer arithmetic, values by orjson, joined by Arrow), with no Python object
per reading.

    {"asset_id":"pump-01","sensor":"vibration","ts":"2026-01-05T00:00:00.000Z","value":2.31}
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np
import orjson
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
from bytewax.outputs import DynamicSink, StatelessSinkPartition

from smart_maintenance.operators.records import FeatureBatch, Readings

__all__ = ["JsonlSink", "readings_jsonl", "records_jsonl", "reset_outputs"]

_STREAM_NAME = re.compile(r"^[a-z][a-z0-9_]*$")
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


def reset_outputs(directory: Path, streams: Iterable[str]) -> list[Path]:
    """Create `directory` and empty `<stream>.jsonl` for each stream: the start of a run."""
    directory.mkdir(parents=True, exist_ok=True)
    paths = [directory / f"{_checked(s)}.jsonl" for s in streams]
    for path in paths:
        path.write_bytes(b"")
    return paths


def readings_jsonl(batch: Readings) -> bytes:
    """One JSON line per reading: asset_id, sensor, ts (RFC 3339 UTC, ms), value (null if not finite)."""
    n = len(batch)
    if n == 0:
        return b""
    a_codes, assets = pd.factorize(batch.asset_id)
    s_codes, sensors = pd.factorize(batch.sensor)
    pair_codes, pairs = pd.factorize(a_codes * len(sensors) + s_codes)
    prefixes = [
        b'{"asset_id":' + orjson.dumps(str(assets[p // len(sensors)]))
        + b',"sensor":' + orjson.dumps(str(sensors[p % len(sensors)])) + b',"ts":"'
        for p in pairs.tolist()
    ]
    prefix = pa.array(prefixes, pa.large_binary()).take(pa.array(pair_codes))
    ts = _ts_text(np.asarray(batch.ts, dtype=np.int64))
    values = pa.array(orjson.dumps(batch.value.tolist())[1:-1].split(b","), pa.large_binary())
    lines = pc.binary_join_element_wise(
        prefix, ts, pa.scalar(b'","value":', pa.large_binary()), values,
        pa.scalar(b"}\n", pa.large_binary()), pa.scalar(b"", pa.large_binary()),
    )
    offsets = np.frombuffer(lines.buffers()[1], dtype=np.int64)
    return memoryview(lines.buffers()[2])[offsets[lines.offset]: offsets[lines.offset + n]].tobytes()


def _ts_text(ts: np.ndarray) -> pa.Array:
    """`YYYY-MM-DDTHH:MM:SS.mmmZ` for epoch ms, built with integer arithmetic (no row loop)."""
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


def records_jsonl(items: Iterable[Any]) -> bytes:
    """JSON lines of a stream's items: `Readings` batches, `FeatureBatch`, or records with `to_dict()`."""
    parts: list[bytes] = []
    for item in items:
        if isinstance(item, Readings):
            parts.append(readings_jsonl(item))
        elif isinstance(item, FeatureBatch):
            parts.extend(orjson.dumps(row, option=orjson.OPT_APPEND_NEWLINE) for row in item.rows())
        elif isinstance(item, dict):
            parts.append(orjson.dumps(item, option=orjson.OPT_APPEND_NEWLINE))
        else:
            parts.append(orjson.dumps(item.to_dict(), option=orjson.OPT_APPEND_NEWLINE))
    return b"".join(parts)


def _checked(stream: str) -> str:
    if not _STREAM_NAME.match(stream):
        raise ValueError(f"stream must match {_STREAM_NAME.pattern}, got {stream!r}")
    return stream


class JsonlSink(DynamicSink):
    """Appends a stream's items as JSON lines to `<directory>/<stream>.jsonl`.

    Every worker appends to the same file. Call `reset_outputs` first to
    start a run with empty files; the sink itself never truncates, so a resumed
    run appends (recovery replays since the last snapshot: lines can repeat).
    """

    def __init__(self, directory: Path, stream: str):
        self._path = Path(directory) / f"{_checked(stream)}.jsonl"

    def build(self, step_id: str, worker_index: int, worker_count: int) -> _JsonlPartition:
        self._path.parent.mkdir(parents=True, exist_ok=True)
        return _JsonlPartition(self._path)


class _JsonlPartition(StatelessSinkPartition[Any]):
    def __init__(self, path: Path):
        self._fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)

    def write_batch(self, items: list[Any]) -> None:
        data = memoryview(records_jsonl(items))
        while data:  # one write() on regular files; the loop only guards a short write
            data = data[os.write(self._fd, data):]

    def close(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1
