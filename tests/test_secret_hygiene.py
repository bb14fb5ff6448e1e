"""The DialNexa key and the plugin's secrets never reach a client or a log line at INFO and above."""

from __future__ import annotations

import logging
from typing import Any

import pytest

from webcall import Agent
from webcall.emulator.server import EmulatorServer
from webcall.emulator.testing import EmulatorControl

from .conftest import ORIGIN_HEADERS, MakeHost, runtime
from .hosting import SESSION_SECRET
from .offers import OFFER


async def test_no_secret_in_any_response_or_log(
    make_host: MakeHost, emulator: EmulatorServer, control: EmulatorControl, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    client, handle = await make_host(
        agents={"sales": Agent(id="agent_sales"), "ghost": Agent(id="agent_missing")},
        rate_limit=50,
        max_concurrent_calls=3,
    )
    seen: list[str] = []

    async def record(response: Any) -> Any:
        seen.append(await response.text())
        seen.append(repr(dict(response.headers)))
        return response

    ok = await (
        await record(
            await client.post("/webcall/sessions", json={"offer": OFFER, "agent": "sales"}, headers=ORIGIN_HEADERS)
        )
    ).json()
    await record(
        await client.post("/webcall/sessions", json={"offer": OFFER, "agent": "ghost"}, headers=ORIGIN_HEADERS)
    )
    await record(await client.post("/webcall/sessions", json={"offer": OFFER, "agent": "nope"}, headers=ORIGIN_HEADERS))
    await record(
        await client.post("/webcall/sessions", data="x", headers={**ORIGIN_HEADERS, "Content-Type": "text/plain"})
    )
    await record(
        await client.post(
            "/webcall/sessions", json={"offer": OFFER, "agent": "sales"}, headers={"Origin": "https://x.example"}
        )
    )
    await control.add_fault(route="POST /v1/web-calls", kind="status", status=500, count=1)
    await record(
        await client.post("/webcall/sessions", json={"offer": OFFER, "agent": "sales"}, headers=ORIGIN_HEADERS)
    )
    await control.add_fault(route="POST /v1/web-calls", kind="status", status=401, count=1)
    await record(
        await client.post("/webcall/sessions", json={"offer": OFFER, "agent": "sales"}, headers=ORIGIN_HEADERS)
    )
    await record(await client.post(ok["end_url"], headers={**ORIGIN_HEADERS, "Authorization": "Bearer nope"}))
    await record(await client.post(ok["end_url"], headers={**ORIGIN_HEADERS, "Authorization": f"Bearer {ok['token']}"}))
    for path in ("/webcall/healthz", "/webcall/widget.js", "/webcall/call/sales", "/webcall/snippet", "/webcall/x"):
        await record(await client.get(path))

    secrets = [emulator.api_key, emulator.api_key.split(":")[1], SESSION_SECRET]
    assert len(seen) > 20
    for secret in secrets:
        assert not any(secret in text for text in seen), "a secret reached a client"
        loud = [r.getMessage() for r in caplog.records if r.levelno >= logging.INFO]
        assert not any(secret in line for line in loud), "a secret reached a log line"
    assert runtime(handle).client is not None and emulator.api_key not in repr(handle.config)
