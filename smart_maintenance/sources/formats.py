"""Decode replay files (CSV, Parquet, JSONL) into columnar chunks of readings.

No Bytewax here: `plan_file` looks at a file once and says how to read it (or
raises `ReplayError` saying what it expected and found); `decode_batch` turns
one Arrow batch of it into a `Chunk` of readings and rejects; `replay.py`
streams the batches, resumes, paces and checkpoints. CSV cells are read as
text and cast a whole column at a time; only a column whose cast fails is
looked at value by value, so bad rows cost time only where they are. Those
column conversions (`to_ms`, `to_float`, `to_names`) are in `columns.py`.

Layouts:
- long: columns `asset_id, sensor, value` and one time column (`ts`, else
  `timestamp` or `time`; `time_col` picks one when several are there), one
  reading per row; other columns are ignored.
- wide: a time column (`time_col`, default the first named like `TIME_NAMES`,
  else the first whose name holds "time" or "date") and one column per sensor,
  one asset per file (`asset`, default the file stem, or `<folder>-<stem>` when
  the stem is just a number as in SKAB's `valve1/0.csv`) or per row (`asset_col`,
  default the column `asset_id` when there is one).
  Sensors are `sensor_cols`, or every numeric column (most cells in the first
  MiB are numbers) except the time and asset columns and `exclude_cols`
  (default `DEFAULT_EXCLUDE`: label columns such as SKAB's `anomaly` and
  `changepoint`, and exported index columns; pass `exclude_cols=()` to keep
  them). An empty or NaN cell is no reading (multi-rate exports leave gaps).
- jsonl: one reading, frame or list per line, as on the wire (`parse.py`).

Times: epoch milliseconds, or ISO 8601 / RFC 3339 text (no offset = UTC, or the
wall clock of `timezone` when one is given), or Parquet timestamp/date
columns. Rows count from the first data row, blank lines included; origins
are `path:line` (exact unless a quoted cell holds a line break), for Parquet
`path:row` (1-based).

Broken files. Bad cells are rejects, bad files are refused before the replay
starts, so a replay never stops half-way through a file:
- CSV: bytes that are not UTF-8 are read as U+FFFD (the replacement
  character), so a bad byte anywhere, even in a ragged line, cannot stop the
  read: a name cell holding U+FFFD is a `bad_value` reject ("not UTF-8 text"),
  a time or value cell fails to parse like any other bad text, and the rest of
  the file replays. U+FFFD already in a file marks text that was mangled
  before and is treated the same. A header that is not UTF-8 refuses the file.
  Parquet text cells that are not UTF-8 are rejects the same way (raw text
  shows their bytes escaped, `p\\xff`).
- Parquet: `plan_file` decodes every used column once (page checksums are
  verified where the writer stored them), so a corrupt page, a cut file or a
  schema Arrow cannot read is a `ReplayError` naming the file and the row group,
  raised when the replay is built, before any of its rows is emitted. A torn
  file has no trustworthy rows to salvage, and stopping before the first row
  beats a replay that dies half-way with half its output written. The scan
  costs one extra decode of the used columns (Parquet decodes at hundreds of MB/s;
  the replay itself is far slower). Column types are checked at the same time:
  a time column must hold timestamps, dates, numbers or text, a name column
  (`asset_id`, `sensor`, `asset_col`) text or numbers, a value column numbers,
  booleans or text; anything else (structs, lists, maps, durations) is a
  `ReplayError`. Cells that do not fit (a uint64 time past 2^63, bytes that are
  not UTF-8) are rejects of their row.
"""

from __future__ import annotations

import codecs
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.csv as pcsv
import pyarrow.parquet as pq

from smart_maintenance.operators.records import Invalid, Parsed, Readings
from smart_maintenance.sources.columns import (
    _TEXT,
    REPLACEMENT,
    LocalClock,
    _is_numeric,
    _is_text,
    _valid,
    cell_text,
    to_float,
    to_ms,
    to_names,
)

FORMATS = ("auto", "csv", "parquet", "jsonl")
TIME_NAMES = ("ts", "time", "timestamp", "datetime", "date", "date_time")
LONG_TIME_NAMES = ("ts", "timestamp", "time")
DEFAULT_EXCLUDE = frozenset({"anomaly", "changepoint", "label", "labels", "index", "", "unnamed: 0"})
NO_TIME = np.iinfo(np.int64).min
_EXT = {".csv": "csv", ".tsv": "csv", ".txt": "csv", ".parquet": "parquet", ".pq": "parquet",
        ".jsonl": "jsonl", ".ndjson": "jsonl"}
_PACKED = (".gz", ".bz2", ".zst", ".lz4")
_DICT = pa.dictionary(pa.int32(), pa.string())


class ReplayError(Exception):
    """A replay file cannot be read as asked: missing, unknown format, corrupt, or columns not found."""


@dataclass(frozen=True)
class FilePlan:
    """How to read one file, decided once from its name and header."""

    path: Path
    fmt: str  # csv | parquet | jsonl
    layout: str  # long | wide | jsonl
    columns: tuple[str, ...] = ()
    sep: str = ","
    time_col: str = ""
    asset_col: str | None = None
    asset: str = ""
    sensor_cols: tuple[str, ...] = ()
    timezone: str | None = None  # times with no offset are this zone's wall clock (None: UTC)

    @property
    def used(self) -> tuple[str, ...]:
        """The columns read, in file order (what a reject's raw text shows)."""
        want: set[str | None] = {self.time_col, *self.sensor_cols}
        want |= {"asset_id", "sensor", "value"} if self.layout == "long" else {self.asset_col}
        return tuple(c for c in self.columns if c in want)


@dataclass
class Chunk:
    """Decoded rows `[0, rows)` of a stretch of a file.

    `row[i]` is the row of reading i; `rejects` are `(row, Invalid)`;
    `row_ts[r]` is row r's event time (`NO_TIME` when it has none), for pacing.
    """

    readings: Readings
    row: np.ndarray
    rejects: list[tuple[int, Invalid]]
    rows: int
    row_ts: np.ndarray | None = field(default=None, repr=False)

    def parsed(self) -> Parsed:
        return Parsed(self.readings, tuple(inv for _, inv in self.rejects))

    def times(self) -> np.ndarray:
        if self.row_ts is None:
            t = np.full(self.rows, np.iinfo(np.int64).max, dtype=np.int64)
            np.minimum.at(t, self.row, self.readings.ts)
            self.row_ts = np.where(t == np.iinfo(np.int64).max, NO_TIME, t)
        return self.row_ts

    @staticmethod
    def skipped(rows: int) -> Chunk:
        """Rows before a resume point: counted, not decoded."""
        return Chunk(Readings.empty(), np.empty(0, dtype=np.int64), [], rows)

    def head(self, k: int) -> Chunk:
        m = self.row < k
        ts = None if self.row_ts is None else self.row_ts[:k]
        return Chunk(self.readings.take(m), self.row[m], [x for x in self.rejects if x[0] < k], min(k, self.rows), ts)

    def tail(self, k: int) -> Chunk:
        m = self.row >= k
        ts = None if self.row_ts is None else self.row_ts[k:]
        rej = [(r - k, inv) for r, inv in self.rejects if r >= k]
        return Chunk(self.readings.take(m), self.row[m] - k, rej, max(self.rows - k, 0), ts)


def csv_column_types(plan: FilePlan) -> dict[str, pa.DataType]:
    """Every used CSV column is read as text and cast per column later, so one bad cell cannot fail a
    read; names come as dictionaries, which turn into shared `str` objects cheaply."""
    types: dict[str, pa.DataType] = {c: _TEXT for c in plan.used}
    if plan.layout == "long":
        types.update(asset_id=_DICT, sensor=_DICT)
    elif plan.asset_col:
        types[plan.asset_col] = _DICT
    return types


def detect_format(path: Path) -> str:
    suffixes = [s.lower() for s in path.suffixes if s.lower() not in _PACKED]
    fmt = _EXT.get(suffixes[-1] if suffixes else "")
    if fmt is None:
        raise ReplayError(f"{path}: cannot tell the format from the extension; expected one of "
                          f"{sorted(_EXT)} or pass fmt='csv'|'parquet'|'jsonl'")
    return fmt


def plan_file(path: str | Path, *, fmt: str = "auto", time_col: str | None = None, asset_col: str | None = None,
              asset: str | None = None, sensor_cols: tuple[str, ...] | None = None,
              exclude_cols: frozenset[str] | None = None, sep: str | None = None,
              timezone: str | None = None) -> FilePlan:
    """Decide how to read `path`; raise `ReplayError` when it cannot be read as asked."""
    if timezone is not None:
        LocalClock(timezone)  # ValueError naming the zone
    path = Path(path)
    if not path.is_file():
        raise ReplayError(f"{path}: no such file")
    if fmt not in FORMATS:
        raise ValueError(f"fmt must be one of {FORMATS}, got {fmt!r}")
    fmt = detect_format(path) if fmt == "auto" else fmt
    if fmt == "jsonl":
        if timezone is not None:
            raise ReplayError(f"{path}: a time zone applies to CSV and Parquet time columns; JSONL times are read "
                              "as on the wire (give each an offset, or epoch ms)")
        return FilePlan(path, "jsonl", "jsonl")
    schema = None
    if fmt == "parquet":
        try:
            schema = pq.read_schema(path)
        except (pa.ArrowException, OSError, ValueError) as e:  # ValueError: column names that are not UTF-8
            raise ReplayError(f"{path}: not a readable Parquet file: {e}") from e
        columns, numeric = tuple(schema.names), {f.name for f in schema if _is_numeric(f.type)}
        repeated = sorted({n for n in columns if columns.count(n) > 1})
        if repeated:
            raise ReplayError(f"{path}: repeated column name(s) {repeated}: every column needs its own name")
    else:
        sep = sep or _sniff_sep(path)
        columns, numeric = _csv_header(path, sep)
    base = FilePlan(path, fmt, "wide", columns, sep or ",")
    if {"asset_id", "sensor", "value"} <= set(columns) and asset_col is None and not sensor_cols:
        plan = replace(base, layout="long", time_col=_long_time(path, columns, time_col))
    else:
        plan = _plan_wide(base, numeric, time_col, asset_col, asset, sensor_cols,
                          DEFAULT_EXCLUDE if exclude_cols is None else exclude_cols)
    if schema is not None:
        _check_parquet(plan, schema)
    return replace(plan, timezone=timezone)


def open_parquet(path: Path) -> pq.ParquetFile:
    """The file, with page checksums verified where the writer stored them."""
    return pq.ParquetFile(path, page_checksum_verification=True)


def _check_parquet(plan: FilePlan, schema: pa.Schema) -> None:
    """Refuse column types no reading can come from, then decode every used column once (see the docstring)."""
    names = ("asset_id", "sensor") if plan.layout == "long" else (plan.asset_col,) if plan.asset_col else ()
    values = ("value",) if plan.layout == "long" else plan.sensor_cols
    roles = [(plan.time_col, "time", "timestamps, dates, epoch numbers or text")]
    roles += [(c, "name", "text or integers") for c in names]
    roles += [(c, "value", "numbers, booleans or text") for c in values]
    for col, role, expected in roles:
        t = schema.field(col).type
        if not _fits(t, role):
            raise ReplayError(f"{plan.path}: {role} column {col!r} holds {t}, expected {expected}; convert it, "
                              f"or pick other columns (time_col, asset_col, sensor_cols)")
    group, first = 0, 0
    try:
        with open_parquet(plan.path) as pf:
            for group in range(pf.num_row_groups):
                pf.read_row_group(group, columns=list(plan.used), use_threads=False)
                first += pf.metadata.row_group(group).num_rows
    except (pa.ArrowException, OSError, ValueError, IndexError) as e:
        raise ReplayError(f"{plan.path}: corrupt Parquet file: row group {group} (from row {first + 1}) cannot be "
                          f"read: {e}; nothing of this file was replayed - repair or re-export it, or leave it out"
                          ) from e


def _fits(t: pa.DataType, role: str) -> bool:
    if pa.types.is_dictionary(t):
        t = t.value_type
    if pa.types.is_null(t) or _is_text(t):
        return True
    if role == "time":
        return pa.types.is_timestamp(t) or pa.types.is_date(t) or _is_numeric(t)
    if role == "name":
        return bool(pa.types.is_integer(t))
    return _is_numeric(t) or pa.types.is_boolean(t)


def _sniff_sep(path: Path) -> str:
    if path.suffix.lower() == ".tsv":
        return "\t"
    line = _first_line(path)
    return max((",", ";", "\t", "|"), key=line.count)


class _Utf8Repair:
    """A stream transform: valid UTF-8 passes as it is, each byte that is not becomes U+FFFD.

    So Arrow's CSV reader never fails on a bad byte (not even in a ragged line, whose text
    pyarrow decodes strictly before the invalid-row handler sees it), line breaks stay where they
    were, and the bad cells are found later by the replacement character they now hold.
    Decoding is per block in C (a few % of the CSV parse), never per row.
    """

    def __init__(self) -> None:
        self._decoder = codecs.getincrementaldecoder("utf-8")("replace")

    def __call__(self, buf: pa.Buffer) -> bytes:
        return self._decoder.decode(buf, len(buf) == 0).encode("utf-8")


def utf8_stream(raw: pa.NativeFile) -> pa.NativeFile:
    """`raw` (bytes of CSV text) as valid UTF-8, bad bytes replaced by U+FFFD (see `_Utf8Repair`)."""
    return pa.TransformInputStream(raw, _Utf8Repair())


def _first_line(path: Path) -> str:
    with pa.input_stream(str(path), compression="detect") as f:
        head = f.read(1 << 16).decode("utf-8-sig", "replace")
    return head.splitlines()[0] if head.strip() else ""


def _csv_header(path: Path, sep: str) -> tuple[tuple[str, ...], set[str]]:
    """Column names, and which of them look numeric in the first block."""
    try:
        stream = utf8_stream(pa.input_stream(str(path), compression="detect"))
        reader = pcsv.open_csv(stream, read_options=pcsv.ReadOptions(block_size=1 << 20, use_threads=False),
                               parse_options=pcsv.ParseOptions(delimiter=sep, invalid_row_handler=lambda _: "skip"))
    except (pa.ArrowException, OSError) as e:
        raise ReplayError(f"{path}: cannot read a CSV header with separator {sep!r}: {e}") from e
    except UnicodeDecodeError as e:
        raise ReplayError(f"{path}: the header is not UTF-8 text ({e.reason}); re-encode the file as UTF-8") from e
    schema = reader.schema
    try:
        names = schema.names
    except UnicodeDecodeError as e:
        raise ReplayError(f"{path}: the header is not UTF-8 text ({e.reason}); re-encode the file as UTF-8") from e
    if any(REPLACEMENT in n for n in names):
        raise ReplayError(f"{path}: the header is not UTF-8 text ({[n for n in names if REPLACEMENT in n][:3]}); "
                          f"re-encode the file as UTF-8")
    repeated = sorted({n for n in names if names.count(n) > 1})
    if repeated:
        raise ReplayError(f"{path}: repeated column name(s) {repeated}: every column needs its own name")
    numeric = {f.name for f in schema if _is_numeric(f.type)}
    try:
        sample = reader.read_next_batch()
    except StopIteration:
        return tuple(names), numeric
    except (pa.ArrowException, UnicodeDecodeError) as e:
        raise ReplayError(f"{path}: cannot read the first rows: {e}") from e
    for f in schema:  # a sensor column with a few error texts (or non-UTF-8 bytes) is still a sensor column
        if _is_text(f.type):
            _, present, ok = to_float(sample.column(f.name))
            if ok.sum() * 2 > present.sum():
                numeric.add(f.name)
    return tuple(names), numeric


def _long_time(path: Path, columns: tuple[str, ...], time_col: str | None) -> str:
    if time_col is not None:
        if time_col not in columns:
            raise ReplayError(f"{path}: time column {time_col!r} not found; columns are {list(columns)}")
        return time_col
    found = [c for c in LONG_TIME_NAMES if c in columns]
    if len(found) != 1:
        raise ReplayError(f"{path}: a long file needs one time column of {list(LONG_TIME_NAMES)}, found "
                          f"{found or 'none'} in {list(columns)}; pass time_col")
    return found[0]


def _plan_wide(base: FilePlan, numeric: set[str], time_col: str | None, asset_col: str | None, asset: str | None,
               sensor_cols: tuple[str, ...] | None, exclude: frozenset[str]) -> FilePlan:
    path, columns = base.path, base.columns
    for name, col in (("time", time_col), ("asset", asset_col)):
        if col is not None and col not in columns:
            raise ReplayError(f"{path}: {name} column {col!r} not found; columns are {list(columns)}")
    time_col = time_col or _guess_time(columns)
    if asset_col is None and asset is None and "asset_id" in columns:
        asset_col = "asset_id"  # a wide file of many assets
    if time_col is None:
        raise ReplayError(f"{path}: no time column: expected one named like {list(TIME_NAMES)} or a "
                          f"long file (ts, asset_id, sensor, value); columns are {list(columns)}; pass time_col")
    if sensor_cols:
        missing = [c for c in sensor_cols if c not in columns]
        if missing:
            raise ReplayError(f"{path}: sensor columns {missing} not found; columns are {list(columns)}")
    else:
        lowered = {e.lower() for e in exclude}
        sensor_cols = tuple(c for c in columns if c in numeric and c not in (time_col, asset_col)
                            and c.lower() not in lowered and not c.lower().startswith("unnamed:"))
    if not sensor_cols:
        raise ReplayError(f"{path}: no sensor columns: expected numeric columns besides {time_col!r}; "
                          f"columns are {list(columns)}; pass sensor_cols")
    stem = Path(path.name.removesuffix(path.suffix)).stem if path.suffix.lower() in _PACKED else path.stem
    if stem.isdigit() and path.resolve().parent.name:
        stem = f"{path.resolve().parent.name}-{stem}"
    return replace(base, time_col=time_col, asset_col=asset_col, asset=asset or stem, sensor_cols=tuple(sensor_cols))


def _guess_time(columns: tuple[str, ...]) -> str | None:
    lowered = [c.strip().lower() for c in columns]
    for i, c in enumerate(lowered):
        if c in TIME_NAMES:
            return columns[i]
    for i, c in enumerate(lowered):
        if "time" in c or "date" in c:
            return columns[i]
    return None


# -- batches to readings ----------------------------------------------------------------------------------


def decode_batch(plan: FilePlan, batch: pa.RecordBatch, first_row: int, bad_lines: list[int],
                  hint: list[int], line_base: int = 2, clock: LocalClock | None = None) -> Chunk:
    """Decode one batch whose first row is data row `first_row` of the file.

    `bad_lines` are the file lines of ragged rows the CSV reader skipped (they
    shift line numbers); `hint` remembers which text-to-time cast fit the file;
    `clock` (one per file, `plan.timezone`'s) reads times with no offset as local.
    """
    n = batch.num_rows
    ms, ts_ok = to_ms(batch.column(plan.time_col), hint, clock)

    def no_time(i: int) -> Invalid:
        if clock is not None and clock.skipped[i]:
            why = f"{plan.time_col} is a local time the clocks skipped in {clock.zone} (the change to summer time)"
        else:
            why = f"{plan.time_col} is not a time"
        return Invalid("bad_timestamp", why, raw(i), origin(i))

    def origin(i: int) -> str:
        return f"{plan.path}:{_line(first_row + i, bad_lines, line_base)}"

    def raw(i: int) -> str:
        return plan.sep.join(cell_text(batch.column(c), i) for c in plan.used)

    rejects: list[tuple[int, Invalid]] = []
    if plan.layout == "long":
        asset, asset_ok, asset_text = to_names(batch.column("asset_id"))
        sensor, sensor_ok, sensor_text = to_names(batch.column("sensor"))
        value, present, value_ok = to_float(batch.column("value"))
        good = ts_ok & asset_ok & sensor_ok & present & value_ok
        r = np.flatnonzero(good)
        readings = Readings(asset[r], sensor[r], ms[r], value[r])
        for k in np.flatnonzero(~good & ~_blank(batch)):
            i = int(k)
            if not (asset_text[i] and sensor_text[i]):
                name = "asset_id" if not asset_text[i] else "sensor"
                inv = Invalid("bad_value", f"{name} is not UTF-8 text", raw(i), origin(i))
            elif not (asset_ok[i] and sensor_ok[i]):
                name = "asset_id" if not asset_ok[i] else "sensor"
                inv = Invalid("missing_field", f"{name} is empty", raw(i), origin(i))
            elif not ts_ok[i]:
                inv = no_time(i)
            else:
                why = "value is empty" if not present[i] else "value is not a number"
                inv = Invalid("bad_value", why, raw(i), origin(i))
            rejects.append((i, inv))
        return Chunk(readings, r, rejects, n, np.where(ts_ok, ms, NO_TIME))
    wide_asset: np.ndarray | None
    if plan.asset_col:
        wide_asset, asset_ok, asset_text = to_names(batch.column(plan.asset_col))
    else:
        wide_asset, asset_ok, asset_text = None, np.ones(n, dtype=bool), np.ones(n, dtype=bool)
    cols = [to_float(batch.column(c)) for c in plan.sensor_cols]
    values = np.column_stack([c[0] for c in cols])
    present = np.column_stack([c[1] for c in cols])
    bad_cell = present & ~np.column_stack([c[2] for c in cols])
    present &= ~np.isnan(values)  # in a wide file NaN means "not sampled at this time", like an empty cell
    row_ok = ts_ok & asset_ok
    good = present & ~bad_cell & row_ok[:, None]
    r, s = np.nonzero(good)  # row-major: a row's sensors stay together, in column order
    names = np.array(plan.sensor_cols, dtype=object)
    asset_arr = wide_asset[r] if wide_asset is not None else np.full(len(r), plan.asset, dtype=object)
    readings = Readings(asset_arr, names[s], ms[r], values[r, s])
    for k in np.flatnonzero((~row_ok | bad_cell.any(axis=1)) & ~_blank(batch)):
        i = int(k)
        if not asset_text[i]:
            inv = Invalid("bad_value", f"{plan.asset_col} is not UTF-8 text", raw(i), origin(i))
        elif not asset_ok[i]:
            inv = Invalid("missing_field", f"{plan.asset_col} is empty", raw(i), origin(i))
        elif not ts_ok[i]:
            inv = no_time(i)
        else:
            cells = ", ".join(plan.sensor_cols[j] for j in np.flatnonzero(bad_cell[i]))
            inv = Invalid("bad_value", f"not a number in {cells}", raw(i), origin(i))
        rejects.append((i, inv))
    return Chunk(readings, r.astype(np.int64), rejects, n, np.where(row_ok, ms, NO_TIME))


def _blank(batch: pa.RecordBatch) -> np.ndarray:
    """Rows with every cell empty: blank lines, not bad data."""
    blank = np.ones(batch.num_rows, dtype=bool)
    for col in batch.columns:
        if col.null_count == 0:
            return np.zeros(batch.num_rows, dtype=bool)
        blank &= ~_valid(col)
    return blank


def _line(data_row: int, bad_lines: list[int], base: int) -> int:
    """The file line of a data row, stepping over the lines of skipped ragged rows."""
    line = data_row + base
    for b in bad_lines:
        if b <= line:
            line += 1
    return line
