"""The `smart-maintenance` command line."""

from __future__ import annotations

import json
import os
import re
import time
from pathlib import Path
from typing import Annotated, Any, Optional

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from smart_maintenance.config.settings import Settings, load_settings

app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    pretty_exceptions_show_locals=False,
    help="Streaming predictive maintenance on Bytewax.",
)
console = Console(stderr=True)

_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}


def parse_duration(text: str) -> float | None:
    """'90s', '15m', '6h', '2d', '1w', a number of seconds, or 'forever'.

    >>> parse_duration("2d"), parse_duration("90"), parse_duration("forever")
    (172800.0, 90.0, None)
    """
    if text.strip().lower() in ("forever", "inf", "none"):
        return None
    m = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([smhdw]?)\s*", text.lower())
    if not m:
        raise typer.BadParameter(f"{text!r} is not a duration such as 90s, 15m, 6h, 2d or forever")
    return float(m.group(1)) * _UNITS.get(m.group(2) or "s", 1)


def parse_speed(text: str) -> float:
    """'max' (as fast as possible), '1' (real time), '60' (a minute per second)."""
    if text.strip().lower() in ("max", "fast", "0"):
        return 0.0
    try:
        v = float(text)
    except ValueError:
        raise typer.BadParameter(f"{text!r} is not a speed: use max or a factor such as 1 or 60") from None
    if v <= 0:
        raise typer.BadParameter("speed must be positive (or max)")
    return v


def _settings(**overrides: Any) -> Settings:
    try:
        return load_settings(**overrides)
    except Exception as e:  # pydantic's ValidationError, a bad TOML file, a missing config file
        console.print(f"[red]configuration error:[/] {escape(str(e))}")
        raise typer.Exit(2) from e


def _run_flow(settings: Settings, workers: int, recovery: Path | None, **flow_kwargs: Any) -> float:
    from bytewax.recovery import RecoveryConfig
    from bytewax.run import cli_main

    from smart_maintenance.dataflows.plant import build_flow
    from smart_maintenance.sinks.files import reset_outputs
    from smart_maintenance.connectors.postgres.server import resolve_dsn
    from smart_maintenance.connectors.postgres.schema import ensure_schema

    dsn = resolve_dsn(settings)  # start the embedded server once, before the workers
    ensure_schema(dsn, settings.postgres.schema_name)
    if settings.out_dir is not None and recovery is None:
        from smart_maintenance.dataflows.plant import STREAMS

        reset_outputs(settings.out_dir, STREAMS)
    flow = build_flow(settings, **flow_kwargs)
    rc = None
    if recovery is not None:
        if not recovery.exists():
            from bytewax.recovery import init_db_dir

            recovery.mkdir(parents=True)
            init_db_dir(recovery, workers)
        rc = RecoveryConfig(recovery)
    from bytewax.errors import BytewaxRuntimeError

    started = time.perf_counter()
    from smart_maintenance.cli.shutdown import sigterm_as_interrupt, stopped_by_signal

    try:
        with sigterm_as_interrupt():  # systemd, Docker and Kubernetes stop services with SIGTERM
            cli_main(flow, workers_per_process=workers, recovery_config=rc)
    except KeyboardInterrupt:
        console.print("[yellow]stopped[/]")
    except BytewaxRuntimeError as e:
        if not stopped_by_signal(e):
            raise
        console.print("[yellow]stopped by a signal[/]" + (" (resume with the same --recovery)" if rc else ""))
    return time.perf_counter() - started


def _summary(settings: Settings, elapsed: float) -> None:
    from smart_maintenance.connectors.postgres.server import redact, resolve_dsn
    from smart_maintenance.connectors.postgres.summary import summarize

    dsn = resolve_dsn(settings)
    s = summarize(dsn, settings.postgres.schema_name)
    t = Table(title=f"smart-maintenance: done in {elapsed:.1f} s", show_header=True)
    t.add_column("what")
    t.add_column("count", justify="right")
    for name, value in s["counts"].items():
        t.add_row(escape(name), f"{value:,}")
    console.print(t)
    if s["open_alarms"]:
        a = Table(title="alarms still open")
        for col in ("asset", "kind", "severity", "opened", "sensors"):
            a.add_column(col)
        for asset, kind, severity, opened, sensors in s["open_alarms"]:
            a.add_row(escape(asset), escape(kind), str(severity), opened.strftime("%Y-%m-%d %H:%M"), escape(sensors))
        console.print(a)
    console.print(f"stored in PostgreSQL: [bold]{escape(redact(dsn))}[/] schema {settings.postgres.schema_name}")
    if settings.out_dir is not None:
        console.print(f"JSONL streams in: [bold]{escape(str(settings.out_dir.resolve()))}[/]")
    console.print("look again with: [bold]smart-maintenance db[/]")


def _with_models() -> dict[str, Any]:
    """Runs on live streams keep their fitted detectors in data_dir/models unless configured otherwise.

    (The simulator and replays start from nothing, so that the same input always gives the same results.)
    """
    base = load_settings()
    return {"model_dir": base.detection.model_dir or base.data_dir / "models"}


WorkersOpt = Annotated[int, typer.Option("--workers", "-w", min=1, help="worker threads in this process")]
OutOpt = Annotated[Optional[Path], typer.Option("--out", help="also write every stream as JSONL files here")]
MetricsOpt = Annotated[Optional[int], typer.Option("--metrics-port", help="serve Prometheus /metrics on this port")]
RecoveryOpt = Annotated[
    Optional[Path], typer.Option("--recovery", help="Bytewax recovery directory: resume after a crash")
]


@app.command()
def run(
    source: Annotated[str, typer.Option(help="simulator, mqtt or kafka (settings sections [mqtt], [kafka])")] = "simulator",
    duration: Annotated[str, typer.Option(help="simulated time: 90m, 6h, 3d, forever")] = "3d",
    speed: Annotated[str, typer.Option(help="max, or a factor of real time (1 = live)")] = "max",
    assets: Annotated[int, typer.Option(min=1, help="simulated assets")] = 12,
    seed: Annotated[int, typer.Option(help="simulator seed")] = 7,
    workers: WorkersOpt = 1,
    out: OutOpt = None,
    recovery: RecoveryOpt = None,
    metrics_port: MetricsOpt = None,
) -> None:
    """Run the flow live: the simulator plant (default, on embedded defaults), or MQTT / Kafka streams."""
    if source not in ("simulator", "mqtt", "kafka"):
        raise typer.BadParameter(f"--source must be simulator, mqtt or kafka, not {source!r}")
    settings = _settings(
        source=source,
        out_dir=out,
        **({"metrics_port": metrics_port} if metrics_port else {}),
        detection=_with_models() if source != "simulator" else {},
        simulator={"duration_s": parse_duration(duration), "speed": parse_speed(speed), "assets": assets, "seed": seed},
    )
    sim = settings.simulator
    if source == "simulator":
        console.print(
            f"simulating {sim.assets} assets for {duration} at speed {speed} "
            f"({'live' if sim.speed else 'fast-forward'}), {workers} worker(s)"
        )
    else:
        where = f"{settings.mqtt.host}:{settings.mqtt.port}" if source == "mqtt" else ",".join(settings.kafka.brokers)
        console.print(f"reading {source} at {escape(where)}, {workers} worker(s); Ctrl-C stops")
    elapsed = _run_flow(settings, workers, recovery, live=source != "simulator" or sim.speed > 0)
    _summary(settings, elapsed)


@app.command()
def publish(
    files: Annotated[Optional[list[Path]], typer.Argument(help="files to publish (default: the simulator)")] = None,
    to: Annotated[str, typer.Option("--to", help="mqtt or kafka")] = "mqtt",
    duration: Annotated[str, typer.Option(help="simulator: simulated time, or forever")] = "1d",
    assets: Annotated[int, typer.Option(min=1, help="simulator: assets")] = 12,
    seed: Annotated[int, typer.Option(help="simulator seed")] = 7,
    speed: Annotated[str, typer.Option(help="simulator: max, or a factor of real time")] = "max",
    rate: Annotated[float, typer.Option(min=0, help="messages per second at most (0 = no limit)")] = 0.0,
) -> None:
    """Send the simulator plant or recorded files to MQTT or Kafka (demos and load tests)."""
    from smart_maintenance.sources.feed import file_batches, simulator_batches

    if to not in ("mqtt", "kafka"):
        raise typer.BadParameter(f"--to must be mqtt or kafka, not {to!r}")
    settings = _settings(
        simulator={"duration_s": parse_duration(duration), "speed": parse_speed(speed), "assets": assets, "seed": seed}
    )
    batches, registry = (file_batches(files), None) if files else simulator_batches(settings)
    started, sent = time.perf_counter(), 0
    if to == "mqtt":
        from smart_maintenance.connectors.mqtt.publish import publish_readings as mqtt_publish

        sent = mqtt_publish(settings.mqtt, batches, registry=registry, rate=rate).messages
    else:
        from smart_maintenance.connectors.kafka.sink import publish_readings as kafka_publish

        for batch in batches:
            sent += kafka_publish(settings.kafka, batch, rate=rate)
    elapsed = time.perf_counter() - started
    console.print(f"published {sent:,} readings to {escape(str(to))} in {elapsed:.1f} s ({sent / max(elapsed, 1e-9):,.0f}/s)")


@app.command()
def replay(
    files: Annotated[list[Path], typer.Argument(help="CSV (long or wide), Parquet or JSONL files", exists=True)],
    fmt: Annotated[str, typer.Option("--format", help="auto, long, wide, jsonl, parquet")] = "auto",
    time_col: Annotated[Optional[str], typer.Option(help="wide files: the time column")] = None,
    asset_col: Annotated[Optional[str], typer.Option(help="wide files: the asset column")] = None,
    asset: Annotated[Optional[str], typer.Option(help="wide files: one fixed asset id (default: file name)")] = None,
    sep: Annotated[Optional[str], typer.Option(help="CSV separator (default: sniffed)")] = None,
    speed: Annotated[str, typer.Option(help="max, or a factor of real time")] = "max",
    workers: WorkersOpt = 1,
    out: OutOpt = None,
    recovery: RecoveryOpt = None,
    metrics_port: MetricsOpt = None,
) -> None:
    """Backfill: replay recorded readings through the same flow, in event time."""
    settings = _settings(
        source="replay",
        out_dir=out,
        **({"metrics_port": metrics_port} if metrics_port else {}),
        replay={
            "paths": tuple(files),
            "format": fmt,
            "time_col": time_col,
            "asset_col": asset_col,
            "asset": asset,
            "sep": sep,
            "speed": parse_speed(speed),
        },
    )
    elapsed = _run_flow(settings, workers, recovery)
    _summary(settings, elapsed)


@app.command()
def db() -> None:
    """Where the database is and what it holds."""
    from smart_maintenance.connectors.postgres.server import redact, resolve_dsn
    from smart_maintenance.connectors.postgres.sink import describe

    settings = _settings()
    dsn = resolve_dsn(settings)
    info = describe(dsn, settings.postgres.schema_name)
    console.print(f"database: [bold]{escape(redact(dsn))}[/]")
    if settings.postgres.dsn is None:
        console.print(f"embedded server data directory: {escape(str((settings.data_dir / 'pgdata').resolve()))}")
    t = Table(show_header=True)
    t.add_column("key")
    t.add_column("value")
    for k, v in info.items():
        if isinstance(v, dict):
            for kk, vv in v.items():
                t.add_row(escape(f"{k}.{kk}"), f"{vv:,}" if isinstance(vv, int) else escape(str(vv)))
        elif k == "total_bytes":
            t.add_row("size", f"{v / 1e6:,.1f} MB")
        else:
            t.add_row(escape(k), escape(str(v)))
    console.print(t)


@app.command()
def status(
    metrics_url: Annotated[
        Optional[str], typer.Option(help="the flow's /metrics (default: from metrics_port in the settings)")
    ] = None,
) -> None:
    """Health of a running job: sources, lag, last data per asset, stale assets, sink backlog.

    Exits 1 when unhealthy (for container health checks).
    """
    from datetime import datetime, timezone

    import httpx

    from smart_maintenance.health import assess, scrape
    from smart_maintenance.connectors.postgres.server import redact, resolve_dsn
    from smart_maintenance.connectors.postgres.summary import last_seen

    settings = _settings()
    problems: list[str] = []
    try:
        dsn = resolve_dsn(settings)
        seen = last_seen(dsn, settings.postgres.schema_name)
    except Exception as e:  # the database is part of health: report, do not crash
        console.print(f"[red]database unreachable:[/] {escape(str(e))}")
        raise typer.Exit(1) from None
    url = metrics_url or (f"http://127.0.0.1:{settings.metrics_port}/metrics" if settings.metrics_port else None)
    samples = None
    if url:
        try:
            samples = scrape(httpx.get(url, timeout=5).text)
        except httpx.HTTPError as e:
            problems.append(f"metrics endpoint {url} unreachable: {e}")
    now = datetime.now(timezone.utc)
    health = assess(now, seen["assets"], settings.stale_after_s, samples)
    problems.extend(health.problems)
    t = Table(title=f"assets ({len(seen['assets'])}), database {escape(redact(dsn))}")
    for col in ("asset", "last window end", "age", "state"):
        t.add_column(col)
    for asset, at in seen["assets"].items():
        age = (now - at).total_seconds()
        t.add_row(escape(asset), at.strftime("%Y-%m-%d %H:%M:%S"), f"{age:,.0f} s",
                  "[red]stale[/]" if asset in health.stale_assets else "[green]ok[/]")
    console.print(t)
    for src, v in health.sources.items():
        console.print(f"source {escape(src)}: lag {v.get('lag_s', float('nan')):,.1f} s, last batch {v.get('idle_s', float('nan')):,.1f} s ago")
    for sink, n in health.backlog.items():
        console.print(f"sink {escape(sink)}: {n:g} batch(es) queued")
    console.print(f"open alarms: {seen['open_alarms']}")
    if problems:
        for p in problems:
            console.print(f"[red]unhealthy:[/] {escape(p)}")
        raise typer.Exit(1)
    console.print("[green]healthy[/]")


from smart_maintenance.cli.loop import log_maintenance, review_app  # noqa: E402
from smart_maintenance.cli.assets import assets_app  # noqa: E402

from smart_maintenance.report.html import report_command  # noqa: E402
from smart_maintenance.training import train_rul_command  # noqa: E402

app.add_typer(review_app, name="review")
app.add_typer(assets_app, name="assets")
app.command("report")(report_command)
app.command("train-rul")(train_rul_command)
app.command("log-maintenance")(log_maintenance)


incidents_app = typer.Typer(no_args_is_help=True, help="The incident memory: past incidents and what fixed them.")
app.add_typer(incidents_app, name="incidents")


@app.command()
def ask(
    text: Annotated[str, typer.Argument(help="what you see, in your own words")],
    k: Annotated[Optional[int], typer.Option("-k", min=1, help="how many incidents (default: incidents.top_k)")] = None,
    asset_type: Annotated[
        Optional[str], typer.Option("--asset-type", "-t", help="pump, compressor, ...: incidents of that type first")
    ] = None,
    sensor: Annotated[Optional[list[str]], typer.Option("--sensor", "-s", help="alarm sensor (repeatable)")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="one JSON object per line instead of a table")] = False,
) -> None:
    """Search past incidents: what was seen before, and what fixed it."""
    from rich.markup import escape

    from smart_maintenance.stores.incidents import IncidentMemoryError
    from smart_maintenance.stores.incidents import ask as ask_memory

    settings = _settings()
    try:
        hits = ask_memory(settings, text, k=k, asset_type=asset_type, sensors=sensor)
    except IncidentMemoryError as e:
        console.print(f"[red]incident memory:[/] {escape(str(e))}")
        raise typer.Exit(1) from e
    if as_json:
        for h in hits:
            print(json.dumps(h))
        return
    if not hits:
        console.print("no past incidents yet: add some with [bold]smart-maintenance incidents import FILE[/]")
        return
    t = Table(title=f"past incidents like: {escape(text)}", show_lines=True)
    for col in ("similarity", "asset", "closed", "seen", "fix", "outcome"):
        t.add_column(col, overflow="fold")
    for h in hits:
        t.add_row(f"{h['similarity']:.2f}", escape(h["asset_id"]), h["closed_at"][:10], escape(h["symptoms"]),
                  escape(h["resolution"]), h["outcome"])
    Console().print(t)


@incidents_app.command("import")
def incidents_import(
    file: Annotated[Path, typer.Argument(exists=True, dir_okay=False, help="JSONL, one incident per line")],
) -> None:
    """Index past incidents from a JSONL file (a CMMS export; fields in docs/incidents.md). Re-importing updates."""
    from rich.markup import escape

    from smart_maintenance.stores.incidents import IncidentMemoryError, memory

    settings = _settings()
    started = time.perf_counter()
    try:
        m = memory(settings)
        n = m.import_jsonl(file)
        total = m.count()
    except IncidentMemoryError as e:
        console.print(f"[red]incident memory:[/] {escape(str(e))}")
        raise typer.Exit(1) from e
    console.print(f"indexed {n:,} incidents in {time.perf_counter() - started:.1f} s; the memory holds {total:,}")


@incidents_app.command("export")
def incidents_export(file: Annotated[Path, typer.Argument(dir_okay=False, help="JSONL file to write")]) -> None:
    """Write every incident in the memory to a JSONL file (`incidents import` reads it back)."""
    from rich.markup import escape

    from smart_maintenance.stores.incidents import IncidentMemoryError, memory

    try:
        n = memory(_settings()).export_jsonl(file)
    except IncidentMemoryError as e:
        console.print(f"[red]incident memory:[/] {escape(str(e))}")
        raise typer.Exit(1) from e
    console.print(f"wrote {n:,} incidents to {file}")


def main() -> None:
    from smart_maintenance.config.registry import RegistryError
    from smart_maintenance.connectors.postgres.server import PostgresSinkError
    from smart_maintenance.sources.formats import ReplayError

    from smart_maintenance.logs import configure_logging

    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    configure_logging()
    try:
        app(standalone_mode=True)
    except (PostgresSinkError, ReplayError, RegistryError) as e:
        console.print(f"[red]error:[/] {escape(str(e))}")
        raise SystemExit(1) from None


if __name__ == "__main__":
    main()
