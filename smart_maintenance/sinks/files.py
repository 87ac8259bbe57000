"""JSONL file sinks: every stream of a replay as one `<stream>.jsonl` file.

One partition writes each file, a whole batch with one `write()`; its
recovery snapshot is the file's length, so a resumed run writes each line once
(see `JsonlSink`). Readings are the volume: their lines are assembled column-wise
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
from bytewax.outputs import FixedPartitionedSink, StatefulSinkPartition

from smart_maintenance.operators.ingest.encode import readings_jsonl
from smart_maintenance.operators.records import AssetReadings, FeatureBatch, Readings

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
    """JSON lines of a stream's items: `Readings` or `AssetReadings` batches, `FeatureBatch`, or records with
    `to_dict()`."""
    parts: list[bytes] = []
    for item in items:
        if isinstance(item, Readings):
            parts.append(readings_jsonl(item))
        elif isinstance(item, AssetReadings):  # the keyed form of the readings stream
            parts.append(readings_jsonl(Readings(np.full(len(item), item.asset_id, dtype=object), item.sensor,
                                                 item.ts, item.value, item.quality, item.unit)))
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


class JsonlSink(FixedPartitionedSink[Any, int]):
    """Writes a stream's items as JSON lines to `<directory>/<stream>.jsonl`, each line once.

    One partition per file: its snapshot is the file's length. A run that
    resumes from a recovery snapshot first cuts the file back to the length it
    had at that snapshot, so the lines the flow emits again after a crash
    replace those written after the snapshot instead of repeating them (and a
    line half-written by the crash goes too). A fresh run (no snapshot) starts
    with an empty file. With several workers, one of them writes each file.
    """

    def __init__(self, directory: Path, stream: str):
        self._path = Path(directory) / f"{_checked(stream)}.jsonl"

    def list_parts(self) -> list[str]:
        return [self._path.name]

    def part_fn(self, item_key: str) -> int:
        return 0

    def build_part(self, step_id: str, for_part: str, resume_state: int | None) -> _JsonlPartition:
        if for_part != self._path.name:
            raise ValueError(f"recovery state for {for_part!r}, this sink writes {self._path.name!r}")
        self._path.parent.mkdir(parents=True, exist_ok=True)
        return _JsonlPartition(self._path, int(resume_state or 0))


class _JsonlPartition(StatefulSinkPartition[Any, int]):
    def __init__(self, path: Path, length: int):
        self._fd = os.open(path, os.O_WRONLY | os.O_CREAT, 0o644)
        if os.fstat(self._fd).st_size < length:
            os.close(self._fd)
            raise ValueError(f"{path} is shorter than at the recovery snapshot ({length} bytes): "
                             "it was truncated or replaced since; start without that recovery state")
        os.ftruncate(self._fd, length)  # what was written after the snapshot comes again
        os.lseek(self._fd, length, os.SEEK_SET)
        self._length = length

    def write_batch(self, items: list[Any]) -> None:
        data = memoryview(records_jsonl(items))
        self._length += len(data)
        while data:  # one write() on regular files; the loop only guards a short write
            data = data[os.write(self._fd, data):]

    def snapshot(self) -> int:
        return self._length

    def close(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1
