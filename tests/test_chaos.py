"""Chaos against the emulator: a fifth of DialNexa's answers fail (429 with Retry-After, 502, 503, timeouts, dropped
connections), and the plugin must keep its promises.

* Reads are retried: a read fails only when every attempt the retry policy allows was a fault (checked attempt by
  attempt against the emulator's request log).
* Minting never creates a call twice: the emulator's web calls are exactly the sessions handed out plus the calls
  created after the plugin had given up on a slow answer (orphans, never handed out), and every mint sent one
  call-creating request that DialNexa did not refuse with a 429.
* When minting finally fails, the browser gets a clear 502/503/504 in the plugin's shape, with ``Retry-After`` where
  a retry makes sense, and nothing of DialNexa's own answer.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import Counter
from collections.abc import AsyncIterator
from typing import Any

import pytest
from aiohttp import web
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.samples import Sample

from webcall.dialnexa.retry import RetryPolicy
from webcall.emulator.server import EmulatorServer
from webcall.emulator.testing import EmulatorControl, RequestEntry
from webcall.errors import DialNexaError

from .conftest import ERROR_KEYS, ORIGIN_HEADERS, MakeHost, runtime
from .hosting import ORIGIN, served
from .offers import OFFER

MINT = "POST /v1/web-calls"
PHONE = "POST /v1/calls"
FAULT_RATE = 0.2
TIMEOUT = 0.4  # the plugin's upstream_timeout in these tests: a timeout fault costs under half a second
MAX_ATTEMPTS = RetryPolicy().max_attempts
# The failing kinds of the mix; each fires independently, so together they fail FAULT_RATE of the requests.
FAILURES: list[dict[str, Any]] = [
    {"kind": "status", "status": 429, "retry_after": 0.05},
    {"kind": "status", "status": 502},
    {"kind": "status", "status": 503},
    {"kind": "timeout", "delay": 2.0},
    {"kind": "reset"},
]


def each(rate: float, kinds: int) -> float:
    """The probability per fault that makes ``kinds`` independent faults fail ``rate`` of the requests together."""
    return float(1 - (1 - rate) ** (1 / kinds))


async def settled(control: EmulatorControl, route: str, within: float = 6.0) -> list[RequestEntry]:
    """The emulator's log for ``route`` once every request it is still holding (timeouts, latency) has finished."""
    deadline = time.monotonic() + within
    while True:
        entries = await control.requests(route)
        if all(r["status"] is not None or r["fault"] == "reset" for r in entries) or time.monotonic() > deadline:
            return entries
        await asyncio.sleep(0.05)


def faulted(entry: RequestEntry) -> bool:
    return entry["fault"] not in (None, "latency")


# -- (a) reads ----------------------------------------------------------------------------------------------------
async def test_reads_succeed_through_retries_when_a_fifth_of_answers_fail(
    make_host: MakeHost, emulator: EmulatorServer, control: EmulatorControl
) -> None:
    client, handle = await make_host(upstream_timeout=TIMEOUT, upstream_deadline=15)
    calls = []
    for _ in range(6):
        minted = await client.post("/webcall/sessions", json={"offer": OFFER, "agent": "sales"}, headers=ORIGIN_HEADERS)
        assert minted.status == 201
        calls.append((await minted.json())["call_id"])
    before = len(await control.requests())
    for failure in FAILURES:
        await control.add_fault(route="*", count=0, probability=each(FAULT_RATE, len(FAILURES)), **failure)
    dialnexa = runtime(handle).client
    per_worker = 15

    async def read_call(call_id: str) -> list[bool]:
        return [await succeeded(dialnexa.get_call(call_id)) for _ in range(per_worker)]

    async def read_agent(agent_id: str) -> list[bool]:
        return [await succeeded(dialnexa.get_agent(agent_id)) for _ in range(per_worker)]

    async def read_list() -> list[bool]:
        return [await succeeded(dialnexa.list_calls(limit=5)) for _ in range(per_worker)]

    # One worker per upstream path, each sequential: the log then tells which attempts belong to which read.
    workers = {f"/v1/calls/{c}": read_call(c) for c in calls}
    workers["/v1/agents/agent_sales"] = read_agent("agent_sales")
    workers["/v1/agents/agent_support"] = read_agent("agent_support")
    workers["/v1/calls"] = read_list()
    outcomes = dict(zip(workers, await asyncio.gather(*workers.values()), strict=True))

    log = (await control.requests())[before:]
    stats = await control.stats()
    assert sum(stats["requests"].values()) < 500, "the emulator's request log (500 entries) overflowed"
    attempts, retried, failed = 0, 0, 0
    for path, results in outcomes.items():
        entries = [r for r in log if r["method"] == "GET" and r["path"] == path]
        attempts += len(entries)
        position = 0
        for ok in results:
            if ok:  # some faulted attempts, then the one good answer
                tries = next(n for n in range(1, MAX_ATTEMPTS + 1) if not faulted(entries[position + n - 1]))
                retried += tries > 1
            else:  # a read fails only after every attempt allowed was a fault
                tries = MAX_ATTEMPTS
                assert all(faulted(e) for e in entries[position : position + tries]), (path, entries[position:])
                failed += 1
            position += tries
        assert position == len(entries), f"{path}: {len(entries) - position} attempt(s) no read accounts for"
    reads = sum(len(r) for r in outcomes.values())
    fault_count = sum(faulted(e) for e in log)
    print(
        f"\nchaos reads: {reads} reads, {attempts} upstream attempts, {fault_count} faulted "
        f"({fault_count / attempts:.0%}), {retried} reads saved by a retry, {failed} failed after {MAX_ATTEMPTS} faults"
    )
    assert fault_count >= 0.1 * attempts, "the faults did not fire: nothing was tested"
    assert retried >= 5
    # With independent faults at 20 %, a read fails only on three faults in a row: 0.8 %, about one read in 135.
    assert failed <= 8


async def succeeded(read: Any) -> bool:
    try:
        await read
    except DialNexaError:
        return False
    return True


# -- (b) minting ------------------------------------------------------------------------------------------------------
async def metric_samples(client: Any) -> dict[str, list[Sample]]:
    response = await client.get("/webcall/metrics")
    assert response.status == 200
    return {family.name: family.samples for family in text_string_to_metric_families(await response.text())}


async def mint_many(client: Any, mints: int, parallel: int = 15) -> list[tuple[int, dict[str, Any]]]:
    gate = asyncio.Semaphore(parallel)

    async def mint() -> tuple[int, dict[str, Any]]:
        async with gate:
            response = await client.post(
                "/webcall/sessions", json={"offer": OFFER, "agent": "sales"}, headers=ORIGIN_HEADERS
            )
            body: dict[str, Any] = await response.json()
            return response.status, body

    return await asyncio.gather(*(mint() for _ in range(mints)))


def outcomes(results: list[tuple[int, dict[str, Any]]]) -> Counter[str]:
    return Counter(str(body.get("code", status)) for status, body in results)


def chaos_host(make_host: MakeHost) -> Any:
    return make_host(
        metrics=True,
        upstream_timeout=TIMEOUT,
        upstream_deadline=15,
        rate_limit=10**6,
        global_rate_limit=10**6,
        max_concurrent_calls=10**6,
    )


async def test_minting_under_failures_never_sends_the_billable_post_twice(
    make_host: MakeHost, emulator: EmulatorServer, control: EmulatorControl
) -> None:
    client, handle = await chaos_host(make_host)
    for failure in FAILURES:
        await control.add_fault(route=MINT, count=0, probability=each(FAULT_RATE, len(FAILURES)), **failure)
    mints = 150
    results = await mint_many(client, mints)
    entries = await settled(control, MINT)
    stats = await control.stats()

    handed_out = [body["call_id"] for status, body in results if status == 201]
    created = {c.id for c in emulator.state.calls.values() if c.type == "web"}
    processed = [e for e in entries if e["status"] == 201]  # the requests DialNexa acted on
    refused_429 = [e for e in entries if e["status"] == 429]
    orphans = created - set(handed_out)
    codes = outcomes(results)
    print(
        f"\nchaos minting (failures): {mints} mints, {len(entries)} POST /v1/web-calls, {stats['faults_fired']} "
        f"faults fired ({len(refused_429)} of them 429, retried), created upstream {len(created)}, "
        f"handed out {len(handed_out)}, orphans {len(orphans)}; outcomes {dict(codes)}"
    )
    assert len(set(handed_out)) == len(handed_out) and set(handed_out) <= created
    assert len(created) == len(processed), "a call was created by a request that failed, or twice by one"
    # A call no visitor was given can only come from a request the plugin stopped waiting for (none is expected
    # here: no fault in this mix answers late).
    assert len(orphans) <= codes["upstream_timeout"]
    # Each mint sent exactly one request that DialNexa did not refuse with 429, except the mints whose every
    # attempt was refused with 429 (upstream_busy, as is a 503, which is never retried): no ambiguous failure was
    # ever retried.
    unavailable = [e for e in entries if e["status"] == 503]
    assert len(entries) - len(refused_429) + codes["upstream_busy"] - len(unavailable) == mints
    for status, body in results:
        if status != 201:
            assert status in (502, 503, 504) and set(body) == ERROR_KEYS, (status, body)
    assert stats["faults_fired"] >= mints // 10, "the faults did not fire: nothing was tested"

    # The metrics tell an operator the same story: every attempt, by outcome, and every refusal, by code.
    metrics = await metric_samples(client)
    attempts = {
        s.labels["outcome"]: s.value
        for s in metrics["webcall_upstream_seconds"]
        if s.name.endswith("_count") and s.labels["route"] == "POST /web-calls"
    }
    log_statuses = Counter(str(e["status"]) for e in entries if e["fault"] == "status")
    assert sum(attempts.values()) == len(entries)
    for answer in ("429", "502", "503"):
        assert attempts.get(answer, 0) == log_statuses[answer], (answer, attempts, log_statuses)
    assert attempts.get("network", 0) == len([e for e in entries if e["fault"] == "reset"])
    assert attempts.get("timeout", 0) >= len([e for e in entries if e["fault"] == "timeout"])
    refused = {
        s.labels["code"]: s.value
        for s in metrics["webcall_requests_refused"]
        if s.name.endswith("_total") and s.labels["route"] == "POST /webcall/sessions"
    }
    assert refused == {code: n for code, n in codes.items() if code != "201"}
    minted = [s.value for s in metrics["webcall_sessions_minted"] if s.name.endswith("_total")]
    assert minted == [len(handed_out)]
    assert await runtime(handle).store.active_slots() == len(handed_out)


async def test_an_answer_slower_than_the_plugin_waits_leaves_an_orphan_never_handed_out(
    make_host: MakeHost, emulator: EmulatorServer, control: EmulatorControl
) -> None:
    """DialNexa creates the call, but answers after the plugin gave up: the visitor gets a 504 and the call stays
    unused upstream (its single-use media token expires). The plugin must not retry, and must not hand it out."""
    client, handle = await chaos_host(make_host)
    await control.add_fault(route=MINT, kind="latency", delay=TIMEOUT * 2.5, count=0, probability=FAULT_RATE)
    mints = 60
    results = await mint_many(client, mints)
    entries = await settled(control, MINT)

    handed_out = {body["call_id"] for status, body in results if status == 201}
    created = {c.id: c for c in emulator.state.calls.values() if c.type == "web"}
    orphans = set(created) - handed_out
    slow = [e for e in entries if e["fault"] == "latency"]
    codes = outcomes(results)
    print(
        f"\nchaos minting (slow answers): {mints} mints, {len(entries)} POST /v1/web-calls, {len(slow)} answered "
        f"after the plugin gave up; created upstream {len(created)}, handed out {len(handed_out)}, "
        f"orphans {len(orphans)}; outcomes {dict(codes)}"
    )
    assert len(entries) == mints, "a timed-out creation was retried"
    assert handed_out <= set(created) and len(handed_out) == codes["201"]
    # Every 504 left exactly one orphan; every answer slowed past the timeout was a 504.
    assert len(orphans) == codes["upstream_timeout"] >= len(slow) >= 1
    # An orphan is a call DialNexa created after the plugin stopped waiting (never used), or one whose media
    # exchange, the second half of a start, outran the timeout on a loaded machine: the plugin hung that one up.
    late = [o for o in orphans if created[o].status == "created" and not created[o].token_used]
    hung_up = [o for o in orphans if created[o].ended and created[o].end_reason == "network_failure"]
    assert len(late) + len(hung_up) == len(orphans) and len(late) >= len(slow), (len(late), len(hung_up), len(slow))
    assert len(created) == len(handed_out) + len(orphans)
    assert await runtime(handle).store.active_slots() == len(handed_out)  # the orphans' slots were given back


# -- (c) the answer when minting finally fails ---------------------------------------------------------------------
SECRET_DETAIL = "upstream-detail-7f3c9a: internal stack frame at dialnexa.billing"


@pytest.mark.parametrize(
    ("fault", "status", "code", "attempts"),
    [
        ({"kind": "status", "status": 503}, 503, "upstream_busy", 1),
        ({"kind": "status", "status": 502}, 502, "upstream_error", 1),
        ({"kind": "status", "status": 500}, 502, "upstream_error", 1),
        ({"kind": "status", "status": 429, "retry_after": 30}, 503, "upstream_busy", 1),
        ({"kind": "status", "status": 429, "retry_after": 0.05}, 503, "upstream_busy", MAX_ATTEMPTS),
        ({"kind": "status", "status": 429}, 503, "upstream_busy", MAX_ATTEMPTS),
        ({"kind": "reset"}, 503, "upstream_unavailable", 1),
        ({"kind": "timeout", "delay": 2.0}, 504, "upstream_timeout", 1),
        ({"kind": "status", "status": 400}, 502, "upstream_rejected", 1),
        ({"kind": "status", "status": 402}, 502, "upstream_rejected", 1),
        ({"kind": "status", "status": 401}, 502, "upstream_rejected", 1),
    ],
    ids=lambda v: str(v) if not isinstance(v, dict) else "-".join(str(x) for x in v.values()),
)
async def test_a_failed_mint_is_a_clear_answer_without_the_upstream_body(
    make_host: MakeHost,
    emulator: EmulatorServer,
    control: EmulatorControl,
    fault: dict[str, Any],
    status: int,
    code: str,
    attempts: int,
) -> None:
    client, handle = await make_host(upstream_timeout=TIMEOUT)
    await control.add_fault(route=MINT, count=0, message=SECRET_DETAIL, **fault)
    response = await client.post("/webcall/sessions", json={"offer": OFFER, "agent": "sales"}, headers=ORIGIN_HEADERS)
    text = await response.text()
    assert response.status == status, text
    body = await response.json()
    assert set(body) == ERROR_KEYS and body["code"] == code and body["statusCode"] == status
    assert "voice service" in body["message"]
    assert "upstream-detail" not in text and "upstream-detail" not in repr(dict(response.headers))
    assert response.headers["Access-Control-Allow-Origin"] == ORIGIN  # a cross-origin page can read the error
    if code in ("upstream_error", "upstream_busy", "upstream_unavailable"):
        wait = int(response.headers["Retry-After"])
        assert 1 <= wait <= 60
        if fault.get("retry_after") == 30:
            assert wait == 30  # DialNexa's own wait, passed on
        assert "Retry-After" in response.headers["Access-Control-Expose-Headers"]
    elif code == "upstream_rejected":
        assert "Retry-After" not in response.headers  # not worth retrying
    assert await control.request_count(MINT) == attempts
    assert emulator.state.calls == {} and await runtime(handle).store.active_slots() == 0


# -- call-backs: an ambiguous failure is looked up, never retried blindly -------------------------------------------
async def test_a_slow_callback_is_found_not_placed_twice(
    make_host: MakeHost, emulator: EmulatorServer, control: EmulatorControl
) -> None:
    client, _ = await make_host(upstream_timeout=TIMEOUT, callback_countries=("US",))
    await control.add_fault(route=PHONE, kind="latency", delay=TIMEOUT * 2, count=1)
    response = await client.post(
        "/webcall/callbacks",
        json={"agent": "sales", "phone_number": "+14155550123", "consent": True},
        headers=ORIGIN_HEADERS,
    )
    assert response.status == 202, await response.text()
    body = await response.json()
    phone_calls = [c for c in emulator.state.calls.values() if c.type == "phone"]
    assert [c.id for c in phone_calls] == [body["callback_id"]]
    assert await control.request_count(PHONE) == 1


async def test_a_callback_that_never_arrived_is_a_timeout_not_a_second_call(
    make_host: MakeHost, emulator: EmulatorServer, control: EmulatorControl
) -> None:
    client, _ = await make_host(upstream_timeout=TIMEOUT, callback_countries=("US",))
    await control.add_fault(route=PHONE, kind="timeout", delay=3.0, count=1)
    response = await client.post(
        "/webcall/callbacks",
        json={"agent": "sales", "phone_number": "+14155550123", "consent": True},
        headers=ORIGIN_HEADERS,
    )
    body = await response.json()
    assert response.status == 504 and body["code"] == "upstream_timeout", body
    assert await control.request_count(PHONE) == 1 and emulator.state.calls == {}


# -- a hostile upstream ----------------------------------------------------------------------------------------------
@contextlib.asynccontextmanager
async def rate_limited_upstream(retry_after: str) -> AsyncIterator[str]:
    """A DialNexa that answers every request 429 with the given ``Retry-After``; yields its base URL."""

    async def answer(request: web.Request) -> web.Response:
        return web.json_response(
            {"statusCode": 429, "message": "Too many requests", "error": "Too Many Requests"},
            status=429,
            headers={"Retry-After": retry_after},
        )

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", answer)
    async with served(app) as origin:
        yield f"{origin}/v1"


@pytest.mark.parametrize("value", ["0", "nan", "-5", "Wed, 21 Oct 2015 07:28:00 GMT", "soon", "3600"])
async def test_odd_retry_after_values_from_upstream_give_a_sane_answer(
    make_host: MakeHost, caplog: pytest.LogCaptureFixture, value: str
) -> None:
    async with rate_limited_upstream(value) as base_url:
        client, _ = await make_host(base_url=base_url, upstream_timeout=TIMEOUT)
        response = await client.post(
            "/webcall/sessions", json={"offer": OFFER, "agent": "sales"}, headers=ORIGIN_HEADERS
        )
        body = await response.json()
        assert response.status == 503 and body["code"] == "upstream_busy", body
        assert 1 <= int(response.headers["Retry-After"]) <= 3600
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]


@pytest.mark.parametrize("value", ["1e999", "inf"])
async def test_an_infinite_retry_after_from_upstream_is_not_a_500(
    make_host: MakeHost, caplog: pytest.LogCaptureFixture, value: str
) -> None:
    async with rate_limited_upstream(value) as base_url:
        client, _ = await make_host(base_url=base_url, upstream_timeout=TIMEOUT)
        response = await client.post(
            "/webcall/sessions", json={"offer": OFFER, "agent": "sales"}, headers=ORIGIN_HEADERS
        )
        assert response.status == 503, await response.text()
        assert int(response.headers["Retry-After"]) >= 1
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]
