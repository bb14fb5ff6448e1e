"""Server processes for the benchmarks: the full plugin in a host app, or a bare handler doing the same upstream calls
(create the web call, hand DialNexa the browser's offer over WHIP).

python -m bench.servers plugin --port 8801 --base-url http://127.0.0.1:8700/v1 --api-key K [--store redis://…]
    [--redis-parser python]    (redis-py's own reply parser, as if hiredis were not installed)
python -m bench.servers bare   --port 8802 --base-url http://127.0.0.1:8700/v1 --api-key K [--client httpx]
"""

from __future__ import annotations

import argparse
import json
import resource
import sys
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import aiohttp
import httpx
from aiohttp import web

import webcall

ORIGIN = "https://bench.example"
SESSION_SECRET = "bench-session-secret-0123456789-abcdef"
WEBHOOK_SECRET = "bench-webhook-secret-0123456789"


def plugin_app(args: argparse.Namespace) -> web.Application:
    app = web.Application()
    config = webcall.WebCallConfig(
        api_key=args.api_key,
        base_url=args.base_url,
        agents={"sales": webcall.Agent(id="agent_sales", visitor_variables=frozenset({"name", "company"}))},
        allowed_origins=(ORIGIN,),
        session_secrets=(SESSION_SECRET,),
        webhook_secrets=(WEBHOOK_SECRET,),
        rate_limit=10**9,
        identity_rate_limit=10**9,
        global_rate_limit=10**9,
        max_concurrent_calls=10**9,
        store=args.store,
        upstream_timeout=30,
        upstream_deadline=60,
    )
    handle = webcall.setup(app, config)

    async def noop(event: webcall.events.CallEvent) -> None:  # a host callback that does nothing
        return None

    handle.on_call_event.append(noop)
    return app


def bare_app(args: argparse.Namespace) -> web.Application:
    """The floor: parse the JSON body, make the same two upstream calls, answer JSON; with aiohttp's client (the
    plugin's connection pool) or httpx's own (what a handler written with httpx gets)."""
    app = web.Application()
    app.cleanup_ctx.append(httpx_client_lifetime(args) if args.client == "httpx" else aiohttp_client_lifetime(args))

    async def sessions(request: web.Request) -> web.Response:
        body = await request.json()
        call_id, answer = await request.app[BARE_UPSTREAM](body)
        return web.json_response({"call_id": call_id, "answer": answer}, status=201)

    app.router.add_post("/webcall/sessions", sessions)
    return app


Upstream = Callable[[dict[str, Any]], Awaitable[tuple[str, str]]]
"""Create the web call for a mint request's body, hand DialNexa its offer; (call id, SDP answer)."""
BARE_UPSTREAM: web.AppKey[Upstream] = web.AppKey("bench.upstream")


def httpx_client_lifetime(args: argparse.Namespace) -> Callable[[web.Application], AsyncIterator[None]]:
    async def lifetime(app: web.Application) -> AsyncIterator[None]:
        async with httpx.AsyncClient(
            base_url=args.base_url,
            headers={"Authorization": f"Bearer {args.api_key}"},
            timeout=30,
            limits=httpx.Limits(max_connections=200, max_keepalive_connections=200),
        ) as http:

            async def upstream(body: dict[str, Any]) -> tuple[str, str]:
                created = await http.post("/web-calls", json=web_call_request(body))
                call = json.loads(created.content)
                whip = await http.post(
                    call["media"]["whip_url"], content=body["offer"].encode(), headers=whip_headers(call)
                )
                return call["id"], whip.text

            app[BARE_UPSTREAM] = upstream
            yield

    return lifetime


def aiohttp_client_lifetime(args: argparse.Namespace) -> Callable[[web.Application], AsyncIterator[None]]:
    async def lifetime(app: web.Application) -> AsyncIterator[None]:
        async with aiohttp.ClientSession(
            headers={"Authorization": f"Bearer {args.api_key}"},
            timeout=aiohttp.ClientTimeout(total=30),
            connector=aiohttp.TCPConnector(limit=200),
        ) as http:

            async def upstream(body: dict[str, Any]) -> tuple[str, str]:
                async with http.post(f"{args.base_url}/web-calls", json=web_call_request(body)) as created:
                    call = json.loads(await created.read())
                async with http.post(
                    call["media"]["whip_url"], data=body["offer"].encode(), headers=whip_headers(call)
                ) as whip:
                    return call["id"], await whip.text()

            app[BARE_UPSTREAM] = upstream
            yield

    return lifetime


def web_call_request(body: dict[str, Any]) -> dict[str, Any]:
    return {"agent_id": "agent_sales", "metadata": body.get("variables") or {}}


def whip_headers(call: dict[str, Any]) -> dict[str, str]:
    return {"Content-Type": "application/sdp", "Authorization": f"Bearer {call['access_token']}"}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("kind", choices=["plugin", "bare"])
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--base-url", required=True)
    parser.add_argument("--api-key", required=True)
    parser.add_argument("--store", default="memory")
    parser.add_argument("--redis-parser", choices=["default", "python"], default="default")
    parser.add_argument("--client", choices=["aiohttp", "httpx"], default="aiohttp", help="bare: the upstream client")
    args = parser.parse_args()
    if args.redis_parser == "python":  # before redis-py is first imported: it picks its parser then
        sys.modules["hiredis"] = None  # type: ignore[assignment]
    _soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, 65536), hard))
    app = plugin_app(args) if args.kind == "plugin" else bare_app(args)
    web.run_app(app, host="127.0.0.1", port=args.port, print=None, access_log=None, shutdown_timeout=2)


if __name__ == "__main__":
    main()
