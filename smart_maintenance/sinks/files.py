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

import orjson
from bytewax.outputs import DynamicSink, StatelessSinkPartition

from smart_maintenance.operators.ingest.encode import readings_jsonl
from smart_maintenance.operators.records import FeatureBatch, Readings

__all__ = ["JsonlSink", "readings_jsonl", "records_jsonl", "reset_outputs"]

_STREAM_NAME = re.compile(r"^[a-z][a-z0-9_]*$")


def reset_outputs(directory: Path, streams: Iterable[str]) -> list[Path]:
    """Create `directory` and empty `<stream>.jsonl` for each stream: the start of a run."""
    directory.mkdir(parents=True, exist_ok=True)
    paths = [directory / f"{_checked(s)}.jsonl" for s in streams]
    for path in paths:
        path.write_bytes(b"")
    return paths






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
