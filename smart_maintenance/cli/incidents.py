"""`ask` and `incidents import|export`: the incident memory, past incidents and what fixed them."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from smart_maintenance.cli.common import fail, out, plain, say, settings

incidents_app = typer.Typer(no_args_is_help=True, help="The incident memory: past incidents and what fixed them.")


def ask(
    text: Annotated[str, typer.Argument(help="what you see, in your own words")],
    k: Annotated[int | None, typer.Option("-k", min=1, help="how many incidents (default: incidents.top_k)")] = None,
    asset_type: Annotated[
        str | None, typer.Option("--asset-type", "-t", help="pump, compressor, ...: incidents of that type first")
    ] = None,
    sensor: Annotated[list[str] | None, typer.Option("--sensor", "-s", help="alarm sensor (repeatable)")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="one JSON object per line instead of a table")] = False,
) -> None:
    """Search past incidents: what was seen before, and what fixed it."""
    from smart_maintenance.stores.incidents import IncidentMemoryError
    from smart_maintenance.stores.incidents import ask as ask_memory

    s = settings()
    try:
        hits = ask_memory(s, text, k=k, asset_type=asset_type, sensors=sensor)
    except IncidentMemoryError as e:
        fail(e, "incident memory")
    if as_json:
        for h in hits:
            print(json.dumps(h))
        return
    if not hits:
        say("no past incidents yet: add some with smart-maintenance incidents import FILE")
        return
    t = Table(title=plain(f"past incidents like: {text}"), show_lines=True)
    for col in ("similarity", "asset", "closed", "seen", "fix", "outcome"):
        t.add_column(col, overflow="fold")
    for h in hits:
        t.add_row(f"{h['similarity']:.2f}", plain(h["asset_id"]), plain(h["closed_at"][:10]), plain(h["symptoms"]),
                  plain(h["resolution"]), plain(h["outcome"]))
    out.print(t)


@incidents_app.command("import")
def incidents_import(
    file: Annotated[Path, typer.Argument(exists=True, dir_okay=False, help="JSONL, one incident per line")],
) -> None:
    """Index past incidents from a JSONL file (a CMMS export; fields in docs/incidents.md). Re-importing updates."""
    from smart_maintenance.stores.incidents import IncidentMemoryError, memory

    s = settings()
    started = time.perf_counter()
    try:
        m = memory(s)
        n = m.import_jsonl(file)
        total = m.count()
    except IncidentMemoryError as e:
        fail(e, "incident memory")
    say(f"indexed {n:,} incidents in {time.perf_counter() - started:.1f} s; the memory holds {total:,}")


@incidents_app.command("export")
def incidents_export(file: Annotated[Path, typer.Argument(dir_okay=False, help="JSONL file to write")]) -> None:
    """Write every incident in the memory to a JSONL file (`incidents import` reads it back)."""
    from smart_maintenance.stores.incidents import IncidentMemoryError, memory

    try:
        n = memory(settings()).export_jsonl(file)
    except IncidentMemoryError as e:
        fail(e, "incident memory")
    say(f"wrote {n:,} incidents to {file}")
