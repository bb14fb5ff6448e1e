"""The plugin's one webhook subscription at DialNexa: found by URL, created or repaired, never duplicated.

DialNexa refuses a whole registration for one subscription name it does not accept. The plugin then registers the
names it does accept and reports the ones refused (:attr:`ManagedSubscription.refused`), rather than register nothing.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence

from .dialnexa import DialNexaClient, WebhookRecord
from .dialnexa.facts import DOCUMENTED_SUBSCRIPTION_EVENTS, SHOWN_SUBSCRIPTION_EVENTS
from .errors import ConfigError, DialNexaBadRequest

__all__ = ["DOCUMENTED_SUBSCRIPTION_EVENTS", "SHOWN_SUBSCRIPTION_EVENTS", "ManagedSubscription"]

log = logging.getLogger("webcall")


class ManagedSubscription:
    """The plugin's own webhook subscription, which it manages: keeps exactly one DialNexa webhook subscription
    pointed at the plugin's ``/webhooks`` route. What DialNexa says of a subscription is a
    :class:`~webcall.dialnexa.models.WebhookRecord`."""

    def __init__(self, client: DialNexaClient, secrets: Sequence[str], events: Sequence[str]) -> None:
        self.client = client
        self.secrets = tuple(secrets)
        self.events = tuple(events)
        """The subscription names asked for (``webhook_events``)."""
        self.refused: tuple[str, ...] = ()
        """The names DialNexa refused at the last registration: the subscription was registered without them."""
        self.url: str | None = None
        """Where the subscription points, once registered by this process."""
        self.id: str | None = None
        """The subscription's id at DialNexa, once registered by this process."""
        self._lock = asyncio.Lock()

    async def ensure(self, url: str) -> str:
        """Create the subscription for ``url``, or update the one found (active, events, current secret) and delete
        duplicates. Returns the subscription id. Names DialNexa refuses are left out and kept in :attr:`refused`."""
        if not self.secrets:
            raise ConfigError("Set webhook_secrets (WEBCALL_WEBHOOK_SECRETS) before registering a webhook.")
        async with self._lock:
            hooks = [hook for hook in await self.client.list_webhooks() if hook.url == url]
            duplicates = hooks[1:]
            hook, refused = await self._register(url, hooks[0] if hooks else None, list(self.events))
            for duplicate in duplicates:
                await self.client.delete_webhook(duplicate.id)
            removed = f" ({len(duplicates)} duplicate(s) removed)" if duplicates else ""
            done = "registered" if not hooks else "brought up to date"
            log.info("webcall: DialNexa webhook %s -> %s %s%s", hook.id, url, done, removed)
            if refused:
                log.warning(
                    "webcall: DialNexa refused the subscription name(s) %s, so webhook %s is registered with %s only: "
                    "remove %s from WEBCALL_WEBHOOK_EVENTS (DialNexa's documented names are %s)",
                    ", ".join(refused),
                    hook.id,
                    ", ".join(hook.events),
                    "it" if len(refused) == 1 else "them",
                    " and ".join(SHOWN_SUBSCRIPTION_EVENTS),
                )
            self.refused = tuple(refused)
            self.url, self.id = url, hook.id
            return hook.id

    async def _register(
        self, url: str, existing: WebhookRecord | None, events: list[str]
    ) -> tuple[WebhookRecord, list[str]]:
        """Create or update the subscription with ``events``. When DialNexa refuses the request, try again with the
        names its OpenAPI shows; if that is accepted, the refusal was about names: add the others back one at a time,
        keeping those DialNexa accepts. Returns the subscription and the names it refused."""
        try:
            return await self._save(url, existing, events), []
        except DialNexaBadRequest as refusal:
            known = [name for name in events if name in SHOWN_SUBSCRIPTION_EVENTS]
            if not known or len(known) == len(events):
                raise  # nothing left to try without: the refusal is not about the names
            try:
                hook = await self._save(url, existing, known)
            except DialNexaBadRequest:
                raise refusal from None
        accepted, refused = list(known), []
        for name in events:
            if name in accepted:
                continue
            try:
                hook = await self.client.update_webhook(hook.id, events=[*accepted, name])
            except DialNexaBadRequest:
                refused.append(name)
            else:
                accepted.append(name)
        return hook, refused

    async def _save(self, url: str, existing: WebhookRecord | None, events: list[str]) -> WebhookRecord:
        secret = self.secrets[0]
        if existing is None:
            return await self.client.create_webhook(url=url, events=events, secret=secret)
        return await self.client.update_webhook(existing.id, url=url, events=events, secret=secret, is_active=True)
