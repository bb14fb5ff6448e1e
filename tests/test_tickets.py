"""Host-signed call tickets: every rule, each refusal in our error shape and before any call to DialNexa."""

from __future__ import annotations

import base64
import json
import time
import warnings
from typing import Any

import jwt
import pytest
from aiohttp import web
from cryptography.hazmat.primitives.asymmetric import rsa

from webcall import Agent, ConfigError, WebCallConfig
from webcall.emulator.server import EmulatorServer
from webcall.emulator.testing import EmulatorControl
from webcall.tickets import MAX_TICKET_SECONDS, TicketVerifier, sign_ticket

from .conftest import ORIGIN_HEADERS, MakeHost, mint, problem, runtime

TICKET_SECRET = "ticket-secret-of-the-host-backend-0123456789"
OLD_TICKET_SECRET = "the-previous-ticket-secret-still-verifying-42"
MINT = "POST /v1/web-calls"
PHONE = "POST /v1/calls"


def claims(**changes: Any) -> dict[str, Any]:
    """A ticket's claims as a host backend signs them: Ada may call sales for five minutes."""
    now = int(time.time())
    values: dict[str, Any] = {
        "aud": "webcall",
        "sub": "user-42",
        "agent": "sales",
        "vars": {"name": "Ada"},
        "iat": now,
        "exp": now + 300,
        "jti": f"jti-{time.monotonic_ns()}",
    }
    values.update(changes)
    return {name: value for name, value in values.items() if value is not None}


def signed(secret: str = TICKET_SECRET, **changes: Any) -> str:
    return jwt.encode(claims(**changes), secret, algorithm="HS256")


async def ticketed_host(make_host: MakeHost, **options: Any) -> Any:
    settings: dict[str, Any] = {"ticket_secrets": (TICKET_SECRET,), "require_ticket": True}
    settings.update(options)
    client, _ = await make_host(**settings)
    return client


async def start(client: Any, ticket: str | None, **body: Any) -> Any:
    return await mint(client, {"agent": "sales", **({"ticket": ticket} if ticket is not None else {}), **body})


async def test_a_valid_ticket_starts_a_call_with_its_identity_and_variables(
    make_host: MakeHost, emulator: EmulatorServer
) -> None:
    client, handle = await make_host(ticket_secrets=(TICKET_SECRET,), require_ticket=True)
    response = await start(client, signed(), variables={"name": "Mallory", "company": "Initech"})
    assert response.status == 201, await response.text()
    call_id = (await response.json())["call_id"]
    assert emulator.state.calls[call_id].metadata == {"name": "Ada", "company": "Initech"}, "the ticket's name wins"
    context = await runtime(handle).store.get_context(call_id)
    assert context is not None and context["identity"] == "user-42"


async def test_without_a_ticket_a_start_is_refused_when_one_is_required(
    make_host: MakeHost, emulator: EmulatorServer, control: EmulatorControl
) -> None:
    client = await ticketed_host(make_host)
    body = await problem(await start(client, None), 401, "ticket_required")
    assert "ticket" in body["message"]
    await problem(await start(client, ""), 401, "ticket_required")
    callback = await client.post(
        "/webcall/callbacks",
        json={"agent": "sales", "phone_number": "+14155550123", "consent": True},
        headers=ORIGIN_HEADERS,
    )
    await problem(callback, 401, "ticket_required")
    assert await control.request_count(MINT) == 0 and await control.request_count(PHONE) == 0


async def test_tickets_are_optional_unless_required(make_host: MakeHost, emulator: EmulatorServer) -> None:
    client = await ticketed_host(make_host, require_ticket=False)
    assert (await start(client, None)).status == 201
    assert (await start(client, signed())).status == 201


@pytest.mark.parametrize(
    ("ticket", "status", "code", "fragment"),
    [
        (lambda: signed(exp=int(time.time()) - 120), 401, "ticket_expired", "expired"),
        (lambda: signed(aud="another-service"), 401, "ticket_invalid", "audience"),
        (lambda: signed(aud=None), 401, "ticket_invalid", "'aud'"),
        (lambda: signed(secret="not-the-host-secret-but-long-enough-0123"), 401, "ticket_invalid", "signature"),
        (lambda: signed(exp=int(time.time()) + MAX_TICKET_SECONDS + 120), 401, "ticket_invalid", "600 seconds"),
        (lambda: signed(exp="soon"), 401, "ticket_invalid", "exp"),
        (lambda: signed(nbf=int(time.time()) + 200), 401, "ticket_invalid", "not valid yet"),
        (lambda: signed(jti=None), 401, "ticket_invalid", "'jti'"),
        (lambda: signed(sub=None), 401, "ticket_invalid", "'sub'"),
        (lambda: signed(sub=""), 401, "ticket_invalid", "'sub'"),
        (lambda: signed(agent=None), 401, "ticket_invalid", "'agent'"),
        (lambda: signed(agent=[]), 401, "ticket_invalid", "'agent'"),
        (lambda: signed(agent=["sales", 7]), 401, "ticket_invalid", "'agent'"),
        (lambda: signed(vars={"name": 42}), 401, "ticket_invalid", "must be a string"),
        (lambda: signed(vars={"name": "A" * 1001}), 401, "ticket_invalid", "longer than 1000"),
        (lambda: signed(vars={f"v{i}": "x" for i in range(33)}), 401, "ticket_invalid", "more than 32"),
        (lambda: signed(vars={"name": "{{secret}}"}), 401, "ticket_invalid", "not allowed"),
        (lambda: signed(vars={"bad name": "x"}), 401, "ticket_invalid", "not a variable name"),
        (lambda: signed(vars=["Ada"]), 401, "ticket_invalid", "'vars'"),
        (lambda: signed(agent="support"), 403, "ticket_agent", "agent"),
        (lambda: "not.a.jwt", 401, "ticket_invalid", "JWT"),
        (lambda: 12345, 401, "ticket_invalid", "string"),
        (lambda: "x" * 5000, 401, "ticket_invalid", "longer than"),
    ],
    ids=lambda value: value if isinstance(value, str) else None,
)
async def test_each_ticket_rule_refuses_before_any_upstream_call(
    make_host: MakeHost,
    emulator: EmulatorServer,
    control: EmulatorControl,
    ticket: Any,
    status: int,
    code: str,
    fragment: str,
) -> None:
    client = await ticketed_host(make_host)
    body = await problem(await start(client, ticket()), status, code)
    assert fragment in body["message"], body
    assert await control.request_count(MINT) == 0


def unsigned(payload: dict[str, Any], header: dict[str, Any]) -> str:
    def part(value: dict[str, Any]) -> str:
        return base64.urlsafe_b64encode(json.dumps(value).encode()).rstrip(b"=").decode()

    return f"{part(header)}.{part(payload)}."


async def test_alg_none_and_public_key_algorithms_are_refused(
    make_host: MakeHost, emulator: EmulatorServer, control: EmulatorControl
) -> None:
    client = await ticketed_host(make_host)
    for header in ({"alg": "none", "typ": "JWT"}, {"alg": "None"}, {"alg": "HS512"}):
        body = await problem(await start(client, unsigned(claims(), header)), 401, "ticket_invalid")
        assert "HS256" in body["message"]
    private_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    rs256 = jwt.encode(claims(), private_key, algorithm="RS256")
    body = await problem(await start(client, rs256), 401, "ticket_invalid")
    assert "HS256" in body["message"]
    with warnings.catch_warnings():  # PyJWT warns that the secret is short for HS512: that is the point
        warnings.simplefilter("ignore")
        hs512 = jwt.encode(claims(), TICKET_SECRET, algorithm="HS512")  # right secret, algorithm the token chose
    await problem(await start(client, hs512), 401, "ticket_invalid")
    assert await control.request_count(MINT) == 0


async def test_a_ticket_admits_one_start(
    make_host: MakeHost, emulator: EmulatorServer, control: EmulatorControl
) -> None:
    client = await ticketed_host(make_host)
    ticket = signed()
    assert (await start(client, ticket)).status == 201
    body = await problem(await start(client, ticket), 409, "ticket_used")
    assert "reload" in body["message"]
    assert await control.request_count(MINT) == 1


async def test_a_refused_start_does_not_spend_the_ticket(make_host: MakeHost, emulator: EmulatorServer) -> None:
    client = await ticketed_host(make_host)
    ticket = signed(agent=["sales"])
    await problem(await mint(client, {"agent": "support", "ticket": ticket}), 403, "ticket_agent")
    await problem(await start(client, ticket, variables={"company": 7}), 400, "invalid_variables")
    assert (await start(client, ticket)).status == 201, "the ticket was still unspent"


async def test_a_start_refused_because_every_line_is_busy_does_not_spend_the_ticket(
    make_host: MakeHost, emulator: EmulatorServer
) -> None:
    client, handle = await make_host(ticket_secrets=(TICKET_SECRET,), require_ticket=True, max_concurrent_calls=1)
    first = await start(client, signed())
    assert first.status == 201, await first.text()
    ticket = signed()
    await problem(await start(client, ticket), 503, "capacity_reached")
    call = await first.json()
    ended = await client.post(call["end_url"], headers={**ORIGIN_HEADERS, "Authorization": f"Bearer {call['token']}"})
    assert ended.status == 200, await ended.text()
    assert (await start(client, ticket)).status == 201, "the ticket was still unspent"
    assert await runtime(handle).store.active_slots() == 1


async def test_a_start_dialnexa_refuses_gives_back_its_slot_and_its_ticket(
    make_host: MakeHost, emulator: EmulatorServer, control: EmulatorControl
) -> None:
    """DialNexa refused to create the call: no call exists, so the only line is free again and "Try again" may use
    the same ticket."""
    client, handle = await make_host(ticket_secrets=(TICKET_SECRET,), require_ticket=True, max_concurrent_calls=1)
    await control.add_fault(route=MINT, kind="status", status=400, count=1)
    ticket = signed()
    refused = await start(client, ticket)
    assert refused.status >= 400 and emulator.state.calls == {}, await refused.text()
    assert await runtime(handle).store.active_slots() == 0
    retried = await start(client, ticket)
    assert retried.status == 201, await retried.text()
    assert await runtime(handle).store.active_slots() == 1


async def test_a_ticket_may_name_several_agents(make_host: MakeHost, emulator: EmulatorServer) -> None:
    client = await ticketed_host(make_host)
    assert (await mint(client, {"agent": "support", "ticket": signed(agent=["sales", "support"])})).status == 201


async def test_secrets_rotate_the_first_signs_every_one_verifies(make_host: MakeHost, emulator: EmulatorServer) -> None:
    client = await ticketed_host(make_host, ticket_secrets=(TICKET_SECRET, OLD_TICKET_SECRET))
    assert (await start(client, signed(OLD_TICKET_SECRET))).status == 201
    assert (await start(client, signed(TICKET_SECRET))).status == 201
    retired = await ticketed_host(make_host, ticket_secrets=(TICKET_SECRET,))
    await problem(await start(retired, signed(OLD_TICKET_SECRET)), 401, "ticket_invalid")


async def test_a_little_clock_difference_is_tolerated(make_host: MakeHost, emulator: EmulatorServer) -> None:
    client = await ticketed_host(make_host)
    assert (await start(client, signed(exp=int(time.time()) - 10))).status == 201
    assert (await start(client, signed(nbf=int(time.time()) + 10))).status == 201


async def test_a_ticket_to_a_service_without_ticket_secrets_is_refused(
    make_host: MakeHost, emulator: EmulatorServer, control: EmulatorControl
) -> None:
    client, _ = await make_host()
    body = await problem(await start(client, signed()), 400, "ticket_invalid")
    assert "WEBCALL_TICKET_SECRETS" in body["message"]
    assert await control.request_count(MINT) == 0


async def test_the_ticket_subject_is_rate_limited_per_identity(make_host: MakeHost, emulator: EmulatorServer) -> None:
    client = await ticketed_host(make_host, identity_rate_limit=2, rate_limit=100)
    for _ in range(2):
        assert (await start(client, signed(sub="busy-user"))).status == 201
    await problem(await start(client, signed(sub="busy-user")), 429, "rate_limited")
    assert (await start(client, signed(sub="someone-else"))).status == 201


async def test_a_ticket_never_widens_what_the_hooks_allow(
    make_host: MakeHost, emulator: EmulatorServer, control: EmulatorControl
) -> None:
    def authorize(request: web.Request) -> bool:
        return request.headers.get("X-Signed-In") == "yes"

    def variables(request: web.Request, alias: str, agent: Agent) -> dict[str, str]:
        return {"company": "Acme Corp"}

    client = await ticketed_host(make_host, authorize=authorize, variables=variables)
    await problem(await start(client, signed()), 403, "forbidden")
    response = await mint(
        client,
        {"agent": "sales", "ticket": signed(vars={"name": "Ada", "company": "Forged Ltd"})},
        headers={**ORIGIN_HEADERS, "X-Signed-In": "yes"},
    )
    assert response.status == 201, await response.text()
    metadata = emulator.state.calls[(await response.json())["call_id"]].metadata
    assert metadata == {"name": "Ada", "company": "Acme Corp"}, "the host's hook wins over the ticket"
    assert await control.request_count(MINT) == 1


async def test_a_call_back_takes_a_ticket_too(
    make_host: MakeHost, emulator: EmulatorServer, control: EmulatorControl
) -> None:
    client = await ticketed_host(make_host, callback_countries=("US",))
    request = {"agent": "sales", "phone_number": "+14155550123", "consent": True, "ticket": signed()}
    response = await client.post("/webcall/callbacks", json=request, headers=ORIGIN_HEADERS)
    assert response.status == 202, await response.text()
    again = await client.post("/webcall/callbacks", json=request, headers=ORIGIN_HEADERS)
    await problem(again, 409, "ticket_used")
    assert await control.request_count(PHONE) == 1


def test_sign_ticket_makes_what_the_readme_snippets_make() -> None:
    """The Python helper and the README's PyJWT snippet sign the same claims, and the verifier reads both."""
    verifier = TicketVerifier((TICKET_SECRET,))
    from_helper = verifier.verify(sign_ticket(TICKET_SECRET, subject="user-42", agent="sales", variables={"a": "b"}))
    assert (
        from_helper.subject == "user-42"
        and from_helper.agents == {"sales"}
        and dict(from_helper.variables) == {"a": "b"}
    )
    assert 290 <= from_helper.expires_at - time.time() <= 300


def test_ticket_configuration_is_checked() -> None:
    with pytest.raises(ConfigError, match="WEBCALL_TICKET_SECRETS"):
        WebCallConfig(require_ticket=True)
    with pytest.raises(ConfigError, match="at least 32 bytes"):
        WebCallConfig(ticket_secrets=("short",))
    config = WebCallConfig.from_env(
        {
            "WEBCALL_TICKET_SECRETS": f"{TICKET_SECRET}, {OLD_TICKET_SECRET}",
            "WEBCALL_REQUIRE_TICKET": "true",
            "WEBCALL_TICKET_AUDIENCE": "shop-calls",
        }
    )
    assert config.ticket_secrets == (TICKET_SECRET, OLD_TICKET_SECRET)
    assert config.require_ticket and config.ticket_audience == "shop-calls"
    assert TICKET_SECRET not in repr(config)
