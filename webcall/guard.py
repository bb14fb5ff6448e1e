"""The checks in front of every billable route: origin, CORS, content type, body size, client IP, rate limits."""

from __future__ import annotations

import ipaddress
import json
import re
from collections.abc import Mapping
from typing import Any

from aiohttp import web

from .config import WebCallConfig
from .errors import HTTPProblem
from .store import Store

CONTROL_CHARACTERS = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029]")  # C0, DEL, C1, line/paragraph separators
TEMPLATE_MARKERS = re.compile(r"\{\{|\}\}|\{%|%\}")


def unsafe_value(value: str) -> bool:
    """Whether a ``{{variable}}`` value holds control characters or template markers (never sent to an agent)."""
    return bool(CONTROL_CHARACTERS.search(value) or TEMPLATE_MARKERS.search(value))


PREFLIGHT_MAX_AGE = "600"


def request_origin(request: web.Request) -> str | None:
    origin = request.headers.get("Origin")
    if not origin or origin == "null":
        return None
    return origin.strip().lower().rstrip("/")


def configured_origin(config: WebCallConfig) -> str | None:
    """The origin of ``public_url``, when one is configured."""
    if not config.public_url:
        return None
    scheme, _, rest = config.public_url.rstrip("/").partition("://")
    return f"{scheme}://{rest.split('/', 1)[0]}".lower()


def own_origin(request: web.Request, config: WebCallConfig) -> str:
    """The origin a same-origin page has: the configured public URL's, else the one this request was sent to.

    Only for decisions about this one request (is its ``Origin`` our own?): ``Host`` is whatever the sender wrote,
    so nothing that outlives the request may be derived from it (see :func:`public_origin`)."""
    return configured_origin(config) or f"{request.scheme}://{request.host}".lower()


def bound_origin(request: web.Request) -> str | None:
    """The origin of the socket this request arrived on (the address the server is bound to), never ``Host``;
    None where the socket has no IP address (a Unix socket)."""
    transport = request.transport
    sockname = transport.get_extra_info("sockname") if transport is not None else None
    if not isinstance(sockname, tuple) or len(sockname) < 2:
        return None
    host, port = str(sockname[0]), int(sockname[1])
    if ipaddress.ip_address(host).version == 6:
        host = f"[{host}]"
    return f"{request.scheme}://{host}:{port}"


def public_origin(request: web.Request, config: WebCallConfig) -> str | None:
    """Where this site can be reached, for what outlives a request (a webhook URL, an absolute link in a page): the
    configured public URL's origin, else the bound address. None when neither is known."""
    return configured_origin(config) or bound_origin(request)


def origin_allowed(request: web.Request, config: WebCallConfig) -> bool:
    """Exact allowlist; with no allowlist configured, only the plugin's own origin is allowed."""
    origin = request_origin(request)
    if origin is None:
        return False
    if config.allowed_origins:
        return origin in config.allowed_origins
    return origin == own_origin(request, config)


def check_origin(request: web.Request, config: WebCallConfig) -> str:
    origin = request_origin(request)
    if origin is None:
        raise HTTPProblem(403, "origin_not_allowed", "This request has no Origin header; calls start from a web page.")
    if not origin_allowed(request, config):
        raise HTTPProblem(403, "origin_not_allowed", "This website is not allowed to start calls.")
    return origin


def cors_headers(request: web.Request, config: WebCallConfig) -> dict[str, str]:
    """CORS headers for an allowed cross-origin caller; none for anyone else."""
    origin = request_origin(request)
    if origin is None or not origin_allowed(request, config) or origin == own_origin(request, config):
        return {}
    exposed = "Retry-After, Location, ETag, Allow, Link"
    return {"Access-Control-Allow-Origin": origin, "Access-Control-Expose-Headers": exposed, "Vary": "Origin"}


def preflight(request: web.Request, config: WebCallConfig, methods: str) -> web.Response:
    if not origin_allowed(request, config):
        raise HTTPProblem(403, "origin_not_allowed", "This website is not allowed to call this service.")
    headers = {
        "Access-Control-Allow-Origin": request_origin(request) or "",
        "Access-Control-Allow-Methods": methods,
        "Access-Control-Allow-Headers": "content-type, authorization, if-match",
        "Access-Control-Max-Age": PREFLIGHT_MAX_AGE,
        "Vary": "Origin",
    }
    return web.Response(status=204, headers=headers)


async def read_body(request: web.Request, max_bytes: int) -> bytes:
    """The whole request body, however many pieces it arrives in; 413 as soon as it exceeds ``max_bytes``."""
    too_large = HTTPProblem(413, "payload_too_large", f"The request body is larger than {max_bytes} bytes.")
    if request.content_length is not None and request.content_length > max_bytes:
        raise too_large
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.content.iter_any():
        size += len(chunk)
        if size > max_bytes:
            raise too_large
        chunks.append(chunk)
    return b"".join(chunks)


async def read_json(request: web.Request, max_bytes: int) -> dict[str, Any]:
    """The request's JSON object: 415 unless ``application/json``, 413 when too big, 400 when not an object."""
    if request.content_type != "application/json":
        raise HTTPProblem(
            415, "unsupported_media_type", "Send the request body as JSON (Content-Type: application/json)."
        )
    raw = await read_body(request, max_bytes)
    if not raw.strip():
        return {}
    try:
        body = json.loads(raw)
    except (ValueError, RecursionError):
        raise HTTPProblem(400, "invalid_json", "The request body is not valid JSON.") from None
    if not isinstance(body, dict):
        raise HTTPProblem(400, "invalid_json", "The request body must be a JSON object.")
    return body


def client_ip(request: web.Request, trusted_proxies: int) -> str:
    """The visitor's IP: the peer address, or with ``trusted_proxies`` hops, the entry they appended to
    ``X-Forwarded-For``. A forwarded header is ignored when no proxy is trusted (it is trivially forged)."""
    peer = request.remote or "unknown"
    if trusted_proxies <= 0:
        return peer
    hops = [h.strip() for h in ",".join(request.headers.getall("X-Forwarded-For", [])).split(",") if h.strip()]
    if len(hops) < trusted_proxies:
        return peer
    candidate = hops[-trusted_proxies]
    try:
        return str(ipaddress.ip_address(candidate))
    except ValueError:
        return peer


IPV6_GROUP_PREFIX = 64
"""IPv6 visitors are counted per /64: one subscriber or host usually holds a whole /64 (RFC 6177), so counting its
2^64 addresses one by one would give a single visitor endless limits."""


def address_key(ip: str) -> str:
    """The key a visitor's address is counted under, by every per-address limit (requests and connections): an IPv4
    address as it is (an IPv4-mapped IPv6 address too), an IPv6 address by its /64 network (a link-local one without
    its ``%zone``); anything unreadable as it is."""
    try:
        address = ipaddress.ip_address(ip.split("%", 1)[0])
    except ValueError:
        return ip
    if isinstance(address, ipaddress.IPv6Address):
        if address.ipv4_mapped is not None:
            return str(address.ipv4_mapped)
        return str(ipaddress.IPv6Network((address, IPV6_GROUP_PREFIX), strict=False))
    return str(address)


async def rate_limit(store: Store, key: str, limit: int, window: float, *, who: str) -> None:
    wait = await store.hit(key, limit, window)
    if wait is not None:
        raise rate_limited(who, wait)


def rate_limited(who: str, wait: float) -> HTTPProblem:
    return HTTPProblem(
        429, "rate_limited", f"Too many calls from {who}; try again in {max(1, round(wait))} s.", retry_after=wait
    )


def visitor_variables(
    supplied: Any, allowed: frozenset[str], host: Mapping[str, Any], max_length: int
) -> dict[str, str]:
    """Visitor values for the keys the host allows: short plain strings, never a template, never a host key."""
    if supplied is None:
        return {}
    if not isinstance(supplied, dict):
        raise HTTPProblem(400, "invalid_variables", "variables must be a JSON object of strings.")
    if len(supplied) > 32:
        raise HTTPProblem(400, "invalid_variables", "Too many variables.")
    accepted: dict[str, str] = {}
    for key, value in supplied.items():
        if key not in allowed:
            raise HTTPProblem(400, "invalid_variables", f"The variable {key[:64]!r} cannot be set from the page.")
        if key in host:
            continue  # the host's value wins, silently
        if not isinstance(value, str):
            raise HTTPProblem(400, "invalid_variables", f"The variable {key!r} must be a string.")
        if len(value) > max_length:
            raise HTTPProblem(400, "invalid_variables", f"The variable {key!r} is longer than {max_length} characters.")
        if unsafe_value(value):
            raise HTTPProblem(
                400, "invalid_variables", f"The variable {key!r} contains characters that are not allowed."
            )
        accepted[key] = value.strip()
    return accepted
