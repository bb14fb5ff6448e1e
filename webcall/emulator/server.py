"""Run an emulator in the current event loop on a loopback port: for tests, the demo and ``python -m``."""

from __future__ import annotations

import dataclasses
import socket
from types import TracebackType
from typing import TYPE_CHECKING, Self

from aiohttp import web

from webcall.emulator.app import create_emulator_app
from webcall.emulator.config import EmulatorConfig
from webcall.emulator.keys import STATE_KEY
from webcall.emulator.state import EmulatorState

if TYPE_CHECKING:
    from webcall.emulator.testing import EmulatorControl

SHUTDOWN_TIMEOUT = 2.0


def _url_host(host: str) -> str:
    """The host as it appears in a URL a client can use (wildcard binds are reached on loopback)."""
    if host in ("", "0.0.0.0"):
        return "127.0.0.1"
    if host == "::":
        return "[::1]"
    return f"[{host}]" if ":" in host else host


class EmulatorServer:
    """An emulator served over HTTP.

    ``port=0`` picks a free port. The socket is bound before the application is built, so a ``public_url`` left
    unset is the bound origin, and ``whip_url`` values point back at this server.

    ::

        async with EmulatorServer() as emu:
            client = DialNexaClient(base_url=emu.base_url, api_key=emu.api_key)
            await emu.control.add_fault(route="POST /v1/web-calls", kind="status", status=503)

    :attr:`control` is a :class:`~webcall.emulator.testing.EmulatorControl` on this server, closed by :meth:`stop`.
    """

    def __init__(self, config: EmulatorConfig | None = None, *, host: str = "127.0.0.1", port: int = 0) -> None:
        self._config = config or EmulatorConfig()
        self._host = host
        self._port = port
        self._origin: str | None = None
        self._app: web.Application | None = None
        self._runner: web.AppRunner | None = None
        self._control: EmulatorControl | None = None

    async def start(self) -> None:
        if self._runner is not None:
            raise RuntimeError("EmulatorServer is already started")
        sock = self._bind()
        try:
            port = sock.getsockname()[1]
            self._origin = f"http://{_url_host(self._host)}:{port}"
            if self._config.public_url is None:
                self._config = dataclasses.replace(self._config, public_url=self._origin)
            app = create_emulator_app(self._config)
            runner = web.AppRunner(app, shutdown_timeout=SHUTDOWN_TIMEOUT)
            await runner.setup()
        except BaseException:
            sock.close()
            raise
        try:
            await web.SockSite(runner, sock).start()
        except BaseException:
            await runner.cleanup()
            sock.close()
            raise
        self._app, self._runner = app, runner

    def _bind(self) -> socket.socket:
        infos = socket.getaddrinfo(self._host or None, self._port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
        family, type_, proto, _, address = infos[0]
        sock = socket.socket(family, type_, proto)
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind(address)
            sock.setblocking(False)
        except BaseException:
            sock.close()
            raise
        return sock

    async def stop(self) -> None:
        control, self._control = self._control, None
        if control is not None:
            await control.close()
        runner, self._runner = self._runner, None
        if runner is not None:
            await runner.cleanup()

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.stop()

    def _started(self) -> tuple[web.Application, str]:
        if self._app is None or self._origin is None:
            raise RuntimeError("EmulatorServer is not started: await start() or use 'async with'")
        return self._app, self._origin

    @property
    def config(self) -> EmulatorConfig:
        """The configuration in force (``public_url`` filled in once started)."""
        return self._config

    @property
    def app(self) -> web.Application:
        return self._started()[0]

    @property
    def state(self) -> EmulatorState:
        return self._started()[0][STATE_KEY]

    @property
    def origin(self) -> str:
        """``http://HOST:PORT``, the origin the server was bound to."""
        return self._started()[1]

    @property
    def control(self) -> EmulatorControl:
        """The control routes of this server (faults, call and media records, deliveries), typed."""
        if self._control is None:
            from webcall.emulator.testing import EmulatorControl  # for test suites only: not loaded by a host

            self._control = EmulatorControl(self.origin)
        return self._control

    @property
    def base_url(self) -> str:
        return f"{self.origin}/v1"

    @property
    def api_key(self) -> str:
        return min(self._config.api_keys)
