"""A flow process's fixed cost: bench/live.py's empty-topic runs alone, alternated between source trees.

    PYTHONPATH=. python bench/flow_start.py [--tree DIR ...] [--rounds 5] [--processes 1,2] [--profile DIR]

The same set-up as `bench/live.py --only-backlog` (Tansu, an embedded PostgreSQL, its backlog settings with
`kafka.tail=false`), but only the runs that give `cpu_ratio_2p_net` its fixed cost: 1 and 2 flow processes
read an empty 4-partition topic to its end (imports, build, connections, the empty read, shutdown), and the
flow's CPU seconds (psutil, user + system, children included) are summed over its processes. Each `--tree`
(a checkout of this project; default: the current directory) runs the same rounds, alternated A B A B within
each round, from its own directory: the virtualenv's `.pth` puts that directory's `smart_maintenance` first.
`--profile DIR` also runs one process per tree under cProfile (`DIR/<tree name>.prof`).

Last line: `fixed_1p=<median CPU-s> fixed_2p=<median CPU-s>` per tree, in `--tree` order.
"""

from __future__ import annotations

import sys
from pathlib import Path

if __package__ in (None, ""):  # run as a script: make `bench` and `tests` importable, as pytest does
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import argparse
import atexit
import os
import secrets
import shutil
import subprocess
import tempfile

import numpy as np

from bench.live import FLOW, Flow, drop_schemas, live_env, run_backlog, service_pids, topics
from tests.integration.kafka_broker import tansu_broker


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--tree", action="append", default=None, help="a checkout to run the flow from (repeatable)")
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--processes", default="1,2")
    ap.add_argument("--profile", type=Path, default=None, help="also write one cProfile per tree to this folder")
    args = ap.parse_args()
    trees = [Path(t).resolve() for t in (args.tree or ["."])]
    counts = [int(p) for p in args.processes.split(",")]
    tmp = Path(tempfile.mkdtemp(prefix="sm-start-"))
    tmp.chmod(0o755)  # as root the embedded server runs as another user
    atexit.register(shutil.rmtree, tmp, ignore_errors=True)
    (tmp / "state").mkdir()
    cwd = os.getcwd()
    flows: list[Flow] = []
    cpu: dict[tuple[Path, int], list[float]] = {(t, n): [] for t in trees for n in counts}
    try:
        with tansu_broker() as broker:
            from smart_maintenance.connectors.postgres.server import embedded_dsn

            dsn = embedded_dsn(tmp / "pgdata")
            empty = topics(broker.bootstrap, "empty")
            services = service_pids(tmp / "pgdata")
            if args.profile:
                args.profile.mkdir(parents=True, exist_ok=True)
                for tree in trees:
                    env = live_env(dsn, f"prof_{secrets.token_hex(4)}", empty, tmp / "state", tail=False)
                    from smart_maintenance.connectors.postgres.schema import ensure_schema

                    ensure_schema(dsn, env["SMART_MAINTENANCE__POSTGRES__SCHEMA_NAME"])
                    out = args.profile / f"{tree.name}.prof"
                    subprocess.run([sys.executable, "-m", "cProfile", "-o", str(out), "-m", "bytewax.run", FLOW],
                                   env=env, cwd=tree, check=True, stdout=subprocess.DEVNULL)
                    print(f"profile: {out}", file=sys.stderr)
            for r in range(args.rounds):
                for n in counts:
                    for tree in trees:
                        schema = f"start_{secrets.token_hex(4)}_p{n}"
                        env = live_env(dsn, schema, empty, tmp / "state", tail=False)
                        os.chdir(tree)  # Flow starts its processes in the current directory
                        try:
                            run = run_backlog(env, dsn, schema, tmp, n, None, flows, services)
                        finally:
                            os.chdir(cwd)
                        cpu[(tree, n)].append(run.cpu_s["flow"])
                        drop_schemas(dsn, [schema])
                        print(f"round {r} {tree.name} {n}p: {run.cpu_s['flow']:.2f} CPU-s, wall {run.wall_s:.2f} s, "
                              f"load {os.getloadavg()[0]:.2f}", file=sys.stderr)
    finally:
        for f in flows:
            f.stop()
    if not args.rounds:
        return
    for tree in trees:
        figures = " ".join(f"fixed_{n}p={np.median(cpu[(tree, n)]):.2f}" for n in counts)
        spread = " ".join(f"{n}p {min(cpu[(tree, n)]):.2f}-{max(cpu[(tree, n)]):.2f}" for n in counts)
        print(f"{tree.name}: {figures} (min-max {spread}; load {os.getloadavg()[0]:.2f})")


if __name__ == "__main__":
    main()
