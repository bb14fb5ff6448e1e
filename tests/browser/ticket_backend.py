"""A host's own backend, as a separate process: it signs call tickets with the README's Python snippet.

``python -m tests.browser.ticket_backend PORT``: ``GET /ticket`` answers ``{"ticket": "..."}`` for the visitor
"user-grace" named Grace, with CORS for the page's origin (``PAGE_ORIGIN``); ``WEBCALL_TICKET_SECRETS`` is the secret
shared with the webcall service.
"""

from __future__ import annotations

import os
import sys
from typing import Any

from aiohttp import web

from tests.quickstart import readme_block


def main() -> None:
    snippet: dict[str, Any] = {}
    exec(compile(readme_block("tickets:python"), "README.md", "exec"), snippet)
    call_ticket = snippet["call_ticket"]
    page_origin = os.environ["PAGE_ORIGIN"]

    async def ticket(request: web.Request) -> web.Response:
        cors = {"Access-Control-Allow-Origin": page_origin, "Cache-Control": "no-store"}
        return web.json_response({"ticket": call_ticket("user-grace", "Grace")}, headers=cors)

    async def ready(request: web.Request) -> web.Response:
        return web.Response(text="ok")

    app = web.Application()
    app.router.add_get("/ticket", ticket)
    app.router.add_get("/healthz", ready)
    web.run_app(app, host="127.0.0.1", port=int(sys.argv[1]), print=None, shutdown_timeout=1)


if __name__ == "__main__":
    main()
