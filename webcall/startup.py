"""What the plugin checks with DialNexa as it starts, and what it says when something cannot work.

One request (the account's webhooks) shows that DialNexa answers at the base URL and accepts the key; then each agent
is looked up and the plugin's webhook subscription registered. What cannot work is said in one sentence with the fix:
a key DialNexa refuses, a DialNexa that cannot be reached, a webhook DialNexa will not register. Where the start-up
refuses (``python -m webcall serve``, ``register-webhook``, and a plugin with ``strict_agents``) that sentence is a
:class:`ConfigError`; otherwise it is logged once and the plugin runs on. A slow network is not a refusal: the first
request is tried :data:`STARTUP_TRIES` times over about ten seconds before DialNexa counts as unreachable.

What still works without a public URL or webhook secrets (calls start; DialNexa just cannot send the site its call
events) is said once, with how to turn it on.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Sequence

from .catalog import AgentCatalog
from .config import WebCallConfig
from .dialnexa import DialNexaClient
from .errors import (
    ConfigError,
    DialNexaAPIError,
    DialNexaAuthError,
    DialNexaError,
    DialNexaRateLimited,
    DialNexaServerError,
    DialNexaTransportError,
)
from .subscription import ManagedSubscription
from .upstream import Upstream

log = logging.getLogger("webcall")

STARTUP_TRIES = 3
STARTUP_RETRY_DELAYS = (2.0, 6.0)
"""Seconds between the tries of the first request at start-up (with the client's own quick retries, about 10 s)."""


def key_refused(err: DialNexaAuthError) -> tuple[str, str]:
    """What a 401 or 403 from DialNexa means for the key, in DialNexa's own words, and the fix."""
    if err.status_code == 403:
        return (
            f"DialNexa denied the key access (403: {err.message})",
            "use a key of the workspace that owns the agents, or ask DialNexa to give this key API access",
        )
    return (
        f"DialNexa refused the key ({err.status_code}: {err.message})",
        "set DIALNEXA_API_KEY to a key of this workspace, as keyID:secret from DialNexa's dashboard",
    )


def not_dialnexa(err: DialNexaAPIError, base_url: str) -> tuple[str, str]:
    """What an unexpected answer to the first request means: the base URL is not DialNexa's API."""
    return (
        f"{base_url} answered {err.status_code} to {err.method} {err.path} ({err.message})",
        "set DIALNEXA_BASE_URL to DialNexa's API, https://api.dialnexa.com/v1",
    )


class DialNexaUnreachable(ConfigError):
    """DialNexa did not answer at start-up (the network, its outage, its rate limit): refused where start-up must
    refuse, otherwise a warning, since the plugin works once DialNexa answers."""


async def reach_account(
    client: DialNexaClient,
    *,
    tries: int = 1,
    delays: Sequence[float] | None = None,
    sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
) -> None:
    """Ask DialNexa for the account's webhooks: it answers at the base URL and accepts the key. An unreachable or
    failing DialNexa is asked ``tries`` times, ``delays`` apart (:data:`STARTUP_RETRY_DELAYS`). Raises
    :class:`ConfigError` with one sentence."""
    delays = STARTUP_RETRY_DELAYS if delays is None else delays
    for attempt in range(1, tries + 1):
        try:
            await client.list_webhooks(limit=1)
            return
        except DialNexaAuthError as err:
            detail, fix = key_refused(err)
            raise ConfigError(f"{detail}: {fix}.") from None
        except (DialNexaTransportError, DialNexaServerError, DialNexaRateLimited) as err:
            failure: DialNexaError = err
        except DialNexaAPIError as err:
            detail, fix = not_dialnexa(err, client.base_url)
            raise ConfigError(f"{detail}: {fix}.") from None
        if attempt < tries:
            delay = delays[min(attempt, len(delays)) - 1]
            log.warning(
                "webcall: DialNexa did not answer (%s); trying again in %.0f s (%d of %d tries)",
                failure.message,
                delay,
                attempt + 1,
                tries,
            )
            await sleep(delay)
    tried = f"in {tries} tries over about {round(sum(delays[: tries - 1]) + 1)} s" if tries > 1 else "at start-up"
    raise DialNexaUnreachable(
        f"DialNexa at {client.base_url} could not be reached {tried} ({failure.message}): check DIALNEXA_BASE_URL "
        "and the network, then start again."
    )


def webhooks_off(config: WebCallConfig, *, has_secrets: bool) -> str:
    """The one warning for a site that registers no webhook: what does not work, and how to turn it on."""
    fixes = {
        "WEBCALL_PUBLIC_URL": "WEBCALL_PUBLIC_URL to the site's public https origin",
        "WEBCALL_WEBHOOK_SECRETS": "WEBCALL_WEBHOOK_SECRETS to a long random secret "
        "(python -c 'import secrets; print(secrets.token_urlsafe(32))')",
    }
    given = {"WEBCALL_PUBLIC_URL": bool(config.public_url), "WEBCALL_WEBHOOK_SECRETS": has_secrets}
    missing = [name for name, present in given.items() if not present]
    unset = f"{' and '.join(missing)} {'is' if len(missing) == 1 else 'are'} not set"
    return (
        f"no DialNexa webhook is registered ({unset}), so DialNexa sends this site no call events (call.started, "
        "call.ended, transfers): your callbacks and the widget learn of them late or not at all. "
        f"Set {' and '.join(fixes[name] for name in missing)}, and the plugin registers its webhook at start-up"
    )


async def start_with_dialnexa(
    config: WebCallConfig,
    *,
    upstream: Upstream,
    client: DialNexaClient,
    catalog: AgentCatalog,
    subscription: ManagedSubscription,
    webhook_path: str,
    refuse: bool,
) -> None:
    """The start-up checks: the account, the agents, the webhook subscription and each agent's binding to it.
    ``refuse``: what cannot work raises :class:`ConfigError` (one sentence); otherwise it is logged once."""
    if not upstream.learns_public_url:  # the embedded emulator is this process: nothing to reach
        try:
            await reach_account(client, tries=STARTUP_TRIES if refuse else 1)
        except ConfigError as err:
            if refuse:
                raise
            log.log(logging.WARNING if isinstance(err, DialNexaUnreachable) else logging.ERROR, "webcall: %s", err)
            return
    await catalog.check(client, strict=config.strict_agents)
    if upstream.learns_public_url:
        return  # registered once the site's address is known, from its first request
    if not config.public_url or not subscription.secrets:
        log.warning("webcall: %s", webhooks_off(config, has_secrets=bool(subscription.secrets)))
        return
    url = config.public_url.rstrip("/") + webhook_path
    try:
        subscription_id = await subscription.ensure(url)
    except DialNexaError as err:
        sentence = (
            f"DialNexa did not register the webhook {url} ({err}): check WEBCALL_PUBLIC_URL (DialNexa wants an "
            "https URL of at most 150 characters) and WEBCALL_WEBHOOK_EVENTS, or run python -m webcall doctor"
        )
        if refuse:
            raise ConfigError(sentence + ".") from None
        log.error("webcall: %s", sentence)
        return
    catalog.check_bindings(subscription_id, strict=config.strict_agents)
