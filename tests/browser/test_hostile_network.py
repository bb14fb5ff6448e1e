"""The hostile-network harness, proved without the widget: a visitor namespace whose firewall drops UDP (all of it,
or a random share), browsers of both engines inside it, and a real coturn on the root end of the veth.

A plain page served from the root end of the veth gathers ICE candidates with ``iceTransportPolicy: "relay"``
against coturn, one ``RTCPeerConnection`` per TURN URL: with UDP dropped only TURN over TCP and over TLS give a
relay candidate; with the network open TURN over UDP does too.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio
from aiohttp import web
from playwright.async_api import Playwright

from webcall.ice import turn_rest_credentials

from ..hosting import served
from ..turn_server import TurnServer
from .conftest import AnyBrowser
from .hostile import (
    VisitorNetwork,
    launch_visitor_chromium,
    launch_visitor_firefox,
    turn,
    visitor_browser,
    visitor_network,
)
from .tabs import Tab, open_tab

__all__ = ["turn", "visitor_browser", "visitor_network"]  # the fixtures this module uses

pytestmark = [pytest.mark.browser, pytest.mark.asyncio(loop_scope="session")]

GATHER_JS = """\
"use strict";
// Gather relay candidates for each ICE server given, one RTCPeerConnection each, all at once. For each: the relay
// candidates seen within `within` ms (or until gathering completes), when the first came, ICE candidate errors, and
// the relay protocol (UDP, TCP or TLS between browser and TURN server) from the candidate or else from getStats().
window.gatherRelays = (servers, within) => Promise.all(servers.map(async (server) => {
  const started = performance.now();
  const pc = new RTCPeerConnection({ iceServers: [server], iceTransportPolicy: "relay" });
  const relays = [];
  const errors = [];
  let complete = false;
  pc.addEventListener("icecandidateerror", (e) => {
    errors.push({ url: e.url, code: e.errorCode, text: e.errorText });
  });
  const done = new Promise((resolve) => {
    pc.addEventListener("icecandidate", (e) => {
      if (!e.candidate || !e.candidate.candidate) {
        complete = true;
        resolve();
        return;
      }
      if (e.candidate.type === "relay") {
        relays.push({ candidate: e.candidate.candidate, address: e.candidate.address,
          relayProtocol: e.candidate.relayProtocol ?? null, at: performance.now() - started });
        resolve();
      }
    });
    setTimeout(resolve, within);
  });
  pc.createDataChannel("probe");
  await pc.setLocalDescription(await pc.createOffer());
  await done;
  const stats = [];
  (await pc.getStats()).forEach((s) => {
    if (s.type === "local-candidate" && s.candidateType === "relay") {
      stats.push({ address: s.address ?? s.ip ?? null, relayProtocol: s.relayProtocol ?? null, url: s.url ?? null });
    }
  });
  pc.close();
  return { url: server.urls[0], relays, errors, complete, stats, elapsed: performance.now() - started };
}));
"""

PAGE = """\
<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>ICE gathering</title><link rel="icon" href="data:,">
<script src="/gather.js"></script></head><body><p>ICE gathering</p></body></html>
"""
CSP = "default-src 'none'; script-src 'self'"


@pytest_asyncio.fixture(loop_scope="session")
async def gather_page(visitor_network: VisitorNetwork) -> AsyncIterator[str]:
    """The gathering page, served from the root end of the visitor's veth (reached only over the veth)."""

    async def index(request: web.Request) -> web.Response:
        return web.Response(text=PAGE, content_type="text/html", headers={"Content-Security-Policy": CSP})

    async def script(request: web.Request) -> web.Response:
        return web.Response(text=GATHER_JS, content_type="text/javascript")

    app = web.Application()
    app.router.add_get("/", index)
    app.router.add_get("/gather.js", script)
    async with served(app, host=visitor_network.host_address) as origin:
        yield f"{origin}/"


async def gather(tab: Tab, turn: TurnServer, urls: list[str], within: float) -> dict[str, dict[str, Any]]:
    username, credential = turn_rest_credentials(turn.secret, ttl=600)
    servers = [{"urls": [url], "username": username, "credential": credential} for url in urls]
    results: list[dict[str, Any]] = await tab.call(
        "(servers, within) => window.gatherRelays(servers, within)", servers, within * 1000
    )
    return {result["url"]: result for result in results}


def relay_protocols(result: dict[str, Any]) -> set[str]:
    """The relay protocols the browser reports for its relay candidates (candidate, else stats)."""
    found = {r["relayProtocol"] for r in result["relays"]} | {s["relayProtocol"] for s in result["stats"]}
    return {p.lower() for p in found if p}


@pytest.mark.engines("chromium", "firefox")
async def test_relay_candidates_on_a_network_without_udp(
    engine: str,
    visitor_network: VisitorNetwork,
    turn: TurnServer,
    visitor_browser: AnyBrowser,
    gather_page: str,
    tmp_path: Path,
) -> None:
    tab = await open_tab(visitor_browser, gather_page, tmp_path / "shots")
    try:
        udp, tcp, tls = turn.turn_url("udp"), turn.turn_url("tcp"), turn.turns_url(visitor_network.host_name)

        await visitor_network.drop_udp()
        blocked = await gather(tab, turn, [udp, tcp, tls], within=3.0)
        print(
            f"\n[{engine}] UDP dropped: "
            + ", ".join(f"{u}: {r['relays'][:1]} {r['errors'][:1]}" for u, r in blocked.items())
        )
        assert blocked[udp]["relays"] == [], f"TURN over UDP gave a relay candidate with UDP dropped: {blocked[udp]}"
        for url, protocol in ((tcp, "tcp"), (tls, "tls")):
            relays = blocked[url]["relays"]
            assert relays, f"no relay candidate from {url} with UDP dropped: {blocked[url]}"
            assert relays[0]["address"] == turn.host, relays
            assert relay_protocols(blocked[url]) in (set(), {protocol}), blocked[url]

        await visitor_network.open()
        opened = await gather(tab, turn, [udp], within=3.0)
        print(f"[{engine}] open: {opened[udp]['relays'][:1]}")
        assert opened[udp]["relays"], f"no relay candidate from {udp} on an open network: {opened[udp]}"
        assert relay_protocols(opened[udp]) in (set(), {"udp"}), opened[udp]
    finally:
        await tab.close()


@pytest.mark.engines("chromium", "firefox")
async def test_turn_over_tls_is_refused_without_the_harness_ca(
    engine: str,
    visitor_network: VisitorNetwork,
    turn: TurnServer,
    playwright: Playwright,
    gather_page: str,
    tmp_path: Path,
) -> None:
    """The browser checks coturn's certificate: without the harness CA in its NSS database, ``turns:`` gives no relay
    candidate while ``turn:`` over TCP still does (so the CA the ``visitor_browser`` fixture adds is what works)."""
    browser: AnyBrowser
    if engine == "firefox":
        browser = await launch_visitor_firefox(visitor_network)
    else:
        browser = await launch_visitor_chromium(playwright, visitor_network, tmp_path / "chromium", microphone=None)
    try:
        tab = await open_tab(browser, gather_page, tmp_path / "shots")
        tcp, tls = turn.turn_url("tcp"), turn.turns_url(visitor_network.host_name)
        results = await gather(tab, turn, [tcp, tls], within=4.0)
        print(
            f"\n[{engine}] no CA: " + ", ".join(f"{u}: {r['relays'][:1]} {r['errors'][:1]}" for u, r in results.items())
        )
        assert results[tcp]["relays"], results[tcp]
        assert results[tls]["relays"] == [], f"{engine} took coturn's certificate from an unknown CA: {results[tls]}"
        await tab.close()
    finally:
        await browser.close()


async def test_the_firewall_drops_udp_all_or_a_share(visitor_network: VisitorNetwork) -> None:
    """Datagrams from inside the namespace to the root end of the veth: all arrive on the open network, none with
    UDP dropped, about the share asked with a random share dropped (changed while the socket stays open)."""
    receiver = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    receiver.bind((visitor_network.host_address, 0))
    receiver.setblocking(False)
    sender = visitor_network.socket_inside(socket.SOCK_DGRAM)
    count = 400

    async def arrived() -> int:
        """How many of ``count`` datagrams arrive (sent 20 at a time, so the receiver's buffer never overflows)."""
        got = 0
        for index in range(count):
            with contextlib.suppress(PermissionError):  # dropped on its way out: EPERM
                sender.sendto(index.to_bytes(4, "big"), receiver.getsockname())
            if index % 20 == 19:
                await asyncio.sleep(0.01)
                with contextlib.suppress(BlockingIOError):
                    while receiver.recv(16):
                        got += 1
        return got

    try:
        assert await arrived() == count
        await visitor_network.drop_udp()
        with pytest.raises(PermissionError):
            sender.sendto(b"x", receiver.getsockname())  # dropped on its way out: EPERM
        assert await arrived() == 0
        await visitor_network.drop_share(50)
        assert 140 <= await arrived() <= 260  # 400 tries at 1/2: mean 200, sd 10
        await visitor_network.drop_share(10)
        assert 320 <= await arrived() <= 395
        await visitor_network.open()
        assert await arrived() == count
    finally:
        sender.close()
        receiver.close()


async def test_a_loopback_port_exposed_inside_the_namespace(visitor_network: VisitorNetwork) -> None:
    """``expose(port)``: a program in the namespace connecting to its own 127.0.0.1:port talks to this process's."""

    async def greet(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(b"hello from the root namespace: " + await reader.readline())
        await writer.drain()
        writer.close()

    server = await asyncio.start_server(greet, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        with pytest.raises(ConnectionRefusedError):  # the namespace's loopback is its own
            await asyncio.to_thread(visitor_network.connect_inside, "127.0.0.1", port)
        await visitor_network.expose(port)
        reader, writer = await asyncio.open_connection(
            sock=await asyncio.to_thread(visitor_network.connect_inside, "127.0.0.1", port)
        )
        writer.write(b"hi\n")
        assert await reader.read() == b"hello from the root namespace: hi\n"
        writer.close()
    finally:
        server.close()
        await server.wait_closed()
