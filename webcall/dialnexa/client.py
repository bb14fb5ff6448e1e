"""The DialNexa REST client: requests sent through one aiohttp connection pool per app (``transport``), explicit
timeouts, retries by a pure policy, answers returned as the small frozen dataclasses of ``models``.

Every failure is a :class:`webcall.errors.DialNexaError` (the transport maps failed exchanges, this module error
statuses and unreadable answers). The one undocumented part of DialNexa — creating a browser web call — is
:meth:`DialNexaClient.create_web_call`, whose path is configuration.
"""

from __future__ import annotations

import asyncio
import email.utils
import json as json_codec
import logging
import math
import random
import time
from collections.abc import Awaitable, Callable, Mapping
from typing import Any
from urllib.parse import urlencode, urljoin

from ..config import check_base_url
from ..errors import (
    DialNexaAPIError,
    DialNexaConnectError,
    DialNexaError,
    DialNexaTimeout,
    DialNexaTransportError,
    api_error_class,
)
from .models import (
    AgentInfo,
    CallRecord,
    MediaUpdate,
    ParseError,
    PhoneCall,
    WebCallSession,
    WebhookRecord,
    WhipAnswer,
    list_items,
)
from .retry import Failure, RetryPolicy
from .transport import AiohttpTransport, Reply, client_timeout

log = logging.getLogger("webcall.dialnexa")

MAX_RETRY_AFTER = 86400.0  # a day: anything longer is not a retry hint any more


def failure_of(error: DialNexaTransportError) -> Failure:
    """What the retry policy is told about a failed exchange."""
    if isinstance(error, DialNexaConnectError):
        return Failure.CONNECT
    if isinstance(error, DialNexaTimeout):
        return Failure.TIMEOUT
    return Failure.NETWORK


def parse_retry_after(value: str | None, *, now: float | None = None) -> float | None:
    """``Retry-After`` as seconds (delta-seconds or an HTTP date); None when absent or unreadable."""
    if not value:
        return None
    value = value.strip()
    try:
        seconds = float(value)
    except ValueError:
        pass
    else:
        return min(max(0.0, seconds), MAX_RETRY_AFTER) if math.isfinite(seconds) else None
    try:
        moment = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return min(max(0.0, moment.timestamp() - (time.time() if now is None else now)), MAX_RETRY_AFTER)


def _error_message(body: Any, fallback: str) -> tuple[str, str]:
    """(message, error) from DialNexa's error object; a ``message`` list is joined."""
    if isinstance(body, dict):
        message = body.get("message")
        if isinstance(message, list):
            message = "; ".join(str(m) for m in message)
        error = body.get("error")
        return (str(message) if message else fallback, str(error) if isinstance(error, str) else "")
    return fallback, ""


class DialNexaClient:
    def __init__(
        self,
        *,
        api_key: str,
        base_url: str,
        web_call_path: str = "/web-calls",
        end_call_path: str = "/calls/{call_id}/end",
        timeout: float = 10.0,
        deadline: float = 20.0,
        policy: RetryPolicy | None = None,
        transport: AiohttpTransport | None = None,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        jitter: Callable[[], float] = random.random,
        clock: Callable[[], float] = time.monotonic,
        observer: Callable[[str, str, float], None] | None = None,
    ) -> None:
        check_base_url(base_url)
        self._observer = observer
        self._base = base_url.rstrip("/")
        self._web_call_path = web_call_path
        self._end_call_path = end_call_path
        self._deadline = deadline
        self._policy = policy or RetryPolicy()
        self._sleep = sleep
        self._jitter = jitter
        self._clock = clock
        self._transport = transport or AiohttpTransport()
        self._headers = {
            "Authorization": f"Bearer {api_key}",
            "Accept": "application/json",
            "Accept-Encoding": "gzip, deflate",
            "User-Agent": "dialnexa-webcall",
        }
        self._limits = client_timeout(timeout)

    @property
    def base_url(self) -> str:
        return self._base

    async def aclose(self) -> None:
        await self._transport.aclose()

    async def __aenter__(self) -> DialNexaClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    # -- transport ---------------------------------------------------------------------------------------------
    async def _send(
        self,
        method: str,
        url: str,
        *,
        path: str,
        json: Any = None,
        content: bytes | None = None,
        params: Mapping[str, Any] | None = None,
        headers: Mapping[str, str] | None = None,
        target: str = "DialNexa",
    ) -> Reply:
        """One request: the client's headers (``headers`` added), ``params`` as the query, ``json`` encoded as
        compact UTF-8 JSON (or ``content`` as it is)."""
        all_headers = {**self._headers, **headers} if headers else self._headers
        if params:
            url = f"{url}?{urlencode(params)}"
        if json is not None:
            content = json_codec.dumps(json, ensure_ascii=False, separators=(",", ":"), allow_nan=False).encode()
            all_headers = {**all_headers, "Content-Type": "application/json"}
        return await self._transport.send(
            method,
            url,
            headers=list(all_headers.items()),
            body=content,
            limits=self._limits,
            path=path,
            target=target,
        )

    async def _request(
        self,
        method: str,
        path: str,
        *,
        idempotent: bool,
        json: Any = None,
        params: Mapping[str, Any] | None = None,
        route: str | None = None,
    ) -> Any:
        started = self._clock()
        label = route or f"{method} {path}"
        attempt = 0
        while True:
            attempt += 1
            failure: Failure
            error: DialNexaError
            status: int | None = None
            retry_after: float | None = None
            sent = self._clock()
            try:
                reply = await self._send(method, self._base + path, path=path, json=json, params=params)
            except DialNexaTransportError as err:
                failure, error = failure_of(err), err
            else:
                self._observe(label, str(reply.status), sent)
                if reply.status < 400:
                    return self._json(reply, method, path)
                status = reply.status
                retry_after = parse_retry_after(reply.headers.get("retry-after"))
                failure, error = Failure.STATUS, self._api_error(reply, method, path, retry_after)
            if failure is not Failure.STATUS:
                self._observe(label, failure.value, sent)
            delay = self._policy.delay(
                attempt=attempt,
                idempotent=idempotent,
                failure=failure,
                status=status,
                retry_after=retry_after,
                jitter=self._jitter(),
            )
            elapsed = self._clock() - started
            if delay is None or elapsed + delay >= self._deadline:
                # A 4xx is an answer (e.g. 409 "already ended"), not a fault of the service.
                level = logging.INFO if status is not None and status < 500 and status != 429 else logging.WARNING
                log.log(level, "DialNexa %s %s failed after %d attempt(s): %s", method, path, attempt, error)
                raise error
            log.info("DialNexa %s %s: %s; retrying in %.2f s", method, path, error, delay)
            await self._sleep(delay)

    def _observe(self, route: str, outcome: str, sent: float) -> None:
        if self._observer is not None:
            self._observer(route, outcome, self._clock() - sent)

    def _json(self, reply: Reply, method: str, path: str) -> Any:
        if not reply.body:
            return None
        try:
            return reply.json()
        except ValueError as err:
            raise DialNexaAPIError(
                "DialNexa answered with a body that is not JSON",
                status_code=reply.status,
                method=method,
                path=path,
            ) from err

    def _api_error(self, reply: Reply, method: str, path: str, retry_after: float | None) -> DialNexaAPIError:
        try:
            body: Any = reply.json()
        except ValueError:
            body = None
        message, error = _error_message(body, reply.reason or f"HTTP {reply.status}")
        cls = api_error_class(reply.status)
        return cls(
            message,
            status_code=reply.status,
            error=error,
            body=body,
            method=method,
            path=path,
            retry_after=retry_after,
        )

    def _parse(self, parser: Callable[[Any], Any], body: Any, method: str, path: str) -> Any:
        try:
            return parser(body)
        except ParseError as err:
            raise DialNexaError(f"unexpected answer from DialNexa: {err}", method=method, path=path) from err

    # -- calls -------------------------------------------------------------------------------------------------
    async def create_web_call(
        self,
        *,
        agent_id: str,
        metadata: Mapping[str, Any],
        agent_version_number: int | None = None,
        notes: Mapping[str, Any] | None = None,
    ) -> WebCallSession:
        """Create a browser web call (the assumed contract; DialNexa publishes none). Billable: no blind retry."""
        body: dict[str, Any] = {"agent_id": agent_id, "metadata": dict(metadata)}
        if agent_version_number is not None:
            body["agent_version_number"] = agent_version_number
        if notes:
            body["notes"] = dict(notes)
        data = await self._request("POST", self._web_call_path, idempotent=False, json=body)
        session: WebCallSession = self._parse(WebCallSession.parse, data, "POST", self._web_call_path)
        log.info("web call %s created for agent %s", session.id, agent_id)
        return session

    async def probe_web_call_path(self) -> None:
        """POST an empty body to the web-call path: DialNexa refuses it (``DialNexaBadRequest``) before creating
        anything when the path exists; ``DialNexaNotFound`` when it does not. Creates nothing, costs nothing."""
        await self._request("POST", self._web_call_path, idempotent=False, json={})

    async def create_call(
        self,
        *,
        phone_number: str,
        agent_id: str,
        metadata: Mapping[str, Any],
        agent_version_number: int | None = None,
        notes: Mapping[str, Any] | None = None,
    ) -> PhoneCall:
        """``POST /v1/calls``: an outbound phone call. Billable: retried only when the request never left."""
        body: dict[str, Any] = {"phone_number": phone_number, "agent_id": agent_id, "metadata": dict(metadata)}
        if agent_version_number is not None:
            body["agent_version_number"] = agent_version_number
        if notes:
            body["notes"] = dict(notes)
        data = await self._request("POST", "/calls", idempotent=False, json=body)
        call: PhoneCall = self._parse(PhoneCall.parse, data, "POST", "/calls")
        return call

    async def get_call(self, call_id: str) -> CallRecord:
        path = f"/calls/{_segment(call_id)}"
        data = await self._request("GET", path, idempotent=True, route="GET /calls/{id}")
        record: CallRecord = self._parse(CallRecord.parse, data, "GET", path)
        return record

    async def list_calls(self, *, page: int = 1, limit: int = 20, **filters: str) -> list[CallRecord]:
        params: dict[str, Any] = {"page": page, "limit": limit, **filters}
        data = await self._request("GET", "/calls", idempotent=True, params=params)
        items = self._parse(lambda b: list_items(b, "calls"), data, "GET", "/calls")
        return [CallRecord.parse(item) for item in items if item.get("id")]

    async def end_call(self, call_id: str, *, reason: str | None = None) -> CallRecord | None:
        """Hang a call up through the API (``reason``: an end reason, e.g. ``user_disconnected`` when the visitor
        hung up); None when DialNexa answers without a call record."""
        path = self._end_call_path.format(call_id=_segment(call_id))
        body = {"reason": reason} if reason else None
        data = await self._request("POST", path, idempotent=True, json=body, route="POST " + self._end_call_path)
        try:
            return CallRecord.parse(data)
        except ParseError:
            return None

    # -- a web call's media (WHIP, RFC 9725) ----------------------------------------------------------------------
    async def send_offer(self, whip_url: str, access_token: str, offer: str) -> WhipAnswer:
        """POST the browser's SDP offer to the call's WHIP endpoint with its single-use access token; the SDP
        answer, the WHIP resource's URL (``Location``, made absolute) and its ``ETag``. Sent once: the token is
        spent by the first offer that arrives."""
        reply = await self._media("POST", whip_url, access_token, "application/sdp", offer)
        if reply.status != 201:
            raise self._api_error(reply, "POST", "WHIP", None)
        location = reply.headers.get("Location")
        if not location or not reply.body:
            raise DialNexaError("DialNexa's WHIP answer lacks its Location or SDP", method="POST", path="WHIP")
        return WhipAnswer(sdp=reply.text, resource_url=urljoin(whip_url, location), etag=reply.headers.get("ETag"))

    async def update_media(
        self, resource_url: str, access_token: str, fragment: str, *, content_type: str, if_match: str | None
    ) -> MediaUpdate:
        """PATCH the WHIP resource (an ICE restart or trickled candidates); DialNexa's answer as it came, error
        statuses included (the caller passes them on)."""
        headers = {"If-Match": if_match} if if_match else {}
        reply = await self._media("PATCH", resource_url, access_token, content_type, fragment, headers)
        kind = reply.headers.get("Content-Type")
        return MediaUpdate(
            status=reply.status,
            body=reply.text,
            content_type=kind.split(";")[0].strip() if kind else None,
            headers={name: reply.headers[name] for name in MediaUpdate.PASSED_ON if name in reply.headers},
        )

    async def delete_media(self, resource_url: str, access_token: str) -> None:
        """DELETE the WHIP resource: the media session ends. Already gone (404) counts as done."""
        reply = await self._media("DELETE", resource_url, access_token)
        if reply.status >= 400 and reply.status != 404:
            raise self._api_error(reply, "DELETE", "WHIP resource", None)

    async def _media(
        self,
        method: str,
        url: str,
        access_token: str,
        content_type: str | None = None,
        body: str | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> Reply:
        sent = self._clock()
        request_headers = {"Authorization": f"Bearer {access_token}", **(headers or {})}
        if content_type:
            request_headers["Content-Type"] = content_type
        try:
            reply = await self._send(
                method,
                url,
                path="WHIP",
                content=body.encode() if body is not None else None,
                headers=request_headers,
                target="DialNexa's media endpoint",
            )
        except DialNexaTransportError as err:
            self._observe(f"{method} WHIP", failure_of(err).value, sent)
            raise
        self._observe(f"{method} WHIP", str(reply.status), sent)
        return reply

    # -- agents ------------------------------------------------------------------------------------------------
    async def get_agent(self, agent_id: str) -> AgentInfo:
        path = f"/agents/{_segment(agent_id)}"
        data = await self._request("GET", path, idempotent=True, route="GET /agents/{id}")
        agent: AgentInfo = self._parse(AgentInfo.parse, data, "GET", path)
        return agent

    # -- user webhooks -----------------------------------------------------------------------------------------
    async def list_webhooks(self, *, page: int = 1, limit: int = 100) -> list[WebhookRecord]:
        data = await self._request("GET", "/user-webhooks", idempotent=True, params={"page": page, "limit": limit})
        items = self._parse(lambda b: list_items(b, "webhooks", "user_webhooks"), data, "GET", "/user-webhooks")
        return [WebhookRecord.parse(item) for item in items if item.get("id") and item.get("url")]

    async def create_webhook(
        self, *, url: str, events: list[str], secret: str, is_active: bool = True
    ) -> WebhookRecord:
        body = {"url": url, "events": events, "secret": secret, "is_active": is_active}
        data = await self._request("POST", "/user-webhooks", idempotent=False, json=body)
        hook: WebhookRecord = self._parse(WebhookRecord.parse, data, "POST", "/user-webhooks")
        return hook

    async def get_webhook(self, webhook_id: str) -> WebhookRecord:
        path = f"/user-webhooks/{_segment(webhook_id)}"
        data = await self._request("GET", path, idempotent=True, route="GET /user-webhooks/{id}")
        hook: WebhookRecord = self._parse(WebhookRecord.parse, data, "GET", path)
        return hook

    async def update_webhook(self, webhook_id: str, **changes: Any) -> WebhookRecord:
        path = f"/user-webhooks/{_segment(webhook_id)}"
        data = await self._request("PATCH", path, idempotent=True, json=changes, route="PATCH /user-webhooks/{id}")
        hook: WebhookRecord = self._parse(WebhookRecord.parse, data, "PATCH", path)
        return hook

    async def delete_webhook(self, webhook_id: str) -> None:
        path = f"/user-webhooks/{_segment(webhook_id)}"
        await self._request("DELETE", path, idempotent=True, route="DELETE /user-webhooks/{id}")


def _segment(value: str) -> str:
    """An id as one URL path segment; ids with slashes or dots are refused rather than escaped into a new path."""
    if not value or "/" in value or value in (".", "..") or "?" in value or "#" in value:
        raise DialNexaError(f"not a valid DialNexa id: {value!r}")
    return value
