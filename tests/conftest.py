"""Shared fixtures: a real emulator on loopback and host apps that mount the plugin as a customer would."""

from __future__ import annotations

import logging
import sys
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from aiohttp import ClientResponse, web
from aiohttp.test_utils import TestClient

import webcall
from webcall.emulator.config import EmulatorConfig
from webcall.emulator.server import EmulatorServer
from webcall.emulator.testing import EmulatorControl
from webcall.keys import RUNTIME
from webcall.runtime import Runtime

from .hosting import ORIGIN, host_config
from .offers import OFFER
from .redis_server import RedisServer
from .service import Service, clean_environment, running_service

ORIGIN_HEADERS = {"Origin": ORIGIN}
"""What a browser on the allowed site sends with every request."""

ERROR_KEYS = {"statusCode", "error", "message", "code"}
Client = TestClient[web.Request, web.Application]
MakeHost = Callable[..., Awaitable[tuple[Client, webcall.WebCall]]]


@pytest.fixture
async def emulator() -> AsyncIterator[EmulatorServer]:
    # HTTP-level tests start many calls whose media never connects (no browser): room for them, and a short wait.
    config = EmulatorConfig(
        api_keys=frozenset({"emu_test:Sup3rSecretEmulatorKey"}), max_media_sessions=1000, media_connect_timeout=5.0
    )
    async with EmulatorServer(config) as emu:
        yield emu


@pytest.fixture
def control(emulator: EmulatorServer) -> EmulatorControl:
    """The emulator's control routes: faults, the requests it received, its call and media records."""
    return emulator.control


@pytest.fixture
def make_host(aiohttp_client: Any, emulator: EmulatorServer) -> MakeHost:
    """Build a host app with the plugin mounted at /webcall against the emulator; options override the config."""

    async def make(**options: Any) -> tuple[Client, webcall.WebCall]:
        host = web.Application()
        handle = webcall.setup(host, host_config(emulator, **{"upstream_timeout": 2.0, **options}))
        client: Client = await aiohttp_client(host)
        return client, handle

    return make


async def mint(client: Client, body: Any = None, headers: dict[str, str] | None = None) -> ClientResponse:
    """``POST /webcall/sessions`` as the widget sends it (agent ``sales`` with an SDP offer, from the allowed origin)
    unless told; a dict ``body`` without ``offer`` gets the standard one."""
    if body is None:
        body = {"agent": "sales"}
    if isinstance(body, dict) and "offer" not in body:
        body = {**body, "offer": OFFER}
    return await client.post("/webcall/sessions", json=body, headers=ORIGIN_HEADERS if headers is None else headers)


async def problem(response: ClientResponse, status: int, code: str) -> dict[str, Any]:
    """Assert ``response`` is the plugin's error shape with this status and code; returns the body."""
    assert response.status == status, await response.text()
    body: dict[str, Any] = await response.json()
    assert set(body) == ERROR_KEYS, body
    assert body["statusCode"] == status and body["code"] == code, body
    assert isinstance(body["error"], str) and body["message"], body
    return body


def without_defaults(emulator: EmulatorServer, agent_id: str) -> None:
    """The agent's published versions give no default values, so every placeholder needs one from the call."""
    for version in emulator.state.agents[agent_id].versions:
        version.default_dynamic_variables = {}


def runtime(handle: webcall.WebCall) -> Runtime:
    """The plugin's internals behind a handle (store, bus, tokens, open streams), for tests to look at."""
    return handle.app[RUNTIME]


@pytest.fixture
def redis(tmp_path: Path) -> Iterator[RedisServer]:
    """A real redis-server of the test's own, stopped afterwards."""
    server = RedisServer(tmp_path / "redis")
    server.start()
    yield server
    server.stop()


@pytest.fixture
def log_records(caplog: pytest.LogCaptureFixture) -> pytest.LogCaptureFixture:
    caplog.set_level(logging.DEBUG, logger="webcall")
    return caplog


EMULATOR_API_KEY = "emu_key:emu_secret"


@pytest.fixture
def emulator_process(tmp_path: Path) -> Iterator[Service]:
    """The emulator as its own process: every worker talks to the same DialNexa (key ``EMULATOR_API_KEY``)."""
    command = [
        sys.executable, "-m", "webcall.emulator", "--port", "{port}", "--api-key", EMULATOR_API_KEY,
        "--max-media-sessions", "200", "--media-connect-timeout", "5", "--log-level", "WARNING",
    ]  # fmt: skip
    with running_service(command, tmp_path, env=clean_environment(), ready_path="/_control/requests") as emulator:
        yield emulator
