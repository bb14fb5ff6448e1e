"""Short-lived plugin tokens (HS256 JWTs) that let a browser use the per-call routes.

The algorithm is fixed by the verifier, never read from the token; every token names one audience (its purpose);
several secrets may be configured, the first signs and all verify (rotation).
"""

from __future__ import annotations

import math
import secrets
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import jwt

from .errors import TokenError

ISSUER = "webcall"
AUDIENCE_CALL = "webcall:call"  # events stream and hang-up of one call
_ALGORITHM = "HS256"


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
        return jwt.encode(payload, self._secrets[0], algorithm=_ALGORITHM), claims

    def verify(self, token: str | None, audience: str, *, call_id: str | None = None) -> TokenClaims:
        """Return the claims of a valid token for ``audience`` (and ``call_id``), or raise :class:`TokenError`."""
        if not token or len(token) > 4096:
            raise TokenError("missing or oversized token")
        last: Exception | None = None
        for secret in self._secrets:
            try:
                payload = jwt.decode(
                    token,
                    secret,
                    algorithms=[_ALGORITHM],
                    audience=audience,
                    issuer=ISSUER,
                    leeway=self._leeway,
                    options={
                        "require": ["exp", "iat", "aud", "iss", "sub", "jti"],
                        "verify_iat": False,
                        "verify_exp": False,
                    },
                )
            except jwt.InvalidSignatureError as err:
                last = err
                continue
            except (jwt.InvalidTokenError, ValueError, TypeError, OverflowError) as err:
                raise TokenError(f"invalid token: {type(err).__name__}") from err
            exp = payload["exp"]
            if isinstance(exp, bool) or not isinstance(exp, int | float):
                raise TokenError("invalid token: malformed expiry")
            if not 0 <= exp <= 1e12 or not math.isfinite(exp):  # range first: huge ints overflow isfinite
                raise TokenError("invalid token: malformed expiry")
            if exp + self._leeway < self._clock():
                raise TokenError("invalid token: expired")
            if call_id is not None and payload["sub"] != call_id:
                raise TokenError("invalid token: issued for another call")
            known = {"iss", "aud", "sub", "iat", "exp", "jti"}
            return TokenClaims(
                call_id=str(payload["sub"]),
                audience=audience,
                jti=str(payload["jti"]),
                expires_at=float(exp),
                extra={k: v for k, v in payload.items() if k not in known},
            )
        raise TokenError("invalid token: bad signature") from last
