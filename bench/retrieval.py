"""Incident-memory retrieval: recall@1 and recall@3 on a labelled set of past incidents.

    .venv/bin/python bench/retrieval.py [--seed 7] [--keep DIR]

Builds the labelled set of `bench/incident_corpus.py` (33 problems on pumps,
compressors, motors and conveyors, instrumentation faults among them; about
220 incidents written as technicians close work orders, 4 queries per problem
written as someone describes a new situation, sharing no 4-word run with any
incident), indexes the incidents with the real model into a temporary
ChromaDB directory through `IncidentMemory`, and searches:

- text only, in plain similarity order and with diversity (MMR: the top 3
  show different fixes rather than near-copies of one; what `ask` does);
- text + asset-type filter (the type's incidents first, the rest when fewer
  than k; `ask --asset-type`);
- text + asset-type filter + sensor bonus, plain and with diversity (the
  latter is what `similar_for` does for a work order);

and, as a check of `similar_for` itself, one work order per machine failure
mode built the way the flow builds it (asset type, alarm sensors, a detector
reason: no words from a person), judged at failure-mode level.

recall@k is the share of queries with at least one right incident among the
first k hits. A query's right incidents are those of its problem: the same
failure on the same asset type fixed the same way (instrumentation: on any
asset type). "mode" columns count any incident of the same failure mode on the
same asset type as right. The last line is the production setting of a work
order (type filter + sensors + diversity): `recall_at_1=<x> recall_at_3=<x>`.
The sensor bonus (0.15) and diversity (0.3) were chosen on seeds 11 and 13;
the default seed 7 was not used to choose them.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

from rich.console import Console
from rich.table import Table

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.incident_corpus import CASES, build, registry, shared_ngrams  # noqa: E402
from smart_maintenance.config.incident_settings import IncidentSettings  # noqa: E402
from smart_maintenance.operators.plan.work_orders import WorkOrder  # noqa: E402
from smart_maintenance.stores.incidents import IncidentMemory  # noqa: E402

VARIANTS = (  # name, asset-type filter, sensors, diversity (None = the setting)
    ("text only, plain order", False, False, 0.0),
    ("text only (ask)", False, False, None),
    ("+ asset type (ask --asset-type)", True, False, None),
    ("+ asset type + sensors, plain order", True, True, 0.0),
    ("+ asset type + sensors (similar_for)", True, True, None),
)


def _recall(hits: list[list[str]], relevant: list[frozenset[str]], k: int) -> float:
    return sum(bool(set(h[:k]) & r) for h, r in zip(hits, relevant, strict=True)) / max(len(hits), 1)


def _mrr(hits: list[list[str]], relevant: list[frozenset[str]]) -> float:
    ranks = [next((1 / (i + 1) for i, x in enumerate(h) if x in r), 0.0) for h, r in zip(hits, relevant, strict=True)]
    return sum(ranks) / max(len(ranks), 1)


def _work_orders() -> list[tuple[WorkOrder, str]]:
    """One work order per machine failure mode of the registry, as the flow would open it."""
    t = datetime(2026, 1, 5, tzinfo=timezone.utc)
    out = []
    for asset_type, spec in registry().items():
        for mode, m in spec["failure_modes"].items():
            sensors = tuple(sorted(m["effects"], key=lambda s: -m["effects"][s]))
            wo = WorkOrder(f"wo-{asset_type}-{mode}", f"{asset_type}-01", "a", "repair", "open", 3, (), 60, t, t, t,
                           sensors=sensors, reason="persistent (3 of last 5); detectors: iforest,limits",
                           asset_type=asset_type)
            out.append((wo, mode))
    return out


def run(seed: int, directory: Path) -> dict:
    incidents, queries, case_of = build(seed)
    overlap = shared_ngrams(incidents, queries, 4)
    memory = IncidentMemory(IncidentSettings(), directory)
    t0 = time.perf_counter()
    memory.embed(["warm up"])
    load_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    memory.add(incidents)
    index_s = time.perf_counter() - t0
    rows = []
    for name, use_type, use_sensors, diversity in VARIANTS:
        hits, lat = [], []
        for q in queries:
            t0 = time.perf_counter()
            res = memory.similar(q.text, k=10, asset_type=q.asset_type if use_type else None,
                                 sensors=q.sensors if use_sensors else None, diversity=diversity)
            lat.append(time.perf_counter() - t0)
            hits.append([r["incident_id"] for r in res])
        rel = [q.relevant for q in queries]
        mode = [q.relevant_mode for q in queries]
        rows.append({
            "name": name, "r1": _recall(hits, rel, 1), "r3": _recall(hits, rel, 3), "mrr": _mrr(hits, rel),
            "m1": _recall(hits, mode, 1), "m3": _recall(hits, mode, 3), "ms": 1000 * statistics.median(lat),
            "hits": hits,
        })
    # work orders from the flow: only sensors and a detector reason to go on
    modes = {c.key: (c.asset_types[0] if len(c.asset_types) == 1 else "*", c.failure_mode) for c in CASES}
    wo_hits = []
    for wo, mode in _work_orders():
        right = [modes[case_of[r["incident_id"]]] == (wo.asset_type, mode) for r in memory.similar_for(wo)]
        wo_hits.append((any(right[:1]), any(right[:3])))
    return {"incidents": incidents, "queries": queries, "rows": rows, "load_s": load_s, "index_s": index_s,
            "overlap": overlap, "wo": wo_hits}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seed", type=int, default=7)
    ap.add_argument("--keep", type=Path, default=None, help="index into this directory and keep it")
    ap.add_argument("--misses", action="store_true", help="print the queries the production setting misses at 3")
    args = ap.parse_args()
    started = time.perf_counter()
    if args.keep is not None:
        out = run(args.seed, args.keep)
    else:
        with tempfile.TemporaryDirectory(prefix="sm-retrieval-") as d:
            out = run(args.seed, Path(d))
    incidents, queries, rows = out["incidents"], out["queries"], out["rows"]
    console = Console(width=160)
    console.print(f"settings: {IncidentSettings()!r}")
    table = Table(title=f"Incident retrieval: {len(incidents)} incidents, {len(queries)} queries, seed {args.seed}")
    for col in ("search", "recall@1", "recall@3", "MRR@10", "mode recall@1", "mode recall@3", "ms/query"):
        table.add_column(col, justify="right")
    for r in rows:
        table.add_row(r["name"], f"{r['r1']:.3f}", f"{r['r3']:.3f}", f"{r['mrr']:.3f}", f"{r['m1']:.3f}",
                      f"{r['m3']:.3f}", f"{r['ms']:.1f}")
    wo = out["wo"]
    table.add_row(f"work orders from the flow (n={len(wo)})", "-", "-", "-",
                  f"{sum(a for a, _ in wo) / len(wo):.3f}", f"{sum(b for _, b in wo) / len(wo):.3f}", "-")
    console.print(table)
    print(f"model load {out['load_s']:.1f} s; indexing {len(incidents)} incidents {out['index_s']:.1f} s "
          f"({len(incidents) / out['index_s']:.0f}/s); queries sharing a 4-word run with any incident: "
          f"{len({q for q, _ in out['overlap']})}; total {time.perf_counter() - started:.1f} s")
    best = rows[-1]
    if args.misses:
        by_id = {i.incident_id: i for i in incidents}
        for q, h in zip(queries, best["hits"], strict=True):
            if not set(h[:3]) & q.relevant:
                console.print(f"[red]miss[/] {q.case} [{q.asset_type}] {q.text!r}")
                for x in h[:3]:
                    console.print(f"    {x}: {by_id[x].symptoms[:90]}")
    print(f"recall_at_1={best['r1']:.3f} recall_at_3={best['r3']:.3f}")


if __name__ == "__main__":
    main()
