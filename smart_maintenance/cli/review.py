"""`review ...`: the human review queue.

    smart-maintenance review list [--status pending|deferred|open|approved|rejected|all] [--asset X] [--limit N]
    smart-maintenance review show ID
    smart-maintenance review approve|reject|defer ID --note "..." [--by NAME] [--force]

A decision or a maintenance record is stored in PostgreSQL; a running flow
picks it up within a second (its control input), a later replay at the
event time it is about. Data goes to stdout, messages to stderr. Exit codes:
0 done, 1 a database error or bad records in a file, 2 a usage error (an
unknown review id, a review already decided, a bad value).
"""

from __future__ import annotations

import getpass
from typing import Annotated

import typer
from rich.table import Table
from rich.text import Text

from smart_maintenance.cli.common import exit_for, jsonable, loop_store, out, plain, say, when
from smart_maintenance.operators.controls import (
    ControlError,
)

__all__ = ["review_app"]

review_app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    help="The human review queue: cases of uncertain windows that need a person's judgement.",
)


@review_app.command("list")
def review_list(
    status: Annotated[str, typer.Option(help="pending, deferred, open (pending or deferred), approved, rejected, all")]
    = "pending",
    asset: Annotated[str | None, typer.Option(help="only this asset")] = None,
    limit: Annotated[int, typer.Option(min=1, help="at most this many")] = 50,
    as_json: Annotated[bool, typer.Option("--json", help="JSON lines instead of a table")] = False,
) -> None:
    """Review cases waiting for a decision (most severe first, then oldest)."""
    from smart_maintenance.connectors.postgres.server import PostgresSinkError

    with loop_store() as store:
        try:
            rows = store.list_reviews(status=status, asset_id=asset, limit=limit)
        except (PostgresSinkError, ValueError) as e:
            raise exit_for(e) from None
    if as_json:
        for r in rows:
            out.print_json(data=jsonable(r), indent=None)
        return
    t = Table(title=plain(f"review cases: {status}" + (f", asset {asset}" if asset else "") + f" ({len(rows)})"))
    t.add_column("case id", no_wrap=True)
    t.add_column("asset", no_wrap=True)
    t.add_column("windows", justify="right")
    t.add_column("first .. last window UTC", no_wrap=True)
    t.add_column("peak", justify="right")
    t.add_column("sev", justify="right")
    t.add_column("status")
    t.add_column("sensors")
    t.add_column("reasons", ratio=1)
    for r in rows:
        span = f"{when(r['window_start'])[:16]} .. {when(r['window_end'])[11:16]}"
        if r["window_end"].date() != r["window_start"].date():
            span = f"{when(r['window_start'])[:16]} .. {when(r['window_end'])[:16]}"
        t.add_row(*map(Text, (r["review_id"], r["asset_id"], str(r["window_count"]), span, f"{r['score']:.2f}",
                              str(r["severity"]), r["status"], ", ".join(map(str, r["sensors"] or [])),
                              "; ".join(map(str, r["reasons"] or [])))))
    out.print(t)
    if not rows:
        say("nothing to review" if status in ("pending", "open") else "no such review cases")


@review_app.command("show")
def review_show(
    review_id: Annotated[str, typer.Argument(help="the case id")],
    as_json: Annotated[bool, typer.Option("--json", help="the whole record as JSON")] = False,
) -> None:
    """One review case: its windows, peak window, why it was flagged, which sensors, and its decisions so far."""
    from smart_maintenance.connectors.postgres.server import PostgresSinkError
    from smart_maintenance.connectors.postgres.store import UnknownReviewError

    with loop_store() as store:
        try:
            r = store.get_review(review_id)
            if r is None:
                raise UnknownReviewError(f"no review {review_id!r} (see `smart-maintenance review list --status all`)")
        except PostgresSinkError as e:
            raise exit_for(e) from None
    if as_json:
        out.print_json(data=jsonable(r))
        return
    a = r["anomaly"]
    t = Table(title=plain(f"review case {review_id}"), show_header=False)
    t.add_column("key", style="bold")
    t.add_column("value")
    rows = [
        ("asset", r["asset_id"]),
        ("windows", f"{r['window_count']}: {when(r['window_start'])} .. {when(r['window_end'])} UTC"),
        ("peak score", f"{r['score']:.3f} (confidence {a.get('confidence', float('nan')):.2f})"),
        ("trend", " ".join(f"{s:.2f}" for _, s in r["trend"] or [])),
        ("case sensors", ", ".join(map(str, r["sensors"] or []))),
        ("severity", str(r["severity"])),
        ("status", r["status"]),
        ("reasons", "; ".join(map(str, a.get("reasons", [])))),
        ("peak sensors", ", ".join(f"{c['sensor']} {c['share']:.0%}" for c in a.get("contributions", []))),
        ("features", ", ".join(f"{c['feature']} {c['share']:.0%}" for c in a.get("features", []))),
        ("detectors", ", ".join(f"{k} {v:.3f}" for k, v in a.get("detector_scores", {}).items())),
        ("queued", when(r["queued_at"])),
    ]
    for key, value in rows:
        t.add_row(key, Text(value))
    out.print(t)
    for d in r["decisions"]:
        out.print(f"{when(d['decided_at'])}  {d['decision']:<8} by {d['decided_by'] or '?'}: {d['note']}", markup=False)


def _decide(decision: str, review_id: str, note: str, by: str | None, force: bool) -> None:
    from smart_maintenance.connectors.postgres.server import PostgresSinkError

    with loop_store() as store:
        try:
            d = store.decide(review_id, decision, note=note, decided_by=by if by is not None else _user(),
                             force=force)
        except (PostgresSinkError, ControlError) as e:
            raise exit_for(e) from None
    what = {"approve": "approved: the alarm path goes on",
            "reject": "rejected: a false positive, the asset's threshold adapts",
            "defer": "deferred: it stays in the queue (list --status open)"}[decision]
    say(f"review case {d.review_id} on {d.asset_id} {what}")


def _user() -> str:
    try:
        return getpass.getuser()
    except Exception:  # noqa: BLE001 - no login name in some containers
        return ""


_NOTE = typer.Option("--note", "-n", help="why: kept with the decision and learned from")
_BY = typer.Option("--by", help="who decides (default: the login name)")
_FORCE = typer.Option("--force", help="decide again on a case already approved or rejected")
_ID = typer.Argument(help="the case id (see review list)")


@review_app.command("approve")
def review_approve(review_id: Annotated[str, _ID], note: Annotated[str, _NOTE] = "",
                   by: Annotated[str | None, _BY] = None, force: Annotated[bool, _FORCE] = False) -> None:
    """A real anomaly: continue as a confirmed one (prediction, work order, notification)."""
    _decide("approve", review_id, note, by, force)


@review_app.command("reject")
def review_reject(review_id: Annotated[str, _ID], note: Annotated[str, _NOTE] = "",
                  by: Annotated[str | None, _BY] = None, force: Annotated[bool, _FORCE] = False) -> None:
    """A false positive: labelled as such; the asset's threshold adapts."""
    _decide("reject", review_id, note, by, force)


@review_app.command("defer")
def review_defer(review_id: Annotated[str, _ID], note: Annotated[str, _NOTE] = "",
                 by: Annotated[str | None, _BY] = None, force: Annotated[bool, _FORCE] = False) -> None:
    """Not yet decidable: keep it in the queue (shown by `list --status deferred` or `open`)."""
    _decide("defer", review_id, note, by, force)
