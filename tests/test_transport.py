"""The DialNexa client's connection pool (aiohttp), against real sockets: what goes out, what comes back, how each way
of failing surfaces, and that the pool is bounded and reused."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import gzip
import json
import socket
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from tests.net import free_port
from webcall.dialnexa import DialNexaClient, RetryPolicy
from webcall.dialnexa.transport import AiohttpTransport, client_timeout
from webcall.errors import DialNexaConnectError, DialNexaError, DialNexaTimeout, DialNexaTransportError

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@pytest.fixture
async def serve() -> AsyncIterator[Callable[[Handler], Awaitable[str]]]:
    """Serve one handler for every path; yields a function that starts it and returns its base URL."""
    servers: list[TestServer] = []

    async def start(handler: Handler) -> str:
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", handler)
        server = TestServer(app, host="127.0.0.1")
        await server.start_server()
        servers.append(server)
        return str(server.make_url("/v1"))

    yield start
    for server in servers:
        await server.close()


class HandWrittenServer:
    """An HTTP server written by hand, to break a connection exactly where a test wants. ``converse(next_request,
    writer)`` runs for each connection, which is aborted when it returns; ``next_request()`` waits for the next
    request's headers on it. ``requests`` counts the requests that arrived."""

    def __init__(self, converse: Callable[[Callable[[], Awaitable[None]], asyncio.StreamWriter], Awaitable[None]]):
        self.converse = converse
        self.requests = 0

    @contextlib.asynccontextmanager
    async def running(self) -> AsyncIterator[str]:
        """Serve; yields the base URL."""
        port = free_port()
        server = await asyncio.start_server(self._connection, "127.0.0.1", port, family=socket.AF_INET)
        try:
            yield f"http://127.0.0.1:{port}/v1"
        finally:
            server.close()
            await server.wait_closed()

    async def _connection(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        async def next_request() -> None:
            await reader.readuntil(b"\r\n\r\n")
            self.requests += 1

        try:
            await self.converse(next_request, writer)
            await writer.drain()
        finally:
            writer.transport.abort()


def client(base_url: str, *, timeout: float = 5.0, transport: AiohttpTransport | None = None) -> DialNexaClient:
    return DialNexaClient(
        api_key="kid:secret",
        base_url=base_url,
        timeout=timeout,
        deadline=timeout * 4,
        policy=RetryPolicy(max_attempts=1),
        transport=transport,
    )


async def test_a_request_goes_out_as_given_and_the_answer_comes_back(serve: Any) -> None:
    seen: list[web.Request] = []
    bodies: list[bytes] = []

    async def handler(request: web.Request) -> web.Response:
        seen.append(request)
        bodies.append(await request.read())
        return web.json_response({"id": "agent_1", "name": "Sales"}, headers={"X-Request-Id": "r1"})

    base = await serve(handler)
    transport = AiohttpTransport()
    try:
        reply = await transport.send(
            "POST",
            f"{base}/agents?page=2",
            headers=[("Authorization", "Bearer k"), ("Content-Type", "application/json")],
            body=b'{"name":"Sales"}',
            limits=client_timeout(5.0),
            path="/agents",
        )
    finally:
        await transport.aclose()
    assert reply.status == 200 and reply.reason == "OK"
    assert reply.json() == {"id": "agent_1", "name": "Sales"}
    assert reply.headers["x-request-id"] == "r1"
    request = seen[0]
    assert (request.method, request.path, request.query_string) == ("POST", "/v1/agents", "page=2")
    assert bodies[0] == b'{"name":"Sales"}'
    assert request.headers["Authorization"] == "Bearer k"
    assert request.headers["Content-Type"] == "application/json"
    assert request.headers["Content-Length"] == str(len(bodies[0]))
    assert "User-Agent" not in request.headers and "Accept-Encoding" not in request.headers  # none of aiohttp's own


async def test_the_clients_own_requests(serve: Any) -> None:
    """What the DialNexa client sends: its headers, compact UTF-8 JSON, the query."""
    seen: list[tuple[web.Request, bytes]] = []

    async def handler(request: web.Request) -> web.Response:
        seen.append((request, await request.read()))
        if request.method == "GET":
            return web.json_response({"data": [{"id": "call_1", "status": "ended"}]})
        return web.json_response({"statusCode": 400, "message": "refused", "error": "Bad Request"}, status=400)

    base = await serve(handler)
    async with client(base) as dialnexa:
        with pytest.raises(DialNexaError):
            await dialnexa.create_web_call(agent_id="agent_1", metadata={"name": "Zoë", "visits": 2})
        calls = await dialnexa.list_calls(page=2, limit=5, status="ended")
    assert [call.id for call in calls] == ["call_1"]
    (post, body), (get, _) = seen
    assert body == '{"agent_id":"agent_1","metadata":{"name":"Zoë","visits":2}}'.encode()
    assert post.headers["Content-Type"] == "application/json"
    assert post.headers["Content-Length"] == str(len(body))
    assert post.headers["Authorization"] == "Bearer kid:secret"
    assert (post.headers["Accept"], post.headers["User-Agent"]) == ("application/json", "dialnexa-webcall")
    assert post.headers.getall("Accept-Encoding") == ["gzip, deflate"]
    assert (get.method, get.path, get.query_string) == ("GET", "/v1/calls", "page=2&limit=5&status=ended")
    assert "Content-Type" not in get.headers


async def test_a_compressed_answer_is_decoded_once(serve: Any) -> None:
    payload = {"id": "call_1", "status": "ended", "summary": "x" * 2000}

    async def handler(request: web.Request) -> web.Response:
        assert request.headers["Accept-Encoding"] == "gzip, deflate"
        return web.Response(
            body=gzip.compress(json.dumps(payload).encode()),
            headers={"Content-Encoding": "gzip", "Content-Type": "application/json"},
        )

    base = await serve(handler)
    async with client(base) as dialnexa:
        record = await dialnexa.get_call("call_1")
    assert record.summary == payload["summary"]


async def test_a_redirect_is_answered_not_followed_and_no_cookie_is_kept(serve: Any) -> None:
    requests: list[web.Request] = []

    async def handler(request: web.Request) -> web.Response:
        requests.append(request)
        raise web.HTTPFound("/elsewhere", headers={"Set-Cookie": "session=1; Path=/"})

    base = (await serve(handler)).replace("127.0.0.1", "localhost")  # a jar would keep a cookie for a name
    transport = AiohttpTransport()
    try:
        for _ in range(2):
            reply = await transport.send(
                "GET", f"{base}/calls", headers=[], body=None, limits=client_timeout(5.0), path="/calls"
            )
            assert reply.status == 302
            assert reply.headers["location"] == "/elsewhere"
    finally:
        await transport.aclose()
    assert [request.path for request in requests] == ["/v1/calls", "/v1/calls"]
    assert "Cookie" not in requests[1].headers


async def test_connections_are_reused_and_bounded(serve: Any) -> None:
    in_flight = 0
    most_in_flight = 0
    peers: set[Any] = set()

    async def handler(request: web.Request) -> web.Response:
        nonlocal in_flight, most_in_flight
        peers.add(request.transport.get_extra_info("peername") if request.transport else None)
        in_flight += 1
        most_in_flight = max(most_in_flight, in_flight)
        await asyncio.sleep(0.05)
        in_flight -= 1
        return web.json_response({"data": []})

    base = await serve(handler)
    async with client(base, transport=AiohttpTransport(max_connections=3)) as dialnexa:
        await asyncio.gather(*(dialnexa.list_webhooks() for _ in range(12)))
        assert most_in_flight == 3
        assert len(peers) == 3
        for _ in range(5):
            await dialnexa.list_webhooks()
    assert len(peers) == 3  # sequential requests took the open connections


async def test_a_proxy_named_by_the_environment_is_used_unless_no_proxy_names_the_host(
    serve: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    forwarded: list[str] = []
    proxy_credentials: list[str | None] = []

    async def forward_proxy(request: web.Request) -> web.Response:  # an HTTP proxy gets the absolute URL
        forwarded.append(str(request.url))
        proxy_credentials.append(request.headers.get("Proxy-Authorization"))
        return web.json_response({"data": []})

    proxy = (await serve(forward_proxy)).removesuffix("/v1")
    for name in ("HTTP_PROXY", "http_proxy", "HTTPS_PROXY", "https_proxy", "NO_PROXY", "no_proxy", "ALL_PROXY"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("HTTP_PROXY", proxy)
    async with client("http://api.dialnexa.invalid/v1") as dialnexa:
        assert await dialnexa.list_webhooks() == []
        monkeypatch.setenv("NO_PROXY", "*")  # the environment is read when the client is made
        assert await dialnexa.list_webhooks() == []
    assert forwarded == ["http://api.dialnexa.invalid/v1/user-webhooks?page=1&limit=100"] * 2
    assert proxy_credentials == [None, None]
    monkeypatch.delenv("NO_PROXY")

    monkeypatch.setenv("HTTP_PROXY", proxy.replace("http://", "http://relay:s%40cret@"))
    async with client("http://api.dialnexa.invalid/v1") as dialnexa:
        assert await dialnexa.list_webhooks() == []
    assert proxy_credentials[-1] == "Basic " + base64.b64encode(b"relay:s@cret").decode()

    monkeypatch.setenv("NO_PROXY", "api.dialnexa.invalid")
    proxied_so_far = len(forwarded)
    async with client("http://api.dialnexa.invalid/v1") as dialnexa:
        with pytest.raises(DialNexaConnectError):  # straight to a name that does not resolve
            await dialnexa.list_webhooks()
    assert len(forwarded) == proxied_so_far


async def test_an_https_origin_is_tunnelled_through_the_proxy_with_its_credentials_on_the_connect(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    heads: list[bytes] = []

    async def refusing_proxy(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        heads.append(await reader.readuntil(b"\r\n\r\n"))
        writer.write(b"HTTP/1.1 403 Forbidden\r\nContent-Length: 0\r\n\r\n")
        await writer.drain()
        writer.close()

    port = free_port()
    server = await asyncio.start_server(refusing_proxy, "127.0.0.1", port, family=socket.AF_INET)
    for name in ("HTTP_PROXY", "http_proxy", "HTTPS_PROXY", "https_proxy", "NO_PROXY", "no_proxy", "ALL_PROXY"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("HTTPS_PROXY", f"http://relay:secret@127.0.0.1:{port}")
    try:
        async with client("https://api.dialnexa.invalid/v1") as dialnexa:
            with pytest.raises(DialNexaError):  # the proxy refuses the tunnel
                await dialnexa.list_webhooks()
    finally:
        server.close()
        await server.wait_closed()
    request_line, *header_lines = heads[0].decode().strip().split("\r\n")
    assert request_line == "CONNECT api.dialnexa.invalid:443 HTTP/1.1"
    assert "Proxy-Authorization: Basic " + base64.b64encode(b"relay:secret").decode() in header_lines
    assert not any(line.lower().startswith("authorization") for line in header_lines)  # the API key stays inside


async def test_a_refused_connection_is_a_connect_error() -> None:
    async with client(f"http://127.0.0.1:{free_port()}/v1") as dialnexa:
        with pytest.raises(DialNexaConnectError):
            await dialnexa.list_webhooks()


async def test_an_answer_that_never_comes_is_a_timeout(serve: Any) -> None:
    async def handler(request: web.Request) -> web.Response:
        await asyncio.sleep(30)
        return web.json_response({})

    base = await serve(handler)
    async with client(base, timeout=0.3) as dialnexa:
        with pytest.raises(DialNexaTimeout):
            await dialnexa.list_webhooks()


async def test_waiting_too_long_for_a_pooled_connection_means_the_request_never_left(serve: Any) -> None:
    arrived = 0
    release = asyncio.Event()

    async def handler(request: web.Request) -> web.Response:
        nonlocal arrived
        arrived += 1
        await release.wait()
        return web.json_response({"data": []})

    base = await serve(handler)
    transport = AiohttpTransport(max_connections=1)
    limits = aiohttp.ClientTimeout(connect=0.2, sock_read=5.0)

    async def get() -> int:
        reply = await transport.send("GET", f"{base}/calls", headers=[], body=None, limits=limits, path="/calls")
        return reply.status

    try:
        first = asyncio.ensure_future(get())
        await asyncio.sleep(0.1)
        with pytest.raises(DialNexaConnectError):  # "never left": safe to send again
            await get()
        release.set()
        assert await first == 200
    finally:
        await transport.aclose()
    assert arrived == 1


async def test_a_connection_that_breaks_mid_answer_may_have_landed_so_a_billable_call_is_not_sent_again() -> None:
    async def half_an_answer(next_request: Callable[[], Awaitable[None]], writer: asyncio.StreamWriter) -> None:
        await next_request()
        writer.write(b'HTTP/1.1 201 Created\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n{"id":')

    server = HandWrittenServer(half_an_answer)
    async with server.running() as base, DialNexaClient(api_key="kid:secret", base_url=base) as dialnexa:
        with pytest.raises(DialNexaTransportError) as raised:
            await dialnexa.create_web_call(agent_id="agent_1", metadata={})
    assert not isinstance(raised.value, (DialNexaConnectError, DialNexaTimeout))
    assert server.requests == 1


async def test_a_kept_alive_connection_that_breaks_is_not_retried_behind_the_retry_policy() -> None:
    async def answer_once_then_break(next_request: Callable[[], Awaitable[None]], writer: asyncio.StreamWriter) -> None:
        await next_request()
        writer.write(b'HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 11\r\n\r\n{"data":[]}')
        await next_request()  # the next one, on the same connection, is not answered

    server = HandWrittenServer(answer_once_then_break)
    async with server.running() as base, client(base) as dialnexa:  # one attempt allowed
        assert await dialnexa.list_webhooks() == []
        with pytest.raises(DialNexaTransportError):
            await dialnexa.list_webhooks()
    assert server.requests == 2  # aiohttp's own retry would have sent it once more, on a new connection, and succeeded


async def test_closing_the_client_closes_the_pool(serve: Any) -> None:
    async def handler(request: web.Request) -> web.Response:
        return web.json_response({"data": []})

    base = await serve(handler)
    transport = AiohttpTransport()
    dialnexa = client(base, transport=transport)
    await dialnexa.list_webhooks()
    assert not transport.closed
    await dialnexa.aclose()
    assert transport.closed
