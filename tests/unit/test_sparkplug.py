"""The Sparkplug B codec and host state on plain values (no broker)."""

from __future__ import annotations

import pickle

from smart_maintenance.connectors.sparkplug.codec import (
    BOOLEAN,
    DOUBLE,
    INT16,
    STRING,
    UINT64,
    Metric,
    Payload,
    decode_payload,
    encode_payload,
)
from smart_maintenance.connectors.sparkplug.host import SparkplugHost

# Encoded by pysparkplug 0.6.1, an independent implementation of the spec:
#   DData(timestamp=1700000000123, seq=7, metrics=(
#     Metric(timestamp=1700000000100, name="Motor/Temperature", datatype=DOUBLE, value=71.25, alias=5),
#     Metric(timestamp=1700000000101, name=None, datatype=INT16, value=-12, alias=6),
#     Metric(timestamp=1700000000102, name="Running", datatype=BOOLEAN, value=True),
#     Metric(timestamp=1700000000103, name="Speed", datatype=FLOAT, value=0.5),
#     Metric(timestamp=1700000000104, name="Count", datatype=UINT64, value=2**40),
#     Metric(timestamp=1700000000105, name="Nothing", datatype=DOUBLE, is_null=True))).encode().hex()
PYSPARKPLUG_DDATA = bytes.fromhex(
    "08fbd095ffbc3112250a114d6f746f722f54656d7065726174757265100518e4d095ffbc31690000000000d05140120d100618e5d095"
    "ffbc3150f4ff0312120a0752756e6e696e6718e6d095ffbc31700112130a05537065656418e7d095ffbc31650000003f12150a05436f"
    "756e7418e8d095ffbc315880808080802012120a074e6f7468696e6718e9d095ffbc3138011807"
)
T = 1_700_000_000_000


def test_decodes_what_pysparkplug_encodes():
    p = decode_payload(PYSPARKPLUG_DDATA)
    assert (p.timestamp, p.seq) == (T + 123, 7)
    got = [(m.name, m.alias, m.timestamp, m.value, m.is_null) for m in p.metrics]
    assert got == [("Motor/Temperature", 5, T + 100, 71.25, False), (None, 6, T + 101, 65524, False),
                   ("Running", None, T + 102, True, False), ("Speed", None, T + 103, 0.5, False),
                   ("Count", None, T + 104, 2**40, False), ("Nothing", None, T + 105, None, True)]


def _birth(seq: int = 0, bd: int = 0, quality: int | None = None) -> bytes:
    return encode_payload(Payload(timestamp=T, seq=seq, metrics=(
        Metric(name="bdSeq", datatype=UINT64, value=bd),
        Metric(name="Node Control/Rebirth", datatype=BOOLEAN, value=False),
        Metric(name="cpu_temp", alias=1, datatype=DOUBLE, value=40.0, timestamp=T + 1, quality=quality))))


def _dbirth(seq: int) -> bytes:
    return encode_payload(Payload(timestamp=T, seq=seq, metrics=(
        Metric(name="temp", alias=10, datatype=DOUBLE, value=20.0),
        Metric(name="delta", alias=11, datatype=INT16, value=-3),
        Metric(name="label", alias=12, datatype=STRING, value="A"))))


def _ddata(seq: int, *metrics: Metric) -> bytes:
    return encode_payload(Payload(timestamp=T + 1000, seq=seq, metrics=metrics))


def test_births_aliases_signed_values_and_metric_timestamps():
    host = SparkplugHost()
    h = host.handle("spBv1.0/G/NBIRTH/edge1", _birth(), 0)
    assert h.rows == [("edge1", "cpu_temp", T + 1, 40.0)] and h.rejects == []
    h = host.handle("spBv1.0/G/DBIRTH/edge1/pump-01", _dbirth(1), 0)
    assert h.rows == [("pump-01", "temp", T, 20.0), ("pump-01", "delta", T, -3.0)]
    assert [r.reason for r in h.rejects] == ["not_numeric"]  # the string metric
    # DATA by alias only, datatype left out (as pysparkplug does): names and signedness come from the birth
    h = host.handle("spBv1.0/G/DDATA/edge1/pump-01",
                    _ddata(2, Metric(alias=10, value=21.5, datatype=DOUBLE, timestamp=T + 5000),
                           Metric(alias=11, value=0xFFFE, datatype=None)), 0)
    assert h.rows == [("pump-01", "temp", T + 5000, 21.5), ("pump-01", "delta", T + 1000, -2.0)]
    assert h.rebirth is None and h.rejects == []


def test_quality_null_and_unknown_alias_are_dead_letters_never_readings():
    host = SparkplugHost()
    host.handle("spBv1.0/G/NBIRTH/edge1", _birth(), 0)
    host.handle("spBv1.0/G/DBIRTH/edge1/pump-01", _dbirth(1), 0)
    h = host.handle("spBv1.0/G/DDATA/edge1/pump-01", _ddata(
        2, Metric(alias=10, datatype=DOUBLE, value=99.0, quality=0),
        Metric(alias=10, datatype=DOUBLE, value=98.0, quality=64),
        Metric(alias=10, datatype=DOUBLE, value=22.0, quality=192),
        Metric(alias=10, datatype=DOUBLE, value=None, is_null=True),
        Metric(alias=77, datatype=DOUBLE, value=1.0)), 0)
    assert h.rows == [("pump-01", "temp", T + 1000, 22.0)] and h.qualities == [192]
    assert [r.reason for r in h.rejects] == ["bad_quality", "bad_quality", "null_value", "unknown_alias"]
    uncertain = SparkplugHost(accept_uncertain=True)
    assert SparkplugHost().handle("spBv1.0/G/NBIRTH/edge1", _birth(quality=64), 0).rows == []
    accepted = uncertain.handle("spBv1.0/G/NBIRTH/edge1", _birth(quality=64), 0)
    assert accepted.rows == [("edge1", "cpu_temp", T + 1, 40.0)] and accepted.qualities == [64]  # stored with it


def test_a_sequence_gap_asks_for_a_rebirth_throttled():
    host = SparkplugHost(rebirth_min_interval_ms=5000)
    host.handle("spBv1.0/G/NBIRTH/edge1", _birth(), 0)
    host.handle("spBv1.0/G/DBIRTH/edge1/pump-01", _dbirth(1), 0)
    h = host.handle("spBv1.0/G/DDATA/edge1/pump-01", _ddata(5, Metric(alias=10, datatype=DOUBLE, value=1.0)), 100)
    assert h.rebirth == ("G", "edge1") and [r.reason for r in h.rejects] == ["sequence_gap"]
    assert h.rows == [("pump-01", "temp", T + 1000, 1.0)]  # the message itself is whole
    h = host.handle("spBv1.0/G/DDATA/edge1/pump-01", _ddata(9, Metric(alias=10, datatype=DOUBLE, value=2.0)), 200)
    assert h.rebirth is None and [r.reason for r in h.rejects] == ["sequence_gap"]  # asked 100 ms ago
    h = host.handle("spBv1.0/G/DDATA/edge1/pump-01", _ddata(10, Metric(alias=10, datatype=DOUBLE, value=3.0)), 300)
    assert h.rebirth is None and h.rejects == []
    h = host.handle("spBv1.0/G/NDATA/edge1", _ddata(255, Metric(alias=1, datatype=DOUBLE, value=3.0)), 6000)
    assert h.rebirth == ("G", "edge1")
    assert host.handle("spBv1.0/G/NDATA/edge1", _ddata(0, Metric(alias=1, value=4.0)), 6000).rejects == []  # wraps


def test_data_before_a_birth_is_not_born_and_asks_for_one():
    host = SparkplugHost()
    h = host.handle("spBv1.0/G/DDATA/edge1/pump-01", _ddata(3, Metric(alias=10, value=1.0)), 0)
    assert h.rows == [] and [r.reason for r in h.rejects] == ["not_born"] and h.rebirth == ("G", "edge1")


def test_death_marks_sensors_stale_and_an_old_will_is_ignored():
    host = SparkplugHost()
    host.handle("spBv1.0/G/NBIRTH/edge1", _birth(bd=4), 0)
    host.handle("spBv1.0/G/DBIRTH/edge1/pump-01", _dbirth(1), 0)
    old_will = encode_payload(Payload(timestamp=T, metrics=(Metric(name="bdSeq", datatype=UINT64, value=3),)))
    assert host.handle("spBv1.0/G/NDEATH/edge1", old_will, 0).rejects == []
    will = encode_payload(Payload(timestamp=T + 9000, metrics=(Metric(name="bdSeq", datatype=UINT64, value=4),)))
    h = host.handle("spBv1.0/G/NDEATH/edge1", will, 0)
    assert h.rows == [] and [(r.reason, r.raw) for r in h.rejects] == [
        ("stale", '{"asset_id": "edge1", "stale_since": "2023-11-14T22:13:29.000Z"}'),
        ("stale", '{"asset_id": "pump-01", "stale_since": "2023-11-14T22:13:29.000Z"}')]
    h = host.handle("spBv1.0/G/DDATA/edge1/pump-01", _ddata(2, Metric(alias=10, value=1.0)), 0)
    assert [r.reason for r in h.rejects] == ["not_born"]


def test_bad_topics_and_payloads_are_dead_letters_and_state_pickles():
    host = SparkplugHost()
    assert [r.reason for r in host.handle("spBv1.0/G/NBIRTH", b"", 0).rejects] == ["bad_topic"]
    assert [r.reason for r in host.handle("spBv1.0/G/DDATA/edge1", b"", 0).rejects] == ["bad_topic"]
    assert [r.reason for r in host.handle("spBv1.0/G/NDATA/edge1", b"\xff\xff", 0).rejects] == ["bad_payload"]
    assert host.handle("spBv1.0/G/NCMD/edge1", b"\xff", 0).rejects == []  # commands are not ours to read
    host.handle("spBv1.0/G/NBIRTH/edge1", _birth(), 0)
    assert pickle.loads(pickle.dumps(host)).nodes == host.nodes
