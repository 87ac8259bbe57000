"""Replay file formats: planning, decoding, rejects, resume from a row (no dataflow)."""

from __future__ import annotations

import decimal
import pickle
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from smart_maintenance.operators.records import Readings
from smart_maintenance.sources.columns import to_ms
from smart_maintenance.sources.formats import FilePlan, ReplayError, plan_file
from smart_maintenance.sources.replay import read_chunks

SKAB = Path("/work/shared/data/skab/valve1/0.csv")
T0 = 1_700_000_000_000


def read_all(plan: FilePlan, **kw: int) -> tuple[list[tuple], list[tuple[str, str]]]:
    """All readings as rows, and the rejects as (reason, origin)."""
    chunks = list(read_chunks(plan, **kw))
    r = Readings.concat([c.readings for c in chunks])
    rows = list(zip(r.asset_id.tolist(), r.sensor.tolist(), r.ts.tolist(), r.value.tolist()))
    return rows, [(inv.reason, inv.origin.rsplit(":", 1)[1]) for c in chunks for _, inv in c.rejects]


def write(tmp_path: Path, name: str, text: str) -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def test_long_csv_rows_rejects_and_exact_lines(tmp_path: Path) -> None:
    path = write(tmp_path, "long.csv", (
        "ts,asset_id,sensor,value,note\n"
        "1700000000000,p1,temp,50.5,ok\n"
        "2023-11-14T22:13:21Z,p1,vib,2,\n"
        "soon,p1,temp,1,\n"
        "1700000000003,p2,temp,abc,\n"
        "\n"
        "1700000000004,p2,temp,1,too,many\n"
        "1700000000005,,temp,1,\n"
        "1700000000006,p2,temp,,\n"
        "1700000000007,p2,flow,7e1,\n"
    ))
    plan = plan_file(path)
    assert (plan.layout, plan.time_col, plan.sep) == ("long", "ts", ",")
    rows, rejects = read_all(plan)
    assert rows == [("p1", "temp", T0, 50.5), ("p1", "vib", T0 + 1000, 2.0), ("p2", "flow", T0 + 7, 70.0)]
    assert sorted(rejects, key=lambda x: int(x[1])) == [
        ("bad_timestamp", "4"), ("bad_value", "5"), ("bad_shape", "7"), ("missing_field", "8"), ("bad_value", "9"),
    ]
    [raw] = [inv.raw for c in read_chunks(plan) for _, inv in c.rejects if inv.reason == "bad_timestamp"]
    assert raw == "soon,p1,temp,1"  # the used fields of the row


def test_long_time_aliases(tmp_path: Path) -> None:
    ok = write(tmp_path, "a.csv", "timestamp;asset_id;sensor;value\n2023-11-14 22:13:20;p;t;1\n")
    assert read_all(plan_file(ok))[0] == [("p", "t", T0, 1.0)]
    both = write(tmp_path, "b.csv", "ts,time,asset_id,sensor,value\n1,2,p,t,1\n")
    with pytest.raises(ReplayError, match=r"one time column of \['ts', 'timestamp', 'time'\].*pass time_col"):
        plan_file(both)
    assert plan_file(both, time_col="time").time_col == "time"


def test_wide_csv_empty_and_nan_cells_are_no_reading(tmp_path: Path) -> None:
    path = write(tmp_path, "pump-07.csv", (
        "Time,temp,vib,status,label\n"
        "2023-11-14T22:13:20Z,50,1.5,on,0\n"
        "2023-11-14T22:13:21Z,,NaN,on,0\n"
        "2023-11-14T22:13:22Z,51,x,off,1\n"
        "later,52,1.6,on,0\n"
    ))
    plan = plan_file(path)
    assert (plan.layout, plan.time_col, plan.asset, plan.sensor_cols) == ("wide", "Time", "pump-07", ("temp", "vib"))
    rows, rejects = read_all(plan)
    assert rows == [("pump-07", "temp", T0, 50.0), ("pump-07", "vib", T0, 1.5), ("pump-07", "temp", T0 + 2000, 51.0)]
    assert rejects == [("bad_value", "4"), ("bad_timestamp", "5")]
    fixed = plan_file(path, asset="p9", sensor_cols=("vib",), time_col="Time")
    assert read_all(fixed)[0] == [("p9", "vib", T0, 1.5)]


def test_wide_csv_with_an_asset_column(tmp_path: Path) -> None:
    path = write(tmp_path, "plant.csv", "unit,ts,temp\nA,1700000000000,1\nB,1700000000001,2\n,1700000000002,3\n")
    plan = plan_file(path, asset_col="unit")
    assert plan.sensor_cols == ("temp",)
    rows, rejects = read_all(plan)
    assert rows == [("A", "temp", T0, 1.0), ("B", "temp", T0 + 1, 2.0)]
    assert rejects == [("missing_field", "4")]
    auto = write(tmp_path, "many.csv", "ts,asset_id,temp\n1700000000000,A,1\n")
    assert plan_file(auto).asset_col == "asset_id" and read_all(plan_file(auto))[0] == [("A", "temp", T0, 1.0)]


def test_skab_loads_without_editing() -> None:
    plan = plan_file(SKAB)
    assert (plan.sep, plan.time_col, plan.asset) == (";", "datetime", "valve1-0")
    assert len(plan.sensor_cols) == 8 and "anomaly" not in plan.sensor_cols and "changepoint" not in plan.sensor_cols
    chunks = list(read_chunks(plan))
    assert sum(c.rows for c in chunks) == 1147 and not any(c.rejects for c in chunks)
    r = Readings.concat([c.readings for c in chunks])
    assert len(r) == 1147 * 8 and set(r.sensor.tolist()) == set(plan.sensor_cols)
    assert r.ts[0] == 1_583_748_873_000  # 2020-03-09T10:14:33, naive = UTC
    assert r.sensor[:2].tolist() == ["Accelerometer1RMS", "Accelerometer2RMS"] and r.value[0] == 0.0265878
    labels = plan_file(SKAB, exclude_cols=())
    assert labels.sensor_cols[-2:] == ("anomaly", "changepoint")


def test_parquet_wide_and_long(tmp_path: Path) -> None:
    ts = pa.array([T0, T0 + 1000, None], pa.timestamp("ms", tz="Europe/Berlin"))
    wide = tmp_path / "m1.parquet"
    pq.write_table(pa.table({"ts": ts, "rpm": [1.0, None, 3.0], "on": [True, False, True], "amps": [1, 2, 3]}), wide)
    plan = plan_file(wide)
    assert (plan.layout, plan.sensor_cols) == ("wide", ("rpm", "amps"))
    rows, rejects = read_all(plan)
    assert rows == [("m1", "rpm", T0, 1.0), ("m1", "amps", T0, 1.0), ("m1", "amps", T0 + 1000, 2.0)]
    assert rejects == [("bad_timestamp", "3")]
    long = tmp_path / "l.parquet"
    pq.write_table(pa.table({"asset_id": ["a", "b"], "sensor": ["t", "t"], "ts": ["2023-11-14T23:13:20+01:00", "x"],
                             "value": [1.5, 2.5]}), long)
    assert read_all(plan_file(long)) == ([("a", "t", T0, 1.5)], [("bad_timestamp", "2")])


def test_jsonl_lines_frames_and_origins(tmp_path: Path) -> None:
    path = write(tmp_path, "r.jsonl", (
        '{"asset_id":"p","sensor":"t","ts":1700000000000,"value":1}\n'
        "\n"
        '{"asset_id":"p","ts":"2023-11-14T22:13:21Z","values":{"a":2,"b":3}}\n'
        "{not json\n"
        '[{"asset_id":"q","sensor":"t","ts":1700000000002,"value":4}]\n'
    ))
    plan = plan_file(path)
    assert plan.layout == "jsonl"
    rows, rejects = read_all(plan, chunk_rows=2)
    assert rows == [("p", "t", T0, 1.0), ("p", "a", T0 + 1000, 2.0), ("p", "b", T0 + 1000, 3.0),
                    ("q", "t", T0 + 2, 4.0)]
    assert rejects == [("bad_json", "4")]


@pytest.mark.parametrize("suffix", ["csv", "parquet", "jsonl"])
def test_resume_from_any_row_gives_exactly_the_rest(tmp_path: Path, suffix: str) -> None:
    n = 23
    ts = [T0 + i for i in range(n)]
    values = [str(i) if i % 7 else "bad" for i in range(n)]  # a reject every 7 rows
    path = tmp_path / f"f.{suffix}"
    if suffix == "csv":
        path.write_text("ts,asset_id,sensor,value\n" + "".join(f"{t},p,s,{v}\n" for t, v in zip(ts, values)))
    elif suffix == "parquet":
        pq.write_table(pa.table({"ts": ts, "asset_id": ["p"] * n, "sensor": ["s"] * n, "value": values}), path,
                       row_group_size=5)
    else:
        path.write_text("".join(f'{{"asset_id":"p","sensor":"s","ts":{t},"value":{v}}}\n' for t, v in zip(ts, values)))
    plan = plan_file(path)
    rows, rejects = read_all(plan, chunk_rows=4)
    assert len(rows) == 19 and len(rejects) == 4
    for start in (1, 4, 5, 11, 22, 23):
        rest_rows, rest_rejects = read_all(plan, chunk_rows=4, start_row=start)
        assert rest_rows == [r for r in rows if r[2] - T0 >= start]
        assert rest_rejects == [x for x in rejects if int(x[1]) - (1 if suffix == "csv" else 0) > start]


def test_chunks_respect_chunk_rows_and_count_rows(tmp_path: Path) -> None:
    path = write(tmp_path, "w.csv", "ts,a,b\n" + "".join(f"{T0 + i},{i},{i}\n" for i in range(10)))
    chunks = list(read_chunks(plan_file(path), chunk_rows=3))
    assert [c.rows for c in chunks] == [3, 3, 3, 1]
    assert [len(c.readings) for c in chunks] == [6, 6, 6, 2]
    assert chunks[1].row.tolist() == [0, 0, 1, 1, 2, 2] and chunks[1].times().tolist() == [T0 + 3, T0 + 4, T0 + 5]


def test_plan_errors_say_what_was_expected(tmp_path: Path) -> None:
    with pytest.raises(ReplayError, match="no such file"):
        plan_file(tmp_path / "missing.csv")
    with pytest.raises(ReplayError, match="cannot tell the format"):
        plan_file(write(tmp_path, "x.xlsx", "a"))
    with pytest.raises(ReplayError, match=r"no time column.*\['a', 'b'\].*pass time_col"):
        plan_file(write(tmp_path, "n.csv", "a,b\n1,2\n"))
    with pytest.raises(ReplayError, match=r"sensor columns \['zz'\] not found"):
        plan_file(write(tmp_path, "s.csv", "ts,a\n1,2\n"), sensor_cols=("zz",))
    with pytest.raises(ReplayError, match="no sensor columns"):
        plan_file(write(tmp_path, "t.csv", "ts,name\n1,x\n"))
    with pytest.raises(ReplayError, match="asset column 'unit' not found"):
        plan_file(write(tmp_path, "u.csv", "ts,a\n1,2\n"), asset_col="unit")
    with pytest.raises(ValueError, match="fmt must be one of"):
        plan_file(write(tmp_path, "v.csv", "ts,a\n1,2\n"), fmt="xls")


def test_to_ms_text_forms_and_fallback() -> None:
    def ms(values: list) -> tuple[list[int], list[bool]]:
        out, ok = to_ms(pa.array(values, pa.string()))
        return out.tolist(), ok.tolist()

    assert ms([str(T0), None]) == ([T0, 0], [True, False])
    assert ms(["2023-11-14T22:13:20.5Z", "2023-11-14T23:13:20+01:00"]) == ([T0 + 500, T0], [True, True])
    assert ms(["2023-11-14 22:13:20", "1969-12-31T23:59:59.9995"]) == ([T0, -1], [True, True])
    assert ms(["1700000000000.6"]) == ([T0 + 1], [True])
    assert ms([str(T0), "2023-11-14T22:13:21Z", "nope"]) == ([T0, T0 + 1000, 0], [True, True, False])  # mixed
    out, ok = to_ms(pa.array([1.7e12, np.nan]))
    assert out.tolist()[0] == T0 and ok.tolist() == [True, False]


def test_to_ms_odd_column_types() -> None:
    def ms(arr: pa.Array) -> tuple[list[int], list[bool]]:
        out, ok = to_ms(arr)
        return out.tolist(), ok.tolist()

    assert ms(pa.array([2**64 - 1, T0, None], pa.uint64())) == ([0, T0, 0], [False, True, False])  # past 2^63: no time
    assert ms(pa.array([1e300, T0 + 0.4])) == ([0, T0], [False, True])  # past int64: no time, not a wrapped one
    assert ms(pa.array([str(T0), "x"]).dictionary_encode()) == ([T0, 0], [True, False])
    assert ms(pa.array([b"1700000000000", b"\xff"], pa.binary())) == ([T0, 0], [True, False])
    assert ms(pa.array([decimal.Decimal(T0)], pa.decimal128(38, 0))) == ([T0], [True])


def test_file_plan_pickles(tmp_path: Path) -> None:
    plan = plan_file(SKAB, asset="valve1-0")
    assert pickle.loads(pickle.dumps(plan)) == plan
