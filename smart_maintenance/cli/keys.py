"""`smart-maintenance keys create|list|revoke`: the HTTP API's keys (stored hashed in PostgreSQL).

    smart-maintenance keys create NAME --scope read --scope review [--site north]
    smart-maintenance keys list
    smart-maintenance keys revoke NAME

`create` prints the token once on stdout; only its sha256 is stored. Scopes: read, review, maintain,
ingest, admin (admin holds all). Sites limit what a key sees (default: every site).
"""

from __future__ import annotations

from typing import Annotated, Any

import typer
from rich.table import Table
from rich.text import Text

from smart_maintenance.cli.common import out
from smart_maintenance.cli.common import say as _say
from smart_maintenance.cli.common import settings as _settings
from smart_maintenance.cli.common import when as _t

keys_app = typer.Typer(add_completion=False, no_args_is_help=True, help="API keys: create, list, revoke.")


def _store() -> Any:
    from smart_maintenance.connectors.postgres.api_store import ApiStore
    from smart_maintenance.connectors.postgres.server import PostgresSinkError, resolve_dsn

    settings = _settings()
    try:
        return ApiStore(resolve_dsn(settings), settings.postgres.schema_name, pool_size=1).open()
    except PostgresSinkError as e:
        _say(str(e), "database error: ", "red")
        raise typer.Exit(1) from None


@keys_app.command("create")
def create(name: Annotated[str, typer.Argument(help="who or what uses the key (shown in the audit trail)")],
           scope: Annotated[list[str], typer.Option(help="read, review, maintain, ingest, admin (repeat)")],
           site: Annotated[list[str], typer.Option(help="limit the key to this site (repeat); default all")] = [],  # noqa: B006
           ) -> None:
    """Create a key and print its token (once: it cannot be shown again)."""
    from smart_maintenance.connectors.postgres.api_store import KeyError_

    store = _store()
    try:
        token = store.create_key(name, scope, site)
    except KeyError_ as e:
        _say(str(e), "error: ", "red")
        raise typer.Exit(2) from None
    finally:
        store.close()
    print(token)
    _say(f"key {name!r} created with scopes {', '.join(sorted(set(scope)))}"
         + (f" for sites {', '.join(site)}" if site else "") + "; store the token now, it is not kept")


@keys_app.command("list")
def list_keys() -> None:
    """Every key: name, scopes, sites, when made, last used, revoked."""
    store = _store()
    try:
        rows = store.list_keys()
    finally:
        store.close()
    t = Table(title=f"API keys ({len(rows)})")
    for col in ("name", "key id", "scopes", "sites", "created UTC", "last used UTC", "revoked UTC"):
        t.add_column(col, no_wrap=True)
    for r in rows:
        t.add_row(*map(Text, (r["name"], r["key_id"], ",".join(r["scopes"]), ",".join(r["sites"]) or "all",
                              _t(r["created_at"]), _t(r["last_used_at"]), _t(r["revoked_at"]))))
    out.print(t)


@keys_app.command("revoke")
def revoke(name: Annotated[str, typer.Argument(help="the key's name or key id")]) -> None:
    """Revoke a key: requests with it are refused from now on."""
    store = _store()
    try:
        done = store.revoke_key(name)
    finally:
        store.close()
    if not done:
        _say(f"no live key {name!r}", "error: ", "red")
        raise typer.Exit(2)
    _say(f"key {name!r} revoked")
