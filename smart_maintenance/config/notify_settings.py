"""Notification settings: channels, routing rules, deduplication and rate limits (owned by the notify work)."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict


class NotifySettings(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid", allow_inf_nan=False)
