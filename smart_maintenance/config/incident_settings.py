"""Incident memory settings: ChromaDB location, embedding model, retrieval (owned by the incident-memory work)."""

from __future__ import annotations

from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field, field_validator


class IncidentSettings(BaseModel):
    """Where past incidents are kept and how they are searched (see docs/incidents.md)."""

    model_config = ConfigDict(frozen=True, extra="forbid", allow_inf_nan=False)

    enabled: bool = Field(
        default=True, description="attach similar past incidents to new work orders, index closed ones"
    )
    chroma_url: str | None = Field(
        default=None,
        description="ChromaDB server, e.g. http://chroma:8000; unset = embedded store in data_dir/chroma",
    )
    collection: str = Field(
        default="incidents",
        pattern=r"^[a-zA-Z0-9][a-zA-Z0-9._-]{1,61}[a-zA-Z0-9]$",
        description="ChromaDB collection name",
    )
    top_k: int = Field(default=3, ge=1, le=50, description="similar incidents carried by each new work order")
    model_path: Path | None = Field(
        default=None, description="sentence-transformers model folder; unset = the bundled all-MiniLM-L6-v2"
    )
    batch_size: int = Field(default=64, ge=1, le=4096, description="sentences per embedding batch")
    sensor_bonus: float = Field(
        default=0.15, ge=0, le=1, description="similarity added for a past incident with the same alarm sensors"
    )
    diversity: float = Field(
        default=0.3, ge=0, lt=1,
        description="0 = plain similarity order; more = the top k show different fixes, not near-copies of one",
    )
    filter_asset_type: bool = Field(
        default=True,
        description="search incidents of the work order's asset type first, the whole memory when too few match",
    )

    @field_validator("model_path", mode="after")
    @classmethod
    def _expand(cls, p: Path | None) -> Path | None:
        return p.expanduser() if p is not None else None

    @field_validator("chroma_url", mode="after")
    @classmethod
    def _url(cls, v: str | None) -> str | None:
        if v is None or not v.strip():
            return None
        v = v.strip()
        if not v.startswith(("http://", "https://")):
            raise ValueError("chroma_url must start with http:// or https://")  # never echo it: it may hold a secret
        if "@" in v.split("://", 1)[1].split("/", 1)[0]:
            raise ValueError("chroma_url must not carry credentials (user:password@): they would be shown in logs "
                             "and the ChromaDB client does not use them")
        return v
