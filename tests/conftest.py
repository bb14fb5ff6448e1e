"""Shared fixtures: a real emulator on loopback and host apps that mount the plugin as a customer would."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import httpx
import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient

import webcall
from webcall import Agent, WebCallConfig
from webcall.emulator.config import EmulatorConfig
from webcall.emulator.server import EmulatorServer
from webcall.keys import RUNTIME
from webcall.runtime import Runtime

ORIGIN = "https://shop.example"
SESSION_SECRET = "test-session-secret-0123456789-abcdef"
AGENTS = {
    "sales": Agent(id="agent_sales", visitor_variables=frozenset({"name", "company"})),
    "support": Agent(id="agent_support"),
}

MakeHost = Callable[..., Awaitable[tuple[TestClient[web.Request, web.Application], webcall.WebCall]]]


@pytest.fixture
async def emulator() -> AsyncIterator[EmulatorServer]:
    async with EmulatorServer(EmulatorConfig(api_keys=frozenset({"emu_test:Sup3rSecretEmulatorKey"}))) as emu:
        yield emu


@pytest.fixture
def make_host(aiohttp_client: Any, emulator: EmulatorServer) -> MakeHost:
    """Build a host app with the plugin mounted at /webcall against the emulator; options override the config."""

    async def make(**options: Any) -> tuple[TestClient[web.Request, web.Application], webcall.WebCall]:
        settings: dict[str, Any] = {
            "api_key": emulator.api_key,
            "base_url": emulator.base_url,
            "agents": AGENTS,
            "allowed_origins": (ORIGIN,),
            "session_secrets": (SESSION_SECRET,),
            "upstream_timeout": 2.0,
        }
        settings.update(options)
        host = web.Application()
        handle = webcall.setup(host, WebCallConfig(**settings))
        client: TestClient[web.Request, web.Application] = await aiohttp_client(host)
        return client, handle

    return make


def runtime(handle: webcall.WebCall) -> Runtime:
    """The plugin's internals behind a handle (store, bus, tokens, open streams), for tests to look at."""
    return handle.app[RUNTIME]


async def add_fault(emulator: EmulatorServer, **fault: Any) -> None:
    async with httpx.AsyncClient() as http:
        response = await http.post(f"{emulator.origin}/_control/faults", json=fault)
        assert response.status_code == 201, response.text


async def upstream_count(emulator: EmulatorServer, route: str) -> int:
    """How many requests the emulator received for ``route`` (e.g. 'POST /v1/web-calls')."""
    return sum(1 for r in await emulator_requests(emulator) if f"{r['method']} {r['route']}" == route)


async def emulator_requests(emulator: EmulatorServer) -> list[dict[str, Any]]:
    async with httpx.AsyncClient() as http:
        response = await http.get(f"{emulator.origin}/_control/requests")
    body: list[dict[str, Any]] = response.json()
    return body


@pytest.fixture
def log_records(caplog: pytest.LogCaptureFixture) -> pytest.LogCaptureFixture:
    caplog.set_level(logging.DEBUG, logger="webcall")
    return caplog
