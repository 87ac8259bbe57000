"""Live Kafka -> flow -> PostgreSQL: the highest offered rate the flow keeps up with, its latency, 1 -> 2 processes.

    python bench/live.py [--rates 20000,40000,...,150000] [--step-s 15] [--warmup-s 30] [--assets 200]
                         [--backlog 1000000] [--backlog-runs 3] [--ts-format rfc3339|ms] [--epoch-s N] [--dsn DSN]
                         [--no-half-step] [--only-backlog]

Set-up: a Tansu broker (in memory, on a free loopback port), an embedded PostgreSQL (or `--dsn`), the
readings topic with 4 partitions keyed by asset_id, and the flow as
`python -m bytewax.run "smart_maintenance.dataflows.plant:build_flow()"` (configured by SMART_MAINTENANCE__*
variables) reading it with `kafka.tail=true`, storing every stream in PostgreSQL (alarms and dead letters
also go to Kafka topics, as in production).

Live data: the simulator's plant (`--assets` assets x 5 sensors, from simulated hour 24 on, when
degradations may start; sensor faults and degradations more frequent than the simulator's defaults,
`BENCH_FAULTS`) re-timed to the wall clock: ticks are spaced so that the plant sends R readings/s,
and a reading's `ts` is the wall-clock time it is due. A producer process encodes a step beforehand (as a
plant's gateways, its work is not this flow's), then sends it in 10 ms slices, each once its last reading is
due. Windows are short (2 s, 1 s allowed lateness, 10 s idle close, 8 warm-up windows) so that they close,
score and raise alarms within seconds. The warm-up (first rate, not measured) covers the detectors' first fit
(12 windows in): every asset fits at the same window, a stall of ~25 ms x assets. 7-21 % of the
windows raise an anomaly (sensor faults and degradations; 73-255 of a step's 1,000-1,200 windows on
2026-12-07): anomaly and alarm writes are above a healthy plant's. Steps stop at the first rate whose lag grows.

Per step (R offered for `--step-s` seconds):
- sent/s: readings handed to Kafka per second; behind p99/max ms: how late the producer called `produce()` for
  a slice, p99 over the step's slices and at worst. This lateness is the load generator's (it runs at nice 10
  on the flow's cores: a plant's gateway does not), and it is inside every latency measured from a reading's
  due time (window, anomaly, `p99_half_ms`), not inside broker -> source (the Kafka timestamp is taken in
  `produce()`); `half_gen_late_p99_ms` gives it for the half step, beside `p99_half_ms`;
- lag: readings produced minus the step's readings rows in PostgreSQL (exact counts), at 1/2, 5/8, 3/4, 7/8
  and the end of the step. **Flat** = the flow kept up: at least 95% of R was sent, the lag's least-squares
  slope over the second half is at most 5% of R per second (the first half fills the pipeline: broker,
  batches, the writer's COPY) or the step ended within 0.5 s of R (a lag that small is the pipeline itself,
  and the writer's COPY cadence makes its slope noisy), and the end lag is at most 2 s of R;
- window latency (min, p50, p99): for every (asset, window) of the step, the wall time its features rows are
  first seen in PostgreSQL (a poll every 50 ms, by asset through the primary key: up to 50 ms late) minus
  (window end + allowed lateness). Window end + lateness is the timestamp of the first reading that can
  close the window, sent at that wall-clock time: this is the time from the reading that completes a window
  to the window's results being queryable. Anomaly rows (their `updated_at` is the server's insert time:
  exact) and alarm rows (first seen by the same poll; `updated_at` = the end of the window that changed
  the alarm) give the same measure on the rows operators act on;
- drain s: time from the step's last send until all of its readings are stored.
Each step starts from a drained flow: after a step the bench waits until all of its readings are stored
(however long an overloaded step needs) and then the idle close (10 s) + 1 s, so that its last windows are
closed and written; a step's lag and latency are its own, not a backlog left by the step before it.
`kafka_max_per_s` is the highest flat R; `p99_ms` the p99 window latency at that rate. Then one more step
at half that rate (`--no-half-step` skips it), where the target is set: `p99_half_ms` is the p99 of its
anomalies' insert time beyond window end + lateness, over `half_anomalies` anomalies (a p99 needs about 100:
with the simulator's default fault rates the half step held one, hence `BENCH_FAULTS`).

Where the time goes (per step, from the flow's own `sm_stage_seconds` histograms, scraped from its
/metrics port before and after the step; see smart_maintenance/latency.py): p50/p99 of broker -> source
(per message: the source's wall time - the Kafka timestamp, the producer's `produce()` call: Tansu keeps the
producer's CreateTime even on a topic set to LogAppendTime, 2026-12-07), of which since its last poll (the same
minus the later of the Kafka timestamp and the end of the partition's previous poll: at most the wait for the
flow's thread to poll again; the rest was the producer's, the broker's or the fetch's), due -> window close
(per window: close time - (window end + lateness)), close -> detection out, detection -> PostgreSQL commit (per
anomaly), due -> anomaly stored, and the epoch and snapshot cadence of the bulk sinks; quantiles are interpolated inside
the histogram's buckets. CPU (psutil, user + system, children included) of the flow, the broker and
PostgreSQL over the step, and the load generator's own (`time.process_time()` while it sends; it runs
at nice 10 and encodes before the step, so it takes little from the flow).

Scale: `--backlog` readings of the same plant (spaced as at 100k readings/s) pre-published to a second
topic and read to its end (`kafka.tail=false`) by 1 process, then by 2 (`-i 0/1 -a`), each into a fresh
schema. Throughput = readings stored / (exit of the last process - first reading row visible): start-up is
not counted. `drain_per_s` = throughput(1 process); `scale_2p` = throughput(2 processes) / throughput(1).
The machine's 2 cores also run PostgreSQL and the broker, so `scale_2p` is bounded well below 2. What
predicts a cluster on more cores is `cpu_ratio_2p`: the flow's CPU seconds per reading with 2 processes /
with 1 (sampled every 20 ms, start-up included; the project's bytecode is written first, as an installed
package has it, see `precompile`): near 1 means the work splits without overhead, so N
processes on N free cores would drain about N times as fast until the broker or the database binds.
Both runs must store the same anomalies, alarms and counts (`same_2p=yes`, a digest of each schema).
`--backlog-runs` (default 3) repeats the pair, 1 then 2 processes each round, and the last line gives the
medians over the rounds (one run's ratio moves by 0.1-0.3 with the machine's other work); `same_2p` compares
every run.
`cpu_ratio_2p_net` is the same ratio without the processes' fixed cost: before each backlog run, the same
processes read an empty topic to its end (start-up, imports, connections, shutdown), and that CPU is
subtracted: what each further reading costs with 2 processes / with 1. The fixed cost does not grow with
the backlog, so `cpu_ratio_2p` tends to `cpu_ratio_2p_net` as the backlog grows.

Last line: `kafka_max_per_s=<n> p99_ms=<n> drain_per_s=<n> cpu_ratio_2p=<x> cpu_ratio_2p_net=<x> scale_2p=<x>
p99_half_ms=<n> same_2p=yes|no flat_ratio=<x> p99_half_from_reading_ms=<n> flat_ratio_cpu_bound=<x>
half_anomalies=<n> half_gen_late_p99_ms=<n>`
(nan for what was not run: `--backlog 0`, no flat rate);
`flat_ratio` = kafka_max_per_s / drain_per_s, both from this run (issue #17's target: at least 0.8);
`flat_ratio_cpu_bound` = what the machine's CPU allows that ratio to be at the costs measured (`cpu_bound`: the
machine's cores over all processes' CPU per reading live at `kafka_max_per_s`, the broker's intake and the load
generator included, / drain_per_s).
"""

from __future__ import annotations

import sys
from pathlib import Path

if __package__ in (None, ""):  # run as a script: make `bench` and `tests` importable, as pytest does
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import argparse
import atexit
import math
import multiprocessing as mp
import os
import secrets
import shutil
import signal
import subprocess
import tempfile
import threading
import time
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime

import numpy as np
import orjson
import pandas as pd
import psutil
import psycopg
import pyarrow as pa
import pyarrow.compute as pc
from confluent_kafka import Producer
from prometheus_client.parser import text_string_to_metric_families
from rich.console import Console
from rich.table import Table

from bench.recovery import flow_env
from smart_maintenance.config.registry import load_registry
from smart_maintenance.config.settings import KafkaSettings, SimulatorSettings
from smart_maintenance.connectors.kafka.config import kafka_config
from smart_maintenance.connectors.postgres.schema import ensure_schema
from smart_maintenance.operators.ingest.encode import readings_jsonl
from smart_maintenance.operators.records import Readings
from smart_maintenance.sources.plant_model import FaultRates, PlantModel
from tests.integration.kafka_broker import create_topics, free_port, tansu_broker

FLOW = "smart_maintenance.dataflows.plant:build_flow()"
PARTITIONS = 4
SIM_INTERVAL_S = 10.0  # the plant's own tick; re-timed to the offered rate
SIM_START_TICK = 8_640  # 24 simulated hours: the plant injects no degradation before that
SLICE_MS = 10.0
POLL_S = 0.05
# idle close: longer than the source's lag in a flat step and its stalls (an idle timer that fires while the
# asset's readings still wait in Kafka closes the window early: at 2 s and 5 s the base runs under load showed
# windows stored before their closing reading was due); the settle between steps waits for it, so each step
# starts with no window open
WINDOW_S, LATENESS_S, IDLE_CLOSE_S, WARMUP_WINDOWS = 2, 1, 10, 8
FLAT_LAG_S = 2.0  # a flat step ends with at most this many seconds of R not yet stored
FLAT_GROWTH = 0.05  # ... and its lag grew over the second half by at most this share of R per second
PIPELINE_LAG_S = 0.5  # ... or it ended within this many seconds of R: the broker, the poll and the writer's COPY
LAG_SAMPLES = (0.5, 0.625, 0.75, 0.875, 1.0)  # when the lag is counted, as shares of the step
SETTLE_TIMEOUT_S = 180.0
# The bench's plant fails more often than the simulator's default (0.15 sensor faults and 0.4 degradations per
# asset and day), the same in every step and the backlog: with the defaults the half step held one anomaly
# (2026-12-07), so its p99 was one window's latency. At these rates a 15 s half step held 255 (of 1,200 windows;
# 73-202 in the full steps): set once, by that first try (2026-12-07 15:26 UTC), not tuned on any latency.
BENCH_FAULTS = FaultRates(sensor_faults_per_day=2.0, degradations_per_day=1.2)
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
console = Console(stderr=True, width=170)


# -- the live plant ------------------------------------------------------------------------------


def plant_model(assets: int, seed: int) -> PlantModel:
    return PlantModel(load_registry(), SimulatorSettings(assets=assets, seed=seed, interval_s=SIM_INTERVAL_S,
                                                         duration_s=None), BENCH_FAULTS)


def streams_of(model: PlantModel) -> int:
    """Readings per tick: every sensor of every asset."""
    return sum(len(t.sensors) for t in model.type_of)


def retimed(model: PlantModel, tick0: int, n: int, t0_ms: int, tick_ms: float) -> tuple[Readings, np.ndarray]:
    """Ticks [tick0, tick0+n) of the plant with tick k at `t0_ms + k * tick_ms`; also each reading's tick offset."""
    r = model.generate(range(len(model.asset_ids)), tick0, n)
    tick = (np.asarray(r.ts, np.int64) - model.tick_ms(tick0)) // model.interval_ms
    return Readings(r.asset_id, r.sensor, t0_ms + np.round(tick * tick_ms).astype(np.int64), r.value), tick


def encode(readings: Readings, ts_format: str) -> list[bytes]:
    """The wire format, one JSON reading per message: `ts` as RFC 3339 text (what `publish_readings` and the
    JSONL files write) or as epoch milliseconds (the other form the contract accepts, cheaper to parse)."""
    if ts_format == "rfc3339":
        return readings_jsonl(readings).split(b"\n")[: len(readings)]
    a_codes, assets = pd.factorize(readings.asset_id)
    s_codes, sensors = pd.factorize(readings.sensor)

    def names(codes: np.ndarray, uniques: pd.Index) -> pa.Array:
        return pa.array([orjson.dumps(str(u)) for u in uniques], pa.binary()).take(pa.array(codes))

    def lit(b: bytes) -> pa.Scalar:
        return pa.scalar(b, pa.binary())

    ts = pa.array(np.asarray(readings.ts, np.int64)).cast(pa.string()).cast(pa.binary())
    values = pa.array(orjson.dumps(readings.value.tolist())[1:-1].split(b","), pa.binary())  # NaN -> null
    return pc.binary_join_element_wise(lit(b'{"asset_id":'), names(a_codes, assets), lit(b',"sensor":'),
                                       names(s_codes, sensors), lit(b',"ts":'), ts, lit(b',"value":'), values,
                                       lit(b"}"), lit(b"")).to_pylist()


class Publisher:
    """An idempotent producer of readings keyed by asset_id; raises if any message was not delivered."""

    def __init__(self, kafka: KafkaSettings) -> None:
        self.topic = kafka.readings_topic
        self.errors: list[str] = []
        errors = self.errors  # not `self` in the callback: no cycle, the producer closes with this object
        self._producer = Producer({
            **kafka_config(kafka), "enable.idempotence": "true", "linger.ms": "5", "batch.size": "1000000",
            "queue.buffering.max.messages": "2000000", "delivery.report.only.error": True,
            "on_delivery": lambda err, msg: err is not None and errors.append(str(err)),
        })
        # A fresh idempotent producer holds its first messages until it has connected and has the topic's
        # metadata, ~1 s after it was made on Tansu; their Kafka timestamps were taken in `produce()`, so they
        # counted as broker -> source (the first second of a step at 0.5 s after its Publisher: 7 of 8 trials
        # held 510-550 ms, 0 of 8 with this call, 2026-12-07, docs/performance.md). Ready before the first send:
        self._producer.list_topics(self.topic, timeout=30)

    def send(self, values: list[bytes], keys: list[bytes]) -> None:
        produce, topic = self._producer.produce, self.topic
        for value, key in zip(values, keys):
            while True:
                try:
                    produce(topic, value, key)
                    break
                except BufferError:  # the local queue is full: let librdkafka send
                    self._producer.poll(0.01)
        self._producer.poll(0)

    def flush(self) -> None:
        self._producer.flush()
        if self.errors:
            raise RuntimeError(f"{len(self.errors)} readings not delivered to {self.topic!r}: {self.errors[:3]}")


def asset_keys(readings: Readings) -> list[bytes]:
    codes, names = pd.factorize(readings.asset_id)
    encoded = [str(x).encode() for x in names]
    return [encoded[c] for c in codes.tolist()]


@dataclass(frozen=True)
class Sent:
    """What the producer did in one step; times are wall-clock seconds."""

    n: int
    finite: int  # readings the flow stores (the rest are dead letters)
    t0: float
    t_end: float
    behind_s: float
    cpu_s: float  # the producer's CPU seconds while it sent (its threads included), encoding not counted
    late_p99_s: float = math.nan  # p99 over the step's slices of how late produce() was called for each


def produce_live(kafka: KafkaSettings, assets: int, seed: int, ts_format: str, rate: float, seconds: float,
                 tick0: int, progress: mp.Value, out: mp.Queue) -> None:
    """The producer process: encode a step's readings, then send them paced by their timestamps.

    It runs at a lower priority (nice 10) than the flow, the broker and the database: a plant's gateways
    do not share the flow's cores, so what the producer costs should not be taken from the flow.
    """
    os.nice(10)
    model = plant_model(assets, seed)
    streams = streams_of(model)
    tick_ms = streams / rate * 1000
    if tick_ms < 1:
        raise ValueError(f"{rate:g} readings/s needs more than {streams} sensor streams (at most 1 reading/ms each)")
    n_ticks = math.ceil(rate * seconds / streams)
    probe, _ = retimed(model, tick0, min(n_ticks, 20), 0, tick_ms)
    t = time.perf_counter()
    encode(probe, ts_format)
    per_reading = (time.perf_counter() - t) / len(probe)
    # the timestamps must be fixed before encoding: start once encoding is surely done
    t0 = time.time() + 0.5 + 2 * per_reading * n_ticks * streams
    readings, tick = retimed(model, tick0, n_ticks, int(t0 * 1000), tick_ms)
    values, keys = encode(readings, ts_format), asset_keys(readings)
    stored = np.cumsum(np.isfinite(readings.value))  # what the flow stores: non-finite values are dead letters
    del readings
    publisher = Publisher(kafka)
    per_slice = max(1, round(SLICE_MS / tick_ms))
    ends = np.searchsorted(tick, np.arange(per_slice, n_ticks + per_slice, per_slice), side="left").tolist()
    out.put(t0)
    time.sleep(max(0.0, t0 - time.time()))
    start, behind, cpu0 = 0, 0.0, time.process_time()
    late = np.zeros(len(ends))
    for i, end in enumerate(ends):
        due = t0 + (min((i + 1) * per_slice, n_ticks) - 1) * tick_ms / 1000  # the slice's last reading
        now = time.time()
        if due > now:
            time.sleep(due - now)
        late[i] = time.time() - due  # the Kafka timestamp (CreateTime) is taken now, in produce(); an oversleep
        behind = max(behind, late[i])  # is lateness too
        publisher.send(values[start:end], keys[start:end])
        progress.value = int(stored[end - 1]) if end else 0
        start = end
    t_end = time.time()
    publisher.flush()
    out.put(Sent(len(values), int(stored[-1]), t0, t_end, behind, time.process_time() - cpu0,
                 float(np.percentile(late, 99)) if len(late) else math.nan))


# -- PostgreSQL observers ----------------------------------------------------------------------------


class Watcher(threading.Thread):
    """Polls a schema every 50 ms: when each (asset, window) and each alarm state first became visible."""

    def __init__(self, dsn: str, schema: str, asset_ids: list[str]) -> None:
        super().__init__(daemon=True, name="watcher")
        self._dsn, self._schema, self._assets = dsn, schema, asset_ids
        self.windows: dict[tuple[str, int], float] = {}  # (asset_id, window_end ms) -> first seen (wall s)
        self.alarms: dict[tuple[str, str, int], float] = {}  # (alarm_id, status, updated_at ms) -> first seen
        self.poll_ms: list[float] = []
        self._done = threading.Event()
        self.error: BaseException | None = None

    def run(self) -> None:
        s = self._schema
        windows_sql = (
            f"SELECT a.asset_id, w.end_ms, w.start FROM unnest(%s::text[], %s::timestamptz[]) AS a(asset_id, after) "
            f"CROSS JOIN LATERAL (SELECT DISTINCT window_start AS start, "
            f"(extract(epoch FROM window_end) * 1000)::int8 AS end_ms FROM {s}.features f "
            f"WHERE f.asset_id = a.asset_id AND f.window_start > a.after) w"
        )
        alarms_sql = f"SELECT alarm_id, status, (extract(epoch FROM updated_at) * 1000)::int8 FROM {s}.alarms"
        after = {a: _EPOCH for a in self._assets}  # per asset: the latest window start seen
        try:
            with psycopg.connect(self._dsn, autocommit=True) as conn:
                while not self._done.wait(POLL_S):
                    t = time.perf_counter()
                    rows = conn.execute(windows_sql, (list(after), list(after.values()))).fetchall()
                    alarms = conn.execute(alarms_sql).fetchall()
                    now = time.time()
                    for asset_id, end_ms, start in rows:
                        self.windows.setdefault((asset_id, end_ms), now)
                        after[asset_id] = max(start, after[asset_id])
                    for key in alarms:
                        self.alarms.setdefault(tuple(key), now)
                    self.poll_ms.append((time.perf_counter() - t) * 1000)
        except BaseException as e:  # noqa: BLE001 - reported by the main thread
            self.error = e

    def stop(self) -> None:
        self._done.set()
        self.join(timeout=5)


def stored_since(conn: psycopg.Connection, schema: str, since_ms: int) -> int:
    """Readings rows with ts >= since_ms (a step's rows: earlier steps' timestamps are all earlier)."""
    return conn.execute(f"SELECT count(*) FROM {schema}.readings WHERE ts >= to_timestamp(%s / 1000.0)",
                        (since_ms,)).fetchone()[0]


def anomaly_latency_ms(conn: psycopg.Connection, schema: str, t0_ms: int, t1_ms: int,
                       tick_ms: float | None = None) -> tuple[list[float], list[float]]:
    """Server insert time - (window end + lateness) of the anomalies of windows inside [t0, t1 - lateness - 0.1 s]:
    as for the window latency, windows closed by the step's readings, not by the idle timer after its end.

    Also (with `tick_ms`, the step's tick spacing from `t0_ms`) the same minus `closing_wait_ms`: from the
    reading that closed the window (the first tick at or after window end + lateness, sent when due) to the
    anomaly stored, i.e. without the wait for the plant's next tick, which is the data's, not the flow's."""
    rows = conn.execute(
        f"SELECT extract(epoch FROM updated_at - window_end) * 1000, (extract(epoch FROM window_end) * 1000)::int8 "
        f"FROM {schema}.anomalies "
        f"WHERE window_start >= to_timestamp(%s / 1000.0) AND window_end <= to_timestamp(%s / 1000.0)",
        (t0_ms, t1_ms - LATENESS_S * 1000 - 100)).fetchall()
    due = [float(r[0]) - LATENESS_S * 1000 for r in rows]
    if tick_ms is None:
        return due, []
    return due, [d - closing_wait_ms(int(end) + LATENESS_S * 1000, t0_ms, tick_ms) for d, (_, end) in zip(due, rows)]


def closing_wait_ms(due_ms: int, t0_ms: int, tick_ms: float) -> int:
    """How long after `due_ms` the plant's first reading at or after it is stamped (and sent): ticks are at
    `t0_ms + round(k * tick_ms)` (`retimed`). A window closes on that reading, so this much of its latency
    beyond window end + lateness is the wait for the data (up to a tick: 50 ms at 20,000/s, 1,000 streams).

    >>> closing_wait_ms(1_000, 0, 50.0), closing_wait_ms(1_010, 0, 50.0), closing_wait_ms(1_000, 7, 2.5)
    (0, 40, 2)
    >>> closing_wait_ms(1_001, 0, 2.5)
    1
    """
    k = max(0, math.ceil((due_ms - t0_ms) / tick_ms) - 1)
    while t0_ms + round(k * tick_ms) < due_ms:
        k += 1
    return t0_ms + round(k * tick_ms) - due_ms


# -- where the time goes: the flow's stage histograms, CPU per process ------------------------------

STAGE_ROWS = (  # (histogram stage, what the table calls it)
    ("broker_to_source", "broker -> source"),
    ("source_poll_gap", "of which since its last poll"),
    ("due_to_close", "due -> window close"),
    ("close_to_detect", "close -> detection out"),
    ("detect_to_stored", "detection -> PG commit"),
    ("due_to_stored", "due -> anomaly stored"),
    ("epoch_interval", "epoch interval"),
    ("snapshot_wait", "snapshot wait"),
)
Histograms = dict[str, list[tuple[float, float]]]  # stage -> [(upper bound s, cumulative count)], +inf last


def scrape_stages(port: int) -> Histograms:
    """The flow's `sm_stage_seconds` buckets from its /metrics endpoint (empty if it does not answer)."""
    import urllib.request

    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=2) as r:
            text = r.read().decode()
    except OSError:
        return {}
    out: Histograms = {}
    for family in text_string_to_metric_families(text):
        if family.name != "sm_stage_seconds":
            continue
        for sample in family.samples:
            if sample.name.endswith("_bucket"):
                out.setdefault(sample.labels["stage"], []).append((float(sample.labels["le"]), sample.value))
    return {k: sorted(v) for k, v in out.items()}


def hist_delta(after: Histograms, before: Histograms) -> Histograms:
    """What was observed between two scrapes."""
    out: Histograms = {}
    for stage, buckets in after.items():
        prior = dict(before.get(stage, []))
        out[stage] = [(le, n - prior.get(le, 0.0)) for le, n in buckets]
    return out


def hist_quantile(buckets: list[tuple[float, float]], q: float) -> float:
    """The q-quantile (0..1) of cumulative buckets, linear inside a bucket as Prometheus' histogram_quantile;
    NaN without observations; the largest finite bound when it falls in the +Inf bucket.

    >>> hist_quantile([(0.1, 2.0), (0.2, 4.0), (math.inf, 4.0)], 0.5)
    0.1
    >>> round(hist_quantile([(0.1, 2.0), (0.2, 4.0), (math.inf, 4.0)], 0.75), 3)
    0.15
    """
    total = buckets[-1][1] if buckets else 0.0
    if total <= 0:
        return math.nan
    rank, lo, below = q * total, 0.0, 0.0
    for le, n in buckets:
        if n >= rank:
            if math.isinf(le):
                return lo
            return lo + (le - lo) * ((rank - below) / (n - below) if n > below else 1.0)
        lo, below = le, n
    return lo


@dataclass(frozen=True)
class StageFigures:
    count: int
    p50_ms: float
    p99_ms: float


def stage_figures(delta: Histograms) -> dict[str, StageFigures]:
    return {stage: StageFigures(int(b[-1][1]), hist_quantile(b, 0.5) * 1000, hist_quantile(b, 0.99) * 1000)
            for stage, b in delta.items() if b}


class CpuGroups:
    """CPU seconds (user + system) of named groups of processes, a group's children included.

    `sample()` remembers each live process's latest total, so a process that exits between samples keeps
    what it had used at the last one (sample often: a backlog run samples every 20 ms).
    """

    def __init__(self, roots: dict[str, list[int]]) -> None:
        self._roots = roots
        self._seen: dict[str, dict[int, float]] = {g: {} for g in roots}

    def sample(self) -> dict[str, float]:
        for group, pids in self._roots.items():
            seen = self._seen[group]
            for pid in pids:
                try:
                    root = psutil.Process(pid)
                    procs = [root, *root.children(recursive=True)]
                except psutil.Error:
                    continue
                for p in procs:
                    try:
                        t = p.cpu_times()
                        seen[p.pid] = t.user + t.system
                    except psutil.Error:
                        pass
        return {g: sum(v.values()) for g, v in self._seen.items()}


def service_pids(pgdata: Path) -> dict[str, list[int]]:
    """The broker (a child of this process) and the embedded PostgreSQL's postmaster (by its data directory)."""
    broker = [p.pid for p in psutil.Process().children(recursive=True) if "tansu" in p.name()]
    postgres = []
    for p in psutil.process_iter(["cmdline"]):
        cmd = p.info["cmdline"] or []
        if any(str(pgdata) in part for part in cmd) and "postgres" in " ".join(cmd[:1]):
            postgres.append(p.pid)
    return {"broker": broker, "postgres": postgres}


def cpu_used(after: dict[str, float], before: dict[str, float]) -> dict[str, float]:
    return {g: after[g] - before.get(g, 0.0) for g in after}


# -- flows as subprocesses ------------------------------------------------------------------------

_COMPILED: set[str] = set()


def precompile(env: dict[str, str]) -> None:
    """Write the bytecode of the `smart_maintenance` the flow processes will import (once per source tree).

    An installed package has its `.pyc` files; an editable checkout run with PYTHONDONTWRITEBYTECODE=1 (as
    this machine's environment sets it) has none, and every flow process would compile the project's modules
    from source: 0.1-0.5 CPU-s of each process's fixed cost that no deployment pays (docs/performance.md)."""
    key = f"{os.getcwd()}:{env.get('PYTHONPATH', '')}"  # the processes import from the cwd (or PYTHONPATH)
    if key in _COMPILED:
        return
    code = "import compileall, os, smart_maintenance as m; compileall.compile_dir(os.path.dirname(m.__file__), quiet=1)"
    subprocess.run([sys.executable, "-c", code], env=env, check=True, stdout=subprocess.DEVNULL)
    _COMPILED.add(key)


@dataclass
class Flow:
    """One or more `bytewax.run` processes of the flow, each in its own process group."""

    env: dict[str, str]
    log_dir: Path
    processes: int = 1
    epoch_s: int | None = None
    procs: list[subprocess.Popen] = field(default_factory=list)

    def start(self) -> Flow:
        precompile(self.env)
        cmd = [sys.executable, "-m", "bytewax.run", FLOW]
        if self.epoch_s:
            cmd += ["-s", str(self.epoch_s)]
        addresses = ";".join(f"127.0.0.1:{free_port()}" for _ in range(self.processes))
        for i in range(self.processes):
            extra = ["-i", str(i), "-a", addresses] if self.processes > 1 else []
            with open(self.log_dir / f"flow-{secrets.token_hex(3)}-{i}.log", "wb") as log:  # the child keeps its fd
                self.procs.append(subprocess.Popen(cmd + extra, env=self.env, stdout=subprocess.DEVNULL, stderr=log,
                                                   start_new_session=True))
        return self

    def check(self, must_run: bool = True) -> None:
        """Raise if a process failed, or (`must_run`: a tailing flow never ends) exited at all."""
        for p in self.procs:
            if p.poll() is not None and (must_run or p.returncode != 0):
                raise RuntimeError(f"flow process exited {p.returncode}:\n{self.log_tail()}")

    def log_tail(self) -> str:
        logs = sorted(self.log_dir.glob("flow-*.log"), key=lambda p: p.stat().st_mtime)
        return logs[-1].read_text(errors="replace")[-3000:] if logs else ""

    def stop(self) -> None:
        for p in self.procs:
            if p.poll() is None:
                os.killpg(p.pid, signal.SIGKILL)
            p.wait(timeout=10)


def live_env(dsn: str, schema: str, kafka: KafkaSettings, data_dir: Path, tail: bool) -> dict[str, str]:
    settings = {
        "SMART_MAINTENANCE__SOURCE": "kafka",
        "SMART_MAINTENANCE__DATA_DIR": str(data_dir),
        "SMART_MAINTENANCE__KAFKA__BROKERS": f'["{kafka.brokers[0]}"]',
        "SMART_MAINTENANCE__KAFKA__READINGS_TOPIC": kafka.readings_topic,
        "SMART_MAINTENANCE__KAFKA__ALARMS_TOPIC": kafka.alarms_topic,
        "SMART_MAINTENANCE__KAFKA__DEAD_LETTERS_TOPIC": kafka.dead_letters_topic,
        "SMART_MAINTENANCE__KAFKA__TAIL": str(tail).lower(),
        "SMART_MAINTENANCE__WINDOWS__LENGTH_S": str(WINDOW_S),
        "SMART_MAINTENANCE__WINDOWS__ALLOWED_LATENESS_S": str(LATENESS_S),
        "SMART_MAINTENANCE__WINDOWS__IDLE_CLOSE_S": str(IDLE_CLOSE_S),
        "SMART_MAINTENANCE__DETECTION__WARMUP_WINDOWS": str(WARMUP_WINDOWS),
        "RUST_BACKTRACE": "0",
    }
    return flow_env(dsn, schema, None, **settings)


# -- the live steps --------------------------------------------------------------------------------


@dataclass
class Step:
    rate: float
    sent: Sent
    lags: list[tuple[float, int]]  # (seconds into the step, readings produced - readings stored), LAG_SAMPLES
    drain_s: float
    windows_ms: list[float]
    anomalies_ms: list[float]
    alarms_ms: list[float]
    stages: dict[str, StageFigures] = field(default_factory=dict)
    half: bool = False  # the extra step at half the highest flat rate
    cpu_s: dict[str, float] = field(default_factory=dict)  # CPU seconds by group, first send -> drained
    busy_s: float = math.nan  # wall seconds of the same span
    settle_s: float = math.nan  # after the step: until every reading was stored and idle windows closed
    anomalies_from_reading_ms: list[float] = field(default_factory=list)  # the same, from the closing reading

    @property
    def offered(self) -> float:
        return self.sent.n / max(self.sent.t_end - self.sent.t0, 1e-9)

    @property
    def lag_mid(self) -> int:
        return self.lags[0][1]

    @property
    def lag_end(self) -> int:
        return self.lags[-1][1]

    @property
    def growth(self) -> float:
        """The lag's least-squares slope over the step's second half, as a share of R (0: it kept up)."""
        t, lag = np.array([x for x, _ in self.lags]), np.array([y for _, y in self.lags], np.float64)
        return float(np.polyfit(t, lag, 1)[0]) / self.rate if len(t) > 1 else math.nan

    @property
    def flat(self) -> bool:
        return (self.offered >= 0.95 * self.rate and self.lag_end <= FLAT_LAG_S * self.rate
                and (self.growth <= FLAT_GROWTH or self.lag_end <= PIPELINE_LAG_S * self.rate))


@dataclass
class Live:
    """The running live flow and what the bench needs around it."""

    kafka: KafkaSettings
    dsn: str
    schema: str
    assets: int
    seed: int
    flow: Flow
    watcher: Watcher
    streams: int
    ts_format: str
    metrics_port: int
    cpu: CpuGroups
    tick0: int = SIM_START_TICK

    def offer(self, rate: float, seconds: float) -> Step:
        """Offer `rate` readings/s for `seconds`; measure lag, drain and latency of what it sent."""
        ctx = mp.get_context("spawn")
        progress, out = ctx.Value("q", 0), ctx.Queue()
        producer = ctx.Process(target=produce_live, args=(self.kafka, self.assets, self.seed, self.ts_format, rate,
                                                          seconds, self.tick0, progress, out), daemon=True)
        producer.start()
        try:
            with psycopg.connect(self.dsn, autocommit=True) as conn:
                t0 = self._wait(producer, out, 300)
                time.sleep(max(0.0, t0 - time.time()))
                hist0, cpu0 = scrape_stages(self.metrics_port), self.cpu.sample()
                lags = []
                for share in LAG_SAMPLES:
                    time.sleep(max(0.0, t0 + share * seconds - time.time()))
                    self.flow.check()
                    produced = progress.value
                    lags.append((time.time() - t0, produced - stored_since(conn, self.schema, int(t0 * 1000))))
                sent = self._wait(producer, out, seconds + 60)
                drained = self._drain(conn, sent)
                time.sleep(max(3 * POLL_S, 0.5))  # the watcher's last polls, the last anomalies' commits
                hist1, cpu1 = scrape_stages(self.metrics_port), self.cpu.sample()
                busy = time.time() - t0
                anomalies, from_reading = anomaly_latency_ms(conn, self.schema, int(t0 * 1000),
                                                             int((t0 + seconds) * 1000), self.streams / rate * 1000)
                settle = self._settle(conn, sent)
        finally:
            if producer.is_alive():
                producer.kill()
            producer.join(timeout=10)
        self.tick0 += math.ceil(rate * seconds / self.streams)
        return Step(rate, sent, lags, drained, self._window_latency(t0, seconds), anomalies,
                    self._alarm_latency(t0, seconds), stages=stage_figures(hist_delta(hist1, hist0)),
                    cpu_s={**cpu_used(cpu1, cpu0), "load generator": sent.cpu_s}, busy_s=busy, settle_s=settle,
                    anomalies_from_reading_ms=from_reading)

    def _wait(self, producer: mp.Process, out: mp.Queue, timeout_s: float) -> object:
        deadline = time.monotonic() + timeout_s
        while True:
            self.flow.check()
            try:
                return out.get(timeout=0.5)
            except Exception:  # noqa: BLE001 - queue.Empty: the producer is still working
                if not producer.is_alive():
                    raise RuntimeError(f"the producer process exited {producer.exitcode}") from None
                if time.monotonic() > deadline:
                    raise TimeoutError(f"the producer took more than {timeout_s:.0f} s") from None

    def _drain(self, conn: psycopg.Connection, sent: Sent, timeout_s: float = 30.0) -> float:
        """Seconds after the last send until all of the step's readings are stored (inf: not within timeout)."""
        while stored_since(conn, self.schema, int(sent.t0 * 1000)) < sent.finite:
            self.flow.check()
            if time.time() - sent.t_end > timeout_s:
                return math.inf
            time.sleep(0.25)
        return time.time() - sent.t_end

    def _settle(self, conn: psycopg.Connection, sent: Sent) -> float:
        """Wait until the step's readings are all stored and its last windows closed by the idle timer, so that
        the next step starts from a drained flow with no window open (an overloaded step's backlog would
        otherwise be measured as the next step's lag and latency). Returns the seconds it waited."""
        started = time.time()
        while stored_since(conn, self.schema, int(sent.t0 * 1000)) < sent.finite:
            self.flow.check()
            if time.time() - started > SETTLE_TIMEOUT_S:
                raise TimeoutError(f"the flow did not store a step's readings within {SETTLE_TIMEOUT_S:.0f} s")
            time.sleep(0.25)
        time.sleep(IDLE_CLOSE_S + 1.0)  # the last readings arrived before now; +1 s: the idle timer's poll
        return time.time() - started

    def _window_latency(self, t0: float, seconds: float) -> list[float]:
        """Windows wholly inside the step and closed by its readings (not by the idle timer)."""
        lo, hi = t0 * 1000 + WINDOW_S * 1000, (t0 + seconds - 0.1 - LATENESS_S) * 1000
        return [(seen * 1000 - end - LATENESS_S * 1000) for (_, end), seen in list(self.watcher.windows.items())
                if lo <= end <= hi]

    def _alarm_latency(self, t0: float, seconds: float) -> list[float]:
        lo, hi = t0 * 1000 + WINDOW_S * 1000, (t0 + seconds - 0.1 - LATENESS_S) * 1000
        return [(seen * 1000 - at - LATENESS_S * 1000) for (_, _, at), seen in list(self.watcher.alarms.items())
                if lo <= at <= hi]


def pct(values: list[float], q: float) -> float:
    return float(np.percentile(values, q)) if values else math.nan


def _ms(values: list[float], q: float) -> str:
    return f"{pct(values, q):,.0f}" if values else "-"


def step_table(steps: list[Step], assets: int, seconds: float) -> Table:
    t = Table(title=f"live: {assets} assets x 5 sensors, {seconds:g} s per step, windows {WINDOW_S} s "
                    f"+ {LATENESS_S} s lateness; latency ms beyond window end + lateness")
    for col in ("offered R/s", "sent/s", "behind p99/max ms", "lag mid", "lag end", "growth %R/s", "flat", "drain s",
                "settle s", "windows", "min", "p50", "p99", "anomalies p50/p99", "from closing rdg", "alarms p50/p99"):
        t.add_column(col, justify="right")
    for s in steps:
        t.add_row(f"{s.rate:,.0f}" + (" (½)" if s.half else ""), f"{s.offered:,.0f}",
                  f"{s.sent.late_p99_s * 1000:,.0f}/{s.sent.behind_s * 1000:,.0f}",
                  f"{s.lag_mid:,}", f"{s.lag_end:,}", f"{s.growth * 100:.1f}", "yes" if s.flat else "[red]no[/]",
                  f"{s.drain_s:.2f}", f"{s.settle_s:.1f}", f"{len(s.windows_ms):,}",
                  _ms(s.windows_ms, 0), _ms(s.windows_ms, 50), _ms(s.windows_ms, 99),
                  f"{len(s.anomalies_ms)}: {_ms(s.anomalies_ms, 50)}/{_ms(s.anomalies_ms, 99)}",
                  f"{_ms(s.anomalies_from_reading_ms, 50)}/{_ms(s.anomalies_from_reading_ms, 99)}",
                  f"{len(s.alarms_ms)}: {_ms(s.alarms_ms, 50)}/{_ms(s.alarms_ms, 99)}")
    return t


def stages_table(steps: list[Step]) -> Table:
    t = Table(title="where the time goes: the flow's stage histograms (p50 / p99 ms, interpolated in buckets; "
                    "due = window end + lateness) and CPU (cores busy over the step, µs per reading for the flow)")
    t.add_column("offered R/s", justify="right")
    for _, name in STAGE_ROWS:
        t.add_column(name, justify="right")
    for col in ("flow", "flow µs/rdg", "broker", "postgres", "load gen"):
        t.add_column(col, justify="right")
    for s in steps:
        cells = []
        for stage, _ in STAGE_ROWS:
            f = s.stages.get(stage)
            cells.append("-" if f is None or not f.count else f"{f.p50_ms:,.0f} / {f.p99_ms:,.0f}")
        cores = {g: v / s.busy_s for g, v in s.cpu_s.items()}
        t.add_row(f"{s.rate:,.0f}" + (" (½)" if s.half else ""), *cells, f"{cores.get('flow', math.nan):.2f}",
                  f"{s.cpu_s.get('flow', math.nan) / max(s.sent.finite, 1) * 1e6:.1f}",
                  f"{cores.get('broker', math.nan):.2f}", f"{cores.get('postgres', math.nan):.2f}",
                  f"{cores.get('load generator', math.nan):.2f}")
    return t


# -- scale: a fixed backlog, 1 and 2 processes ----------------------------------------------------


@dataclass(frozen=True)
class ScaleRun:
    processes: int
    stored: int
    wall_s: float
    busy_s: float  # first reading row visible -> last process exited
    cpu_s: dict[str, float]  # CPU seconds by group over the whole run (the flow's start-up included)
    digest: str  # what the run stored, for the identical-results check
    fixed_cpu_s: float = math.nan  # the flow's CPU seconds for the same processes on an empty topic

    @property
    def rate(self) -> float:
        return self.stored / self.busy_s

    @property
    def flow_cpu_us_per_reading(self) -> float:
        return self.cpu_s["flow"] / max(self.stored, 1) * 1e6

    @property
    def flow_cpu_us_per_reading_net(self) -> float:
        """Without the processes' fixed cost (start-up, shutdown): what each further reading costs."""
        return (self.cpu_s["flow"] - self.fixed_cpu_s) / max(self.stored, 1) * 1e6


def results_digest(conn: psycopg.Connection, schema: str) -> str:
    """A digest of the anomalies and alarms a run stored (ids, statuses, scores, severities) and its counts."""
    return conn.execute(
        f"SELECT md5(coalesce((SELECT string_agg(anomaly_id || status || score::text || severity::text, ',' "
        f"ORDER BY anomaly_id) FROM {schema}.anomalies), '') || '|' || "
        f"coalesce((SELECT string_agg(alarm_id || status || severity::text, ',' ORDER BY alarm_id, status) "
        f"FROM {schema}.alarms), '') || '|' || (SELECT count(*) FROM {schema}.readings)::text || '|' || "
        f"(SELECT count(*) FROM {schema}.features)::text)").fetchone()[0]


def publish_backlog(kafka: KafkaSettings, assets: int, seed: int, ts_format: str, n: int) -> int:
    """`n` readings of the plant spaced as at 100k readings/s, ending a minute ago; returns finite values sent."""
    model = plant_model(assets, seed)
    streams = streams_of(model)
    tick_ms = streams / 100_000 * 1000
    ticks = math.ceil(n / streams)
    t0_ms = int(time.time() * 1000 - ticks * tick_ms - 60_000)
    readings, _ = retimed(model, SIM_START_TICK, ticks, t0_ms, tick_ms)
    readings = readings.take(np.arange(min(n, len(readings))))
    publisher = Publisher(kafka)
    publisher.send(encode(readings, ts_format), asset_keys(readings))
    publisher.flush()
    return int(np.isfinite(readings.value).sum())


def run_backlog(env: dict[str, str], dsn: str, schema: str, log_dir: Path, processes: int,
                epoch_s: int | None, flows: list[Flow], services: dict[str, list[int]]) -> ScaleRun:
    ensure_schema(dsn, schema)
    flow = Flow(env, log_dir, processes, epoch_s)
    flows.append(flow)
    started, first = time.time(), None
    flow.start()
    cpu = CpuGroups({"flow": [p.pid for p in flow.procs], **services})
    cpu0 = cpu.sample()
    with psycopg.connect(dsn, autocommit=True) as conn:
        while any(p.poll() is None for p in flow.procs):
            cpu.sample()  # every 20 ms: a process that exits keeps its last sample
            if first is None and conn.execute(f"SELECT EXISTS (SELECT 1 FROM {schema}.readings)").fetchone()[0]:
                first = time.time()
            if time.time() - started > 900:
                raise TimeoutError("the backlog run took more than 15 minutes")
            time.sleep(0.02)
        ended = time.time()
        used = cpu_used(cpu.sample(), cpu0)
        flow.check(must_run=False)
        stored = conn.execute(f"SELECT count(*) FROM {schema}.readings").fetchone()[0]
        digest = results_digest(conn, schema)
    return ScaleRun(processes, stored, ended - started, ended - (first or started), used, digest)


def scale_table(runs: list[ScaleRun], published: int) -> Table:
    t = Table(title=f"scale: a backlog of {published:,} finite readings on {PARTITIONS} partitions, "
                    f"read to its end (kafka.tail=false)")
    for col in ("processes", "readings stored", "wall s", "first row -> exit s", "readings/s", "speed-up",
                "flow CPU s", "empty-topic CPU s", "flow CPU µs/reading", "net µs/reading", "broker CPU s",
                "postgres CPU s", "same results"):
        t.add_column(col, justify="right")
    for r in runs:
        t.add_row(str(r.processes), f"{r.stored:,}", f"{r.wall_s:.2f}", f"{r.busy_s:.2f}", f"{r.rate:,.0f}",
                  f"{r.rate / runs[0].rate:.2f}", f"{r.cpu_s['flow']:.2f}", f"{r.fixed_cpu_s:.2f}",
                  f"{r.flow_cpu_us_per_reading:.1f}", f"{r.flow_cpu_us_per_reading_net:.1f}",
                  f"{r.cpu_s.get('broker', math.nan):.2f}", f"{r.cpu_s.get('postgres', math.nan):.2f}",
                  "yes" if r.digest == runs[0].digest else "[red]NO[/]")
    return t


# -- main -------------------------------------------------------------------------------------------


def topics(bootstrap: str, prefix: str) -> KafkaSettings:
    names = {f"{s}_topic": f"{prefix}-{s}-{secrets.token_hex(3)}" for s in ("readings", "alarms", "dead_letters")}
    create_topics(bootstrap, {names["readings_topic"]: PARTITIONS, names["alarms_topic"]: 1,
                              names["dead_letters_topic"]: 1})
    return KafkaSettings(brokers=(bootstrap,), **names)


def run_live(args: argparse.Namespace, bootstrap: str, dsn: str, tmp: Path, flows: list[Flow],
             schemas: list[str]) -> list[Step]:
    kafka = topics(bootstrap, "live")
    schema = f"live_{secrets.token_hex(4)}"
    schemas.append(schema)
    ensure_schema(dsn, schema)
    port = free_port()
    env = live_env(dsn, schema, kafka, tmp / "state", tail=True)
    env["SMART_MAINTENANCE__METRICS_PORT"] = str(port)
    flow = Flow(env, tmp, 1, args.epoch_s)
    flows.append(flow)
    flow.start()
    model = plant_model(args.assets, args.seed)
    watcher = Watcher(dsn, schema, list(model.asset_ids))
    watcher.start()
    cpu = CpuGroups({"flow": [p.pid for p in flow.procs], **service_pids(tmp / "pgdata")})
    live = Live(kafka, dsn, schema, args.assets, args.seed, flow, watcher, streams_of(model), args.ts_format,
                port, cpu)
    try:
        rates = [float(r) for r in args.rates.split(",")]
        warm = live.offer(rates[0], args.warmup_s)
        console.print(f"warm-up: {warm.sent.n:,} readings at {rates[0]:,.0f}/s, drained {warm.drain_s:.2f} s "
                      f"after the last send, {len(warm.windows_ms)} windows seen")
        steps: list[Step] = []
        for rate in rates:
            step = live.offer(rate, args.step_s)
            steps.append(step)
            console.print(f"{rate:,.0f}/s: sent {step.offered:,.0f}/s, lag end {step.lag_end:,}, "
                          f"p99 {_ms(step.windows_ms, 99)} ms, drain {step.drain_s:.2f} s")
            if not step.flat:
                break
        flat = [s.rate for s in steps if s.flat]
        if flat and args.half_step:  # the latency target is set at half the highest flat rate
            half = live.offer(max(flat) / 2, args.step_s)
            half.half = True
            steps.append(half)
            console.print(f"half of {max(flat):,.0f}/s: p99 anomaly stored {_ms(half.anomalies_ms, 99)} ms "
                          f"beyond window close")
        console.print(f"watcher: {len(watcher.poll_ms)} polls, median {pct(watcher.poll_ms, 50):.1f} ms each")
        if watcher.error is not None:
            raise RuntimeError(f"the PostgreSQL watcher failed: {watcher.error}") from watcher.error
        return steps
    finally:
        watcher.stop()
        flow.stop()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rates", default="20000,40000,60000,80000,90000,100000,110000,120000,135000,150000",
                    help="offered readings/s, rising; stops at the first whose lag is not flat")
    ap.add_argument("--step-s", type=float, default=15.0)
    ap.add_argument("--warmup-s", type=float, default=30.0,
                    help="first rate, unmeasured: detectors warm up (their first fit is 24 s in)")
    ap.add_argument("--assets", type=int, default=200)
    ap.add_argument("--seed", type=int, default=7)
    ap.add_argument("--backlog", type=int, default=1_000_000, help="readings for the 1 -> 2 process run (0: skip)")
    ap.add_argument("--backlog-runs", type=int, default=3,
                    help="rounds of the 1 -> 2 process run, alternated; the last line gives the medians")
    ap.add_argument("--epoch-s", type=int, default=None, help="Bytewax epoch (-s) in whole seconds; default 10")
    ap.add_argument("--ts-format", choices=("rfc3339", "ms"), default="rfc3339",
                    help="the readings' ts on the wire: RFC 3339 text (as publish_readings sends) or epoch ms")
    ap.add_argument("--dsn", default=None, help="PostgreSQL DSN (default: an embedded server in a temp dir)")
    ap.add_argument("--no-half-step", dest="half_step", action="store_false",
                    help="skip the extra step at half the highest flat rate (where the latency target is set)")
    ap.add_argument("--only-backlog", action="store_true",
                    help="skip the live steps: only the 1 -> 2 process backlog run (cpu_ratio_2p, scale_2p, same_2p)")
    args = ap.parse_args()
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # clean up (finally, atexit) on a plain kill too

    tmp = Path(tempfile.mkdtemp(prefix="sm-live-"))
    tmp.chmod(0o755)  # as root the embedded server runs as another user
    atexit.register(shutil.rmtree, tmp, ignore_errors=True)  # registered first: runs after the server stops
    (tmp / "state").mkdir()
    flows: list[Flow] = []
    schemas: list[str] = []
    dsn = args.dsn
    try:
        with tansu_broker() as broker:
            if dsn is None:
                from smart_maintenance.connectors.postgres.server import embedded_dsn

                dsn = embedded_dsn(tmp / "pgdata")
            steps = [] if args.only_backlog else run_live(args, broker.bootstrap, dsn, tmp, flows, schemas)
            runs: list[ScaleRun] = []
            if args.backlog:
                kafka = topics(broker.bootstrap, "backlog")
                empty = topics(broker.bootstrap, "empty")  # the processes' fixed cost: start, find EOF, stop
                published = publish_backlog(kafka, args.assets, args.seed, args.ts_format, args.backlog)
                services = service_pids(tmp / "pgdata")
                for _ in range(args.backlog_runs):  # 1 then 2 processes, alternated: a pair per round
                    for processes in (1, 2):
                        fixed = []
                        for topic in (empty, kafka):
                            schema = f"live_{secrets.token_hex(4)}_p{processes}"
                            schemas.append(schema)
                            env = live_env(dsn, schema, topic, tmp / "state", tail=False)
                            fixed.append(run_backlog(env, dsn, schema, tmp, processes, args.epoch_s, flows, services))
                        runs.append(replace(fixed[1], fixed_cpu_s=fixed[0].cpu_s["flow"]))
                        if len(schemas) > 4:  # keep the server small: only the digest of a run is compared
                            drop_schemas(dsn, schemas[:-4])
                            del schemas[:-4]
    finally:
        for f in flows:
            f.stop()
        if dsn is not None and schemas:
            drop_schemas(dsn, schemas)

    console.print(step_table(steps, args.assets, args.step_s))
    console.print(stages_table(steps))
    if runs:
        console.print(scale_table(runs, published))
    console.print(f"load average at the end: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    flat = [s for s in steps if s.flat and not s.half]
    best = max(flat, key=lambda s: s.rate) if flat else None
    half = next((s for s in steps if s.half), None)
    pairs = list(zip(runs[0::2], runs[1::2], strict=True))  # (1 process, 2 processes) per round
    scale_2p = median([two.rate / one.rate for one, two in pairs])
    ratios = [two.flow_cpu_us_per_reading / one.flow_cpu_us_per_reading for one, two in pairs]
    cpu_ratio_2p = median(ratios)
    cpu_ratio_2p_net = median([two.flow_cpu_us_per_reading_net / one.flow_cpu_us_per_reading_net for one, two in pairs])
    drain = median([one.rate for one, _ in pairs])
    same = ("yes" if len({r.digest for r in runs}) == 1 else "no") if pairs else "nan"  # nan: not run
    if len(pairs) > 1:
        console.print(f"cpu_ratio_2p per round: {', '.join(f'{r:.2f}' for r in ratios)} (the last line: their median)")
    bound = cpu_bound(best, [one for one, _ in pairs], drain)
    print(f"kafka_max_per_s={best.rate if best else 0:.0f} p99_ms={pct(best.windows_ms, 99) if best else math.nan:.0f} "
          f"drain_per_s={drain:.0f} cpu_ratio_2p={cpu_ratio_2p:.2f} cpu_ratio_2p_net={cpu_ratio_2p_net:.2f} "
          f"scale_2p={scale_2p:.2f} "
          f"p99_half_ms={pct(half.anomalies_ms, 99) if half else math.nan:.0f} same_2p={same} "
          f"flat_ratio={(best.rate if best else 0) / drain:.2f} "
          f"p99_half_from_reading_ms={pct(half.anomalies_from_reading_ms, 99) if half else math.nan:.0f} "
          f"flat_ratio_cpu_bound={bound:.2f} half_anomalies={len(half.anomalies_ms) if half else 0} "
          f"half_gen_late_p99_ms={half.sent.late_p99_s * 1000 if half else math.nan:.0f}")


def us_per_reading(cpu_s: dict[str, float], readings: int, groups: tuple[str, ...]) -> dict[str, float]:
    return {g: cpu_s.get(g, math.nan) / max(readings, 1) * 1e6 for g in groups}


def cpu_bound(best: Step | None, drains: list[ScaleRun], drain: float) -> float:
    """The flat ratio this machine's CPU allows at the costs measured: the live rate every core would carry / drain.

    At its highest rates a live step is bound by CPU: the flow, PostgreSQL, the broker taking in every message
    and the load generator producing it share the machine's cores, so the most it can carry is the cores over
    the CPU seconds a reading costs all of them together. Costs are those of the highest flat step (at a higher
    rate they would be somewhat lower: larger batches, fewer windows per reading), so this is an estimate of the
    ceiling, not a proof. The drain is the measured rate: a drain also waits (batches, commits), so it need not
    use every core. Prints the live breakdown, and the drain's beside it (1 process, fixed cost left out): what
    live pays that a backlog does not is the broker's intake and the generator, work a backlog did before the
    run. nan when either part was not run.
    """
    if best is None or not drains:
        return math.nan
    live_groups = ("flow", "postgres", "broker", "load generator")
    live = us_per_reading(best.cpu_s, best.sent.finite, live_groups)
    per_drain = [{**us_per_reading(r.cpu_s, r.stored, ("postgres", "broker")),
                  "flow": (r.cpu_s["flow"] - r.fixed_cpu_s) / max(r.stored, 1) * 1e6} for r in drains]
    drain_us = {g: median([d[g] for d in per_drain]) for g in ("flow", "postgres", "broker")}
    cores = len(os.sched_getaffinity(0))
    ceiling = cores * 1e6 / sum(live.values())
    console.print("CPU µs per reading, live at " + f"{best.rate:,.0f}/s: "
                  + ", ".join(f"{g} {v:.1f}" for g, v in live.items())
                  + f" (so {cores} cores carry at most {ceiling:,.0f}/s); drain (1 process, fixed cost left out): "
                  + ", ".join(f"{g} {v:.1f}" for g, v in drain_us.items())
                  + f" ({sum(drain_us.values()) * drain / 1e6:.2f} cores busy at {drain:,.0f}/s)")
    return ceiling / drain


def median(values: list[float]) -> float:
    """The median, nan for none (a part of the bench that was not run)."""
    return float(np.median(values)) if values else math.nan


def drop_schemas(dsn: str, schemas: list[str]) -> None:
    with psycopg.connect(dsn, autocommit=True) as conn:
        for schema in schemas:
            conn.execute(f"DROP SCHEMA IF EXISTS {schema} CASCADE")


if __name__ == "__main__":
    main()
