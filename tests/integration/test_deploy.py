"""The parts of the compose stack that run without Docker, run for real.

- deploy/mosquitto.conf in a real mosquitto (only its listener, paths and log moved into a temporary
  directory): every option name is one mosquitto accepts, and a persistent session keeps more QoS 1
  messages than mosquitto's default 1000 across a broker restart;
- the health checks of the mosquitto and chroma services, as docker-compose.yml writes them, against a
  real broker and a real Chroma server (`chroma run`, from the chromadb package).
"""

from __future__ import annotations

import subprocess
import threading
import time
from pathlib import Path

import paho.mqtt.client as mqtt
import pytest
import yaml
from paho.mqtt.enums import CallbackAPIVersion

from tests.integration.mqtt_broker import Broker, free_port
from tests.integration.test_incident_memory import chroma_url  # noqa: F401  the real Chroma server fixture

ROOT = Path(__file__).parents[2]
DEPLOY_CONF = ROOT / "deploy" / "mosquitto.conf"


def _health_check(service: str, port_in_image: int, port: int) -> list[str]:
    """A service's health-check command from docker-compose.yml, as the container would run it, on `port`."""
    test = yaml.safe_load((ROOT / "docker-compose.yml").read_text())["services"][service]["healthcheck"]["test"]
    assert test[0] == "CMD"
    return [arg.replace("$$", "$").replace(str(port_in_image), str(port)) for arg in test[1:]]  # compose: $$ is $


class DeployBroker(Broker):
    """mosquitto with deploy/mosquitto.conf; only where it listens, writes and logs is changed."""

    def _config(self, persistence: bool) -> str:
        moved = {"listener": f"listener {self.port} {self.host}",
                 "persistence_location": f"persistence_location {self.dir}/",
                 "log_dest": f"log_dest file {self.log}"}
        lines = []
        for line in DEPLOY_CONF.read_text().splitlines():
            option = line.split(None, 1)[0] if line.strip() and not line.startswith("#") else None
            lines.append(moved.pop(option) if option in moved else line)
        assert not moved, f"deploy/mosquitto.conf has no {sorted(moved)}"
        return "\n".join([*lines, "user root", f"pid_file {self.dir / 'mosquitto.pid'}"]) + "\n"


@pytest.fixture
def deploy_broker(tmp_path: Path):
    broker = DeployBroker(tmp_path / "mosquitto")
    broker.start()
    try:
        yield broker
    finally:
        broker.stop()


def _session(broker: Broker, got: list[bytes] | None = None) -> mqtt.Client:
    """The flow's kind of client: a persistent session (clean_session=False) subscribed at QoS 1."""
    client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="deploy-flow", clean_session=False)
    subscribed = threading.Event()
    client.on_subscribe = lambda *a: subscribed.set()
    if got is not None:
        client.on_message = lambda c, u, msg: got.append(msg.payload)
    client.connect(broker.host, broker.port)
    client.loop_start()
    client.subscribe("plant/#", qos=1)
    assert subscribed.wait(5)
    return client


def test_the_deploy_config_keeps_what_a_session_missed_across_a_broker_restart(deploy_broker: DeployBroker):
    n = 3000  # more than mosquitto's default max_queued_messages (1000), which drops the rest silently
    away = _session(deploy_broker)
    away.loop_stop()
    away.disconnect()
    pub = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="deploy-publisher")
    pub.connect(deploy_broker.host, deploy_broker.port)
    pub.loop_start()
    infos = [pub.publish(f"plant/north/pump-{i % 7}/vibration", f"{i}".encode(), qos=1) for i in range(n)]
    for info in infos:
        info.wait_for_publish(10)
    pub.loop_stop()
    pub.disconnect()
    deploy_broker.restart()  # SIGTERM: the session and its queue are saved with persistence true
    got: list[bytes] = []
    back = _session(deploy_broker, got)
    try:
        deadline = time.monotonic() + 15
        while len(got) < n and time.monotonic() < deadline:
            time.sleep(0.05)
    finally:
        back.loop_stop()
        back.disconnect()
    assert sorted(int(p) for p in got) == list(range(n))


def test_the_mosquitto_health_check_passes_on_a_running_broker_only(deploy_broker: DeployBroker):
    command = _health_check("mosquitto", 1883, deploy_broker.port)
    assert subprocess.run(command, capture_output=True, timeout=10).returncode == 0
    deploy_broker.stop()
    assert subprocess.run(command, capture_output=True, timeout=10).returncode != 0


def test_the_chroma_health_check_passes_on_a_running_server_only(chroma_url: str):  # noqa: F811
    port = int(chroma_url.rsplit(":", 1)[1])
    up = subprocess.run(_health_check("chroma", 8000, port), capture_output=True, timeout=10)
    assert up.returncode == 0, up.stderr
    down = subprocess.run(_health_check("chroma", 8000, free_port()), capture_output=True, timeout=10)
    assert down.returncode != 0
