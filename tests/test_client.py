"""The DialNexa client's failure handling against real servers on loopback: the emulator with faults injected through
its ``/_control/faults`` routes, and a scripted server that answers each request with the next step of a script."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from webcall.dialnexa import DialNexaClient, RetryPolicy
from webcall.emulator.server import EmulatorServer
from webcall.emulator.testing import EmulatorControl
from webcall.errors import (
    ConfigError,
    DialNexaAPIError,
    DialNexaBadRequest,
    DialNexaConnectError,
    DialNexaError,
    DialNexaRateLimited,
    DialNexaServerError,
    DialNexaTimeout,
    DialNexaTransportError,
)

from .net import free_port

OK_CALL = {
    "id": "call_1",
    "access_token": "wct_x",
    "media": {"whip_url": "https://m/whip"},
}
TIMEOUT = 0.3
"""The scripted client's timeout: a step that stalls outlasts it."""

Step = Callable[[web.Request], Awaitable[web.StreamResponse]]


def reply(status: int, body: object = None, headers: dict[str, str] | None = None) -> Step:
    async def step(request: web.Request) -> web.StreamResponse:
        if body is None:
            return web.Response(status=status, headers=headers)
        return web.json_response(body, status=status, headers=headers)

    return step


def text(status: int, content: str) -> Step:
    async def step(request: web.Request) -> web.StreamResponse:
        return web.Response(status=status, text=content)

    return step


async def drop(request: web.Request) -> web.StreamResponse:
    """Take the request in, then close the connection without a byte of answer."""
    await request.read()
    if request.transport is not None:
        request.transport.close()
    return web.Response(status=499)


async def stall(request: web.Request) -> web.StreamResponse:
    """Answer long after the client's timeout."""
    await asyncio.sleep(TIMEOUT * 10)
    return web.Response(status=204)


class Script:
    """A server on loopback that answers the n-th request with the n-th step; the client's backoff sleeps are
    recorded instead of slept. With ``listening=False`` the port refuses connections until the first backoff."""

    def __init__(self, *steps: Step, listening: bool = True) -> None:
        self.steps = list(steps)
        self.requests: list[web.Request] = []
        self.sleeps: list[float] = []
        self.port = free_port()
        self.base_url = f"http://127.0.0.1:{self.port}/v1"
        self._listening = listening
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", self._handle)
        self.server = TestServer(app, host="127.0.0.1", port=self.port)

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        self.requests.append(request)
        return await self.steps.pop(0)(request)

    async def start(self) -> None:
        await self.server.start_server()

    async def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        if not self._listening:
            self._listening = True
            await self.start()

    def client(self, policy: RetryPolicy | None = None, **options: Any) -> DialNexaClient:
        return DialNexaClient(
            api_key="kid:secret",
            base_url=self.base_url,
            timeout=TIMEOUT,
            sleep=self.sleep,
            jitter=lambda: 0.5,
            policy=policy or RetryPolicy(max_attempts=3, base_delay=0.1, max_delay=1.0),
            **options,
        )


@pytest.fixture
async def script() -> AsyncIterator[Callable[..., Awaitable[Script]]]:
    scripts: list[Script] = []

    async def make(*steps: Step, listening: bool = True) -> Script:
        s = Script(*steps, listening=listening)
        if listening:
            await s.start()
        scripts.append(s)
        return s

    yield make
    for s in scripts:
        await s.server.close()


# -- through the emulator's fault routes -------------------------------------------------------------------------------
def emulator_client(emulator: EmulatorServer, sleeps: list[float], **options: Any) -> DialNexaClient:
    async def sleep(seconds: float) -> None:
        sleeps.append(seconds)

    return DialNexaClient(
        api_key=emulator.api_key,
        base_url=emulator.base_url,
        sleep=sleep,
        jitter=lambda: 0.5,
        policy=RetryPolicy(max_attempts=3, base_delay=0.1, max_delay=1.0),
        **options,
    )


async def test_a_get_is_retried_after_503s_then_succeeds(emulator: EmulatorServer, control: EmulatorControl) -> None:
    await control.add_fault(route="GET /v1/user-webhooks", kind="status", status=503, count=2)
    sleeps: list[float] = []
    async with emulator_client(emulator, sleeps) as client:
        assert await client.list_webhooks() == []
    assert sleeps == [0.1, 0.2]
    assert await control.request_count("GET /v1/user-webhooks") == 3


async def test_a_get_is_retried_after_a_timeout_and_a_dropped_connection(
    emulator: EmulatorServer, control: EmulatorControl
) -> None:
    await control.add_fault(route="GET /v1/user-webhooks", kind="timeout", delay=TIMEOUT * 10, count=1)
    await control.add_fault(route="GET /v1/user-webhooks", kind="reset", count=1)
    sleeps: list[float] = []
    async with emulator_client(emulator, sleeps, timeout=TIMEOUT) as client:
        assert await client.list_webhooks() == []
    assert sleeps == [0.1, 0.2]


@pytest.mark.parametrize(
    "fault",
    [
        {"kind": "status", "status": 503},
        {"kind": "reset"},
        {"kind": "timeout", "delay": TIMEOUT * 10},
    ],
    ids=["503", "dropped", "timeout"],
)
async def test_a_billable_post_is_not_sent_again_after_an_ambiguous_failure(
    emulator: EmulatorServer, control: EmulatorControl, fault: dict[str, Any]
) -> None:
    await control.add_fault(route="POST /v1/web-calls", count=1, **fault)
    sleeps: list[float] = []
    agent_id = next(iter(emulator.state.agents))
    async with emulator_client(emulator, sleeps, timeout=TIMEOUT) as client:
        with pytest.raises((DialNexaServerError, DialNexaTransportError)) as raised:
            await client.create_web_call(agent_id=agent_id, metadata={})
    assert not isinstance(raised.value, DialNexaConnectError)
    assert sleeps == []
    assert await control.request_count("POST /v1/web-calls") == 1


async def test_a_billable_post_is_sent_again_after_a_429_honouring_retry_after(
    emulator: EmulatorServer, control: EmulatorControl
) -> None:
    await control.add_fault(route="POST /v1/web-calls", kind="status", status=429, retry_after=2, count=1)
    sleeps: list[float] = []
    agent_id = next(iter(emulator.state.agents))
    async with emulator_client(emulator, sleeps) as client:
        session = await client.create_web_call(agent_id=agent_id, metadata={})
        await client.end_call(session.id)
    assert sleeps == [2.0]
    assert await control.request_count("POST /v1/web-calls") == 2


# -- through a scripted server -----------------------------------------------------------------------------------------
async def test_get_retried_on_503_then_succeeds(script: Any) -> None:
    s = await script(reply(503), reply(502), reply(200, {"id": "call_1", "status": "completed"}))
    async with s.client() as client:
        record = await client.get_call("call_1")
    assert record.status == "completed" and len(s.requests) == 3 and s.sleeps == [0.1, 0.2]
    assert s.requests[0].headers["authorization"] == "Bearer kid:secret"


async def test_get_gives_up_after_attempts(script: Any) -> None:
    s = await script(reply(503), reply(503), reply(503, {"statusCode": 503, "message": "down", "error": "Unavailable"}))
    async with s.client() as client:
        with pytest.raises(DialNexaServerError, match="down"):
            await client.get_call("call_1")
    assert len(s.requests) == 3


async def test_get_retried_on_network_errors(script: Any) -> None:
    s = await script(drop, stall, reply(200, {"id": "call_1"}))
    async with s.client() as client:
        assert (await client.get_call("call_1")).id == "call_1"
    assert len(s.requests) == 3


async def test_post_not_retried_after_ambiguous_timeout(script: Any) -> None:
    s = await script(stall, reply(201, OK_CALL))
    async with s.client() as client:
        with pytest.raises(DialNexaTimeout) as info:
            await client.create_web_call(agent_id="agent_1", metadata={})
    assert len(s.requests) == 1
    assert isinstance(info.value.__cause__, TimeoutError)


async def test_post_not_retried_after_503_or_dropped_connection(script: Any) -> None:
    for first in (reply(503), drop):
        s = await script(first, reply(201, OK_CALL))
        async with s.client() as client:
            with pytest.raises((DialNexaServerError, DialNexaTransportError)):
                await client.create_web_call(agent_id="agent_1", metadata={})
        assert len(s.requests) == 1


async def test_post_retried_when_it_never_left(script: Any) -> None:
    s = await script(reply(201, OK_CALL), listening=False)  # refused until the client's first backoff
    async with s.client() as client:
        session = await client.create_web_call(agent_id="agent_1", metadata={"name": "Priya"})
    assert session.id == "call_1" and len(s.requests) == 1 and s.sleeps == [0.1]


async def test_post_retried_after_429_with_retry_after(script: Any) -> None:
    s = await script(
        reply(429, {"statusCode": 429, "message": "slow down", "error": "Too Many Requests"}, {"Retry-After": "2"}),
        reply(201, OK_CALL),
    )
    async with s.client() as client:
        await client.create_web_call(agent_id="agent_1", metadata={})
    assert s.sleeps == [2.0]


async def test_retry_after_beyond_cap_gives_up_with_value(script: Any) -> None:
    s = await script(
        reply(429, {"statusCode": 429, "message": "later", "error": "Too Many Requests"}, {"Retry-After": "120"})
    )
    async with s.client() as client:
        with pytest.raises(DialNexaRateLimited) as info:
            await client.get_call("call_1")
    assert info.value.retry_after == 120.0


async def test_deadline_bounds_total_time(script: Any) -> None:
    now = [0.0]
    s = await script(reply(503), reply(503), reply(200, {"id": "call_1"}))

    async def sleep(seconds: float) -> None:
        now[0] += seconds

    client = DialNexaClient(
        api_key="k",
        base_url=s.base_url,
        sleep=sleep,
        jitter=lambda: 0.5,
        clock=lambda: now[0],
        deadline=0.25,
        policy=RetryPolicy(max_attempts=5, base_delay=0.2, max_delay=1.0),
    )
    with pytest.raises(DialNexaServerError):
        await client.get_call("call_1")
    await client.aclose()
    assert len(s.requests) == 2


async def test_error_message_list_is_joined(script: Any) -> None:
    body = {
        "statusCode": 400,
        "message": ["agent_id must be a string", "metadata must be an object"],
        "error": "Bad Request",
    }
    s = await script(reply(400, body))
    async with s.client() as client:
        with pytest.raises(DialNexaBadRequest) as info:
            await client.create_call(phone_number="+15550100", agent_id="a", metadata={})
    assert info.value.message == "agent_id must be a string; metadata must be an object"
    assert info.value.status_code == 400 and info.value.error == "Bad Request"


async def test_non_json_success_and_error_bodies(script: Any) -> None:
    s = await script(text(200, "<html>"), text(500, "oops"))
    async with s.client(policy=RetryPolicy(max_attempts=1)) as client:
        with pytest.raises(DialNexaAPIError, match="not JSON"):
            await client.get_agent("agent_1")
        with pytest.raises(DialNexaServerError, match="Internal Server Error"):  # the reason phrase, for want of JSON
            await client.get_agent("agent_1")


async def test_unexpected_shape_is_a_dialnexa_error(script: Any) -> None:
    s = await script(reply(201, {"id": "call_1"}))
    async with s.client() as client:
        with pytest.raises(DialNexaError, match="unexpected answer"):
            await client.create_web_call(agent_id="agent_1", metadata={})


async def test_connect_failure_on_real_socket() -> None:
    sleeps: list[float] = []

    async def sleep(seconds: float) -> None:
        sleeps.append(seconds)

    client = DialNexaClient(
        api_key="k", base_url="http://127.0.0.1:9/v1", sleep=sleep, policy=RetryPolicy(max_attempts=2)
    )
    with pytest.raises(DialNexaConnectError):
        await client.get_agent("agent_1")
    await client.aclose()
    assert len(sleeps) == 1


async def test_ids_cannot_escape_their_path(script: Any) -> None:
    s = await script()
    async with s.client() as client:
        for bad in ("../agents", "a/b", "..", ""):
            with pytest.raises(DialNexaError):
                await client.get_call(bad)
    assert s.requests == []


def test_legacy_base_url_refused() -> None:
    with pytest.raises(ConfigError, match="2026-07-31"):
        DialNexaClient(api_key="k", base_url="https://api.dialnexa.com")
