"""Short-lived plugin tokens (HS256 JWTs, :mod:`webcall.hs256`) that let a browser use the per-call routes.

Every token names one audience (its purpose) and one call; several secrets may be configured, the first signs and all
verify (rotation).
"""

from __future__ import annotations

import secrets
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import jwt

from . import hs256
from .errors import TokenError

ISSUER = "webcall"
AUDIENCE_CALL = "webcall:call"  # events stream and hang-up of one call
REQUIRED_CLAIMS = ("exp", "iat", "aud", "iss", "sub", "jti")


@dataclass(frozen=True)
class TokenClaims:
    call_id: str
    audience: str
    jti: str
    expires_at: float
    extra: dict[str, Any]


class TokenIssuer:
    def __init__(self, secrets_: Sequence[str], *, clock: Callable[[], float] = time.time, leeway: float = 5) -> None:
        if not secrets_:
            raise ValueError("at least one secret is required")
        self._secrets = [s.encode() for s in secrets_]
        self._clock = clock
        self._leeway = leeway

    def issue(self, call_id: str, audience: str, ttl: float, **extra: Any) -> tuple[str, TokenClaims]:
        now = self._clock()
        claims = TokenClaims(
            call_id=call_id, audience=audience, jti=secrets.token_urlsafe(12), expires_at=now + ttl, extra=extra
        )
        payload = {
            **extra,
            "iss": ISSUER,
            "aud": audience,
            "sub": call_id,
            "iat": int(now),
            "exp": int(now + ttl),
            "jti": claims.jti,
        }
        return hs256.sign(payload, self._secrets[0]), claims

    def verify(self, token: str | None, audience: str, *, call_id: str | None = None) -> TokenClaims:
        """Return the claims of a valid token for ``audience`` (and ``call_id``), or raise :class:`TokenError`."""
        if not token or len(token) > 4096:
            raise TokenError("missing or oversized token")
        try:
            payload = hs256.verify(token, self._secrets, audience=audience, issuer=ISSUER, required=REQUIRED_CLAIMS)
        except jwt.InvalidSignatureError as err:
            raise TokenError("invalid token: bad signature") from err
        except jwt.InvalidTokenError as err:
            raise TokenError(f"invalid token: {type(err).__name__}") from err
        try:
            expires_at = hs256.claim_time(payload, "exp")
        except ValueError:
            raise TokenError("invalid token: malformed expiry") from None
        if expires_at + self._leeway < self._clock():
            raise TokenError("invalid token: expired")
        if call_id is not None and payload["sub"] != call_id:
            raise TokenError("invalid token: issued for another call")
        return TokenClaims(
            call_id=str(payload["sub"]),
            audience=audience,
            jti=str(payload["jti"]),
            expires_at=expires_at,
            extra={k: v for k, v in payload.items() if k not in REQUIRED_CLAIMS},
        )
