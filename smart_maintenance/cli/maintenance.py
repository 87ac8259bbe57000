"""`log-maintenance`: completed work from the command line or a file; it closes work orders and alarms and
re-baselines the asset in a running flow (its control input) or a later replay (at its event time).

    smart-maintenance log-maintenance --asset X --completed-at T [--work-order W] [--outcome repaired] ...
    smart-maintenance log-maintenance --file records.json     (a JSON array, one object, or JSONL)
"""

from __future__ import annotations

import getpass
import json
from datetime import datetime, timezone
from pathlib import Path
from typing import Annotated, Any

import typer

from smart_maintenance.cli.common import exit_for, loop_store, say
from smart_maintenance.operators.controls import (
    OUTCOMES,
    ControlError,
    MaintenanceRecord,
)


def _origin() -> str:
    """The audit trail's origin of what this command logs: who ran it, never what a record says."""
    try:
        user = getpass.getuser()
    except Exception:  # noqa: BLE001 - no login name in some containers
        user = ""
    return f"cli:{user or '?'}"


def read_records(path: Path) -> list[tuple[str, Any]]:
    """The records of a file as (label, object): a JSON array ("[i]"), one object, or JSON lines ("line n").

    A line that is not JSON comes back as (label, JSONDecodeError), for the caller to report.
    """
    text = path.read_text(encoding="utf-8")
    try:
        doc = json.loads(text)
    except json.JSONDecodeError:
        doc = None
    else:
        if isinstance(doc, list):
            return [(f"[{i}]", d) for i, d in enumerate(doc)]
        return [("[0]", doc)]
    items: list[tuple[str, Any]] = []
    for n, line in enumerate(text.splitlines(), 1):
        if line.strip():
            try:
                items.append((f"line {n}", json.loads(line)))
            except json.JSONDecodeError as e:
                items.append((f"line {n}", e))
    return items


def log_maintenance(
    asset: Annotated[str | None, typer.Option(help="the asset worked on")] = None,
    completed_at: Annotated[str | None, typer.Option(help="when the work ended: RFC 3339 with a zone, or now")]
    = None,
    work_order: Annotated[str | None, typer.Option(help="the work order it closes (default: all open ones)")]
    = None,
    outcome: Annotated[str, typer.Option(help=", ".join(OUTCOMES))] = "repaired",
    action: Annotated[str, typer.Option(help="what was done")] = "",
    notes: Annotated[str, typer.Option(help="free text: findings, cause")] = "",
    parts: Annotated[str, typer.Option(help="parts used, comma-separated")] = "",
    technician: Annotated[str, typer.Option(help="who did it")] = "",
    maintenance_id: Annotated[str | None, typer.Option(help="your id for the record (default: derived)")] = None,
    file: Annotated[Path | None, typer.Option(
        "--file", "-f", exists=True, dir_okay=False, help="records from a JSON array or JSON lines file")] = None,
) -> None:
    """Record completed maintenance: closes the work order and the alarm, re-baselines the asset's detectors.

    Repaired, replaced and adjusted re-baseline; no_fault_found marks the alarm a
    false positive; cancelled closes the work order without a repair.
    """
    from smart_maintenance.connectors.postgres.server import PostgresSinkError

    if file is not None:
        if asset is not None or completed_at is not None or work_order is not None:
            say("give --file, or --asset and --completed-at, not both", "error: ", "red")
            raise typer.Exit(2)
        _log_file(file)
        return
    if asset is None or completed_at is None:
        say("--asset and --completed-at are required (or --file)", "error: ", "red")
        raise typer.Exit(2)
    if completed_at.strip().lower() == "now":
        completed_at = datetime.now(timezone.utc).isoformat(timespec="seconds")
    try:
        record = MaintenanceRecord.from_dict({
            "asset_id": asset, "completed_at": completed_at, "work_order_id": work_order, "outcome": outcome,
            "action": action, "notes": notes, "parts": parts, "technician_id": technician,
            "maintenance_id": maintenance_id,
        }, source=_origin())
    except ControlError as e:
        raise exit_for(e) from None
    with loop_store() as store:
        try:
            open_orders = store.open_work_orders(record.asset_id)
            new = store.log_maintenance(record)
        except PostgresSinkError as e:
            raise exit_for(e) from None
    when = record.completed_at.strftime("%Y-%m-%d %H:%M:%S")
    if not new:
        say(f"maintenance {record.maintenance_id} on {record.asset_id} at {when} UTC was already logged")
        return
    say(f"logged maintenance {record.maintenance_id} on {record.asset_id} at {when} UTC ({record.outcome})")
    ids = [w["work_order_id"] for w in open_orders]
    if record.work_order_id:
        if record.work_order_id not in ids:
            say(f"{record.work_order_id} is not an open work order of {record.asset_id} in the database; "
                 "the flow closes it if it knows it", "note: ", "yellow")
        else:
            say(f"closes work order {record.work_order_id}")
    elif ids:
        say(f"closes the open work orders of {record.asset_id} created before then: {', '.join(ids)}")
    else:
        say(f"no open work order of {record.asset_id} in the database")


def _log_file(path: Path) -> None:
    from smart_maintenance.connectors.postgres.server import PostgresSinkError

    try:
        items = read_records(path)
    except (OSError, UnicodeDecodeError) as e:
        say(f"cannot read {path}: {e}", "error: ", "red")
        raise typer.Exit(2) from None
    good: list[MaintenanceRecord] = []
    bad: list[tuple[str, str]] = []
    for label, item in items:
        if isinstance(item, json.JSONDecodeError):
            bad.append((label, f"not JSON: {item.msg}"))
            continue
        try:
            good.append(MaintenanceRecord.from_dict(item, source=_origin()))
        except ControlError as e:
            bad.append((label, str(e)))
    new = 0
    if good:
        with loop_store() as store:
            try:
                new = store.store_maintenance(good)
            except PostgresSinkError as e:
                raise exit_for(e) from None
    unique = len({r.maintenance_id for r in good})
    say(f"{path}: {len(items)} record(s): {new} logged, {unique - new} already logged, {len(bad)} bad")
    for label, reason in bad:
        say(f"  {label}: {reason}")
    if bad:
        raise typer.Exit(1)
