"""Quarantine of unknown assets: learned and alarmed, but no work orders and no pages until admitted (pure).

An asset is *admitted* when the asset registry lists it or a person admitted
it (`smart-maintenance assets admit ID`). Any other asset id, which anyone
who can publish a reading can invent, is *quarantined*: its readings are
stored and learned from and its alarms are raised, but it creates no work
order, and its notifications are recorded as `suppressed` (reason
`quarantine: ...`) instead of being delivered. `quarantine_unknown_assets =
false` switches the policy off (every asset is admitted).

    >>> from datetime import datetime, timezone
    >>> from smart_maintenance.operators.notify import Notification
    >>> t = datetime(2026, 1, 5, tzinfo=timezone.utc)
    >>> n = Notification("n1", "email", "alarm_opened", "pump-99", "a1", 4, "s", t, "t", "b", {})
    >>> quarantine_notification(n, admitted=False).status
    'suppressed'
    >>> quarantine_notification(n, admitted=True) is n
    True
"""

from __future__ import annotations

from dataclasses import replace

from smart_maintenance.operators.notify import Notification

__all__ = ["quarantine_notification", "quarantine_reason"]


def quarantine_reason(asset_id: str) -> str:
    return (f"quarantine: asset {asset_id[:128]!r} is neither in the registry nor admitted "
            "(smart-maintenance assets admit ID)")


def quarantine_notification(n: Notification, *, admitted: bool) -> Notification:
    """`n` itself for an admitted asset; else `n` suppressed with the quarantine as its reason."""
    if admitted or n.status != "pending":
        return n
    return replace(n, status="suppressed", reason=quarantine_reason(n.asset_id))
