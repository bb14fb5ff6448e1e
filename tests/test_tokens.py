"""Plugin tokens: audience per purpose, expiry by the injected clock, rotation, no algorithm from the token."""

from __future__ import annotations

import base64
import json

import jwt
import pytest

from webcall.errors import TokenError
from webcall.tokens import AUDIENCE_CALL, TokenIssuer

OLD, NEW = "o" * 32, "n" * 32


class Clock:
    def __init__(self) -> None:
        self.now = 1_800_000_000.0

    def __call__(self) -> float:
        return self.now


def test_round_trip() -> None:
    issuer = TokenIssuer([NEW])
    token, claims = issuer.issue("call_1", AUDIENCE_CALL, ttl=60)
    got = issuer.verify(token, AUDIENCE_CALL, call_id="call_1")
    assert got.call_id == "call_1" and got.jti == claims.jti


def test_expired_by_clock() -> None:
    clock = Clock()
    issuer = TokenIssuer([NEW], clock=clock, leeway=5)
    token, _ = issuer.issue("call_1", AUDIENCE_CALL, ttl=60)
    clock.now += 64
    issuer.verify(token, AUDIENCE_CALL)
    clock.now += 2
    with pytest.raises(TokenError, match="expired"):
        issuer.verify(token, AUDIENCE_CALL)


def test_wrong_audience_and_wrong_call() -> None:
    issuer = TokenIssuer([NEW])
    token, _ = issuer.issue("call_1", "webcall:other", ttl=60)
    with pytest.raises(TokenError):
        issuer.verify(token, AUDIENCE_CALL)
    token, _ = issuer.issue("call_1", AUDIENCE_CALL, ttl=60)
    with pytest.raises(TokenError, match="another call"):
        issuer.verify(token, AUDIENCE_CALL, call_id="call_2")


def test_rotation_accepts_old_secret() -> None:
    old_token, _ = TokenIssuer([OLD]).issue("call_1", AUDIENCE_CALL, ttl=60)
    rotated = TokenIssuer([NEW, OLD])
    assert rotated.verify(old_token, AUDIENCE_CALL).call_id == "call_1"
    with pytest.raises(TokenError, match="signature"):
        TokenIssuer([NEW]).verify(old_token, AUDIENCE_CALL)


def _b64(data: dict[str, object]) -> str:
    return base64.urlsafe_b64encode(json.dumps(data).encode()).rstrip(b"=").decode()


def test_alg_none_is_refused() -> None:
    issuer = TokenIssuer([NEW])
    good, _ = issuer.issue("call_1", AUDIENCE_CALL, ttl=60)
    payload = jwt.decode(good, options={"verify_signature": False})
    forged = f"{_b64({'alg': 'none', 'typ': 'JWT'})}.{_b64(payload)}."
    with pytest.raises(TokenError):
        issuer.verify(forged, AUDIENCE_CALL)


def test_resigned_with_other_key_or_alg_is_refused() -> None:
    issuer = TokenIssuer([NEW])
    good, _ = issuer.issue("call_1", AUDIENCE_CALL, ttl=60)
    payload = jwt.decode(good, options={"verify_signature": False})
    with pytest.raises(TokenError):
        issuer.verify(jwt.encode(payload, "x" * 32, algorithm="HS256"), AUDIENCE_CALL)
    with pytest.raises(TokenError):
        issuer.verify(
            jwt.encode(payload, NEW + "padding-for-hs512-key-length-ok" * 2, algorithm="HS512"), AUDIENCE_CALL
        )


@pytest.mark.parametrize("junk", ["", "abc", "a.b.c", "x" * 5000, "é.é.é", None])
def test_garbage_is_a_token_error(junk: str | None) -> None:
    with pytest.raises(TokenError):
        TokenIssuer([NEW]).verify(junk, AUDIENCE_CALL)
