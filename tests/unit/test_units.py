"""Quality and unit on readings: parsed from JSON, converted to the registry's unit in bulk, refused when bad."""

from __future__ import annotations

import numpy as np
import orjson
import pytest

from smart_maintenance.config.registry import load_registry
from smart_maintenance.operators.ingest.parse import parse_messages
from smart_maintenance.operators.ingest.units import UNITS, convert_units, expected_units, scale_offset
from smart_maintenance.operators.records import Parsed, RawMessages, Readings

T = 1_767_571_200_000


def parse(*docs: dict[str, object], accept_uncertain: bool = False) -> Parsed:
    payloads = tuple(orjson.dumps(d) for d in docs)
    return parse_messages(RawMessages(payloads, (None,) * len(docs), ("t",) * len(docs)),
                          accept_uncertain=accept_uncertain)


def reading(**kw: object) -> dict[str, object]:
    return {"asset_id": "pump-01", "sensor": "temperature", "ts": T, "value": 10.0, **kw}


@pytest.mark.parametrize(("value", "unit", "target", "expected"), [
    (212.0, "degF", "degC", 100.0), (0.0, "degC", "K", 273.15), (300.0, "K", "degF", 80.33),
    (1.0, "bar", "kPa", 100.0), (14.503773773, "psi", "bar", 1.0), (101325.0, "Pa", "bar", 1.01325),
    (1.0, "in/s", "mm/s", 25.4), (250.0, "mA", "A", 0.25), (60.0, "rpm", "Hz", 1.0), (3.0, "Hz", "rpm", 180.0),
    (36.0, "m3/h", "L/s", 10.0), (1.0, "hp", "kW", 0.7457), (5.0, "°C", "degC", 5.0), (2.0, "g", "m/s2", 19.6133),
])
def test_linear_conversions(value: float, unit: str, target: str, expected: float) -> None:
    so = scale_offset(unit, target)
    assert so is not None
    assert value * so[0] + so[1] == pytest.approx(expected, rel=1e-4, abs=1e-9)


def test_every_unit_round_trips_to_its_quantitys_other_units() -> None:
    for u, (q, _, _) in UNITS.items():
        for t, (q2, _, _) in UNITS.items():
            there, back = scale_offset(u, t), scale_offset(t, u)
            if q != q2:
                assert there is None
                continue
            assert there is not None and back is not None
            assert (7.5 * there[0] + there[1]) * back[0] + back[1] == pytest.approx(7.5)


def test_batch_converted_to_the_registry_units_in_one_pass() -> None:
    units = expected_units(load_registry(None))
    assert units["pump-01"]["temperature"] == "degC" and units["pump-01"]["vibration"] == "mm/s"
    p = parse(reading(value=212.0, unit="degF", quality="good"),
              reading(sensor="vibration", value=0.5, unit="in/s"),
              reading(value=20.0, unit="degC"),
              reading(value=30.0),  # no unit: taken as the registry's, kept as it came
              reading(asset_id="other", sensor="x", value=1.0, unit="furlong"))  # not in the registry: kept
    out = convert_units(p, units)
    assert out.rejects == ()
    np.testing.assert_allclose(out.readings.value, [100.0, 12.7, 20.0, 30.0, 1.0])
    assert list(out.readings.unit) == ["degC", "mm/s", "degC", None, "furlong"]
    assert list(out.readings.quality) == [192, -1, -1, -1, -1]


def test_unknown_or_incompatible_unit_is_a_dead_letter_naming_both() -> None:
    units = expected_units(load_registry(None))
    p = parse(reading(value=5.0, unit="bar"), reading(value=6.0, unit="Rankine"), reading(value=7.0, unit="degF"))
    out = convert_units(p, units)
    assert [r.reason for r in out.rejects] == ["unit_mismatch", "unit_mismatch"]
    assert "'bar'" in out.rejects[0].detail and "'degC'" in out.rejects[0].detail
    assert "another quantity" in out.rejects[0].detail and "not a unit this flow knows" in out.rejects[1].detail
    assert orjson.loads(out.rejects[1].raw)["value"] == 6.0
    np.testing.assert_allclose(out.readings.value, [(7.0 - 32) * 5 / 9])


def test_batch_without_units_is_passed_through_untouched() -> None:
    p = Parsed(Readings.of([("pump-01", "temperature", T, 1.0)]))
    assert convert_units(p, expected_units(load_registry(None))) is p


@pytest.mark.parametrize(("quality", "accept", "reason"), [
    ("bad", False, "bad_quality"), (0, False, "bad_quality"), (24, True, "bad_quality"),
    ("uncertain", False, "bad_quality"), (86, False, "bad_quality"), ("meh", True, "bad_quality"),
    ([1], True, "bad_quality"),
])
def test_bad_quality_is_never_a_reading(quality: object, accept: bool, reason: str) -> None:
    p = parse(reading(quality=quality), accept_uncertain=accept)
    assert len(p.readings) == 0 and [r.reason for r in p.rejects] == [reason]


def test_uncertain_is_a_reading_when_accepted_and_frames_carry_quality_and_units() -> None:
    p = parse(reading(quality="Uncertain"),
              {"asset_id": "pump-01", "ts": T, "values": {"temperature": 1.0, "vibration": 2.0},
               "units": {"temperature": "degF"}, "quality": 192},
              accept_uncertain=True)
    assert p.rejects == ()
    assert list(p.readings.quality) == [64, 192, 192] and list(p.readings.unit) == [None, "degF", None]


def test_bad_unit_field_rejects_the_message_and_keeps_no_reading_of_it() -> None:
    p = parse({"asset_id": "pump-01", "ts": T, "values": {"a": 1.0, "b": 2.0}, "units": {"b": 3}},
              reading(unit="x" * 40))
    assert len(p.readings) == 0 and [r.reason for r in p.rejects] == ["bad_shape", "bad_shape"]


def test_concat_and_take_keep_the_optional_columns() -> None:
    a = Readings.of([("p", "s", T, 1.0)], [64])
    b = Readings.of([("p", "s", T + 1, 2.0)])
    both = Readings.concat([a, b])
    assert list(both.quality) == [64, -1] and both.unit is None
    assert list(both.take(np.array([1])).quality) == [-1]


def test_the_flow_step_reads_uncertain_json_only_when_the_setting_says_so() -> None:
    from smart_maintenance.config.settings import load_settings
    from smart_maintenance.dataflows.steps import Steps

    msg = RawMessages((orjson.dumps(reading(quality="uncertain", unit="degF", value=32.0)),), (None,), ("m",))
    for accept, n in ((False, 0), (True, 1)):
        steps = Steps(load_settings(console=False, accept_uncertain_quality=accept), load_registry(None))
        checked = steps.check(steps.parse(msg))
        assert len(checked.readings) == n
        if n:
            assert abs(checked.readings.value[0]) < 1e-9 and list(checked.readings.unit) == ["degC"]  # converted
        else:
            assert [r.reason for r in checked.rejects] == ["bad_quality"]
