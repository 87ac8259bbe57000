"""End-to-end throughput: a day of a 20-asset plant replayed through the whole flow, all sinks on.

    python bench/throughput.py [--assets 20] [--hours 24] [--workers 1]

1. generates a long CSV from the simulator (20 assets x 5 sensors x 1 day at 10 s = 864,000 readings);
2. replays it through the whole Bytewax dataflow as shipped into a fresh embedded PostgreSQL and JSONL
   files for every stream: detection, predictions (pool process), work orders, the end-of-replay
   CP-SAT plan, notifications (recorded, no channel), the incident memory (`readings_per_s`);
3. replays it through the detection path only (prediction, work orders and incident memory off:
   readings, features, anomalies, alarms, dead letters) (`detect_per_s`);
4. does the work of 3 in a plain Python loop without Bytewax: the same source partition, the same
   operator steps and the same sink partitions, called directly, into another fresh schema.

The difference between 3 and 4 is the framework's overhead; between 2 and 3 the maintenance loop's,
which is per alarm, not per reading (mostly fixed costs: the final plan, the embedding model load,
waiting for the last predictions). `per_core` divides the full flow's rate by the number of Bytewax
workers; the PostgreSQL server runs in its own processes, on the other core.
Last line: `readings_per_s=<n> per_core=<n> detect_per_s=<n> plain_per_s=<n>`, then each run's CPU
seconds (`whole_cpu_s=<s>`: this process and its children, not PostgreSQL's server;
`whole_own_cpu_s=<s>`: this process alone). `--runs`
picks runs, including ablations of the whole flow (`no_incidents`, `no_prediction`, `no_work`).

One-off assets (hostile input: every reading from a new, invented asset id):

    python bench/throughput.py --hours 6 --one-off 200
    python bench/throughput.py --hours 6 --one-off 20000

adds that many readings, each of its own asset id, spread over the plant file's time range, and
runs only the detection path (step 3). Run each size in its own process so that `max_rss_mb` is
that run's peak. Last line: `one_off=<n> readings=<n> detect_per_s=<n> max_rss_mb=<m>`.
"""

from __future__ import annotations

import argparse
import os
import pickle
import tempfile
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.csv as pacsv
from rich.console import Console
from rich.table import Table

from smart_maintenance.config.registry import load_registry
from smart_maintenance.config.settings import SimulatorSettings, load_settings
from smart_maintenance.connectors.postgres.schema import ensure_schema
from smart_maintenance.connectors.postgres.server import resolve_dsn, stop_embedded
from smart_maintenance.dataflows.outputs import default_outputs
from smart_maintenance.dataflows.plant import build_flow
from smart_maintenance.dataflows.steps import Steps
from smart_maintenance.operators.ingest.windows import flush_windows, window_readings
from smart_maintenance.sources.plant_model import PlantModel
from smart_maintenance.sources.replay import ReplaySource

console = Console(stderr=True)
# the whole flow with one stage off (`--runs`): where its time goes
ABLATIONS = {
    "no_incidents": {"incidents": {"enabled": False}},
    "no_prediction": {"prediction": {"enabled": False}},
    "no_work": {"work": {"enabled": False}, "incidents": {"enabled": False}},
}


def make_file(path: Path, assets: int, hours: float) -> int:
    plant = load_registry().with_simulated(assets)
    sim = SimulatorSettings(assets=assets, duration_s=hours * 3600, interval_s=10.0)
    model = PlantModel(plant, sim)
    r = model.generate(range(assets), 0, model.n_ticks)
    table = pa.table({"ts": r.ts, "asset_id": r.asset_id.astype(str), "sensor": r.sensor.astype(str), "value": r.value})
    pacsv.write_csv(table, path)
    return len(r)


def add_one_off(path: Path, n: int) -> int:
    """Append `n` readings, each from an asset id never seen before or after, in time order with the plant."""
    table = pacsv.read_csv(path)
    ts = table["ts"].to_numpy()
    rng = np.random.default_rng(15)
    extra = pa.table({
        "ts": np.sort(rng.integers(int(ts.min()), int(ts.max()), n)).astype(ts.dtype),
        "asset_id": [f"stray-{i:06d}" for i in range(n)],
        "sensor": ["t"] * n,
        "value": rng.normal(size=n),
    }).cast(table.schema)
    merged = pa.concat_tables([table, extra])
    merged = merged.take(np.argsort(merged["ts"].to_numpy(), kind="stable"))
    pacsv.write_csv(merged, path)
    return len(merged)


def one_off_main(args: argparse.Namespace) -> None:
    import resource

    with tempfile.TemporaryDirectory(prefix="sm-bench-") as tmp:
        tmp = Path(tmp)
        path = tmp / "plant.csv"
        make_file(path, args.assets, args.hours)
        n = add_one_off(path, args.one_off)
        (tmp / "state").mkdir()
        settings = load_settings(console=False, progress=False, data_dir=tmp / "state",
                                 detection={"warmup": "6h"}, prediction={"enabled": False},
                                 work={"enabled": False}, incidents={"enabled": False}, notify={"channels": []},
                                 postgres={"schema_name": "bench_one_off"})
        ensure_schema(resolve_dsn(settings), "bench_one_off")
        seconds = run_flow(settings, path, args.workers)
        stop_embedded(tmp / "state" / "pgdata")
    rss_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    console.print(f"{n:,} readings ({args.one_off:,} of one-off assets) in {seconds:.2f} s")
    print(f"one_off={args.one_off} readings={n} detect_per_s={n / seconds:.0f} max_rss_mb={rss_mb:.0f}")


def cpu_seconds() -> float:
    """CPU time of this process and its descendants (the prediction and incident processes, their
    cmdstan runs), user + system; on a loaded machine a steadier measure of work than wall time.
    The PostgreSQL server is not a descendant and is not counted."""
    import psutil

    me = psutil.Process()
    total = 0.0
    for p in (me, *me.children(recursive=True)):
        try:
            t = p.cpu_times()
        except psutil.NoSuchProcess:
            continue
        total += t.user + t.system + t.children_user + t.children_system
    return total


def side_cpu_seconds(pgdata: Path) -> dict[str, float]:
    """CPU time (user + system, reaped children included: the cmdstan runs) of the prediction pool
    process, the incident process and the embedded PostgreSQL server (its postmaster and backends)."""
    import psutil

    from smart_maintenance.dataflows import offload

    def total(p: psutil.Process, children: bool) -> float:
        try:
            t = p.cpu_times()
        except psutil.NoSuchProcess:
            return 0.0
        return t.user + t.system + (t.children_user + t.children_system if children else 0.0)

    out = {"predict": 0.0, "incidents": 0.0, "postgres": 0.0}
    for name, ex in list(offload._POOLS.items()):
        for pid in list(getattr(ex, "_processes", None) or {}):
            try:
                out[name] += total(psutil.Process(pid), True)
            except psutil.NoSuchProcess:
                continue
    for p in psutil.process_iter(["cmdline"]):
        if str(pgdata) in " ".join(p.info["cmdline"] or ()):
            out["postgres"] += total(p, True)  # with the backends that have ended
            for c in p.children(recursive=True):
                out["postgres"] += total(c, False)
    return out


def loop_counts() -> dict[str, float]:
    """Predictions by method (and superseded ones), re-plans and their seconds: this process's metrics."""
    from smart_maintenance import metrics

    out: dict[str, float] = {}
    for metric, key in ((metrics.PREDICTIONS, "pred"), (metrics.SCHEDULE_SECONDS, "plan")):
        for fam in metric.collect():
            for sample in fam.samples:
                if sample.name.endswith("_total"):
                    out[f"{key}_{sample.labels.get('method', '')}"] = sample.value
                elif sample.name.endswith(("_count", "_sum")):
                    out[f"{key}_{sample.name.rsplit('_', 1)[1]}"] = sample.value  # plan_count, plan_sum (seconds)
    return out


def threads_sched() -> dict[int, tuple[float, float]]:
    """Each thread's seconds on a CPU and waiting for one, by thread id (/proc schedstat, Linux)."""
    out = {}
    for tid in os.listdir("/proc/self/task"):
        try:
            with open(f"/proc/self/task/{tid}/schedstat") as f:
                run_ns, wait_ns, _ = f.read().split()
        except (OSError, ValueError):
            continue
        out[int(tid)] = (int(run_ns) / 1e9, int(wait_ns) / 1e9)
    return out


def worker_sched(before: dict[int, tuple[float, float]]) -> tuple[float, float]:
    """The busiest thread's (the Bytewax worker's) CPU and run-queue seconds since `before`; the run's
    wall time minus both is time it slept: blocked on a lock, a queue, a socket or a timer."""
    deltas = [(r - before.get(t, (0.0, 0.0))[0], w - before.get(t, (0.0, 0.0))[1])
              for t, (r, w) in threads_sched().items()]
    return max(deltas, default=(0.0, 0.0))


def own_cpu_seconds() -> float:
    """CPU time of this process alone (the flow's threads), user + system."""
    t = os.times()
    return t.user + t.system


def run_flow(settings, path: Path, workers: int) -> float:
    from bytewax.run import cli_main

    source = ReplaySource([str(path)], chunk_rows=settings.replay.chunk_rows)
    flow = build_flow(settings, source=source, registry=load_registry())
    t = time.perf_counter()
    cli_main(flow, workers_per_process=workers)
    return time.perf_counter() - t


def run_plain(settings, path: Path) -> float:
    """The flow's steps in a plain loop: same source partition, operators and sink partitions."""
    from bytewax.outputs import FixedPartitionedSink

    steps = Steps(settings, load_registry())

    def build(stream, sink):
        if isinstance(sink, FixedPartitionedSink):  # the flow's bulk sinks: one partition is enough here
            return True, sink.build_part(f"plain_{stream}", sink.list_parts()[0], None)
        return False, sink.build(f"plain_{stream}", 0, 1)

    outputs = {s: [build(s, sink) for sink in sinks] for s, sinks in default_outputs(settings).items()}

    def emit(stream: str, items: list, keyed: list | None = None) -> None:
        if items:
            for is_keyed, part in outputs[stream]:
                part.write_batch([v for _, v in keyed] if is_keyed and keyed is not None else items)

    windows, detectors, validators, alarms = {}, {}, {}, {}

    def judge(fb) -> None:
        a = fb.asset_id
        detectors[a], scored = steps.detect(detectors.get(a), fb)
        validators[a], judged = steps.validate(validators.get(a), scored)
        alarms[a], tracked = steps.track(alarms.get(a), judged)
        anomalies = [v.anomaly for v in judged.verdicts if v.anomaly]
        changed = list(tracked.alarms)
        emit("features", [fb], keyed=[(a, fb)])
        emit("anomalies", anomalies)
        emit("reviews", [x for x in anomalies if x.status == "needs_review"])
        emit("alarms", changed)

    t = time.perf_counter()
    part = ReplaySource([str(path)], chunk_rows=settings.replay.chunk_rows).build_part("plain", str(path), None)
    while True:
        try:
            batch = part.next_batch()
        except StopIteration:
            break
        for item in batch:
            checked = steps.check(steps.parse(item))
            emit("dead_letters", list(checked.rejects))
            if not len(checked.readings):
                continue
            by_asset = steps.split(checked.readings)
            emit("readings", [checked.readings], keyed=by_asset)
            for asset_id, ar in by_asset:
                windows[asset_id], out = window_readings(windows.get(asset_id), ar, steps.window_cfg)
                emit("dead_letters", list(out.late))
                if out.closed is not None:
                    judge(out.closed)
    for asset_id in sorted(windows):
        windows[asset_id], closed = flush_windows(windows[asset_id], steps.window_cfg)
        if closed is not None:
            judge(closed)
    for parts in outputs.values():
        for _, p in parts:
            p.close()
    elapsed = time.perf_counter() - t
    sizes = [
        sum(len(pickle.dumps(d.get(a))) for d in (windows, detectors, validators, alarms)) for a in sorted(windows)
    ]
    console.print(f"per-asset state (windows + detectors + validation + alarms, pickled): "
                  f"mean {np.mean(sizes) / 1024:.0f} KB, max {max(sizes) / 1024:.0f} KB")
    return elapsed


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--assets", type=int, default=20)
    ap.add_argument("--hours", type=float, default=24.0)
    ap.add_argument("--workers", type=int, default=1)
    ap.add_argument("--one-off", type=int, default=None, help="add this many one-off asset ids; detection path only")
    ap.add_argument("--runs", default="whole,detect,plain",
                    help="which runs, comma-separated: whole, detect, plain, and the ablations no_incidents, "
                         "no_prediction, no_work (the whole flow without that stage); missing ones print 0")
    args = ap.parse_args()
    if args.one_off is not None:
        one_off_main(args)
        return

    with tempfile.TemporaryDirectory(prefix="sm-bench-") as tmp:
        tmp = Path(tmp)
        path = tmp / "plant.csv"
        n = make_file(path, args.assets, args.hours)
        console.print(f"generated {n:,} readings ({path.stat().st_size / 1e6:.0f} MB CSV)")
        # a short warm-up suits a one-day file; the default (a day) would leave nothing to score
        common = dict(console=False, progress=False, data_dir=tmp / "state", detection={"warmup": "6h"})
        (tmp / "state").mkdir()
        runs = args.runs.split(",")
        unknown = set(runs) - {"whole", "detect", "plain", *ABLATIONS}
        if unknown:
            raise SystemExit(f"unknown runs: {sorted(unknown)}")
        off = dict(prediction={"enabled": False}, work={"enabled": False}, incidents={"enabled": False})
        plans = {"whole": {}, "detect": off, **ABLATIONS}
        seconds: dict[str, float] = {}
        cpu: dict[str, float] = {}
        own: dict[str, float] = {}
        dsn = None
        for run in runs:
            s = load_settings(**common, **plans.get(run, {}), out_dir=tmp / f"out_{run}",
                              postgres={"schema_name": f"bench_{run}"},
                              **({} if run == "plain" else {"notify": {"channels": []}}))
            dsn = dsn or resolve_dsn(s)
            ensure_schema(dsn, s.postgres.schema_name)
            s.out_dir.mkdir()
            cpu0, own0 = cpu_seconds(), own_cpu_seconds()
            side0, counts0 = side_cpu_seconds(tmp / "state" / "pgdata"), loop_counts()
            sched0 = threads_sched()
            seconds[run] = run_plain(s, path) if run == "plain" else run_flow(s, path, args.workers)
            on_cpu, runq = worker_sched(sched0)
            cpu[run], own[run] = cpu_seconds() - cpu0, own_cpu_seconds() - own0
            side = {k: v - side0.get(k, 0.0) for k, v in side_cpu_seconds(tmp / "state" / "pgdata").items()}
            loop = {k: v - counts0.get(k, 0.0) for k, v in loop_counts().items() if v - counts0.get(k, 0.0)}
            console.print(f"{run}: worker thread on a CPU {on_cpu:.1f} s, waiting for one {runq:.1f} s, asleep "
                          f"{seconds[run] - on_cpu - runq:.1f} s (of {seconds[run]:.1f} s)")
            console.print(f"{run}: CPU-s of the side processes " + " ".join(f"{k}={v:.1f}" for k, v in side.items())
                          + "; " + " ".join(f"{k}={v:g}" for k, v in sorted(loop.items())))
            console.print(f"{run}: {seconds[run]:.2f} s ({n / seconds[run]:,.0f} readings/s), {cpu[run]:.1f} CPU-s "
                          f"({own[run]:.1f} in the flow's process)")

        import psycopg

        with psycopg.connect(dsn) as conn:
            counts = {
                run: conn.execute(
                    f"SELECT (SELECT count(*) FROM bench_{run}.readings), (SELECT count(*) FROM bench_{run}.alarms)"
                ).fetchone()
                for run in runs
            }
            work_orders = (conn.execute("SELECT count(*) FROM bench_whole.work_orders").fetchone()[0]
                           if "whole" in runs else 0)
        stop_embedded(tmp / "state" / "pgdata")  # before its directory goes

    rates = {run: n / s for run, s in seconds.items()}
    t = Table(title=f"{n:,} readings, {args.assets} assets, {args.hours:g} h at 10 s, all sinks on")
    for col in ("run", "seconds", "readings/s", "CPU-s", "readings stored", "alarm rows"):
        t.add_column(col, justify="right")
    names = {"whole": f"whole flow, {args.workers} worker(s) ({work_orders} work orders)",
             "detect": f"detection path, {args.workers} worker(s)", "plain": "plain loop"}
    for run in runs:
        t.add_row(names.get(run, f"whole flow, {run}"), f"{seconds[run]:.2f}", f"{rates[run]:,.0f}", f"{cpu[run]:.1f}",
                  f"{counts[run][0]:,}", str(counts[run][1]))
    console.print(t)
    full, rate, plain = (rates.get(r, 0.0) for r in ("whole", "detect", "plain"))
    extra = "".join(f" {r}_per_s={rates[r]:.0f}" for r in ABLATIONS if r in rates)
    extra += "".join(f" {r}_cpu_s={c:.1f} {r}_own_cpu_s={own[r]:.1f}" for r, c in cpu.items())
    print(f"readings_per_s={full:.0f} per_core={full / args.workers:.0f} detect_per_s={rate:.0f} "
          f"plain_per_s={plain:.0f}{extra}")


if __name__ == "__main__":
    main()
