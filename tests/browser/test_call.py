"""A visitor's web call, end to end: a host page under a strict CSP, the real widget in Chromium and in Firefox, the
emulator's agent.

Each test starts a call the way a visitor does (by role and accessible name with the pointer, or with the keyboard
only) and checks what the visitor sees and hears in the page and what the emulator observed of the call. Every test
runs in both engines except the one where the caller speaks words: Firefox's fake microphone plays a tone, not a file.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from webcall.emulator.server import EmulatorServer
from webcall.emulator.testing import CallRecord, eventually

from .conftest import AnyBrowser, MakeBrowser, NewTab, Site
from .shared import AUDIBLE, LIVE
from .tabs import VIEWPORT, Tab

pytestmark = [
    pytest.mark.browser,
    pytest.mark.asyncio(loop_scope="session"),
    pytest.mark.engines("chromium", "firefox"),
]

WELCOME = "Hello Priya! This is Nova from DialNexa sales. How can I help Acme today?"
FIRST_REPLY = "Great question. Our voice agents answer every call in under a second, around the clock."
SPEECH = 0.02  # caller RMS the emulator treats as voice


async def ended_record(site: Site, call_id: str) -> CallRecord:
    """The emulator's call record once it has ended."""
    assert site.emulator is not None
    control = site.emulator.control
    return await control.wait_for(
        lambda: control.call(call_id),
        lambda call: call["ended"],
        within=5,
        what=f"call {call_id} ended at the emulator",
    )


async def start_call(site: Site, tab: Tab) -> str:
    """Click "Start call" and wait for the call to be live; returns its id."""
    await tab.button("Start call").click()
    await tab.wait_state(*LIVE)
    return await site.call_id()


async def welcome_spoken(emulator: EmulatorServer, call_id: str) -> None:
    """Wait until the emulator has sent the whole welcome (its first agent turn) and listens."""

    async def spoken() -> bool:
        seen = await emulator.control.media(call_id)
        return bool(seen["agent_turns"] >= 1 and seen["agent_state"] == "listening")

    await eventually(spoken, 15, what="the emulator finished its welcome")


async def test_start_connects_and_the_agent_is_heard_greeting_with_host_variables(site: Site, new_tab: NewTab) -> None:
    assert site.emulator is not None
    tab = await new_tab(site)
    start = tab.button("Start call")
    await start.wait_visible()
    await tab.status.wait_text("Ready")
    await tab.shot("idle")
    # Hold the WHIP answer a moment, so the connecting state can be seen.
    await site.emulator.control.add_fault(route="POST /v1/web-calls/{call_id}/whip", kind="latency", delay=1.0)

    await start.click()
    await tab.wait_state("connecting")
    await tab.status.wait_text("Connecting…")
    await tab.shot("connecting")
    await tab.wait_state(*LIVE)

    # Live in the state the agent last reported: "speaking" when its welcome's first state message came before the
    # browser reported the connection (the emulator's audio can lead it), else "listening" until that message.
    states = await tab.states()
    assert states[:2] == ["microphone", "connecting"] and states[2] in ("listening", "speaking"), states
    await tab.button("End call").wait_visible()
    await tab.button("Mute").wait_enabled()
    await tab.wait_audible()
    await tab.transcript.wait_contains(WELCOME)
    await tab.shot("live")
    # The level follows the agent's voice: once the emulator has sent the whole welcome, the page hears silence.
    call_id = await site.call_id()
    await welcome_spoken(site.emulator, call_id)
    await tab.wait_state("listening")
    await tab.wait_quiet(AUDIBLE / 2, within=3)
    assert (await site.emulator.control.media(call_id))["agent_turns"] == 1
    await tab.assert_clean()


@pytest.mark.engines("chromium")  # the caller speaks words: Firefox's fake microphone can only play a tone
async def test_caller_speaks_and_the_agent_takes_its_turn(
    site: Site, new_tab: NewTab, make_browser: MakeBrowser, speech_wav: Path
) -> None:
    assert site.emulator is not None
    tab = await new_tab(site, browser=await make_browser(speech_wav))
    call_id = await start_call(site, tab)

    await tab.wait_for(
        "() => window.__events.some((e) => e.type === 'transcript' && e.detail.role === 'user')",
        within=20,
        what="a transcript line of the caller",
    )
    await tab.transcript.wait_contains(FIRST_REPLY, within=15)
    lines = [(e["detail"]["role"], e["detail"]["text"]) for e in await tab.events("transcript")]
    assert lines[0] == ("agent", WELCOME)
    user = next(i for i, (role, _) in enumerate(lines) if role == "user")
    assert lines[user][1].strip(), "the caller's line is transcribed as empty"
    assert ("agent", FIRST_REPLY) in lines[user + 1 :]
    await tab.transcript.wait_contains(lines[user][1])
    assert (await site.emulator.control.media(call_id))["caller_turns"] >= 1
    await tab.shot("live-transcript")
    await tab.assert_clean()


async def test_mute_makes_the_emulator_hear_silence(site: Site, new_tab: NewTab, talking_browser: AnyBrowser) -> None:
    emulator = site.emulator
    assert emulator is not None
    tab = await new_tab(site, browser=talking_browser)
    call_id = await start_call(site, tab)

    async def hears_caller() -> bool:
        return float((await emulator.control.media(call_id))["caller_rms_recent"]) >= SPEECH

    async def hears_silence() -> bool:
        seen = await emulator.control.media(call_id)
        return float(seen["caller_rms_recent"]) < 0.001 and (seen["caller_silent_for"] or 0) >= 1.5

    await eventually(hears_caller, 10, what="the emulator hears the caller")
    mute = tab.button("Mute")
    await mute.wait_attribute("aria-pressed", "false")
    await mute.click()
    await mute.wait_attribute("aria-pressed", "true")
    assert (await tab.events("mute"))[-1]["detail"] == {"muted": True}
    # The caller is still talking into the microphone, but nothing audible reaches the emulator.
    await eventually(hears_silence, 5, what="the emulator hears silence while muted")
    await tab.shot("muted")

    await mute.click()
    await mute.wait_attribute("aria-pressed", "false")
    await eventually(hears_caller, 5, what="the emulator hears the caller again once unmuted")
    await tab.assert_clean()


async def test_volume_slider_sets_the_agent_volume_from_the_keyboard(site: Site, new_tab: NewTab) -> None:
    tab = await new_tab(site)
    await start_call(site, tab)
    await tab.wait_audible()
    volume = tab.role("slider", "Volume")
    await volume.wait_value("1")

    async def playing_at() -> float:
        level: float = await tab.call(
            "(tag) => document.querySelector(tag).shadowRoot.querySelector('audio').volume", "dialnexa-webcall"
        )
        return level

    assert await playing_at() == 1
    assert await tab.focused() == "End call"
    await tab.tab_to("Volume", backwards=True)
    await tab.press("Home")
    await volume.wait_value("0")
    assert await playing_at() == 0, "the agent is still played at full volume with the slider at 0"
    for _ in range(3):
        await tab.press("ArrowRight")
    await volume.wait_value("0.15")
    assert await playing_at() == pytest.approx(0.15)
    await tab.press("End")
    await volume.wait_value("1")
    assert await playing_at() == 1
    await tab.assert_clean()


async def test_hang_up_ends_the_call_as_user_disconnected_and_shows_the_summary(site: Site, new_tab: NewTab) -> None:
    """The widget hangs up twice: WHIP DELETE to DialNexa and POST .../end to the plugin. Here the plugin's hang-up
    reaches DialNexa last (see the next test for the other order)."""
    assert site.emulator is not None
    tab = await new_tab(site)
    call_id = await start_call(site, tab)
    await tab.transcript.wait_contains("Hello Priya")
    await site.emulator.control.add_fault(route="POST /v1/calls/{id}/end", kind="latency", delay=0.5)

    await tab.button("End call").click()
    await tab.wait_state("ended")
    await tab.status.wait_text("Call ended")
    assert (await tab.events("ended"))[0]["detail"]["reason"] == "hangup"
    record = await ended_record(site, call_id)
    assert (record["status"], record["end_reason"]) == ("completed", "user_disconnected")
    summary = tab.part("summary")
    await summary.wait_visible()
    await summary.wait_contains("Summary")
    await summary.wait_contains(str(record["summary"]))
    await tab.button("Call again").wait_visible()
    assert await tab.focused() == "Call again"
    await tab.shot("ended")
    await tab.assert_clean()


async def test_hang_up_is_recorded_as_user_disconnected_when_the_whip_delete_is_slow(
    site: Site, new_tab: NewTab
) -> None:
    """Whichever of the widget's two hang-ups reaches DialNexa first, the record must say the visitor hung up. Here
    the WHIP DELETE is slow (it needs a CORS preflight on a first call, so this happens without faults too)."""
    assert site.emulator is not None
    tab = await new_tab(site)
    call_id = await start_call(site, tab)
    await site.emulator.control.add_fault(
        route="DELETE /v1/web-calls/{call_id}/whip/{session_id}", kind="latency", delay=0.5
    )

    await tab.button("End call").click()
    await tab.wait_state("ended")
    record = await ended_record(site, call_id)
    assert (record["status"], record["end_reason"]) == ("completed", "user_disconnected")
    await tab.assert_clean()


async def test_keyboard_only_start_and_hang_up(site: Site, new_tab: NewTab) -> None:
    tab = await new_tab(site)

    await tab.tab_to("Start call")
    await tab.press("Enter")
    await tab.wait_state(*LIVE)
    call_id = await site.call_id()
    assert await tab.focused() == "End call", "the focus should move to the hang-up button during the call"
    await tab.transcript.wait_contains("Hello Priya")

    await tab.press("Escape")
    await tab.wait_state("ended")
    assert await tab.focused() == "Call again"
    assert (await ended_record(site, call_id))["status"] == "completed"
    await tab.assert_clean()


async def test_keyboard_only_with_the_floating_launcher(site: Site, new_tab: NewTab) -> None:
    tab = await new_tab(site, "/zero")

    await tab.tab_to("Open voice call")
    await tab.press("Space")
    await tab.button("Start call").wait_visible()
    assert await tab.focused() == "Start call"
    await tab.press("Enter")
    await tab.wait_state(*LIVE)
    call_id = await site.call_id()
    assert await tab.focused() == "End call"

    await tab.press("Space")
    await tab.wait_state("ended")
    assert (await ended_record(site, call_id))["status"] == "completed"
    await tab.assert_clean()


async def test_zero_markup_script_adds_a_floating_launcher(site: Site, new_tab: NewTab) -> None:
    tab = await new_tab(site, "/zero")
    assert await tab.widget_count() == 1
    assert await tab.widget_attribute("floating") == "true"
    assert await tab.widget_attribute("agent") == "sales"
    launcher = tab.button("Open voice call")
    box = await launcher.box()
    await tab.button("Start call").wait_hidden()
    # Bottom-right corner (the default offset is 20 px).
    assert VIEWPORT["width"] - (box["x"] + box["width"]) <= 40
    assert VIEWPORT["height"] - (box["y"] + box["height"]) <= 40
    await tab.shot("floating-closed")

    await launcher.click()
    await tab.part("launcher").wait_attribute("aria-expanded", "true")
    call_id = await start_call(site, tab)
    await tab.transcript.wait_contains("Hello Priya")
    await tab.shot("floating-live")
    await tab.button("End call").click()
    await tab.wait_state("ended")
    assert (await ended_record(site, call_id))["status"] == "completed"
    await tab.assert_clean()


async def test_standalone_call_page_runs_under_its_csp(site: Site, new_tab: NewTab) -> None:
    tab = await new_tab(site, "/webcall/call/sales", inject_probe=True)
    await tab.role("region", "Sales").wait_visible()
    call_id = await start_call(site, tab)
    await tab.wait_audible()
    await tab.transcript.wait_contains(WELCOME)
    await tab.button("End call").click()
    await tab.wait_state("ended")
    assert (await ended_record(site, call_id))["status"] == "completed"
    await tab.assert_clean()


async def test_every_call_shows_the_agent_speaking_its_welcome(site: Site, new_tab: NewTab) -> None:
    """The agent's first state message can arrive before the browser reports the connection; the widget keeps it, so
    "Agent speaking" shows during the welcome of every call (it was missed in 3 calls of 15)."""
    tab = await new_tab(site)
    for attempt in range(4):
        await tab.button("Start call" if attempt == 0 else "Call again").click()
        await tab.wait_state("speaking", within=10)
        await tab.status.wait_text("Agent speaking")
        await tab.button("End call").click()
        await tab.wait_state("ended")
