"""The DialNexa client's failure handling, driven through exact failure sequences with httpx.MockTransport."""

from __future__ import annotations

from collections.abc import Callable

import httpx
import pytest

from webcall.dialnexa import DialNexaClient, RetryPolicy
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

BASE = "https://api.dialnexa.test/v1"
OK_CALL = {
    "id": "call_1",
    "access_token": "wct_x",
    "media": {"whip_url": "https://m/whip"},
}


Step = Callable[[httpx.Request], httpx.Response]


def reply(status: int, body: object = None, headers: dict[str, str] | None = None) -> Step:
    return lambda request: httpx.Response(status, json=body, headers=headers)


def raise_(exc: type[Exception]) -> Step:
    def step(request: httpx.Request) -> httpx.Response:
        raise exc("boom", request=request)  # type: ignore[call-arg]

    return step


class Script:
    def __init__(self, *steps: Step) -> None:
        self.steps = list(steps)
        self.requests: list[httpx.Request] = []
        self.sleeps: list[float] = []

    def handler(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        return self.steps.pop(0)(request)

    async def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)

    def client(self, policy: RetryPolicy | None = None) -> DialNexaClient:
        return DialNexaClient(
            api_key="kid:secret",
            base_url=BASE,
            transport=httpx.MockTransport(self.handler),
            sleep=self.sleep,
            jitter=lambda: 0.5,
            policy=policy or RetryPolicy(max_attempts=3, base_delay=0.1, max_delay=1.0),
        )


async def test_get_retried_on_503_then_succeeds() -> None:
    s = Script(reply(503), reply(502), reply(200, {"id": "call_1", "status": "completed"}))
    async with s.client() as client:
        record = await client.get_call("call_1")
    assert record.status == "completed" and len(s.requests) == 3 and s.sleeps == [0.1, 0.2]
    assert s.requests[0].headers["authorization"] == "Bearer kid:secret"


async def test_get_gives_up_after_attempts() -> None:
    s = Script(reply(503), reply(503), reply(503, {"statusCode": 503, "message": "down", "error": "Unavailable"}))
    async with s.client() as client:
        with pytest.raises(DialNexaServerError, match="down"):
            await client.get_call("call_1")
    assert len(s.requests) == 3


async def test_get_retried_on_network_errors() -> None:
    s = Script(raise_(httpx.ReadError), raise_(httpx.ReadTimeout), reply(200, {"id": "call_1"}))
    async with s.client() as client:
        assert (await client.get_call("call_1")).id == "call_1"


async def test_post_not_retried_after_ambiguous_timeout() -> None:
    s = Script(raise_(httpx.ReadTimeout), reply(201, OK_CALL))
    async with s.client() as client:
        with pytest.raises(DialNexaTimeout) as info:
            await client.create_web_call(agent_id="agent_1", metadata={})
    assert len(s.requests) == 1
    assert isinstance(info.value.__cause__, httpx.ReadTimeout)


async def test_post_not_retried_after_503_or_dropped_connection() -> None:
    for first in (reply(503), raise_(httpx.RemoteProtocolError)):
        s = Script(first, reply(201, OK_CALL))
        async with s.client() as client:
            with pytest.raises((DialNexaServerError, DialNexaTransportError)):
                await client.create_web_call(agent_id="agent_1", metadata={})
        assert len(s.requests) == 1


async def test_post_retried_when_it_never_left() -> None:
    s = Script(raise_(httpx.ConnectError), reply(201, OK_CALL))
    async with s.client() as client:
        session = await client.create_web_call(agent_id="agent_1", metadata={"name": "Priya"})
    assert session.id == "call_1" and len(s.requests) == 2


async def test_post_retried_after_429_with_retry_after() -> None:
    s = Script(
        reply(429, {"statusCode": 429, "message": "slow down", "error": "Too Many Requests"}, {"Retry-After": "2"}),
        reply(201, OK_CALL),
    )
    async with s.client() as client:
        await client.create_web_call(agent_id="agent_1", metadata={})
    assert s.sleeps == [2.0]


async def test_retry_after_beyond_cap_gives_up_with_value() -> None:
    s = Script(
        reply(429, {"statusCode": 429, "message": "later", "error": "Too Many Requests"}, {"Retry-After": "120"})
    )
    async with s.client() as client:
        with pytest.raises(DialNexaRateLimited) as info:
            await client.get_call("call_1")
    assert info.value.retry_after == 120.0


async def test_deadline_bounds_total_time() -> None:
    now = [0.0]
    s = Script(reply(503), reply(503), reply(200, {"id": "call_1"}))

    async def sleep(seconds: float) -> None:
        now[0] += seconds

    client = DialNexaClient(
        api_key="k",
        base_url=BASE,
        transport=httpx.MockTransport(s.handler),
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


async def test_error_message_list_is_joined() -> None:
    body = {
        "statusCode": 400,
        "message": ["agent_id must be a string", "metadata must be an object"],
        "error": "Bad Request",
    }
    s = Script(reply(400, body))
    async with s.client() as client:
        with pytest.raises(DialNexaBadRequest) as info:
            await client.create_call(phone_number="+15550100", agent_id="a", metadata={})
    assert info.value.message == "agent_id must be a string; metadata must be an object"
    assert info.value.status_code == 400 and info.value.error == "Bad Request"


async def test_non_json_success_and_error_bodies() -> None:
    s = Script(lambda r: httpx.Response(200, text="<html>"), lambda r: httpx.Response(500, text="oops"))
    async with s.client(policy=RetryPolicy(max_attempts=1)) as client:
        with pytest.raises(DialNexaAPIError, match="not JSON"):
            await client.get_agent("agent_1")
        with pytest.raises(DialNexaServerError):
            await client.get_agent("agent_1")


async def test_unexpected_shape_is_a_dialnexa_error() -> None:
    s = Script(reply(201, {"id": "call_1"}))
    async with s.client() as client:
        with pytest.raises(DialNexaError, match="unexpected answer"):
            await client.create_web_call(agent_id="agent_1", metadata={})


async def test_connect_failure_on_real_socket() -> None:
    client = DialNexaClient(
        api_key="k", base_url="http://127.0.0.1:9/v1", sleep=Script().sleep, policy=RetryPolicy(max_attempts=2)
    )
    with pytest.raises(DialNexaConnectError):
        await client.get_agent("agent_1")
    await client.aclose()


async def test_ids_cannot_escape_their_path() -> None:
    s = Script()
    async with s.client() as client:
        for bad in ("../agents", "a/b", "..", ""):
            with pytest.raises(DialNexaError):
                await client.get_call(bad)
    assert s.requests == []


def test_legacy_base_url_refused() -> None:
    with pytest.raises(ConfigError, match="2026-07-31"):
        DialNexaClient(api_key="k", base_url="https://api.dialnexa.com")
