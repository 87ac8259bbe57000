"""Who may send a control: HMAC-SHA256 signatures on maintenance messages.

A maintenance message from Kafka closes work orders, clears alarms and
re-baselines an asset, so it is accepted only when it carries a valid
signature made with one of the keys in `kafka.maintenance_keys`. The
signature travels in two message headers:

    sm-key-id:    the key's id (a name in kafka.maintenance_keys)
    sm-signature: "sha256=" + hex(HMAC-SHA256(key, message value bytes))

Guarantees
    The MAC covers the exact bytes of the value, so any change to the record
    breaks it; comparison is constant-time (`hmac.compare_digest`). The
    verified origin (topic and key id) is what the audit trail records: no
    field of the payload can name its own origin.

Errors
    `verify` returns a `Rejected(reason, detail)` value, never raises:
    `unsigned_control` (no signature header), `unknown_key` (a key id that
    is not configured), `bad_signature` (malformed or wrong).

    >>> sig = sign(b"k" * 32, b'{"asset_id": "p1"}')
    >>> sig[:7]
    'sha256='
    >>> verify({"ops": b"k" * 32}, [("sm-key-id", b"ops"), ("sm-signature", sig.encode())], b'{"asset_id": "p1"}')
    'ops'
    >>> verify({"ops": b"k" * 32}, [], b"{}").reason
    'unsigned_control'
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

__all__ = ["KEY_ID_HEADER", "SIGNATURE_HEADER", "Rejected", "sign", "verify"]

KEY_ID_HEADER = "sm-key-id"
SIGNATURE_HEADER = "sm-signature"
_PREFIX = "sha256="
_MAX_HEADER = 256  # a key id or signature longer than this is not one of ours: no need to read it


@dataclass(frozen=True, slots=True)
class Rejected:
    """Why a control was not accepted: a dead-letter reason and a detail fit for logs."""

    reason: str
    detail: str


def sign(key: bytes, value: bytes) -> str:
    """The `sm-signature` header value for a message value."""
    return _PREFIX + hmac.new(key, value, hashlib.sha256).hexdigest()


def _header(headers: Sequence[tuple[str, bytes | str | None]] | None, name: str) -> str | None:
    """The last value of a header as text (None when absent or not short printable ASCII)."""
    found: str | None = None
    for key, value in headers or ():
        if key != name:
            continue
        raw = value.encode() if isinstance(value, str) else (value or b"")
        if len(raw) > _MAX_HEADER or not raw.isascii():
            return ""
        found = raw.decode("ascii").strip()
    return found


def verify(keys: Mapping[str, bytes], headers: Sequence[tuple[str, bytes | str | None]] | None,
           value: bytes | None) -> str | Rejected:
    """The id of the key that signed `value`, or why the message is rejected."""
    signature = _header(headers, SIGNATURE_HEADER)
    if not signature:
        return Rejected("unsigned_control", f"no {SIGNATURE_HEADER} header: maintenance messages must be signed")
    key_id = _header(headers, KEY_ID_HEADER)
    if not key_id:
        return Rejected("bad_signature", f"no {KEY_ID_HEADER} header naming the signing key")
    key = keys.get(key_id)
    if key is None:
        return Rejected("unknown_key", f"key id {key_id[:64]!r} is not in kafka.maintenance_keys")
    if not signature.startswith(_PREFIX):
        return Rejected("bad_signature", f"{SIGNATURE_HEADER} must start with {_PREFIX!r}")
    if not hmac.compare_digest(signature.encode("ascii"), sign(key, value or b"").encode("ascii")):
        return Rejected("bad_signature", f"signature does not match the message for key {key_id!r}")
    return key_id
