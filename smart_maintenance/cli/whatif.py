"""`whatif`: replay the plant's stored history with candidate settings and score them against its own labels.

    smart-maintenance whatif --try "strict: validation.open_threshold=0.8 validation.persistence=45min"
                             [--try ...] [--since 2026-01-05] [--until ...] [--asset ID ...]
                             [--lookback 7d] [--apply strict]

The stored readings (PostgreSQL) are written once to a Parquet file and
replayed through the same flow as a backfill, once with the current settings
and once per candidate, with the stored maintenance log applied at its event
times (repairs re-baseline the detectors as they did live). Prediction and work
orders are off: only detection and judgement are scored. Each candidate's
alarms are compared with the current settings' (gained, lost) and with what the
plant said: approved and rejected review cases, repairs and `no_fault_found`
maintenance (`operators/whatif.py` has the rules). `--apply NAME` writes that
candidate's settings into the TOML file in force (or ./smart-maintenance.toml),
each with a comment saying what was measured. Nothing else is written: the
stored history and the running flow are not touched.

Exit codes: 0 done, 1 a database or replay failure, 2 a usage error (a bad
candidate, an unknown --apply name, no stored readings in the range).
"""

from __future__ import annotations

import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from smart_maintenance.cli.common import duration, err, fail, out, plain, say, settings
from smart_maintenance.operators.whatif import (
    Candidate,
    Episode,
    Score,
    episodes_of,
    gained_lost,
    labels_from,
    parse_candidate,
    score,
    verdict_comment,
)

__all__ = ["whatif"]


def _when(text: str | None, what: str) -> datetime | None:
    if text is None:
        return None
    try:
        t = datetime.fromisoformat(text)
    except ValueError:
        raise typer.BadParameter(f"{text!r} is not an ISO 8601 time (2026-01-05 or 2026-01-05T08:00:00Z)",
                                 param_hint=what) from None
    return t if t.tzinfo else t.replace(tzinfo=timezone.utc)


def replay_alarms(base: dict[str, Any], candidate: Candidate | None, parquet: Path,
                  records: list[Any]) -> list[Episode]:
    """One replay of the exported history through the flow; its alarm episodes."""
    from bytewax.run import cli_main
    from bytewax.testing import TestingSink

    from smart_maintenance.dataflows.catalogue import STREAMS
    from smart_maintenance.dataflows.plant import build_flow

    overrides = {k: dict(v) if isinstance(v, dict) else v for k, v in base.items()}
    for section, values in (candidate.overrides if candidate else {}).items():
        overrides.setdefault(section, {}).update(values)
    s = settings(**overrides)
    states: list[Any] = []
    sinks: dict[str, list[Any]] = {name: [] for name in STREAMS}
    sinks["alarms"] = [TestingSink(states)]
    by_asset: dict[str, list[Any]] = {}
    for r in records:
        by_asset.setdefault(r.asset_id, []).append(r)
    flow = build_flow(s, sinks=sinks, live=False, static_controls=lambda asset_id: list(by_asset.get(asset_id, ())))
    cli_main(flow, workers_per_process=1)  # type: ignore[no-untyped-call]  # bytewax.run is untyped
    return episodes_of(states)


def _apply(candidate: Candidate, comment: str) -> Path:
    """Write the candidate's settings into the TOML file in force (or ./smart-maintenance.toml)."""
    import tomlkit

    from smart_maintenance.config.settings import DEFAULT_CONFIG_FILE, config_file

    path = config_file() or Path(DEFAULT_CONFIG_FILE)
    doc = tomlkit.parse(path.read_text(encoding="utf-8")) if path.is_file() else tomlkit.document()
    for section, values in candidate.overrides.items():
        table = doc.get(section)
        if table is None:
            table = tomlkit.table()
            doc[section] = table
        for key, value in values.items():
            item = tomlkit.item(list(value) if isinstance(value, tuple) else value)
            item.comment(comment)
            table[key] = item
    path.write_text(tomlkit.dumps(doc), encoding="utf-8")
    return path


def _row(name: str, sc: Score, gl: tuple[int, int] | None) -> dict[str, Any]:
    return {"candidate": name, "machine_alarms": sc.machine, "true": sc.true, "false": sc.false,
            "unlabelled": sc.unlabelled, "precision": None if sc.precision is None else round(sc.precision, 4),
            "faults": sc.faults, "faults_found": sc.faults_found, "sensor_fault_alarms": sc.sensor_fault,
            "gained": None if gl is None else gl[0], "lost": None if gl is None else gl[1]}


def whatif(
    try_: Annotated[list[str], typer.Option("--try", help="a candidate: 'NAME: section.field=value ...' "
                                            "(windows, detection, validation, alarms settings); repeatable")],
    since: Annotated[str | None, typer.Option(help="from this time (ISO 8601; default: the first stored reading)")]
    = None,
    until: Annotated[str | None, typer.Option(help="up to this time (default: the last stored reading)")] = None,
    asset: Annotated[list[str] | None, typer.Option(help="only these assets (repeatable)")] = None,
    lookback: Annotated[str, typer.Option(help="how long before a repair an alarm counts as warning of it")] = "7d",
    apply: Annotated[str | None, typer.Option(help="write this candidate's settings to the TOML file")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="one JSON line per candidate instead of a table")] = False,
) -> None:
    """Replay the stored history with candidate settings: alarms gained and lost, precision and recall
    against the plant's own review decisions and maintenance log."""
    from smart_maintenance.connectors.postgres import history
    from smart_maintenance.connectors.postgres.server import PostgresSinkError, resolve_dsn
    from smart_maintenance.operators.controls import ControlError, MaintenanceRecord

    try:
        candidates = [parse_candidate(t) for t in try_]
    except ValueError as e:
        raise typer.BadParameter(str(e), param_hint="--try") from None
    names = [c.name for c in candidates]
    if len(set(names)) != len(names) or "current" in names:
        raise typer.BadParameter("candidate names must differ from each other and from 'current'", param_hint="--try")
    if apply is not None and apply not in names:
        raise typer.BadParameter(f"{apply!r} is not one of the candidates ({', '.join(names)})", param_hint="--apply")
    lookback_s = duration(lookback)
    assert lookback_s is not None  # noqa: S101 - `duration` gives None only with forever=True
    start, end, assets = _when(since, "--since"), _when(until, "--until"), tuple(asset or ())
    s = settings()
    for c in candidates:  # a bad value fails here, before minutes of replay
        settings(**c.overrides)
    try:
        dsn = resolve_dsn(s)
        schema = s.postgres.schema_name
        got = history.span(dsn, schema, start, end, assets)
        if got.rows == 0 or got.start is None or got.end is None:
            fail(ValueError(f"no stored readings in {schema}.readings for that range and those assets"),
                 "nothing to replay", 2)
        reviews = history.decided_reviews(dsn, schema, start, end, assets)
        log = history.maintenance(dsn, schema, start, end, assets)
        stored = history.stored_alarms(dsn, schema, start, end, assets)
    except PostgresSinkError as e:
        fail(e, "database error")
    span_text = f"{got.start:%Y-%m-%d %H:%M} .. {got.end:%Y-%m-%d %H:%M} UTC, {got.assets} assets"
    say(f"{got.rows:,} readings, {span_text}; {len(reviews)} decided review cases, {len(log)} maintenance records",
        "history: ")
    records = []
    for m in log:
        try:
            records.append(MaintenanceRecord.from_dict(
                {k: m[k] for k in ("maintenance_id", "asset_id", "outcome", "work_order_id", "technician_id",
                                   "action", "notes")} | {"completed_at": m["completed_at"].isoformat()},
                source=f"history:{m['source'] or 'unknown'}"))
        except ControlError as e:
            say(f"{m['maintenance_id']}: {e}", "skipped maintenance record: ", "yellow")
    labels = labels_from(reviews, log, int(lookback_s * 1000))
    end_ms = int(got.end.timestamp() * 1000)
    replay: dict[str, Any] = {"format": "parquet", "speed": 0.0}
    base: dict[str, Any] = {"source": "replay", "console": False, "log_level": "WARNING", "metrics_port": None,
                            "out_dir": None, "progress": s.progress, "prediction": {"enabled": False},
                            "work": {"enabled": False}, "replay": replay}

    results: list[tuple[str, str, list[Episode], float]] = []
    with tempfile.TemporaryDirectory(prefix="whatif-") as tmp:
        parquet = Path(tmp) / "history.parquet"
        replay["paths"] = (parquet,)
        with Progress(TextColumn("{task.description}"), BarColumn(), TextColumn("{task.completed:,}/{task.total:,}"),
                      TimeElapsedColumn(), console=err, transient=True) as bar:
            task = bar.add_task("exporting readings", total=got.rows)
            try:
                history.export_readings(dsn, schema, parquet, start, end, assets,
                                        progress=lambda n: bar.advance(task, n))
            except PostgresSinkError as e:
                fail(e, "database error")
        runs: list[tuple[str, Candidate | None]] = [("current", None), *((c.name, c) for c in candidates)]
        for i, (name, cand) in enumerate(runs, 1):
            say(f"[{i}/{len(runs)}] {name}" + (f": {cand.describe()}" if cand else " settings"), "replaying ")
            t0 = time.perf_counter()
            try:
                eps = replay_alarms(base, cand, parquet, records)
            except Exception as e:  # noqa: BLE001 - a replay failure is reported, not a traceback
                fail(e, f"replay of {name} failed")
            results.append((name, cand.describe() if cand else "as configured", eps, time.perf_counter() - t0))

    scores, rows = {}, []
    for name, what, eps, _ in results:
        scores[name] = score(eps, labels, end_ms)
        gl = None if name == "current" else gained_lost(results[0][2], eps, end_ms)
        rows.append(_row(name, scores[name], gl) | {"settings": what})
    if as_json:
        for r in rows:
            out.print_json(data=r, indent=None)
    else:
        t = Table(title=plain(f"what-if on {span_text}"))
        heads = {"candidate": "candidate", "machine_alarms": "alarms", "true": "true", "false": "false",
                 "unlabelled": "unlab.", "precision": "precision", "faults_found": "found", "sensor_fault_alarms":
                 "sensor", "gained": "gained", "lost": "lost"}
        for key, head in heads.items():
            t.add_column(head, justify="left" if key == "candidate" else "right", no_wrap=True)
        for r in rows:
            t.add_row(plain(r["candidate"]), *(
                "" if r[k] is None else f"{r[k]:.2f}" if k == "precision" else
                f"{r[k]}/{r['faults']}" if k == "faults_found" else str(r[k]) for k in list(heads)[1:]))
        # every column, also when piped (rich assumes 80 columns then)
        Console(width=max(out.width, 110), soft_wrap=False).print(t)
    say(f"labels: {sum(x.fault for x in labels)} faults, {sum(not x.fault for x in labels)} false alarms "
        f"(lookback {lookback}); the running flow stored {sum(stored.values())} alarms in this range "
        f"({', '.join(f'{k} {v}' for k, v in sorted(stored.items())) or 'none'}); replays took "
        f"{', '.join(f'{r[3]:.0f} s' for r in results)}")
    if apply is not None:
        chosen = next(c for c in candidates if c.name == apply)
        day = datetime.now(timezone.utc).strftime("%Y-%m-%d")
        path = _apply(chosen, verdict_comment(scores["current"], scores[apply], span_text, day))
        say(f"{chosen.describe()} -> {path}", "applied: ")

