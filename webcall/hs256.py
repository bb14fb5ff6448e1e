"""HS256 JSON Web Tokens checked against several secrets: the one verifier behind the plugin's call tokens
(:mod:`webcall.tokens`) and the host's call tickets (:mod:`webcall.tickets`).

The algorithm is fixed here and never read from the token, so ``alg: none`` and public-key algorithms are refused.
Several secrets may be configured: the first signs, every one verifies, so secrets rotate. Expiry and not-before are
left to each caller, which applies its own leeway and limits to the time :func:`claim_time` reads.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import jwt

ALGORITHM = "HS256"
LATEST_TIME = 1e12
"""The latest time a claim may name (about the year 33658): anything later is not a time."""


def sign(claims: Mapping[str, Any], secret: str | bytes) -> str:
    return jwt.encode(dict(claims), secret, algorithm=ALGORITHM)


def verify(
    raw: str, secrets: Sequence[bytes], *, audience: str, required: Iterable[str], issuer: str | None = None
) -> dict[str, Any]:
    """The claims of ``raw`` when one of ``secrets`` signed it with HS256 for ``audience`` (and ``issuer``, when given)
    and it holds every ``required`` claim. Raises :class:`jwt.InvalidSignatureError` when no secret matches and another
    :class:`jwt.InvalidTokenError` for anything else wrong with it, a token that is not a JWT at all included."""
    for secret in secrets:
        try:
            claims: dict[str, Any] = jwt.decode(
                raw,
                secret,
                algorithms=[ALGORITHM],
                audience=audience,
                issuer=issuer,
                options={"require": list(required), "verify_exp": False, "verify_nbf": False, "verify_iat": False},
            )
        except jwt.InvalidSignatureError:
            continue  # signed with another of the configured secrets, perhaps
        except (ValueError, TypeError, OverflowError) as err:  # what PyJWT lets through from some malformed input
            raise jwt.DecodeError(f"not a JWT ({type(err).__name__})") from err
        return claims
    raise jwt.InvalidSignatureError("the signature matches none of the configured secrets")


def claim_time(claims: Mapping[str, Any], name: str) -> float:
    """The time claim ``name`` (``exp``, ``nbf``) as seconds since 1970; ValueError, saying what is wrong, when it is
    not a number within reach."""
    value = claims.get(name)
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ValueError(f"'{name}' must be a number of seconds since 1970")
    if not 0 <= value <= LATEST_TIME or not math.isfinite(value):  # range first: huge ints overflow isfinite
        raise ValueError(f"'{name}' is out of range")
    return float(value)
