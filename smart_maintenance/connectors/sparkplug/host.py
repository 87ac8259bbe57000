"""What a Sparkplug B host application knows about its edge nodes: births, aliases, sequence numbers, deaths.

Pure (no MQTT, no clock): `SparkplugHost.handle(topic, payload, receive_ms)`
turns one message into readings, dead letters and perhaps a rebirth request,
which the source then publishes.

Mapping: a device's metrics (DBIRTH/DDATA) are readings of asset `<device_id>`,
an edge node's own metrics (NBIRTH/NDATA) readings of asset `<edge_node_id>`;
the sensor is the metric's name (from the birth when the data uses aliases).
`Node Control/*`, `Device Control/*`, `Properties/*` and `bdSeq` are not sensors.

A metric's time is its own timestamp, else the payload's, else the receive
time. A metric is a dead letter, never a reading, when its `Quality` property
is not good (192; Uncertain 64 only with `accept_uncertain`), when it is null,
not numeric, or of an alias no birth declared.

Sequence numbers (0-255 per edge node, across its node and device messages):
a gap is a dead letter `sequence_gap` and a rebirth request; so is data from a
node we saw no birth of (`not_born`, e.g. after this host started).
A death (NDEATH, or DDEATH) is a dead letter `stale` per asset it silences:
their sensors are stale from then until the next birth, and nothing faulty is
emitted for them (no reading, so no window, so no detector sees a gap). An
NDEATH whose bdSeq is not the current birth's is an old session's will and is
ignored.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field

from smart_maintenance.connectors.sparkplug.codec import (
    BOOLEAN,
    NUMERIC,
    QUALITY_GOOD,
    QUALITY_UNCERTAIN,
    Metric,
    SparkplugDecodeError,
    decode_payload,
    signed,
)
from smart_maintenance.operators.records import Invalid, iso

NAMESPACE = "spBv1.0"
NOT_SENSORS = ("Node Control/", "Device Control/", "Properties/")

Row = tuple[str, str, int, float]


@dataclass
class NodeState:
    """One edge node as of its last birth."""

    born: bool = False
    bd_seq: int | None = None
    next_seq: int | None = None
    names: dict[int, str] = field(default_factory=dict)  # alias -> metric name (one alias space per node)
    types: dict[str, int] = field(default_factory=dict)  # "<device or ''>/<name>" -> datatype
    devices: set[str] = field(default_factory=set)
    last_rebirth_ms: int | None = None


@dataclass
class Handled:
    """What one message gave: readings, dead letters and the edge node to ask for a rebirth."""

    rows: list[Row] = field(default_factory=list)
    qualities: list[int] = field(default_factory=list)  # of each row: the Quality property, 192 when absent
    rejects: list[Invalid] = field(default_factory=list)
    rebirth: tuple[str, str] | None = None  # (group_id, edge_node_id)


def rebirth_topic(group_id: str, edge_node_id: str) -> str:
    return f"{NAMESPACE}/{group_id}/NCMD/{edge_node_id}"


class SparkplugHost:
    """Per edge node state and the rules above; `rebirth_min_interval_ms` throttles requests per node."""

    def __init__(self, *, accept_uncertain: bool = False, rebirth: bool = True,
                 rebirth_min_interval_ms: int = 5_000) -> None:
        self.accept_uncertain = accept_uncertain
        self.rebirth = rebirth
        self.rebirth_min_interval_ms = rebirth_min_interval_ms
        self.nodes: dict[tuple[str, str], NodeState] = {}

    def handle(self, topic: str, payload: bytes, receive_ms: int) -> Handled:
        out = Handled()
        origin = f"sparkplug:{topic}"
        parts = topic.split("/")
        if len(parts) not in (4, 5) or parts[0] != NAMESPACE:
            if not (len(parts) >= 2 and parts[:2] == [NAMESPACE, "STATE"]):
                out.rejects.append(Invalid("bad_topic", "not spBv1.0/<group>/<type>/<node>[/<device>]",
                                           _raw(payload), origin))
            return out
        group, kind, node_id = parts[1], parts[2], parts[3]
        device = parts[4] if len(parts) == 5 else None
        if kind in ("NCMD", "DCMD"):
            return out  # commands to the edge (ours among them)
        known = kind in ("NBIRTH", "NDEATH", "DBIRTH", "DDEATH", "NDATA", "DDATA")
        if not known or (device is None) != kind.startswith("N"):
            out.rejects.append(Invalid("bad_topic", f"unknown Sparkplug message type {kind!r}", _raw(payload), origin))
            return out
        try:
            msg = decode_payload(payload)
        except SparkplugDecodeError as e:
            out.rejects.append(Invalid("bad_payload", str(e), _raw(payload), origin))
            return out
        key = (group, node_id)
        node = self.nodes.get(key)
        ts_default = msg.timestamp if msg.timestamp is not None else receive_ms

        if kind == "NDEATH":
            bd = _bd_seq(msg.metrics)
            if node is None or not node.born or (bd is not None and node.bd_seq is not None and bd != node.bd_seq):
                return out  # the will of a session we already replaced, or of one we never saw born
            node.born = False
            for asset in [node_id, *sorted(node.devices)]:
                out.rejects.append(_stale(asset, f"edge node {group}/{node_id} died", ts_default, origin))
            node.devices.clear()
            return out

        if kind == "NBIRTH":
            node = self.nodes[key] = NodeState(born=True, bd_seq=_bd_seq(msg.metrics),
                                               last_rebirth_ms=node.last_rebirth_ms if node else None)
            node.next_seq = ((msg.seq or 0) + 1) % 256
            self._learn(node, "", msg.metrics)
            self._readings(out, node, node_id, "", msg.metrics, ts_default, origin)
            return out

        if node is None or not node.born:
            node = self.nodes.setdefault(key, NodeState())
            out.rejects.append(Invalid("not_born", f"{kind} from edge node {group}/{node_id} before its NBIRTH",
                                       _raw(payload), origin))
            self._ask_rebirth(out, node, key, receive_ms)
            return out

        if msg.seq is not None and node.next_seq is not None and msg.seq != node.next_seq:
            out.rejects.append(Invalid("sequence_gap", f"expected seq {node.next_seq}, got {msg.seq}: messages lost",
                                       json.dumps({"seq": msg.seq, "expected": node.next_seq}), origin))
            self._ask_rebirth(out, node, key, receive_ms)
        if msg.seq is not None:
            node.next_seq = (msg.seq + 1) % 256

        assert device is not None or kind == "NDATA"  # noqa: S101 - checked with the topic above
        if kind == "DDEATH":
            node.devices.discard(device or "")
            out.rejects.append(_stale(device or "", f"device {group}/{node_id}/{device} died", ts_default, origin))
            return out
        if kind == "DBIRTH":
            node.devices.add(device or "")
            self._learn(node, device or "", msg.metrics)
        elif kind == "DDATA" and device not in node.devices:
            out.rejects.append(Invalid("not_born", f"DDATA from device {device!r} before its DBIRTH",
                                       _raw(payload), origin))
            self._ask_rebirth(out, node, key, receive_ms)
            return out
        asset = device if device is not None else node_id
        self._readings(out, node, asset, device or "", msg.metrics, ts_default, origin)
        return out

    # -- helpers -----------------------------------------------------------------------------
    @staticmethod
    def _learn(node: NodeState, device: str, metrics: tuple[Metric, ...]) -> None:
        for m in metrics:
            if m.name is None:
                continue
            if m.alias is not None:
                node.names[m.alias] = m.name
            if m.datatype is not None:
                node.types[f"{device}/{m.name}"] = m.datatype

    def _readings(self, out: Handled, node: NodeState, asset: str, device: str, metrics: tuple[Metric, ...],
                  ts_default: int, origin: str) -> None:
        for m in metrics:
            name = m.name if m.name is not None else node.names.get(m.alias) if m.alias is not None else None
            ts = m.timestamp if m.timestamp is not None else ts_default
            if name is None:
                out.rejects.append(Invalid("unknown_alias", f"metric alias {m.alias} was not in a birth",
                                           _metric_raw(asset, None, m, ts), origin))
                continue
            if name == "bdSeq" or name.startswith(NOT_SENSORS):
                continue
            datatype = m.datatype if m.datatype is not None else node.types.get(f"{device}/{name}")
            quality = m.quality
            if quality is not None and quality != QUALITY_GOOD and not (
                    quality == QUALITY_UNCERTAIN and self.accept_uncertain):
                out.rejects.append(Invalid("bad_quality", f"quality {quality} (192 is good)",
                                           _metric_raw(asset, name, m, ts), origin))
            elif m.is_null:
                out.rejects.append(Invalid("null_value", "the metric is null", _metric_raw(asset, name, m, ts), origin))
            elif datatype not in NUMERIC or m.value is None or isinstance(m.value, str):
                out.rejects.append(Invalid("not_numeric", f"datatype {datatype} is not a number",
                                           _metric_raw(asset, name, m, ts), origin))
            else:
                value = m.value
                if isinstance(value, int) and not isinstance(value, bool) and datatype != BOOLEAN:
                    value = signed(value, datatype)
                out.rows.append((asset, name, int(ts), float(value)))
                out.qualities.append(QUALITY_GOOD if quality is None else quality)

    def _ask_rebirth(self, out: Handled, node: NodeState, key: tuple[str, str], now_ms: int) -> None:
        if not self.rebirth:
            return
        if node.last_rebirth_ms is not None and now_ms - node.last_rebirth_ms < self.rebirth_min_interval_ms:
            return
        node.last_rebirth_ms = now_ms
        out.rebirth = key


def _bd_seq(metrics: tuple[Metric, ...]) -> int | None:
    for m in metrics:
        if m.name == "bdSeq" and isinstance(m.value, int):
            return m.value
    return None


def _stale(asset: str, why: str, ts: int, origin: str) -> Invalid:
    raw = json.dumps({"asset_id": asset, "stale_since": iso(ts)})
    return Invalid("stale", f"{why}: the sensors of {asset!r} are stale until its next birth", raw, origin)


def _metric_raw(asset: str, name: str | None, m: Metric, ts: int) -> str:
    value = m.value if not isinstance(m.value, bytes) else m.value.hex()
    return json.dumps({"asset_id": asset, "sensor": name, "alias": m.alias, "ts": ts, "value": value,
                       "quality": m.quality, "datatype": m.datatype})


def _raw(payload: bytes) -> str:
    return payload[:512].hex()
