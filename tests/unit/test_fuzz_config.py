"""Property tests of the config loaders: random environment values, TOML files, registries.

`audit_settings` and `audit_registry` (shared with `bench/fuzz.py`) load one
configuration in an isolated environment (own working directory, no other
`SMART_MAINTENANCE*` variables) and return `(outcome, problems)`:

- outcome "accepted", "rejected" (a documented error: pydantic's ValidationError,
  pydantic-settings' SettingsError for an env value that is not the JSON a
  list or dict field needs, FileNotFoundError, RegistryError, or a ValueError
  naming the broken config file or variable) or "crash" (anything else);
- a rejection names the field (every error location, or the env field) and
  never echoes a secret value;
- an accepted configuration holds the contract: no secret in its repr, every
  float finite, a window length > 0, no `SMART_MAINTENANCE__` variable ignored;
  a registry's shifts are real clock times on weekdays 0..6.

Problems whose kind is in `KNOWN` are bugs with a strict xfail below; the
properties tolerate only those, the bench counts them all.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import tempfile
import tomllib
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from pydantic import BaseModel, SecretStr, ValidationError
from pydantic_settings import SettingsError

from smart_maintenance.config.registry import RegistryError, load_registry
from smart_maintenance.config.settings import CONFIG_ENV, Settings, load_settings
from tests.unit.test_fuzz_parse import FUZZ

PREFIX = "SMART_MAINTENANCE__"
SECRET = "s3cr3t-Vq7xZ"  # every secret value holds it; no message may
KNOWN: tuple[str, ...] = ()


def leaves(model: type[BaseModel] = Settings, path: tuple[str, ...] = ()) -> list[tuple[tuple[str, ...], bool]]:
    """Every settings field as (path, holds a secret), sections expanded."""
    out = []
    for name, f in model.model_fields.items():
        kind = f.annotation
        if isinstance(kind, type) and issubclass(kind, BaseModel):
            out += leaves(kind, (*path, name))
        else:
            out.append(((*path, name), "SecretStr" in str(kind) or kind is SecretStr))
    return out


FIELDS = leaves()


def default(path: tuple[str, ...]) -> Any:
    model: Any = Settings
    for part in path[:-1]:
        model = model.model_fields[part].annotation
    return model.model_fields[path[-1]].get_default(call_default_factory=True)


def near_default(path: tuple[str, ...]) -> st.SearchStrategy:
    """Values of the field's own type around its default: most of them valid."""
    d = default(path)
    if isinstance(d, bool):
        return st.booleans()
    if isinstance(d, int):
        return st.integers(-2, 2 * d + 10)
    if isinstance(d, float):
        return st.floats(-1.0, 2 * d + 10) | st.sampled_from([0.0, d, 1e308])
    if isinstance(d, tuple) and d:
        return st.lists(st.sampled_from(d) | TEXT, max_size=3).map(tuple)
    return st.just(d) if d is not None and not isinstance(d, Path) else st.none()
TEXT = st.text(st.characters(codec="utf-8", exclude_characters="\x00"), max_size=20)
env_values = st.one_of(
    st.sampled_from(["0", "-1", "1.5", "1e309", "inf", "-inf", "nan", "NaN", "99999999999999999999", "true", "no", "",
                     " ", "null", "[]", "{}", '["plant/#"]', '{"a": "1"}', "auto", "60", "PLAINTEXT", "~/x",
                     "/dev/null"]),
    st.integers().map(str), st.floats().map(str), TEXT,
)


@st.composite
def env_sets(draw: st.DrawFn) -> dict[str, str]:
    """A few settings variables with random text; secrets get SECRET; now and then an unknown name."""
    env = {}
    for path, secret in draw(st.lists(st.sampled_from(FIELDS), min_size=1, max_size=4, unique=True)):
        name = PREFIX + "__".join(path)
        near = draw(near_default(path))
        value = json.dumps(near) if isinstance(near, tuple) else str(near).lower() if isinstance(near, bool) else near
        plausible = near is not None and draw(st.integers(0, 3)) > 0
        env[name.upper() if draw(st.booleans()) else name.lower()] = (
            SECRET + draw(TEXT) if secret else str(value) if plausible else draw(env_values))
    if draw(st.integers(0, 9)) == 0:
        env[PREFIX + draw(st.sampled_from(["MAX_TS_SKEW", "POSTGRES__BOGUS", "WINDOWS__LENGTH", "BOGUS"]))] = "1"
    return env


@contextmanager
def isolated(env: dict[str, str], files: dict[str, bytes] | None = None) -> Iterator[Path]:
    """Only `env` among the SMART_MAINTENANCE* variables, in a fresh working directory holding `files`."""
    saved, cwd = dict(os.environ), os.getcwd()
    folder = Path(tempfile.mkdtemp(prefix="sm-fuzz-config-"))
    for name, data in (files or {}).items():
        (folder / name).write_bytes(data)
    try:
        for k in [k for k in os.environ if k.upper().startswith("SMART_MAINTENANCE")]:
            del os.environ[k]
        os.environ.update(env)
        os.chdir(folder)
        yield folder
    finally:
        os.chdir(cwd)
        os.environ.clear()
        os.environ.update(saved)
        shutil.rmtree(folder, ignore_errors=True)


def _loc(loc: tuple) -> str:
    """A field's path as pydantic prints it: a part with a dot in it is quoted in backticks."""
    return ".".join(f"`{p}`" if isinstance(p, str) and "." in p else str(p) for p in loc)


def audit_settings(env: dict[str, str], toml: bytes | None = None) -> tuple[str, list[str]]:
    """Load settings from `env` (and `toml` as the config file); the outcome and its problems."""
    files = {"sm.toml": toml} if toml is not None else {}
    with isolated(env, files) as folder:
        if toml is not None:
            os.environ[CONFIG_ENV] = str(folder / "sm.toml")
        try:
            s = load_settings()
        except ValidationError as e:
            named = all(_loc(err["loc"]) in str(e) for err in e.errors())
            return "rejected", _secret(str(e)) + ([] if named else [f"unnamed_field: {str(e)[:120]}"])
        except SettingsError as e:  # "error parsing value for field "mqtt" from source "EnvSettingsSource""
            named = any(f'"{k[len(PREFIX):].split("__")[0].lower()}"' in str(e) for k in env)
            return "rejected", _secret(str(e)) + ([] if named else [f"unnamed_field: {e}"[:160]])
        except Exception as e:  # noqa: BLE001 - counted by the caller
            named = (toml is not None and "sm.toml" in str(e)) or any(k.upper() in str(e).upper() for k in env)
            if isinstance(e, ValueError) and named:  # a clear error about the file or a variable, whatever its class
                return "rejected", _secret(str(e))
            return "crash", [f"crash:{type(e).__name__}: {e}"[:200]]
    return "accepted", _secret(repr(s)) + _accepted(s, env)


def _secret(text: str) -> list[str]:
    return [f"echoed_secret: {text[:160]!r}"] if SECRET in text else []


def _accepted(s: Settings, env: dict[str, str]) -> list[str]:
    problems = [f"non_finite: {k} = {v}" for k, v in _floats(s.model_dump(), "") if not math.isfinite(v)]
    if s.windows.length_s != "auto" and not s.windows.length_s > 0:
        problems.append(f"bad_window: windows.length_s = {s.windows.length_s}")
    known = {PREFIX + "__".join(p[:i]).upper() for p, _ in FIELDS for i in range(1, len(p) + 1)}
    problems += [f"ignored_env: {k} is no setting, and loading said nothing" for k in env if k.upper() not in known
                 and not any(k.upper().startswith(x + "__") for x in known)]
    return problems


def _floats(x: Any, path: str) -> Iterator[tuple[str, float]]:
    if isinstance(x, float):
        yield path, x
    elif isinstance(x, dict):
        for k, v in x.items():
            yield from _floats(v, f"{path}.{k}".lstrip("."))
    elif isinstance(x, (list, tuple)):
        for v in x:
            yield from _floats(v, path)


# -- TOML text ---------------------------------------------------------------------------------------------------


def toml_value(v: Any) -> str:
    """A Python value as TOML (tomllib only reads)."""
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, float):
        return "nan" if math.isnan(v) else ("inf" if v > 0 else "-inf") if math.isinf(v) else repr(v)
    if isinstance(v, (int, str)):
        return _quote(v) if isinstance(v, str) else str(v)
    if isinstance(v, (list, tuple)):
        return "[" + ", ".join(toml_value(x) for x in v) + "]"
    return "{" + ", ".join(f"{_quote(k)} = {toml_value(x)}" for k, x in v.items()) + "}"


def _quote(s: str) -> str:
    return json.dumps(str(s), ensure_ascii=False).replace("\x7f", "\\u007f")  # TOML forbids a raw DEL


def toml_doc(doc: dict) -> bytes:
    """Top-level scalars first, then one [table] per dict (nested tables as dotted headers)."""
    out: list[str] = []

    def emit(d: dict, head: str) -> None:
        tables = {k: v for k, v in d.items() if isinstance(v, dict)}
        if head:
            out.append(f"[{head}]")
        out.extend(f"{_quote(k)} = {toml_value(v)}" for k, v in d.items() if k not in tables)
        for k, v in tables.items():
            emit(v, f"{head}.{_quote(k)}" if head else _quote(k))

    emit(doc, "")
    return "\n".join(out).encode() + b"\n"


toml_scalars = st.one_of(st.booleans(), st.integers(-2**63, 2**63 - 1), st.floats(), TEXT,
                         st.sampled_from(["auto", "plant/#", "127.0.0.1:9092", "1", "PLAINTEXT", "json"]))
toml_values = st.recursive(toml_scalars, lambda c: st.lists(c, max_size=3) | st.dictionaries(TEXT, c, max_size=2),
                           max_leaves=5)


@st.composite
def toml_configs(draw: st.DrawFn) -> dict:
    doc: dict = {}
    for path, secret in draw(st.lists(st.sampled_from(FIELDS), min_size=1, max_size=5, unique=True)):
        table = doc
        for part in path[:-1]:
            table = table.setdefault(part, {}) if isinstance(table.get(part, {}), dict) else {}
        near = draw(near_default(path))
        table[path[-1]] = (SECRET + draw(TEXT) if secret and draw(st.booleans()) else
                           near if near is not None and draw(st.integers(0, 3)) > 0 else draw(toml_values))
    if draw(st.integers(0, 4)) == 0:
        doc[draw(st.sampled_from(["bogus", "postgres"]))] = draw(toml_values)
    return doc


# -- registry ----------------------------------------------------------------------------------------------------

BASE_REGISTRY = tomllib.loads(
    (Path(__file__).parents[2] / "smart_maintenance/config/default_registry.toml").read_text())


@st.composite
def registries(draw: st.DrawFn) -> dict:
    """The built-in registry with 1-4 values replaced, removed or added somewhere in its tree."""
    doc = json.loads(json.dumps(BASE_REGISTRY))
    for _ in range(draw(st.integers(1, 4))):
        node: Any = doc
        for _ in range(draw(st.integers(0, 5))):  # walk down to some table or array
            inner = [k for k in _keys(node) if isinstance(node[k], (dict, list)) and node[k]]
            if not inner:
                break
            node = node[draw(st.sampled_from(inner))]
        key = draw(st.sampled_from(_keys(node))) if _keys(node) else None
        how = draw(st.sampled_from(["set", "set", "del", "add"]))
        if key is None or how == "add":
            if isinstance(node, dict):
                node[draw(st.sampled_from(["start", "days", "range", "failure", "extra", "type"]))] = draw(toml_values)
        elif how == "del":
            del node[key]
        else:
            node[key] = draw(st.one_of(toml_values, st.sampled_from(["25:00", "99:99", "07:60", "24:00"]),
                                       st.lists(st.integers(-3, 9), max_size=3)))
    return doc


def _keys(node: dict | list) -> list:
    return list(node) if isinstance(node, dict) else list(range(len(node)))


def audit_registry(text: bytes) -> tuple[str, list[str]]:
    with isolated({}, {"registry.toml": text}) as folder:
        try:
            reg = load_registry(folder / "registry.toml")
        except RegistryError as e:
            return "rejected", [] if "registry.toml" in str(e) else [f"unnamed_file: {e}"[:160]]
        except Exception as e:  # noqa: BLE001 - counted by the caller
            return "crash", [f"crash:{type(e).__name__}: {e}"[:200]]
    problems = [f"non_finite: {k} = {v}" for k, v in _floats(reg.model_dump(), "") if math.isnan(v)]
    for t in reg.technicians:
        clocks = [tuple(int(x) for x in c.split(":")) for c in (t.shift.start, t.shift.end)]
        if any(h * 60 + m > 1440 or m >= 60 for h, m in clocks) or not set(t.shift.days) <= set(range(7)):
            problems.append(f"bad_shift: {t.technician_id} {t.shift}")
    return "accepted", problems


# -- properties ----------------------------------------------------------------------------------------------------


def unknown(problems: list[str]) -> list[str]:
    return [p for p in problems if not p.startswith(KNOWN)]


@FUZZ
@given(env_sets())
def test_env_values_load_or_fail_naming_the_field_without_echoing_secrets(env: dict[str, str]) -> None:
    outcome, problems = audit_settings(env)
    assert outcome in ("accepted", "rejected") and unknown(problems) == []


@FUZZ
@given(toml_configs(), env_sets() | st.just({}))
def test_toml_files_load_or_fail_naming_the_field(doc: dict, env: dict[str, str]) -> None:
    outcome, problems = audit_settings(env, toml_doc(doc))
    assert outcome in ("accepted", "rejected") and unknown(problems) == []


@FUZZ
@given(registries())
def test_mutated_registries_load_or_raise_registry_error(doc: dict) -> None:
    outcome, problems = audit_registry(toml_doc(doc))
    assert outcome in ("accepted", "rejected") and unknown(problems) == []


def test_the_audit_sees_the_builtin_registry_and_defaults_as_clean() -> None:
    assert audit_registry(toml_doc(BASE_REGISTRY)) == ("accepted", [])
    assert audit_settings({}) == ("accepted", [])
    assert audit_settings({PREFIX + "POSTGRES__DSN": SECRET, PREFIX + "POSTGRES__COPY_ROWS": "0"})[0] == "rejected"


# -- known bugs: strict xfails, to be removed with the fix ---------------------------------------------------------


@pytest.mark.parametrize(("name", "value"), [("MAX_TS_SKEW_S", "inf"), ("WINDOWS__ALLOWED_LATENESS_S", "inf"),
                                             ("WINDOWS__LENGTH_S", "nan"), ("WINDOWS__LENGTH_S", "-5")])
def test_non_finite_or_negative_durations_are_rejected(name: str, value: str) -> None:
    assert audit_settings({PREFIX + name: value})[0] == "rejected"


@pytest.mark.parametrize("text", [f'[postgres]\ndsn = ["postgresql://u:{SECRET}@h/db"]\n',
                                  f'[mqtt]\npasword = "{SECRET}"\n'])
def test_a_mistyped_or_misspelt_secret_is_not_echoed(text: str) -> None:
    outcome, problems = audit_settings({}, text.encode())
    assert outcome == "rejected" and problems == []


@pytest.mark.parametrize("text", [b"[mqtt\n", b"\xff = 1\n", b"a = " + b"[" * 3000 + b"]" * 3000 + b"\n"])
def test_a_broken_toml_file_is_named(text: bytes) -> None:
    assert audit_settings({}, text) == ("rejected", [])


def test_a_misspelt_top_level_variable_is_an_error() -> None:
    assert audit_settings({PREFIX + "MAX_TS_SKEW": "60"})[0] == "rejected"


def test_a_registry_with_impossible_shifts_is_rejected() -> None:
    doc = json.loads(json.dumps(BASE_REGISTRY))
    doc["technicians"][0]["shift"] = {"start": "25:00", "end": "99:99", "days": [7, -1]}
    assert audit_registry(toml_doc(doc))[0] == "rejected"


def test_a_deeply_nested_registry_is_a_registry_error() -> None:
    assert audit_registry(b"a = " + b"[" * 3000 + b"]" * 3000 + b"\n")[0] == "rejected"
