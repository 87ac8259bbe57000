"""Replay files (CSV, Parquet, JSONL) into the dataflow as `Parsed` batches.

One partition per file, named by the path as given, read in file order. A
partition's snapshot is the number of data rows it has emitted, so a resumed
run skips exactly those and emits the rest: nothing lost, nothing twice.

``speed=0`` replays as fast as the files decode; ``speed=k`` paces each file by
its own event time at k times real time (the first row of a file, or of a
resumed run, is "now"). ``progress=True`` draws one rich bar per file on stderr;
several partitions in one process share one display.

File layouts and column options are described in `formats.py`.

>>> from bytewax.dataflow import Dataflow
>>> import bytewax.operators as op
>>> flow = Dataflow("replay")
>>> batches = op.input("read", flow, ReplaySource(["/work/shared/data/skab/valve1/0.csv"], asset="valve1"))
"""

from __future__ import annotations

import atexit
import bz2
import gzip
import itertools
import logging
import threading
from collections.abc import Callable, Iterable, Iterator, Sequence
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import BinaryIO

import numpy as np
import pyarrow as pa
import pyarrow.csv as pcsv
import pyarrow.parquet as pq
from bytewax.inputs import FixedPartitionedSource, StatefulSourcePartition
from rich.console import Console
from rich.progress import (
    BarColumn,
    Progress,
    TaskID,
    TaskProgressColumn,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

from smart_maintenance.operators.ingest.parse import parse_indexed
from smart_maintenance.operators.records import Invalid, Parsed, RawMessages, Readings
from smart_maintenance.sources.columns import LocalClock
from smart_maintenance.sources.formats import (
    _EXT,
    FORMATS,
    NO_TIME,
    Chunk,
    FilePlan,
    ReplayError,
    csv_column_types,
    decode_batch,
    open_parquet,
    plan_file,
    utf8_stream,
)

__all__ = ["ReplayError", "ReplaySource", "expand_paths", "read_chunks"]

log = logging.getLogger(__name__)


def expand_paths(paths: str | Path | Sequence[str | Path]) -> list[str]:
    """Paths as given; a directory stands for its replayable files, sorted by name."""
    items = [paths] if isinstance(paths, (str, Path)) else list(paths)
    out: list[str] = []
    for p in items:
        path = Path(p)
        if path.is_dir():
            files = sorted(f for f in path.iterdir() if f.is_file() and f.suffix.lower() in _EXT)
            if not files:
                raise ReplayError(f"{p}: directory holds no {sorted(_EXT)} files")
            out.extend(str(f) for f in files)
        else:
            out.append(str(p))
    return out


class ReplaySource(FixedPartitionedSource[Parsed, int]):
    """Files as `Parsed` batches of at most `chunk_rows` rows each; one partition per file.

    Every file is checked when the source is built: a missing file, an unknown
    format or missing columns raise `ReplayError` saying what was expected and
    what was found. Bad rows become `Invalid` rejects (`bad_timestamp`,
    `bad_value`, `missing_field`, `bad_shape`) with origin `path:line`.

    `paths`: files, or directories (their .csv/.tsv/.txt/.parquet/.jsonl files,
    sorted). `time_col`, `asset_col`, `asset`, `sensor_cols`, `exclude_cols`
    and `sep` (default: sniffed from the header) map wide files, see
    `formats.py`; a long file (ts, asset_id, sensor, value) names its own
    assets and sensors, so `asset` does not apply to it. `timezone` (an IANA
    name) reads CSV and Parquet times written with no offset as that zone's
    wall clock instead of UTC (`columns.LocalClock`). The readings are not
    range-checked here: run `check_readings` after the source, as for messages.
    """

    def __init__(
        self,
        paths: str | Path | Sequence[str | Path],
        *,
        fmt: str = "auto",
        time_col: str | None = None,
        asset_col: str | None = None,
        asset: str | None = None,
        sensor_cols: Sequence[str] | None = None,
        exclude_cols: Iterable[str] | None = None,
        sep: str | None = None,
        chunk_rows: int = 100_000,
        speed: float = 0.0,
        progress: bool = False,
        timezone: str | None = None,
    ) -> None:
        if fmt not in FORMATS:
            raise ValueError(f"fmt must be one of {FORMATS}, got {fmt!r}")
        if chunk_rows < 1:
            raise ValueError(f"chunk_rows must be at least 1, got {chunk_rows}")
        if not speed >= 0:
            raise ValueError(f"speed must be >= 0 (0 = as fast as possible), got {speed}")
        if sep is not None and len(sep) != 1:
            raise ValueError(f"sep must be one character, got {sep!r}")
        if asset is not None and asset_col is not None:
            raise ValueError("give asset (a fixed id) or asset_col (a column), not both")
        names = expand_paths(paths)
        if not names:
            raise ValueError("paths is empty")
        if len(set(names)) != len(names):
            raise ValueError(f"a file is listed twice in {names}")
        exclude = None if exclude_cols is None else frozenset(exclude_cols)
        self._plans: dict[str, FilePlan] = {
            name: plan_file(name, fmt=fmt, time_col=time_col, asset_col=asset_col, asset=asset,
                            sensor_cols=tuple(sensor_cols) if sensor_cols else None, exclude_cols=exclude, sep=sep,
                            timezone=timezone)
            for name in names
        }
        self._chunk_rows = chunk_rows
        self._speed = float(speed)
        self._progress = progress

    @property
    def plans(self) -> dict[str, FilePlan]:
        """How each file will be read (layout, columns, asset): for the CLI to show."""
        return dict(self._plans)

    def list_parts(self) -> list[str]:
        return list(self._plans)

    def build_part(self, step_id: str, for_part: str, resume_state: int | None) -> _ReplayPartition:
        plan = self._plans[for_part]
        bar = _Bars.shared().add(Path(for_part).name) if self._progress else None
        return _ReplayPartition(plan, resume_state or 0, self._chunk_rows, self._speed, bar)


class _ReplayPartition(StatefulSourcePartition[Parsed, int]):
    """One file: emits chunks, counts rows, paces by event time when `speed` > 0."""

    def __init__(self, plan: FilePlan, rows: int, chunk_rows: int, speed: float, bar: _Bar | None) -> None:
        self._rows = rows
        self._name = str(plan.path)
        if rows:  # a resumed run: how much of the file a crash costs is the distance to here
            log.info("replay %s resumes at row %d", self._name, rows)
        self._speed = speed
        self._bar = bar
        report = bar.update if bar is not None else None
        self._chunks: Iterator[Chunk] = read_chunks(plan, start_row=rows, chunk_rows=chunk_rows, on_progress=report)
        self._pending: Chunk | None = None
        if speed > 0:  # read the first chunk now (the reader's imports, the file's opening): Bytewax 0.21 counts
            # the wait to `next_awake` from before the `next_batch` call that set it, so a slow first call would
            # delay the next one by as long again, and a paced replay's first rows would come in one burst
            self._pending = next(self._chunks, None)
        self._anchor: tuple[datetime, int] | None = None  # (wall time, event time) of the first paced row
        self._awake: datetime | None = None

    def next_batch(self) -> list[Parsed]:
        chunk: Chunk | None
        if self._speed == 0:
            chunk = self._next_chunk()
        else:
            chunk = self._paced()
            if chunk is None:
                return []
        self._rows += chunk.rows
        log.debug("replay %s read to row %d", self._name, self._rows)
        return [chunk.parsed()] if len(chunk.readings) or chunk.rejects else []

    def _next_chunk(self) -> Chunk:
        try:
            return next(self._chunks)
        except StopIteration:
            if self._bar is not None:
                self._bar.finish()
            raise

    def _paced(self) -> Chunk | None:
        """The rows due by now; sets when the next row is due."""
        if self._pending is None:
            self._pending = self._next_chunk()
        chunk = self._pending
        times = np.maximum.accumulate(chunk.times())  # a row earlier than its predecessor goes with it
        now = datetime.now(timezone.utc)
        if self._anchor is None and chunk.rows:
            timed = times[times != NO_TIME]
            if len(timed):
                self._anchor = (now, int(timed[0]))
        if self._anchor is None or chunk.rows == 0:  # nothing to pace by yet: pass it on
            self._pending, self._awake = None, None
            return chunk
        wall0, event0 = self._anchor
        due = event0 + (now - wall0).total_seconds() * 1000.0 * self._speed
        k = int(np.searchsorted(times, due, side="right"))
        if k >= chunk.rows:
            self._pending, self._awake = None, None
            return chunk
        self._awake = wall0 + timedelta(milliseconds=(int(times[k]) - event0) / self._speed)
        if k == 0:
            return None
        self._pending = chunk.tail(k)
        return chunk.head(k)

    def next_awake(self) -> datetime | None:
        return self._awake

    def snapshot(self) -> int:
        return self._rows

    def close(self) -> None:
        if self._bar is not None:
            self._bar.finish()


# -- reading files in chunks ------------------------------------------------------------------------------

_BLOCK = 4 << 20  # bytes per CSV block: large blocks amortise the per-batch Python work
_Report = Callable[[int, int], None] | None


def read_chunks(plan: FilePlan, *, start_row: int = 0, chunk_rows: int = 100_000,
                on_progress: Callable[[int, int], None] | None = None) -> Iterator[Chunk]:
    """Chunks of at most `chunk_rows` rows from data row `start_row` on.

    `on_progress(done, total)` (optional) is called after each block read.
    """
    read = {"csv": _csv_blocks, "parquet": _parquet_blocks, "jsonl": _jsonl_blocks}[plan.fmt]
    done = 0
    for chunk in read(plan, start_row, chunk_rows, on_progress):
        if done < start_row:  # rows (and their rejects) that were emitted before the snapshot
            if chunk.rows <= start_row - done:
                done += chunk.rows
                continue
            chunk = chunk.tail(start_row - done)
            done = start_row
        done += chunk.rows
        while chunk.rows > chunk_rows:
            yield chunk.head(chunk_rows)
            chunk = chunk.tail(chunk_rows)
        if chunk.rows or chunk.rejects:
            yield chunk


def _csv_blocks(plan: FilePlan, start_row: int, chunk_rows: int, on_progress: _Report) -> Iterator[Chunk]:
    ragged: list[tuple[int | None, str, str]] = []

    def on_invalid(row: pcsv.InvalidRow) -> str:
        ragged.append((row.number, f"expected {row.expected_columns} columns, found {row.actual_columns}", row.text))
        return "skip"

    types = csv_column_types(plan)
    raw = pa.OSFile(str(plan.path)) if plan.path.suffix.lower() in _EXT else \
        pa.input_stream(str(plan.path), compression="detect")
    stream = utf8_stream(raw)  # bad bytes become U+FFFD, found and rejected in decoding
    size = plan.path.stat().st_size
    try:
        reader = pcsv.open_csv(
            stream,
            read_options=pcsv.ReadOptions(block_size=_BLOCK, use_threads=False),
            # blank lines stay rows (of nulls, dropped in decoding) so that line numbers stay exact
            parse_options=pcsv.ParseOptions(delimiter=plan.sep, invalid_row_handler=on_invalid,
                                            ignore_empty_lines=False),
            # the stream is valid UTF-8 already
            convert_options=pcsv.ConvertOptions(include_columns=list(plan.used), column_types=types,
                                                strings_can_be_null=True, null_values=[""], check_utf8=False),
        )
        bad_lines: list[int] = []
        done, hint, clock = 0, [0], _clock(plan)
        for batch in reader:
            ragged_now, ragged[:] = list(ragged), []
            bad_lines = sorted(bad_lines + [n for n, _, _ in ragged_now if n is not None])
            skip = done + batch.num_rows <= start_row and batch.num_rows > 0
            chunk = (Chunk.skipped(batch.num_rows) if skip
                     else decode_batch(plan, batch, done, bad_lines, hint, clock=clock))
            chunk.rejects[:0] = [(0, Invalid("bad_shape", why, text, f"{plan.path}:{n if n else '?'}"))
                                 for n, why, text in ragged_now]
            done += batch.num_rows
            if on_progress is not None:
                on_progress(min(raw.tell(), size), size)
            yield chunk
        if ragged:  # ragged rows after the last batch Arrow yielded (or a file of nothing else)
            rejects = [(0, Invalid("bad_shape", why, text, f"{plan.path}:{n if n else '?'}"))
                       for n, why, text in ragged]
            yield Chunk(Readings.empty(), np.empty(0, np.int64), rejects, 0)
    except pa.ArrowInvalid as e:
        raise ReplayError(f"{plan.path}: CSV read failed: {e}") from e
    finally:
        stream.close()
        raw.close()


def _clock(plan: FilePlan) -> LocalClock | None:
    """One per file: the repeated hour of a change to winter time is resolved in the file's order."""
    return LocalClock(plan.timezone) if plan.timezone is not None else None


def _parquet_blocks(plan: FilePlan, start_row: int, chunk_rows: int, on_progress: _Report) -> Iterator[Chunk]:
    """`plan_file` decoded the file once already; a read that fails now (the file changed since) still
    names the file and the row."""
    try:
        pf = open_parquet(plan.path)
    except (pa.ArrowException, OSError) as e:
        raise ReplayError(f"{plan.path}: Parquet file no longer readable: {e}") from e
    with pf:
        yield from _parquet_batches(plan, pf, start_row, chunk_rows, on_progress)


def _parquet_batches(plan: FilePlan, pf: pq.ParquetFile, start_row: int, chunk_rows: int,
                     on_progress: _Report) -> Iterator[Chunk]:
    total, first, done = pf.metadata.num_rows, 0, 0
    for g in range(pf.num_row_groups):  # skip whole row groups before the resume point
        n = pf.metadata.row_group(g).num_rows
        if done + n > start_row:
            break
        done, first = done + n, g + 1
    if done:
        yield Chunk.skipped(done)
    hint, clock = [0], _clock(plan)
    groups = list(range(first, pf.num_row_groups))
    batches = pf.iter_batches(batch_size=max(chunk_rows, 1024), row_groups=groups, columns=list(plan.used)) \
        if groups else iter(())
    while True:
        try:
            batch = next(batches)
        except StopIteration:
            return
        except (pa.ArrowException, OSError) as e:
            raise ReplayError(f"{plan.path}: Parquet read failed after row {done} (the file changed since it was "
                              f"planned?): {e}") from e
        chunk = decode_batch(plan, batch, done, [], hint, line_base=1, clock=clock)
        done += batch.num_rows
        if on_progress is not None:
            on_progress(done, total)
        yield chunk


def _jsonl_blocks(plan: FilePlan, start_row: int, chunk_rows: int, on_progress: _Report) -> Iterator[Chunk]:
    size, read, line = plan.path.stat().st_size, 0, 0
    with _open_binary(plan.path) as f:
        while line < start_row and (skipped := list(itertools.islice(f, min(chunk_rows, start_row - line)))):
            line += len(skipped)  # skip without parsing
            read += sum(map(len, skipped))
            yield Chunk.skipped(len(skipped))
        while lines := list(itertools.islice(f, chunk_rows)):
            read += sum(map(len, lines))
            keep = [i for i, x in enumerate(lines) if x.strip()]
            msgs = RawMessages(tuple(lines[i] for i in keep), (None,) * len(keep),
                               tuple(f"{plan.path}:{line + i + 1}" for i in keep))
            readings, row, rejects = parse_indexed(msgs)
            where = np.array(keep, dtype=np.int64)
            yield Chunk(readings, where[row] if len(row) else row, [(keep[i], inv) for i, inv in rejects], len(lines))
            line += len(lines)
            if on_progress is not None:
                on_progress(min(read, size), size)


def _open_binary(path: Path) -> BinaryIO | gzip.GzipFile | bz2.BZ2File:
    """The file as binary lines; .gz/.bz2 are decompressed."""
    suffix = path.suffix.lower()
    if suffix == ".gz":
        return gzip.open(path, "rb")
    if suffix == ".bz2":
        return bz2.open(path, "rb")
    return open(path, "rb", buffering=1 << 20)


# -- progress -----------------------------------------------------------------------------------------------


class _Bar:
    """One file's task in the shared progress display."""

    def __init__(self, bars: _Bars, task: TaskID) -> None:
        self._bars, self._task, self._done = bars, task, False

    def update(self, done: int, total: int) -> None:
        self._bars.progress.update(self._task, completed=done, total=total)

    def finish(self) -> None:
        if not self._done:
            self._done = True
            self._bars.finish(self._task)


class _Bars:
    """A process-wide rich display on stderr: partitions on several worker threads share it."""

    _lock = threading.Lock()
    _instance: _Bars | None = None

    def __init__(self) -> None:
        self.progress = Progress(
            TextColumn("{task.description}"), BarColumn(), TaskProgressColumn(), TimeElapsedColumn(),
            TimeRemainingColumn(),
            console=Console(stderr=True), transient=False,
        )
        self._open = 0
        atexit.register(self.progress.stop)  # an aborted run must not leave the terminal in live mode

    @classmethod
    def shared(cls) -> _Bars:
        with cls._lock:
            if cls._instance is None:
                cls._instance = _Bars()
            return cls._instance

    def add(self, name: str) -> _Bar:
        with self._lock:
            if self._open == 0:
                self.progress.start()
            self._open += 1
            return _Bar(self, self.progress.add_task(name, total=None))

    def finish(self, task: TaskID) -> None:
        with self._lock:
            t = self.progress.tasks[[x.id for x in self.progress.tasks].index(task)]
            self.progress.update(task, completed=t.total or t.completed, total=t.total or t.completed)
            self._open -= 1
            if self._open == 0:  # the next replay in this process gets a fresh display
                self.progress.stop()
                _Bars._instance = None
