"""Review cases: list, show, decide (the decision reaches the running flow as the CLI's does)."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, HTTPException, Query, Request
from fastapi.responses import Response
from pydantic import BaseModel, Field

from smart_maintenance.api.auth import Context, cached, ctx, require
from smart_maintenance.connectors.postgres import api_reads
from smart_maintenance.connectors.postgres.api_store import Principal
from smart_maintenance.connectors.postgres.store import ReviewClosedError, UnknownReviewError

router = APIRouter(prefix="/api/cases", tags=["cases"])
Ctx = Annotated[Context, Depends(ctx)]


class Decision(BaseModel):
    decision: Literal["approve", "reject", "defer"]
    note: str = Field(default="", max_length=4000)
    force: bool = False  # decide again on a case already approved or rejected


@router.get("")
async def list_cases(request: Request, p: Annotated[Principal, Depends(require("read"))], c: Ctx, status: str = "open",
               asset: str | None = None, limit: Annotated[int, Query(ge=1, le=2000)] = 200) -> Response:
    """Review cases: `open` (pending or deferred), `pending`, `deferred`, `approved`, `rejected`, `all`."""
    if status not in api_reads.CASE_STATUSES:
        raise HTTPException(422, f"status must be one of {', '.join(api_reads.CASE_STATUSES)}")
    return await cached(request, c, p, lambda: api_reads.cases(c.store, c.visible(p), status, asset, limit))


@router.get("/{case_id}")
async def get_case(request: Request, case_id: str, p: Annotated[Principal, Depends(require("read"))],
                   c: Ctx) -> Response:
    """One case with its peak window's anomaly and its decisions."""
    return await cached(request, c, p, lambda: _case(c, p, case_id))


def _case(c: Context, p: Principal, case_id: str) -> dict[str, Any]:
    found = api_reads.case(c.store, c.visible(p), case_id)
    if found is None:
        raise HTTPException(404, f"no case {case_id!r}")
    return found


@router.post("/{case_id}/decision")
def decide_case(case_id: str, body: Decision, p: Annotated[Principal, Depends(require("review"))],
                c: Ctx) -> dict[str, Any]:
    """Decide a whole case; audited with the key's name, which is also the decision's `decided_by`."""
    if api_reads.case(c.store, c.visible(p), case_id) is None:
        raise HTTPException(404, f"no case {case_id!r}")
    with c.loop_store() as loop:
        try:
            d = loop.decide(case_id, body.decision, note=body.note, decided_by=p.name, force=body.force)
        except UnknownReviewError as e:
            raise HTTPException(404, str(e)) from None
        except ReviewClosedError as e:
            raise HTTPException(409, str(e)) from None
    c.store.audit(p.name, f"case_{body.decision}", case_id, {"note": body.note, "control_id": d.control_id})
    return {"case_id": case_id, "decision": d.decision, "decided_by": d.decided_by, "control_id": d.control_id}
