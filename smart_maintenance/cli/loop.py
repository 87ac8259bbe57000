"""The maintenance loop's commands: the human review queue and the maintenance log.

    smart-maintenance review list [--status pending|deferred|open|approved|rejected|all] [--asset X] [--limit N]
    smart-maintenance review show ID
    smart-maintenance review approve|reject|defer ID --note "..." [--by NAME] [--force]
    smart-maintenance log-maintenance --asset X --completed-at T [--work-order W] [--outcome repaired] ...
    smart-maintenance log-maintenance --file records.json     (a JSON array, one object, or JSONL)

A decision or a maintenance record is stored in PostgreSQL; a running flow
picks it up within a second (its control input), a later replay at the
event time it is about. Data goes to stdout, messages to stderr. Exit codes:
0 done, 1 a database error or bad records in a file, 2 a usage error (an
unknown review id, a review already decided, a bad value).
"""

from __future__ import annotations

import getpass
import json
from datetime import datetime, timezone
from pathlib import Path
from typing import Annotated, Any, Optional

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table
from rich.text import Text

from smart_maintenance.config.settings import Settings, load_settings
from smart_maintenance.operators.controls import OUTCOMES, ControlError, MaintenanceRecord

__all__ = ["log_maintenance", "read_records", "review_app"]

review_app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    help="The human review queue: anomalies that need a person's judgement.",
)
out = Console(soft_wrap=False)
err = Console(stderr=True, soft_wrap=True)


def _say(message: str, label: str = "", style: str = "") -> None:
    """A message on stderr; user text (ids, notes) is never read as markup."""
    err.print(Text.assemble((label, style), message))


def _settings() -> Settings:
    try:
        return load_settings()
    except Exception as e:  # pydantic's ValidationError, a bad TOML file, a missing config file
        _say(str(e), "configuration error: ", "red")
        raise typer.Exit(2) from e


def _store() -> Any:
    from smart_maintenance.connectors.postgres.store import LoopStore
    from smart_maintenance.connectors.postgres.server import PostgresSinkError, resolve_dsn

    settings = _settings()
    try:
        return LoopStore(resolve_dsn(settings), settings.postgres.schema_name).open()
    except PostgresSinkError as e:
        _say(str(e), "database error: ", "red")
        raise typer.Exit(1) from None


def _fail(e: Exception) -> typer.Exit:
    """Exit 2 for what the user can fix (a wrong id, a decided review, a bad value), 1 for the database."""
    from smart_maintenance.connectors.postgres.store import ReviewClosedError, UnknownReviewError

    if isinstance(e, (UnknownReviewError, ReviewClosedError, ControlError, ValueError)):
        _say(str(e), "error: ", "red")
        return typer.Exit(2)
    _say(str(e), "database error: ", "red")
    return typer.Exit(1)


def _t(value: datetime | None) -> str:
    return "" if value is None else value.astimezone(timezone.utc).strftime("%Y-%m-%d %H:%M:%S")


def _jsonable(value: Any) -> Any:
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, dict):
        return {k: _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    return value


# -- review ---------------------------------------------------------------------------

@review_app.command("list")
def review_list(
    status: Annotated[str, typer.Option(help="pending, deferred, open (pending or deferred), approved, rejected, all")]
    = "pending",
    asset: Annotated[Optional[str], typer.Option(help="only this asset")] = None,
    limit: Annotated[int, typer.Option(min=1, help="at most this many")] = 50,
    as_json: Annotated[bool, typer.Option("--json", help="JSON lines instead of a table")] = False,
) -> None:
    """Reviews waiting for a decision (most severe first, then oldest)."""
    from smart_maintenance.connectors.postgres.server import PostgresSinkError

    with _store() as store:
        try:
            rows = store.list_reviews(status=status, asset_id=asset, limit=limit)
        except (PostgresSinkError, ValueError) as e:
            raise _fail(e) from None
    if as_json:
        for r in rows:
            out.print_json(data=_jsonable(r), indent=None)
        return
    t = Table(title=escape(f"reviews: {status}" + (f", asset {asset}" if asset else "") + f" ({len(rows)})"))
    t.add_column("review id", no_wrap=True)
    t.add_column("asset", no_wrap=True)
    t.add_column("window end UTC", no_wrap=True)
    t.add_column("score", justify="right")
    t.add_column("sev", justify="right")
    t.add_column("status")
    t.add_column("reasons", ratio=1)
    for r in rows:
        t.add_row(*map(Text, (r["review_id"], r["asset_id"], _t(r["window_end"])[:16], f"{r['score']:.2f}",
                              str(r["severity"]), r["status"], "; ".join(map(str, r["reasons"] or [])))))
    out.print(t)
    if not rows:
        _say("nothing to review" if status in ("pending", "open") else "no such reviews")


@review_app.command("show")
def review_show(
    review_id: Annotated[str, typer.Argument(help="the review id (the anomaly id)")],
    as_json: Annotated[bool, typer.Option("--json", help="the whole record as JSON")] = False,
) -> None:
    """One review: the anomaly, why it was flagged, which sensors, and its decisions so far."""
    from smart_maintenance.connectors.postgres.store import UnknownReviewError
    from smart_maintenance.connectors.postgres.server import PostgresSinkError

    with _store() as store:
        try:
            r = store.get_review(review_id)
            if r is None:
                raise UnknownReviewError(f"no review {review_id!r} (see `smart-maintenance review list --status all`)")
        except PostgresSinkError as e:
            raise _fail(e) from None
    if as_json:
        out.print_json(data=_jsonable(r))
        return
    a = r["anomaly"]
    t = Table(title=escape(f"review {review_id}"), show_header=False)
    t.add_column("key", style="bold")
    t.add_column("value")
    rows = [
        ("asset", r["asset_id"]),
        ("window", f"{_t(r['window_start'])} .. {_t(r['window_end'])} UTC"),
        ("score", f"{r['score']:.3f} (confidence {a.get('confidence', float('nan')):.2f})"),
        ("severity", str(r["severity"])),
        ("status", r["status"]),
        ("reasons", "; ".join(map(str, a.get("reasons", [])))),
        ("sensors", ", ".join(f"{c['sensor']} {c['share']:.0%}" for c in a.get("contributions", []))),
        ("features", ", ".join(f"{c['feature']} {c['share']:.0%}" for c in a.get("features", []))),
        ("detectors", ", ".join(f"{k} {v:.3f}" for k, v in a.get("detector_scores", {}).items())),
        ("queued", _t(r["queued_at"])),
    ]
    for key, value in rows:
        t.add_row(key, Text(value))
    out.print(t)
    for d in r["decisions"]:
        out.print(f"{_t(d['decided_at'])}  {d['decision']:<8} by {d['decided_by'] or '?'}: {d['note']}", markup=False)


def _decide(decision: str, review_id: str, note: str, by: str | None, force: bool) -> None:
    from smart_maintenance.connectors.postgres.server import PostgresSinkError

    with _store() as store:
        try:
            d = store.decide(review_id, decision, note=note, decided_by=by if by is not None else _user(),
                             force=force)
        except (PostgresSinkError, ControlError) as e:
            raise _fail(e) from None
    what = {"approve": "approved: the alarm path goes on",
            "reject": "rejected: a false positive, the asset's threshold adapts",
            "defer": "deferred: it stays in the queue (list --status open)"}[decision]
    _say(f"review {d.review_id} on {d.asset_id} {what}")


def _user() -> str:
    try:
        return getpass.getuser()
    except Exception:  # noqa: BLE001 - no login name in some containers
        return ""


def _origin() -> str:
    """The audit trail's origin of what this command logs: who ran it, never what a record says."""
    return f"cli:{_user() or '?'}"


_NOTE = typer.Option("--note", "-n", help="why: kept with the decision and learned from")
_BY = typer.Option("--by", help="who decides (default: the login name)")
_FORCE = typer.Option("--force", help="decide again on a review already approved or rejected")
_ID = typer.Argument(help="the review id (the anomaly id)")


@review_app.command("approve")
def review_approve(review_id: Annotated[str, _ID], note: Annotated[str, _NOTE] = "",
                   by: Annotated[Optional[str], _BY] = None, force: Annotated[bool, _FORCE] = False) -> None:
    """A real anomaly: continue as a confirmed one (prediction, work order, notification)."""
    _decide("approve", review_id, note, by, force)


@review_app.command("reject")
def review_reject(review_id: Annotated[str, _ID], note: Annotated[str, _NOTE] = "",
                  by: Annotated[Optional[str], _BY] = None, force: Annotated[bool, _FORCE] = False) -> None:
    """A false positive: labelled as such; the asset's threshold adapts."""
    _decide("reject", review_id, note, by, force)


@review_app.command("defer")
def review_defer(review_id: Annotated[str, _ID], note: Annotated[str, _NOTE] = "",
                 by: Annotated[Optional[str], _BY] = None, force: Annotated[bool, _FORCE] = False) -> None:
    """Not yet decidable: keep it in the queue (shown by `list --status deferred` or `open`)."""
    _decide("defer", review_id, note, by, force)


# -- log-maintenance ------------------------------------------------------------------

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
    asset: Annotated[Optional[str], typer.Option(help="the asset worked on")] = None,
    completed_at: Annotated[Optional[str], typer.Option(help="when the work ended: RFC 3339 with a zone, or now")]
    = None,
    work_order: Annotated[Optional[str], typer.Option(help="the work order it closes (default: all open ones)")]
    = None,
    outcome: Annotated[str, typer.Option(help=", ".join(OUTCOMES))] = "repaired",
    action: Annotated[str, typer.Option(help="what was done")] = "",
    notes: Annotated[str, typer.Option(help="free text: findings, cause")] = "",
    parts: Annotated[str, typer.Option(help="parts used, comma-separated")] = "",
    technician: Annotated[str, typer.Option(help="who did it")] = "",
    maintenance_id: Annotated[Optional[str], typer.Option(help="your id for the record (default: derived)")] = None,
    file: Annotated[Optional[Path], typer.Option(
        "--file", "-f", exists=True, dir_okay=False, help="records from a JSON array or JSON lines file")] = None,
) -> None:
    """Record completed maintenance: closes the work order and the alarm, re-baselines the asset's detectors.

    Repaired, replaced and adjusted re-baseline; no_fault_found marks the alarm a
    false positive; cancelled closes the work order without a repair.
    """
    from smart_maintenance.connectors.postgres.server import PostgresSinkError

    if file is not None:
        if asset is not None or completed_at is not None or work_order is not None:
            _say("give --file, or --asset and --completed-at, not both", "error: ", "red")
            raise typer.Exit(2)
        _log_file(file)
        return
    if asset is None or completed_at is None:
        _say("--asset and --completed-at are required (or --file)", "error: ", "red")
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
        raise _fail(e) from None
    with _store() as store:
        try:
            open_orders = store.open_work_orders(record.asset_id)
            new = store.log_maintenance(record)
        except PostgresSinkError as e:
            raise _fail(e) from None
    when = record.completed_at.strftime("%Y-%m-%d %H:%M:%S")
    if not new:
        _say(f"maintenance {record.maintenance_id} on {record.asset_id} at {when} UTC was already logged")
        return
    _say(f"logged maintenance {record.maintenance_id} on {record.asset_id} at {when} UTC ({record.outcome})")
    ids = [w["work_order_id"] for w in open_orders]
    if record.work_order_id:
        if record.work_order_id not in ids:
            _say(f"{record.work_order_id} is not an open work order of {record.asset_id} in the database; "
                 "the flow closes it if it knows it", "note: ", "yellow")
        else:
            _say(f"closes work order {record.work_order_id}")
    elif ids:
        _say(f"closes the open work orders of {record.asset_id} created before then: {', '.join(ids)}")
    else:
        _say(f"no open work order of {record.asset_id} in the database")


def _log_file(path: Path) -> None:
    from smart_maintenance.connectors.postgres.server import PostgresSinkError

    try:
        items = read_records(path)
    except (OSError, UnicodeDecodeError) as e:
        _say(f"cannot read {path}: {e}", "error: ", "red")
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
        with _store() as store:
            try:
                new = store.store_maintenance(good)
            except PostgresSinkError as e:
                raise _fail(e) from None
    unique = len({r.maintenance_id for r in good})
    _say(f"{path}: {len(items)} record(s): {new} logged, {unique - new} already logged, {len(bad)} bad")
    for label, reason in bad:
        _say(f"  {label}: {reason}")
    if bad:
        raise typer.Exit(1)
