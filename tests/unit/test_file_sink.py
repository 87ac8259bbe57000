"""The JSONL sink: exact lines, whole-line appends from several workers, truncation at a run's start."""

from __future__ import annotations

import os
from datetime import datetime, timedelta, timezone
from pathlib import Path

import numpy as np
import orjson
import pytest
from bytewax import operators as op
from bytewax.dataflow import Dataflow
from bytewax.testing import TestingSource, run_main

from smart_maintenance.operators.ingest.encode import readings_jsonl
from smart_maintenance.operators.records import Alarm, AssetReadings, FeatureBatch, Invalid, Readings, iso
from smart_maintenance.sinks.files import JsonlSink, records_jsonl, reset_outputs

T0 = datetime(2026, 1, 5, tzinfo=timezone.utc)


def lines(path: Path) -> list[dict]:
    return [orjson.loads(line) for line in path.read_bytes().splitlines()]


def test_readings_lines_match_per_reading_serialisation() -> None:
    ts = [1_767_571_200_000, 1_767_657_599_999, -1, -62_135_596_800_000, 253_402_300_799_000, 86_399_001]
    assets = ["pump-01", 'odd "id"\n', "pümpe", "pump-01", "x\\y", "pump-01"]
    values = [2.5, -0.0, 1e-300, float("nan"), 3.0, float("inf")]
    batch = Readings(np.array(assets, dtype=object), np.array(["vib", "t", "vib", "vib", "t", "t"], dtype=object),
                     np.array(ts, dtype=np.int64), np.array(values))
    expected = b"".join(
        orjson.dumps({"asset_id": a, "sensor": s, "ts": iso(t), "value": v}, option=orjson.OPT_APPEND_NEWLINE)
        for a, s, t, v in zip(assets, batch.sensor, ts, values)
    )
    assert readings_jsonl(batch) == expected
    assert orjson.loads(expected.splitlines()[2])["ts"] == "1969-12-31T23:59:59.999Z"
    assert readings_jsonl(Readings.empty()) == b""


def test_readings_lines_carry_the_quality_and_unit_the_source_gave() -> None:
    batch = Readings(np.array(["p"] * 3, dtype=object), np.array(["t", "t", "i"], dtype=object),
                     np.array([0, 1000, 0], dtype=np.int64), np.array([1.0, 2.0, 3.0]),
                     np.array([192, -1, 64], dtype=np.int16), np.array(["degC", None, 'm"A'], dtype=object))
    got = [orjson.loads(x) for x in readings_jsonl(batch).splitlines()]
    assert [(r.get("quality"), r.get("unit")) for r in got] == [(192, "degC"), (None, None), (64, 'm"A')]
    keyed = AssetReadings("p", batch.sensor, batch.ts, batch.value, batch.quality, batch.unit)
    assert records_jsonl([keyed]) == readings_jsonl(batch)


def test_timestamps_are_exact_at_the_edges() -> None:
    batch = Readings.of([("p", "s", 253_402_300_799_999, 1.0), ("p", "s", 253_402_300_800_000, 1.0)])
    assert [orjson.loads(x)["ts"] for x in readings_jsonl(batch).splitlines()] == [
        "9999-12-31T23:59:59.999Z", "10000-01-01T00:00:00.000Z"]  # the second by the general path


def test_every_kind_of_item_becomes_lines() -> None:
    values = np.zeros((1, 2, 8))
    values[0, 0] = [1, 0, 1, 1, 0, 1, 1, 3]
    features = FeatureBatch("p", ("vib", "temp"), np.array([0]), np.array([60_000]), values)
    invalid = Invalid("bad_json", "not JSON", "{", "f.jsonl:1")
    alarm = Alarm("al", "p", "machine", "open", 2, T0, T0 + timedelta(seconds=1), None, 0.7, 1, "an",
                  ("vib",), "vib high")
    out = records_jsonl([features, invalid, alarm, {"custom": 1}])
    assert [orjson.loads(x) for x in out.splitlines()] == [
        *features.rows(), invalid.to_dict(), alarm.to_dict(), {"custom": 1}]
    assert len(features.rows()) == 1  # the sensor without readings has no line


def test_reset_outputs_empties_the_files(tmp_path: Path) -> None:
    out = tmp_path / "out"
    (path,) = reset_outputs(out, ["readings"])
    path.write_bytes(b"stale\n")
    reset_outputs(out, ["readings"])
    assert path.read_bytes() == b""


def test_a_resumed_partition_cuts_the_file_back_to_its_snapshot(tmp_path: Path) -> None:
    sink = JsonlSink(tmp_path, "readings")
    assert sink.list_parts() == ["readings.jsonl"] and sink.part_fn("any asset") == 0
    a = Readings.of([("a", "s", 0, 1.0), ("a", "s", 1, 2.0)])
    b = AssetReadings("b", np.array(["s"], dtype=object), np.array([0]), np.array([3.0]))
    first = sink.build_part("out", "readings.jsonl", None)
    first.write_batch([a])
    snap = first.snapshot()
    first.write_batch([b])  # written after the snapshot, then the process dies (and half a line with it)
    os.write(first._fd, b'{"asset_id":"b","sen')
    path = tmp_path / "readings.jsonl"
    resumed = sink.build_part("out", "readings.jsonl", snap)
    resumed.write_batch([b])  # the flow emits it again
    resumed.close()
    assert [(r["asset_id"], r["value"]) for r in lines(path)] == [("a", 1.0), ("a", 2.0), ("b", 3.0)]
    fresh = sink.build_part("out", "readings.jsonl", None)  # a new run starts an empty file
    fresh.close()
    assert path.read_bytes() == b""
    with pytest.raises(ValueError, match="shorter than at the recovery snapshot"):
        sink.build_part("out", "readings.jsonl", snap)


def test_sink_in_a_dataflow(tmp_path: Path) -> None:
    invalid = [Invalid("bad_value", f"row {i}", str(i), f"f.csv:{i}") for i in range(5)]
    flow = Dataflow("jsonl")
    keyed = op.key_on("key", op.input("in", flow, TestingSource(invalid, batch_size=2)), lambda _: "")
    op.output("out", keyed, JsonlSink(tmp_path, "dead_letters"))
    run_main(flow)
    assert lines(tmp_path / "dead_letters.jsonl") == [i.to_dict() for i in invalid]


def test_stream_names_are_checked(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="stream"):
        JsonlSink(tmp_path, "../escape")
    with pytest.raises(ValueError, match="stream"):
        reset_outputs(tmp_path, ["a b"])
