"""Properties of the two verifiers every request leans on: webhook signatures and the plugin's call tokens.

Each may only raise its own error (``WebhookSignatureError``, ``TokenError``) for any input, and accepts exactly what
an independent check says it should: the acceptance of a token is re-derived here from the raw segments with
``hmac``, not from PyJWT.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import math
from typing import Any

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from webcall.errors import TokenError, WebhookSignatureError
from webcall.tokens import AUDIENCE_CALL, ISSUER, TokenIssuer
from webcall.webhooks import signature, verify

SECRET = "property-session-secret-0123456789-abcdef"
OLD_SECRET = "property-old-session-secret-0123456789-ab"
OTHER_SECRET = "property-other-secret-0123456789-abcdefgh"
NOW = 1_800_000_000.0
LEEWAY = 5.0
CALL = "call_prop0001"
PROPERTY = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])

# -- webhook signatures ---------------------------------------------------------------------------------------------
_SECRET_TEXT = st.text(st.characters(exclude_categories=["Cs"]), min_size=16, max_size=64)
_HEADER_NAMES = st.sampled_from(["x-nexa-signature", "X-Nexa-Signature", "X-NEXA-SIGNATURE", "x-dialnexa-signature"])
_NOISE_HEADERS = st.dictionaries(
    st.text("abcdefghijklmnopqrstuvwxyz-", min_size=1, max_size=20).filter(lambda n: "signature" not in n),
    st.text(max_size=50),
    max_size=4,
)


@PROPERTY
@given(
    body=st.binary(max_size=4096),
    secrets=st.lists(_SECRET_TEXT, min_size=1, max_size=4, unique=True),
    data=st.data(),
    name=_HEADER_NAMES,
    noise=_NOISE_HEADERS,
)
def test_a_signature_made_with_a_configured_secret_is_accepted(
    body: bytes, secrets: list[str], data: st.DataObject, name: str, noise: dict[str, str]
) -> None:
    index = data.draw(st.integers(0, len(secrets) - 1))
    digest = signature(body, secrets[index]).removeprefix("sha256=")
    prefix = data.draw(st.sampled_from(["sha256=", "SHA256=", "Sha256=", ""]))
    digest = digest.upper() if data.draw(st.booleans()) else digest
    padding = data.draw(st.sampled_from(["", " ", "\t", "  "]))
    headers = {**noise, name: f"{padding}{prefix}{digest}{padding}"}
    assert verify(body, headers, secrets) == index


def _corruptions(body: bytes, secret: str) -> st.SearchStrategy[str]:
    """Header values that must never pass for ``body`` signed with ``secret``."""
    good = signature(body, secret).removeprefix("sha256=")
    position = st.integers(0, 63)
    arabic_indic = str.maketrans("0123456789", "\u0660\u0661\u0662\u0663\u0664\u0665\u0666\u0667\u0668\u0669")
    fullwidth = str.maketrans(
        "0123456789abcdef", "".join(chr(0xFF10 + n) for n in range(10)) + "".join(chr(0xFF41 + n) for n in range(6))
    )
    return st.one_of(
        st.integers(0, 63).map(lambda n: "sha256=" + good[:n]),  # truncated
        position.map(lambda i: "sha256=" + good[:i] + ("0" if good[i] != "0" else "1") + good[i + 1 :]),  # flipped
        st.text("0123456789abcdef", min_size=1, max_size=4).map(lambda extra: "sha256=" + good + extra),  # longer
        st.just("sha256=" + good.translate(arabic_indic)),  # digits that are not ASCII
        st.just("sha256=" + good.translate(fullwidth)),
        st.just("sha1=" + good),
        st.just("sha256:" + good),
        st.just("sha256=sha256=" + good),
        st.just("sha256=0x" + good[2:]),
        st.just("sha256=" + good[:32] + " " + good[32:]),
        st.just("sha256=" + good[:32] + "\x00" + good[32:]),
        st.just("sha256=" + base64.b64encode(bytes.fromhex(good)).decode()),
        st.just(signature(body + b" ", secret)),  # another body
        st.just(signature(body, secret + "x")),  # another secret
        # (HMAC pads keys with zero bytes: "k\x00" and "k" are the same key, so that is no corruption)
        st.just(signature(body, secret[:-1] if not secret.endswith("\x00") else secret + "\x01")),
        st.integers(1, 200_000).map(lambda n: "sha256=" + "a" * n),  # huge
        st.text(max_size=300),
        st.binary(max_size=100).map(lambda b: b.decode("latin-1")),
    )


@PROPERTY
@given(body=st.binary(max_size=2048), secret=_SECRET_TEXT, data=st.data(), name=_HEADER_NAMES)
def test_every_corrupted_signature_is_refused_with_its_own_error(
    body: bytes, secret: str, data: st.DataObject, name: str
) -> None:
    value = data.draw(_corruptions(body, secret))
    with pytest.raises(WebhookSignatureError):
        verify(body, {name: value}, [secret])


@PROPERTY
@given(body=st.binary(max_size=512), secret=_SECRET_TEXT, noise=_NOISE_HEADERS)
def test_no_header_or_no_secret_is_refused(body: bytes, secret: str, noise: dict[str, str]) -> None:
    with pytest.raises(WebhookSignatureError):
        verify(body, noise, [secret])
    with pytest.raises(WebhookSignatureError):
        verify(body, {**noise, "x-nexa-signature": signature(body, secret)}, [])


@PROPERTY
@given(
    body=st.binary(max_size=512),
    configured=st.lists(_SECRET_TEXT, min_size=1, max_size=3, unique=True),
    signer=_SECRET_TEXT,
)
def test_only_configured_secrets_verify(body: bytes, configured: list[str], signer: str) -> None:
    headers = {"x-nexa-signature": signature(body, signer)}
    if signer in configured:
        assert verify(body, headers, configured) == configured.index(signer)
    else:
        with pytest.raises(WebhookSignatureError):
            verify(body, headers, configured)


# -- plugin tokens ---------------------------------------------------------------------------------------------------
def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def unb64url(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def make_jwt(header: Any, claims: Any, key: str | None, digest: str = "sha256") -> str:
    """A compact JWS built by hand: any header, any claims (NaN and Infinity included), any HMAC or none."""
    signing_input = f"{b64url(json.dumps(header).encode())}.{b64url(json.dumps(claims).encode())}"
    if key is None:
        return signing_input + "."
    mac = hmac.new(key.encode(), signing_input.encode(), getattr(hashlib, digest)).digest()
    return f"{signing_input}.{b64url(mac)}"


def legitimately_accepted(token: str, audience: str, call_id: str, secrets: list[str]) -> bool:
    """Whether ``token`` deserves acceptance, decided without PyJWT."""
    try:
        head, body, mac = token.split(".")
        header = json.loads(unb64url(head))
        claims = json.loads(unb64url(body))
        given_mac = unb64url(mac)
    except (ValueError, binascii.Error):
        return False
    if not isinstance(header, dict) or header.get("alg") != "HS256" or not isinstance(claims, dict):
        return False
    signed = any(
        hmac.compare_digest(hmac.new(s.encode(), f"{head}.{body}".encode(), hashlib.sha256).digest(), given_mac)
        for s in secrets
    )
    if not signed:
        return False
    aud = claims.get("aud")
    exp = claims.get("exp")
    return (
        claims.get("iss") == ISSUER
        and (aud == audience or (isinstance(aud, list) and audience in aud))
        and claims.get("sub") == call_id
        and isinstance(claims.get("jti"), str)
        and claims.get("iat") is not None
        and isinstance(exp, int | float)
        and not isinstance(exp, bool)
        and math.isfinite(exp)
        and exp + LEEWAY >= NOW
    )


def issuer(*secrets: str, now: float = NOW) -> TokenIssuer:
    return TokenIssuer(list(secrets), clock=lambda: now, leeway=LEEWAY)


_CALL_IDS = st.text(min_size=1, max_size=40)
_JSON_SCALAR = st.one_of(
    st.none(), st.booleans(), st.integers(-(2**40), 2**40), st.floats(allow_nan=False), st.text(max_size=20)
)
_JSON_ANY = st.recursive(
    _JSON_SCALAR,
    lambda inner: st.one_of(st.lists(inner, max_size=3), st.dictionaries(st.text(max_size=8), inner, max_size=3)),
    max_leaves=8,
)
# Well-typed expiries (the representable NumericDates): malformed ones are the subject of the xfail test below.
_EXP = st.one_of(st.integers(int(NOW) - 10**6, int(NOW) + 10**6), st.integers(-(2**53), 2**53))


@st.composite
def token_claims(draw: st.DrawFn, call_id: str) -> dict[str, Any]:
    """Claims close to a real token's, each one possibly dropped or replaced by a value of another type."""
    claims: dict[str, Any] = {
        "iss": draw(st.one_of(st.just(ISSUER), st.just("webcall "), _JSON_ANY)),
        "aud": draw(
            st.one_of(
                st.just(AUDIENCE_CALL),
                st.just([AUDIENCE_CALL, "x"]),
                st.sampled_from(["webcall:other", "WEBCALL:CALL", ""]),
                _JSON_ANY,
            )
        ),
        "sub": draw(st.one_of(st.just(call_id), st.just(call_id + "x"), _JSON_ANY)),
        "iat": draw(st.one_of(st.integers(0, 2**40), _JSON_ANY)),
        "exp": draw(_EXP),
        "jti": draw(st.one_of(st.text(min_size=1, max_size=16), _JSON_ANY)),
    }
    for name in list(claims):
        if draw(st.integers(0, 7)) == 0:
            del claims[name]
    claims.update(draw(st.dictionaries(st.sampled_from(["nbf", "kid", "extra", "role"]), _JSON_ANY, max_size=2)))
    if "nbf" in claims and draw(st.booleans()):
        claims["nbf"] = draw(st.integers(int(NOW) - 100, int(NOW) + 100))
    return claims


_HEADERS = st.fixed_dictionaries(
    {
        "alg": st.one_of(
            st.sampled_from(["HS256", "HS384", "HS512", "none", "None", "RS256", "ES256", "hs256", ""]), _JSON_ANY
        )
    },
    optional={
        "typ": st.one_of(st.just("JWT"), _JSON_ANY),
        "kid": _JSON_ANY,
        "jku": st.just("https://evil.example/jwks.json"),
        "crit": st.one_of(st.just(["b64"]), _JSON_ANY),
        "b64": st.booleans(),
    },
)
_KEYS = st.sampled_from([SECRET, OLD_SECRET, OTHER_SECRET, "", SECRET + "x", SECRET[:-1], SECRET.upper(), None])


@PROPERTY
@given(call_id=_CALL_IDS, data=st.data())
def test_tokens_with_any_header_claims_and_key_raise_only_token_errors_and_accept_only_what_they_should(
    call_id: str, data: st.DataObject
) -> None:
    header = data.draw(_HEADERS)
    claims = data.draw(token_claims(call_id))
    key = data.draw(_KEYS)
    digest = data.draw(st.sampled_from(["sha256", "sha384", "sha512"]))
    token = make_jwt(header, claims, key, digest)
    verifier = issuer(SECRET, OLD_SECRET)
    should = legitimately_accepted(token, AUDIENCE_CALL, call_id, [SECRET, OLD_SECRET])
    try:
        result = verifier.verify(token, AUDIENCE_CALL, call_id=call_id)
    except TokenError:
        accepted = False
    else:
        accepted = True
        assert result.call_id == call_id and result.audience == AUDIENCE_CALL
    if not should:
        assert not accepted, f"accepted a token it should refuse: {header} {claims} signed with {key!r}"


@PROPERTY
@given(call_id=_CALL_IDS, ttl=st.floats(min_value=-3600, max_value=3600), elapsed=st.floats(0, 7200))
def test_a_token_is_valid_exactly_until_its_expiry_plus_leeway(call_id: str, ttl: float, elapsed: float) -> None:
    token, claims = issuer(SECRET).issue(call_id, AUDIENCE_CALL, ttl=ttl)
    later = issuer(SECRET, now=NOW + elapsed)
    exp = int(NOW + ttl)
    if exp + LEEWAY >= NOW + elapsed:
        assert later.verify(token, AUDIENCE_CALL, call_id=call_id).jti == claims.jti
    else:
        with pytest.raises(TokenError):
            later.verify(token, AUDIENCE_CALL, call_id=call_id)


@PROPERTY
@given(call_id=_CALL_IDS, other=_CALL_IDS, audience=st.text(max_size=20))
def test_a_real_token_only_opens_its_own_call_and_audience(call_id: str, other: str, audience: str) -> None:
    token, _ = issuer(OLD_SECRET).issue(call_id, AUDIENCE_CALL, ttl=60)
    rotated = issuer(SECRET, OLD_SECRET)
    assert rotated.verify(token, AUDIENCE_CALL, call_id=call_id).call_id == call_id
    if other != call_id:
        with pytest.raises(TokenError):
            rotated.verify(token, AUDIENCE_CALL, call_id=other)
    if audience != AUDIENCE_CALL:
        with pytest.raises(TokenError):
            rotated.verify(token, audience, call_id=call_id)
    with pytest.raises(TokenError):
        issuer(SECRET).verify(token, AUDIENCE_CALL, call_id=call_id)  # the old secret was retired


_B64URL = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"


@PROPERTY
@given(
    junk=st.one_of(
        st.none(),
        st.text(max_size=300),
        st.lists(st.text(_B64URL, max_size=80), min_size=1, max_size=5).map(".".join),
        st.lists(st.binary(max_size=60).map(b64url), min_size=3, max_size=3).map(".".join),
        st.integers(4097, 20_000).map(lambda n: "e" * n),
        st.text(max_size=100).map(lambda t: "Bearer " + t),
    )
)
def test_random_strings_are_token_errors(junk: str | None) -> None:
    with pytest.raises(TokenError):
        issuer(SECRET).verify(junk, AUDIENCE_CALL, call_id=CALL)


@PROPERTY
@given(
    header=_HEADERS.filter(lambda h: h.get("alg") != "HS256"),
    key=st.sampled_from([SECRET, None, ""]),
    digest=st.sampled_from(["sha256", "sha384", "sha512"]),
)
def test_the_algorithm_is_never_read_from_the_token(header: dict[str, Any], key: str | None, digest: str) -> None:
    claims = {"iss": ISSUER, "aud": AUDIENCE_CALL, "sub": CALL, "iat": int(NOW), "exp": int(NOW) + 60, "jti": "j"}
    with pytest.raises(TokenError):
        issuer(SECRET).verify(make_jwt(header, claims, key, digest), AUDIENCE_CALL, call_id=CALL)


@settings(max_examples=50, deadline=None)
@example(exp="2099-01-01")
@example(exp=[int(NOW) + 60])
@example(exp={"at": int(NOW) + 60})
@example(exp=10**400)
@example(exp=math.nan)
@example(exp=math.inf)
@given(exp=st.one_of(st.text(max_size=10), st.lists(st.integers(), max_size=2), st.integers(min_value=2**1024)))
def test_a_malformed_expiry_signed_with_the_right_secret_is_a_token_error(exp: Any) -> None:
    claims = {"iss": ISSUER, "aud": AUDIENCE_CALL, "sub": CALL, "iat": int(NOW), "jti": "j", "exp": exp}
    token = make_jwt({"alg": "HS256", "typ": "JWT"}, claims, SECRET)
    with pytest.raises(TokenError):
        issuer(SECRET).verify(token, AUDIENCE_CALL, call_id=CALL)
