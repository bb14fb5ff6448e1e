"""Attacks from the open internet against real processes: ``python -m webcall serve`` with default settings (on its
embedded emulator) or against the emulator as its own process, whose control routes count what DialNexa was asked.

Visitors come from different loopback addresses (all of 127.0.0.0/8 is the local machine on Linux), so per-address
limits see them as the different visitors they pretend to be.
"""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import pytest

from webcall.tickets import sign_ticket

from .conftest import EMULATOR_API_KEY
from .net import RecordingServer
from .offers import OFFER
from .service import Service, clean_environment, running_service

pytestmark = pytest.mark.timeout(180)

SERVE = [sys.executable, "-m", "webcall", "serve", "--port", "{port}"]
TICKET_SECRET = "open-internet-ticket-secret-0123456789-abc"


def client_from(address: str) -> httpx.Client:
    """An HTTP client whose connections leave from ``address`` (a loopback address of its own)."""
    return httpx.Client(transport=httpx.HTTPTransport(local_address=address), timeout=30)


def start_call(http: httpx.Client, service: Service, **body: Any) -> httpx.Response:
    return http.post(
        f"{service.url}/webcall/sessions",
        json={"agent": "sales", "offer": OFFER, **body},
        headers={"Origin": service.origin},
    )


# -- a forged Host header ------------------------------------------------------------------------------------------
def events_until_ended(service: Service, session: dict[str, Any], timeout: float = 30) -> list[str]:
    """The event types the call's browser stream carries, until ``call.ended`` (or the timeout)."""
    seen: list[str] = []
    url = f"{service.url}{session['events_url']}"
    deadline = time.monotonic() + timeout
    with httpx.stream("GET", url, params={"token": session["token"]}, timeout=httpx.Timeout(timeout)) as stream:
        for line in stream.iter_lines():
            if line.startswith("data:"):
                seen.append(json.loads(line[5:])["type"])
                if seen[-1] == "call.ended":
                    break
            if time.monotonic() > deadline:
                break
    return seen


def test_a_forged_host_neither_moves_the_webhook_nor_lands_in_the_snippet(tmp_path: Path) -> None:
    """The first start after boot registers the embedded emulator's webhook: a forged ``Host`` (and an ``Origin`` to
    match it) must not send it, and every later visitor's transcript and end of call, to the attacker."""
    with RecordingServer() as attacker, running_service(SERVE, tmp_path, env=clean_environment()) as service:
        forged = f"127.0.0.1:{attacker.port}/any/path?x="
        with httpx.Client(timeout=30) as http:
            first = http.post(
                f"{service.url}/webcall/sessions",
                json={"agent": "sales", "offer": OFFER},
                headers={"Host": forged, "Origin": f"http://{forged}"},
            )
            assert first.status_code == 201, first.text
            snippet = http.get(f"{service.url}/webcall/snippet", headers={"Host": forged})
            assert snippet.status_code == 200 and "dialnexa-webcall" in snippet.text
            assert str(attacker.port) not in snippet.text and "any/path" not in snippet.text
            assert f"{service.url}/webcall/widget.js" in snippet.text  # the bound address instead

            for session in (first.json(), start_call(http, service).json()):  # the attacker's own, and a visitor's
                ended = http.post(
                    f"{service.url}{session['end_url']}", headers={"Authorization": f"Bearer {session['token']}"}
                )
                assert ended.status_code == 200, ended.text
                assert events_until_ended(service, session)[-1] == "call.ended"
        assert attacker.paths == []


# -- garbage and the site-wide limit ----------------------------------------------------------------------------------
def test_garbage_from_seventy_addresses_does_not_lock_every_visitor_out(tmp_path: Path) -> None:
    """Requests refused before anything billable (bad JSON, a bad offer, a forged ticket, an unknown agent, a foreign
    origin) do not count toward the site-wide limit, however many addresses send them."""
    env = clean_environment(WEBCALL_GLOBAL_RATE_LIMIT="20", WEBCALL_TICKET_SECRETS=TICKET_SECRET)
    forged_ticket = sign_ticket("x" * 40, subject="mallory", agent="sales")
    garbage: list[dict[str, Any]] = [
        {"content": b"{not json", "headers": {"Content-Type": "application/json"}},
        {"json": {"agent": "sales", "offer": "hello"}},
        {"json": {"agent": "sales", "offer": OFFER, "ticket": forged_ticket}},
        {"json": {"agent": "nobody", "offer": OFFER}},
        {"json": {"agent": "sales", "offer": OFFER}, "headers": {"Origin": "https://evil.example"}},
    ]
    with running_service(SERVE, tmp_path, env=env) as service:

        def flood(host_number: int) -> list[int]:
            statuses = []
            with client_from(f"127.0.0.{host_number}") as http:
                for request in garbage:
                    headers = {"Origin": service.origin, **request.get("headers", {})}
                    body = {key: value for key, value in request.items() if key != "headers"}
                    statuses.append(http.post(f"{service.url}/webcall/sessions", headers=headers, **body).status_code)
            return statuses

        with ThreadPoolExecutor(max_workers=8) as pool:
            refusals = [status for statuses in pool.map(flood, range(10, 80)) for status in statuses]
        assert len(refusals) == 70 * len(garbage)
        assert 429 not in refusals and all(400 <= status < 500 for status in refusals), sorted(set(refusals))
        with client_from("127.0.0.200") as visitor:
            started = start_call(visitor, service)
        assert started.status_code == 201, started.text


def test_one_address_is_still_limited_and_the_site_wide_limit_still_holds(tmp_path: Path) -> None:
    """What the limits are for still works: well-formed starts count, per address and for the whole site."""
    env = clean_environment(WEBCALL_GLOBAL_RATE_LIMIT="6", WEBCALL_RATE_LIMIT="3/60")
    with running_service(SERVE, tmp_path, env=env) as service:
        with client_from("127.0.0.10") as one:
            statuses = [start_call(one, service).status_code for _ in range(4)]
        assert statuses == [201, 201, 201, 429]
        with client_from("127.0.0.11") as two, client_from("127.0.0.12") as three:
            statuses = [start_call(two, service).status_code for _ in range(3)]
            refused = start_call(three, service)
        assert statuses == [201, 201, 201]
        assert refused.status_code == 429 and "everyone" in refused.json()["message"]


# -- a ticket is spent only by a call that exists -----------------------------------------------------------------
@pytest.fixture
def ticketed_service(tmp_path: Path, emulator_process: Service) -> Iterator[Service]:
    env = clean_environment(
        DIALNEXA_API_KEY=EMULATOR_API_KEY,
        DIALNEXA_BASE_URL=f"{emulator_process.url}/v1",
        WEBCALL_AGENTS="sales=agent_sales",
        WEBCALL_TICKET_SECRETS=TICKET_SECRET,
        WEBCALL_REQUIRE_TICKET="true",
        WEBCALL_RATE_LIMIT="100/60",
    )
    with running_service(SERVE, tmp_path, env=env) as service:
        yield service


def web_calls_created(emulator: Service) -> int:
    requests = httpx.get(f"{emulator.url}/_control/requests").json()
    return sum(1 for r in requests if (r["method"], r["route"], r.get("status")) == ("POST", "/v1/web-calls", 201))


def test_a_start_that_fails_upstream_keeps_the_ticket_for_try_again(
    ticketed_service: Service, emulator_process: Service
) -> None:
    ticket = sign_ticket(TICKET_SECRET, subject="visitor-1", agent="sales")
    fault = {"route": "POST /v1/web-calls", "kind": "status", "status": 500, "count": 10}
    assert httpx.post(f"{emulator_process.url}/_control/faults", json=fault).status_code == 201
    with httpx.Client(timeout=30) as http:
        failed = start_call(http, ticketed_service, ticket=ticket)
        assert failed.status_code in (502, 503), failed.text
        assert httpx.delete(f"{emulator_process.url}/_control/faults").status_code in (200, 204)
        again = start_call(http, ticketed_service, ticket=ticket)
        assert again.status_code == 201, again.text
        spent = start_call(http, ticketed_service, ticket=ticket)
        assert spent.status_code == 409 and spent.json()["code"] == "ticket_used"
    assert web_calls_created(emulator_process) == 1


def test_concurrent_starts_with_one_ticket_make_exactly_one_call(
    ticketed_service: Service, emulator_process: Service
) -> None:
    ticket = sign_ticket(TICKET_SECRET, subject="visitor-2", agent="sales")

    def attempt(_: int) -> int:
        with httpx.Client(timeout=30) as http:
            return start_call(http, ticketed_service, ticket=ticket).status_code

    with ThreadPoolExecutor(max_workers=8) as pool:
        statuses = sorted(pool.map(attempt, range(8)))
    assert statuses == [201] + [409] * 7
    assert web_calls_created(emulator_process) == 1
