"""Univariate machine and IT metric streams through the project's detection path, scored by NAB's rule.

    python bench/univariate.py [--tuning 1001,1002] [--test 9001] [--set detection.warmup_share=0.15 ...]
                               [--per-file]

Each seed is one stream (`sources/metric_family.py`): a machine temperature,
vibration or pressure, or an IT metric, 5-minute to 1-hour sampling, 2 weeks
to 4 months, seasonality, trends, several noise models, benign level
changes, missing stretches and 1-4 labelled incidents. Each stream is one
asset with one sensor that no registry lists, replayed causally in chunks
through the same operators the dataflow runs, in a plain loop as
`bench/skab.py` does: windows -> features -> detect -> validate -> alarms,
with the settings' defaults (plus `--set` overrides) and, as a finite
replay does, the warm-up capped at `detection.warmup_share` of the
recording.

A detection is an alarm opening, `machine` or `sensor_fault` (NAB's labels
do not tell the two apart), placed at the last reading of the window that
opened it (the verdict uses nothing later). Scored with NAB's published
rule (`bench/nab.py`): windows of 10 % of the file over the number of
labels, centred on each label; 15 % probation; the Standard, LowFP and LowFN
profiles; normalised over the corpus (never fires = 0, perfect = 100).

Seeds: tuning 1001-1030 (defaults may be chosen on them), test 9001-9030
(reported beside them, never tuned on). Last line, on the test seeds:
`uni_nab_standard=<x> uni_nab_lowfp=<x> uni_nab_lowfn=<x> uni_files=<n>`.
"""

from __future__ import annotations

import argparse
import multiprocessing
import sys
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
from rich.console import Console
from rich.table import Table

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from bench.nab import FileScore, corpus_scores, score_file  # noqa: E402
from smart_maintenance.config.settings import load_settings  # noqa: E402
from smart_maintenance.config.stages import StageConfigs, stage_configs  # noqa: E402
from smart_maintenance.operators.detect.detectors import detect  # noqa: E402
from smart_maintenance.operators.ingest.windows import flush_windows, window_readings  # noqa: E402
from smart_maintenance.operators.judge.alarms import track_alarms  # noqa: E402
from smart_maintenance.operators.judge.validation import validate  # noqa: E402
from smart_maintenance.operators.profile import AssetProfile  # noqa: E402
from smart_maintenance.operators.records import AssetReadings, FeatureBatch, dt_to_ms  # noqa: E402
from smart_maintenance.sources.metric_family import TEST_SEEDS, TUNING_SEEDS, MetricStream, draw_stream  # noqa: E402

console = Console(stderr=True, width=160)
CHUNK_ROWS = 288  # a day of 5-minute readings per replayed batch


@dataclass(frozen=True)
class StreamResult:
    stream: MetricStream
    detections: np.ndarray  # row indices
    kinds: tuple[str, ...]  # alarm kind per detection
    score: FileScore


def label_rows(stream: MetricStream) -> list[int]:
    return [int(np.searchsorted(stream.ts, i.start_ms)) for i in stream.incidents]


def run_stream(stream: MetricStream, configs: StageConfigs, chunk_rows: int = CHUNK_ROWS) -> StreamResult:
    """Replay one stream through windows -> detect -> validate -> alarms; the rows where alarms opened."""
    asset, sensor = stream.name, stream.kind
    profile = AssetProfile(asset)  # no registry entry: everything is learned from the data
    recording = int(stream.ts[-1] - stream.ts[0])
    detect_cfg = replace(configs.detect, recording_ms=recording)  # a finite replay caps its warm-up
    w_state = d_state = v_state = a_state = None
    opened: list[tuple[int, str]] = []

    def judge(fb: FeatureBatch) -> None:
        nonlocal d_state, v_state, a_state
        d_state, scored = detect(d_state, fb, profile, detect_cfg)
        v_state, verdicts = validate(v_state, scored, profile, configs.validation)
        a_state, changed = track_alarms(a_state, asset, verdicts, configs.alarm)
        opened.extend((dt_to_ms(a.opened_at), a.kind) for a in changed if a.updated_at == a.opened_at)

    names = np.full(chunk_rows, sensor, dtype=object)
    for i in range(0, len(stream.ts), chunk_rows):
        ts, value = stream.ts[i:i + chunk_rows], stream.value[i:i + chunk_rows]
        w_state, out = window_readings(w_state, AssetReadings(asset, names[:len(ts)], ts, value), configs.window)
        if out.closed is not None:
            judge(out.closed)
    if w_state is not None:
        w_state, last = flush_windows(w_state, configs.window)
        if last is not None:
            judge(last)
    # the window closed at its end: the last reading before it is the row the verdict belongs to
    rows = np.array([max(int(np.searchsorted(stream.ts, t, side="left")) - 1, 0) for t, _ in opened], np.int64)
    score = score_file(len(stream.ts), label_rows(stream), rows)
    return StreamResult(stream, rows, tuple(k for _, k in opened), score)


def _run_seed(args: tuple[int, StageConfigs]) -> StreamResult:
    return run_stream(draw_stream(args[0]), args[1])


def run_seeds(seeds: tuple[int, ...], configs: StageConfigs, jobs: int = 1) -> list[StreamResult]:
    """Each stream on its own (the results do not depend on `jobs`)."""
    if jobs <= 1:
        return [_run_seed((s, configs)) for s in seeds]
    with multiprocessing.get_context("spawn").Pool(jobs) as pool:
        return pool.map(_run_seed, [(s, configs) for s in seeds], chunksize=1)


def table(label: str, results: list[StreamResult]) -> Table:
    t = Table(title=f"{label} seeds, per stream")
    for c in ("stream", "rows", "found", "FP", "alarms (m/s)", "standard raw", "first hit - label (rows)"):
        t.add_column(c)
    for r in results:
        labels = label_rows(r.stream)
        lags = [("-" if h is None else str(h - lab)) for h, lab in zip(r.score.first_hits, sorted(labels))]
        t.add_row(r.stream.describe(), str(len(r.stream.ts)), f"{r.score.tp}/{r.score.windows}", str(r.score.fp),
                  f"{r.kinds.count('machine')}/{r.kinds.count('sensor_fault')}", f"{r.score.raw['Standard']:.2f}",
                  ",".join(lags))
    return t


def by_incident(results: list[StreamResult]) -> dict[str, tuple[int, int]]:
    """Incident kind -> (windows found, windows), for incidents whose windows did not merge."""
    out: dict[str, list[int]] = {}
    for r in results:
        if r.score.windows != len(r.stream.incidents):
            continue
        for inc, hit in zip(sorted(r.stream.incidents, key=lambda i: i.start_ms), r.score.first_hits):
            c = out.setdefault(inc.kind, [0, 0])
            c[0] += hit is not None
            c[1] += 1
    return {k: (a, b) for k, (a, b) in sorted(out.items())}


def main() -> None:
    from bench.generalization import parse_overrides, seed_arguments

    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    seed_arguments(p, TUNING_SEEDS, TEST_SEEDS)
    p.add_argument("--per-file", action="store_true")
    p.add_argument("--jobs", type=int, default=1, help="streams replayed at once (processes)")
    a = p.parse_args()
    overrides: dict[str, dict[str, Any]] = parse_overrides(a.set)
    configs = stage_configs(load_settings(console=False, progress=False, log_level="WARNING", **overrides))
    t0 = time.perf_counter()
    tuned = run_seeds(a.tuning, configs, a.jobs)
    test = run_seeds(a.test, configs, a.jobs)
    elapsed = time.perf_counter() - t0
    if a.per_file:
        console.print(table("tuning", tuned))
        console.print(table("test", test))
    t = Table(title="NAB on univariate metric streams: tuning seeds beside test seeds")
    for c in ("seeds", "files", "standard", "low FP", "low FN", "windows found", "false positives", "by incident"):
        t.add_column(c)
    lines = {}
    for name, res in (("tuning", tuned), ("test", test)):
        if not res:
            lines[name] = {k: float("nan") for k in ("Standard", "LowFP", "LowFN")}
            continue
        s = corpus_scores([r.score for r in res])
        lines[name] = s
        inc = " ".join(f"{k}={x}/{y}" for k, (x, y) in by_incident(res).items())
        t.add_row(name, str(len(res)), f"{s['Standard']:.1f}", f"{s['LowFP']:.1f}", f"{s['LowFN']:.1f}",
                  f"{sum(r.score.tp for r in res)}/{sum(r.score.windows for r in res)}",
                  str(sum(r.score.fp for r in res)), inc)
    console.print(t)
    rows = sum(len(r.stream.ts) for r in tuned + test)
    console.print(f"{len(tuned) + len(test)} streams, {rows} readings in {elapsed:.1f} s")
    s = lines["tuning"]
    print(f"tune_nab_standard={s['Standard']:.1f} tune_nab_lowfp={s['LowFP']:.1f} tune_nab_lowfn={s['LowFN']:.1f} "
          f"tune_files={len(tuned)}")
    s = lines["test"]
    print(f"uni_nab_standard={s['Standard']:.1f} uni_nab_lowfp={s['LowFP']:.1f} uni_nab_lowfn={s['LowFN']:.1f} "
          f"uni_files={len(test)}")


if __name__ == "__main__":
    main()
