"""Typed keys for everything the emulator stores on its application and requests."""

from __future__ import annotations

from typing import TYPE_CHECKING

from aiohttp import web

from webcall.emulator.state import EmulatorState

if TYPE_CHECKING:
    from webcall.emulator.config import EmulatorConfig
    from webcall.emulator.faults import FaultRegistry
    from webcall.emulator.stats import RequestEntry, Stats
    from webcall.emulator.tasks import BackgroundTasks
    from webcall.emulator.webhooks import WebhookSender

STATE_KEY = web.AppKey("webcall.emulator.state", EmulatorState)
CONFIG_KEY: web.AppKey[EmulatorConfig] = web.AppKey("webcall.emulator.config")
FAULTS_KEY: web.AppKey[FaultRegistry] = web.AppKey("webcall.emulator.faults")
STATS_KEY: web.AppKey[Stats] = web.AppKey("webcall.emulator.stats")
TASKS_KEY: web.AppKey[BackgroundTasks] = web.AppKey("webcall.emulator.tasks")
WEBHOOKS_KEY: web.AppKey[WebhookSender] = web.AppKey("webcall.emulator.webhooks")

# Per request: the log entry being filled in, and the kind of fault that answered the request (if any).
REQUEST_ENTRY_KEY: web.RequestKey[RequestEntry] = web.RequestKey("webcall.emulator.request_entry")
FAULT_KIND_KEY: web.RequestKey[str] = web.RequestKey("webcall.emulator.fault_kind")
