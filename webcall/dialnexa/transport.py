"""The HTTP under the DialNexa client: requests sent through one ``aiohttp.ClientSession``, failures mapped into
:class:`webcall.errors.DialNexaTransportError` here and nowhere else.

aiohttp, which the plugin runs on anyway, keeps idle connections in a queue per host, so taking or returning one costs
the same at any pool size (httpx's default pool re-scans every open connection whenever a request starts or ends: with
the hundreds of connections a burst of visitors opens, milliseconds of CPU per request).
"""

from __future__ import annotations

import base64
import json
import logging
import os
import urllib.parse
import urllib.request
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import aiohttp
from multidict import CIMultiDictProxy
from yarl import URL

from ..errors import DialNexaConnectError, DialNexaTimeout, DialNexaTransportError

log = logging.getLogger("webcall.dialnexa")

DEFAULT_MAX_CONNECTIONS = 200
"""Open connections to DialNexa at most; a burst beyond it waits for one (within the connect timeout)."""

KEEPALIVE_SECONDS = 5.0
"""An idle connection is closed after this long: shorter than most servers keep one open, so a
request is rarely sent on a connection the server is closing at that moment."""

MAX_REMEMBERED_ORIGINS = 64
"""Origins whose proxy decision is kept (DialNexa's API and its media hosts)."""


@dataclass(frozen=True)
class ProxyRoute:
    """How requests to one origin go through a forward proxy."""

    url: str
    connect_headers: dict[str, str] | None = None
    """For the ``CONNECT`` that tunnels an ``https://`` origin through the proxy (its credentials)."""
    request_headers: tuple[tuple[str, str], ...] = ()
    """Added to each plain ``http://`` request, which the proxy forwards itself (its credentials)."""


class EnvironmentProxies:
    """The forward proxy ``HTTP_PROXY``/``HTTPS_PROXY`` name for a URL, unless ``NO_PROXY`` names its host: read from
    the environment once, when the client is made, and decided once per origin.

    aiohttp's own ``trust_env`` would read the environment again, and look for a ``.netrc`` file, on every request,
    in a thread each: more CPU than the rest of the request. Credentials in a proxy's URL are sent to the proxy as
    ``Proxy-Authorization``. An ``https://`` proxy is not supported by aiohttp and is ignored (with a warning)."""

    def __init__(self) -> None:
        self._environment = urllib.request.getproxies_environment()
        self._routes: dict[tuple[str, str], ProxyRoute | None] = {}

    def route(self, url: str) -> ProxyRoute | None:
        """The proxy for ``url``'s origin, or None to connect directly."""
        if not self._environment:  # no proxy configured: nothing to parse
            return None
        parts = urllib.parse.urlsplit(url)
        if parts.scheme not in self._environment:
            return None
        origin = (parts.scheme, parts.netloc)
        if origin not in self._routes:
            if len(self._routes) >= MAX_REMEMBERED_ORIGINS:  # media hosts may differ per call: forget, start over
                self._routes.clear()
            self._routes[origin] = self._choose(parts.scheme, parts.hostname or "")
        return self._routes[origin]

    def _choose(self, scheme: str, host: str) -> ProxyRoute | None:
        proxy = self._environment.get(scheme)
        # proxy_bypass_environment: urllib's NO_PROXY matching, on the values read above (typeshed omits it).
        if not proxy or urllib.request.proxy_bypass_environment(host, self._environment):  # type: ignore[attr-defined]
            return None
        proxy_url = URL(proxy if "://" in proxy else f"http://{proxy}")
        address = str(proxy_url.with_user(None))
        if proxy_url.scheme != "http":
            log.warning("the %s proxy %s is not supported; connecting to %s directly", proxy_url.scheme, address, host)
            return None
        if not proxy_url.user:
            return ProxyRoute(address)
        credentials = base64.b64encode(f"{proxy_url.user}:{proxy_url.password or ''}".encode()).decode("ascii")
        authorization = ("Proxy-Authorization", f"Basic {credentials}")
        if scheme == "https":
            return ProxyRoute(address, connect_headers=dict([authorization]))
        return ProxyRoute(address, request_headers=(authorization,))


@dataclass(frozen=True)
class Reply:
    """An HTTP answer as it came back: status, headers (case-insensitive) and the whole body, already decoded from
    its ``Content-Encoding``."""

    status: int
    reason: str
    headers: CIMultiDictProxy[str]
    body: bytes

    @property
    def text(self) -> str:
        return self.body.decode("utf-8", errors="replace")

    def json(self) -> Any:
        """The body as JSON; ``ValueError`` when it is not."""
        return json.loads(self.body)


def client_timeout(timeout: float) -> aiohttp.ClientTimeout:
    """The limits of one request: connecting takes at most ``timeout`` (and 5 s at most); waiting for a pooled
    connection and connecting, together, ``timeout`` more than that; each wait for bytes of the answer ``timeout``."""
    connect = min(timeout, 5.0)
    return aiohttp.ClientTimeout(total=None, connect=timeout + connect, sock_connect=connect, sock_read=timeout)


class ConnectionBroke(aiohttp.ClientConnectionError):
    """A connection broke after the request was sent on it (raised by :func:`_no_silent_resend` in place of
    aiohttp's own error)."""


async def _no_silent_resend(
    request: aiohttp.ClientRequest, handler: aiohttp.ClientHandlerType
) -> aiohttp.ClientResponse:
    """aiohttp sends an idempotent request again, on a new connection, when a kept-alive connection breaks under it
    (``ClientOSError``, ``ServerDisconnectedError``). The client's retry policy is the one place that decides retries
    (and counts them): this middleware turns those two into :class:`ConnectionBroke`, which aiohttp does not resend."""
    try:
        return await handler(request)
    except (aiohttp.ClientConnectorError, aiohttp.ConnectionTimeoutError):
        raise  # never left: aiohttp does not resend these either
    except (aiohttp.ClientOSError, aiohttp.ServerDisconnectedError) as err:
        raise ConnectionBroke(str(err) or type(err).__name__) from err


def transport_error(err: BaseException, *, method: str, path: str, target: str) -> DialNexaTransportError:
    """The one mapping of a failed exchange to webcall's errors: :class:`DialNexaConnectError` when the request
    provably never left (waiting for a pooled connection, connecting, a URL that cannot be sent);
    :class:`DialNexaTimeout` when no answer came in time; :class:`DialNexaTransportError` when the connection broke
    once the request had left. ``target`` names the other end in the message ("DialNexa")."""
    if isinstance(err, aiohttp.ConnectionTimeoutError):
        return DialNexaConnectError(f"cannot connect to {target} (timed out)", method=method, path=path)
    if isinstance(err, aiohttp.ClientConnectorError):
        return DialNexaConnectError(f"cannot connect to {target} ({_connect_reason(err)})", method=method, path=path)
    if isinstance(err, aiohttp.InvalidURL):
        return DialNexaConnectError(f"cannot connect to {target} (invalid URL {err})", method=method, path=path)
    if isinstance(err, aiohttp.SocketTimeoutError | TimeoutError):
        return DialNexaTimeout(f"{target} did not answer in time", method=method, path=path)
    return DialNexaTransportError(
        f"the connection to {target} failed ({str(err) or type(err).__name__})", method=method, path=path
    )


def _connect_reason(err: aiohttp.ClientConnectorError) -> str:
    """Why a connection could not be made, in a few words ("Connection refused")."""
    if isinstance(err, aiohttp.ClientConnectorCertificateError):
        return f"certificate not trusted: {err.certificate_error}"
    os_error = err.os_error
    if isinstance(os_error, ConnectionError) and os_error.errno:  # asyncio's message names every address tried
        return os.strerror(os_error.errno)
    return os_error.strerror or str(os_error) or type(os_error).__name__


class AiohttpTransport:
    """One aiohttp connection pool. The session opens with the first request (on the event loop that sends it) and
    closes with :meth:`aclose`. Redirects are not followed and cookies are not kept. An HTTP(S) proxy named by the
    environment is used (``ALL_PROXY`` and SOCKS proxies are not). Certificates are checked against the system's
    authorities (``SSL_CERT_FILE``/``SSL_CERT_DIR`` name others, as OpenSSL reads them)."""

    def __init__(self, *, max_connections: int = DEFAULT_MAX_CONNECTIONS) -> None:
        self._max_connections = max_connections
        self._proxies = EnvironmentProxies()
        self._session: aiohttp.ClientSession | None = None

    @property
    def closed(self) -> bool:
        """No session is open (none yet, or closed)."""
        return self._session is None or self._session.closed

    def _open_session(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            self._session = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(limit=self._max_connections, keepalive_timeout=KEEPALIVE_SECONDS),
                cookie_jar=aiohttp.DummyCookieJar(),
                skip_auto_headers=("User-Agent", "Accept", "Accept-Encoding"),
                middlewares=(_no_silent_resend,),
            )
        return self._session

    async def send(
        self,
        method: str,
        url: str,
        *,
        headers: Sequence[tuple[str, str]],
        body: bytes | None,
        limits: aiohttp.ClientTimeout,
        path: str,
        target: str = "DialNexa",
    ) -> Reply:
        """Send one request as given and read its whole answer. Every failure is raised as a
        :class:`DialNexaTransportError` (see :func:`transport_error`), labelled with ``method``, ``path`` and
        ``target``; ``limits`` are its timeouts (:func:`client_timeout`)."""
        session = self._open_session()
        proxy = self._proxies.route(url)
        if proxy is not None and proxy.request_headers:
            headers = [*headers, *proxy.request_headers]
        try:
            async with session.request(
                method,
                url,
                headers=headers,
                data=body or None,
                allow_redirects=False,
                timeout=limits,
                proxy=proxy.url if proxy else None,
                proxy_headers=proxy.connect_headers if proxy else None,
            ) as response:
                content = await response.read()
                return Reply(response.status, response.reason or "", response.headers, content)
        except (aiohttp.ClientError, TimeoutError) as err:
            raise transport_error(err, method=method, path=path, target=target) from err

    async def aclose(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None
