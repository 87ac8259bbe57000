"""docker-compose.yml and deploy/ stay consistent with the code: the CLI, the settings, the metrics, the topics.

Docker is not needed: everything here is read statically (tests/integration/test_deploy.py starts the
parts that exist outside Docker: Mosquitto with deploy/mosquitto.conf, a Chroma server for its health check).
"""

from __future__ import annotations

import ast
import functools
import json
import re
import tomllib
import types
import typing
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import pytest
import yaml
from paho.mqtt.client import topic_matches_sub
from pydantic import BaseModel
from typer.main import get_command

from smart_maintenance.cli import app
from smart_maintenance.config.settings import Settings

ROOT = Path(__file__).parents[2]
COMPOSE = ROOT / "docker-compose.yml"
DEPLOY = ROOT / "deploy"
PREFIX = "SMART_MAINTENANCE__"
APP_IMAGE = "smart-maintenance"


def _services() -> dict[str, dict[str, Any]]:
    return yaml.safe_load(COMPOSE.read_text())["services"]


def _apps() -> dict[str, dict[str, Any]]:
    """The services that run our image (the flows, the API, the publishers)."""
    return {n: s for n, s in _services().items() if s.get("image", "").split(":")[0] == APP_IMAGE}


def _flows() -> dict[str, dict[str, Any]]:
    return {n: s for n, s in _apps().items() if s["command"][0] == "run"}


def _settings(env: dict[str, Any], monkeypatch: pytest.MonkeyPatch) -> Settings:
    """The settings a service's environment gives (nothing else from this process's environment)."""
    import os

    with monkeypatch.context() as m:
        for key in [k for k in os.environ if k.startswith(PREFIX)]:
            m.delenv(key)
        for key, value in env.items():
            m.setenv(key, str(value))
        return Settings(_env_file=None)  # type: ignore[call-arg]


def _parse_cli(args: list[str]) -> Any:
    """Parse `args` as the CLI would (subcommands, options, their values), without running anything.

    Typer vendors its own click (typer._click): its classes are reached through the objects, not imported.
    """
    command: Any = get_command(app)
    name, rest, parent = APP_IMAGE, list(args), None
    while hasattr(command, "resolve_command"):  # a group
        ctx = command.context_class(command, info_name=name, parent=parent)
        found, sub, rest = command.resolve_command(ctx, rest)  # UsageError: no such command
        assert found is not None and sub is not None
        name, command, parent = found, sub, ctx
    return command.make_context(name, rest, parent=parent)


# -- commands --------------------------------------------------------------------------------------------

def test_every_command_and_health_check_a_service_runs_exists_in_the_cli():
    apps = _apps()
    assert {"app-mqtt", "app-kafka", "api", "simulator", "simulator-kafka"} <= set(apps)
    for name, service in apps.items():
        ctx = _parse_cli(service["command"])  # a missing command, option or a bad value raises here
        assert ctx.info_name == service["command"][0], name
        test = service["healthcheck"].get("test", [])
        if test[1:2] == [APP_IMAGE]:  # ["CMD", "smart-maintenance", ...]
            _parse_cli(test[2:])


def test_a_broken_command_is_caught():
    with pytest.raises(Exception, match="No such option: --recoverry"):
        _parse_cli(["run", "--source", "mqtt", "--recoverry", "/data/recovery"])
    with pytest.raises(Exception, match="valid number"):
        _parse_cli(["publish", "--to", "kafka", "--rate", "fast"])
    with pytest.raises(Exception, match="No such command 'stauts'"):
        _parse_cli(["stauts"])


# -- environment -----------------------------------------------------------------------------------------

def _field_path_exists(key: str) -> bool:
    """Does SMART_MAINTENANCE__A__B name a field a.b of Settings (as pydantic-settings reads it)?"""
    model: Any = Settings
    parts = key[len(PREFIX):].lower().split("__")
    for i, part in enumerate(parts):
        field = model.model_fields.get(part)
        if field is None:
            return False
        if i == len(parts) - 1:
            return True
        annotation = field.annotation
        if typing.get_origin(annotation) in (typing.Union, types.UnionType):
            annotation = next(a for a in typing.get_args(annotation) if a is not type(None))
        if typing.get_origin(annotation) is dict:
            return i == len(parts) - 2  # a key of a dict setting (kafka.extra)
        if not (isinstance(annotation, type) and issubclass(annotation, BaseModel)):
            return False
        model = annotation
    return False


def test_every_environment_variable_is_a_real_setting(monkeypatch):
    for name, service in _apps().items():
        env = service["environment"]
        for key in env:
            # pydantic-settings ignores an unknown top-level variable silently: a typo would do nothing
            assert key.startswith(PREFIX) and _field_path_exists(key), f"{name}: {key} is not a setting"
        _settings(env, monkeypatch)  # and the values validate
    assert not _field_path_exists(PREFIX + "METRICS_PORTT")
    assert not _field_path_exists(PREFIX + "INCIDENTS__CHROMA")
    assert _field_path_exists(PREFIX + "KAFKA__EXTRA__CLIENT.ID")


def test_the_environment_takes_effect(monkeypatch):
    s = _settings(_services()["app-kafka"]["environment"], monkeypatch)
    assert s.kafka.brokers == ("kafka:9092",) and s.postgres.schema_name == "kafka"
    assert s.postgres.dsn is not None and s.postgres.dsn.get_secret_value().startswith("postgresql://sm:")
    assert s.incidents.chroma_url == "http://chroma:8000" and s.incidents.collection == "incidents-kafka"


def test_each_flow_has_its_own_data_and_database_schema_and_collection(monkeypatch):
    flows = _flows()
    assert set(flows) == {"app-mqtt", "app-kafka"}
    mounts = {name: s["volumes"][0].split(":") for name, s in flows.items()}
    assert len({m[0] for m in mounts.values()}) == len(flows), mounts  # one model store and recovery per app
    for name, s in flows.items():
        settings = _settings(s["environment"], monkeypatch)
        assert mounts[name][1] == str(settings.data_dir) == "/data", name
        assert s["command"][s["command"].index("--recovery") + 1].startswith(f"{settings.data_dir}/")
    settings = [_settings(s["environment"], monkeypatch) for s in flows.values()]
    assert len({s.postgres.schema_name for s in settings}) == len(flows)
    assert len({s.incidents.collection for s in settings}) == len(flows)


# -- images and health -----------------------------------------------------------------------------------

def test_every_image_is_pinned():
    version = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["version"]
    for name, service in _services().items():
        image, _, tag = service["image"].rpartition(":")
        assert image and re.fullmatch(r"v?\d+\.\d+\.\d+([-.][a-z0-9.]+)?", tag), f"{name}: {service['image']}"
        if image == APP_IMAGE:
            assert tag == version, name


def test_the_chroma_server_matches_the_pinned_client():
    pins = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    client = next(p.split("==")[1] for p in pins if p.startswith("chromadb=="))
    [chroma] = [s for s in _services().values() if s["image"].startswith("chromadb/chroma:")]
    assert chroma["image"] == f"chromadb/chroma:{client}"


def test_every_service_has_a_health_check_and_waits_for_healthy_ones():
    services = _services()
    for name, service in services.items():
        check = service.get("healthcheck")
        assert check, f"{name} has no health check"
        if check.get("disable"):  # only a publisher: a client with nothing to probe
            assert service["command"][0] == "publish", f"{name} turns its health check off"
        else:
            assert check["test"][0] in ("CMD", "CMD-SHELL"), name
        for dep, how in service.get("depends_on", {}).items():
            assert dep in services, f"{name} depends on a missing service {dep}"
            if how["condition"] == "service_healthy":  # compose refuses to start it otherwise
                assert not services[dep]["healthcheck"].get("disable"), f"{name} waits for {dep}'s health"
    for name in _flows():
        assert services[name]["healthcheck"]["test"] == ["CMD", APP_IMAGE, "status"], name


# -- Kafka topics ----------------------------------------------------------------------------------------

def test_every_kafka_topic_the_apps_need_is_created(monkeypatch):
    services = _services()
    partitions = int(services["kafka"]["environment"]["KAFKA_NUM_PARTITIONS"])
    auto_create = str(services["kafka"]["environment"].get("KAFKA_AUTO_CREATE_TOPICS_ENABLE", "true")).lower()
    users = {n: s for n, s in _apps().items() if "kafka" in (s["command"][:3] + s["command"][-6:])}
    assert set(users) == {"app-kafka", "simulator-kafka"}
    for name, service in users.items():
        k = _settings(service["environment"], monkeypatch).kafka
        needed = {k.readings_topic} | {getattr(k, f"{stream}_topic") for stream in k.outputs}
        if k.maintenance_topic:
            needed.add(k.maintenance_topic)
        if service["command"][0] == "run":
            # the source and each output sink create theirs at start (connectors/kafka/admin.py)
            assert k.create_topics, f"{name}: kafka.create_topics is off and nothing creates {sorted(needed)}"
        else:  # a publisher relies on the flow, or on the broker creating the topic on first use
            assert "app-kafka" in service["depends_on"] or auto_create == "true", name
        # whoever creates a topic first, it gets the same partitions
        assert k.topic_partitions == partitions, f"{name}: kafka.topic_partitions != KAFKA_NUM_PARTITIONS"


# -- metrics: compose, Prometheus, Grafana, the code --------------------------------------------------------

_METRIC_CLASSES = {"Counter", "Gauge", "Histogram", "Summary"}
_SAMPLE_SUFFIXES = {
    "Counter": ("_total", "_created"),
    "Gauge": ("",),
    "Histogram": ("_bucket", "_sum", "_count", "_created"),
    "Summary": ("", "_sum", "_count", "_created"),
}


@functools.cache
def code_metrics() -> frozenset[str]:
    """Every series name the prometheus_client metrics defined in smart_maintenance/ expose."""
    names: set[str] = set()
    for path in (ROOT / "smart_maintenance").rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if not isinstance(node, ast.Call) or len(node.args) < 2:  # (name, documentation, ...)
                continue
            kind = node.func.id if isinstance(node.func, ast.Name) else getattr(node.func, "attr", None)
            first = node.args[0]
            if kind in _METRIC_CLASSES and isinstance(first, ast.Constant) and isinstance(first.value, str):
                base = first.value.removesuffix("_total") if kind == "Counter" else first.value
                names |= {base + s for s in _SAMPLE_SUFFIXES[kind]}
    return frozenset(names)


_PROMQL_WORDS = {"by", "without", "on", "ignoring", "group_left", "group_right", "bool", "and", "or", "unless",
                 "offset", "inf", "nan"}
PROMETHEUS_OWN = {"up", "scrape_duration_seconds", "scrape_samples_scraped"}  # made by Prometheus per target


def promql_metrics(expr: str) -> set[str]:
    """The metric names a PromQL expression reads."""
    expr = re.sub(r'"(?:[^"\\]|\\.)*"', "", expr)  # strings
    expr = re.sub(r"\{[^}]*\}|\[[^\]]*\]", "", expr)  # label matchers, ranges
    expr = re.sub(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", "", expr)  # label lists
    expr = re.sub(r"\b\d[\w.]*", "", expr)  # numbers, durations
    names = set()
    for m in re.finditer(r"[a-zA-Z_:][a-zA-Z0-9_:]*", expr):
        is_function = expr[m.end():].lstrip().startswith("(")
        if not is_function and m.group().lower() not in _PROMQL_WORDS:
            names.add(m.group())
    return names


def _dashboards() -> dict[str, dict[str, Any]]:
    return {p.name: json.loads(p.read_text()) for p in (DEPLOY / "grafana" / "dashboards").glob("*.json")}


def _panels(dashboard: dict[str, Any]) -> list[dict[str, Any]]:
    out = []
    for panel in dashboard.get("panels", []):
        out.append(panel)
        out.extend(panel.get("panels", []))  # rows
    return out


def test_promql_metric_names_are_found():
    assert promql_metrics('histogram_quantile(0.99, sum by (sink, le) (rate(sm_sink_write_seconds_bucket[5m])))'
                          ) == {"sm_sink_write_seconds_bucket"}
    assert promql_metrics('time() - max by (source) (a_b{x="y(z)"}) * 60 + c:d offset 5m') == {"a_b", "c:d"}
    assert {"sm_readings_in_total", "sm_sink_write_seconds_bucket", "sm_alarms_open"} <= code_metrics()
    assert "sm_readings_in" not in code_metrics()  # a counter is only seen as _total


def test_the_dashboard_and_prometheus_use_only_metrics_the_code_has():
    known = code_metrics() | PROMETHEUS_OWN
    used: dict[str, str] = {}
    dashboards = _dashboards()
    assert dashboards, "no dashboard in deploy/grafana/dashboards"
    for file, dashboard in dashboards.items():
        for panel in _panels(dashboard):
            for target in panel.get("targets", []):
                assert target.get("expr"), f"{file}: panel {panel.get('title')!r} has a target without a query"
                for metric in promql_metrics(target["expr"]):
                    used[metric] = f"{file}: {panel.get('title')!r}"
    prometheus = (DEPLOY / "prometheus.yml").read_text()
    for metric in re.findall(r"\bsm_[a-z0-9_]+", prometheus):
        used[metric] = "prometheus.yml"
    unknown = {m: where for m, where in used.items() if m not in known}
    assert not unknown, f"metrics no code defines: {unknown}"
    # the figures that tell whether a flow is healthy are all on the dashboard
    assert {"sm_readings_in_total", "sm_source_lag_seconds", "sm_dead_letters_total", "sm_alarms_open",
            "sm_sink_backlog_batches", "up"} <= set(used)


def test_grafana_is_provisioned_with_the_compose_prometheus():
    services = _services()
    mounts = dict(v.split(":")[:2] for v in services["grafana"]["volumes"])
    assert mounts["./deploy/grafana/provisioning"] == "/etc/grafana/provisioning"
    [datasource] = yaml.safe_load((DEPLOY / "grafana/provisioning/datasources/prometheus.yml").read_text())[
        "datasources"]
    url = urlparse(datasource["url"])
    prometheus = services[url.hostname]
    assert prometheus["image"].startswith("prom/prometheus:") and url.port == 9090
    [provider] = yaml.safe_load((DEPLOY / "grafana/provisioning/dashboards/smart-maintenance.yml").read_text())[
        "providers"]
    assert mounts["./deploy/grafana/dashboards"] == provider["options"]["path"]
    for file, dashboard in _dashboards().items():
        for panel in _panels(dashboard):
            for ds in [panel.get("datasource")] + [t.get("datasource") for t in panel.get("targets", [])]:
                assert ds in (None, {"type": "prometheus", "uid": datasource["uid"]}), f"{file}: {panel['title']}"


def test_prometheus_scrapes_every_flow_on_its_metrics_port(monkeypatch):
    services = _services()
    prometheus = services["prometheus"]
    mounts = dict(v.split(":")[:2] for v in prometheus["volumes"])
    assert f"--config.file={mounts['./deploy/prometheus.yml']}" in prometheus["command"]
    config = yaml.safe_load((DEPLOY / "prometheus.yml").read_text())
    targets = {t for job in config["scrape_configs"] for sc in job["static_configs"] for t in sc["targets"]}
    expected = set()
    for name, service in _apps().items():
        s = _settings(service["environment"], monkeypatch)
        if name in _flows():
            assert s.metrics_port is not None, f"{name} serves no metrics"
            assert s.metrics_host == "0.0.0.0", f"{name}: /metrics must bind 0.0.0.0 to be scraped"  # noqa: S104
            expected.add(f"{name}:{s.metrics_port}")
    assert targets == expected


def test_the_flows_use_the_compose_chroma_server(monkeypatch):
    services = _services()
    for name, service in _flows().items():
        url = urlparse(_settings(service["environment"], monkeypatch).incidents.chroma_url or "")
        assert url.hostname in services, f"{name}: incidents.chroma_url names no service"
        chroma = services[url.hostname]
        assert chroma["image"].startswith("chromadb/chroma:") and url.port == 8000, name  # the image listens on 8000
        assert service["depends_on"][url.hostname]["condition"] == "service_healthy", name
        assert "/8000" in " ".join(chroma["healthcheck"]["test"])
    assert [v.split(":")[1] for v in services["chroma"]["volumes"]] == ["/data"]  # the image's persist path


# -- MQTT ------------------------------------------------------------------------------------------------

def _mosquitto_conf() -> dict[str, str]:
    lines = [ln.split(None, 1) for ln in (DEPLOY / "mosquitto.conf").read_text().splitlines()]
    return {ln[0]: ln[1].strip() if len(ln) > 1 else "" for ln in lines if ln and not ln[0].startswith("#")}


def test_mosquitto_keeps_messages_within_byte_limits():
    conf = _mosquitto_conf()
    assert conf["max_queued_messages"] == "0" and conf["max_inflight_messages"] == "0"  # no count limits
    assert int(conf["max_queued_bytes"]) >= 256 * 2**20 and int(conf["max_inflight_bytes"]) > 0
    assert int(conf["max_packet_size"]) > Settings.model_fields["limits"].default.max_message_bytes
    assert conf["persistence"] == "true" and conf["queue_qos0_messages"] == "false"
    mounts = dict(v.split(":")[:2] for v in _services()["mosquitto"]["volumes"])
    assert conf["persistence_location"].rstrip("/") in mounts.values()  # on a volume: survives the container
    assert mounts["./deploy/mosquitto.conf"] == "/mosquitto/config/mosquitto.conf"
    assert all("#" not in v for v in conf.values()), "mosquitto reads an inline # as part of the value"


def test_no_flow_reads_its_own_mqtt_notifications_back(monkeypatch):
    """Issue 14 item 8: notifications published under the readings subscription would loop back as input."""
    from smart_maintenance.config.registry import load_registry
    from smart_maintenance.dataflows.sources import build_source

    for name, service in _flows().items():
        s = _settings(service["environment"], monkeypatch)
        prefix = s.notify.mqtt.topic or s.mqtt.alarm_topic
        assert not any(topic_matches_sub(sub, f"{prefix}/site/asset") for sub in s.mqtt.topics), name
        if s.source == "mqtt" or "mqtt" in service["command"]:
            build_source(s.model_copy(update={"source": "mqtt"}), load_registry(None))  # its own guard agrees


# -- docs ------------------------------------------------------------------------------------------------

def test_the_docs_name_the_services_the_compose_file_has():
    services = _services()
    incidents = (ROOT / "docs" / "incidents.md").read_text()
    assert set(re.findall(r"chromadb/chroma:[\w.]+", incidents)) == {services["chroma"]["image"]}
    operations = (ROOT / "docs" / "operations.md").read_text()
    table = operations.split("## The compose stack", 1)[1].split("\n\n")[2]
    named = {n for row in table.splitlines()[2:] for n in re.findall(r"`([a-z-]+)`", row.split("|")[1])}
    assert named == set(services)
