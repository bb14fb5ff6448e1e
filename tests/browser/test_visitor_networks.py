"""Visitors on hostile networks, with the real widget: the browser in a network namespace whose nftables drop every
UDP packet (or a random share), a real coturn on the root end of the veth, the emulator's agent.

The site is served on this process's loopback and exposed at the same port on the namespace's own loopback, so the
browser inside sees the secure origin ``http://127.0.0.1:PORT`` (no microphone anywhere else) while the call's audio
crosses the veth and the firewall: directly to the emulator's host candidates, or through TURN.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Mapping
from typing import Any

import pytest

from webcall.emulator.server import EmulatorServer
from webcall.emulator.testing import eventually

from ..turn_server import TurnServer
from .conftest import AnyBrowser, MakeSite, NewTab, Site
from .hostile import VisitorNetwork, turn, visitor_browser, visitor_network
from .shared import LIVE
from .tabs import Tab

__all__ = ["turn", "visitor_browser", "visitor_network"]  # the fixtures this module uses

pytestmark = [
    pytest.mark.browser,
    pytest.mark.asyncio(loop_scope="session"),
    pytest.mark.engines("chromium", "firefox"),
]

BLOCKED = "This network seems to block calls"
WHIP_PATCH = "PATCH /v1/web-calls/{call_id}/whip/{session_id}"


async def visitor_site(make_site: MakeSite, emu: EmulatorServer, network: VisitorNetwork, **options: Any) -> Site:
    """A host site on this process's loopback, reachable from inside ``network`` at the same origin."""
    site = await make_site(emu, **options)
    port = int(site.origin.rsplit(":", 1)[1])
    await network.expose(port)
    return site


async def open_visitor_tab(new_tab: NewTab, site: Site, browser: AnyBrowser) -> Tab:
    tab = await new_tab(site, browser=browser)
    await tab.button("Start call").wait_visible()
    return tab


async def click_to_audio(tab: Tab) -> Mapping[str, float]:
    """Milliseconds from the click to the live state and to the agent's first audible audio (the page's probe)."""
    times: Mapping[str, float] = await tab.call(
        """(live) => {
          const click = window.__clicks[0];
          const liveAt = window.__events.find((e) => e.type === "state" && live.includes(e.detail.state)).at;
          return { live: liveAt - click, audio: window.__audio.audibleAt - click };
        }""",
        list(LIVE),
    )
    return times


@pytest.mark.parametrize("transport", ["tcp", "tls"])
async def test_with_udp_dropped_turn_carries_the_call_and_the_agent_is_heard(
    engine: str,
    transport: str,
    make_site: MakeSite,
    emu: EmulatorServer,
    visitor_network: VisitorNetwork,
    turn: TurnServer,
    visitor_browser: AnyBrowser,
    new_tab: NewTab,
) -> None:
    await visitor_network.drop_udp()
    url = turn.turn_url("tcp") if transport == "tcp" else turn.turns_url(visitor_network.host_name)
    site = await visitor_site(make_site, emu, visitor_network, turn_urls=(url,), turn_secret=turn.secret)
    tab = await open_visitor_tab(new_tab, site, visitor_browser)
    await tab.button("Start call").click()
    await tab.wait_state(*LIVE, within=15)
    await tab.wait_audible(within=15)
    call_id = await site.call_id()
    seen = await emu.control.media(call_id)
    assert seen["ice_pair"] is not None and seen["ice_pair"]["remote_type"] == "relay", seen
    assert "relay" in seen["trickled_candidates"], "the relay candidate should have trickled through the plugin"
    times = await click_to_audio(tab)
    live, audio = times["live"], times["audio"]
    print(f"\n[{engine}] TURN over {transport}: click -> live {live:.0f} ms, -> first audio {audio:.0f} ms")
    await tab.button("End call").click()
    quality = (await site.event("call.ended", call_id, within=10)).quality
    assert quality is not None and quality["candidate"] == "relay" and quality["protocol"] == transport, quality


async def test_with_udp_dropped_and_no_turn_the_widget_says_so_and_offers_a_call_back(
    engine: str,
    make_site: MakeSite,
    emu: EmulatorServer,
    visitor_network: VisitorNetwork,
    visitor_browser: AnyBrowser,
    new_tab: NewTab,
) -> None:
    await visitor_network.drop_udp()
    site = await visitor_site(make_site, emu, visitor_network)
    tab = await open_visitor_tab(new_tab, site, visitor_browser)
    clicked = time.monotonic()
    await tab.button("Start call").click()
    await tab.status.wait_contains(BLOCKED, within=10)
    assert time.monotonic() - clicked < 10
    await tab.button("Call me back instead").wait_visible(within=5)
    await tab.shot(f"blocked-{engine}")
    error = [e for e in await tab.events("error") if e["detail"].get("fatal")]
    assert error and error[-1]["detail"]["code"] == "network_blocked", error


async def test_a_lossy_network_shows_a_weak_connection_notice_until_it_recovers(
    engine: str,
    make_site: MakeSite,
    emu: EmulatorServer,
    visitor_network: VisitorNetwork,
    visitor_browser: AnyBrowser,
    new_tab: NewTab,
) -> None:
    site = await visitor_site(make_site, emu, visitor_network)
    tab = await open_visitor_tab(new_tab, site, visitor_browser)
    await tab.button("Start call").click()
    await tab.wait_state(*LIVE, within=15)
    notice = tab.text("Weak connection: the agent may break up.")
    await asyncio.sleep(4.5)
    assert not await notice.describe(), "no notice while the network is fine"
    await visitor_network.drop_share(15)  # hotel Wi-Fi on a bad day: speech breaks up, the call holds
    try:
        await notice.wait_visible(within=8)
    except AssertionError as missing:  # say whether the call was still on, and how it ended if not
        changes = [(e["at"], e["type"], e["detail"]) for e in await tab.events() if e["type"] in ("state", "ended")]
        raise AssertionError(f"{missing}; the widget's states: {changes}") from None
    await tab.shot(f"weak-connection-{engine}")
    await asyncio.sleep(4)  # a lossy stretch long enough to show in the call's loss figure, whenever the notice came
    assert await notice.describe(), "the notice stays while the network is lossy"
    # Firefox calls the connection "disconnected" all along; the agent is still heard, so the widget does not say
    # it is reconnecting.
    assert await tab.status.text() != "Reconnecting…", await tab.states()
    await visitor_network.open()
    await notice.wait_hidden(within=10)
    states = [(e["at"], e["type"], e["detail"]) for e in await tab.events() if e["type"] in ("state", "ended")]
    assert await tab.state() in LIVE, ("a lossy stretch does not end the call", states)
    call_id = await site.call_id()
    await tab.button("End call").click()
    quality = (await site.event("call.ended", call_id, within=10)).quality
    # Firefox calls a lossy connection "disconnected" within a second; the agent's audio still arriving, the widget
    # does not restart ICE (the emulator refuses restarts, and rolling one back could close Firefox's transport).
    patches = await emu.control.requests(WHIP_PATCH)
    restarts = [r for r in patches if call_id in r["path"] and r["status"] == 405]
    assert not restarts, "no ICE restart while the agent is heard"
    assert quality is not None and quality["weak_s"] >= 2 and quality["loss_in"] > 0.01, quality

    async def ended() -> bool:
        return bool((await emu.control.media(call_id))["closed"])

    await eventually(ended, 5, what="the call's media closed")
