"""A customer's site for the tests and the benchmarks: its plugin configuration pointed at an emulator, and an aiohttp
app served on loopback the way ``web.run_app`` serves it."""

from __future__ import annotations

import socket
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from aiohttp import web
from aiohttp.log import access_logger

from webcall import Agent, WebCallConfig
from webcall.emulator.server import EmulatorServer

ORIGIN = "https://shop.example"
"""The site whose pages may start calls (``allowed_origins``)."""
SESSION_SECRET = "test-session-secret-0123456789-abcdef"
AGENTS = {
    "sales": Agent(id="agent_sales", visitor_variables=frozenset({"name", "company"})),
    "support": Agent(id="agent_support"),
}
"""The emulator's default agents under the aliases the widget names: ``sales`` takes the visitor's name and company."""


def host_config(emulator: EmulatorServer | None = None, **options: Any) -> WebCallConfig:
    """The plugin's configuration on a customer's site: DialNexa is ``emulator`` (its key and API; without one, the
    plugin runs its embedded emulator), the agents :data:`AGENTS`, pages from :data:`ORIGIN` and the tests' session
    secret; ``options`` set any other field or replace these."""
    settings: dict[str, Any] = {
        "agents": AGENTS,
        "allowed_origins": (ORIGIN,),
        "session_secrets": (SESSION_SECRET,),
    }
    if emulator is not None:
        settings.update(api_key=emulator.api_key, base_url=emulator.base_url)
    settings.update(options)
    return WebCallConfig(**settings)


@asynccontextmanager
async def served(
    app: web.Application,
    *,
    sock: socket.socket | None = None,
    host: str = "127.0.0.1",
    port: int = 0,
    shutdown_timeout: float = 1.0,
    access_log: bool = True,
) -> AsyncIterator[str]:
    """Serve ``app`` on ``sock`` (one already bound) or on ``host``:``port`` (0: a free port) and yield its origin,
    ``http://HOST:PORT``; the app is cleaned up on leaving.

    This is a production runner, as ``web.run_app`` uses: unlike aiohttp's test server, it does not cancel a handler
    whose client has gone, and it waits up to ``shutdown_timeout`` seconds for handlers still running at the end.
    """
    runner = web.AppRunner(app, shutdown_timeout=shutdown_timeout, access_log=access_logger if access_log else None)
    await runner.setup()
    try:
        site = web.SockSite(runner, sock) if sock is not None else web.TCPSite(runner, host, port)
        await site.start()
        bound_host, bound_port = runner.addresses[0][:2]
        yield f"http://{bound_host}:{bound_port}"
    finally:
        await runner.cleanup()
