"""`run`, `replay` and `publish`: the flow live or as a backfill, and load for it."""

from __future__ import annotations

import time
from datetime import timedelta
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.table import Table

from smart_maintenance.cli.common import duration, err, plain, say, settings, speed
from smart_maintenance.config.settings import Settings
from smart_maintenance.dataflows.sources import SOURCES, source_entry

RUN_SOURCES = tuple(name for name, entry in SOURCES.items() if entry.run_option)

WorkersOpt = Annotated[int, typer.Option("--workers", "-w", min=1, help="worker threads in this process")]
OutOpt = Annotated[Path | None, typer.Option("--out", help="also write every stream as JSONL files here")]
EpochOpt = Annotated[float | None, typer.Option(
    "--epoch-s", min=0.01, help="Bytewax epoch (= snapshot) interval in seconds; Bytewax's default is 10")]
ProcessOpt = Annotated[int | None, typer.Option(
    "--process-id", "-i", min=0, help="cluster: this process's index into --addresses")]
AddressesOpt = Annotated[str | None, typer.Option(
    "--addresses", "-a", help="cluster: every process's host:port, ';'-separated, the same list for each")]
MetricsOpt = Annotated[int | None, typer.Option("--metrics-port", help="serve Prometheus /metrics on this port")]
RecoveryOpt = Annotated[
    Path | None, typer.Option("--recovery", help="Bytewax recovery directory: resume after a crash")
]


def cluster_args(process_id: int | None, addresses: str | None, epoch_s: float | None) -> dict[str, Any]:
    """`cli_main`'s cluster and epoch arguments from the CLI's options (what `bytewax.run -i -a -s` take).

    >>> cluster_args(1, "h1:2101; h2:2101", 0.5)
    {'process_id': 1, 'addresses': ['h1:2101', 'h2:2101'], 'epoch_interval': datetime.timedelta(microseconds=500000)}
    >>> cluster_args(None, None, None)
    {}
    """
    out: dict[str, Any] = {}
    if (process_id is None) != (addresses is None):
        raise typer.BadParameter("--process-id and --addresses go together", param_hint="--process-id")
    if addresses is not None and process_id is not None:
        hosts = [a.strip() for a in addresses.split(";") if a.strip()]
        if process_id >= len(hosts):
            raise typer.BadParameter(f"process {process_id} is not among {len(hosts)} addresses",
                                     param_hint="--process-id")
        out.update(process_id=process_id, addresses=hosts)
    if epoch_s is not None:
        out["epoch_interval"] = timedelta(seconds=epoch_s)
    return out


def run_flow(s: Settings, workers: int, recovery: Path | None, cluster: dict[str, Any] | None = None,
             **flow_kwargs: Any) -> tuple[float, dict[str, float]]:
    """Run the flow in this process (one of a cluster's, with `cluster_args`); its wall time and counts."""
    from bytewax.errors import BytewaxRuntimeError
    from bytewax.recovery import RecoveryConfig, init_db_dir
    from bytewax.run import cli_main

    from smart_maintenance import metrics, slack
    from smart_maintenance.cli.shutdown import sigterm_as_interrupt, stopped_by_signal
    from smart_maintenance.connectors.postgres.schema import ensure_schema
    from smart_maintenance.connectors.postgres.server import resolve_dsn
    from smart_maintenance.dataflows.catalogue import STREAMS
    from smart_maintenance.dataflows.plant import build_flow
    from smart_maintenance.recovery import set_recovery
    from smart_maintenance.sinks.files import reset_outputs

    dsn = resolve_dsn(s)  # start the embedded server once, before the workers
    ensure_schema(dsn, s.postgres.schema_name)
    if s.out_dir is not None and recovery is None:
        reset_outputs(s.out_dir, STREAMS)
    set_recovery(recovery is not None)  # sinks that write in the background wait at snapshots only with it
    flow = build_flow(s, **flow_kwargs)
    rc = None
    if recovery is not None:
        if not recovery.exists():
            recovery.mkdir(parents=True)
            init_db_dir(recovery, workers)  # type: ignore[no-untyped-call]  # bytewax's stubs are unannotated
        rc = RecoveryConfig(recovery)  # type: ignore[no-untyped-call]  # bytewax's stubs are unannotated
    before = metrics.run_counts()
    started = time.perf_counter()
    slack.relax_main_thread()  # in a cluster this thread only waits for the workers (slack.py)
    try:
        with sigterm_as_interrupt():  # systemd, Docker and Kubernetes stop services with SIGTERM
            cli_main(flow, workers_per_process=workers, recovery_config=rc,  # type: ignore[no-untyped-call]  # as above
                     **(cluster or {}))
    except KeyboardInterrupt:
        say("stopped", style="yellow")
    except BytewaxRuntimeError as e:
        if not stopped_by_signal(e):
            raise
        say("stopped by a signal" + (" (resume with the same --recovery)" if rc else ""))
    finally:
        set_recovery(None)  # a later flow in this process (tests) decides again
        slack.restore_thread()
    elapsed = time.perf_counter() - started
    after = metrics.run_counts()
    return elapsed, {k: v - before.get(k, 0.0) for k, v in after.items() if v - before.get(k, 0.0)}


def summary(s: Settings, elapsed: float, did: dict[str, float]) -> None:
    """What this run did (its own counts, not the database's totals), then what is open now."""
    from smart_maintenance.connectors.postgres.server import redact, resolve_dsn
    from smart_maintenance.connectors.postgres.summary import summarize

    dsn = resolve_dsn(s)
    now = summarize(dsn, s.postgres.schema_name)
    t = Table(title=f"smart-maintenance: this run, done in {elapsed:.1f} s", show_header=True)
    t.add_column("what")
    t.add_column("count", justify="right")
    for name, value in sorted(did.items()):
        t.add_row(plain(name), f"{value:,.0f}")
    for label in ("reviews pending", "maintenance logged"):
        if label in now["counts"]:
            t.add_row(f"{label} (in the database)", f"{now['counts'][label]:,}")
    err.print(t)
    if now["open_alarms"]:
        a = Table(title="alarms still open")
        for col in ("asset", "kind", "severity", "opened", "sensors"):
            a.add_column(col)
        for asset, kind, severity, opened, sensors in now["open_alarms"]:
            a.add_row(plain(asset), plain(kind), str(severity), opened.strftime("%Y-%m-%d %H:%M"), plain(sensors))
        err.print(a)
    say(f"{redact(dsn)} schema {s.postgres.schema_name}", "stored in PostgreSQL: ")
    if s.out_dir is not None:
        say(s.out_dir.resolve(), "JSONL streams in: ")
    say("smart-maintenance db", "look again with: ")


def _with_models(s: Settings) -> dict[str, Any]:
    """Runs on live streams keep their fitted detectors in data_dir/models unless configured otherwise.

    (The simulator and replays start from nothing, so that the same input always gives the same results.)
    """
    return {"model_dir": s.detection.model_dir or s.data_dir / "models"}


def run(
    source: Annotated[str, typer.Option(help=f"one of {', '.join(RUN_SOURCES)} (each reads its settings section, "
                                             "e.g. [mqtt], [kafka])")] = "simulator",
    duration_: Annotated[str, typer.Option("--duration", help="simulated time: 90m, 6h, 3d, forever")] = "3d",
    speed_: Annotated[str, typer.Option("--speed", help="max, or a factor of real time (1 = live)")] = "max",
    assets: Annotated[int, typer.Option(min=1, help="simulated assets")] = 12,
    seed: Annotated[int, typer.Option(help="simulator seed")] = 7,
    workers: WorkersOpt = 1,
    out: OutOpt = None,
    recovery: RecoveryOpt = None,
    metrics_port: MetricsOpt = None,
    epoch_s: EpochOpt = None,
    process_id: ProcessOpt = None,
    addresses: AddressesOpt = None,
) -> None:
    """Run the flow live: the simulator plant (default, on embedded defaults), or MQTT / Kafka streams."""
    if source not in RUN_SOURCES:
        raise typer.BadParameter(f"must be one of {', '.join(RUN_SOURCES)}, not {source!r}", param_hint="--source")
    sim = {"duration_s": duration(duration_, forever=True), "speed": speed(speed_), "assets": assets, "seed": seed}
    s = settings(source=source, out_dir=out, simulator=sim,
                 **({"metrics_port": metrics_port} if metrics_port else {}))
    if source != "simulator":
        s = settings(source=source, out_dir=out, simulator=sim, detection=_with_models(s),
                     **({"metrics_port": metrics_port} if metrics_port else {}))
    entry = source_entry(source)
    live = entry.live(s)
    if source == "simulator":
        say(f"simulating {s.simulator.assets} assets for {duration_} at speed {speed_} "
            f"({'live' if live else 'fast-forward'}), {workers} worker(s)")
    else:
        say(f"reading {entry.where(s)}, {workers} worker(s); Ctrl-C stops")
    elapsed, did = run_flow(s, workers, recovery, cluster_args(process_id, addresses, epoch_s), live=live)
    summary(s, elapsed, did)


def replay(
    files: Annotated[list[Path], typer.Argument(help="CSV (long or wide), Parquet or JSONL files", exists=True)],
    fmt: Annotated[str, typer.Option("--format", help="auto, long, wide, jsonl, parquet")] = "auto",
    time_col: Annotated[str | None, typer.Option(help="wide files: the time column")] = None,
    asset_col: Annotated[str | None, typer.Option(help="wide files: the asset column")] = None,
    asset: Annotated[str | None, typer.Option(help="wide files: one fixed asset id (default: file name)")] = None,
    sep: Annotated[str | None, typer.Option(help="CSV separator (default: sniffed)")] = None,
    timezone: Annotated[str | None, typer.Option(
        help="times with no offset are this zone's wall clock, e.g. Europe/Berlin (default: UTC)")] = None,
    speed_: Annotated[str, typer.Option("--speed", help="max, or a factor of real time")] = "max",
    workers: WorkersOpt = 1,
    out: OutOpt = None,
    recovery: RecoveryOpt = None,
    metrics_port: MetricsOpt = None,
    epoch_s: EpochOpt = None,
    process_id: ProcessOpt = None,
    addresses: AddressesOpt = None,
) -> None:
    """Backfill: replay recorded readings through the same flow, in event time."""
    s = settings(
        source="replay",
        out_dir=out,
        **({"metrics_port": metrics_port} if metrics_port else {}),
        replay={"paths": tuple(files), "format": fmt, "time_col": time_col, "asset_col": asset_col, "asset": asset,
                "sep": sep, "speed": speed(speed_), "timezone": timezone},
    )
    elapsed, did = run_flow(s, workers, recovery, cluster_args(process_id, addresses, epoch_s))
    summary(s, elapsed, did)


def publish(
    files: Annotated[list[Path] | None, typer.Argument(help="files to publish (default: the simulator)")] = None,
    to: Annotated[str, typer.Option("--to", help="mqtt or kafka")] = "mqtt",
    duration_: Annotated[str, typer.Option("--duration", help="simulator: simulated time, or forever")] = "1d",
    assets: Annotated[int, typer.Option(min=1, help="simulator: assets")] = 12,
    seed: Annotated[int, typer.Option(help="simulator seed")] = 7,
    speed_: Annotated[str, typer.Option("--speed", help="simulator: max, or a factor of real time")] = "max",
    rate: Annotated[float, typer.Option(min=0, help="messages per second at most (0 = no limit)")] = 0.0,
    frame: Annotated[int, typer.Option(min=1, help="mqtt: readings of one asset per message (frames)")] = 1,
) -> None:
    """Send the simulator plant or recorded files to MQTT or Kafka (demos and load tests)."""
    from smart_maintenance.sources.feed import file_batches, simulator_batches

    if to not in ("mqtt", "kafka"):
        raise typer.BadParameter(f"must be mqtt or kafka, not {to!r}", param_hint="--to")
    if frame > 1 and to != "mqtt":
        raise typer.BadParameter("frames are sent to MQTT only", param_hint="--frame")
    s = settings(simulator={"duration_s": duration(duration_, forever=True), "speed": speed(speed_),
                            "assets": assets, "seed": seed})
    batches, registry = (file_batches(files), None) if files else simulator_batches(s)
    started, sent = time.perf_counter(), 0
    if to == "mqtt":
        from smart_maintenance.connectors.mqtt.publish import (
            publish_readings as mqtt_publish,
        )

        stats = mqtt_publish(s.mqtt, batches, registry=registry, rate=rate, frame=frame)
        if frame > 1:
            say(f"{stats.messages:,} messages of up to {frame} readings")
        sent = stats.readings
    else:
        from smart_maintenance.connectors.kafka.sink import (
            publish_readings as kafka_publish,
        )

        for batch in batches:
            sent += kafka_publish(s.kafka, batch, rate=rate)
    elapsed = time.perf_counter() - started
    say(f"published {sent:,} readings to {to} in {elapsed:.1f} s ({sent / max(elapsed, 1e-9):,.0f}/s)")
