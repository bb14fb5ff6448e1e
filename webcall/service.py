"""The plugin as its own small service, for sites whose backend is not aiohttp (or that have none).

``python -m webcall serve`` runs one process; several workers share a Redis store under gunicorn::

    WEBCALL_STORE=redis://localhost:6379/0 WEBCALL_SESSION_SECRET=... \\
        gunicorn webcall.service:app -k aiohttp.GunicornWebWorker -w 4 -b 0.0.0.0:8080

Everything is configured from the environment (the README's configuration table; ``WEBCALL_PREFIX`` moves the
routes from ``/webcall``). Besides the plugin's routes the service answers ``/`` (the first agent's call page, or
the embed snippet where calls need a ticket) and ``/healthz``, and logs one line per call event.
"""

from __future__ import annotations

import logging
import os

from aiohttp import web

from .app import handle_of, setup
from .config import WebCallConfig
from .events import CallEvent
from .views import health_response

log = logging.getLogger("webcall.service")

DEFAULT_PREFIX = "/webcall"


def create_service(config: WebCallConfig | None = None, *, prefix: str = DEFAULT_PREFIX) -> web.Application:
    """An application with the plugin mounted at ``prefix``, a home page and ``/healthz``."""
    service = web.Application()
    handle = setup(service, config, prefix=prefix)
    handle.on_call_event.append(log_call_event)
    service.router.add_get("/", home)
    service.router.add_get("/healthz", healthz)
    return service


async def app() -> web.Application:
    """The service from the environment: what gunicorn's aiohttp worker loads as ``webcall.service:app``."""
    config = WebCallConfig.from_env()
    if config.uses_emulator:
        log.warning(
            "webcall: DIALNEXA_API_KEY is not set, so this worker runs its own emulator; several workers need one "
            "DialNexa: set DIALNEXA_API_KEY, or DIALNEXA_BASE_URL to one `python -m webcall.emulator`"
        )
    return create_service(config, prefix=prefix_from_env())


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
