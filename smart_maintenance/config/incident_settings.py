"""Incident memory settings: ChromaDB location, embedding model, retrieval (owned by the incident-memory work)."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict


class IncidentSettings(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid", allow_inf_nan=False)
