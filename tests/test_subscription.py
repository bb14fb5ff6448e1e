"""The plugin's webhook subscription when DialNexa refuses some of its names: registered without them, and said."""

from __future__ import annotations

import logging

import pytest

from webcall.dialnexa import DialNexaClient
from webcall.emulator.server import EmulatorServer
from webcall.errors import DialNexaBadRequest
from webcall.subscription import ManagedSubscription

URL = "https://shop.example/webcall/webhooks"
SECRET = "subscription-test-webhook-secret"
REFUSED_NAME = "call.answered"  # not a subscription name DialNexa documents: the emulator refuses it, as DialNexa does


async def test_a_refused_name_is_left_out_and_named(
    emulator: EmulatorServer, log_records: pytest.LogCaptureFixture
) -> None:
    async with DialNexaClient(api_key=emulator.api_key, base_url=emulator.base_url) as client:
        subscription = ManagedSubscription(client, (SECRET,), ("call.completed", REFUSED_NAME, "call.failed"))
        hook_id = await subscription.ensure(URL)
    (hook,) = emulator.state.webhooks.values()
    assert hook.id == hook_id and hook.url == URL and hook.events == ["call.completed", "call.failed"]
    assert subscription.refused == (REFUSED_NAME,)
    (warning,) = [r.getMessage() for r in log_records.records if r.levelno == logging.WARNING]
    assert f"DialNexa refused the subscription name(s) {REFUSED_NAME}" in warning
    assert "remove it from WEBCALL_WEBHOOK_EVENTS" in warning


async def test_names_dialnexa_accepts_beyond_the_shown_ones_are_kept(emulator: EmulatorServer) -> None:
    """Only the refused name is left out: the others are added back one at a time and kept when accepted."""
    events = ("call.completed", "call.no_answer", REFUSED_NAME, "call.failed")
    async with DialNexaClient(api_key=emulator.api_key, base_url=emulator.base_url) as client:
        subscription = ManagedSubscription(client, (SECRET,), events)
        await subscription.ensure(URL)
    (hook,) = emulator.state.webhooks.values()
    assert sorted(hook.events) == ["call.completed", "call.failed", "call.no_answer"]
    assert subscription.refused == (REFUSED_NAME,)


async def test_an_existing_subscription_is_updated_without_the_refused_name(emulator: EmulatorServer) -> None:
    async with DialNexaClient(api_key=emulator.api_key, base_url=emulator.base_url) as client:
        first = await ManagedSubscription(client, (SECRET,), ("call.completed",)).ensure(URL)
        emulator.state.webhooks[first].is_active = False
        subscription = ManagedSubscription(client, (SECRET,), ("call.completed", "call.failed", REFUSED_NAME))
        assert await subscription.ensure(URL) == first
    (hook,) = emulator.state.webhooks.values()
    assert hook.is_active and hook.events == ["call.completed", "call.failed"]
    assert subscription.refused == (REFUSED_NAME,)


async def test_a_refusal_that_is_not_about_names_is_raised_as_dialnexa_said_it(emulator: EmulatorServer) -> None:
    async with DialNexaClient(api_key=emulator.api_key, base_url=emulator.base_url) as client:
        subscription = ManagedSubscription(client, (SECRET,), ("call.completed", REFUSED_NAME))
        with pytest.raises(DialNexaBadRequest, match="url must be a valid URL"):
            await subscription.ensure("https://shop example/webcall/webhooks")
    assert not emulator.state.webhooks
