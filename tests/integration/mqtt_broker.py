"""A real Mosquitto per test: started on a free loopback port, killed afterwards.

The configuration loses nothing (`max_queued_messages 0`, `max_inflight_messages 0`:
Mosquitto's defaults silently drop QoS 1 messages past 1000 queued per client).
`user root` keeps a broker started as root from switching to the `mosquitto`
user, which could not write its files in pytest's temporary directories; it
has no effect when the tests run as another user.

Use the fixtures by importing them into a test module:

    from tests.integration.mqtt_broker import mosquitto, mosquitto_auth  # noqa: F401
"""

from __future__ import annotations

import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from smart_maintenance.config.settings import MqttSettings

MOSQUITTO_HINT = "mosquitto is not on PATH: install it (Debian: apt-get install mosquitto mosquitto-clients)"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Broker:
    """One mosquitto process; `restart()` keeps its port, config and persistence file."""

    def __init__(self, workdir: Path, *, users: dict[str, str] | None = None, persistence: bool = False) -> None:
        exe = shutil.which("mosquitto") or next(
            (p for p in ("/usr/sbin/mosquitto", "/usr/local/sbin/mosquitto") if Path(p).exists()), None
        )
        if exe is None:
            pytest.fail(MOSQUITTO_HINT)
        self.exe = exe
        self.dir = workdir
        self.dir.mkdir(parents=True, exist_ok=True)
        self.host, self.port = "127.0.0.1", free_port()
        self.users = users or {}
        self.log = self.dir / "mosquitto.log"
        self.conf = self.dir / "mosquitto.conf"
        self.conf.write_text(self._config(persistence))
        self.proc: subprocess.Popen[bytes] | None = None

    def _config(self, persistence: bool) -> str:
        lines = [
            f"listener {self.port} {self.host}",
            "user root",
            "max_queued_messages 0",
            "max_inflight_messages 0",
            f"persistence {'true' if persistence else 'false'}",
            f"persistence_location {self.dir}/",
            f"pid_file {self.dir / 'mosquitto.pid'}",
            f"log_dest file {self.log}",
            "log_type error",
            "log_type warning",
            "log_type notice",
            "set_tcp_nodelay true",
        ]
        if self.users:
            pw = self.dir / "passwords"
            for i, (user, password) in enumerate(self.users.items()):
                flags = ["-b", "-c"] if i == 0 else ["-b"]
                subprocess.run(["mosquitto_passwd", *flags, str(pw), user, password], check=True, capture_output=True)
            lines += ["allow_anonymous false", f"password_file {pw}"]
        else:
            lines.append("allow_anonymous true")
        return "\n".join(lines) + "\n"

    def settings(self, **overrides: object) -> MqttSettings:
        """MqttSettings pointing at this broker, with fast reconnects for tests."""
        base: dict[str, object] = {"host": self.host, "port": self.port, "reconnect_max_s": 2.0}
        return MqttSettings(**{**base, **overrides})

    def start(self, timeout_s: float = 5.0) -> None:
        self.proc = subprocess.Popen([self.exe, "-c", str(self.conf)],
                                     stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                err = self.proc.stderr.read().decode() if self.proc.stderr else ""
                log = self.log.read_text() if self.log.exists() else ""
                pytest.fail(f"mosquitto exited with {self.proc.returncode}: {err}{log}")
            try:
                socket.create_connection((self.host, self.port), timeout=0.2).close()
                return
            except OSError:
                time.sleep(0.02)
        self.stop()
        pytest.fail(f"mosquitto did not answer on {self.host}:{self.port} within {timeout_s} s")

    def stop(self) -> None:
        """SIGTERM (a persistent broker saves its sessions), then SIGKILL if it lingers."""
        if self.proc is None:
            return
        self.proc.terminate()
        try:
            self.proc.wait(5)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        if self.proc.stderr:
            self.proc.stderr.close()
        self.proc = None

    def restart(self) -> None:
        self.stop()
        self.start()


def _running(tmp_path: Path, **kwargs: object) -> Iterator[Broker]:
    broker = Broker(tmp_path / "mosquitto", **kwargs)  # type: ignore[arg-type]
    broker.start()
    try:
        yield broker
    finally:
        broker.stop()


@pytest.fixture
def mosquitto(tmp_path: Path) -> Iterator[Broker]:
    """An anonymous no-loss broker, with persistence so that sessions survive `restart()`."""
    yield from _running(tmp_path, persistence=True)


AUTH_USER, AUTH_PASSWORD = "plant", "s3cret-Pa55"


@pytest.fixture
def mosquitto_auth(tmp_path: Path) -> Iterator[Broker]:
    """A broker that only lets `AUTH_USER` / `AUTH_PASSWORD` in."""
    yield from _running(tmp_path, users={AUTH_USER: AUTH_PASSWORD})
