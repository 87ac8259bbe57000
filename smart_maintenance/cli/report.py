"""`report`: the HTML page of fleet health, trends, forecasts, schedule and KPIs."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from smart_maintenance.cli.common import fail, say, settings
from smart_maintenance.config.registry import load_registry
from smart_maintenance.report.html import parse_since, write_report


def report_command(
    out: Annotated[Path, typer.Option("--out", help="the HTML file to write")] = Path("report.html"),
    since: Annotated[str | None, typer.Option(
        help="from this UTC date/time, or this long before the newest data (36h, 7d, 2w); default: all")] = None,
    asset: Annotated[str | None, typer.Option(help="only this asset")] = None,
) -> None:
    """Write an HTML report: KPIs, fleet health, sensor trends, forecasts, schedule, feedback."""
    from smart_maintenance.report.data import ReportDataError

    try:
        start = parse_since(since) if since else None
    except ValueError as e:
        raise typer.BadParameter(str(e), param_hint="--since") from None
    s = settings()
    registry = load_registry(s.registry)
    try:
        r = write_report(s, out, start, asset, registry)
    except ReportDataError as e:
        fail(e)
    say(f"wrote {r.path} ({r.bytes / 1e6:.1f} MB, {r.assets} assets, {r.images} charts, {r.alarms} alarms) "
        f"in {r.seconds:.1f} s")
