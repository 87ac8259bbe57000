"""`smart-maintenance serve`: the HTTP API and the web UI (FastAPI on uvicorn).

    smart-maintenance serve [--host 127.0.0.1] [--port 8000] [--rate-per-s 50] [--burst 200]
                            [--max-body-mb 8] [--cors-origin https://...] [--read-cache-s 1]

Binds the loopback address unless told otherwise; CORS is off unless origins are given. Keys come
from `smart-maintenance keys create`. See docs/api.md.
"""

from __future__ import annotations

from typing import Annotated, Any

import typer

__all__ = ["build_app", "serve"]


def build_app(settings: Any, config: Any) -> Any:
    """The app over the configured PostgreSQL schema (migrated on start)."""
    from smart_maintenance.api.app import create_app
    from smart_maintenance.config.registry import load_registry
    from smart_maintenance.connectors.postgres.api_store import ApiStore
    from smart_maintenance.connectors.postgres.server import resolve_dsn
    from smart_maintenance.connectors.postgres.store import LoopStore

    dsn, schema = resolve_dsn(settings), settings.postgres.schema_name
    registry = load_registry(settings.registry)
    registry = registry.with_simulated(max(settings.simulator.assets, len(registry.assets)))
    known = {a.asset_id: {"site": a.site, "type": a.type} for a in registry.assets}
    store = ApiStore(dsn, schema, pool_size=8).open()
    return create_app(config, store, known, lambda: LoopStore(dsn, schema).open())


def serve(
    host: Annotated[str, typer.Option(help="address to bind (default: loopback only)")] = "127.0.0.1",
    port: Annotated[int, typer.Option(min=1, max=65535)] = 8000,
    rate_per_s: Annotated[float, typer.Option(help="requests per second per key, sustained")] = 50.0,
    burst: Annotated[int, typer.Option(min=1, help="requests per key at once")] = 200,
    max_body_mb: Annotated[float, typer.Option(help="largest request body")] = 8.0,
    cors_origin: Annotated[list[str], typer.Option(help="allow this browser origin (repeat); default none")] = [],  # noqa: B006
    secure_cookie: Annotated[bool, typer.Option(help="mark the UI's cookie Secure (serve behind TLS)")] = False,
    read_cache_s: Annotated[float, typer.Option(min=0.0, help="identical GETs share an answer this long "
                                                "(at most twice as old while refreshed); 0: off")] = 1.0,
) -> None:
    """Serve the HTTP API and the web UI."""
    import uvicorn

    from smart_maintenance.api.config import ApiConfig
    from smart_maintenance.cli.common import say as _say
    from smart_maintenance.cli.common import settings as _settings
    from smart_maintenance.connectors.postgres.server import PostgresSinkError

    config = ApiConfig(host=host, port=port, rate_per_s=rate_per_s, burst=burst,
                       max_body_bytes=int(max_body_mb * 1024 * 1024), cors_origins=tuple(cors_origin),
                       secure_cookie=secure_cookie, read_cache_s=read_cache_s)
    try:
        app = build_app(_settings(), config)
    except PostgresSinkError as e:
        _say(str(e), "database error: ", "red")
        raise typer.Exit(1) from None
    if host not in ("127.0.0.1", "::1", "localhost"):
        _say(f"serving on {host}: reachable from other machines; use TLS in front of it", "note: ", "yellow")
    uvicorn.run(app, host=host, port=port, log_level="info", proxy_headers=False, server_header=False)
