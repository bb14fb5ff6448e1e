"""The plugin's one webhook subscription at DialNexa: found by URL, created or repaired, never duplicated."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence

from .dialnexa import DialNexaClient
from .errors import ConfigError

log = logging.getLogger("webcall")

DOCUMENTED_SUBSCRIPTION_EVENTS = (
    "call.completed",  # DialNexa's OpenAPI examples
    "call.failed",
    "call.no_answer",  # an older API reference
    "campaign.completed",
    "campaign.paused",
    "workflow.lead.completed",
)
"""The subscription names DialNexa documents (its deliveries carry other names, in ``event_type``)."""


class WebhookSubscription:
    """Keeps exactly one DialNexa webhook subscription pointed at the plugin's ``/webhooks`` route."""

    def __init__(self, client: DialNexaClient, secrets: Sequence[str], events: Sequence[str]) -> None:
        self.client = client
        self.secrets = tuple(secrets)
        self.events = tuple(events)
        """The subscription names registered (``webhook_events``)."""
        self.url: str | None = None
        """Where the subscription points, once registered by this process."""
        self._lock = asyncio.Lock()

    async def ensure(self, url: str) -> str:
        """Create the subscription for ``url``, or update the one found (active, events, current secret) and delete
        duplicates. Returns the subscription id."""
        if not self.secrets:
            raise ConfigError("Set webhook_secrets (WEBCALL_WEBHOOK_SECRETS) before registering a webhook.")
        async with self._lock:
            hooks = [hook for hook in await self.client.list_webhooks() if hook.url == url]
            events, secret = list(self.events), self.secrets[0]
            if not hooks:
                hook = await self.client.create_webhook(url=url, events=events, secret=secret)
                log.info("webcall: registered DialNexa webhook %s -> %s", hook.id, url)
            else:
                hook, duplicates = hooks[0], hooks[1:]
                hook = await self.client.update_webhook(hook.id, url=url, events=events, secret=secret, is_active=True)
                for duplicate in duplicates:
                    await self.client.delete_webhook(duplicate.id)
                removed = f" ({len(duplicates)} duplicate(s) removed)" if duplicates else ""
                log.info("webcall: DialNexa webhook %s -> %s is up to date%s", hook.id, url, removed)
            self.url = url
            return hook.id
