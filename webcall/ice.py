"""ICE servers for the visitor's browser: STUN and TURN, so that a call connects on networks that drop UDP.

Three sources, merged in this order into one list of ``RTCIceServer`` dictionaries:

1. ``ice_servers`` (``WEBCALL_ICE_SERVERS``): a fixed list, for STUN or a TURN server with static credentials.
2. ``turn_urls`` with ``turn_secret`` (``WEBCALL_TURN_URLS``, ``WEBCALL_TURN_SECRET``, ``WEBCALL_TURN_TTL``):
   short-lived credentials by the TURN REST API convention, which coturn implements as ``use-auth-secret``. The
   username is ``<expiry>:<opaque id>`` and the credential is base64(HMAC-SHA1(secret, username)); the TURN server
   checks both with the same secret, so the secret itself never leaves this process.
3. The host's ``ice_servers_hook(request)``: what a hosted TURN provider's API returned for this visitor.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

from aiohttp import web

from .errors import ConfigError

IceServer = dict[str, Any]
"""One ``RTCIceServer``: ``{"urls": [...], "username": ..., "credential": ...}``."""

IceServersHook = Callable[[web.Request], Awaitable[Sequence[Mapping[str, Any]]] | Sequence[Mapping[str, Any]]]
"""``ice_servers_hook(request)`` returns ``RTCIceServer`` dictionaries for this visitor (e.g. from a hosted TURN
provider's API); they are added after the configured ones."""

ICE_URL_SCHEMES = ("stun", "stuns", "turn", "turns")
TURN_URL_SCHEMES = ("turn", "turns")
MAX_ICE_SERVERS = 8
"""More ICE servers only slow gathering down (each TURN URL is an allocation); browsers warn above five."""
MAX_URL_LENGTH = 512
MAX_CREDENTIAL_LENGTH = 512
DEFAULT_TURN_TTL = 600
MIN_TURN_TTL = 60
MAX_TURN_TTL = 86_400


def turn_rest_credentials(secret: str, *, ttl: int, now: float | None = None) -> tuple[str, str]:
    """A username and credential that a TURN server with ``use-auth-secret`` and this ``secret`` accepts for ``ttl``
    seconds: username ``<expiry>:<random id>``, credential base64(HMAC-SHA1(secret, username))."""
    expiry = int(time.time() if now is None else now) + ttl
    username = f"{expiry}:{secrets.token_urlsafe(9)}"
    digest = hmac.new(secret.encode(), username.encode(), hashlib.sha1).digest()
    return username, base64.b64encode(digest).decode("ascii")


def check_ice_url(url: object, *, where: str, schemes: tuple[str, ...] = ICE_URL_SCHEMES) -> str:
    """``url`` if it is a ``stun:``/``stuns:``/``turn:``/``turns:`` URL with a host (RFC 7064, RFC 7065)."""
    if not isinstance(url, str) or not url or len(url) > MAX_URL_LENGTH or not url.isprintable() or " " in url:
        raise ConfigError(f"{where}: {url!r} is not an ICE server URL such as 'turns:turn.example.com:443'.")
    scheme, _, rest = url.partition(":")
    if scheme.lower() not in schemes or not rest or rest.startswith("//"):
        wanted = "/".join(f"{s}:" for s in schemes)
        raise ConfigError(
            f"{where}: {url!r} must start with {wanted} and name a host, e.g. 'turn:turn.example.com:3478'."
        )
    host = urlsplit("//" + rest.split("?", 1)[0]).hostname
    if not host:
        raise ConfigError(f"{where}: {url!r} names no host.")
    return url


def check_ice_server(server: object, *, where: str) -> IceServer:
    """One ``RTCIceServer`` dictionary, checked and copied: ``urls`` (a URL or a list of them), and for TURN a
    ``username`` and ``credential``. Unknown keys are refused, so a typo is found at start-up, not by a visitor."""
    if not isinstance(server, Mapping):
        raise ConfigError(f'{where}: each ICE server must be an object like {{"urls": "stun:stun.example.com"}}.')
    unknown = set(server) - {"urls", "username", "credential"}
    if unknown:
        raise ConfigError(
            f"{where}: unknown key(s) {', '.join(sorted(map(str, unknown)))}; use urls, username, credential."
        )
    urls = server.get("urls")
    url_list = [urls] if isinstance(urls, str) else urls
    if not isinstance(url_list, list) or not url_list or len(url_list) > MAX_ICE_SERVERS:
        raise ConfigError(f"{where}: urls must be a URL or a list of 1-{MAX_ICE_SERVERS} URLs.")
    checked: IceServer = {"urls": [check_ice_url(url, where=where) for url in url_list]}
    needs_credentials = any(url.split(":", 1)[0].lower() in TURN_URL_SCHEMES for url in checked["urls"])
    for key in ("username", "credential"):
        value = server.get(key)
        if value is None:
            if needs_credentials:
                raise ConfigError(f"{where}: a TURN server needs a {key}.")
            continue
        if not isinstance(value, str) or not value or len(value) > MAX_CREDENTIAL_LENGTH or not value.isprintable():
            raise ConfigError(
                f"{where}: {key} must be a printable string of at most {MAX_CREDENTIAL_LENGTH} characters."
            )
        checked[key] = value
    return checked


@dataclass(frozen=True)
class TurnRest:
    """TURN URLs whose credentials are minted per visitor from a secret shared with the TURN server."""

    urls: tuple[str, ...]
    secret: str = field(repr=False)
    ttl: int = DEFAULT_TURN_TTL

    def __post_init__(self) -> None:
        for url in self.urls:
            check_ice_url(url, where="turn_urls (WEBCALL_TURN_URLS)", schemes=TURN_URL_SCHEMES)
        if len(self.secret.encode()) < 16:
            raise ConfigError(
                "turn_secret (WEBCALL_TURN_SECRET) must be at least 16 bytes: coturn's static-auth-secret."
            )
        if not isinstance(self.ttl, int) or not MIN_TURN_TTL <= self.ttl <= MAX_TURN_TTL:
            raise ConfigError(f"turn_ttl (WEBCALL_TURN_TTL) must be {MIN_TURN_TTL}-{MAX_TURN_TTL} seconds.")

    def server(self, *, now: float | None = None) -> IceServer:
        """One ``RTCIceServer`` with fresh credentials for every URL."""
        username, credential = turn_rest_credentials(self.secret, ttl=self.ttl, now=now)
        return {"urls": list(self.urls), "username": username, "credential": credential}


def usable_servers(servers: Sequence[object]) -> list[IceServer]:
    """DialNexa's per-call ICE servers, checked like the configuration's; what is not a well-formed ICE server is left
    out (it comes from upstream, so it is not a reason to refuse the call)."""
    usable: list[IceServer] = []
    for server in servers[:MAX_ICE_SERVERS]:
        try:
            usable.append(check_ice_server(server, where="DialNexa's ice_servers"))
        except ConfigError:
            continue
    return usable


def link_header_values(servers: Sequence[IceServer]) -> list[str]:
    """Checked ICE servers (:func:`usable_servers`) as WHIP ``Link`` header values (RFC 9725 §4.6), one per URL:
    ``<turn:turn.example.net?transport=udp>; rel="ice-server"; username="u"; credential="p";
    credential-type="password"``. A value that cannot be written in a header is left out."""
    values: list[str] = []
    for checked in servers:
        parameters = "".join(
            f'; {key}="{checked[key]}"'
            for key in ("username", "credential")
            if key in checked and '"' not in checked[key] and "\\" not in checked[key]
        )
        if "credential" in checked:
            parameters += '; credential-type="password"'
        values.extend(f'<{url}>; rel="ice-server"{parameters}' for url in checked["urls"] if ">" not in url)
    return values


def servers_for_visitor(
    fixed: Sequence[Mapping[str, Any]], turn: TurnRest | None, hooked: object = None
) -> list[IceServer]:
    """The ICE servers for one visitor: the configured ones, fresh TURN REST credentials, then what the host's
    ``ice_servers_hook`` returned (checked like the configuration; :class:`ConfigError` says what is wrong)."""
    servers = [dict(server) for server in fixed]
    if turn is not None:
        servers.append(turn.server())
    if hooked is not None:
        if not isinstance(hooked, Sequence) or isinstance(hooked, str | Mapping):
            raise ConfigError("ice_servers_hook must return a list of RTCIceServer dictionaries.")
        servers.extend(check_ice_server(server, where="ice_servers_hook") for server in hooked)
    return servers[:MAX_ICE_SERVERS]
