"""The plugin as its own small service, for sites whose backend is not aiohttp (or that have none).

``python -m webcall serve`` runs one process; several workers share a Redis store under gunicorn::

    WEBCALL_STORE=redis://localhost:6379/0 WEBCALL_SESSION_SECRET=... \\
        gunicorn webcall.service:app -k aiohttp.GunicornWebWorker -w 4 -b 0.0.0.0:8080

Everything is configured from the environment (the README's configuration table; ``WEBCALL_PREFIX`` moves the
routes from ``/webcall``). Besides the plugin's routes the service answers ``/`` (the first agent's call page, or
the embed snippet where calls need a ticket) and ``/healthz``, and logs one line per call event.

The runner (:func:`create_runner`, also what ``app`` returns to gunicorn's aiohttp worker) caps the connections one
peer address holds (``WEBCALL_MAX_CONNECTIONS_PER_ADDRESS``, IPv6 per /64; not behind trusted proxies, where every
connection comes from the proxy), and ``accept()`` failing for want of file descriptors is logged once per 10 s.
It sets its own keep-alive (75 s) and graceful-shutdown time (5 s); gunicorn's ``--keep-alive`` and access-log
options do not reach it (access lines go to the ``aiohttp.access`` logger).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
from collections.abc import Callable
from typing import Any

from aiohttp import web

from .app import handle_of, setup
from .config import WebCallConfig
from .events import CallEvent
from .limits import AcceptErrorThrottle, PeerLimitedRunner
from .views import health_response

log = logging.getLogger("webcall.service")

DEFAULT_PREFIX = "/webcall"
KEEPALIVE_SECONDS = 75.0
SHUTDOWN_SECONDS = 5.0


def create_service(config: WebCallConfig | None = None, *, prefix: str = DEFAULT_PREFIX) -> web.Application:
    """An application with the plugin mounted at ``prefix``, a home page and ``/healthz``."""
    service = web.Application()
    handle = setup(service, config, prefix=prefix)
    handle.on_call_event.append(log_call_event)
    service.router.add_get("/", home)
    service.router.add_get("/healthz", healthz)
    service.on_startup.append(throttle_accept_errors)
    return service


def create_runner(service: web.Application, config: WebCallConfig, **settings: Any) -> web.AppRunner:
    """The runner that serves ``service``: at most ``max_connections_per_address`` connections per peer address,
    unless the service is behind trusted proxies (then every connection comes from a proxy, which is the place for
    that limit). ``settings`` go to :class:`aiohttp.web.AppRunner`."""
    per_address = None if config.trusted_proxies > 0 else config.max_connections_per_address
    settings = {"keepalive_timeout": KEEPALIVE_SECONDS, "shutdown_timeout": SHUTDOWN_SECONDS, **settings}
    return PeerLimitedRunner(service, connections_per_address=per_address, **settings)


def configure_logging() -> None:
    """Log the service's lines (one per call event, start-up, warnings) to stderr at INFO, unless whoever runs the
    service configured logging already (a root handler, e.g. gunicorn's ``--log-config``); aiohttp's access log only
    at WARNING."""
    if logging.getLogger().handlers:
        return
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    logging.getLogger("aiohttp.access").setLevel(logging.WARNING)


async def app() -> web.AppRunner:
    """The service from the environment, in its runner: what gunicorn's aiohttp worker loads as
    ``webcall.service:app`` (the worker serves a runner it is given as it is)."""
    configure_logging()
    config = WebCallConfig.from_env()
    if config.uses_emulator:
        log.warning(
            "webcall: DIALNEXA_API_KEY is not set, so this worker runs its own emulator; several workers need one "
            "DialNexa: set DIALNEXA_API_KEY, or DIALNEXA_BASE_URL to one `python -m webcall.emulator`"
        )
    return create_runner(create_service(config, prefix=prefix_from_env()), config)


async def run_service(runner: web.AppRunner, host: str, port: int, *, ready: Callable[[], None]) -> None:
    """Serve ``runner`` on ``host:port`` (``ready()`` once listening) until SIGINT or SIGTERM, then shut down
    gracefully: open calls' streams are closed and the store flushed on the way out."""
    stopped = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError):  # Windows: Ctrl-C still interrupts
            loop.add_signal_handler(signum, stopped.set)
    try:
        await runner.setup()  # a failure here still cleans up what had started
        await web.TCPSite(runner, host or None, port).start()
        ready()
        await stopped.wait()
    finally:
        await runner.cleanup()


async def throttle_accept_errors(service: web.Application) -> None:
    """From start-up on, the loop logs ``accept()`` failing for want of file descriptors once per interval with a
    count (asyncio reports each attempt, thousands a second once the descriptor table is full)."""
    AcceptErrorThrottle().install(asyncio.get_running_loop())


def prefix_from_env() -> str:
    return os.environ.get("WEBCALL_PREFIX", "").strip() or DEFAULT_PREFIX


async def home(request: web.Request) -> web.StreamResponse:
    """The service's own page: the first agent's call page; where calls need a ticket from the site's backend (which
    this page cannot have), the snippet page that shows how to embed the widget with one."""
    handle = handle_of(request.app)
    if handle.config.require_ticket:
        raise web.HTTPFound(handle.url("snippet"))
    first_agent = handle.agent_aliases[0]  # a configuration without agents does not start
    raise web.HTTPFound(handle.url("call_page", agent=first_agent))


async def healthz(request: web.Request) -> web.Response:
    """The plugin's readiness, at the service's root as load balancers expect it."""
    return health_response(await handle_of(request.app).health())


def log_call_event(event: CallEvent) -> None:
    """One line per call event, with what an operator looks for first."""
    details = {
        "agent": event.agent,
        "status": event.call.get("status"),
        "end_reason": event.call.get("end_reason"),
        "duration": event.call.get("duration"),
    }
    shown = " ".join(f"{name}={value}" for name, value in details.items() if value not in (None, ""))
    log.info("%s %s %s", event.type, event.call_id, shown)
