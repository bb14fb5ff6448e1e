"""What a visitor sees when a call cannot start or does not last: every failure has a clear message, on a host page
under a strict CSP, against the emulator (or against no DialNexa at all). Every test runs in Chromium and in Firefox.

The console lines each test allows are the widget's own warnings and the browser's report of the failed request
(Chromium logs "Failed to load resource"; Firefox logs nothing for a fetch that got an answer)."""

from __future__ import annotations

import re

import httpx
import pytest

from webcall.emulator.keys import TASKS_KEY
from webcall.emulator.server import EmulatorServer
from webcall.emulator.testing import eventually

from ..offers import OFFER
from .conftest import MakeBrowser, MakeEmulator, MakeSite, NewTab, Site, bind_loopback, drop_media
from .shared import LIVE
from .tabs import Tab

pytestmark = [
    pytest.mark.browser,
    pytest.mark.asyncio(loop_scope="session"),
    pytest.mark.engines("chromium", "firefox"),
]

WIDGET_WARNING = r"^\[webcall\] "


def http_error(status: int) -> str:
    """The console error Chromium logs for a fetch answered with ``status``."""
    return rf"^Failed to load resource: the server responded with a status of {status}\b"


async def fails_with(tab: Tab, message: str, code: str) -> None:
    """The widget is in its error state, shows ``message`` in its status line and emitted a fatal error event."""
    settled = await tab.wait_state("error", "ended", within=15)
    shown = await tab.status.text()
    assert settled == "error", f"the widget ended in state {settled!r} showing {shown!r}, not the error {message!r}"
    await tab.status.wait_text(message)
    errors = [e["detail"] for e in await tab.events("error") if e["detail"]["fatal"]]
    assert [e["code"] for e in errors] == [code]
    assert errors[0]["message"] == message
    await tab.button("Try again").wait_visible()


async def test_microphone_denied_keeps_the_agent_audible(
    site: Site, new_tab: NewTab, make_browser: MakeBrowser
) -> None:
    """The browser refuses the microphone: the call goes on receive-only, and says so. Firefox then hides its
    addresses behind mDNS names (``<uuid>.local`` candidates), which the emulator cannot resolve: it answers with
    its own candidates and learns the browser's address from the browser's checks."""
    assert site.emulator is not None
    tab = await new_tab(site, browser=await make_browser(allowed=False))

    await tab.button("Start call").click()
    await tab.wait_state(*LIVE)
    call_id = await site.call_id()
    notice = "Microphone unavailable: you can hear the agent, but it can't hear you."
    await tab.text(notice).wait_visible()
    error = (await tab.events("error"))[0]["detail"]
    assert (error["code"], error["fatal"]) == ("microphone_unavailable", False)
    await tab.wait_audible()
    await tab.transcript.wait_contains("Hello Priya")
    await tab.button("Mute").wait_disabled()
    await tab.button("Call me back instead").wait_visible()
    seen = await site.emulator.control.media(call_id)
    assert seen["connected"] and seen["frames_received"] == 0, "a receive-only call sends no audio"
    await tab.shot("no-microphone")
    await tab.assert_clean(warnings=[r"^\[webcall\] no microphone \(NotAllowedError\)"])


async def test_rate_limited_visitor_is_told_when_to_retry(
    make_site: MakeSite, emu: EmulatorServer, new_tab: NewTab
) -> None:
    site = await make_site(emu, rate_limit=1, rate_limit_window=45)
    tab = await new_tab(site)
    await tab.button("Start call").click()
    await tab.wait_state(*LIVE)
    await tab.button("End call").click()
    await tab.wait_state("ended")

    await tab.button("Call again").click()
    answer = await tab.wait_response(lambda r: r["url"].endswith("/webcall/sessions") and r["status"] == 429)
    retry_after = answer["headers"]["retry-after"]
    await tab.wait_state("error")
    text = await tab.status.text()
    match = re.fullmatch(r"Too many calls right now\. Please try again in (\d+) s\.", text)
    assert match, f"unexpected message: {text!r}"
    assert 1 <= int(match[1]) <= 45
    assert float(retry_after) == pytest.approx(int(match[1]), abs=1), "the wait shown is not the server's Retry-After"
    await fails_with(tab, text, "rate_limited")
    await tab.shot("error-rate-limited")
    await tab.assert_clean(
        warnings=[r"^\[webcall\] POST \S+/webcall/sessions → 429 rate_limited"], errors=[http_error(429)]
    )


async def test_dialnexa_unreachable_is_reported_as_unavailable(make_site: MakeSite, new_tab: NewTab) -> None:
    closed = bind_loopback()  # bound, never listening: connections are refused
    try:
        port = closed.getsockname()[1]
        site = await make_site(None, base_url=f"http://127.0.0.1:{port}/v1", upstream_timeout=0.5, upstream_deadline=1)
        tab = await new_tab(site)
        await tab.button("Start call").click()
        await fails_with(tab, "The call service is unavailable. Please try again later.", "upstream_unavailable")
    finally:
        closed.close()
    await tab.shot("error-unavailable")
    await tab.assert_clean(warnings=[r"^\[webcall\] POST \S+ → 503 upstream_unavailable"], errors=[http_error(503)])


async def test_capacity_reached_shows_the_busy_message(
    make_site: MakeSite, emu: EmulatorServer, new_tab: NewTab
) -> None:
    site = await make_site(emu, max_concurrent_calls=1)
    async with httpx.AsyncClient() as http:  # another visitor holds the only line
        other = await http.post(
            f"{site.origin}/webcall/sessions", json={"agent": "sales", "offer": OFFER}, headers={"Origin": site.origin}
        )
    assert other.status_code == 201, other.text
    tab = await new_tab(site)

    await tab.button("Start call").click()
    await fails_with(tab, "All our agents are busy. Please try again in a few minutes.", "capacity_reached")
    await tab.shot("error-busy")
    await tab.assert_clean(warnings=[r"^\[webcall\] POST \S+ → 503 capacity_reached"], errors=[http_error(503)])


EXPIRED = "The call expired before it connected. Please try again."


async def test_media_token_expired_at_whip_shows_the_expired_message(
    make_emulator: MakeEmulator, make_site: MakeSite, new_tab: NewTab
) -> None:
    """The plugin's WHIP offer arrives (0.6 s) after the single-use token expired (0.3 s), before DialNexa has swept
    the unused call away: DialNexa refuses it with 401, and the visitor is told the call expired."""
    emulator = await make_emulator(token_ttl=0.3)
    await emulator.app[TASKS_KEY].cancel_all()  # the emulator's sweep of unused calls has not come round yet
    site = await make_site(emulator)
    await emulator.control.add_fault(route="POST /v1/web-calls/{call_id}/whip", kind="latency", delay=0.6)
    tab = await new_tab(site)

    await tab.button("Start call").click()
    await fails_with(tab, EXPIRED, "call_expired")
    call_ids = [call.id for call in emulator.state.calls.values()]
    assert len(call_ids) == 1

    async def released() -> bool:
        return bool((await emulator.control.call(call_ids[0]))["ended"])

    await eventually(released, 5, what="the expired call was hung up")
    await tab.shot("error-expired")
    await tab.assert_clean(warnings=[r"^\[webcall\] POST \S+ → 502 call_expired"], errors=[http_error(502)])


async def test_media_token_expiring_before_whip_shows_the_expired_message(
    make_emulator: MakeEmulator, make_site: MakeSite, new_tab: NewTab
) -> None:
    """The plugin's WHIP offer is slow (2.5 s) and the single-use token lives 0.3 s: DialNexa cancels the unused
    call (``token_expired``) and refuses the late offer; the visitor is told the call expired."""
    emulator = await make_emulator(token_ttl=0.3)
    site = await make_site(emulator, upstream_timeout=5.0, upstream_deadline=8.0)  # the plugin waits for the answer
    await emulator.control.add_fault(route="POST /v1/web-calls/{call_id}/whip", kind="latency", delay=2.5)
    tab = await new_tab(site)

    await tab.button("Start call").click()
    await fails_with(tab, EXPIRED, "call_expired")
    (call,) = emulator.state.calls.values()
    assert (call.status, call.end_reason) == ("cancelled", "token_expired")
    await tab.assert_clean(warnings=[WIDGET_WARNING], errors=[http_error(502)])


async def test_connection_lost_mid_call(site: Site, new_tab: NewTab) -> None:
    emulator = site.emulator
    assert emulator is not None
    tab = await new_tab(site)
    await tab.button("Start call").click()
    await tab.wait_state(*LIVE)
    call_id = await site.call_id()
    await tab.transcript.wait_contains("Hello Priya")

    drop_media(emulator, call_id)
    if tab.engine == "chromium":
        # Chromium's ICE notices its unanswered consent checks within seconds: the widget says it is reconnecting.
        # Firefox's takes longer than DialNexa takes to end a call it hears nothing from (no RTP, RTCP or ICE
        # check: network_failure, about 9 s here), so
        # its visitor goes straight to the message below.
        await tab.status.wait_text("Reconnecting…", within=15)
    await tab.wait_state("ended", within=20)
    await tab.status.wait_text("Call ended: the connection was lost")
    assert (await tab.events("ended"))[0]["detail"]["reason"] in ("connection_lost", "network_failure")

    # The widget sent no hang-up: DialNexa notices that nothing arrives any more and records a network failure.
    async def recorded() -> bool:
        return bool((await emulator.control.call(call_id))["ended"])

    await eventually(recorded, 15, what="the emulator recorded the dropped call")
    record = await emulator.control.call(call_id)
    assert (record["status"], record["end_reason"]) == ("completed", "network_failure"), record
    await tab.part("summary").wait_contains("the connection was lost")
    await tab.shot("connection-lost")
    await tab.assert_clean(
        warnings=[WIDGET_WARNING], errors=[http_error(405), r"^Failed to load resource: net::ERR_CONNECTION_REFUSED"]
    )
