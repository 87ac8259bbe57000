"""Sparkplug B payloads (Eclipse Tahu `sparkplug_b.proto`) encoded and decoded with `protobuf`.

The schema is built at import from the spec's field numbers (Payload, Metric,
PropertySet, PropertyValue; DataSet, Template and extensions are left as
unknown fields, which protobuf skips), so no generated `_pb2` file and no
client library is needed. `tests/unit/test_sparkplug.py` decodes payloads that
`pysparkplug` 0.6.1 encoded, to prove the field numbers.

    >>> m = Metric(name="temp", alias=3, timestamp=1_700_000_000_000, datatype=DOUBLE, value=21.5)
    >>> p = decode_payload(encode_payload(Payload(timestamp=1_700_000_000_000, seq=4, metrics=(m,))))
    >>> (p.seq, p.metrics[0].name, p.metrics[0].value, p.metrics[0].quality)
    (4, 'temp', 21.5, None)
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from google.protobuf import descriptor_pb2, descriptor_pool, message_factory
from google.protobuf.message import DecodeError

# Sparkplug B data types (spec 6.4.16)
INT8, INT16, INT32, INT64, UINT8, UINT16, UINT32, UINT64 = 1, 2, 3, 4, 5, 6, 7, 8
FLOAT, DOUBLE, BOOLEAN, STRING, DATETIME, TEXT = 9, 10, 11, 12, 13, 14
NUMERIC = frozenset({INT8, INT16, INT32, INT64, UINT8, UINT16, UINT32, UINT64, FLOAT, DOUBLE, BOOLEAN})
_SIGNED_BITS = {INT8: 8, INT16: 16, INT32: 32, INT64: 64}

QUALITY_BAD, QUALITY_UNCERTAIN, QUALITY_GOOD = 0, 64, 192
"""The `Quality` metric property (Ignition's convention, used by most edge nodes): 192 good."""


class SparkplugDecodeError(ValueError):
    """The bytes are not a Sparkplug B payload."""


def _schema() -> dict[str, Any]:
    F = descriptor_pb2.FieldDescriptorProto
    opt, rep = F.LABEL_OPTIONAL, F.LABEL_REPEATED
    fd = descriptor_pb2.FileDescriptorProto(name="smart_maintenance_sparkplug_b.proto",
                                            package="org.eclipse.tahu.protobuf", syntax="proto2")

    def message(name: str, fields: list[tuple[str, int, int, int, str | None]]) -> None:
        m = fd.message_type.add(name=name)
        for fname, number, ftype, label, tname in fields:
            f = m.field.add(name=fname, number=number, type=ftype, label=label)
            if tname:
                f.type_name = f".org.eclipse.tahu.protobuf.{tname}"

    U32, U64, B, S, FL, D, BY, MSG = (F.TYPE_UINT32, F.TYPE_UINT64, F.TYPE_BOOL, F.TYPE_STRING, F.TYPE_FLOAT,
                                     F.TYPE_DOUBLE, F.TYPE_BYTES, F.TYPE_MESSAGE)
    message("PropertyValue", [("type", 1, U32, opt, None), ("is_null", 2, B, opt, None),
                              ("int_value", 3, U32, opt, None), ("long_value", 4, U64, opt, None),
                              ("float_value", 5, FL, opt, None), ("double_value", 6, D, opt, None),
                              ("boolean_value", 7, B, opt, None), ("string_value", 8, S, opt, None)])
    message("PropertySet", [("keys", 1, S, rep, None), ("values", 2, MSG, rep, "PropertyValue")])
    message("Metric", [("name", 1, S, opt, None), ("alias", 2, U64, opt, None), ("timestamp", 3, U64, opt, None),
                       ("datatype", 4, U32, opt, None), ("is_historical", 5, B, opt, None),
                       ("is_transient", 6, B, opt, None), ("is_null", 7, B, opt, None),
                       ("properties", 9, MSG, opt, "PropertySet"),
                       ("int_value", 10, U32, opt, None), ("long_value", 11, U64, opt, None),
                       ("float_value", 12, FL, opt, None), ("double_value", 13, D, opt, None),
                       ("boolean_value", 14, B, opt, None), ("string_value", 15, S, opt, None),
                       ("bytes_value", 16, BY, opt, None)])
    message("Payload", [("timestamp", 1, U64, opt, None), ("metrics", 2, MSG, rep, "Metric"),
                        ("seq", 3, U64, opt, None), ("uuid", 4, S, opt, None), ("body", 5, BY, opt, None)])
    pool = descriptor_pool.DescriptorPool()
    pool.Add(fd)
    return {n: message_factory.GetMessageClass(pool.FindMessageTypeByName(f"org.eclipse.tahu.protobuf.{n}"))
            for n in ("Payload", "Metric", "PropertyValue")}


_PB = _schema()


@dataclass(frozen=True, slots=True)
class Metric:
    """One metric of a payload; `value` is None when the metric is null or of a type we do not read."""

    name: str | None = None
    alias: int | None = None
    timestamp: int | None = None  # epoch ms
    datatype: int | None = None
    value: float | int | bool | str | None = None
    is_null: bool = False
    quality: int | None = None  # the `Quality` property, None when absent
    is_historical: bool = False


@dataclass(frozen=True, slots=True)
class Payload:
    timestamp: int | None = None
    seq: int | None = None
    metrics: tuple[Metric, ...] = ()


def signed(raw: int, datatype: int | None) -> int:
    """Sparkplug carries signed integers in unsigned fields (two's complement of their width).

    DATA messages may leave the datatype out: the host applies the one from the birth.

    >>> signed(65524, INT16), signed(65524, UINT16), signed(4294967284, INT16)
    (-12, 65524, -12)
    """
    bits = _SIGNED_BITS.get(datatype) if datatype is not None else None
    if bits is None or raw < 1 << (bits - 1):
        return raw
    for width in (bits, 32, 64):  # some edge nodes sign-extend small types to the field's 32 or 64 bits
        if raw < 1 << width:
            return raw - (1 << width) if raw >= 1 << (width - 1) else raw
    return raw


_VALUE_FIELDS = frozenset({"double_value", "float_value", "long_value", "int_value", "boolean_value", "string_value"})


def decode_payload(data: bytes) -> Payload:
    """A Sparkplug B payload's timestamp, sequence number and metrics; `SparkplugDecodeError` if not one."""
    pb = _PB["Payload"]()
    try:
        pb.ParseFromString(data)
    except DecodeError as e:
        raise SparkplugDecodeError(f"not a Sparkplug B payload: {e}") from e
    metrics = []
    for m in pb.metrics:
        f: dict[str, Any] = {d.name: v for d, v in m.ListFields()}  # only the fields that are set
        datatype = f.get("datatype")
        value = None
        for name in _VALUE_FIELDS.intersection(f):
            value = f[name]
            if name in ("long_value", "int_value"):
                value = signed(int(value), datatype)
        quality = None
        props = f.get("properties")
        if props is not None:
            for key, pv in zip(props.keys, props.values):
                if key.lower() == "quality":
                    quality = int(pv.int_value if pv.HasField("int_value") else pv.long_value)
        is_null = bool(f.get("is_null", False))
        metrics.append(Metric(name=f.get("name"), alias=f.get("alias"), timestamp=f.get("timestamp"),
                              datatype=datatype, value=None if is_null else value, is_null=is_null,
                              quality=quality, is_historical=bool(f.get("is_historical", False))))
    top = {d.name: v for d, v in pb.ListFields() if d.name != "metrics"}
    return Payload(timestamp=top.get("timestamp"), seq=top.get("seq"), metrics=tuple(metrics))


def _type_of(value: object) -> int | None:
    """The datatype a DATA metric without one is sent as (the host takes the real one from the birth)."""
    if isinstance(value, bool):
        return BOOLEAN
    if isinstance(value, int):
        return INT64
    if isinstance(value, float):
        return DOUBLE
    return STRING if isinstance(value, str) else None


def encode_payload(payload: Payload) -> bytes:
    """Bytes of a payload (NCMD rebirth requests; the tests' edge node)."""
    pb = _PB["Payload"]()
    if payload.timestamp is not None:
        pb.timestamp = payload.timestamp
    if payload.seq is not None:
        pb.seq = payload.seq
    for m in payload.metrics:
        out = pb.metrics.add()
        if m.name is not None:
            out.name = m.name
        if m.alias is not None:
            out.alias = m.alias
        if m.timestamp is not None:
            out.timestamp = m.timestamp
        if m.datatype is not None:
            out.datatype = m.datatype
        if m.is_historical:
            out.is_historical = True
        if m.quality is not None:
            out.properties.keys.append("Quality")
            out.properties.values.add(type=INT32, int_value=m.quality & 0xFFFFFFFF)
        datatype = m.datatype if m.datatype is not None else _type_of(m.value)
        if m.is_null or m.value is None:
            out.is_null = True
        elif datatype == BOOLEAN:
            out.boolean_value = bool(m.value)
        elif datatype == FLOAT:
            out.float_value = float(m.value)
        elif datatype == DOUBLE:
            out.double_value = float(m.value)
        elif datatype in (INT64, UINT64, DATETIME):
            out.long_value = int(m.value) & 0xFFFFFFFFFFFFFFFF
        elif datatype in _SIGNED_BITS:
            out.int_value = int(m.value) & ((1 << _SIGNED_BITS[datatype]) - 1)  # as Tahu: the type's own width
        elif datatype in (STRING, TEXT):
            out.string_value = str(m.value)
        else:
            out.int_value = int(m.value) & 0xFFFFFFFF
    return bytes(pb.SerializeToString())
