"""The connection pool under the DialNexa client: httpx requests sent through one ``aiohttp.ClientSession``.

httpx stays the client's interface (its request building, response decoding and test transports), but its default
pool (httpcore) re-scans every open connection, and for each idle one every connection again, whenever a request
starts or ends. With the hundreds of connections a burst of visitors opens, that bookkeeping costs milliseconds of
CPU per request, more than the rest of minting a session. aiohttp, which the plugin runs on anyway, keeps idle
connections in a queue per host, so taking or returning one costs the same at any pool size.

Failures are raised as the httpx exceptions the client already sorts into "never left" (connect, pool), timeouts
and broken connections.
"""

from __future__ import annotations

import aiohttp
import httpx

DEFAULT_MAX_CONNECTIONS = 200
"""Open connections to DialNexa at most; a burst beyond it waits for one (within the connect timeout)."""

KEEPALIVE_SECONDS = 5.0
"""An idle connection is closed after this long (httpx's default too): shorter than most servers keep one open, so a
request is rarely sent on a connection the server is closing at that moment."""

# aiohttp computes these from the body and the URL itself; httpx's values would only disagree with them. (Names as
# httpx's ``multi_items()`` gives them: lower case.)
_HEADERS_AIOHTTP_SETS = frozenset({"host", "connection", "content-length", "transfer-encoding"})


class AiohttpTransport(httpx.AsyncBaseTransport):
    """An httpx transport over aiohttp's connection pool. The session opens with the first request (on the event
    loop that sends it) and closes with :meth:`aclose`. Redirects are not followed and cookies are not kept: the
    httpx client above decides both. Bodies arrive still encoded; httpx decodes them as usual. An HTTP(S) proxy
    named by the environment is used (``ALL_PROXY`` and SOCKS proxies are not)."""

    def __init__(self, *, max_connections: int = DEFAULT_MAX_CONNECTIONS) -> None:
        self._max_connections = max_connections
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
                trust_env=True,  # HTTP_PROXY, HTTPS_PROXY and NO_PROXY, as httpx's own pool would honour them
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
        session = self._open_session()
        headers = [(name, value) for name, value in request.headers.multi_items() if name not in _HEADERS_AIOHTTP_SETS]
        body = await request.aread()
        try:
            async with session.request(
                request.method,
                str(request.url),
                headers=headers,
                data=body or None,
                allow_redirects=False,
                timeout=_client_timeout(request),
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


def _client_timeout(request: httpx.Request) -> aiohttp.ClientTimeout:
    """httpx's per-request timeouts in aiohttp's terms: waiting for a pooled connection and connecting share
    aiohttp's ``connect`` budget; ``read`` bounds each wait for bytes, as in httpx."""
    timeouts = request.extensions.get("timeout", {})
    pool, connect, read = timeouts.get("pool"), timeouts.get("connect"), timeouts.get("read")
    waiting = None if pool is None or connect is None else pool + connect
    return aiohttp.ClientTimeout(total=None, connect=waiting, sock_connect=connect, sock_read=read)
