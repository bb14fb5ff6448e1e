"""Lifecycle relay seen from both ends: DialNexa's signed webhooks reach the host's Python callback with the context
stored at mint time, and the visitor's widget over SSE; and the "call me back" flow, from the form to a phone call.
Every test runs in Chromium and in Firefox."""

from __future__ import annotations

import asyncio
import logging
import re

import pytest

from webcall.emulator.server import EmulatorServer
from webcall.emulator.testing import eventually
from webcall.keys import RUNTIME

from .conftest import HOST_VARIABLES, MakeSite, NewTab, Site
from .shared import LIVE

pytestmark = [
    pytest.mark.browser,
    pytest.mark.asyncio(loop_scope="session"),
    pytest.mark.engines("chromium", "firefox"),
]

PHONE = "+14155550123"


async def test_call_ended_reaches_the_host_with_its_mint_context_and_the_widget_shows_the_summary(
    site: Site, new_tab: NewTab
) -> None:
    assert site.emulator is not None
    tab = await new_tab(site)
    await tab.button("Start call").click()
    await tab.wait_state(*LIVE)
    call_id = await site.call_id()
    await site.event("call.started", call_id)
    await tab.transcript.wait_contains("Hello Priya")

    await tab.button("End call").click()
    ended = await site.event("call.ended", call_id)

    assert ended.context is not None
    context = ended.context
    assert (context["agent"], context["agent_id"]) == ("sales", "agent_sales")
    assert context["origin"] == site.origin
    assert context["variables"] == HOST_VARIABLES
    assert ended.agent == "sales"
    record = await site.emulator.control.call(call_id)
    assert ended.call["status"] == record["status"] == "completed"
    assert ended.call["summary"] == record["summary"] and record["summary"]
    types = [e.type for e in site.events if e.call_id == call_id]
    assert types == ["session.created", "call.started", "call.ended"]
    deliveries = await site.emulator.control.deliveries(call_id=call_id)
    assert {(d["event_type"], d["status"]) for d in deliveries} == {("call_initiated", 200), ("call_ended", 200)}

    # The widget got the same event over SSE, without the host's private context.
    browser_event = (await tab.wait_event("call.ended"))["detail"]
    assert browser_event["call_id"] == call_id and "context" not in browser_event
    assert "metadata" not in browser_event["call"]
    summary = tab.part("summary")
    await summary.wait_visible()
    await summary.wait_contains(str(record["summary"]))
    await tab.assert_clean()


async def test_call_me_back_sends_the_number_and_dialnexa_rings_it(
    make_site: MakeSite, emu: EmulatorServer, new_tab: NewTab
) -> None:
    site = await make_site(emu, widget={"callback": "true"})
    tab = await new_tab(site)
    await tab.button("Call me back instead").click()
    phone = tab.role("textbox", "Your phone number")
    consent = tab.role("checkbox", "I agree to receive a call at this number.")
    send = tab.button("Call me")
    await phone.wait_visible()
    assert await tab.focused() == "Your phone number"
    alert = tab.role("alert")

    await phone.fill("4155550123")
    await send.click()
    await alert.wait_text("Enter your number in international format, e.g. +14155550123.")
    await phone.wait_attribute("aria-invalid", "true")
    await phone.fill("+1 (415) 555-0123")
    await send.click()
    await alert.wait_text("Please tick the box to agree to the call.")
    await consent.check()
    await tab.shot("callback-form")

    await send.click()
    await tab.text("Thanks! We'll call you shortly.").wait_visible()
    await tab.button("Start call").wait_visible()
    answer = (await tab.wait_event("callback"))["detail"]
    assert answer["status"] == "requested"
    call_id = answer["callback_id"]
    requested = await site.event("callback.requested", call_id)
    assert requested.context is not None and requested.context["phone_number"] == PHONE
    # The emulator places the phone call with the host's variables, and it runs through to its end.
    record = await emu.control.call(call_id)
    assert (record["type"], record["to_number"]) == ("phone", PHONE)
    assert record["metadata"] == HOST_VARIABLES
    ended = await site.event("call.ended", call_id)
    assert ended.context is not None and ended.context["phone_number"] == PHONE
    await tab.shot("callback-sent")
    await tab.assert_clean()


async def test_with_call_backs_off_the_widget_offers_no_call_back_form(
    make_site: MakeSite, emu: EmulatorServer, new_tab: NewTab
) -> None:
    site = await make_site(emu, widget={"callback": "true"}, callback_countries=())
    tab = await new_tab(site)
    asked = await tab.wait_response(lambda r: (r["method"], r["url"]) == ("GET", f"{site.origin}/webcall/callbacks"))
    assert asked["status"] == 200
    advice = "[webcall] call-backs are off: set WEBCALL_CALLBACK_COUNTRIES"

    async def advised() -> bool:  # the widget has read the answer once it advises the site owner
        return any(kind == "warning" and text.startswith(advice) for kind, text in tab.console)

    await eventually(advised, what="the site owner advised in the console")
    await tab.button("Start call").wait_visible()
    await tab.button("Call me back instead").wait_hidden()
    await tab.assert_clean(warnings=[re.escape(advice)])


async def test_visitor_leaving_mid_call_ends_it_without_server_errors(
    site: Site, new_tab: NewTab, caplog: pytest.LogCaptureFixture
) -> None:
    """Closing the tab during a call hangs it up; the plugin notices the vanished event stream without an error."""
    assert site.emulator is not None
    tab = await new_tab(site)
    await tab.button("Start call").click()
    await tab.wait_state(*LIVE)
    call_id = await site.call_id()
    await tab.transcript.wait_contains("Hello Priya")
    # DialNexa's call_ended webhook comes a second later, once the browser's connections are gone for sure.
    await site.emulator.control.add_webhook_fault(kind="delay", delay=1.0)
    await tab.assert_clean()

    await tab.leave()
    ended = await site.event("call.ended", call_id)
    assert ended.call["status"] == "completed"

    async def streams_closed() -> bool:
        return not site.handle.app[RUNTIME].streams

    # The plugin delivers call.ended to the gone browser's event stream, notices it is gone and closes it.
    await eventually(streams_closed, 20, what="the event stream closed")
    await asyncio.sleep(0.1)
    errors = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert not errors, "\n".join(f"{r.name}: {r.getMessage()} {r.exc_info and r.exc_info[1]!r}" for r in errors)
