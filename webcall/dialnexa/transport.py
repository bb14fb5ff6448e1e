"""The connection pool under the DialNexa client: requests sent through one ``aiohttp.ClientSession``.

httpx stays the client's interface (its responses, exceptions and test transports), but its default
pool (httpcore) re-scans every open connection, and for each idle one every connection again, whenever a request
starts or ends. With the hundreds of connections a burst of visitors opens, that bookkeeping costs milliseconds of
CPU per request, more than the rest of minting a session. aiohttp, which the plugin runs on anyway, keeps idle
connections in a queue per host, so taking or returning one costs the same at any pool size.

Failures are raised as the httpx exceptions the client already sorts into "never left" (connect, pool), timeouts
and broken connections.
"""

from __future__ import annotations

import base64
import logging
import urllib.parse
import urllib.request
from collections.abc import Mapping
from dataclasses import dataclass

import aiohttp
import httpx

log = logging.getLogger("webcall.dialnexa")

DEFAULT_MAX_CONNECTIONS = 200
"""Open connections to DialNexa at most; a burst beyond it waits for one (within the connect timeout)."""

KEEPALIVE_SECONDS = 5.0
"""An idle connection is closed after this long (httpx's default too): shorter than most servers keep one open, so a
request is rarely sent on a connection the server is closing at that moment."""

MAX_REMEMBERED_ORIGINS = 64
"""Origins whose proxy decision is kept (DialNexa's API and its media hosts)."""

# aiohttp computes these from the body and the URL itself; httpx's values would only disagree with them. (Names as
# httpx's ``multi_items()`` gives them: lower case.)
_HEADERS_AIOHTTP_SETS = frozenset({"host", "connection", "content-length", "transfer-encoding"})


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
    the environment once, when the client is made (as httpx does), and decided once per origin.

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
        proxy_url = httpx.URL(proxy if "://" in proxy else f"http://{proxy}")
        address = str(proxy_url.copy_with(username=None, password=None))
        if proxy_url.scheme != "http":
            log.warning("the %s proxy %s is not supported; connecting to %s directly", proxy_url.scheme, address, host)
            return None
        if not proxy_url.username:
            return ProxyRoute(address)
        credentials = base64.b64encode(f"{proxy_url.username}:{proxy_url.password}".encode()).decode("ascii")
        authorization = ("Proxy-Authorization", f"Basic {credentials}")
        if scheme == "https":
            return ProxyRoute(address, connect_headers=dict([authorization]))
        return ProxyRoute(address, request_headers=(authorization,))


class AiohttpTransport(httpx.AsyncBaseTransport):
    """An httpx transport over aiohttp's connection pool. The session opens with the first request (on the event
    loop that sends it) and closes with :meth:`aclose`. Redirects are not followed and cookies are not kept: the
    httpx client above decides both. Bodies arrive still encoded; httpx decodes them as usual. An HTTP(S) proxy
    named by the environment is used (``ALL_PROXY`` and SOCKS proxies are not)."""

    def __init__(self, *, max_connections: int = DEFAULT_MAX_CONNECTIONS) -> None:
        self._max_connections = max_connections
        self._proxies = EnvironmentProxies()
        self._session: aiohttp.ClientSession | None = None

    def _open_session(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            connector = aiohttp.TCPConnector(
                limit=self._max_connections,
                keepalive_timeout=KEEPALIVE_SECONDS,
                ssl=httpx.create_ssl_context(),  # the same certificate authorities httpx would trust
            )
            self._session = aiohttp.ClientSession(
                connector=connector,
                cookie_jar=aiohttp.DummyCookieJar(),
                auto_decompress=False,
                skip_auto_headers=("User-Agent", "Accept", "Accept-Encoding"),
            )
            # aiohttp would silently send an idempotent request again when a kept-alive connection breaks under it;
            # the client's retry policy is the one place that decides retries (and counts them), so it does not.
            # (No public switch exists; aiohttp's own test client turns it off the same way.)
            self._session._retry_connection = False
        return self._session

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        """httpx's transport interface: an ``httpx.AsyncClient`` can send through this pool too."""
        headers = [(name, value) for name, value in request.headers.multi_items() if name not in _HEADERS_AIOHTTP_SETS]
        body = await request.aread()
        limits = client_timeout(request.extensions.get("timeout", {}))
        return await self.send(
            request.method, str(request.url), headers=headers, body=body, limits=limits, request=request
        )

    async def send(
        self,
        method: str,
        url: str,
        *,
        headers: list[tuple[str, str]],
        body: bytes,
        limits: aiohttp.ClientTimeout,
        request: httpx.Request | None = None,
    ) -> httpx.Response:
        """Send one request as given. The DialNexa client calls this directly: building an ``httpx.Request`` (which
        parses the URL into httpx's model) would cost more than the rest of preparing the request. ``request`` is
        the httpx request this one came from, if any, for the response and the exceptions to refer to; ``limits`` its
        timeouts (:func:`client_timeout`)."""
        session = self._open_session()
        proxy = self._proxies.route(url)
        if proxy is not None:
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
                status, raw_headers = response.status, response.raw_headers
        except aiohttp.ConnectionTimeoutError as err:  # waiting for a pooled connection, or connecting
            raise httpx.ConnectTimeout(str(err) or "timed out connecting to DialNexa", request=request) from err
        except aiohttp.ClientConnectorError as err:
            raise httpx.ConnectError(str(err), request=request) from err
        except aiohttp.SocketTimeoutError as err:
            raise httpx.ReadTimeout(str(err) or "timed out reading from DialNexa", request=request) from err
        except aiohttp.InvalidURL as err:
            raise httpx.UnsupportedProtocol(str(err), request=request) from err
        except (aiohttp.ClientError, TimeoutError) as err:  # the connection broke once the request had left
            raise httpx.ReadError(str(err) or type(err).__name__, request=request) from err
        return httpx.Response(
            status_code=status,
            headers=list(raw_headers),
            content=content,
            request=request,
            extensions={"http_version": b"HTTP/1.1"},
        )

    async def aclose(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None


def client_timeout(timeouts: Mapping[str, float | None]) -> aiohttp.ClientTimeout:
    """httpx's per-request timeouts (``httpx.Timeout.as_dict()``) in aiohttp's terms: waiting for a pooled
    connection and connecting share aiohttp's ``connect`` budget; ``read`` bounds each wait for bytes, as in httpx."""
    pool, connect, read = timeouts.get("pool"), timeouts.get("connect"), timeouts.get("read")
    waiting = None if pool is None or connect is None else pool + connect
    return aiohttp.ClientTimeout(total=None, connect=waiting, sock_connect=connect, sock_read=read)
