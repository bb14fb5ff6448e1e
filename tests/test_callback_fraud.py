"""Toll fraud through "call me back": the numbers a stranger may not have the site ring, the budgets that bound what
it does ring, and a customer's own number kept out of strangers' reach.

Every refusal is proven to cost no phone call: the emulator counts the ``POST /v1/calls`` it received.
"""

from __future__ import annotations

import asyncio
import re
import sys
from pathlib import Path
from typing import Any

import httpx
import pytest
from aiohttp import ClientResponse, web

import webcall
from demo.app import create_demo_app
from webcall import ConfigError, WebCallConfig
from webcall.emulator.server import EmulatorServer
from webcall.emulator.testing import EmulatorControl

from .conftest import ORIGIN_HEADERS, Client, MakeHost, problem
from .hosting import ORIGIN
from .service import clean_environment, running_service

PHONE_CALL = "POST /v1/calls"
HOME = ("US", "CA", "GB")
"""The countries the sites under test ring, as the demo does."""

SATELLITE_AND_NETWORKS = [
    "+881 632 000 000",  # Iridium (GMSS), answers as a mobile
    "+882 16 1234 567",  # an international network, answers as VoIP
    "+870 773 111 632",  # Inmarsat, answers as a mobile
    "+883 510 012 345",  # an international network, answers as VoIP
    "+979 123 456 789",  # international premium rate
    "+882 34 567 890",  # a range the numbering plan does not know (yet)
]
KIND_OF_NUMBER = "We can't call this kind of number"
THAT_COUNTRY = "We can't call numbers in that country."


async def call_back(
    client: Client, number: str, *, address: str | None = None, user: str | None = None, **body: Any
) -> ClientResponse:
    """``POST /webcall/callbacks`` as the widget sends it, from ``address`` (``X-Forwarded-For``, for a host with
    one trusted proxy) and as ``user`` (read by :func:`authorize_by_header`)."""
    headers = dict(ORIGIN_HEADERS)
    if address is not None:
        headers["X-Forwarded-For"] = address
    if user is not None:
        headers["X-User"] = user
    payload = {"agent": "sales", "phone_number": number, "consent": True, **body}
    return await client.post("/webcall/callbacks", json=payload, headers=headers)


def authorize_by_header(request: web.Request) -> str | None:
    """The site's ``authorize`` hook: the visitor is whoever ``X-User`` says (the site's own login)."""
    return request.headers.get("X-User")


async def refused(response: ClientResponse, message: str) -> None:
    body = await problem(response, 403, "callback_not_allowed")
    assert body["message"].startswith(message), body


async def rung_numbers(control: EmulatorControl) -> list[str]:
    """The numbers DialNexa was asked to ring, in order."""
    return [r["json"]["phone_number"] for r in await control.requests(PHONE_CALL)]


def retry_after(response: ClientResponse) -> int:
    value = int(response.headers["Retry-After"])
    assert 1 <= value <= 3601, value
    return value


# -- which numbers are rung -----------------------------------------------------------------------------------------
async def test_call_backs_are_off_until_the_site_names_countries(
    make_host: MakeHost, emulator: EmulatorServer, control: EmulatorControl
) -> None:
    assert WebCallConfig().callback_countries == ()
    client, _ = await make_host()
    for number in ("+1 415 555 0123", "+44 20 7946 0018", "+881 632 000 000"):
        response = await call_back(client, number)
        await refused(response, "We don't offer call-backs on this site.")
    listed = await client.get("/webcall/callbacks", headers=ORIGIN_HEADERS)
    assert listed.status == 200 and await listed.json() == {"countries": []}
    assert await control.request_count(PHONE_CALL) == 0


async def test_satellite_and_international_network_numbers_are_never_rung(
    make_host: MakeHost, emulator: EmulatorServer, control: EmulatorControl
) -> None:
    client, _ = await make_host(callback_countries=HOME, rate_limit=1000)
    for number in SATELLITE_AND_NETWORKS:
        await refused(await call_back(client, number), KIND_OF_NUMBER)
    assert await control.request_count(PHONE_CALL) == 0


async def test_premium_shared_cost_and_personal_numbers_are_never_rung_even_in_listed_countries(
    make_host: MakeHost, emulator: EmulatorServer, control: EmulatorControl
) -> None:
    client, _ = await make_host(callback_countries=("FR", "GB", "US"), rate_limit=1000)
    for number in (
        "+33 8 10 12 34 56",  # French shared cost
        "+33 8 92 12 34 56",  # French premium rate
        "+44 871 234 5678",  # British premium rate
        "+44 70 2412 3456",  # British personal number (follow-me, charged up to premium rates)
    ):
        await refused(await call_back(client, number), KIND_OF_NUMBER)
    assert await control.request_count(PHONE_CALL) == 0


async def test_north_american_pay_per_call_numbers_are_never_rung(
    make_host: MakeHost, emulator: EmulatorServer, control: EmulatorControl
) -> None:
    client, _ = await make_host(callback_countries=("US",), rate_limit=1000)
    for number in (
        "+1 900 555 0123",  # area code 900
        "+1 976 234 5678",  # area code 976 (the numbering plan calls it invalid; refused as pay-per-call first)
        "+1 212 976 2345",  # exchange 976 (the numbering plan calls it an ordinary line)
    ):
        await refused(await call_back(client, number), KIND_OF_NUMBER)
    assert await control.request_count(PHONE_CALL) == 0


async def test_numbers_in_countries_the_site_did_not_name_are_never_rung(
    make_host: MakeHost, emulator: EmulatorServer, control: EmulatorControl
) -> None:
    client, _ = await make_host(callback_countries=("US",), rate_limit=1000)
    for number in (
        "+1 876 555 1234",  # Jamaica shares the +1 of the United States
        "+1 613 555 0123",  # so does Canada
        "+53 5234 5678",  # Cuba
        "+33 1 23 45 67 89",  # France
    ):
        await refused(await call_back(client, number), THAT_COUNTRY)
    assert await control.request_count(PHONE_CALL) == 0


async def test_a_number_that_is_not_a_phone_number_is_a_bad_request(
    make_host: MakeHost, emulator: EmulatorServer, control: EmulatorControl
) -> None:
    client, _ = await make_host(callback_countries=HOME, rate_limit=1000)
    for number in ("+1 415 555 01", "+44 7700 900123", "4155550123", "+1 415 555 0123 ext. 4"):
        await problem(await call_back(client, number), 400, "invalid_phone_number")
    assert await control.request_count(PHONE_CALL) == 0


async def test_a_number_in_a_listed_country_is_rung_in_e164(
    make_host: MakeHost, emulator: EmulatorServer, control: EmulatorControl
) -> None:
    client, _ = await make_host(callback_countries=HOME)
    for number in ("+1 (415) 555-0123", "+44 20.7946.0018", "+1 613 555 0123"):
        response = await call_back(client, number)
        assert response.status == 202, await response.text()
    assert await rung_numbers(control) == ["+14155550123", "+442079460018", "+16135550123"]
    listed = await client.get("/webcall/callbacks", headers=ORIGIN_HEADERS)
    assert await listed.json() == {"countries": ["CA", "GB", "US"]}
    assert listed.headers["Access-Control-Allow-Origin"] == ORIGIN, "a widget on the allowed site reads it"
    elsewhere = await client.get("/webcall/callbacks", headers={"Origin": "https://evil.example"})
    assert "Access-Control-Allow-Origin" not in elsewhere.headers


# -- how often ----------------------------------------------------------------------------------------------------
async def test_each_country_has_an_hourly_budget(
    make_host: MakeHost, emulator: EmulatorServer, control: EmulatorControl
) -> None:
    client, _ = await make_host(
        callback_countries=("US", "CA"), callback_country_hourly_limit=2, trusted_proxies=1, rate_limit=1000
    )
    for index, number in enumerate(("+1 415 555 0123", "+1 202 555 0125")):
        assert (await call_back(client, number, address=f"198.51.100.{index + 1}")).status == 202
    over = await call_back(client, "+1 212 555 0199", address="198.51.100.9")
    body = await problem(over, 429, "rate_limited")
    assert "that country" in body["message"] and retry_after(over) > 60
    assert (await call_back(client, "+1 613 555 0123", address="198.51.100.9")).status == 202, "Canada has its own"
    assert await rung_numbers(control) == ["+14155550123", "+12025550125", "+16135550123"]


async def test_the_site_has_an_hourly_budget_across_countries(
    make_host: MakeHost, emulator: EmulatorServer, control: EmulatorControl
) -> None:
    client, _ = await make_host(callback_countries=HOME, callback_hourly_limit=3, trusted_proxies=1, rate_limit=1000)
    for index, number in enumerate(("+1 415 555 0123", "+1 613 555 0123", "+44 20 7946 0018")):
        assert (await call_back(client, number, address=f"198.51.100.{index + 1}")).status == 202
    over = await call_back(client, "+44 20 7946 0019", address="198.51.100.9")
    body = await problem(over, 429, "rate_limited")
    assert "call-backs" in body["message"] and retry_after(over) > 60
    assert await control.request_count(PHONE_CALL) == 3


async def test_refused_numbers_use_up_no_budget(
    make_host: MakeHost, emulator: EmulatorServer, control: EmulatorControl
) -> None:
    """A flood of numbers the site never rings cannot spend the budgets that real visitors need."""
    client, _ = await make_host(callback_countries=("US",), callback_hourly_limit=1, callback_country_hourly_limit=1)
    for number in [*SATELLITE_AND_NETWORKS, "+1 900 555 0123", "+33 1 23 45 67 89"]:
        assert (await call_back(client, number)).status == 403
    assert (await call_back(client, "+1 415 555 0123")).status == 202
    assert await rung_numbers(control) == ["+14155550123"]


async def test_a_call_back_refused_after_counting_gives_its_budget_back(
    make_host: MakeHost, emulator: EmulatorServer, control: EmulatorControl
) -> None:
    client, _ = await make_host(callback_countries=("US",), callback_hourly_limit=1, callback_rate_limit=1)
    not_allowed = await call_back(client, "+1 415 555 0123", variables={"plan": "free"})
    await problem(not_allowed, 400, "invalid_variables")
    assert (await call_back(client, "+1 415 555 0123")).status == 202
    assert await control.request_count(PHONE_CALL) == 1


# -- a customer's own number ----------------------------------------------------------------------------------------
async def test_strangers_at_other_addresses_cannot_lock_a_customer_out_of_their_number(
    make_host: MakeHost, emulator: EmulatorServer, control: EmulatorControl
) -> None:
    client, _ = await make_host(callback_countries=("US",), trusted_proxies=1, rate_limit=1000)
    victim = "+1 415 555 0123"
    for _ in range(3):
        assert (await call_back(client, victim, address="203.0.113.7")).status == 202
    over = await call_back(client, victim, address="203.0.113.7")
    await problem(over, 429, "rate_limited")  # that stranger has had their share of this number
    retry_after(over)
    owner = await call_back(client, victim, address="198.51.100.20")
    assert owner.status == 202, await owner.text()
    assert await control.request_count(PHONE_CALL) == 4


async def test_strangers_signed_in_cannot_lock_a_customer_out_of_their_number(
    make_host: MakeHost, emulator: EmulatorServer, control: EmulatorControl
) -> None:
    """Behind one address (an office, a carrier's NAT), each signed-in visitor has their own share of a number."""
    client, _ = await make_host(callback_countries=("US",), authorize=authorize_by_header, rate_limit=1000)
    victim = "+1 415 555 0123"
    for _ in range(3):
        assert (await call_back(client, victim, user="mallory")).status == 202
    await problem(await call_back(client, victim, user="mallory"), 429, "rate_limited")
    owner = await call_back(client, victim, user="alice")
    assert owner.status == 202, await owner.text()
    assert await control.request_count(PHONE_CALL) == 4


# -- configuration --------------------------------------------------------------------------------------------------
def test_countries_and_budgets_come_from_the_environment() -> None:
    config = WebCallConfig.from_env(
        {
            "WEBCALL_CALLBACK_COUNTRIES": "us, gb,CA,us",
            "WEBCALL_CALLBACK_COUNTRY_LIMIT": "12",
            "WEBCALL_CALLBACK_HOURLY_LIMIT": "40",
        }
    )
    assert config.callback_countries == ("CA", "GB", "US")
    assert (config.callback_country_hourly_limit, config.callback_hourly_limit) == (12, 40)
    defaults = WebCallConfig.from_env({})
    assert defaults.callback_countries == ()
    assert (defaults.callback_country_hourly_limit, defaults.callback_hourly_limit) == (30, 100)


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        ({"WEBCALL_CALLBACK_COUNTRIES": "US,XX"}, "'XX' is not an ISO 3166 alpha-2 country code"),
        ({"WEBCALL_CALLBACK_COUNTRIES": "UK"}, "the United Kingdom is GB"),
        ({"WEBCALL_CALLBACK_COUNTRIES": "USA"}, "'USA' is not an ISO 3166 alpha-2 country code"),
        ({"WEBCALL_CALLBACK_COUNTRIES": "001"}, "'001' is not an ISO 3166 alpha-2 country code"),
        ({"WEBCALL_CALLBACK_COUNTRY_LIMIT": "0"}, "callback_country_hourly_limit must be greater than 0"),
        ({"WEBCALL_CALLBACK_HOURLY_LIMIT": "-1"}, "callback_hourly_limit must be greater than 0"),
    ],
)
def test_a_wrong_country_or_budget_is_refused_at_startup(settings: dict[str, str], message: str) -> None:
    with pytest.raises(ConfigError, match=re.escape(message)):
        WebCallConfig.from_env(settings)


def test_the_demo_rings_back_where_sales_shows_it(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("WEBCALL_CALLBACK_COUNTRIES", raising=False)
    assert webcall.handle_of(create_demo_app()).config.callback_countries == ("CA", "GB", "US")
    monkeypatch.setenv("WEBCALL_CALLBACK_COUNTRIES", "IE")
    assert webcall.handle_of(create_demo_app()).config.callback_countries == ("IE",)


# -- the service as it is run ---------------------------------------------------------------------------------------
@pytest.mark.timeout(180)
async def test_the_service_rings_no_satellite_or_premium_number_in_a_burst(tmp_path: Path) -> None:
    """``python -m webcall serve`` with its defaults and one country: a burst of call-backs to satellite and
    international premium numbers reaches DialNexa (its embedded emulator) not once; a number in the country does."""
    command = [sys.executable, "-m", "webcall", "serve", "--port", "{port}"]
    env = clean_environment(WEBCALL_CALLBACK_COUNTRIES="US")
    with running_service(command, tmp_path, env=env) as service:
        printed = service.wait_for_output("local DialNexa emulator at")
        found = re.search(r"local DialNexa emulator at (http://\S+)/v1", printed)
        assert found, printed
        emulator_origin = found.group(1)
        numbers = [f"+881 63{n:02d} 000 00" for n in range(10)]
        numbers += [f"+882 16 12{n:02d} 567" for n in range(10)]
        numbers += [f"+979 123 45{n:02d} 89" for n in range(10)]
        headers = {"Origin": service.origin}
        async with httpx.AsyncClient(base_url=service.url, headers=headers, timeout=30) as http:

            async def ask(number: str) -> httpx.Response:
                body = {"agent": "sales", "phone_number": number, "consent": True}
                return await http.post("/webcall/callbacks", json=body)

            burst = await asyncio.gather(*(ask(number) for number in numbers))
            assert [(r.status_code, r.json().get("code")) for r in burst] == [(403, "callback_not_allowed")] * 30
            allowed = await ask("+1 415 555 0123")
            assert allowed.status_code == 202, allowed.text
        async with EmulatorControl(emulator_origin) as control:
            rung = [r["json"]["phone_number"] for r in await control.requests("POST /v1/calls")]
        assert rung == ["+14155550123"]
        assert service.stop() == 0
