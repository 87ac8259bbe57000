"""Administration over the API: the keys (without their tokens) and the audit trail."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query

from smart_maintenance.api.auth import Context, ctx, require
from smart_maintenance.connectors.postgres.api_store import Principal

router = APIRouter(prefix="/api/admin", tags=["admin"])


@router.get("/keys")
def list_keys(p: Annotated[Principal, Depends(require("admin"))],
              c: Annotated[Context, Depends(ctx)]) -> list[dict[str, Any]]:
    return c.store.list_keys()


@router.get("/audit")
def audit(p: Annotated[Principal, Depends(require("admin"))], c: Annotated[Context, Depends(ctx)],
          limit: Annotated[int, Query(ge=1, le=5000)] = 200) -> list[dict[str, Any]]:
    """Who did what through the API, newest first."""
    return c.store.rows("SELECT seq, at, key_name, action, subject_id, detail FROM {s}.api_audit "
                        "ORDER BY seq DESC LIMIT %s", [limit])
