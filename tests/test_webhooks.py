"""Webhook signatures (pure) and the /webhooks receiver: verification, rotation, dedupe, outbox, host context."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import sys
from collections.abc import AsyncIterator
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from webcall import Agent
from webcall.emulator.server import EmulatorServer
from webcall.errors import WebhookSignatureError
from webcall.events import CallEvent
from webcall.webhooks import signature, verify

from .conftest import MakeHost, runtime
from .hosting import ORIGIN
from .offers import OFFER

OLD, NEW = "old-secret-0123456789abcdef", "new-secret-0123456789abcdef"


def delivery(call_id: str, event_type: str = "call_ended", **call: Any) -> bytes:
    return json.dumps({"event_type": event_type, "payload": {"call": {"id": call_id, **call}}}).encode()


def test_signature_round_trip_both_headers_with_and_without_prefix() -> None:
    body = b'{"event_type": "call_ended"}'
    value = signature(body, NEW)
    assert value.startswith("sha256=") and len(value) == 71
    assert verify(body, {"x-nexa-signature": value}, [NEW]) == 0
    assert verify(body, {"X-DialNexa-Signature": value[7:]}, [NEW]) == 0
    assert verify(body, {"X-Nexa-Signature": "SHA256=" + value[7:].upper()}, [OLD, NEW]) == 1


@pytest.mark.parametrize(
    "headers",
    [
        {},
        {"x-nexa-signature": ""},
        {"x-nexa-signature": "sha256="},
        {"x-nexa-signature": "sha256=abc"},
        {"x-nexa-signature": "sha256=" + "g" * 64},
        {"x-nexa-signature": "sha256=" + "0" * 64},
    ],
)
def test_bad_signatures(headers: dict[str, str]) -> None:
    with pytest.raises(WebhookSignatureError):
        verify(b"{}", headers, [NEW])


def test_no_secret_configured_refuses() -> None:
    body = b"{}"
    with pytest.raises(WebhookSignatureError):
        verify(body, {"x-nexa-signature": signature(body, NEW)}, [])


@settings(max_examples=300, deadline=None)
@given(body=st.binary(max_size=512), header=st.text(max_size=200), secret=st.text(min_size=1, max_size=64))
def test_verify_only_raises_its_own_error(body: bytes, header: str, secret: str) -> None:
    with contextlib.suppress(WebhookSignatureError):
        verify(body, {"x-nexa-signature": header}, [secret])


@settings(max_examples=100, deadline=None)
@given(body=st.binary(max_size=512), secret=st.text(min_size=1, max_size=64), flip=st.integers(0, 63))
def test_any_changed_hex_digit_fails(body: bytes, secret: str, flip: int) -> None:
    good = signature(body, secret)[7:]
    digit = "0" if good[flip] != "0" else "1"
    bad = good[:flip] + digit + good[flip + 1 :]
    with pytest.raises(WebhookSignatureError):
        verify(body, {"x-nexa-signature": bad}, [secret])


async def post(client: Any, body: bytes, secret: str | None = NEW, header: str = "x-nexa-signature") -> Any:
    headers = {"Content-Type": "application/json"}
    if secret is not None:
        headers[header] = signature(body, secret)
    return await client.post("/webcall/webhooks", data=body, headers=headers)


async def test_receiver_accepts_rotated_secrets_and_dedupes(make_host: MakeHost) -> None:
    client, handle = await make_host(webhook_secrets=(NEW, OLD))
    received: list[CallEvent] = []
    handle.on_call_event.append(received.append)
    first = await post(client, delivery("call_a"), NEW)
    assert first.status == 200 and (await first.json())["duplicate"] is False
    again = await post(client, delivery("call_a"), OLD, header="X-DialNexa-Signature")
    assert again.status == 200 and (await again.json())["duplicate"] is True
    assert (await post(client, delivery("call_b", "call_initiated"), OLD)).status == 200
    await runtime(handle).bus.drain()
    assert sorted((e.call_id, e.type) for e in received) == [("call_a", "call.ended"), ("call_b", "call.started")]


async def test_bad_signature_is_401_without_detail(make_host: MakeHost) -> None:
    client, handle = await make_host(webhook_secrets=(NEW,))
    received: list[CallEvent] = []
    handle.on_call_event.append(received.append)
    for response in (
        await post(client, delivery("call_x"), "wrong-secret-000000000000"),
        await post(client, delivery("call_x"), None),
    ):
        assert response.status == 401
        body = await response.json()
        assert body == {
            "statusCode": 401,
            "error": "Unauthorized",
            "message": "Invalid signature.",
            "code": "invalid_signature",
        }
    await runtime(handle).bus.drain()
    assert received == [] and await runtime(handle).store.outbox_depth() == 0


async def test_oversized_and_unreadable_deliveries(make_host: MakeHost) -> None:
    client, _ = await make_host(webhook_secrets=(NEW,))
    assert (await post(client, b"x" * 300_000)).status == 413
    response = await post(client, b'{"hello": "world"}')
    assert response.status == 400 and (await response.json())["code"] == "invalid_event"


async def test_an_event_about_a_call_the_plugin_holds_no_context_of_still_has_every_context_key(
    make_host: MakeHost,
) -> None:
    """A call this plugin did not start (or whose context the store lost): the README's callback still runs."""
    client, handle = await make_host(webhook_secrets=(NEW,))
    identities: list[Any] = []

    @handle.on_call_event.on("call.ended")
    async def store_outcome(event: CallEvent) -> None:  # as the README writes it
        identities.append((event.context["identity"], event.call.get("summary"), event.call.get("duration")))

    await post(client, delivery("call_from_elsewhere", "call_ended", summary="Hello", status="completed"))
    await runtime(handle).bus.drain()
    assert identities == [(None, "Hello", None)]
    assert await handle.dead_letters() == []
    event = CallEvent(id="x", type="call.ended", call_id="call_y", time="now")
    assert event.context == {
        "call_id": "call_y",
        "agent": None,
        "agent_id": None,
        "origin": None,
        "identity": None,
        "variables": {},
        "created_at": None,
    }
    assert CallEvent.from_json({**event.to_json(), "context": None}).context == event.context


async def test_event_carries_host_context_from_mint_time(make_host: MakeHost) -> None:
    def variables(request: Any, alias: str, agent: Agent) -> dict[str, str]:
        return {"customer_ref": "CRM-42"}

    client, handle = await make_host(webhook_secrets=(NEW,), variables=variables)
    ended: list[CallEvent] = []
    handle.on_call_event.on("call.ended")(ended.append)
    minted = await (
        await client.post(
            "/webcall/sessions",
            json={"offer": OFFER, "agent": "sales", "variables": {"name": "Priya"}},
            headers={"Origin": ORIGIN},
        )
    ).json()
    await post(client, delivery(minted["call_id"], "call_ended", summary="Went well", status="completed"))
    await runtime(handle).bus.drain()
    assert len(ended) == 1
    event = ended[0]
    assert event.call["summary"] == "Went well" and event.agent == "sales"
    assert event.context is not None and event.context["origin"] == ORIGIN
    assert event.context["variables"] == {"name": "Priya", "customer_ref": "CRM-42"}
    assert await runtime(handle).store.active_slots() == 0  # call.ended freed the concurrent-call slot


async def test_unknown_event_types_pass_through(make_host: MakeHost) -> None:
    client, handle = await make_host(webhook_secrets=(NEW,))
    got: list[str] = []
    handle.on_call_event.append(lambda e: got.append(e.type))
    await post(client, delivery("call_q", "Voicemail Detected!"))
    await runtime(handle).bus.drain()
    assert got == ["dialnexa.voicemail_detected_"]


def big_delivery(call_id: str, size: int) -> bytes:
    call = {"id": call_id, "status": "completed", "transcript": "Agent: hello. " * (size // 14)}
    return json.dumps({"event_type": "call_ended", "payload": {"call": call}}).encode()


async def test_signed_body_sent_in_two_pieces_is_accepted(make_host: MakeHost) -> None:
    client, _ = await make_host(webhook_secrets=(NEW,))
    body = big_delivery("call_twopieces", 20_000)

    async def pieces() -> AsyncIterator[bytes]:
        yield body[:1000]
        await asyncio.sleep(0.05)
        yield body[1000:]

    headers = {"Content-Type": "application/json", "x-nexa-signature": signature(body, NEW)}
    response = await client.post("/webcall/webhooks", data=pieces(), headers=headers)
    assert response.status == 200, await response.text()


async def test_large_signed_body_is_accepted(make_host: MakeHost) -> None:
    client, _ = await make_host(webhook_secrets=(NEW,))
    body = big_delivery("call_large", 200_000)  # under the 256 KiB limit: a long call's transcript
    assert len(body) < 256 * 1024
    headers = {"Content-Type": "application/json", "x-nexa-signature": signature(body, NEW)}
    response = await client.post("/webcall/webhooks", data=body, headers=headers)
    assert response.status == 200, await response.text()


async def test_ensure_webhook_creates_updates_and_never_duplicates(
    make_host: MakeHost, emulator: EmulatorServer
) -> None:
    _, handle = await make_host(webhook_secrets=(NEW,), public_url="https://shop.example")
    target = "https://shop.example/webcall/webhooks"
    first = await handle.ensure_webhook()
    assert await handle.ensure_webhook() == first
    hooks = [h for h in emulator.state.webhooks.values() if h.url == target]
    assert len(hooks) == 1 and hooks[0].is_active and hooks[0].secret == NEW
    assert set(hooks[0].events) == {"call.completed", "call.failed"}
    # Someone deactivated it and made a copy by hand: both are repaired into one active subscription.
    hooks[0].is_active = False
    await runtime(handle).client.create_webhook(url=target, events=["call.completed"], secret="x" * 20, is_active=False)
    await handle.ensure_webhook()
    hooks = [h for h in emulator.state.webhooks.values() if h.url == target]
    assert len(hooks) == 1 and hooks[0].is_active and hooks[0].secret == NEW


async def test_register_webhook_command(emulator: EmulatorServer) -> None:
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith(("DIALNEXA_", "WEBCALL_"))},
        "DIALNEXA_API_KEY": emulator.api_key,
        "DIALNEXA_BASE_URL": emulator.base_url,
        "WEBCALL_AGENTS": "sales=agent_sales",
        "WEBCALL_PUBLIC_URL": "https://shop.example",
        "WEBCALL_WEBHOOK_SECRETS": NEW,
    }
    for _ in range(2):
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "webcall",
            "register-webhook",
            env=env,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
        )
        out, _ = await proc.communicate()
        assert proc.returncode == 0, out.decode()
        assert b"is registered" in out and emulator.api_key.encode() not in out
    urls = [h.url for h in emulator.state.webhooks.values()]
    assert urls == ["https://shop.example/webcall/webhooks"]
