"""CMMS hand-off, the pure part: work orders rendered into a CMMS's request bodies, its completions read back.

A *field mapping* is a dict `external field -> value`, where a value is

- a string holding exactly one expression, `"{{ priority }}"`, `"{{ 6 - priority }}"`: its value, typed
  (a number stays a number, a list a list; a missing or null one leaves the external field out);
- any other string with `{{ }}`: a template rendered to text in a sandboxed Jinja2 environment
  (`"{{ {'open': 'WAPPR', 'done': 'COMP'}[status] }}"`, `"SM {{ reason | truncate(60) }}"`); it can
  read fields and call filters, never Python code or attributes of objects;
- anything else (a string without `{{`, a number, a boolean): a constant.

A dotted external field (`"d.MaintenanceOrderDesc"`) builds a nested object. The body is built as
Python values and then serialised, so no field can break the JSON whatever it holds. The same input
always gives the same body, keys in the mapping's order.

>>> m = compile_mapping({"wonum": "{{ work_order_id }}", "siteid": "BEDFORD", "wopriority": "{{ priority }}",
...                      "status": "{{ {'open': 'WAPPR'}.get(status, 'APPR') }}"}, known=("work_order_id", "priority",
...                      "status"))
>>> render_body(m, {"work_order_id": "w1", "priority": 4, "status": "open"})
{'wonum': 'w1', 'siteid': 'BEDFORD', 'wopriority': 4, 'status': 'WAPPR'}
"""

from __future__ import annotations

import email.utils
import functools
import math
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

import orjson

from smart_maintenance.operators.controls import ControlError, MaintenanceRecord
from smart_maintenance.operators.records import Invalid, stable_id

if TYPE_CHECKING:
    from jinja2.sandbox import ImmutableSandboxedEnvironment

__all__ = [
    "FieldMap", "MappingError", "compile_mapping", "completion_records", "idempotency_key", "render_body",
    "render_path", "retry_after_s",
]

_FIELD = re.compile(r"^\{\{\s*([A-Za-z_][A-Za-z0-9_]*(?:\.[A-Za-z0-9_]+)*)\s*\}\}$")
_EXPR = re.compile(r"^\{\{(.*)\}\}$", re.S)
_RAW_CHARS = 2048
_JSON = (str, int, float, bool, list, dict)


class MappingError(ValueError):
    """A mapping or template that cannot be used (at start), or a record it cannot render (at run time)."""


def _epoch_ms(value: Any) -> int:
    """An RFC 3339 time (or a datetime) as epoch milliseconds: `"/Date({{ due_at | epoch_ms }})/"` for OData v2."""
    if isinstance(value, str):
        value = datetime.fromisoformat(value.strip().replace("Z", "+00:00"))
    if not isinstance(value, datetime) or value.tzinfo is None:
        raise MappingError(f"epoch_ms needs a time with a zone, got {value!r}"[:200])
    return int(value.timestamp() * 1000)


_ODATA_DATE = re.compile(r"^/Date\((-?\d{1,15})(?:[+-]\d{4})?\)/$")


def _odata_date(value: Any) -> int:
    """An OData v2 time, `/Date(1767735300000)/` or `/Date(1767735300000+0000)/`, as epoch milliseconds (UTC)."""
    m = _ODATA_DATE.match(value.strip()) if isinstance(value, str) else None
    if m is None:
        raise MappingError(f"not an OData date: {value!r}"[:200])
    return int(m.group(1))


@functools.cache
def _env() -> ImmutableSandboxedEnvironment:
    """The one sandboxed environment, made at the first template: Jinja2 is imported here, not at the top, since
    a flow without a CMMS mapping never needs it (issue #17 item 3: every flow process pays its imports)."""
    from jinja2 import StrictUndefined
    from jinja2.sandbox import ImmutableSandboxedEnvironment

    env = ImmutableSandboxedEnvironment(autoescape=False, undefined=StrictUndefined,
                                        finalize=lambda v: "" if v is None else v)
    env.filters["epoch_ms"] = _epoch_ms
    env.filters["odata_date"] = _odata_date
    return env



@dataclass(frozen=True)
class _Value:
    kind: str  # const | field | template
    const: Any = None
    path: tuple[str, ...] = ()
    template: Any = None


@dataclass(frozen=True)
class FieldMap:
    """A compiled mapping: `(external path, value)` pairs, in order."""

    fields: tuple[tuple[tuple[str, ...], _Value], ...]


def _compile_value(name: str, spec: Any, known: frozenset[str] | None) -> _Value:
    if isinstance(spec, bool | int | float) or spec is None:
        if isinstance(spec, float) and not math.isfinite(spec):
            raise MappingError(f"mapping {name!r}: a constant must be finite")
        return _Value("const", const=spec)
    if not isinstance(spec, str):
        raise MappingError(f"mapping {name!r}: a value is a string, a number or a boolean, got {type(spec).__name__}")
    if "{{" not in spec and "{%" not in spec:
        return _Value("const", const=spec)
    field = _FIELD.match(spec)
    if field:
        path = tuple(field.group(1).split("."))
        if known is not None and path[0] not in known:
            raise MappingError(f"mapping {name!r}: {path[0]!r} is not a field (known: {', '.join(sorted(known))})")
        return _Value("field", path=path)
    from jinja2 import Template, TemplateError, meta

    expr = _EXPR.match(spec)
    env = _env()
    try:
        used = meta.find_undeclared_variables(env.parse(spec))
        template = (env.compile_expression(expr.group(1)) if expr and "{{" not in expr.group(1)
                    and "}}" not in expr.group(1) else env.from_string(spec))
    except TemplateError as e:
        raise MappingError(f"mapping {name!r}: bad template: {e}") from None
    unknown = sorted(used - known) if known is not None else []
    if unknown:
        raise MappingError(f"mapping {name!r}: {', '.join(unknown)} not a field "
                           f"(known: {', '.join(sorted(known or ()))})")
    if isinstance(template, Template):
        return _Value("template", template=template)
    return _Value("expr", template=template)


def compile_mapping(spec: Mapping[str, Any], known: Iterable[str] | None = None) -> FieldMap:
    """Check and compile a mapping; `known` are the fields its templates may read (None: any)."""
    if not isinstance(spec, Mapping) or not spec:
        raise MappingError("a mapping needs at least one field")
    names = None if known is None else frozenset(known)
    fields = []
    seen: dict[tuple[str, ...], str] = {}
    for name, value in spec.items():
        if not isinstance(name, str) or not name or any(not p for p in name.split(".")):
            raise MappingError(f"mapping: bad external field name {name!r}")
        path = tuple(name.split("."))
        for other in seen:
            n = min(len(path), len(other))
            if path[:n] == other[:n]:
                raise MappingError(f"mapping: {name!r} and {seen[other]!r} overlap")
        seen[path] = name
        fields.append((path, _compile_value(name, value, names)))
    return FieldMap(tuple(fields))


def _lookup(record: Any, path: tuple[str, ...]) -> Any:
    value = record
    for part in path:
        if isinstance(value, Mapping):
            value = value.get(part)
        elif isinstance(value, list | tuple) and part.isdigit() and int(part) < len(value):
            value = value[int(part)]
        else:
            return None
        if value is None:
            return None
    return value


def _value(v: _Value, record: Mapping[str, Any], name: str) -> Any:
    if v.kind == "const":
        return v.const
    if v.kind == "field":
        return _lookup(record, v.path)
    try:
        if v.kind == "expr":
            value = v.template(**record)
            if value is not None and not isinstance(value, _JSON):
                raise MappingError(f"gives a {type(value).__name__}, not a JSON value")
            return value
        return v.template.render(record)
    except Exception as e:  # noqa: BLE001 - a template meets untrusted values: any failure is this record's fault
        raise MappingError(f"{name}: {type(e).__name__}: {e}"[:300]) from None


def render_body(mapping: FieldMap, record: Mapping[str, Any]) -> dict[str, Any]:
    """The request body for a record (a work order's `to_dict()`); MappingError names the field that failed."""
    body: dict[str, Any] = {}
    for path, spec in mapping.fields:
        value = _value(spec, record, ".".join(path))
        if value is None:
            continue
        node = body
        for part in path[:-1]:
            node = node.setdefault(part, {})
        node[path[-1]] = value
    return body


def render_path(template: str, record: Mapping[str, Any]) -> str:
    """A URL path from a template, every field percent-encoded (`/wo/{{ work_order_id }}`): no value adds a `/`,
    `?` or `..` of its own."""
    quoted = {k: quote(str(v), safe="") if v is not None else "" for k, v in record.items()
              if isinstance(v, str | int | float)}
    try:
        return _env().from_string(template).render(quoted)
    except Exception as e:  # noqa: BLE001
        raise MappingError(f"path {template!r}: {type(e).__name__}: {e}"[:300]) from None


_PATH_FIELD = re.compile(r"\{\{\s*([A-Za-z_][A-Za-z0-9_]*)\s*\}\}")
# names Jinja reads as operators or constants inside `{{ }}`, never as fields: such paths go to Jinja itself
_JINJA_WORDS = frozenset({"and", "or", "not", "in", "is", "if", "else", "true", "false", "none", "True", "False",
                          "None"})


def check_path(template: str, known: Iterable[str]) -> None:
    """Raise MappingError unless `template` parses and reads only `known` fields.

    A path of plain text and `{{ field }}` of known fields (the defaults: `/workorders/{{ work_order_id }}`) is
    accepted without Jinja, as Jinja would accept it: the settings check every path at load, and a flow without a
    CMMS should not import Jinja for that (issue #17 item 3).

    >>> check_path("/wo/{{ work_order_id }}", ["work_order_id"])
    >>> check_path("/wo/{{ id }}", ["work_order_id"])
    Traceback (most recent call last):
    ...
    smart_maintenance.operators.cmms.MappingError: path '/wo/{{ id }}': id not a field
    """
    fields = set(known)
    names = _PATH_FIELD.findall(template)
    if "{" not in _PATH_FIELD.sub("", template) and all(n in fields and n not in _JINJA_WORDS for n in names):
        return
    from jinja2 import TemplateError, meta

    try:
        used = meta.find_undeclared_variables(_env().parse(template))
    except TemplateError as e:
        raise MappingError(f"path {template!r}: bad template: {e}") from None
    unknown = sorted(used - fields)
    if unknown:
        raise MappingError(f"path {template!r}: {', '.join(unknown)} not a field")


def idempotency_key(record: Mapping[str, Any]) -> str:
    """The `Idempotency-Key` of one pushed state of a work order: its id and revision."""
    return f"{record['work_order_id']}:{record.get('revision', 0)}"


def retry_after_s(value: str | None, now: datetime | None = None) -> float | None:
    """Seconds to wait from a `Retry-After` header (delta seconds or an HTTP date); None when absent or bad.

    >>> retry_after_s("3"), retry_after_s("soon"), retry_after_s("-1")
    (3.0, None, None)
    """
    if not value or len(value) > 64:
        return None
    v = value.strip()
    if v.isdigit():
        return float(v)
    try:
        when = email.utils.parsedate_to_datetime(v)
    except (TypeError, ValueError, IndexError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=timezone.utc)
    return max(0.0, (when - (now or datetime.now(timezone.utc))).total_seconds())


# -- completions read back -------------------------------------------------------------------------------

def completion_records(doc: Any, items_path: str, mapping: FieldMap, *, host: str, done: Iterable[str] = (),
                       now_ms: int, max_ahead_ms: int) -> tuple[list[MaintenanceRecord], list[Invalid]]:
    """A CMMS's answer to "which work orders are complete" as maintenance-log records, and the unusable items.

    `items_path` is where the list is in the response (`member`, `d.results`; "" = the response itself);
    each item goes through `mapping` (our field -> its value) into `MaintenanceRecord.from_dict`. With
    `done` statuses, the mapping's `status` must be one of them, else the item is skipped (not complete
    yet). The record's id comes from the host and the work order, so the same completion read again, or
    edited in the CMMS, is logged once; its origin is `cmms:<host>`, never a field of the answer. A
    completion time more than `max_ahead_ms` after `now_ms` is refused.
    """
    origin = f"cmms:{host}"
    items = _lookup(doc, tuple(items_path.split("."))) if items_path else doc
    if not isinstance(items, list):
        return [], [Invalid("bad_maintenance", f"no list at {items_path or 'the top'} of the CMMS answer",
                            _raw(doc), origin)]
    done_set = {str(s) for s in done}
    records: list[MaintenanceRecord] = []
    bad: list[Invalid] = []
    for i, item in enumerate(items):
        where = f"{origin} item {i}"
        try:
            if not isinstance(item, Mapping):
                raise ControlError(f"an item must be an object, got {type(item).__name__}")
            d = render_body(mapping, item)
            if done_set and str(d.get("status")) not in done_set:
                continue
            wo = d.get("work_order_id")
            if not isinstance(wo, str | int) or isinstance(wo, bool) or not str(wo).strip():
                raise ControlError("work_order_id is required")
            d["work_order_id"] = str(wo).strip()
            d["maintenance_id"] = stable_id("cmms", host, d["work_order_id"])
            record = MaintenanceRecord.from_dict(d, source=origin)
            if record.at_ms > now_ms + max_ahead_ms:
                raise ControlError(f"completed_at {record.completed_at.isoformat()} is in the future")
        except (ControlError, MappingError) as e:
            bad.append(Invalid("bad_maintenance", str(e), _raw(item), where))
            continue
        except Exception as e:  # noqa: BLE001 - no item from outside may stop the read-back
            bad.append(Invalid("unparseable", f"{type(e).__name__} while reading a completion", _raw(item), where))
            continue
        records.append(record)
    return records, bad


def _raw(value: Any) -> str:
    try:
        return orjson.dumps(value, default=str).decode()[:_RAW_CHARS]
    except Exception:  # noqa: BLE001
        return repr(value)[:_RAW_CHARS]
