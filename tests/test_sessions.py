"""POST /webcall/sessions over HTTP, mounted in a host app, against the real emulator."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import pytest
from aiohttp import web

from webcall import Agent, HTTPProblem
from webcall.emulator.server import EmulatorServer
from webcall.emulator.testing import EmulatorControl
from webcall.tokens import AUDIENCE_CALL

from .conftest import ORIGIN_HEADERS, MakeHost, mint, problem, runtime, without_defaults
from .hosting import ORIGIN


async def test_mint_returns_what_the_browser_needs(make_host: MakeHost, emulator: EmulatorServer) -> None:
    client, handle = await make_host()
    response = await mint(client, {"agent": "sales", "variables": {"name": "Priya"}})
    assert response.status == 201, await response.text()
    assert response.headers["Cache-Control"] == "no-store"
    assert response.headers["Access-Control-Allow-Origin"] == ORIGIN
    body = await response.json()
    assert set(body) == {
        "call_id", "agent", "answer", "token", "token_expires_at", "max_call_seconds",
        "media_url", "end_url", "events_url", "callbacks_url", "quality_url", "media_etag", "ice_servers",
    }  # fmt: skip
    assert body["media_etag"] == response.headers["ETag"] and body["ice_servers"] == []
    assert body["call_id"].startswith("call_") and body["agent"] == "sales"
    assert body["answer"].startswith("v=0") and "a=ice-ufrag:" in body["answer"], "DialNexa's SDP answer"
    assert body["media_url"] == response.headers["Location"] == f"/webcall/sessions/{body['call_id']}/media"
    assert response.headers["ETag"]
    assert body["end_url"] == f"/webcall/sessions/{body['call_id']}/end"
    call_record = emulator.state.calls[body["call_id"]]
    assert call_record.token_used, "the plugin spent the single-use access token on the browser's offer"
    text = await response.text()
    assert call_record.access_token is not None and call_record.access_token not in text and emulator.origin not in text
    claims = runtime(handle).tokens.verify(body["token"], AUDIENCE_CALL, call_id=body["call_id"])
    assert claims.call_id == body["call_id"]
    call = emulator.state.calls[body["call_id"]]
    assert call.type == "web" and call.agent_id == "agent_sales" and call.metadata == {"name": "Priya"}
    context = await runtime(handle).store.get_context(body["call_id"])
    assert context is not None and context["agent"] == "sales" and context["origin"] == ORIGIN


async def test_host_variables_win_over_visitor_values(make_host: MakeHost, emulator: EmulatorServer) -> None:
    def variables(request: web.Request, alias: str, agent: Agent) -> dict[str, str]:
        return {"company": "Acme Corp", "plan": "gold"}

    client, _ = await make_host(variables=variables)
    response = await mint(client, {"agent": "sales", "variables": {"name": "Priya", "company": "Evil Inc"}})
    body = await response.json()
    assert emulator.state.calls[body["call_id"]].metadata == {"name": "Priya", "company": "Acme Corp", "plan": "gold"}


async def test_async_variables_hook(make_host: MakeHost, emulator: EmulatorServer) -> None:
    async def variables(request: web.Request, alias: str, agent: Agent) -> dict[str, str]:
        await asyncio.sleep(0)
        return {"name": request.headers.get("X-User", "guest")}

    client, _ = await make_host(variables=variables)
    body = await (await mint(client, headers={**ORIGIN_HEADERS, "X-User": "Ana"})).json()
    assert emulator.state.calls[body["call_id"]].metadata["name"] == "Ana"


@pytest.mark.parametrize(
    ("variables", "fragment"),
    [
        ({"plan": "free"}, "cannot be set from the page"),
        ({"name": "{{call_id}}"}, "not allowed"),
        ({"name": "Priya\u0000"}, "not allowed"),
        ({"name": "x" * 201}, "longer than 200"),
        ({"name": 5}, "must be a string"),
        (["name"], "JSON object"),
    ],
)
async def test_bad_visitor_variables(
    make_host: MakeHost, emulator: EmulatorServer, variables: Any, fragment: str
) -> None:
    client, _ = await make_host()
    body = await problem(await mint(client, {"agent": "sales", "variables": variables}), 400, "invalid_variables")
    assert fragment in body["message"]
    assert emulator.state.calls == {}


async def test_disallowed_origin_makes_no_upstream_call(
    make_host: MakeHost, emulator: EmulatorServer, control: EmulatorControl
) -> None:
    client, _ = await make_host()
    response = await mint(client, headers={"Origin": "https://evil.example"})
    await problem(response, 403, "origin_not_allowed")
    assert "Access-Control-Allow-Origin" not in response.headers
    assert await control.request_count("POST /v1/web-calls") == 0


async def test_missing_origin_is_refused(make_host: MakeHost, emulator: EmulatorServer) -> None:
    client, _ = await make_host()
    await problem(await mint(client, headers={}), 403, "origin_not_allowed")
    assert emulator.state.calls == {}


async def test_same_origin_allowed_without_allowlist(make_host: MakeHost) -> None:
    client, _ = await make_host(allowed_origins=())
    own = f"http://{client.host}:{client.port}"
    response = await mint(client, headers={"Origin": own})
    assert response.status == 201
    assert "Access-Control-Allow-Origin" not in response.headers  # same origin needs no CORS
    await problem(await mint(client), 403, "origin_not_allowed")


async def test_preflight(make_host: MakeHost) -> None:
    client, _ = await make_host()
    ok = await client.options(
        "/webcall/sessions",
        headers={
            **ORIGIN_HEADERS,
            "Access-Control-Request-Method": "POST",
            "Access-Control-Request-Headers": "content-type",
        },
    )
    assert ok.status == 204
    assert ok.headers["Access-Control-Allow-Origin"] == ORIGIN
    assert "POST" in ok.headers["Access-Control-Allow-Methods"]
    assert "content-type" in ok.headers["Access-Control-Allow-Headers"]
    bad = await client.options(
        "/webcall/sessions", headers={"Origin": "https://evil.example", "Access-Control-Request-Method": "POST"}
    )
    await problem(bad, 403, "origin_not_allowed")
    assert "Access-Control-Allow-Origin" not in bad.headers


async def test_wrong_content_type(make_host: MakeHost, emulator: EmulatorServer) -> None:
    client, _ = await make_host()
    response = await client.post(
        "/webcall/sessions", data='{"agent": "sales"}', headers={**ORIGIN_HEADERS, "Content-Type": "text/plain"}
    )
    await problem(response, 415, "unsupported_media_type")
    assert emulator.state.calls == {}


@pytest.mark.parametrize("raw", ["{not json", "[1, 2]", '"sales"', "\xff\xfe"])
async def test_bad_json(make_host: MakeHost, raw: str) -> None:
    client, _ = await make_host()
    response = await client.post(
        "/webcall/sessions", data=raw.encode("latin-1"), headers={**ORIGIN_HEADERS, "Content-Type": "application/json"}
    )
    await problem(response, 400, "invalid_json")


async def test_oversized_body(make_host: MakeHost) -> None:
    client, _ = await make_host()
    response = await mint(client, {"agent": "sales", "pad": "x" * 20_000})
    await problem(response, 413, "payload_too_large")


async def test_unknown_and_missing_agent(make_host: MakeHost, emulator: EmulatorServer) -> None:
    client, _ = await make_host()
    await problem(await mint(client, {"agent": "agent_sales"}), 404, "unknown_agent")
    await problem(await mint(client, {}), 400, "invalid_request")
    await problem(await mint(client, {"agent": ["sales"]}), 400, "invalid_request")
    assert emulator.state.calls == {}


async def test_rate_limited_per_ip_with_retry_after(make_host: MakeHost, emulator: EmulatorServer) -> None:
    client, _ = await make_host(rate_limit=3, rate_limit_window=60)
    for _ in range(3):
        assert (await mint(client)).status == 201
    response = await mint(client, headers={**ORIGIN_HEADERS, "X-Forwarded-For": "203.0.113.9"})  # forged, not trusted
    await problem(response, 429, "rate_limited")
    assert 55 <= int(response.headers["Retry-After"]) <= 60
    assert len(emulator.state.calls) == 3


async def test_a_start_refused_after_its_slot_was_claimed_gives_the_slot_back(
    make_host: MakeHost, emulator: EmulatorServer
) -> None:
    client, handle = await make_host(max_concurrent_calls=1)
    store = runtime(handle).store
    refusals: list[tuple[Any, int, str]] = [
        ("{not json", 400, "invalid_json"),
        ({"agent": "sales", "offer": "not sdp"}, 400, "offer_required"),
        ({"agent": "nobody"}, 404, "unknown_agent"),
        ({"agent": "sales", "variables": {"name": 7}}, 400, "invalid_variables"),
    ]
    for body, status, code in refusals:
        await problem(await mint(client, body), status, code)
        assert await store.active_slots() == 0, code
    assert (await mint(client)).status == 201, "the only line is still free"
    assert await store.active_slots() == 1


async def test_at_capacity_a_bad_request_is_still_told_what_is_wrong(make_host: MakeHost) -> None:
    client, _ = await make_host(max_concurrent_calls=1)
    assert (await mint(client)).status == 201
    await problem(await mint(client, {"agent": "nobody"}), 404, "unknown_agent")
    await problem(await mint(client), 503, "capacity_reached")


async def test_trusted_proxy_hop_is_used(make_host: MakeHost) -> None:
    client, _ = await make_host(rate_limit=1, trusted_proxies=1)
    assert (await mint(client, headers={**ORIGIN_HEADERS, "X-Forwarded-For": "203.0.113.1"})).status == 201
    assert (await mint(client, headers={**ORIGIN_HEADERS, "X-Forwarded-For": "203.0.113.2"})).status == 201
    await problem(await mint(client, headers={**ORIGIN_HEADERS, "X-Forwarded-For": "203.0.113.1"}), 429, "rate_limited")


async def test_concurrent_call_cap_and_release_on_end(make_host: MakeHost, emulator: EmulatorServer) -> None:
    client, _ = await make_host(max_concurrent_calls=2)
    first = await (await mint(client)).json()
    assert (await mint(client)).status == 201
    response = await mint(client)
    await problem(response, 503, "capacity_reached")
    assert int(response.headers["Retry-After"]) > 0
    assert len(emulator.state.calls) == 2
    ended = await client.post(first["end_url"], headers={**ORIGIN_HEADERS, "Authorization": f"Bearer {first['token']}"})
    assert ended.status == 200, await ended.text()
    assert (await mint(client)).status == 201


async def test_cap_holds_under_parallel_load(make_host: MakeHost, emulator: EmulatorServer) -> None:
    client, _ = await make_host(max_concurrent_calls=5, rate_limit=100)
    responses = await asyncio.gather(*(mint(client) for _ in range(20)))
    statuses = sorted(r.status for r in responses)
    assert statuses.count(201) == 5 and statuses.count(503) == 15
    assert len(emulator.state.calls) == 5


async def test_authorize_hook(make_host: MakeHost, emulator: EmulatorServer) -> None:
    def authorize(request: web.Request) -> str | bool:
        user = request.headers.get("X-User")
        return user if user else False

    client, _ = await make_host(authorize=authorize, identity_rate_limit=1)
    await problem(await mint(client), 403, "forbidden")
    assert (await mint(client, headers={**ORIGIN_HEADERS, "X-User": "u1"})).status == 201
    await problem(await mint(client, headers={**ORIGIN_HEADERS, "X-User": "u1"}), 429, "rate_limited")
    assert (await mint(client, headers={**ORIGIN_HEADERS, "X-User": "u2"})).status == 201
    assert len(emulator.state.calls) == 2


async def test_authorize_hook_custom_problem(make_host: MakeHost) -> None:
    async def authorize(request: web.Request) -> bool:
        raise HTTPProblem(401, "login_required", "Sign in to call us.")

    client, _ = await make_host(authorize=authorize)
    body = await problem(await mint(client), 401, "login_required")
    assert body["message"] == "Sign in to call us."


async def test_failing_hook_is_a_clean_500(make_host: MakeHost, log_records: pytest.LogCaptureFixture) -> None:
    def variables(request: web.Request, alias: str, agent: Agent) -> dict[str, str]:
        raise RuntimeError("database down")

    client, _ = await make_host(variables=variables)
    body = await problem(await mint(client), 500, "hook_failed")
    assert "database" not in body["message"]
    assert any("variables hook failed" in r.getMessage() for r in log_records.records)


async def test_upstream_4xx(make_host: MakeHost, emulator: EmulatorServer) -> None:
    client, _ = await make_host(agents={"ghost": Agent(id="agent_missing")})
    response = await mint(client, {"agent": "ghost"})
    body = await problem(response, 502, "upstream_rejected")
    assert "Agent not found" not in body["message"]  # the upstream body is not echoed


async def test_upstream_5xx_is_not_retried_for_the_billable_post(
    make_host: MakeHost, emulator: EmulatorServer, control: EmulatorControl
) -> None:
    client, _ = await make_host()
    await control.add_fault(route="POST /v1/web-calls", kind="status", status=500, count=1)
    await problem(await mint(client), 502, "upstream_error")
    assert await control.request_count("POST /v1/web-calls") == 1
    assert emulator.state.calls == {}
    assert (await mint(client)).status == 201  # the slot was released


async def test_upstream_5xx_after_retries_on_hang_up(
    make_host: MakeHost, emulator: EmulatorServer, control: EmulatorControl
) -> None:
    client, _ = await make_host()
    session = await (await mint(client)).json()
    await control.add_fault(route="POST /v1/calls/{id}/end", kind="status", status=502, count=0)
    response = await client.post(
        session["end_url"], headers={**ORIGIN_HEADERS, "Authorization": f"Bearer {session['token']}"}
    )
    await problem(response, 502, "upstream_error")
    assert await control.request_count("POST /v1/calls/{id}/end") == 3


async def test_a_full_dialnexa_is_busy_not_broken(
    make_host: MakeHost, emulator: EmulatorServer, control: EmulatorControl
) -> None:
    """DialNexa's media side answering 503 (the emulator does at its limit of live calls) is a busy service: 503
    upstream_busy with its Retry-After, and the call created for the start is hung up."""
    client, handle = await make_host()
    await control.add_fault(route="POST /v1/web-calls/{call_id}/whip", kind="status", status=503, count=1)
    response = await mint(client)
    await problem(response, 503, "upstream_busy")
    assert int(response.headers["Retry-After"]) >= 1
    (call,) = emulator.state.calls.values()
    assert call.ended
    assert await runtime(handle).store.active_slots() == 0


async def test_upstream_429_is_retried(make_host: MakeHost, emulator: EmulatorServer, control: EmulatorControl) -> None:
    client, _ = await make_host()
    await control.add_fault(route="POST /v1/web-calls", kind="status", status=429, retry_after=0.05, count=1)
    assert (await mint(client)).status == 201
    assert len(emulator.state.calls) == 1


async def test_upstream_timeout(make_host: MakeHost, emulator: EmulatorServer, control: EmulatorControl) -> None:
    client, _ = await make_host(upstream_timeout=0.3)
    await control.add_fault(route="POST /v1/web-calls", kind="timeout", delay=3, count=1)
    await problem(await mint(client), 504, "upstream_timeout")
    assert emulator.state.calls == {}


async def test_upstream_unreachable(make_host: MakeHost) -> None:
    client, _ = await make_host(base_url="http://127.0.0.1:9/v1")
    response = await mint(client)
    await problem(response, 503, "upstream_unavailable")
    assert "Retry-After" in response.headers


async def test_missing_placeholder_is_logged(
    make_host: MakeHost, emulator: EmulatorServer, log_records: pytest.LogCaptureFixture
) -> None:
    without_defaults(emulator, "agent_sales")
    client, _ = await make_host()
    body = await (await mint(client, {"agent": "sales", "variables": {"name": "Priya"}})).json()
    warnings = [r.getMessage() for r in log_records.records if r.levelno == logging.WARNING]
    assert any(body["call_id"] in w and "{{company}}" in w and "{{name}}" not in w for w in warnings), warnings


async def test_end_requires_the_calls_token(make_host: MakeHost, emulator: EmulatorServer) -> None:
    client, _ = await make_host()
    a = await (await mint(client)).json()
    b = await (await mint(client)).json()
    await problem(await client.post(a["end_url"], headers=ORIGIN_HEADERS), 401, "unauthorized")
    wrong = await client.post(a["end_url"], headers={**ORIGIN_HEADERS, "Authorization": f"Bearer {b['token']}"})
    await problem(wrong, 401, "unauthorized")
    ok = await client.post(a["end_url"], headers={**ORIGIN_HEADERS, "Authorization": f"Bearer {a['token']}"})
    assert ok.status == 200
    assert emulator.state.calls[a["call_id"]].ended


async def test_unknown_route_and_method_in_our_shape(make_host: MakeHost) -> None:
    client, _ = await make_host()
    await problem(await client.get("/webcall/nope"), 404, "not_found")
    response = await client.get("/webcall/sessions")
    await problem(response, 405, "method_not_allowed")
    assert "POST" in response.headers["Allow"]


async def test_healthz(make_host: MakeHost) -> None:
    client, _ = await make_host()
    response = await client.get("/webcall/healthz")
    assert response.status == 200
    body = await response.json()
    assert body["status"] == "ok" and body["store"] == "memory" and body["agents"] == ["sales", "support"]


async def test_host_defaults_fill_what_nobody_gave(
    make_host: MakeHost, emulator: EmulatorServer, log_records: pytest.LogCaptureFixture
) -> None:
    """``Agent(defaults=...)``: sent when neither the visitor nor the host's hook gives a value; never over them."""
    without_defaults(emulator, "agent_sales")
    sales = Agent(
        id="agent_sales", visitor_variables=frozenset({"name", "company"}), defaults={"name": "there", "company": "you"}
    )

    async def variables(request: Any, alias: str, agent: Agent) -> dict[str, str]:
        return {"company": "Acme"}

    client, _ = await make_host(agents={"sales": sales}, variables=variables)
    body = await (await mint(client, {"agent": "sales"})).json()
    assert emulator.state.calls[body["call_id"]].metadata == {"name": "there", "company": "Acme"}
    body = await (await mint(client, {"agent": "sales", "variables": {"name": "Priya"}})).json()
    assert emulator.state.calls[body["call_id"]].metadata == {"name": "Priya", "company": "Acme"}
    warnings = [r.getMessage() for r in log_records.records if r.levelno == logging.WARNING]
    assert not any("placeholder" in w for w in warnings), warnings
