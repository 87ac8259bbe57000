"""Where 1 and 2 flow processes spend their CPU, by thread: the fixed cost of a process against the work.

    python bench/cluster_threads.py [--backlog 500000] [--assets 200] [--idle-s 10]

Set-up as `bench/live.py`'s scale part (a Tansu broker, an embedded PostgreSQL, 4 partitions): first the live
flow (`kafka.tail=true`) idle on an empty topic for `--idle-s` seconds (after 8 s of start-up), then a backlog
read to its end (`kafka.tail=false`) by 1 process and by 2 (`-i 0/1 -a`). Each thread's CPU (user + system,
psutil, sampled every 20 ms) is summed by its name: `main` (the process's first thread: imports, start-up,
the worker itself in a 1-process run), `timely:work` (a cluster process's worker thread, with the writer
threads it starts: Linux threads inherit their creator's name), `python` (writer threads started by the main
thread), `rdk:*` (librdkafka). Last line: `idle_cores_1p=<x> idle_cores_2p=<x> main_cpu_s_1p=<x>
main_cpu_s_2p=<x> work_cpu_s_2p=<x> total_cpu_s_1p=<x> total_cpu_s_2p=<x>`.
"""

from __future__ import annotations

import sys
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import argparse
import collections
import secrets
import shutil
import tempfile
import time

import psutil

from bench.live import Flow, live_env, publish_backlog, topics
from smart_maintenance.connectors.postgres.schema import ensure_schema
from smart_maintenance.connectors.postgres.server import embedded_dsn
from tests.integration.kafka_broker import tansu_broker

Seen = dict[tuple[int, int], tuple[str, float]]  # (pid, tid) -> (thread kind, CPU seconds)


def sample(pids: list[int], seen: Seen) -> None:
    for pid in pids:
        try:
            threads = psutil.Process(pid).threads()
        except psutil.Error:
            continue
        for t in threads:
            try:
                name = Path(f"/proc/{pid}/task/{t.id}/comm").read_text().strip()
            except OSError:
                continue
            kind = "main" if t.id == pid else name.rstrip("0123456789-")
            seen[(pid, t.id)] = (kind, t.user_time + t.system_time)


def by_kind(seen: Seen, before: Seen | None = None) -> dict[str, float]:
    out: collections.Counter[str] = collections.Counter()
    for key, (kind, cpu) in seen.items():
        out[kind] += cpu - (before or {}).get(key, (kind, 0.0))[1]
    return dict(out)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--backlog", type=int, default=500_000)
    ap.add_argument("--assets", type=int, default=200)
    ap.add_argument("--idle-s", type=float, default=10.0)
    args = ap.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="sm-threads-"))
    tmp.chmod(0o755)  # as root the embedded server runs as another user
    (tmp / "state").mkdir()
    figures: dict[str, float] = {}
    try:
        with tansu_broker() as broker:
            dsn = embedded_dsn(tmp / "pgdata")
            empty, backlog = topics(broker.bootstrap, "idle"), topics(broker.bootstrap, "backlog")
            published = publish_backlog(backlog, args.assets, 7, "rfc3339", args.backlog)
            for processes in (1, 2):
                for topic, tail in ((empty, True), (backlog, False)):
                    schema = f"threads_{secrets.token_hex(3)}"
                    ensure_schema(dsn, schema)
                    flow = Flow(live_env(dsn, schema, topic, tmp / "state", tail=tail), tmp, processes).start()
                    pids = [p.pid for p in flow.procs]
                    seen: Seen = {}
                    try:
                        if tail:  # idle: after start-up, over idle_s
                            time.sleep(8)
                            sample(pids, seen)
                            before, t0 = dict(seen), time.time()
                            time.sleep(args.idle_s)
                            sample(pids, seen)
                            cores = sum(by_kind(seen, before).values()) / (time.time() - t0)
                            figures[f"idle_cores_{processes}p"] = cores
                            print(f"{processes} process(es), idle: {cores:.3f} cores, by thread "
                                  f"{ {k: round(v / args.idle_s, 3) for k, v in by_kind(seen, before).items()} }",
                                  file=sys.stderr)
                        else:
                            t0 = time.time()
                            while any(p.poll() is None for p in flow.procs):
                                sample(pids, seen)
                                time.sleep(0.02)
                            flow.check(must_run=False)
                            kinds = by_kind(seen)
                            figures[f"main_cpu_s_{processes}p"] = kinds.get("main", 0.0)
                            if processes == 2:
                                figures["work_cpu_s_2p"] = kinds.get("timely:work", 0.0)
                            figures[f"total_cpu_s_{processes}p"] = sum(kinds.values())
                            print(f"{processes} process(es), backlog of {published:,} readings: "
                                  f"{time.time() - t0:.1f} s wall, {sum(kinds.values()):.2f} CPU-s, by thread "
                                  f"{ {k: round(v, 2) for k, v in sorted(kinds.items(), key=lambda kv: -kv[1])} }",
                                  file=sys.stderr)
                    finally:
                        flow.stop()
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    keys = ("idle_cores_1p", "idle_cores_2p", "main_cpu_s_1p", "main_cpu_s_2p", "work_cpu_s_2p", "total_cpu_s_1p",
            "total_cpu_s_2p")
    print(" ".join(f"{k}={figures.get(k, float('nan')):.3f}" for k in keys))


if __name__ == "__main__":
    main()
