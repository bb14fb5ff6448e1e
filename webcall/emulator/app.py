"""Assemble the emulator: state, REST and control routes, middlewares, the webhook sender, background-task lifetime
and (if installed) the WHIP media endpoint."""

from __future__ import annotations

import asyncio
import copy
import logging
from collections.abc import AsyncIterator

from aiohttp import web

from webcall.emulator.config import EmulatorConfig
from webcall.emulator.control import add_control_routes
from webcall.emulator.errors import error_middleware
from webcall.emulator.faults import FaultRegistry, fault_middleware
from webcall.emulator.keys import CONFIG_KEY, FAULTS_KEY, STATE_KEY, STATS_KEY, TASKS_KEY, WEBHOOKS_KEY
from webcall.emulator.rest import add_rest_routes
from webcall.emulator.state import EmulatorState
from webcall.emulator.stats import Stats, record_middleware
from webcall.emulator.tasks import BackgroundTasks
from webcall.emulator.webhooks import WebhookSender

log = logging.getLogger("webcall.emulator")


async def _background_tasks(app: web.Application) -> AsyncIterator[None]:
    app[TASKS_KEY].spawn(_expire_unused_web_calls(app[STATE_KEY]), name="emulator-expire-web-calls")
    yield
    await app[TASKS_KEY].cancel_all()


async def _expire_unused_web_calls(state: EmulatorState, every: float = 1.0) -> None:
    """A web call whose single-use media token expired unused never started: it ends as cancelled."""
    while True:
        await asyncio.sleep(every)
        now = state.clock()
        for call in list(state.calls.values()):
            expires = call.token_expires_at
            if call.type == "web" and not call.token_used and not call.ended and expires is not None and expires < now:
                log.info("emulator: call %s: media token expired unused; cancelled", call.id)
                state.end_call(call, "token_expired")


async def _wake_sleepers(app: web.Application) -> None:
    # Runs before aiohttp waits for in-flight handlers: latency and timeout faults return at once.
    app[FAULTS_KEY].shutting_down()


def _mount_media(app: web.Application, state: EmulatorState, config: EmulatorConfig) -> None:
    try:
        from webcall.emulator.media import MediaSettings, setup_media
    except ImportError as err:  # the 'emulator' extra (aiortc) is not installed
        log.info("emulator: WHIP media is unavailable (%s); REST only", err)
        return
    settings = MediaSettings(
        max_sessions=config.max_media_sessions,
        connect_timeout=config.media_connect_timeout,
        dtls_setup=config.media_dtls_setup,
    )
    setup_media(app, state, settings=settings)


def create_emulator_app(config: EmulatorConfig) -> web.Application:
    """A fresh emulator application: its own state (a copy of ``config.agents``), routes and middlewares."""
    state = EmulatorState(
        api_keys=set(config.api_keys),
        agents=copy.deepcopy(dict(config.agents)),
        token_ttl=config.token_ttl,
    )
    # Outermost first: the request log sees every final status; errors are shaped before it sees them; faults
    # answer before any handler runs.
    app = web.Application(middlewares=[record_middleware, error_middleware, fault_middleware])
    app[STATE_KEY] = state
    app[CONFIG_KEY] = config
    app[FAULTS_KEY] = FaultRegistry()
    app[STATS_KEY] = Stats()
    app[TASKS_KEY] = BackgroundTasks()
    sender = WebhookSender.from_config(state, config)
    app[WEBHOOKS_KEY] = sender
    state.listen(sender.on_state_event)
    add_rest_routes(app)
    add_control_routes(app)
    # Contexts close in reverse: media (ending its calls), then simulations, then the webhook sender, so the
    # deliveries those last events schedule are cancelled with the sender's client rather than left behind.
    app.cleanup_ctx.append(sender.lifespan)
    app.cleanup_ctx.append(_background_tasks)
    app.on_shutdown.append(_wake_sleepers)
    _mount_media(app, state, config)
    return app
