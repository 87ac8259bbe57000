"""The CMMS hand-off's pure parts: mappings rendered into bodies, completions read back, its settings; and the
Maximo and SAP PM examples of docs/cmms.md rendering exactly the JSON the doc shows."""

from __future__ import annotations

import json
import re
import tomllib
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest

from smart_maintenance.config.cmms_settings import WORK_ORDER_FIELDS
from smart_maintenance.config.settings import load_settings
from smart_maintenance.operators.cmms import (
    MappingError,
    check_path,
    compile_mapping,
    completion_records,
    idempotency_key,
    render_body,
    render_path,
    retry_after_s,
)
from smart_maintenance.operators.plan.work_orders import WorkOrder

DOC = Path(__file__).parents[2] / "docs" / "cmms.md"
T0 = datetime(2026, 1, 6, 21, 35, tzinfo=timezone.utc)
NOW_MS = int(datetime(2026, 2, 1, tzinfo=timezone.utc).timestamp() * 1000)


def sample() -> dict:
    return WorkOrder("02316e68c99d7ad0", "compressor-01", "al9", "instrumentation", "open", 3, ("instrumentation",), 60,
                     T0, T0 + timedelta(days=1), T0, reason="sensor fault: vibration stuck").to_dict()


def test_fields_keep_their_type_templates_give_text_constants_stay_and_nulls_are_left_out() -> None:
    m = compile_mapping({"id": "{{ work_order_id }}", "prio": "{{ 6 - priority }}", "skills": "{{ required_skills }}",
                         "first": "{{ required_skills.0 }}", "text": "{{ kind }} / {{ technician_id }}",
                         "site": "BEDFORD", "n": 7, "flag": False, "tech": "{{ technician_id }}",
                         "d.Desc": "{{ reason | upper }}", "d.Due": "/Date({{ due_at | epoch_ms }})/"},
                        WORK_ORDER_FIELDS)
    assert render_body(m, sample()) == {
        "id": "02316e68c99d7ad0", "prio": 3, "skills": ["instrumentation"], "first": "instrumentation",
        "text": "instrumentation / ", "site": "BEDFORD", "n": 7, "flag": False,
        "d": {"Desc": "SENSOR FAULT: VIBRATION STUCK", "Due": "/Date(1767821700000)/"}}


def test_any_text_in_a_field_stays_inside_its_json_string() -> None:
    nasty = 'x", "status": "COMP"}\n{{ 7*7 }} </script>\u2028'
    m = compile_mapping({"description": "{{ reason }}", "long": "note: {{ reason }}"}, WORK_ORDER_FIELDS)
    body = json.dumps(render_body(m, sample() | {"reason": nasty}))
    assert json.loads(body) == {"description": nasty, "long": f"note: {nasty}"}  # no field injected, no template run


@pytest.mark.parametrize("spec, message", [
    ({"a": "{{ nope }}"}, "'nope' is not a field"),
    ({"a": "x {{ nope }}"}, "nope not a field"),
    ({"a": "{{ priority "}, "bad template"),
    ({"a": "{{ x }}", "a.b": "{{ y }}"}, "overlap"),
    ({"a": ["list"]}, "a value is a string"),
    ({"": "x"}, "bad external field name"),
    ({}, "at least one field"),
])
def test_a_bad_mapping_fails_at_start(spec: dict, message: str) -> None:
    with pytest.raises(MappingError, match=message):
        compile_mapping(spec, ["priority", "x", "y"])


def test_templates_cannot_reach_python() -> None:
    for spec in ("{{ reason.__class__.__mro__[1].__subclasses__() }}", "x{{ reason.__class__ }}",
                 "{{ cycler.__init__.__globals__ }}", "{{ required_skills.append(1) }}"):
        m = compile_mapping({"a": spec})
        try:
            got = render_body(m, sample())
        except MappingError as e:
            assert "unsafe" in str(e) or "undefined" in str(e) or "Security" in str(e), e
        else:
            assert got == {}, spec  # a dotted path reads keys and indexes only: nothing
    with pytest.raises(MappingError, match="not a JSON value"):
        render_body(compile_mapping({"a": "{{ range(3) }}"}), {})


def test_the_same_work_order_always_gives_the_same_body_path_and_key() -> None:
    m = compile_mapping({"b": "{{ asset_id }}", "a": "{{ priority }}"}, WORK_ORDER_FIELDS)
    assert list(render_body(m, sample())) == ["b", "a"]  # the mapping's order
    assert render_body(m, sample()) == render_body(m, sample())
    wo = sample() | {"work_order_id": "../a b/?x", "revision": 1000}
    assert render_path("/wo/{{ work_order_id }}", wo) == "/wo/..%2Fa%20b%2F%3Fx"
    assert idempotency_key(wo) == "../a b/?x:1000"


def test_retry_after_in_seconds_or_as_an_http_date() -> None:
    now = datetime(2026, 1, 1, 12, tzinfo=timezone.utc)
    assert retry_after_s("120") == 120.0
    assert retry_after_s("Thu, 01 Jan 2026 12:00:30 GMT", now) == 30.0
    assert retry_after_s("Thu, 01 Jan 2026 11:00:00 GMT", now) == 0.0
    assert retry_after_s(None) is None and retry_after_s("x" * 100) is None


def completions(items: list, done: tuple = ("COMP",)) -> tuple:
    m = compile_mapping({"work_order_id": "{{ wonum }}", "asset_id": "{{ assetnum | lower }}",
                         "completed_at": "{{ actfinish }}", "status": "{{ status }}", "notes": "{{ fdbk }}"})
    return completion_records({"member": items}, "member", m, host="maximo.example", done=done, now_ms=NOW_MS,
                              max_ahead_ms=86_400_000)


def test_completions_become_maintenance_records_with_the_cmms_as_their_origin() -> None:
    good = {"wonum": "w1", "assetnum": "PUMP-01", "status": "COMP", "actfinish": "2026-01-06T23:00:00+01:00",
            "fdbk": "bearing", "source": "cli:ana", "maintenance_id": "mine"}
    records, bad = completions([good, {"wonum": "w2", "assetnum": "PUMP-01", "status": "INPRG"}])
    assert bad == [] and len(records) == 1
    (r,) = records
    assert (r.asset_id, r.work_order_id, r.notes, r.source) == ("pump-01", "w1", "bearing", "cmms:maximo.example")
    assert r.completed_at == datetime(2026, 1, 6, 22, tzinfo=timezone.utc)  # event time, zone honoured
    # the same work order completed at another time (edited in the CMMS) is the same record id
    (again,), _ = completions([good | {"actfinish": "2026-01-07T08:00:00Z"}])
    assert again.maintenance_id == r.maintenance_id != "mine"
    other, _ = completions([good | {"wonum": "w3"}])
    assert other[0].maintenance_id != r.maintenance_id


@pytest.mark.parametrize("item, detail", [
    ({"assetnum": "P", "status": "COMP", "actfinish": "2026-01-06T23:00:00Z"}, "work_order_id is required"),
    ({"wonum": "w", "assetnum": "P", "status": "COMP"}, "completed_at is missing"),
    ({"wonum": "w", "assetnum": "P", "status": "COMP", "actfinish": "2026-03-01T00:00:00Z"}, "in the future"),
    ({"wonum": "w", "assetnum": "P", "status": "COMP", "actfinish": "1900-01-01T00:00:00Z"}, "out of range"),
    ({"wonum": "w", "assetnum": "P", "status": "COMP", "actfinish": "yesterday"}, "not an RFC 3339 time"),
    ({"wonum": {"x": 1}, "assetnum": "P", "status": "COMP", "actfinish": "2026-01-06T23:00:00Z"}, "work_order_id"),
    ("text", "must be an object"),
])
def test_unusable_completions_are_dead_letters_that_say_why(item: object, detail: str) -> None:
    records, bad = completions([item])
    assert records == [] and len(bad) == 1
    assert bad[0].reason == "bad_maintenance" and detail in bad[0].detail and bad[0].origin == \
        "cmms:maximo.example item 0"


def test_an_answer_without_the_list_is_one_dead_letter() -> None:
    m = compile_mapping({"work_order_id": "{{ id }}"})
    records, bad = completion_records({"error": "x"}, "d.results", m, host="h", now_ms=NOW_MS, max_ahead_ms=0)
    assert records == [] and bad[0].detail == "no list at d.results of the CMMS answer"


def test_settings_refuse_credentials_over_plain_http_except_to_loopback() -> None:
    auth = {"kind": "bearer", "token": "t" * 20}
    with pytest.raises(ValueError, match="cmms sends bearer credentials over http:// to cmms.plant"):
        load_settings(cmms={"enabled": True, "base_url": "http://cmms.plant/api", "auth": auth})
    for url in ("https://cmms.plant/api", "http://127.0.0.1:8080/api", "http://localhost/api", "http://[::1]/x"):
        assert load_settings(cmms={"enabled": True, "base_url": url, "auth": auth}).cmms.enabled
    assert load_settings(cmms={"enabled": True, "base_url": "http://cmms.plant/api", "auth": auth},
                         allow_plaintext_credentials=True).cmms.host == "cmms.plant"
    assert load_settings(cmms={"enabled": True, "base_url": "http://cmms.plant/api"}).cmms.enabled  # no credentials


@pytest.mark.parametrize("cmms, message", [
    ({"enabled": True}, "needs cmms.base_url"),
    ({"base_url": "ftp://x"}, "http:// or https://"),
    ({"base_url": "https://u:p@x/api"}, "no credentials"),
    ({"auth": {"kind": "bearer"}}, "needs cmms.auth.token"),
    ({"auth": {"kind": "basic", "username": "u"}}, "needs cmms.auth.username and cmms.auth.password"),
    ({"headers": {"Authorization": "Bearer x"}}, "set by the connector"),
    ({"update": {"method": "PUT", "path": "/wo/{{ wonum }}"}}, "wonum not a field"),
    ({"mapping": {"wonum": "{{ work_order }}"}}, "'work_order' is not a field"),
    ({"completions": {"mapping": {"work_order_id": "{{ a }}"}}}, "must give asset_id, completed_at"),
])
def test_settings_that_cannot_work_fail_at_start(cmms: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        load_settings(cmms=cmms)


@pytest.mark.parametrize("path", [
    "/workorders", "/workorders/{{ work_order_id }}", "/wo/{{work_order_id}}/{{ asset_id }}", "/{{ revision }}",
    "/a}}b/{{ site }}", "/wo/{{ wonum }}", "/wo/{{ true }}", "/wo/{{ none }}", "/wo/{{ not }}", "/wo/{{ in }}",
    "/wo/{{ asset_id.x }}", "/wo/{{- asset_id -}}", "/wo/{% if site %}x{% endif %}", "/wo/{# c #}", "/wo/{{ a",
    "/wo/{{ work_order_id | upper }}", "/wo/{ site }", "/wo/{{ 1 }}", "/wo/{{ work_order_id }}{{", "",
])
def test_a_path_is_accepted_or_refused_as_jinja_would_without_loading_it_for_plain_fields(path: str) -> None:
    from jinja2 import TemplateError, meta
    from jinja2.sandbox import ImmutableSandboxedEnvironment

    known = WORK_ORDER_FIELDS + ("none", "not", "in", "true")  # names Jinja does not read as fields
    try:
        used = meta.find_undeclared_variables(ImmutableSandboxedEnvironment().parse(path))
        jinja_ok = used <= set(known)
    except TemplateError:
        jinja_ok = False
    try:
        check_path(path, known)
        ok = True
    except MappingError:
        ok = False
    assert ok == jinja_ok


def test_a_secret_is_not_in_the_settings_repr() -> None:
    s = load_settings(cmms={"auth": {"kind": "bearer", "token": "very-secret-token"}})
    assert "very-secret-token" not in repr(s) and "very-secret-token" not in str(s.cmms)


@pytest.mark.parametrize("section", ["## IBM Maximo", "## SAP PM"])
def test_the_docs_examples_load_and_render_the_json_they_show(section: str) -> None:
    text = DOC.read_text().split(section, 1)[1].split("\n## ", 1)[0]
    (toml,) = re.findall(r"```toml\n(.*?)```", text, re.S)
    (shown,) = re.findall(r"```json\n(.*?)```", text, re.S)
    cmms = tomllib.loads(toml)["cmms"]
    cmms["auth"] |= {"token": "t", "password": "p"}  # secrets come from the environment
    settings = load_settings(cmms=cmms)
    body = render_body(compile_mapping(settings.cmms.mapping, WORK_ORDER_FIELDS), sample())
    assert json.dumps(body) == shown.strip()
    # and the read-back mapping turns a completion of that CMMS into a record
    c = settings.cmms.completions
    item = ({"externalrefid": "02316e68c99d7ad0", "assetnum": "COMPRESSOR-01", "status": "COMP",
             "actfinish": "2026-01-06T23:00:00-05:00", "fdbk": "replaced"} if "Maximo" in section else
            {"YY1_SmartMaintenanceId": "02316e68c99d7ad0", "Equipment": "COMPRESSOR-01",
             "MainWorkCompletedDateTime": "/Date(1767758400000)/"})
    doc = {"member": [item]} if c.items_path == "member" else {"d": {"results": [item]}}
    (record,), bad = completion_records(doc, c.items_path, compile_mapping(c.mapping), host="h", done=c.done_statuses,
                                        now_ms=NOW_MS, max_ahead_ms=0)
    assert bad == [] and (record.work_order_id, record.asset_id) == ("02316e68c99d7ad0", "compressor-01")
    assert record.completed_at == datetime(2026, 1, 7, 4, tzinfo=timezone.utc)


def test_the_docs_settings_example_loads() -> None:
    text = DOC.read_text().split("## Settings", 1)[1]
    cmms = tomllib.loads(re.search(r"```toml\n(.*?)```", text, re.S).group(1))["cmms"]
    cmms["auth"]["token"] = "from-the-environment"
    s = load_settings(cmms=cmms)
    assert s.cmms.enabled and s.cmms.update.path == "/workorders/{{ work_order_id }}" and s.cmms.completions.path
