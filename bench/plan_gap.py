"""The proven gap of the dispatch's plan: bench/scheduling.py's 50x5 instances under the dispatch's settings.

    .venv/bin/python bench/plan_gap.py [--seeds 1-8] [--instance bench/plan_144h_final.json]

Solves each 50x5 seed (seeds 1-4 tune, 5-8 are held out) as the dispatch does (work limit 1.0
deterministic s, one worker, seed 0, gap limit 0.01), with the wall-clock cap raised to 300 s so that
the work limit decides on a loaded machine, and the instance of `--instance` (default
`bench/plan_144h_final.json`: the final plan of `bench/throughput.py --hours 144`, 51 work orders,
6 technicians, captured from `scheduling.solve`'s arguments; '' for none). Prints one
row per instance; last line `plan_gap_median=<x> plan_gap_max=<x> stopped=<n>/<m>` where `stopped`
counts plans that ended within the gap limit.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from scheduling import instance  # noqa: E402  (bench/scheduling.py)

import smart_maintenance.operators.plan.scheduling as planner  # noqa: E402

GAP_LIMIT, WORK_LIMIT = 0.01, 1.0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seeds", default="1-8", help="first-last")
    ap.add_argument("--instance", default=str(Path(__file__).resolve().parent / "plan_144h_final.json"),
                    help="a JSON instance to add ('' for none)")
    args = ap.parse_args()
    first, last = (int(x) for x in args.seeds.split("-"))
    cases = [(f"50x5 seed {s}", *instance(50, 5, 4, s), None) for s in range(first, last + 1)]
    if args.instance:
        data = json.loads(Path(args.instance).read_text())
        jobs = [planner.Job(**{**j, "required_skills": frozenset(j["required_skills"])}) for j in data["jobs"]]
        techs = [planner.TechnicianShifts(t["technician_id"], frozenset(t["skills"]), tuple(map(tuple, t["windows"])))
                 for t in data["technicians"]]
        cases.append((Path(args.instance).name, jobs, techs, None))
    spent = [0.0]
    original = planner._Budget.spend

    def spend(self: planner._Budget, solver: planner.cp_model.CpSolver, at_least: float = 0.0) -> None:
        spent[0] += max(solver.deterministic_time, at_least)
        original(self, solver, at_least)

    planner._Budget.spend = spend  # type: ignore[method-assign]  # count the work, change nothing
    gaps = []
    for name, jobs, techs, previous in cases:
        spent[0] = 0.0
        cpu = time.process_time()
        plan = planner.solve(jobs, techs, time_limit_s=300.0, previous=previous, work_limit=WORK_LIMIT,
                                workers=1, seed=0, gap_limit=GAP_LIMIT)
        cpu = time.process_time() - cpu
        gaps.append(plan.gap or 0.0)
        print(f"{name}: objective={plan.objective:,} bound={plan.bound:,} gap={plan.gap:.4f} status={plan.status} "
              f"method={plan.method} work_s={spent[0]:.3f} cpu_s={cpu:.2f}", flush=True)
    stopped = sum(g <= GAP_LIMIT for g in gaps)
    print(f"plan_gap_median={statistics.median(gaps):.4f} plan_gap_max={max(gaps):.4f} stopped={stopped}/{len(gaps)}")


if __name__ == "__main__":
    main()
