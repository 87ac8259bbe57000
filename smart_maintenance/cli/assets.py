"""Admit assets out of quarantine, and see which assets are admitted, quarantined or registered.

    smart-maintenance assets list [--json]
    smart-maintenance assets admit ID [ID ...] [--note "..."] [--by NAME]

An asset the registry does not list is quarantined (`quarantine_unknown_assets`,
on by default): it is learned and raises alarms but creates no work orders
and notifies nobody until it is admitted. Admission is stored in PostgreSQL
(`admitted_assets`); a running flow sees it within `admission_refresh_s`.
Data goes to stdout, messages to stderr; asset ids are printed as text.
Exit codes: 0 done, 1 a database error, 2 a usage error.
"""

from __future__ import annotations

import getpass
import json
from typing import Annotated, Any

import typer
from rich.table import Table
from rich.text import Text

from smart_maintenance.cli.common import out
from smart_maintenance.cli.common import say as _say
from smart_maintenance.cli.common import settings as _settings
from smart_maintenance.config.settings import Settings

__all__ = ["assets_app"]

assets_app = typer.Typer(add_completion=False, no_args_is_help=True,
                         help="Quarantine of unknown assets: admit them, list them.")
def _dsn(settings: Settings) -> str:
    from smart_maintenance.connectors.postgres.server import PostgresSinkError, resolve_dsn

    try:
        return resolve_dsn(settings)
    except PostgresSinkError as e:
        _say(str(e), "database error: ", "red")
        raise typer.Exit(1) from None


def _user() -> str:
    try:
        return getpass.getuser()
    except Exception:  # noqa: BLE001 - no login name in some containers
        return ""


@assets_app.command("admit")
def admit(
    asset_ids: Annotated[list[str], typer.Argument(help="the asset ids to admit")],
    note: Annotated[str, typer.Option("--note", "-n", help="why: kept with the admission")] = "",
    by: Annotated[str | None, typer.Option("--by", help="who admits (default: the login name)")] = None,
) -> None:
    """Admit assets: from now on their alarms create work orders and notify people."""
    from smart_maintenance.connectors.postgres.admission import AdmissionStore
    from smart_maintenance.connectors.postgres.server import PostgresSinkError

    bad = [a for a in asset_ids if not a.strip() or not a.isprintable()]
    if bad:
        _say(f"asset ids must be printable and not empty: {', '.join(map(repr, bad))}", "error: ", "red")
        raise typer.Exit(2)
    settings = _settings()
    try:
        with AdmissionStore(_dsn(settings), settings.postgres.schema_name) as store:
            new = store.admit(asset_ids, admitted_by=by if by is not None else f"cli:{_user() or '?'}", note=note)
    except PostgresSinkError as e:
        _say(str(e), "database error: ", "red")
        raise typer.Exit(1) from None
    for a in dict.fromkeys(asset_ids):
        _say(f"admitted {a}" if a in new else f"{a} was already admitted")


@assets_app.command("list")
def list_assets(
    as_json: Annotated[bool, typer.Option("--json", help="JSON lines instead of a table")] = False,
) -> None:
    """Every asset the registry lists, the database admitted or the flow has seen, with its standing."""
    import psycopg

    from smart_maintenance.config.registry import RegistryError, load_registry
    from smart_maintenance.connectors.postgres.admission import AdmissionStore
    from smart_maintenance.connectors.postgres.server import PostgresSinkError
    from smart_maintenance.connectors.postgres.summary import last_seen

    settings = _settings()
    try:
        registry = load_registry(settings.registry)
    except RegistryError as e:
        _say(str(e), "registry error: ", "red")
        raise typer.Exit(2) from None
    dsn = _dsn(settings)
    try:
        with AdmissionStore(dsn, settings.postgres.schema_name) as store:  # migrates: the tables exist after
            admitted = {r["asset_id"]: r for r in store.admitted()}
        seen = last_seen(dsn, settings.postgres.schema_name)["assets"]
    except (PostgresSinkError, psycopg.Error) as e:
        _say(str(e), "database error: ", "red")
        raise typer.Exit(1) from None
    registered = {a.asset_id for a in registry.assets}
    rows: list[dict[str, Any]] = []
    for asset_id in sorted(registered | admitted.keys() | seen.keys()):
        a = admitted.get(asset_id)
        standing = ("registered" if asset_id in registered else "admitted" if a is not None
                    else "quarantined" if settings.quarantine_unknown_assets else "trusted")
        rows.append({"asset_id": asset_id, "standing": standing,
                     "last_window_end": seen[asset_id].isoformat() if asset_id in seen else None,
                     "admitted_at": a["admitted_at"].isoformat() if a else None,
                     "admitted_by": a["admitted_by"] if a else None, "note": a["note"] if a else None})
    if as_json:
        for r in rows:
            typer.echo(json.dumps(r))  # one line each, never wrapped
        return
    t = Table(title=f"assets ({len(rows)})")
    for col in ("asset", "standing", "last window end", "admitted", "by", "note"):
        t.add_column(col)
    for r in rows:
        t.add_row(*map(Text, (r["asset_id"], r["standing"], (r["last_window_end"] or "")[:19],
                              (r["admitted_at"] or "")[:19], r["admitted_by"] or "", r["note"] or "")))
    out.print(t)
    quarantined = sum(r["standing"] == "quarantined" for r in rows)
    if quarantined:
        _say(f"{quarantined} quarantined asset(s): no work orders, no notifications; "
             "admit one with: smart-maintenance assets admit ID")
