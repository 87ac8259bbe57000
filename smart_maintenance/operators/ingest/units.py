"""Readings in the registry's units: linear conversions from a small explicit table, done in bulk.

A payload may name its `unit`; the registry names each sensor's. Where they
differ the value is converted (`v * scale + offset`, one numpy expression per
batch: the table is consulted once per distinct asset, sensor and unit); a unit
the table does not know, or one of another quantity (bar for a temperature),
is a dead letter `unit_mismatch` naming both units. A reading without a unit,
or of a sensor the registry does not list, is kept as it came.

Why a table and not `pint`: pint converts 60 rpm to 6.28 Hz (a revolution is
2 pi radians to it), which is wrong for a shaft's rotation frequency, and its
registry takes 0.4 s to load; the plant's units are a short, linear list.

>>> [round(x, 4) for x in scale_offset("degF", "degC")]
[0.5556, -17.7778]
>>> scale_offset("bar", "degC") is None, scale_offset("furlong", "m") is None
(True, True)
"""

from __future__ import annotations

import functools
from collections.abc import Mapping

import numpy as np
import orjson

from smart_maintenance.operators.ingest.codes import factorize
from smart_maintenance.operators.ingest.guard import describe
from smart_maintenance.operators.records import Invalid, Parsed, Readings

# unit -> (quantity, scale, offset): value in the quantity's base unit = value * scale + offset
_F = 5.0 / 9.0
UNITS: dict[str, tuple[str, float, float]] = {
    # temperature (K)
    "K": ("temperature", 1.0, 0.0), "degC": ("temperature", 1.0, 273.15),
    "degF": ("temperature", _F, 273.15 - 32.0 * _F),
    # pressure (Pa); gauge or absolute is the plant's convention, not converted
    "Pa": ("pressure", 1.0, 0.0), "hPa": ("pressure", 1e2, 0.0), "kPa": ("pressure", 1e3, 0.0),
    "MPa": ("pressure", 1e6, 0.0), "mbar": ("pressure", 1e2, 0.0), "bar": ("pressure", 1e5, 0.0),
    "psi": ("pressure", 6894.757293168361, 0.0), "atm": ("pressure", 101325.0, 0.0),
    # velocity (m/s): vibration velocity and flow speed
    "m/s": ("velocity", 1.0, 0.0), "mm/s": ("velocity", 1e-3, 0.0), "in/s": ("velocity", 0.0254, 0.0),
    "ft/s": ("velocity", 0.3048, 0.0),
    # acceleration (m/s2)
    "m/s2": ("acceleration", 1.0, 0.0), "g": ("acceleration", 9.80665, 0.0),
    # length (m): displacement
    "m": ("length", 1.0, 0.0), "mm": ("length", 1e-3, 0.0), "um": ("length", 1e-6, 0.0),
    "in": ("length", 0.0254, 0.0), "mil": ("length", 2.54e-5, 0.0),
    # electric current (A) and potential (V)
    "A": ("current", 1.0, 0.0), "mA": ("current", 1e-3, 0.0), "kA": ("current", 1e3, 0.0),
    "V": ("voltage", 1.0, 0.0), "mV": ("voltage", 1e-3, 0.0), "kV": ("voltage", 1e3, 0.0),
    # rotation frequency (revolutions per second): 60 rpm = 1 Hz
    "Hz": ("rotation", 1.0, 0.0), "rpm": ("rotation", 1.0 / 60.0, 0.0), "kHz": ("rotation", 1e3, 0.0),
    # volume flow (m3/s) and mass flow (kg/s)
    "m3/s": ("flow", 1.0, 0.0), "m3/h": ("flow", 1.0 / 3600.0, 0.0), "L/s": ("flow", 1e-3, 0.0),
    "L/min": ("flow", 1e-3 / 60.0, 0.0), "gpm": ("flow", 3.785411784e-3 / 60.0, 0.0),
    "kg/s": ("mass_flow", 1.0, 0.0), "kg/h": ("mass_flow", 1.0 / 3600.0, 0.0), "t/h": ("mass_flow", 1e3 / 3600.0, 0.0),
    # power (W)
    "W": ("power", 1.0, 0.0), "kW": ("power", 1e3, 0.0), "MW": ("power", 1e6, 0.0),
    "hp": ("power", 745.6998715822702, 0.0),
    "%": ("ratio", 1.0, 0.0),
}
ALIASES: dict[str, str] = {  # spellings seen in plants; exact match only (mW is not MW)
    "°C": "degC", "℃": "degC", "C°": "degC", "celsius": "degC", "Celsius": "degC", "deg C": "degC",
    "°F": "degF", "℉": "degF", "fahrenheit": "degF", "Fahrenheit": "degF", "deg F": "degF",
    "kelvin": "K", "Kelvin": "K", "PSI": "psi", "Bar": "bar", "KPa": "kPa", "kpa": "kPa", "mmps": "mm/s",
    "mm/sec": "mm/s", "ips": "in/s", "in/sec": "in/s", "m/s^2": "m/s2", "m/s²": "m/s2", "µm": "um",
    "μm": "um", "amp": "A", "amps": "A", "RPM": "rpm", "r/min": "rpm", "1/min": "rpm", "hz": "Hz",
    "m³/h": "m3/h", "m^3/h": "m3/h", "l/s": "L/s", "l/min": "L/min", "GPM": "gpm", "percent": "%",
}


def canonical(unit: str) -> str | None:
    """The table's name of `unit`, or None when the table does not know it."""
    unit = unit.strip()
    return unit if unit in UNITS else ALIASES.get(unit)


@functools.lru_cache(maxsize=1024)
def scale_offset(unit: str, target: str) -> tuple[float, float] | None:
    """`(scale, offset)` with `value_in_target = value * scale + offset`; None if not convertible."""
    if unit == target:
        return 1.0, 0.0
    u, t = canonical(unit), canonical(target)
    if u is None or t is None:
        return None
    (qu, su, ou), (qt, st, ot) = UNITS[u], UNITS[t]
    if qu != qt:
        return None
    if u == t:
        return 1.0, 0.0
    return su / st, (ou - ot) / st


def expected_units(registry: object) -> dict[str, dict[str, str]]:
    """asset_id -> sensor -> unit, from the registry's asset types."""
    types = registry.asset_types  # type: ignore[attr-defined]
    return {a.asset_id: {name: spec.unit for name, spec in types[a.type].sensors.items()}
            for a in registry.assets}  # type: ignore[attr-defined]


def convert_units(parsed: Parsed, expected: Mapping[str, Mapping[str, str]]) -> Parsed:
    """Readings in `expected[asset][sensor]`'s unit; an unconvertible one becomes a `unit_mismatch` dead letter.

    Batches without units pass unchanged at no cost. Converted readings carry the registry's unit.
    """
    r = parsed.readings
    if r.unit is None or not len(r) or not expected:
        return parsed
    u_codes, u_names = factorize(r.unit)  # None is -1: a reading without a unit
    if not len(u_names):
        return parsed
    a_codes, a_names = factorize(r.asset_id)
    s_codes, s_names = factorize(r.sensor)
    ns, nu = max(len(s_names), 1), len(u_names) + 1
    key = (a_codes.astype(np.int64) * ns + s_codes) * nu + (u_codes + 1)
    inverse, keys = factorize(key)  # first-appearance order, as pandas gave it
    scale = np.ones(len(keys))
    offset = np.zeros(len(keys))
    target = np.empty(len(keys), dtype=object)
    ok = np.ones(len(keys), dtype=bool)
    for k, code in enumerate(keys.tolist()):  # once per distinct asset, sensor and unit in the batch
        rest, ui = divmod(code, nu)
        if ui == 0:
            continue  # no unit given: kept as it came (target stays None)
        ai, si = divmod(rest, ns)
        unit = u_names[ui - 1]
        want = expected.get(a_names[ai], {}).get(s_names[si])
        target[k] = unit if want is None else want
        if want is None:
            continue
        so = scale_offset(unit, want)
        if so is None:
            ok[k] = False
        else:
            scale[k], offset[k] = so
    if (scale == 1.0).all() and (offset == 0.0).all():
        value = r.value
    else:
        value = r.value * scale[inverse] + offset[inverse]
    converted = Readings(r.asset_id, r.sensor, r.ts, value, r.quality, target[inverse])
    if ok.all():
        return Parsed(converted, parsed.rejects)
    keep = ok[inverse]
    bad_rows = np.flatnonzero(~keep)
    rejects = tuple(_mismatch(r, int(i), str(expected[r.asset_id[i]][r.sensor[i]])) for i in bad_rows)
    return Parsed(converted.take(keep), parsed.rejects + rejects)


def _mismatch(r: Readings, i: int, want: str) -> Invalid:
    unit = str(r.unit[i]) if r.unit is not None else ""
    raw = orjson.dumps({"asset_id": str(r.asset_id[i]), "sensor": str(r.sensor[i]), "ts": int(r.ts[i]),
                        "value": float(r.value[i]), "unit": unit}).decode()
    why = "is not a unit this flow knows" if canonical(unit) is None or canonical(want) is None else \
        "measures another quantity"
    return Invalid("unit_mismatch", f"unit {describe(unit)} cannot be converted to the registry's {describe(want)} "
                   f"for {describe(str(r.asset_id[i]))}/{describe(str(r.sensor[i]))}: {why}", raw, "check")
