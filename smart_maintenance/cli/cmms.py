"""The CMMS hand-off from the command line: see what a work order would be sent as, read completions now.

    smart-maintenance cmms preview WORK_ORDER_ID     the request a stored work order makes (nothing is sent)
    smart-maintenance cmms sync                      ask the CMMS for completed work once, into the log

Settings: `[cmms]` (docs/cmms.md). Data goes to stdout, messages to stderr.
Exit codes: 0 done, 1 the database or the CMMS failed, 2 a usage or configuration error.
"""

from __future__ import annotations

from typing import Annotated

import typer

from smart_maintenance.cli.common import fail, loop_store, out, say, settings

__all__ = ["cmms_app"]

cmms_app = typer.Typer(add_completion=False, no_args_is_help=True,
                       help="CMMS hand-off: preview what a work order is sent as; read completions now.")


@cmms_app.command("preview")
def preview(work_order_id: Annotated[str, typer.Argument(help="a work order in the database")]) -> None:
    """Print the request a stored work order makes (method, path, Idempotency-Key, body); nothing is sent."""
    import orjson

    from smart_maintenance.config.cmms_settings import WORK_ORDER_FIELDS
    from smart_maintenance.connectors.postgres.server import PostgresSinkError
    from smart_maintenance.operators.cmms import (
        MappingError,
        compile_mapping,
        idempotency_key,
        render_body,
        render_path,
    )

    s = settings()
    with loop_store() as store:
        try:
            wo = store.work_order(work_order_id)
        except PostgresSinkError as e:
            fail(e, "database error")
    if wo is None:
        say(f"no work order {work_order_id} in the database", "error: ", "red")
        raise typer.Exit(2)
    c = s.cmms
    endpoint = c.create if int(wo.get("revision") or 0) == 0 else c.update
    try:
        body = render_body(compile_mapping(c.mapping, WORK_ORDER_FIELDS), wo)
        path = render_path(endpoint.path, wo)
    except MappingError as e:
        fail(e, "mapping error", 2)
    out.print(f"{endpoint.method} {c.base_url or '<cmms.base_url>'}{path}", markup=False, highlight=False)
    out.print(f"Idempotency-Key: {idempotency_key(wo)}", markup=False, highlight=False)
    out.print(orjson.dumps(body, option=orjson.OPT_INDENT_2).decode(), markup=False, highlight=False)
    if not c.enabled:
        say("cmms.enabled is false: the flow does not push work orders", "note: ", "yellow")


@cmms_app.command("sync")
def sync() -> None:
    """Ask the CMMS for completed work once and log it (the flow applies it: live at once, a replay at its time)."""
    from smart_maintenance.connectors.cmms.client import CmmsError
    from smart_maintenance.connectors.cmms.source import read_completions
    from smart_maintenance.connectors.postgres.server import PostgresSinkError

    s = settings()
    if not s.cmms.enabled or s.cmms.completions.path is None:
        say("set cmms.enabled and cmms.completions.path first (docs/cmms.md)", "error: ", "red")
        raise typer.Exit(2)
    try:
        records, bad = read_completions(s)
    except CmmsError as e:
        fail(e, f"CMMS {s.cmms.host}")
    with loop_store() as store:
        try:
            store.store_dead_letters(bad)
            new = store.store_maintenance(records) if records else 0
        except PostgresSinkError as e:
            fail(e, "database error")
    say(f"{s.cmms.host}: {len(records)} completion(s): {new} logged, {len(records) - new} already logged, "
        f"{len(bad)} dead-lettered")
    for b in bad:
        say(f"  {b.origin}: {b.detail}")
