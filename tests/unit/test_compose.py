"""docker-compose.yml stays consistent with the CLI and the settings it sets."""

from pathlib import Path

import yaml
from typer.testing import CliRunner

from smart_maintenance.cli import app
from smart_maintenance.config.settings import Settings

COMPOSE = Path(__file__).parents[2] / "docker-compose.yml"


def test_services_and_their_commands_exist():
    spec = yaml.safe_load(COMPOSE.read_text())
    services = spec["services"]
    assert {"postgres", "kafka", "mosquitto", "app-mqtt", "app-kafka", "simulator"} <= set(services)
    runner = CliRunner()
    for name in ("app-mqtt", "app-kafka", "simulator"):
        command = services[name]["command"]
        result = runner.invoke(app, [command[0], "--help"])
        assert result.exit_code == 0, name
        for option in (c for c in command if c.startswith("--")):
            assert option in result.output, f"{name}: {command[0]} has no {option}"


def test_app_environment_is_valid_settings(monkeypatch):
    env = yaml.safe_load(COMPOSE.read_text())["services"]["app-kafka"]["environment"]
    for key, value in env.items():
        monkeypatch.setenv(key, str(value))
    s = Settings()
    assert s.kafka.brokers == ("kafka:9092",) and s.postgres.schema_name == "kafka"
    assert s.postgres.dsn.get_secret_value().startswith("postgresql://sm:")


def test_each_app_has_its_own_data_and_can_be_scraped():
    services = yaml.safe_load(COMPOSE.read_text())["services"]
    mounts = {name: services[name]["volumes"][0].split(":")[0] for name in ("app-mqtt", "app-kafka")}
    assert len(set(mounts.values())) == 2, mounts  # one embedded ChromaDB and model store per app
    env = services["app-mqtt"]["environment"]
    assert env["SMART_MAINTENANCE__METRICS_HOST"] == "0.0.0.0"  # noqa: S104 the container's published metrics port
    assert env["SMART_MAINTENANCE__DATA_DIR"] == "/data"
