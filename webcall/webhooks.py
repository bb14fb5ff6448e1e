"""DialNexa webhook signatures checked as pure functions: no I/O, no aiohttp.

DialNexa signs the raw body: ``x-nexa-signature: sha256=<lowercase hex HMAC-SHA256>`` (an older page names the
header ``X-DialNexa-Signature``). There is no timestamp and no delivery id; replays are handled by deduplication.
The scheme itself (:func:`signature`, the header names) is in :mod:`webcall.dialnexa.facts`, which the emulator
signs its deliveries with.
"""

from __future__ import annotations

import hashlib
import hmac
import re
from collections.abc import Mapping, Sequence

from .dialnexa.facts import SIGNATURE_HEADERS, signature
from .errors import WebhookSignatureError

__all__ = ["SIGNATURE_HEADERS", "find_signature", "signature", "verify"]

_HEX = re.compile(r"^[0-9a-fA-F]{64}$")


def find_signature(headers: Mapping[str, str]) -> str | None:
    lowered = {k.lower(): v for k, v in headers.items()}
    for name in SIGNATURE_HEADERS:
        if name in lowered:
            return lowered[name]
    return None


def verify(body: bytes, headers: Mapping[str, str], secrets: Sequence[str]) -> int:
    """Check ``body`` against every secret in constant time; return the index of the secret that matched.

    Raises :class:`WebhookSignatureError` for a missing, malformed or wrong signature, or when no secret is set.
    """
    if not secrets:
        raise WebhookSignatureError("no webhook secret is configured")
    value = find_signature(headers)
    if value is None:
        raise WebhookSignatureError("missing signature header")
    value = value.strip()
    if value[:7].lower() == "sha256=":
        value = value[7:]
    if not _HEX.match(value):
        raise WebhookSignatureError("malformed signature")
    given = bytes.fromhex(value)
    matched = -1
    for index, secret in enumerate(secrets):
        expected = hmac.new(secret.encode(), body, hashlib.sha256).digest()
        if hmac.compare_digest(expected, given) and matched < 0:
            matched = index
    if matched < 0:
        raise WebhookSignatureError("signature does not match")
    return matched
