"""ReplaySource in a real Bytewax flow: partitions, pacing, progress, resume after an abort."""

from __future__ import annotations

import time
from datetime import timedelta
from pathlib import Path

import bytewax.operators as op
import pytest
from bytewax.dataflow import Dataflow
from bytewax.recovery import RecoveryConfig, init_db_dir
from bytewax.testing import TestingSink, run_main

from smart_maintenance.operators.records import Parsed
from smart_maintenance.sources.replay import ReplayError, ReplaySource

T0 = 1_700_000_000_000


def long_csv(path: Path, n: int, asset: str = "p1", bad_every: int = 0) -> Path:
    lines = [f"{T0 + i * 1000},{asset},temp,{'x' if bad_every and i % bad_every == 0 else i}" for i in range(n)]
    path.write_text("ts,asset_id,sensor,value\n" + "\n".join(lines) + "\n")
    return path


def flatten(items: list[Parsed]) -> tuple[list[tuple[str, int, float]], list[str]]:
    rows = [row for p in items
            for row in zip(p.readings.asset_id.tolist(), p.readings.ts.tolist(), p.readings.value.tolist())]
    return rows, [r.origin for p in items for r in p.rejects]


def replay_flow(source: ReplaySource, out: list, fail_on: float | None = None) -> Dataflow:
    flow = Dataflow("replay_test")
    batches = op.input("read", flow, source)
    if fail_on is not None:  # abort the run once, in the middle of the file

        def boom(p: Parsed) -> Parsed:
            if fail_on in p.readings.value.tolist():
                raise RuntimeError("injected failure")
            return p

        batches = op.map("fail_once", batches, boom)
    op.output("out", batches, TestingSink(out))
    return flow


def test_reads_a_small_csv_in_chunks(tmp_path: Path) -> None:
    path = long_csv(tmp_path / "a.csv", 10, bad_every=4)
    out: list[Parsed] = []
    run_main(replay_flow(ReplaySource([path], chunk_rows=3, progress=True), out))
    rows, origins = flatten(out)
    assert rows == [("p1", T0 + i * 1000, float(i)) for i in range(10) if i % 4]
    assert origins == [f"{path}:2", f"{path}:6", f"{path}:10"]
    assert [len(p.readings) + len(p.rejects) for p in out] == [3, 3, 3, 1]


def test_one_partition_per_file_in_file_order(tmp_path: Path) -> None:
    a, b = long_csv(tmp_path / "a.csv", 5, "pa"), long_csv(tmp_path / "b.csv", 4, "pb")
    src = ReplaySource([str(a), str(b)], chunk_rows=2)
    assert src.list_parts() == [str(a), str(b)]
    out: list[Parsed] = []
    run_main(replay_flow(src, out))
    rows, _ = flatten(out)
    for asset, n in (("pa", 5), ("pb", 4)):
        assert [t for x, t, _ in rows if x == asset] == [T0 + i * 1000 for i in range(n)]


def test_build_time_errors(tmp_path: Path) -> None:
    with pytest.raises(ReplayError, match="no such file"):
        ReplaySource([tmp_path / "nope.csv"])
    (tmp_path / "w.csv").write_text("a,b\n1,2\n")
    with pytest.raises(ReplayError, match="no time column"):
        ReplaySource(tmp_path / "w.csv")
    for kw, msg in (({"chunk_rows": 0}, "chunk_rows"), ({"speed": -1}, "speed"), ({"fmt": "xls"}, "fmt"),
                    ({"asset": "a", "asset_col": "b"}, "not both")):
        with pytest.raises(ValueError, match=msg):
            ReplaySource([long_csv(tmp_path / "ok.csv", 1)], **kw)


def test_a_corrupt_parquet_file_stops_the_replay_before_its_first_row(tmp_path: Path) -> None:
    import numpy as np
    import pyarrow as pa
    import pyarrow.parquet as pq

    good = long_csv(tmp_path / "a.csv", 3)
    bad = tmp_path / "b.parquet"
    pq.write_table(pa.table({"ts": np.arange(500) + T0, "v": np.arange(500.0)}), bad)
    data = bytearray(bad.read_bytes())
    data[200:260] = b"\xff" * 60
    bad.write_bytes(bytes(data))
    with pytest.raises(ReplayError, match=r"b.parquet: corrupt Parquet file: row group 0"):
        ReplaySource([good, bad])  # at build time: nothing from a.csv was emitted either


def test_non_utf8_bytes_in_a_csv_are_dead_letters_and_the_rest_replays(tmp_path: Path) -> None:
    path = tmp_path / "latin1.csv"
    path.write_bytes(f"ts,asset_id,sensor,value\n{T0},p1,temp,1\n{T0 + 1},p\xe91,temp,2\n{T0 + 2},p1,temp,3\n"
                     .encode("latin-1"))
    out: list[Parsed] = []
    run_main(replay_flow(ReplaySource([path], chunk_rows=2), out))
    rows, origins = flatten(out)
    assert rows == [("p1", T0, 1.0), ("p1", T0 + 2, 3.0)] and origins == [f"{path}:3"]
    assert [r.reason for p in out for r in p.rejects] == ["bad_value"]


def test_paced_replay_follows_event_time(tmp_path: Path) -> None:
    path = long_csv(tmp_path / "p.csv", 5)  # 4 s of event time
    text = path.read_text().replace("ts,asset_id,sensor,value\n", "ts,asset_id,sensor,value\nsoon,p1,temp,9\n")
    path.write_text(text)  # a row without a time first: nothing to pace by yet
    out: list[Parsed] = []
    start = time.monotonic()
    run_main(replay_flow(ReplaySource(path, speed=20.0), out))  # 4 s at 20x = 0.2 s
    took = time.monotonic() - start
    rows, origins = flatten(out)
    assert [v for _, _, v in rows] == [0.0, 1.0, 2.0, 3.0, 4.0] and origins == [f"{path}:2"]
    assert len(out) >= 4 and 0.15 <= took < 2.0


def test_resume_after_abort_loses_no_row(tmp_path: Path) -> None:
    path = long_csv(tmp_path / "r.csv", 40, bad_every=9)
    db = tmp_path / "recovery"
    db.mkdir()
    init_db_dir(db, 1)
    recovery = RecoveryConfig(db)
    first: list[Parsed] = []
    with pytest.raises(RuntimeError, match="fail_once"):
        run_main(replay_flow(ReplaySource(path, chunk_rows=4), first, fail_on=25.0),
                 epoch_interval=timedelta(0), recovery_config=recovery)
    second: list[Parsed] = []
    run_main(replay_flow(ReplaySource(path, chunk_rows=4), second), epoch_interval=timedelta(0),
             recovery_config=recovery)
    rows1, rej1 = flatten(first)
    rows2, rej2 = flatten(second)
    assert rows2[0][2] > 0.0  # resumed, not restarted
    everything = [("p1", T0 + i * 1000, float(i)) for i in range(40) if i % 9]
    assert sorted(set(rows1) | set(rows2), key=lambda r: r[1]) == everything
    assert sorted(set(rej1 + rej2)) == sorted(f"{path}:{i + 2}" for i in range(0, 40, 9))
    assert len(rows1) + len(rows2) - len(everything) <= 4  # at most the aborted chunk twice
    # a finished replay resumes to nothing
    third: list[Parsed] = []
    run_main(replay_flow(ReplaySource(path, chunk_rows=4), third), epoch_interval=timedelta(0),
             recovery_config=recovery)
    assert third == []
