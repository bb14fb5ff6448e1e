"""Where "call me back" may ring, and how often: the toll-fraud defences of ``POST /callbacks``.

A call-back is a real phone call, paid for by the site, to a number a stranger typed. That is what toll fraud
(international revenue share fraud) abuses: the fraudster asks for calls to premium-rate, shared-cost or satellite
numbers whose operators share the charges with them. So a call-back passes two kinds of check:

- :func:`require_enabled` and :func:`destination` cost nothing and count nowhere, so they run before any store counter
  and before DialNexa is asked for anything. Call-backs are off until the site names the countries they may ring
  (``callback_countries``). A number is refused, whatever the countries, when it is satellite or another
  non-geographic range (+870, +881, +882, +883, +979…), a NANP premium code (900, 976), not a valid number, or of a
  kind no person answers for the site's money (premium-rate, shared-cost, personal, UAN, pager, voicemail, unknown);
  then it must belong to one of the named countries.
- :func:`budgets` counts the call-back in the store, so every worker shares the counts: a few call-backs an
  hour per number *for each visitor* (their address, or the identity the site gave them), so strangers cannot use up
  a customer's own number; then an hourly budget per destination country and one for the whole site, which bound
  what a fraudster with many addresses can cost. It gives the counts back when a later check refuses the request
  before anything rang.
"""

from __future__ import annotations

import contextlib
import re
from collections.abc import AsyncIterator, Collection, Mapping
from dataclasses import dataclass
from typing import Any

import phonenumbers
from phonenumbers import PhoneNumber, PhoneNumberType

from .admission import Admitted
from .config import WebCallConfig
from .errors import HTTPProblem
from .runtime import Runtime

NOT_ALLOWED = "callback_not_allowed"
"""The code of every refusal of a number the site will not ring (and of call-backs while they are off)."""

SEPARATORS = re.compile(r"[\s().-]")
"""What people type between the digits of a number: spaces, dots, dashes and brackets."""
E164 = re.compile(r"\+[1-9][0-9]{6,14}")
"""A number in international form once the separators are gone: ASCII digits only (other scripts' digits are
refused rather than read)."""

REFUSED_TYPES = frozenset(
    {
        PhoneNumberType.PREMIUM_RATE,
        PhoneNumberType.SHARED_COST,
        PhoneNumberType.PERSONAL_NUMBER,  # follow-me numbers (UK 070) that cost the caller up to premium rates
        PhoneNumberType.UAN,
        PhoneNumberType.PAGER,
        PhoneNumberType.VOICEMAIL,
        PhoneNumberType.UNKNOWN,
    }
)
"""Kinds of number refused in every country: each either earns its operator a share of what the call costs, or is
not a person's phone."""

NANP_PAY_PER_CALL_AREA_CODES = frozenset({"900", "976"})
"""North American pay-per-call area codes (1-900, 1-976): refused whatever the numbering metadata says of them."""
NANP_PAY_PER_CALL_EXCHANGES = frozenset({"976"})
"""The North American exchange kept for pay-per-call services in any area code (e.g. 212-976-xxxx)."""

BUDGET_WINDOW = 3600.0
"""The per-country and site-wide call-back budgets are counted per hour."""

SITE_BUDGET_KEY = "rl:callbacks"
"""The site-wide call-back budget's counter (each country's is ``rl:callbacks:{country}``)."""


@dataclass(frozen=True)
class Destination:
    """A number a call-back may ring: E.164 for DialNexa, and the ISO 3166 country it rings in."""

    e164: str
    country: str


def require_enabled(config: WebCallConfig) -> None:
    """Refuse every call-back while the site names no country they may ring."""
    if not config.callback_countries:
        raise HTTPProblem(403, NOT_ALLOWED, "We don't offer call-backs on this site.")


def destination(body: Mapping[str, Any], countries: Collection[str]) -> Destination:
    """The visitor's number (spaces, dots, dashes and brackets allowed), if the site may ring it: ``400
    invalid_phone_number`` when it is not a phone number, ``403 callback_not_allowed`` when it is one the site does
    not ring. The checks read from the digits come first, so they hold for ranges the numbering metadata does not
    know (yet)."""
    number = _parse(body.get("phone_number"))
    if _non_geographic(number) or _nanp_pay_per_call(number):
        raise _kind_refused()
    if not phonenumbers.is_valid_number(number):
        raise _invalid()
    if phonenumbers.number_type(number) in REFUSED_TYPES:
        raise _kind_refused()
    country = phonenumbers.region_code_for_number(number)
    if country is None or country not in countries:
        raise HTTPProblem(403, NOT_ALLOWED, "We can't call numbers in that country.")
    return Destination(e164=phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164), country=country)


def require_consent(body: Mapping[str, Any]) -> None:
    """The visitor agreed to be rung at the number they gave."""
    if body.get("consent") is not True:
        raise HTTPProblem(400, "consent_required", "Please agree to be called before we ring you.")


def _parse(raw: object) -> PhoneNumber:
    """The number as typed, in international form; 400 when it cannot be one."""
    typed = SEPARATORS.sub("", raw) if isinstance(raw, str) else ""
    if not E164.fullmatch(typed):
        raise _invalid()
    try:
        return phonenumbers.parse(typed, None)
    except phonenumbers.NumberParseException:
        raise _invalid() from None


def _non_geographic(number: PhoneNumber) -> bool:
    """Satellite (+870, +881), international networks (+882, +883), international premium-rate (+979) and the other
    country codes of no country: their numbers may answer as mobile or VoIP, so their type does not tell."""
    return number.country_code in phonenumbers.COUNTRY_CODES_FOR_NON_GEO_REGIONS


def _nanp_pay_per_call(number: PhoneNumber) -> bool:
    """A North American number with a pay-per-call area code or exchange."""
    national = str(number.national_number)
    area_code, exchange = national[:3], national[3:6]
    return number.country_code == 1 and (
        area_code in NANP_PAY_PER_CALL_AREA_CODES or exchange in NANP_PAY_PER_CALL_EXCHANGES
    )


def _invalid() -> HTTPProblem:
    return HTTPProblem(400, "invalid_phone_number", "Enter a valid number in international form, e.g. +14155550123.")


def _kind_refused() -> HTTPProblem:
    return HTTPProblem(403, NOT_ALLOWED, "We can't call this kind of number; please give a landline or mobile number.")


def requester(admitted: Admitted) -> str:
    """Who asks for a call-back, for the per-number count: the identity the site gave them, else their address (as
    the visit limits count it)."""
    return f"id:{admitted.identity}" if admitted.identity else f"ip:{admitted.address}"


@contextlib.asynccontextmanager
async def budgets(runtime: Runtime, to: Destination, asked_by: str) -> AsyncIterator[None]:
    """Count one call-back to ``to`` asked for by ``asked_by`` (see :func:`requester`) for the body, which settles the
    call; if the body refuses the request before anything rings, the counts are given back."""
    spent = await _spend_budgets(runtime, to, asked_by)
    try:
        yield
    except BaseException:
        for key in spent:
            await runtime.store.uncount(key)
        raise


async def _spend_budgets(runtime: Runtime, to: Destination, asked_by: str) -> tuple[str, ...]:
    """Count one call-back against that visitor's count for the number, then, in one step, against its country's
    hourly budget and the site's; returns the keys counted. ``429 rate_limited`` with ``Retry-After`` when one is
    spent; a refused call-back counts nowhere."""
    config, store = runtime.config, runtime.store
    own_key = f"rl:phone:{to.e164}:{asked_by}"
    wait = await store.hit(own_key, config.callback_rate_limit, config.callback_rate_window)
    if wait is not None:
        raise _budget_spent("You've asked us to call this number several times already", wait)
    shared = [
        (f"rl:callbacks:{to.country}", config.callback_country_hourly_limit),
        (SITE_BUDGET_KEY, config.callback_hourly_limit),
    ]
    refused = await store.hit_all(shared, BUDGET_WINDOW)
    if refused is not None:
        await store.uncount(own_key)
        which, wait = refused
        budget = ("We can't place more calls to that country right now", "We can't place more call-backs right now")
        raise _budget_spent(budget[which], wait)
    return (own_key, *(key for key, _ in shared))


def _budget_spent(sentence: str, wait: float) -> HTTPProblem:
    seconds = max(1, round(wait))
    when = f"{seconds} s" if seconds < 120 else f"{round(seconds / 60)} min"
    return HTTPProblem(429, "rate_limited", f"{sentence}; try again in {when}.", retry_after=wait)
