"""A real asyncua Server on a free loopback port, run on its own event loop thread; the test drives it.

One server per test module: `Server.init()` loads the standard address space, about 10 s on 2 busy cores.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator
from concurrent.futures import Future
from datetime import datetime
from typing import Any

import pytest
from asyncua import Server, ua
from asyncua.crypto.permission_rules import User, UserRole
from asyncua.server.user_managers import UserManager

from tests.integration.mqtt_broker import free_port

NS_URI = "urn:smart-maintenance:test"


USER, PASSWORD = "maint", "s3cret-Pa55"


class _Users(UserManager):
    """Anonymous sessions and USER with PASSWORD; any other is refused. `accepted`: the users let in."""

    def __init__(self) -> None:
        self.accepted: list[str] = []

    def get_user(self, iserver: Any, username: str | None = None, password: str | None = None,
                 certificate: Any = None) -> User | None:
        if username is None or (username, password) == (USER, PASSWORD):
            if username is not None:
                self.accepted.append(username)
            return User(role=UserRole.User, name=username)
        return None


class PlantServer:
    """`Objects/Plant/<asset>/<sensor>` Double variables with string node ids `ns=2;s=<asset>.<sensor>`."""

    def __init__(self, sensors: dict[str, tuple[str, ...]], port: int | None = None) -> None:
        self.port = port or free_port()
        self.endpoint = f"opc.tcp://127.0.0.1:{self.port}/plant/"
        self.sensors = sensors
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        self.server: Server | None = None
        self.stopped: Server | None = None
        self.vars: dict[str, Any] = {}
        self.users = _Users()
        self.ns = 0

    def _call(self, coro: Any) -> Any:
        fut: Future[Any] = asyncio.run_coroutine_threadsafe(coro, self.loop)
        return fut.result(20)

    def start(self) -> None:
        """Start it; a stopped server starts again with the same address space and port."""
        if self.stopped is not None:
            self._call(self.stopped.start())
            self.server, self.stopped = self.stopped, None
        else:
            self._call(self._start())

    async def _start(self) -> None:
        server = Server(user_manager=self.users)
        await server.init()
        server.set_endpoint(self.endpoint)
        self.ns = await server.register_namespace(NS_URI)
        plant = await server.nodes.objects.add_folder(ua.NodeId("Plant", self.ns), ua.QualifiedName("Plant", self.ns))
        for asset, names in self.sensors.items():
            folder = await plant.add_object(ua.NodeId(asset, self.ns), ua.QualifiedName(asset, self.ns))
            for sensor in names:
                var = await folder.add_variable(ua.NodeId(f"{asset}.{sensor}", self.ns),
                                                ua.QualifiedName(sensor, self.ns), 0.0)
                self.vars[f"{asset}.{sensor}"] = var
        await server.start()
        self.server = server

    def write(self, key: str, value: Any, ts: datetime, status: int = ua.StatusCodes.Good) -> None:
        dv = ua.DataValue(ua.Variant(value, ua.VariantType.Double if isinstance(value, float) else None),
                          ua.StatusCode(status), SourceTimestamp=ts, ServerTimestamp=ts)
        self._call(self.vars[key].write_value(dv))

    def stop(self) -> None:
        if self.server is not None:
            self._call(self._stop(self.server))
            self.server, self.stopped = None, self.server

    @staticmethod
    async def _stop(server: Server) -> None:
        """asyncua's stop can wait long for a connected client's session tasks on a loaded machine: give it a
        few seconds, then close the listening socket ourselves (what a crashed server leaves the client with)."""
        try:
            await asyncio.wait_for(server.stop(), 8)
        except TimeoutError:
            listener = getattr(server.bserver, "_server", None)
            if listener is not None:
                listener.close()

    def close(self) -> None:
        self.stop()
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(5)


@pytest.fixture(scope="module", name="opcua_server")
def opcua_server_fixture() -> Iterator[PlantServer]:
    server = PlantServer({"pump-01": ("temp", "vibration"), "fan-02": ("speed",)})
    server.start()
    yield server
    server.close()
