"""`db` and `status`: where the data is and what it holds; the health of a running job (exit 1 when unhealthy)."""

from __future__ import annotations

from typing import Annotated

import typer
from rich.table import Table

from smart_maintenance.cli.common import err, plain, say, settings


def db() -> None:
    """Where the database is and what it holds."""
    from smart_maintenance.connectors.postgres.server import redact, resolve_dsn
    from smart_maintenance.connectors.postgres.sink import describe

    s = settings()
    dsn = resolve_dsn(s)
    info = describe(dsn, s.postgres.schema_name)
    say(redact(dsn), "database: ")
    if s.postgres.dsn is None:
        say((s.data_dir / "pgdata").resolve(), "embedded server data directory: ")
    t = Table(show_header=True)
    t.add_column("key")
    t.add_column("value")
    for k, v in info.items():
        if isinstance(v, dict):
            for kk, vv in v.items():
                t.add_row(plain(f"{k}.{kk}"), f"{vv:,}" if isinstance(vv, int) else plain(vv))
        elif k == "total_bytes":
            t.add_row("size", f"{v / 1e6:,.1f} MB")
        else:
            t.add_row(plain(k), plain(v))
    err.print(t)


def status(
    metrics_url: Annotated[
        str | None, typer.Option(help="the flow's /metrics (default: from metrics_port in the settings)")
    ] = None,
) -> None:
    """Health of a running job: sources, lag, last data per asset, stale assets, sink backlog.

    Exits 1 when unhealthy (for container health checks).
    """
    from datetime import datetime, timezone

    import httpx

    from smart_maintenance.connectors.postgres.server import redact, resolve_dsn
    from smart_maintenance.connectors.postgres.summary import last_seen
    from smart_maintenance.health import assess, remembered, scrape

    s = settings()
    problems: list[str] = []
    try:
        dsn = resolve_dsn(s)
        seen = last_seen(dsn, s.postgres.schema_name)
    except Exception as e:  # the database is part of health: report, do not crash
        say(e, "database unreachable: ", "red")
        raise typer.Exit(1) from None
    url = metrics_url or (f"http://127.0.0.1:{s.metrics_port}/metrics" if s.metrics_port else None)
    samples = None
    if url:
        try:
            samples = scrape(httpx.get(url, timeout=5).text)
        except httpx.HTTPError as e:
            problems.append(f"metrics endpoint {url} unreachable: {e}")
    now = datetime.now(timezone.utc)
    seen["assets"] = remembered(now, seen["assets"], s.limits.evict_after_s)  # evicted ids are forgotten
    health = assess(now, seen["assets"], s.stale_after_s, samples)
    problems.extend(health.problems)
    t = Table(title=plain(f"assets ({len(seen['assets'])}), database {redact(dsn)}"))
    for col in ("asset", "last window end", "age", "state"):
        t.add_column(col)
    for asset, at in seen["assets"].items():
        age = (now - at).total_seconds()
        t.add_row(plain(asset), at.strftime("%Y-%m-%d %H:%M:%S"), f"{age:,.0f} s",
                  "[red]stale[/]" if asset in health.stale_assets else "[green]ok[/]")
    err.print(t)
    for src, v in health.sources.items():
        say(f"lag {v.get('lag_s', float('nan')):,.1f} s, last batch {v.get('idle_s', float('nan')):,.1f} s ago",
            f"source {src}: ")
    for sink, n in health.backlog.items():
        say(f"{n:g} batch(es) queued", f"sink {sink}: ")
    say(seen["open_alarms"], "open alarms: ")
    if problems:
        for p in problems:
            say(p, "unhealthy: ", "red")
        raise typer.Exit(1)
    say("healthy", style="green")
