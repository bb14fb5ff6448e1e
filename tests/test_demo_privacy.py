"""The demo's event console is private to each visitor: two browsers (two cookie jars) on the same demo each see only
the lines of their own calls, live and in the backlog, and a new visitor sees nothing of either."""

from __future__ import annotations

import asyncio
import json
import os
from collections.abc import Iterator
from typing import Any

import pytest
from aiohttp import ClientResponse, web
from aiohttp.test_utils import TestClient, TestServer

from demo.app import CONSOLE_LINES, VISITOR_COOKIE, Console, create_demo_app
from webcall.events import CallEvent

from .offers import OFFER

Client = TestClient[web.Request, web.Application]
ADA = {"name": "Ada Lovelace", "company": "Analytical"}
GRACE = {"name": "Grace Hopper", "company": "Navy"}
ADA_PHONE = "+14155550123"
GRACE_PHONE = "+14155550188"


@pytest.fixture
def demo_env(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """The demo as ``python -m demo`` runs it: on the embedded emulator, no DialNexa or webcall settings."""
    for name in list(os.environ):
        if name.startswith(("DIALNEXA_", "WEBCALL_")):
            monkeypatch.delenv(name)
    yield


async def visit(client: Client, who: dict[str, str]) -> None:
    """Open the demo page (which gives the browser its visitor cookie) and save the persona form."""
    response = await client.get("/")
    assert response.status == 200
    response = await client.post("/persona", data=who)
    assert response.status == 200  # followed the redirect back to the page
    assert VISITOR_COOKIE in {cookie.key for cookie in client.session.cookie_jar}


async def start_call(client: Client, phone: str) -> str:
    """Start a web call from the page, then ask for a call-back, as the widget does; returns the web call's id."""
    origin = {"Origin": str(client.make_url("/")).rstrip("/")}
    response = await client.post("/webcall/sessions", json={"agent": "sales", "offer": OFFER}, headers=origin)
    assert response.status == 201, await response.text()
    call_id: str = (await response.json())["call_id"]
    body = {"agent": "sales", "phone_number": phone, "consent": True}
    response = await client.post("/webcall/callbacks", json=body, headers=origin)
    assert response.status == 202, await response.text()
    return call_id


async def console(client: Client) -> ClientResponse:
    response = await client.get("/demo/console")
    assert response.status == 200 and response.content_type == "text/event-stream"
    return response


async def read_until(stream: ClientResponse, done: str) -> list[dict[str, Any]]:
    """Console lines until one whose detail contains ``done`` (within 10 s)."""
    lines: list[dict[str, Any]] = []
    while not lines or done not in lines[-1]["detail"]:
        raw = await stream.content.readline()
        assert raw, f"the console closed before {done!r}: {lines}"
        text = raw.decode().strip()
        if text.startswith("data: "):
            lines.append(json.loads(text[len("data: ") :]))
    return lines


def leaks(lines: list[dict[str, Any]], other: dict[str, str], phone: str) -> list[dict[str, Any]]:
    secrets = [*other.values(), *other["name"].split(), phone]
    return [line for line in lines if any(secret in json.dumps(line) for secret in secrets)]


@pytest.mark.timeout(60)
async def test_each_visitor_sees_only_their_own_calls_live_and_in_the_backlog(demo_env: None) -> None:
    server = TestServer(create_demo_app())
    ada, grace, newcomer = Client(server), Client(server), Client(server)
    await server.start_server()
    try:
        for client in (ada, grace, newcomer):
            await client.start_server()
        await visit(ada, ADA)
        await visit(grace, GRACE)
        ada_live, grace_live = await console(ada), await console(grace)

        ada_call = await start_call(ada, ADA_PHONE)
        grace_call = await start_call(grace, GRACE_PHONE)
        seen_by_ada = await read_until(ada_live, "ringing")
        seen_by_grace = await read_until(grace_live, "ringing")

        assert seen_by_ada[0]["call_id"] == ada_call and "name=Ada Lovelace" in seen_by_ada[0]["detail"]
        assert "company=Analytical" in seen_by_ada[0]["detail"] and ADA_PHONE in seen_by_ada[-1]["detail"]
        assert seen_by_grace[0]["call_id"] == grace_call and "name=Grace Hopper" in seen_by_grace[0]["detail"]
        assert "company=Navy" in seen_by_grace[0]["detail"] and GRACE_PHONE in seen_by_grace[-1]["detail"]
        assert grace_call not in {line["call_id"] for line in seen_by_ada}
        assert ada_call not in {line["call_id"] for line in seen_by_grace}
        assert not leaks(seen_by_ada, GRACE, GRACE_PHONE)
        assert not leaks(seen_by_grace, ADA, ADA_PHONE)
        # The visitor's own id is not shown, not even to them.
        assert not any("demo_visitor" in line["detail"] for line in seen_by_ada + seen_by_grace)

        # Reopened, each console's backlog is its own calls only.
        ada_backlog = await read_until(await console(ada), ADA_PHONE)
        assert [line["call_id"] for line in ada_backlog] == [line["call_id"] for line in seen_by_ada]
        assert not leaks(ada_backlog, GRACE, GRACE_PHONE)
        grace_backlog = await read_until(await console(grace), GRACE_PHONE)
        assert not leaks(grace_backlog, ADA, ADA_PHONE)

        # A new visitor's console starts empty: the first line it gets is of its own call.
        await visit(newcomer, {"name": "Linus", "company": "Kernel"})
        newcomer_live = await console(newcomer)
        newcomer_call = await start_call(newcomer, "+14155550199")
        first = (await read_until(newcomer_live, ""))[0]
        assert first["call_id"] == newcomer_call and "name=Linus" in first["detail"], first
    finally:
        for client in (ada, grace, newcomer):
            await client.close()
        await server.close()


async def test_a_browser_without_a_visitor_cookie_sees_no_backlog(demo_env: None) -> None:
    server = TestServer(create_demo_app())
    ada, stranger = Client(server), Client(server)
    await server.start_server()
    try:
        for client in (ada, stranger):
            await client.start_server()
        await visit(ada, ADA)
        await start_call(ada, ADA_PHONE)
        await read_until(await console(ada), "ringing")
        assert not stranger.session.cookie_jar.filter_cookies(stranger.make_url("/"))
        response = await console(stranger)
        assert (await response.content.readline()).startswith(b"retry:")
        assert await response.content.readline() == b"\n"
        # The backlog follows the preamble at once; a browser with no calls of its own gets none.
        with pytest.raises(TimeoutError):
            async with asyncio.timeout(1.0):
                await response.content.readline()
    finally:
        for client in (ada, stranger):
            await client.close()
        await server.close()


def event(kind: str, call_id: str, visitor: str | None, **variables: str) -> CallEvent:
    if visitor is not None:
        variables["demo_visitor"] = visitor
    return CallEvent(
        id=f"{call_id}:{kind}",
        type=kind,
        call_id=call_id,
        time="2026-01-01T00:00:00Z",
        context={"agent": "sales", "variables": variables},
    )


async def test_the_console_keeps_a_bounded_history_per_visitor() -> None:
    console = Console(visitors=2)
    for n in range(CONSOLE_LINES + 5):
        await console.record(event("session.created", f"call_a{n}", "a"))
    await console.record(event("session.created", "call_nobody", None, name="Nobody"))
    assert len(console.backlog("a", CONSOLE_LINES + 10)) == CONSOLE_LINES
    assert console.backlog("a", 1)[0]["call_id"] == f"call_a{CONSOLE_LINES + 4}"
    await console.record(event("session.created", "call_b", "b"))
    await console.record(event("session.created", "call_c", "c"))
    assert console.backlog("a") == []  # the visitor with the oldest calls is dropped
    assert [line["call_id"] for line in console.backlog("b")] == ["call_b"]
    assert [line["call_id"] for line in console.backlog("c")] == ["call_c"]
    assert all("Nobody" not in json.dumps(line) for v in ("a", "b", "c") for line in console.backlog(v))
