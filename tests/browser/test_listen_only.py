"""A visitor without a microphone listens to the agent for as long as the call lasts: the browser sends no audio,
yet its connection is alive (ICE consent checks, RTCP reports), so DialNexa must not end the call as lost."""

from __future__ import annotations

import asyncio

import pytest

from webcall.emulator.media import MEDIA_HUB
from webcall.emulator.testing import eventually

from .conftest import MakeBrowser, NewTab, Site
from .shared import LIVE

pytestmark = [
    pytest.mark.browser,
    pytest.mark.asyncio(loop_scope="session"),
    pytest.mark.engines("chromium", "firefox"),
]

LISTEN_FOR = 60.0  # well past the emulator's 4 s + 5 s of silence before it calls a connection lost
LATER_LINE = "Are you still there? I am still here if you need anything."


async def test_visitor_without_microphone_still_hears_the_agent_after_a_minute(
    site: Site, new_tab: NewTab, make_browser: MakeBrowser
) -> None:
    emulator = site.emulator
    assert emulator is not None
    tab = await new_tab(site, browser=await make_browser(allowed=False))

    await tab.button("Start call").click()
    await tab.wait_state(*LIVE)
    call_id = await site.call_id()
    await tab.text("Microphone unavailable: you can hear the agent, but it can't hear you.").wait_visible()
    await tab.wait_audible()
    await tab.transcript.wait_contains("Hello Priya")

    await asyncio.sleep(LISTEN_FOR)

    assert await tab.state() in LIVE, await tab.status.text()
    assert not await tab.events("ended")
    record = await emulator.control.call(call_id)
    assert not record["ended"], record
    seen = await emulator.control.media(call_id)
    assert seen["connected"] and seen["frames_received"] == 0, seen
    # The agent speaks again: the visitor hears it a minute into the call.
    heard_before = (await tab.audio())["audible"]
    session = emulator.app[MEDIA_HUB].by_call[call_id]
    speaking = asyncio.ensure_future(session.say(LATER_LINE))
    try:
        await tab.wait_for(
            "(before) => window.__audio.audible >= before + 5", heard_before, within=10, what="the agent heard again"
        )
        await tab.transcript.wait_contains("still here")
    finally:
        speaking.cancel()
        await asyncio.gather(speaking, return_exceptions=True)

    await tab.button("End call").click()
    await tab.wait_state("ended")
    assert (await tab.events("ended"))[0]["detail"]["reason"] == "hangup"

    async def ended() -> bool:
        return bool((await emulator.control.call(call_id))["ended"])

    await eventually(ended, 5, what="the emulator recorded the hang-up")
    record = await emulator.control.call(call_id)
    assert (record["status"], record["end_reason"]) == ("completed", "user_disconnected"), record
    await tab.assert_clean(warnings=[r"^\[webcall\] no microphone \(NotAllowedError\)"])
