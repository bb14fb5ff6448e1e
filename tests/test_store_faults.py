"""Redis stumbles under live calls, with every part a real process: ``python -m webcall serve`` on a real
redis-server, DialNexa's emulator as its own process (webhooks with its real retries: 3, after 0.2, 0.4 and 0.8 s),
and browsers reading the calls' event streams over HTTP. Nothing is lost:

* Redis restarted empty mid-call: each stream still gets its call's ``call.ended`` with the summary (event ids carry
  the epoch of the call's log, so the renumbered log is not taken for events the browser has), and the host exactly
  one ``call.ended`` per call.
* An outage longer than DialNexa's retries across the end of four calls (every webhook attempt answered 503): once
  Redis is back (with its data, or empty), reconciliation gives every call's outcome to the host and the browser.
* Redis down while a start waits on DialNexa: the visitor gets 503, the call DialNexa created is hung up, and its
  slot is freed once Redis answers again.

The host's callback is the service's own (one ``webcall.service`` log line per event).
"""

from __future__ import annotations

import asyncio
import json
import re
import sys
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis as redis_client

from webcall.emulator.testing import EmulatorControl, eventually

from .hosting import ORIGIN
from .net import free_port
from .offers import OFFER
from .redis_server import RedisServer
from .service import Service, clean_environment, running_service

API_KEY = "emu_key:emu_secret"
WEBHOOK_SECRET = "store-faults-webhook-secret-0123456789"
CALLS = 4
DELIVERY_ATTEMPTS = 4  # the emulator's first attempt and its 3 retries
WITHIN = 60.0
"""How soon after Redis is back every call's outcome must have reached the host and the browser."""

pytestmark = pytest.mark.timeout(240)


@pytest.fixture
def dialnexa(tmp_path: Path) -> Iterator[Service]:
    """The emulator as its own process. Its media sessions wait 5 minutes for the browser's audio (there is none
    here), so a call lasts until the test ends it at DialNexa."""
    command = [
        sys.executable, "-m", "webcall.emulator", "--port", "{port}", "--api-key", API_KEY,
        "--media-connect-timeout", "300", "--log-level", "WARNING",
    ]  # fmt: skip
    with running_service(command, tmp_path, env=clean_environment(), ready_path="/_control/requests") as emulator:
        yield emulator


@pytest.fixture
async def control(dialnexa: Service) -> AsyncIterator[EmulatorControl]:
    async with EmulatorControl(dialnexa.url) as emulator_control:
        yield emulator_control


@pytest.fixture
def plugin(tmp_path: Path, redis: RedisServer, dialnexa: Service) -> Iterator[Service]:
    """``python -m webcall serve`` on the Redis store, its webhook registered at the emulator at start-up."""
    port = free_port()
    env = clean_environment(
        DIALNEXA_API_KEY=API_KEY,
        DIALNEXA_BASE_URL=f"{dialnexa.url}/v1",
        WEBCALL_STORE=redis.url,
        WEBCALL_PUBLIC_URL=f"http://127.0.0.1:{port}",
        WEBCALL_WEBHOOK_SECRETS=WEBHOOK_SECRET,
        WEBCALL_SESSION_SECRET="store-faults-session-secret-0123456789abcdef",
        WEBCALL_AGENTS="sales=agent_sales",
        WEBCALL_ALLOWED_ORIGINS=ORIGIN,
    )
    command = [sys.executable, "-m", "webcall", "serve", "--port", "{port}"]
    with running_service(command, tmp_path, env=env, port=port) as service:
        yield service
        service.stop()


@dataclass
class Browser:
    """One visitor's call and what its event stream has received."""

    call_id: str
    events: list[dict[str, Any]]

    def has(self, kind: str) -> bool:
        return any(event["type"] == kind for event in self.events)


async def read_stream(http: httpx.AsyncClient, url: str, events: list[dict[str, Any]]) -> None:
    """Collect a call's events as a browser's EventSource would, until ``call.ended``."""
    async with http.stream("GET", url, headers={"Origin": ORIGIN}) as response:
        assert response.status_code == 200, await response.aread()
        async for line in response.aiter_lines():
            if line.startswith("data:"):
                events.append(json.loads(line[5:]))
                if events[-1]["type"] == "call.ended":
                    return


@pytest.fixture
async def http() -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(timeout=httpx.Timeout(30, read=None)) as client:
        yield client


class Visitors:
    """Browsers on the plugin: each starts a call and reads its event stream until the call ends or the test does."""

    def __init__(self, http: httpx.AsyncClient, plugin: Service) -> None:
        self.http = http
        self.plugin = plugin
        self._reading: list[asyncio.Task[None]] = []

    async def start_calls(self, count: int) -> list[Browser]:
        browsers = []
        for _ in range(count):
            response = await self.http.post(
                f"{self.plugin.url}/webcall/sessions",
                json={"agent": "sales", "offer": OFFER},
                headers={"Origin": ORIGIN},
            )
            assert response.status_code == 201, response.text
            session = response.json()
            browser = Browser(session["call_id"], [])
            url = f"{self.plugin.url}{session['events_url']}?token={session['token']}"
            self._reading.append(asyncio.create_task(read_stream(self.http, url, browser.events)))
            browsers.append(browser)

        async def streams_opened() -> bool:
            return all(b.has("session.created") for b in browsers)

        await eventually(streams_opened, 10)
        return browsers

    async def leave(self) -> None:
        for reading in self._reading:
            reading.cancel()
        await asyncio.gather(*self._reading, return_exceptions=True)


@pytest.fixture
async def visitors(http: httpx.AsyncClient, plugin: Service) -> AsyncIterator[Visitors]:
    visiting = Visitors(http, plugin)
    yield visiting
    await visiting.leave()


async def end_at_dialnexa(http: httpx.AsyncClient, dialnexa: Service, call_id: str) -> None:
    """The agent hangs up at DialNexa: the plugin hears of it only from DialNexa."""
    response = await http.post(
        f"{dialnexa.url}/v1/calls/{call_id}/end",
        json={"reason": "agent_disconnected"},
        headers={"Authorization": f"Bearer {API_KEY}"},
    )
    assert response.status_code == 200, response.text


async def record_at_dialnexa(http: httpx.AsyncClient, dialnexa: Service, call_id: str) -> dict[str, Any]:
    response = await http.get(f"{dialnexa.url}/v1/calls/{call_id}", headers={"Authorization": f"Bearer {API_KEY}"})
    record: dict[str, Any] = response.json()
    return record


def host_heard(plugin: Service, call_id: str) -> int:
    """How many ``call.ended`` events about ``call_id`` the host's callback received."""
    return len(re.findall(rf"webcall\.service INFO call\.ended {call_id}\b", plugin.output()))


async def outcomes_arrive(plugin: Service, browsers: list[Browser], within: float) -> None:
    async def arrived() -> bool:
        return all(b.has("call.ended") and host_heard(plugin, b.call_id) for b in browsers)

    await eventually(arrived, within)


async def no_duplicates_after_a_round(plugin: Service, browsers: list[Browser]) -> None:
    """Wait out one reconciliation round (10 s) and more, then: exactly one ``call.ended`` per call for the host."""
    await asyncio.sleep(12)
    assert [host_heard(plugin, b.call_id) for b in browsers] == [1] * len(browsers), plugin.output()[-3000:]


def save(server: RedisServer) -> None:
    """Write Redis' data to disk, so the next start loads it: a restart with persistence."""
    with redis_client.Redis(port=server.port) as client:
        client.save()


# -- (a) ------------------------------------------------------------------------------------------------------------
async def test_redis_restarted_empty_mid_call_loses_no_call_ended(
    http: httpx.AsyncClient, redis: RedisServer, dialnexa: Service, plugin: Service, visitors: Visitors
) -> None:
    browsers = await visitors.start_calls(CALLS)
    redis.stop()
    redis.start()  # no persistence: every call's event log, its numbering and the dedupe keys are gone

    async def healthy() -> bool:
        return (await http.get(f"{plugin.url}/healthz")).status_code == 200

    await eventually(healthy, 10)
    for browser in browsers:
        await end_at_dialnexa(http, dialnexa, browser.call_id)
    await outcomes_arrive(plugin, browsers, 20)
    for browser in browsers:
        record = await record_at_dialnexa(http, dialnexa, browser.call_id)
        assert [e["type"] for e in browser.events] == ["session.created", "call.ended"]
        assert browser.events[-1]["call"]["summary"] == record["summary"] and record["summary"]
    await no_duplicates_after_a_round(plugin, browsers)


# -- (b) ------------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("comes_back", ["with-its-data", "empty"])
async def test_a_redis_outage_across_the_end_of_calls_loses_no_outcome(
    http: httpx.AsyncClient,
    redis: RedisServer,
    dialnexa: Service,
    control: EmulatorControl,
    plugin: Service,
    visitors: Visitors,
    comes_back: str,
) -> None:
    browsers = await visitors.start_calls(CALLS)
    if comes_back == "with-its-data":
        save(redis)
    redis.stop()
    down_at = time.monotonic()
    for browser in browsers:
        await end_at_dialnexa(http, dialnexa, browser.call_id)

    async def given_up() -> bool:
        return await control.pending_deliveries() == 0

    await eventually(given_up, 15)
    for browser in browsers:  # every attempt DialNexa made was refused: the webhooks are lost for good
        attempts = await control.deliveries(call_id=browser.call_id)
        assert [(a["event_type"], a["status"]) for a in attempts] == [("call_ended", 503)] * DELIVERY_ATTEMPTS
    outage = 30 if comes_back == "with-its-data" else 5  # 30 s: far past DialNexa's last retry
    await asyncio.sleep(max(0.0, outage - (time.monotonic() - down_at)))
    assert not any(b.has("call.ended") for b in browsers) and not any(host_heard(plugin, b.call_id) for b in browsers)
    redis.start()
    back_at = time.monotonic()
    await outcomes_arrive(plugin, browsers, WITHIN)
    print(f"\nRedis down {back_at - down_at:.1f} s; every outcome delivered {time.monotonic() - back_at:.1f} s after")
    for browser in browsers:
        record = await record_at_dialnexa(http, dialnexa, browser.call_id)
        assert browser.events[-1]["call"]["summary"] == record["summary"] and record["summary"]
        assert f"call {browser.call_id}: DialNexa says it ended" in plugin.output()
    await no_duplicates_after_a_round(plugin, browsers)


# -- (c) ------------------------------------------------------------------------------------------------------------
async def test_redis_down_during_a_start_hangs_the_call_up_and_frees_its_slot(
    http: httpx.AsyncClient, redis: RedisServer, dialnexa: Service, control: EmulatorControl, plugin: Service
) -> None:
    await control.add_fault(route="POST /v1/web-calls", kind="latency", delay=2.0)
    starting = asyncio.create_task(
        http.post(f"{plugin.url}/webcall/sessions", json={"agent": "sales", "offer": OFFER}, headers={"Origin": ORIGIN})
    )

    async def asked_dialnexa() -> bool:
        return await control.request_count("POST /v1/web-calls") > 0

    await eventually(asked_dialnexa, 10)
    assert (await http.get(f"{plugin.url}/healthz")).json()["active_calls"] == 1  # the start holds its slot
    save(redis)  # Redis comes back with the slot still taken, as after a failover
    redis.stop()
    response = await starting
    assert response.status_code == 503 and response.json()["code"] == "store_unavailable"
    [created] = await control.requests("POST /v1/web-calls")
    ended = [r["path"] for r in await control.requests("POST /v1/calls/{id}/end")]
    assert len(ended) == 1 and created["status"] == 201
    call_id = ended[0].split("/")[3]
    assert (await record_at_dialnexa(http, dialnexa, call_id))["status"] == "cancelled"  # no longer billed
    redis.start()

    async def slot_freed() -> bool:
        health = await http.get(f"{plugin.url}/healthz")
        return health.status_code == 200 and health.json()["active_calls"] == 0

    await eventually(slot_freed, 10)
