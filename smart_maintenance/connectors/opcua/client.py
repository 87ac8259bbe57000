"""The asyncua client of the OPC UA source: a connection from `[opcua]` (security policy, certificates,
user, reconnect backoff) and the variables to subscribe to (node ids, browse-path patterns).

Reconnecting is asyncua's own supervisor (`auto_reconnect`): on a lost
connection it retries with exponential backoff up to `reconnect_max_s` and
re-creates the subscriptions. The first connection is ours, retried until
`connect_timeout_s`, so that a wrong endpoint or certificate fails the start
with the real reason. The password is never logged.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass

from asyncua import ua
from asyncua.client.client import Client
from asyncua.common.node import Node
from asyncua.ua.status_codes import StatusCodes
from asyncua.ua.uaerrors import UaError, UaStatusCodeError

from smart_maintenance.config.settings import OpcUaSettings

CAPTURES = ("{asset_id}", "{sensor}")


class OpcUaSourceError(Exception):
    """The OPC UA server could not be reached, refused us, lacks a configured variable, or the client failed."""


@dataclass(frozen=True)
class Subscribed:
    """One variable the source reads, and the sensor it is."""

    node: Node
    asset_id: str
    sensor: str


def check_pattern(pattern: str) -> list[str]:
    """The levels of a browse-path pattern; `ValueError` unless it captures both asset_id and sensor once.

    >>> check_pattern("Plant/{asset_id}/*/{sensor}")
    ['Plant', '{asset_id}', '*', '{sensor}']
    """
    levels = pattern.strip("/").split("/")
    for capture in CAPTURES:
        if levels.count(capture) != 1:
            raise ValueError(f"browse pattern {pattern!r} must contain {capture} exactly once as a whole level")
    if any(not lv for lv in levels):
        raise ValueError(f"browse pattern {pattern!r} has an empty level")
    return levels


async def connect(settings: OpcUaSettings) -> Client:
    """A connected client with the settings' security and user; retried until `connect_timeout_s`."""
    deadline = time.monotonic() + settings.connect_timeout_s
    delay = 0.1
    while True:
        client = Client(settings.endpoint, timeout=settings.timeout_s, auto_reconnect=True,
                        reconnect_max_delay=settings.reconnect_max_s)
        try:
            if settings.username is not None:
                client.set_user(settings.username)
                if settings.password is not None:
                    client.set_password(settings.password.get_secret_value())
            if settings.security_policy != "None":
                parts = [settings.security_policy, settings.security_mode, str(settings.certificate),
                         str(settings.private_key)]
                if settings.server_certificate is not None:
                    parts.append(str(settings.server_certificate))
                await client.set_security_string(",".join(parts))
            await client.connect()
            return client
        except (OSError, TimeoutError, UaError) as e:
            left = deadline - time.monotonic()
            fatal = isinstance(e, UaStatusCodeError) and e.code in _FATAL
            if fatal or left <= 0:
                raise OpcUaSourceError(f"cannot connect to OPC UA server {settings.endpoint}: "
                                       f"{type(e).__name__}: {e}") from e
            await asyncio.sleep(min(delay, left))
            delay = min(delay * 2, 2.0)


_FATAL = {StatusCodes.BadUserAccessDenied, StatusCodes.BadIdentityTokenInvalid,
          StatusCodes.BadIdentityTokenRejected, StatusCodes.BadCertificateInvalid,
          StatusCodes.BadSecurityPolicyRejected}
"""Refusals that retrying cannot fix."""


async def resolve(client: Client, settings: OpcUaSettings) -> list[Subscribed]:
    """The configured node ids (each must exist) and every variable a browse pattern matches."""
    out: list[Subscribed] = []
    for n in settings.nodes:
        node = client.get_node(n.node_id)
        try:
            await node.read_browse_name()
        except UaStatusCodeError as e:
            raise OpcUaSourceError(f"OPC UA node {n.node_id} ({n.asset_id}/{n.sensor}): {e}") from e
        out.append(Subscribed(node, n.asset_id, n.sensor))
    for pattern in settings.browse:
        matched = await _browse(client.nodes.objects, check_pattern(pattern), {})
        if not matched:
            raise OpcUaSourceError(f"OPC UA browse pattern {pattern!r} matches no variable under Objects")
        out.extend(matched)
    seen: set[str] = set()
    unique = []
    for s in out:  # a variable named twice (by id and by a pattern) is read once, the first mapping wins
        key = s.node.nodeid.to_string()
        if key not in seen:
            seen.add(key)
            unique.append(s)
    return unique


async def _browse(node: Node, levels: list[str], captured: dict[str, str]) -> list[Subscribed]:
    if not levels:
        if await node.read_node_class() != ua.NodeClass.Variable:
            return []
        return [Subscribed(node, captured["{asset_id}"], captured["{sensor}"])]
    level, rest = levels[0], levels[1:]
    out: list[Subscribed] = []
    for child in await node.get_children():
        name = (await child.read_browse_name()).Name
        if level in CAPTURES:
            out.extend(await _browse(child, rest, {**captured, level: name}))
        elif level == "*" or level == name:
            out.extend(await _browse(child, rest, captured))
    return out
