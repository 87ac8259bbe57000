"""Property tests of the replay readers: mutated CSV, JSONL and Parquet files.

`audit_file` (shared with `bench/fuzz.py`) plans and reads a file and returns
every way the result breaks the contract:

- planning raises nothing but `ReplayError`, and reading raises nothing at all;
- every data line (CSV/JSONL; for Parquet every row) ends as >= 1 reading or a
  reject whose origin is `path:<that line>`, except lines the format documents
  as no reading: blank lines, lines whose used cells are all empty, wide lines
  whose sensor cells are all empty or NaN. A CSV with a quote character is only
  checked for crashes and well-formed rejects (quoted line breaks shift lines);
- rejects have a documented reason, a detail and raw text;
- after `check_readings` the readings hold the contract (see test_fuzz_parse);
- lines generated valid give exactly the readings they hold.
"""

from __future__ import annotations

import atexit
import io
import math
import re
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from smart_maintenance.operators.ingest.parse import MIN_TS_MS
from smart_maintenance.operators.records import Parsed, Readings, iso
from smart_maintenance.sources.formats import ReplayError, plan_file
from smart_maintenance.sources.replay import read_chunks
from tests.unit.test_fuzz_parse import (
    FUZZ,
    NOW,
    PARSE_REASONS,
    _audit_check,
    _doc,
    payloads,
    rows,
)

FILE_REASONS = frozenset({"bad_shape", "bad_timestamp", "bad_value", "missing_field"}) | PARSE_REASONS
SAFE = st.characters(codec="utf-8", exclude_characters=',;\t|"\r\n')  # cells that cannot split or quote
cell_text = st.text(SAFE, max_size=10)
sensor_names = st.text(st.characters(codec="ascii", categories=["Ll"]), min_size=1, max_size=6).map("s_".__add__)


@dataclass
class FileCase:
    """A generated file and what each of its data lines (from line 2; Parquet: row 1) should give."""

    name: str
    data: bytes
    expect: dict[int, list[tuple]] = field(default_factory=dict)  # line -> exact readings of valid lines
    clean: bool = False  # no file-level mutation: planning must succeed


# -- CSV -----------------------------------------------------------------------------------------------------


def _cells(draw: st.DrawFn, layout: str, sensors: list[str]) -> tuple[list[str], list[tuple] | None]:
    """One row's cells and its readings, or None when the row was spoiled."""
    ms = draw(st.integers(MIN_TS_MS, NOW))
    stamp = draw(st.sampled_from([str(ms), iso(ms), iso(ms).replace("T", " ").rstrip("Z")]))
    vals = [draw(st.floats(-1e12, 1e12).map(lambda v: float(f"{v:.6g}"))) for _ in sensors]
    if layout == "long":
        asset = draw(st.sampled_from(["p1", "comp-7", "ü-9"]))
        cells, want = [stamp, asset, sensors[0], repr(vals[0])], [(asset, sensors[0], ms, vals[0])]
    else:
        cells, want = [stamp] + [repr(v) for v in vals], [("plant", s, ms, v) for s, v in zip(sensors, vals)]
    how = draw(st.sampled_from(["ok"] * 5 + ["short", "long", "cell", "empty", "nan", "blank", "spaces"]))
    if how == "ok":
        return cells, want
    k = draw(st.integers(0, len(cells) - 1))
    if how == "short":
        cells = cells[:k] if k else []
    elif how == "long":
        cells = cells + draw(st.lists(cell_text, min_size=1, max_size=2))
    elif how in ("cell", "empty", "nan"):
        cells[k] = {"cell": draw(cell_text), "empty": "",
                    "nan": draw(st.sampled_from(["nan", "NaN", "inf", "-1e999"]))}[how]
    else:
        cells = [] if how == "blank" else [" " * len(cells)]
    return cells, None


@st.composite
def csv_files(draw: st.DrawFn) -> FileCase:
    layout = draw(st.sampled_from(["long", "wide"]))
    sep, eol = draw(st.sampled_from([",", ";", "\t", "|"])), draw(st.sampled_from(["\n", "\r\n", "\r"]))
    sensors = draw(st.lists(sensor_names, min_size=1, max_size=4, unique=True))
    header = ["ts", "asset_id", "sensor", "value"] if layout == "long" else ["ts", *sensors]
    lines, expect = [sep.join(header)], {}
    for line in range(2, 2 + draw(st.integers(0, 25))):
        cells, want = _cells(draw, layout, sensors)
        lines.append(sep.join(cells))
        if want is not None:
            expect[line] = want
    text = eol.join(lines) + draw(st.sampled_from([eol, ""]))
    how = draw(st.sampled_from(["none"] * 6 + ["bom", "mixed_sep", "quote", "empty", "header_only", "bytes"]))
    if how != "none":
        expect = {}
    data = text.encode()
    if how == "bom":
        data, expect = b"\xef\xbb\xbf" + data, {}
    elif how == "mixed_sep":
        data = data.replace(sep.encode(), draw(st.sampled_from([b",", b";", b"\t"])), draw(st.integers(1, 20)))
    elif how == "quote":
        at = draw(st.integers(0, len(data)))
        data = data[:at] + b'"' + draw(st.sampled_from([b"a\nb", b"", b'""', b"x,y"])) + b'"' + data[at:]
    elif how in ("empty", "header_only"):
        data = b"" if how == "empty" else lines[0].encode() + eol.encode()
    elif how == "bytes":  # noise, invalid UTF-8 included
        for _ in range(draw(st.integers(1, 4))):
            at = draw(st.integers(0, len(data)))
            data = data[:at] + bytes([draw(st.integers(1, 255))]) + data[at + 1:]
    # a header alone without a line break is refused by Arrow ("cannot infer number of columns"): a nit, left be
    return FileCase("fuzz.csv", data, expect, clean=how == "none" and (len(lines) > 1 or text.endswith(eol)))


# -- the audit -------------------------------------------------------------------------------------------------


def audit_file(case: FileCase, folder: Path, chunk_rows: int = 100_000,
               **opts: object) -> tuple[str, Parsed, list[str]]:
    """Write, plan and read one file: ("planned" | "refused" | "crash", checked readings, problems)."""
    path = folder / case.name
    path.write_bytes(case.data)
    try:
        plan = plan_file(path, **opts)
    except ReplayError as e:
        return "refused", Parsed(Readings.empty()), [] if str(path) in str(e) else [f"unclear_error: {e}"[:200]]
    except Exception as e:  # noqa: BLE001 - counted by the caller
        return "crash", Parsed(Readings.empty()), [f"crash:plan {type(e).__name__}: {e}"[:200]]
    try:
        chunks = list(read_chunks(plan, chunk_rows=chunk_rows))
    except Exception as e:  # noqa: BLE001 - a ReplayError while reading aborts a replay as surely
        return "crash", Parsed(Readings.empty()), [f"crash:read {type(e).__name__}: {e}"[:200]]
    problems: list[str] = []
    base, readings, rejects, by_row = 0, [], [], {}
    for c in chunks:
        readings.append(c.readings)
        for r, reading in zip(c.row.tolist(), rows(c.readings)):
            by_row.setdefault(base + r, []).append(reading)
        rejects += [(base + r, inv) for r, inv in c.rejects]
        base += c.rows
    for _, inv in rejects:
        if inv.reason not in FILE_REASONS or not inv.detail or not inv.origin.startswith(f"{path}:"):
            problems.append(f"bad_reject: {inv.reason!r} {inv.detail[:50]!r} at {inv.origin[-20:]!r}")
    if plan.fmt != "parquet" and b'"' not in case.data:
        problems += _lines(case, plan, path, by_row, rejects)
    elif plan.fmt == "parquet":
        problems += _parquet_rows(case, plan, path, by_row, rejects)
    out, problems = _audit_check(Parsed(Readings.concat(readings), tuple(inv for _, inv in rejects)), problems)
    return "planned", out, problems


def _physical_lines(data: bytes, fmt: str) -> list[bytes]:
    parts = data.split(b"\n") if fmt == "jsonl" else re.split(rb"\r\n|\n|\r", data)
    return parts[:-1] if parts and parts[-1] == b"" else parts


def _lines(case: FileCase, plan: object, path: Path, by_row: dict, rejects: list) -> list[str]:
    """Every data line is a reading or a reject at its own line; valid lines give their readings."""
    lines = _physical_lines(case.data, plan.fmt)
    first = 1 if plan.fmt == "jsonl" else 2
    ragged = {int(inv.origin.rsplit(":", 1)[1]) for _, inv in rejects
              if inv.reason == "bad_shape" and " columns, found " in inv.detail}
    data_lines = [n for n in range(first, len(lines) + 1) if n not in ragged]
    line_of = {r: data_lines[r] for r in range(len(data_lines))}
    seen, problems = set(ragged), []
    for r, inv in rejects:
        if inv.origin.rsplit(":", 1)[1] in (str(n) for n in ragged):
            continue
        if str(line_of.get(r)) != inv.origin.rsplit(":", 1)[1]:
            problems.append(f"wrong_line: reject of row {r} says {inv.origin.rsplit(':', 1)[1]}, is {line_of.get(r)}")
        seen.add(line_of.get(r))
    for r, got in by_row.items():
        seen.add(line_of.get(r))
        want = [x for x in case.expect.get(line_of.get(r), []) if plan.layout == "long" or x[1] in plan.sensor_cols]
        if line_of.get(r) in case.expect and sorted(got) != sorted(want):
            problems.append(f"wrong_readings: line {line_of.get(r)} gave {got[:2]} not {case.expect[line_of[r]][:2]}")
    for n in data_lines:
        if n not in seen and not _may_be_silent(lines[n - 1], plan):
            ragged_line = plan.fmt == "csv" and len(lines[n - 1].split(plan.sep.encode())) != len(plan.columns)
            kind = ("silent_empty_list" if plan.fmt == "jsonl" and _doc(lines[n - 1]) == [] else
                    "silent_ragged" if ragged_line else "silent")
            problems.append(f"{kind}: line {n} {lines[n - 1][:60]!r} left no reading and no reject")
    return problems + [f"lost_valid_line: {n}" for n in case.expect if n not in seen]


def _may_be_silent(line: bytes, plan: object) -> bool:
    if plan.fmt == "jsonl":
        return not line.strip()
    cells = dict(zip(plan.columns, line.decode("utf-8", "replace").split(plan.sep)))
    used = [cells.get(c, "") for c in plan.used]
    sensors = [cells.get(c, "") for c in plan.sensor_cols]
    return all(u == "" for u in used) or (plan.layout == "wide" and all(u == "" or _nan(u) for u in sensors))


def _nan(text: str) -> bool:
    try:
        return math.isnan(float(text))
    except ValueError:
        return False


# -- JSONL and Parquet ----------------------------------------------------------------------------------------


@st.composite
def jsonl_files(draw: st.DrawFn) -> FileCase:
    lines = draw(st.lists(payloads(), max_size=12))
    return FileCase("fuzz.jsonl", b"".join(p + draw(st.sampled_from([b"\n", b"\r\n", b"\n\n"])) for p in lines))


def _column(draw: st.DrawFn, n: int, kind: str) -> pa.Array:
    if kind == "ts":
        t = draw(st.sampled_from(["int", "float", "text", "timestamp", "date"]))
        ms = [draw(st.none() | st.integers(MIN_TS_MS, NOW)) for _ in range(n)]
        return {"int": lambda: pa.array(ms, pa.int64()), "float": lambda: pa.array([m and m + 0.4 for m in ms]),
                "text": lambda: pa.array([m and iso(m) if m != MIN_TS_MS else "soon" for m in ms]),
                "timestamp": lambda: pa.array(ms, pa.timestamp("ms", "UTC")),
                "date": lambda: pa.array([m and m // 86_400_000 for m in ms], pa.date32())}[t]()
    t = draw(st.sampled_from(["float", "int", "text", "null", "decimal"]))
    vals = [draw(st.none() | st.floats(width=32) | st.integers(-10**6, 10**6).map(float)) for _ in range(n)]
    if t == "text":
        return pa.array([draw(st.none() | cell_text | st.just(repr(v))) for v in vals])
    if t in ("int", "decimal"):
        ints = [None if v is None or not abs(v) < 1e18 else int(v) for v in vals]
        return pa.array(ints, pa.int64() if t == "int" else pa.decimal128(38, 0))
    return pa.array([None] * n, pa.null()) if t == "null" else pa.array(vals, pa.float64())


@st.composite
def parquet_files(draw: st.DrawFn) -> FileCase:
    n, layout = draw(st.integers(0, 20)), draw(st.sampled_from(["long", "wide", "wide_assets"]))
    cols = {"ts": _column(draw, n, "ts")}
    if layout == "long":
        cols["asset_id"] = pa.array([draw(st.none() | cell_text | st.just("p1")) for _ in range(n)])
        cols["sensor"] = pa.array([draw(st.none() | cell_text | st.just("t")) for _ in range(n)], pa.string())
        cols["value"] = _column(draw, n, "value")
    else:
        if layout == "wide_assets":
            cols["asset_id"] = pa.array([draw(st.none() | st.sampled_from(["p1", "p2", ""])) for _ in range(n)],
                                        pa.string())
        for s in draw(st.lists(sensor_names, min_size=1, max_size=3, unique=True)):
            cols[s] = _column(draw, n, "value")
    buf = io.BytesIO()
    pq.write_table(pa.table(cols), buf, row_group_size=draw(st.sampled_from([3, 1000])))
    return FileCase("fuzz.parquet", buf.getvalue())


def _as_py(col: pa.ChunkedArray, r: int) -> object:
    """A cell as Python; text that is not UTF-8 (Parquet does not check it) decoded with replacement."""
    if pa.types.is_string(col.type) or pa.types.is_large_string(col.type):
        b = col.chunk(0).view(pa.binary() if pa.types.is_string(col.type) else pa.large_binary()) \
            if col.num_chunks == 1 else pa.concat_arrays(col.chunks).view(pa.binary())
        v = b[r].as_py()
        return None if v is None else v.decode("utf-8", "replace")
    try:
        return col[r].as_py()
    except (OverflowError, ValueError):  # a time past Python's datetime: a cell all the same
        return "out of range" if col[r].is_valid else None


def _parquet_rows(case: FileCase, plan: object, path: Path, by_row: dict, rejects: list) -> list[str]:
    try:
        table = pq.ParquetFile(path).read(columns=list(plan.used))
    except Exception as e:  # noqa: BLE001 - the file was planned, so the reader vouched for it
        return [f"crash:read unnoticed corruption {type(e).__name__}: {e}"[:200]]
    problems, seen = [], set(by_row)
    for r, inv in rejects:
        seen.add(r)
        if inv.origin != f"{path}:{r + 1}":
            problems.append(f"wrong_line: reject of row {r} says {inv.origin.rsplit(':', 1)[1]}")
    for r in range(table.num_rows):
        row = {c: _as_py(table.column(c), r) for c in plan.used}
        cells = [row[c] for c in plan.sensor_cols] if plan.layout == "wide" else list(row.values())
        quiet = all(v is None for v in row.values()) or all(
            v is None or (isinstance(v, float) and math.isnan(v)) or (isinstance(v, str) and (v == "" or _nan(v)))
            for v in cells) and plan.layout == "wide"
        if r not in seen and not quiet:
            problems.append(f"silent: row {r + 1} {str(row)[:60]} left no reading and no reject")
    return problems


# -- properties ---------------------------------------------------------------------------------------------------

_DIR = Path(tempfile.mkdtemp(prefix="sm-fuzz-files-"))
atexit.register(shutil.rmtree, _DIR, ignore_errors=True)


@FUZZ
@given(csv_files(), st.sampled_from([1, 4, 100_000]))
def test_mutated_csv_every_line_is_a_reading_or_a_reject_at_its_line(case: FileCase, chunk_rows: int) -> None:
    outcome, _, problems = audit_file(case, _DIR, chunk_rows=chunk_rows, asset="plant")
    assert problems == [] and (outcome == "planned" or not case.clean)


@FUZZ
@given(jsonl_files(), st.sampled_from([1, 3, 100_000]))
def test_jsonl_every_line_is_a_reading_or_a_reject_at_its_line(case: FileCase, chunk_rows: int) -> None:
    outcome, _, problems = audit_file(case, _DIR, chunk_rows=chunk_rows)
    assert outcome == "planned" and problems == []


@settings(FUZZ, max_examples=80)  # a Parquet file costs more to make than to read
@given(parquet_files(), st.sampled_from([2, 100_000]))
def test_parquet_every_row_is_a_reading_or_a_reject(case: FileCase, chunk_rows: int) -> None:
    outcome, _, problems = audit_file(case, _DIR, chunk_rows=chunk_rows)
    assert outcome in ("planned", "refused") and problems == []


def _flat(chunks: list, base: int = 0) -> tuple[list[tuple], list[tuple]]:
    """Readings and rejects of a read, each with its data row (a resumed read starts at `base`)."""
    got: list[tuple] = []
    rej: list[tuple] = []
    for c in chunks:
        got += [(base + r, *x) for r, x in zip(c.row.tolist(), rows(c.readings))]
        rej += [(base + r, inv.reason, inv.origin) for r, inv in c.rejects]
        base += c.rows
    return got, rej


@settings(FUZZ, max_examples=80)
@given(st.one_of(csv_files(), jsonl_files()), st.integers(0, 30), st.sampled_from([1, 4, 100_000]))
def test_a_read_resumed_at_any_row_gives_exactly_the_rest(case: FileCase, start: int, chunk_rows: int) -> None:
    path = _DIR / case.name
    path.write_bytes(case.data)
    try:
        plan = plan_file(path, asset="plant")
    except ReplayError:
        return
    got, rej = _flat(list(read_chunks(plan, chunk_rows=chunk_rows)))
    again, again_rej = _flat(list(read_chunks(plan, start_row=start, chunk_rows=chunk_rows)), base=start)
    assert again == [x for x in got if x[0] >= start] and again_rej == [x for x in rej if x[0] >= start]


# -- bugs the fuzzing found, now fixed: kept as regression tests ---------------------------------------------------


def test_repeated_column_names_are_a_replay_error(tmp_path: Path) -> None:
    case = FileCase("dup.csv", b"ts,value,value\n1700000000000,1,2\n")
    outcome, _, problems = audit_file(case, tmp_path)
    assert outcome == "refused" and problems == []


def test_repeated_parquet_column_names_are_a_replay_error(tmp_path: Path) -> None:
    buf = io.BytesIO()
    pq.write_table(pa.Table.from_arrays([pa.array([1_700_000_000_000]), pa.array([1.0]), pa.array([2.0])],
                                        names=["ts", "v", "v"]), buf)
    outcome, _, problems = audit_file(FileCase("dup.parquet", buf.getvalue()), tmp_path)
    assert outcome == "refused" and problems == []


def test_a_csv_of_only_ragged_rows_rejects_each(tmp_path: Path) -> None:
    case = FileCase("ragged.csv", b"ts,a,b\nx\n1700000000000,1\n")
    outcome, out, problems = audit_file(case, tmp_path)
    assert outcome == "planned" and problems == [] and [x.reason for x in out.rejects] == ["bad_shape"] * 2


def test_a_non_utf8_cell_is_a_reject_of_its_line(tmp_path: Path) -> None:
    case = FileCase("bad.csv", b"ts,asset_id,sensor,value\n1700000000000,p\xff,t,1\n1700000000000,p,t,2\n")
    outcome, out, problems = audit_file(case, tmp_path)
    assert outcome == "planned" and problems == [] and len(out.readings) == 1
    assert [(x.reason, x.origin) for x in out.rejects] == [("bad_value", f"{tmp_path}/bad.csv:2")]
    assert out.rejects[0].detail == "asset_id is not UTF-8 text" and out.rejects[0].raw == "1700000000000,p\ufffd,t,1"


@pytest.mark.parametrize("chunk_rows", [1, 100_000])
def test_non_utf8_bytes_anywhere_in_a_csv_cost_only_their_lines(tmp_path: Path, chunk_rows: int) -> None:
    data = (b"ts,a,b\n"
            b"1700000000000,1,2\n"
            b"17000000\xfe00001,1,2\n"  # time
            b"1700000000002,1\xff,2\n"  # one sensor cell: the other still reads
            b"1700000000003,1,2,\xe9t\xe9\n"  # a ragged line (pyarrow decodes its text strictly)
            b"1700000000004,\xc3,5\n"  # a cut two-byte sequence
            b"1700000000005,6,7\n")
    outcome, out, problems = audit_file(FileCase("bad.csv", data), tmp_path, chunk_rows=chunk_rows, asset="m")
    assert outcome == "planned" and problems == []
    rejects = sorted((x.origin.rsplit(":", 1)[1], x.reason) for x in out.rejects)
    assert rejects == [("3", "bad_timestamp"), ("4", "bad_value"), ("5", "bad_shape"), ("6", "bad_value")]
    got = sorted(zip(out.readings.ts.tolist(), out.readings.sensor.tolist(), out.readings.value.tolist()))
    t = 1_700_000_000_000
    assert got == [(t, "a", 1.0), (t, "b", 2.0), (t + 2, "b", 2.0), (t + 4, "b", 5.0), (t + 5, "a", 6.0),
                   (t + 5, "b", 7.0)]


def test_a_non_utf8_header_is_a_replay_error(tmp_path: Path) -> None:
    case = FileCase("utf16.csv", "ts,asset_id,sensor,value\n1700000000000,p,t,1\n".encode("utf-16"))
    assert audit_file(case, tmp_path)[0] == "refused"


def test_a_corrupt_parquet_page_is_a_replay_error(tmp_path: Path) -> None:
    buf = io.BytesIO()
    pq.write_table(pa.table({"ts": np.arange(1000) + 1_700_000_000_000, "v": np.arange(1000.0)}), buf)
    data = bytearray(buf.getvalue())
    data[200:260] = b"\xff" * 60  # inside the first column chunk's data page
    path = tmp_path / "corrupt.parquet"
    path.write_bytes(bytes(data))
    with pytest.raises(ReplayError, match=r"corrupt.parquet: corrupt Parquet file: row group 0 \(from row 1\)"):
        plan_file(path)  # refused before a row is emitted, not half-way through the replay


def test_a_corrupt_later_row_group_names_it(tmp_path: Path) -> None:
    path = tmp_path / "late.parquet"
    pq.write_table(pa.table({"ts": np.arange(1000) + 1_700_000_000_000, "v": np.arange(1000.0)}), path,
                   row_group_size=400, compression="snappy")
    meta = pq.ParquetFile(path).metadata.row_group(2).column(1)
    data = bytearray(path.read_bytes())
    start = meta.data_page_offset + 20
    data[start:start + 40] = b"\xff" * 40
    path.write_bytes(bytes(data))
    with pytest.raises(ReplayError, match=r"row group 2 \(from row 801\)"):
        plan_file(path)


def test_a_parquet_file_spoiled_after_planning_is_a_replay_error_at_read(tmp_path: Path) -> None:
    path = tmp_path / "changed.parquet"
    pq.write_table(pa.table({"ts": np.arange(10) + 1_700_000_000_000, "v": np.arange(10.0)}), path)
    plan = plan_file(path)
    path.write_bytes(path.read_bytes()[:40])
    with pytest.raises(ReplayError, match="changed.parquet"):
        list(read_chunks(plan))


@pytest.mark.parametrize("column", [pa.array([{"x": 1}]), pa.array([[1]]), pa.array([2**64 - 1], pa.uint64()),
                                    pa.array([b"\xff"])])
def test_an_odd_parquet_column_type_is_a_replay_error_or_rejects(tmp_path: Path, column: pa.Array) -> None:
    buf = io.BytesIO()
    pq.write_table(pa.table({"ts": column, "asset_id": column, "v": [1.0]}), buf)
    outcome, _, problems = audit_file(FileCase("typed.parquet", buf.getvalue()), tmp_path)
    assert outcome in ("planned", "refused") and problems == []


@pytest.mark.parametrize(("role", "cols"), [
    ("time", {"ts": pa.array([{"x": 1}]), "v": [1.0]}),
    ("time", {"ts": pa.array([1], pa.duration("s")), "v": [1.0]}),
    ("name", {"ts": [1_700_000_000_000], "asset_id": pa.array([[1]]), "v": [1.0]}),
    ("name", {"ts": [1_700_000_000_000], "asset_id": ["p"], "sensor": pa.array([{"x": "t"}]), "value": [1.0]}),
    ("value", {"ts": [1_700_000_000_000], "asset_id": ["p"], "sensor": ["t"], "value": pa.array([[1.0]])}),
])
def test_a_parquet_column_no_reading_can_come_from_is_refused_at_plan(tmp_path: Path, role: str, cols: dict) -> None:
    path = tmp_path / "typed.parquet"
    pq.write_table(pa.table(cols), path)
    with pytest.raises(ReplayError, match=rf"typed.parquet: {role} column '\w+' holds"):
        plan_file(path)


def test_odd_parquet_cells_are_rejects_with_reasons(tmp_path: Path) -> None:
    path = tmp_path / "cells.parquet"
    pq.write_table(pa.table({"ts": pa.array([2**64 - 1, 1_700_000_000_000, 1_700_000_000_001], pa.uint64()),
                             "asset_id": pa.array([b"p", b"p\xff", b"q"]), "v": [1.0, 2.0, 3.0]}), path)
    chunks = list(read_chunks(plan_file(path)))
    assert [(x.reason, x.detail, x.raw) for c in chunks for _, x in c.rejects] == [
        ("bad_timestamp", "ts is not a time", "18446744073709551615,p,1.0"),
        ("bad_value", "asset_id is not UTF-8 text", "1700000000000,p\\xff,2.0")]
    assert [(a, v) for c in chunks for a, v in zip(c.readings.asset_id, c.readings.value)] == [("q", 3.0)]
