"""Crash recovery: SIGKILL a replay at random points, restart it, and count what was lost or doubled.

    python bench/recovery.py [--kills 20] [--hours 96] [--assets 12] [--seed 3]

The flow runs as `python -m bytewax.run "smart_maintenance.dataflows.plant:build_flow()"` with
Bytewax recovery on (snapshot every second) into a fresh schema of a real PostgreSQL; it is killed
with SIGKILL a random time after it read its second batch, restarted, killed again, ..., and finally run
to completion. The result is compared with an uninterrupted run of the same file into another schema:

- lost: readings of the file missing from the table, plus anomalies/alarms of the straight run missing;
- duplicates: rows beyond one per key (readings per (asset_id, sensor, ts), anomalies per id, alarms per
  id), plus anomalies/alarms that the straight run does not have (a different id for the same thing);
- resume_s: median time from a restart until its first new reading row lands;
- reread_rows_max: the most rows one restart read again (what the killed run had read beyond the row the
  restart resumed at, from the replay's DEBUG log); reread_over_2s_window: restarts that re-read more than
  the killed run read in its last 2 s (two snapshot intervals), 0 when every restart resumed from a snapshot.

Last line: `kills=<n> lost=<n> duplicates=<n> resume_s=<x> reread_rows_max=<n> reread_over_2s_window=<n>`.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import re
import secrets
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

import psycopg

FLOW = "smart_maintenance.dataflows.plant:build_flow()"


def flow_env(dsn: str, schema: str, csv: Path | None, **extra: str) -> dict[str, str]:
    """The flow's settings as environment: a replay of `csv` (or what `extra` says) into `schema`."""
    env = dict(os.environ)
    if csv is not None:
        env.update({
            "SMART_MAINTENANCE__SOURCE": "replay",
            "SMART_MAINTENANCE__REPLAY__PATHS": f'["{csv}"]',
            "SMART_MAINTENANCE__REPLAY__CHUNK_ROWS": "20000",
        })
    env.update(
        {
            "SMART_MAINTENANCE__POSTGRES__DSN": dsn,
            "SMART_MAINTENANCE__POSTGRES__SCHEMA_NAME": schema,
            "SMART_MAINTENANCE__CONSOLE": "false",
            "SMART_MAINTENANCE__PROGRESS": "false",
            # not what these runs measure: the incident memory loads an embedding model at each (re)start
            "SMART_MAINTENANCE__INCIDENTS__ENABLED": "false",
            **extra,
        }
    )
    return env


def _command(recovery: Path | None, snapshot_s: int = 1) -> list[str]:
    cmd = [sys.executable, "-m", "bytewax.run", FLOW]
    if recovery is not None:
        cmd += ["-r", str(recovery), "-s", str(snapshot_s), "-b", "0"]
    return cmd


def _readings(dsn: str, schema: str) -> int:
    try:
        with psycopg.connect(dsn, connect_timeout=2) as conn:
            return conn.execute(f"SELECT count(*) FROM {schema}.readings").fetchone()[0]
    except psycopg.Error:
        return -1


@dataclass
class CrashRun:
    kills: int
    resume_s: list[float]
    logs: list[str] = field(default_factory=list)  # each run's stderr (JSON lines), in order

    def resumed_at(self) -> list[int]:
        """Where each restart's source resumed (rows or Kafka offsets, summed over partitions); 0 = the start."""
        return [sum(_positions(log)[0].values()) for log in self.logs[1:]]

    def reread(self) -> list[int]:
        """Rows (or Kafka messages) read again after each restart: what the killed run had read beyond the
        position the next run resumes at, summed over the source's partitions. Needs the flow's DEBUG log."""
        return [sum(max(read - resume.get(part, 0), 0) for part, read in _positions(before)[1].items())
                for before, resume in zip(self.logs, (_positions(log)[0] for log in self.logs[1:]), strict=False)]

    def read_before_kill(self, window_s: float) -> list[int]:
        """For each killed run, what its source read in its last `window_s` seconds (up to its last batch,
        that batch included): the most a resume from a snapshot taken `window_s` before the kill re-reads."""
        out = []
        for log in self.logs[:-1]:
            resumed, _ = _positions(log)
            reads = _reads(log)
            if not reads:
                out.append(0)
                continue
            last = reads[-1][0]
            total = 0
            for part in {p for _, p, _ in reads}:
                mine = [(t, pos) for t, p, pos in reads if p == part]
                before = [pos for t, pos in mine if t < last - window_s]
                total += mine[-1][1] - (before[-1] if before else resumed.get(part, 0))
            out.append(total)
        return out


_RESUMES = re.compile(r"(?:replay|kafka) (\S+) resumes at (?:row|offset) (\d+)")
_READS = re.compile(r"(?:replay|kafka) (\S+) read to (?:row|offset) (\d+)")


def _events(log: str) -> list[tuple[float, str]]:
    """(time, message) of each JSON log line."""
    out = []
    for line in log.splitlines():
        try:
            rec = json.loads(line)
            out.append((datetime.fromisoformat(rec["timestamp"].replace("Z", "+00:00")).timestamp(), rec["event"]))
        except (ValueError, KeyError, TypeError, AttributeError):
            continue  # not one of the flow's JSON log lines
    return out


def _reads(log: str) -> list[tuple[float, str, int]]:
    """(time, partition, position after the batch) of each batch a run's source read."""
    return [(t, m[1], int(m[2])) for t, msg in _events(log) if (m := _READS.search(msg))]


def _positions(log: str) -> tuple[dict[str, int], dict[str, int]]:
    """(where each source partition resumed, how far it read) in one run's log."""
    resumed = {m[1]: int(m[2]) for _, msg in _events(log) if (m := _RESUMES.search(msg))}
    read = dict(resumed)
    for _, part, pos in _reads(log):
        read[part] = max(read.get(part, 0), pos)
    return resumed, read


def run_with_kills(env: dict[str, str], recovery: Path, kill_after_s: list[float], *,
                   timeout_s: float = 300, snapshot_s: int = 1) -> CrashRun:
    """Start the flow, SIGKILL it each delay after it has read its second batch, restart; then let the last run
    finish. Timing the kill from the reads, not from the start, means every killed run made progress,
    however slow the start-up on a loaded machine.

    `snapshot_s` is Bytewax's snapshot interval; one longer than a run means no snapshot is ever taken (each
    restart then starts from the beginning: the negative control of the resume checks)."""
    from bytewax.recovery import init_db_dir

    dsn, schema = env["SMART_MAINTENANCE__POSTGRES__DSN"], env["SMART_MAINTENANCE__POSTGRES__SCHEMA_NAME"]
    env = {**env, "SMART_MAINTENANCE__LOG_LEVEL": "DEBUG"}  # the sources log each batch's position at DEBUG
    recovery.mkdir(parents=True, exist_ok=True)
    init_db_dir(recovery, 1)
    kills, resumes, logs = 0, [], []
    with tempfile.TemporaryDirectory(prefix="sm-crash-logs-") as log_dir:
        for i, delay in enumerate([*kill_after_s, None]):
            before = _readings(dsn, schema)
            started = time.perf_counter()
            # stderr to a file, not a pipe: a flow that logs more than a pipe holds would block on a full pipe
            log_path = Path(log_dir) / f"run-{i}.log"
            with log_path.open("wb") as log_file:
                proc = subprocess.Popen(_command(recovery, snapshot_s), env=env, stdout=subprocess.DEVNULL,
                                        stderr=log_file)
            if i > 0:
                threading.Thread(target=_watch_resume, args=(dsn, schema, before, started, proc, resumes),
                                 daemon=True).start()
            try:
                if delay is None:
                    proc.wait(timeout=timeout_s)
                else:
                    _wait_for_first_read(log_path, proc, started + timeout_s)
                    proc.wait(timeout=delay)
            except subprocess.TimeoutExpired:
                if delay is None:
                    proc.kill()
                    raise
                proc.send_signal(signal.SIGKILL)
                proc.wait()
                kills += 1
                logs.append(log_path.read_text(errors="replace"))
                continue
            err = log_path.read_text(errors="replace")
            logs.append(err)
            if proc.returncode != 0:
                raise RuntimeError(f"flow exited {proc.returncode}:\n{err[-3000:]}")
            if delay is not None:  # it finished before the kill: nothing left to kill
                break
    return CrashRun(kills, resumes, logs)


def _wait_for_first_read(log_path: Path, proc: subprocess.Popen, deadline: float) -> None:
    """Until the run's log shows two source batches read (the first one waits for the flow's warm-up), or the
    run ended."""
    while proc.poll() is None and len(_READS.findall(log_path.read_text(errors="replace"))) < 2:
        if time.perf_counter() > deadline:
            raise subprocess.TimeoutExpired(proc.args, deadline)
        time.sleep(0.05)


def _watch_resume(dsn: str, schema: str, before: int, started: float, proc: subprocess.Popen, out: list[float]) -> None:
    while proc.poll() is None:
        if _readings(dsn, schema) > before:
            out.append(time.perf_counter() - started)
            return
        time.sleep(0.05)


def compare(dsn: str, straight: str, crashed: str, expected_readings: int) -> tuple[int, int]:
    """(lost, duplicates) of the crashed schema against the straight run."""
    with psycopg.connect(dsn) as conn:

        def q(sql: str) -> int:
            return conn.execute(sql).fetchone()[0]

        rows = q(f"SELECT count(*) FROM {crashed}.readings")
        distinct = q(f"SELECT count(*) FROM (SELECT DISTINCT asset_id, sensor, ts FROM {crashed}.readings) d")
        lost = max(expected_readings - distinct, 0)
        duplicates = rows - distinct
        for table, key in (("anomalies", "anomaly_id"), ("alarms", "alarm_id")):
            ours = dict(conn.execute(f"SELECT {key}, status FROM {crashed}.{table}").fetchall())
            theirs = dict(conn.execute(f"SELECT {key}, status FROM {straight}.{table}").fetchall())
            lost += len(set(theirs) - set(ours)) + sum(ours.get(k) != v for k, v in theirs.items() if k in ours)
            duplicates += len(set(ours) - set(theirs))
            duplicates += q(f"SELECT count(*) - count(DISTINCT {key}) FROM {crashed}.{table}")
    return lost, duplicates


def make_csv(path: Path, assets: int, hours: float) -> int:
    import pyarrow as pa
    import pyarrow.csv as pacsv

    from smart_maintenance.config.registry import load_registry
    from smart_maintenance.config.settings import SimulatorSettings
    from smart_maintenance.sources.plant_model import PlantModel

    model = PlantModel(load_registry().with_simulated(assets),
                       SimulatorSettings(assets=assets, duration_s=hours * 3600))
    r = model.generate(range(assets), 0, model.n_ticks)
    pacsv.write_csv(pa.table({"ts": r.ts, "asset_id": r.asset_id.astype(str), "sensor": r.sensor.astype(str),
                              "value": r.value}), path)
    import numpy as np

    return int(np.isfinite(r.value).sum())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--kills", type=int, default=20)
    ap.add_argument("--hours", type=float, default=96.0)
    ap.add_argument("--assets", type=int, default=12)
    ap.add_argument("--seed", type=int, default=3)
    ap.add_argument("--dsn", default=None, help="PostgreSQL DSN (default: an embedded server in a temp dir)")
    args = ap.parse_args()

    with tempfile.TemporaryDirectory(prefix="sm-recovery-") as tmp:
        tmp = Path(tmp)
        dsn = args.dsn
        if dsn is None:
            from smart_maintenance.connectors.postgres.server import embedded_dsn

            dsn = embedded_dsn(tmp / "pgdata")
        csv = tmp / "plant.csv"
        expected = make_csv(csv, args.assets, args.hours)
        straight, crashed = f"rec_{secrets.token_hex(4)}_a", f"rec_{secrets.token_hex(4)}_b"
        t = time.perf_counter()
        subprocess.run(_command(None), env=flow_env(dsn, straight, csv), check=True, stdout=subprocess.DEVNULL)
        full_s = time.perf_counter() - t
        rng = random.Random(args.seed)
        # kill 1-3.5 s after a restart's second batch (a few 1-second snapshots in), so that every restart
        # makes some progress and the run is still going at the last kill
        delays = [rng.uniform(1.0, 3.5) for _ in range(args.kills)]
        run = run_with_kills(flow_env(dsn, crashed, csv), tmp / "recovery", delays)
        lost, duplicates = compare(dsn, straight, crashed, expected)
        with psycopg.connect(dsn, autocommit=True) as conn:
            for schema in (straight, crashed):
                conn.execute(f"DROP SCHEMA IF EXISTS {schema} CASCADE")
    resume = statistics.median(run.resume_s) if run.resume_s else float("nan")
    reread, window = run.reread(), run.read_before_kill(2.0)
    print(f"{expected:,} readings; uninterrupted run {full_s:.1f} s; {run.kills} SIGKILLs; resumed at rows "
          f"{run.resumed_at()}; re-read {reread}; read in the last 2 s before each kill {window}", file=sys.stderr)
    over = sum(r > w for r, w in zip(reread, window, strict=True))
    print(f"kills={run.kills} lost={lost} duplicates={duplicates} resume_s={resume:.2f} "
          f"reread_rows_max={max(reread, default=0)} reread_over_2s_window={over}")


if __name__ == "__main__":
    main()
