"""The `[cmms]` section: pushing work orders to a maintenance system's REST API, and reading completions back.

Secrets come from the environment, e.g. `SMART_MAINTENANCE__CMMS__AUTH__TOKEN=...`. Mappings and URL
templates are checked when the settings load: a typo in a field name fails the start, not the first push.
See docs/cmms.md.
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import fields
from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlsplit

from pydantic import BaseModel, ConfigDict, Field, SecretStr, field_validator, model_validator

from smart_maintenance.operators.cmms import MappingError, check_path, compile_mapping
from smart_maintenance.operators.plan.work_orders import WorkOrder

WORK_ORDER_FIELDS = tuple(f.name for f in fields(WorkOrder))
_HEADER = r"^[A-Za-z0-9!#$%&'*+.^_`|~-]{1,64}$"


def _check_headers(v: dict[str, str]) -> dict[str, str]:
    for name, value in v.items():
        if not re.match(_HEADER, name) or any(c in value for c in "\r\n\0"):
            raise ValueError(f"bad header {name!r}")
        if name.lower() in ("authorization", "idempotency-key", "content-type", "host", "content-length"):
            raise ValueError(f"header {name} is set by the connector (credentials: cmms.auth)")
    return v


class _Section(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid", allow_inf_nan=False, hide_input_in_errors=True)


class CmmsAuth(_Section):
    kind: Literal["none", "bearer", "basic", "api_key"] = "none"
    token: SecretStr | None = Field(default=None, description="bearer token, or the API key of kind api_key")
    username: str | None = Field(default=None, description="basic auth user")
    password: SecretStr | None = Field(default=None, description="basic auth password")
    header: str = Field(default="X-API-Key", pattern=_HEADER, description="the API key's header (Maximo: apikey)")

    @model_validator(mode="after")
    def _complete(self) -> CmmsAuth:
        if self.kind in ("bearer", "api_key") and self.token is None:
            raise ValueError(f"cmms.auth kind {self.kind!r} needs cmms.auth.token")
        if self.kind == "basic" and (self.username is None or self.password is None):
            raise ValueError("cmms.auth kind 'basic' needs cmms.auth.username and cmms.auth.password")
        return self


class CmmsEndpoint(_Section):
    method: Literal["POST", "PUT", "PATCH"] = "POST"
    path: str = Field(default="/workorders",
                      description="path after base_url, a template of work-order fields: /wo/{{ work_order_id }}")
    headers: dict[str, str] = Field(default={}, description="extra headers of this endpoint (x-method-override)")

    _headers = field_validator("headers")(lambda v: _check_headers(v))

    @field_validator("path")
    @classmethod
    def _path(cls, v: str) -> str:
        if not v.startswith("/"):
            raise ValueError("a path starts with /")
        try:
            check_path(v, WORK_ORDER_FIELDS)
        except MappingError as e:
            raise ValueError(str(e)) from None
        return v


class CmmsRetry(_Section):
    attempts: int = Field(default=5, ge=1, le=20, description="tries per request on 5xx, 429 and timeouts")
    initial_backoff_s: float = Field(default=0.5, ge=0)
    max_backoff_s: float = Field(default=30.0, ge=0)
    max_retry_after_s: float = Field(default=120.0, ge=0, description="a longer Retry-After is capped to this")
    max_total_s: float = Field(default=300.0, gt=0, description="give up on a work order after this long")


DEFAULT_MAPPING: dict[str, Any] = {
    "id": "{{ work_order_id }}", "asset": "{{ asset_id }}", "status": "{{ status }}", "priority": "{{ priority }}",
    "kind": "{{ kind }}", "description": "{{ reason }}", "due": "{{ due_at }}", "created": "{{ created_at }}",
    "technician": "{{ technician_id }}", "scheduled_start": "{{ scheduled_start }}", "revision": "{{ revision }}",
}
DEFAULT_COMPLETION_MAPPING: dict[str, Any] = {
    "work_order_id": "{{ id }}", "asset_id": "{{ asset }}", "completed_at": "{{ completed_at }}",
    "outcome": "{{ outcome }}", "action": "{{ action }}", "notes": "{{ notes }}", "technician_id": "{{ technician }}",
    "status": "{{ status }}",
}


class CmmsCompletions(_Section):
    path: str | None = Field(default=None, description="GET this (after base_url) for completed work; unset = off")
    items_path: str = Field(default="", description="where the list is in the answer (member, d.results); '' = top")
    mapping: dict[str, Any] = Field(default=DEFAULT_COMPLETION_MAPPING,
                                    description="maintenance-log field -> template over one item of the answer")
    done_statuses: tuple[str, ...] = Field(default=("done", "cancelled"),
                                           description="items whose mapped status is not one of these are skipped")
    poll_s: float = Field(default=60.0, gt=0, description="live: how often to ask")

    @field_validator("path")
    @classmethod
    def _path(cls, v: str | None) -> str | None:
        if v is not None and not v.startswith("/"):
            raise ValueError("a path starts with /")
        return v

    @model_validator(mode="after")
    def _mapping(self) -> CmmsCompletions:
        try:
            compile_mapping(self.mapping)
        except MappingError as e:
            raise ValueError(f"cmms.completions: {e}") from None
        missing = {"work_order_id", "asset_id", "completed_at"} - set(self.mapping)
        if missing:
            raise ValueError(f"cmms.completions.mapping must give {', '.join(sorted(missing))}")
        if self.done_statuses and "status" not in self.mapping:
            raise ValueError("cmms.completions.done_statuses needs a status in the mapping (or set it to [])")
        return self


class CmmsSettings(_Section):
    enabled: bool = Field(default=False, description="push work orders to the CMMS (and read completions back)")
    base_url: str | None = Field(default=None, description="https://cmms.example/api (no trailing path template)")
    create: CmmsEndpoint = CmmsEndpoint(method="POST", path="/workorders")
    update: CmmsEndpoint = CmmsEndpoint(method="PUT", path="/workorders/{{ work_order_id }}")
    create_on_missing: bool = Field(default=True, description="an update answered 404 is sent as a create")
    mapping: dict[str, Any] = Field(default=DEFAULT_MAPPING, description="CMMS field -> work-order field/template")
    headers: dict[str, str] = Field(default={}, description="extra headers on every request (not for secrets)")
    auth: CmmsAuth = CmmsAuth()
    ca_file: Path | None = Field(default=None, description="CA bundle to verify the server; unset = system CAs")
    connect_timeout_s: float = Field(default=5.0, gt=0)
    timeout_s: float = Field(default=15.0, gt=0, description="read/write timeout of one request")
    retry: CmmsRetry = CmmsRetry()
    max_answer_bytes: int = Field(default=16 * 2**20, ge=1024, description="a larger answer is refused")
    queue_size: int = Field(default=1_000, ge=1, description="work orders waiting per worker; beyond: dead letters")
    drain_timeout_s: float = Field(default=30.0, ge=0, description="at shutdown, wait this long for queued pushes")
    completions: CmmsCompletions = CmmsCompletions()

    @field_validator("base_url")
    @classmethod
    def _url(cls, v: str | None) -> str | None:
        if v is None:
            return v
        parts = urlsplit(v)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError("cmms.base_url must be an http:// or https:// URL with a host")
        if parts.username or parts.password or parts.query or parts.fragment:
            raise ValueError("cmms.base_url takes no credentials, query or fragment (use cmms.auth)")
        return v.rstrip("/")

    _headers = field_validator("headers")(lambda v: _check_headers(v))

    @model_validator(mode="after")
    def _usable(self) -> CmmsSettings:
        try:
            compile_mapping(self.mapping, WORK_ORDER_FIELDS)
        except MappingError as e:
            raise ValueError(f"cmms: {e}") from None
        if self.enabled and self.base_url is None:
            raise ValueError("cmms.enabled needs cmms.base_url")
        return self

    @property
    def host(self) -> str:
        """The CMMS's host name, the origin of what is read back (`cmms:<host>`)."""
        return urlsplit(self.base_url or "").hostname or "?"

    def plaintext_problem(self) -> str | None:
        """Why credentials would cross the network unencrypted, or None (https, no auth, or a loopback host)."""
        if not self.enabled or self.auth.kind == "none" or self.base_url is None:
            return None
        parts = urlsplit(self.base_url)
        if parts.scheme == "https" or _loopback(parts.hostname or ""):
            return None
        return f"cmms sends {self.auth.kind} credentials over http:// to {parts.hostname} (use https)"


def _loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False
