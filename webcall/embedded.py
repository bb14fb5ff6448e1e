"""The emulator as the plugin's upstream: started in the host's event loop when no DialNexa key is configured.

The adapter between the two sides: it imports the emulator (the ``emulator`` extra) and describes it in the plugin's
terms (:class:`Upstream`, :class:`Agent`); the emulator knows nothing of it. Only :func:`webcall.upstream.open_upstream`
imports this module, and only when it needs it, so the plugin runs without the extra.
"""

from __future__ import annotations

import contextlib
import logging
import secrets
from collections.abc import AsyncIterator

from .config import Agent
from .emulator.config import EmulatorConfig
from .emulator.server import EmulatorServer
from .upstream import Upstream

log = logging.getLogger("webcall")

VISITOR_VARIABLES = frozenset({"name", "company"})
SEEDED_AGENTS = {
    "sales": Agent(id="agent_sales", visitor_variables=VISITOR_VARIABLES, label="Sales"),
    "support": Agent(id="agent_support", visitor_variables=VISITOR_VARIABLES, label="Support"),
    "collections": Agent(id="agent_collections", visitor_variables=VISITOR_VARIABLES, label="Accounts"),
}
"""The aliases offered for the emulator's seeded agents when the host configured none."""


@contextlib.asynccontextmanager
async def embedded_emulator(*, port: int = 0) -> AsyncIterator[Upstream]:
    """Run a fresh emulator on loopback, with a random key and webhook secret, and describe it as an upstream."""
    api_key = f"emu_{secrets.token_hex(8)}:{secrets.token_urlsafe(24)}"
    config = EmulatorConfig(api_keys=frozenset({api_key}))
    async with EmulatorServer(config, port=port) as emulator:
        log.warning(
            "webcall: DIALNEXA_API_KEY is not set; calls go to the local DialNexa emulator at %s", emulator.base_url
        )
        yield Upstream(
            name="emulator",
            api_key=api_key,
            base_url=emulator.base_url,
            media_origin=emulator.origin,
            agents=SEEDED_AGENTS,
            webhook_secret=secrets.token_urlsafe(32),
            learns_public_url=True,
            max_calls=config.max_media_sessions,
        )
