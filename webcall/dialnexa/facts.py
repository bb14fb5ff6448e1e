"""What DialNexa documents about its webhooks, which the plugin and the emulator both follow: the subscription names,
the names deliveries carry, and how a delivery is signed.

This module imports only the standard library. It is the one plugin module the emulator may import (besides its own
``webcall.emulator`` package), so the emulator stands alone on DialNexa's side of the seam, as a stand-in for DialNexa
would; ``tests/test_architecture.py`` holds both to that.
"""

from __future__ import annotations

import hashlib
import hmac

SHOWN_SUBSCRIPTION_EVENTS = ("call.completed", "call.failed")
"""The subscription names DialNexa's OpenAPI shows in its examples: the ones it is known to accept."""

DOCUMENTED_SUBSCRIPTION_EVENTS = (
    *SHOWN_SUBSCRIPTION_EVENTS,
    "call.no_answer",  # an older API reference
    "campaign.completed",
    "campaign.paused",
    "workflow.lead.completed",
)
"""Every subscription name DialNexa has documented somewhere (its deliveries carry other names, in ``event_type``)."""

DELIVERY_EVENT_TYPES = ("call_initiated", "call_ended", "transfer_completed")
"""The ``event_type`` of DialNexa's call deliveries."""

SIGNATURE_HEADER = "x-nexa-signature"
"""The header DialNexa signs a delivery in: ``sha256=<lowercase hex HMAC-SHA256 of the raw body>``."""

SIGNATURE_HEADERS = (SIGNATURE_HEADER, "x-dialnexa-signature")
"""Every name DialNexa has given the signature header (an older page names it ``X-DialNexa-Signature``)."""


def signature(body: bytes, secret: str) -> str:
    """The header value DialNexa sends for ``body`` signed with ``secret``."""
    return "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()
