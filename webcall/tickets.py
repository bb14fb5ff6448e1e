"""Call tickets: per-visitor decisions signed by the host's own backend, in any language.

A ticket is a short-lived HS256 JWT signed with one of the secrets in ``WEBCALL_TICKET_SECRETS`` (the first signs on
the host, every one verifies here, so secrets rotate). Its claims:

``aud``
    ``"webcall"`` (``ticket_audience``): a JWT signed for something else is refused.
``sub``
    the visitor's identity, rate-limited per identity like an ``authorize`` hook's answer.
``agent``
    the alias, or list of aliases, this visitor may call.
``vars``
    optional ``{{variables}}`` (strings) that win over the visitor's own.
``exp``
    at most :data:`MAX_TICKET_SECONDS` ahead.
``jti``
    a unique id: a ticket admits one start.

Tickets are HS256 JWTs (:mod:`webcall.hs256`: the algorithm is never read from the token, so ``alg: none`` and
public-key algorithms are refused). Verification raises :class:`~webcall.errors.TicketRefused` (codes
``ticket_invalid`` and ``ticket_expired``), which the routes answer with 401 before any upstream call.
"""

from __future__ import annotations

import secrets
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import jwt

from . import hs256
from .config import ALIAS_PATTERN, VARIABLE_PATTERN
from .errors import TicketRefused
from .guard import CONTROL_CHARACTERS, unsafe_value

REQUIRED_CLAIMS = ("aud", "sub", "exp", "jti")
DEFAULT_AUDIENCE = "webcall"
MAX_TICKET_SECONDS = 600
"""A ticket may live at most ten minutes: long enough to read a page, short enough that a leaked one is worth little."""
LEEWAY_SECONDS = 30
"""Clock difference tolerated between the host's backend and this service."""
MAX_TICKET_BYTES = 4096
MAX_TICKET_VARIABLES = 32
MAX_TICKET_VALUE_LENGTH = 1000
MIN_SECRET_BYTES = 32


@dataclass(frozen=True, kw_only=True)
class CallTicket:
    """What a verified ticket allows: who calls, which agents, with which variables, until when."""

    subject: str
    agents: frozenset[str]
    variables: Mapping[str, str] = field(default_factory=dict)
    ticket_id: str
    expires_at: float


def sign_ticket(
    secret: str,
    *,
    subject: str,
    agent: str | Iterable[str],
    variables: Mapping[str, str] | None = None,
    ttl: float = 300,
    audience: str = DEFAULT_AUDIENCE,
    now: float | None = None,
) -> str:
    """Sign a call ticket on a Python host (any JWT library can do the same; see the README)."""
    issued_at = int(time.time() if now is None else now)
    claims: dict[str, Any] = {
        "aud": audience,
        "sub": subject,
        "agent": agent if isinstance(agent, str) else list(agent),
        "iat": issued_at,
        "exp": issued_at + int(ttl),
        "jti": secrets.token_urlsafe(16),
    }
    if variables:
        claims["vars"] = dict(variables)
    return hs256.sign(claims, secret)


def invalid(detail: str) -> TicketRefused:
    return TicketRefused("ticket_invalid", f"The call ticket is not valid: {detail}")


class TicketVerifier:
    """Checks call tickets against the configured secrets and audience; knows nothing of HTTP or the store."""

    def __init__(
        self,
        secrets_: Sequence[str],
        *,
        audience: str = DEFAULT_AUDIENCE,
        clock: Callable[[], float] = time.time,
    ) -> None:
        if not secrets_:
            raise ValueError("at least one ticket secret is required")
        self._secrets = [secret.encode() for secret in secrets_]
        self._audience = audience
        self._clock = clock

    def verify(self, raw: Any) -> CallTicket:
        """The ticket's decisions, or :class:`~webcall.errors.TicketRefused` saying what is wrong with it."""
        if not isinstance(raw, str) or not raw:
            raise invalid("send it as a string in 'ticket'.")
        if len(raw) > MAX_TICKET_BYTES:
            raise invalid(f"it is longer than {MAX_TICKET_BYTES} bytes.")
        claims = self._decode(raw)
        now = self._clock()
        expires_at = _time(claims, "exp")
        if expires_at + LEEWAY_SECONDS < now:
            raise TicketRefused("ticket_expired", "The call ticket has expired; reload the page for a new one.")
        if expires_at - now > MAX_TICKET_SECONDS + LEEWAY_SECONDS:
            raise invalid(f"'exp' is more than {MAX_TICKET_SECONDS} seconds ahead; sign shorter-lived tickets.")
        not_before = claims.get("nbf")
        if not_before is not None and _time(claims, "nbf") - LEEWAY_SECONDS > now:
            raise invalid("it is not valid yet ('nbf').")
        return CallTicket(
            subject=_text(claims.get("sub"), "sub", limit=200),
            agents=_agents(claims.get("agent")),
            variables=_variables(claims.get("vars")),
            ticket_id=_text(claims.get("jti"), "jti", limit=128),
            expires_at=expires_at,
        )

    def _decode(self, raw: str) -> dict[str, Any]:
        try:
            return hs256.verify(raw, self._secrets, audience=self._audience, required=REQUIRED_CLAIMS)
        except jwt.InvalidSignatureError:
            raise invalid("its signature does not match any configured secret.") from None
        except jwt.InvalidAudienceError:
            raise invalid(f"its audience ('aud') must be {self._audience!r}.") from None
        except jwt.InvalidAlgorithmError:
            raise invalid(f"it must be signed with {hs256.ALGORITHM}.") from None
        except jwt.MissingRequiredClaimError as err:
            raise invalid(f"the claim {err.claim!r} is missing.") from None
        except jwt.InvalidTokenError:
            raise invalid("it is not a signed JWT.") from None


def _time(claims: dict[str, Any], name: str) -> float:
    try:
        return hs256.claim_time(claims, name)
    except ValueError as err:
        raise invalid(f"{err}.") from None


def _text(value: Any, claim: str, *, limit: int) -> str:
    if not isinstance(value, str) or not value.strip() or len(value) > limit or CONTROL_CHARACTERS.search(value):
        raise invalid(f"'{claim}' must be a non-empty string of at most {limit} characters.")
    return value


def _agents(value: Any) -> frozenset[str]:
    aliases = [value] if isinstance(value, str) else value
    if (
        not isinstance(aliases, list)
        or not aliases
        or len(aliases) > 64
        or not all(isinstance(alias, str) and ALIAS_PATTERN.match(alias) for alias in aliases)
    ):
        raise invalid("'agent' must be an agent alias or a non-empty list of aliases.")
    return frozenset(aliases)


def _variables(value: Any) -> dict[str, str]:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise invalid("'vars' must be an object of strings.")
    if len(value) > MAX_TICKET_VARIABLES:
        raise invalid(f"'vars' holds more than {MAX_TICKET_VARIABLES} variables.")
    for name, text in value.items():
        if not VARIABLE_PATTERN.match(name):
            raise invalid(f"'vars' names {name[:64]!r}, which is not a variable name.")
        if not isinstance(text, str):
            raise invalid(f"the variable {name!r} in 'vars' must be a string.")
        if len(text) > MAX_TICKET_VALUE_LENGTH:
            raise invalid(f"the variable {name!r} in 'vars' is longer than {MAX_TICKET_VALUE_LENGTH} characters.")
        if unsafe_value(text):
            raise invalid(f"the variable {name!r} in 'vars' contains characters that are not allowed.")
    return dict(value)
