"""Replay files whose times are a plant's wall clock: `replay.timezone` (`columns.LocalClock`)."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from pydantic import ValidationError

from smart_maintenance.config.settings import Settings
from smart_maintenance.operators.records import Readings
from smart_maintenance.sources.columns import LocalClock, to_ms
from smart_maintenance.sources.formats import ReplayError, plan_file
from smart_maintenance.sources.replay import read_chunks

BERLIN = "Europe/Berlin"
TEN_MIN = 600_000


def ms(text: str) -> int:
    return int(datetime.fromisoformat(text).timestamp() * 1000)


def wall(day: str, hours: list[tuple[int, int]]) -> list[str]:
    """Wall-clock texts (no offset) of `day` at (hour, minute) pairs."""
    return [f"{day} {h:02d}:{m:02d}:00" for h, m in hours]


def fall_back_day() -> list[str]:
    """What a logger on Berlin time writes every 10 minutes on 2026-10-25: 02:00-02:50 twice."""
    first = [(h, m) for h in (0, 1, 2) for m in range(0, 60, 10)]
    again = [(2, m) for m in range(0, 60, 10)]
    rest = [(h, m) for h in (3,) for m in range(0, 60, 10)] + [(4, 0)]
    return wall("2026-10-25", first + again + rest)


def readings(path: Path, **plan: object) -> tuple[Readings, list[tuple[str, str]]]:
    chunks = list(read_chunks(plan_file(path, **plan), chunk_rows=4))  # the repeated hour spans batches
    return Readings.concat([c.readings for c in chunks]), [(i.reason, i.detail) for c in chunks for _, i in c.rejects]


def test_a_wide_file_on_local_time_reads_through_the_change_to_winter_time(tmp_path: Path) -> None:
    path = tmp_path / "fan-01.csv"
    path.write_text("time,speed\n" + "".join(f"{t},{i}\n" for i, t in enumerate(fall_back_day())))
    r, rejects = readings(path, timezone=BERLIN)
    assert rejects == []
    start = ms("2026-10-24T22:00:00+00:00")  # 00:00 summer time
    assert r.ts.tolist() == [start + i * TEN_MIN for i in range(31)]  # 5 real hours, every 10 minutes, in order
    assert r.value.tolist() == [float(i) for i in range(31)]
    as_utc, _ = readings(path)  # without a zone the same texts are UTC: the repeated hour steps back
    assert as_utc.ts.tolist()[0] == ms("2026-10-25T00:00:00+00:00") and np.any(np.diff(as_utc.ts) < 0)


def test_a_long_file_sorted_by_asset_reads_each_assets_repeated_hour(tmp_path: Path) -> None:
    day = fall_back_day()
    rows = [f"{t},{a},temp,{i}\n" for a in ("p1", "p2") for i, t in enumerate(day)]
    path = tmp_path / "long.csv"
    path.write_text("ts,asset_id,sensor,value\n" + "".join(rows))
    r, _ = readings(path, timezone=BERLIN)
    start = ms("2026-10-24T22:00:00+00:00")
    for asset in ("p1", "p2"):
        assert r.ts[r.asset_id == asset].tolist() == [start + i * TEN_MIN for i in range(31)]


def test_a_time_the_clocks_skipped_is_a_reject_that_says_so(tmp_path: Path) -> None:
    path = tmp_path / "pump.csv"
    texts = wall("2026-03-29", [(1, 50), (2, 0), (2, 30), (3, 0)])
    path.write_text("time,flow\n" + "".join(f"{t},{i}\n" for i, t in enumerate(texts)))
    r, rejects = readings(path, timezone=BERLIN)
    assert r.ts.tolist() == [ms("2026-03-29T00:50:00+00:00"), ms("2026-03-29T01:00:00+00:00")]
    assert r.value.tolist() == [0.0, 3.0]
    assert [reason for reason, _ in rejects] == ["bad_timestamp", "bad_timestamp"]
    assert all("skipped" in why and BERLIN in why for _, why in rejects)


def test_offsets_and_epoch_numbers_are_not_moved_by_a_time_zone() -> None:
    t0 = ms("2026-07-01T12:00:00+00:00")
    mixed = pa.array([str(t0), "2026-07-01T12:00:00Z", "2026-07-01T14:00:00+02:00", "2026-07-01 14:00:00", "x"])
    out, ok = to_ms(mixed, clock=LocalClock(BERLIN))  # mixed forms: the cell-by-cell path
    assert out.tolist()[:4] == [t0] * 4 and ok.tolist() == [True] * 4 + [False]
    out, ok = to_ms(pa.array(["2026-07-01 14:00:00"]), clock=LocalClock(BERLIN))  # the whole-column cast
    assert out.tolist() == [t0]
    assert to_ms(pa.array([t0], pa.int64()), clock=LocalClock(BERLIN))[0].tolist() == [t0]
    assert to_ms(pa.array([t0 + 0.4]), clock=LocalClock(BERLIN))[0].tolist() == [t0]


def test_parquet_timestamps_without_a_zone_are_read_on_the_clock_and_with_one_as_written(tmp_path: Path) -> None:
    t0 = ms("2026-01-15T08:00:00+00:00")  # 09:00 in Berlin (winter)
    local = pa.array([datetime(2026, 1, 15, 9, 0)], pa.timestamp("ms"))
    aware = pa.array([datetime(2026, 1, 15, 8, 0, tzinfo=timezone.utc)], pa.timestamp("ms", tz="UTC"))
    for name, col in (("naive", local), ("aware", aware)):
        pq.write_table(pa.table({"ts": col, "rpm": [1.0]}), tmp_path / f"{name}.parquet")
        r, _ = readings(tmp_path / f"{name}.parquet", timezone=BERLIN)
        assert r.ts.tolist() == [t0], name


def test_the_repeated_hour_is_resolved_across_a_files_batches(tmp_path: Path) -> None:
    # every minute from 10:20 the day before: Parquet is read in batches of 1,024 rows, and row 1,024 falls in
    # the second pass through 02:00-02:59 (rows 1,000-1,059)
    first = [datetime(2026, 10, 24, 10, 20) + timedelta(minutes=i) for i in range(1000)]  # to 02:59 (summer)
    again = [datetime(2026, 10, 25, 2, 0) + timedelta(minutes=i) for i in range(120)]  # 02:00-03:59 (winter)
    path = tmp_path / "fan-02.parquet"
    pq.write_table(pa.table({"ts": pa.array(first + again, pa.timestamp("ms")), "rpm": np.arange(1120.0)}), path)
    r, _ = readings(path, timezone=BERLIN)
    start = ms("2026-10-24T08:20:00+00:00")
    assert r.ts.tolist() == [start + i * 60_000 for i in range(1120)]


def test_a_clock_is_per_file_and_carries_its_pass_across_calls() -> None:
    clock = LocalClock(BERLIN)
    day = [ms(t + "+00:00") for t in fall_back_day()]  # the wall clock read as if it were UTC
    parts = [clock.to_utc(np.array(day[i:i + 5]), np.ones(len(day[i:i + 5]), bool))[0] for i in range(0, 31, 5)]
    got = np.concatenate(parts)
    assert np.all(np.diff(got) == TEN_MIN)
    # a replay resumed inside the second pass has no order to go by: it reads it as the first (documented)
    fresh = LocalClock(BERLIN).to_utc(np.array(day[21:24]), np.ones(3, bool))[0]
    assert fresh.tolist() == (got[21:24] - 3_600_000).tolist()


def test_unknown_zones_and_jsonl_with_a_zone_are_refused(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="unknown time zone 'Mars/Base'"):
        LocalClock("Mars/Base")
    csv = tmp_path / "w.csv"
    csv.write_text("ts,a\n2026-01-01 00:00:00,1\n")
    with pytest.raises(ValueError, match="unknown time zone"):
        plan_file(csv, timezone="Europe/Nowhere")
    jsonl = tmp_path / "r.jsonl"
    jsonl.write_text('{"asset_id": "p", "sensor": "t", "ts": 1, "value": 1}\n')
    with pytest.raises(ReplayError, match="JSONL times are read as on the wire"):
        plan_file(jsonl, timezone=BERLIN)
    with pytest.raises(ValidationError, match="unknown time zone"):
        Settings(replay={"timezone": "Nowhere"})
    assert Settings(replay={"timezone": BERLIN}).replay.timezone == BERLIN
