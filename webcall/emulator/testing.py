"""A typed client for the emulator's control routes, for the test suites of sites that mount the plugin.

Start an emulator (:class:`~webcall.emulator.EmulatorServer` in-process, or ``python -m webcall.emulator`` beside the
tests), point the plugin at it, and drive it from the tests::

    async with EmulatorServer() as emulator, EmulatorControl(emulator.origin) as control:
        await control.add_fault(route="POST /v1/web-calls", kind="status", status=503)
        ...  # the site's own request, which now meets DialNexa's 503
        assert await control.request_count("POST /v1/web-calls") == 1

Every method maps to one route under ``/_control`` (see :mod:`webcall.emulator.control`) and returns what the route
answers, typed. An answer outside 2xx raises :class:`EmulatorControlError` with the emulator's message.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Mapping
from types import TracebackType
from typing import Any, Literal, Self, TypedDict, TypeVar

import aiohttp

from webcall.emulator.stats import RequestEntry
from webcall.emulator.webhooks import DeliveryRecord

__all__ = [
    "CallRecord",
    "DeliveryRecord",
    "Emitted",
    "EmulatorControl",
    "EmulatorControlError",
    "FaultKind",
    "FaultRecord",
    "MediaRecord",
    "RequestEntry",
    "StatsRecord",
    "TranscriptLine",
    "WebhookFaultKind",
    "eventually",
]

T = TypeVar("T")

FaultKind = Literal["latency", "status", "timeout", "reset"]
"""What a fault on a REST route does: wait ``delay`` seconds first, answer ``status``, never answer, drop the line."""
WebhookFaultKind = Literal["duplicate", "drop", "bad_signature", "delay"]
"""What a fault on a webhook delivery does: send it twice, not at all, with a wrong signature, or ``delay`` s late."""


class EmulatorControlError(Exception):
    """A control route answered outside 2xx: a fault it refused, a call or media session it does not know."""

    def __init__(self, method: str, path: str, status: int, message: str) -> None:
        super().__init__(f"{method} {path} -> {status}: {message}")
        self.method = method
        self.path = path
        self.status = status
        self.message = message


class FaultRecord(TypedDict):
    """A REST fault as ``GET /_control/faults`` lists it; ``fired`` counts the requests it has met."""

    id: str
    route: str
    kind: FaultKind
    count: int
    delay: float
    status: int | None
    retry_after: float | None
    probability: float
    message: str | None
    fired: int


class StatsRecord(TypedDict):
    """``GET /_control/stats``: requests by route key, calls created by type, and what the faults did."""

    requests: dict[str, int]
    calls_created: dict[str, int]
    faults_fired: int
    timed_out: int
    resets: int


class TranscriptLine(TypedDict):
    role: str
    text: str
    at: str


class CallRecord(TypedDict):
    """``GET /_control/calls/{id}``: the call as DialNexa's REST API shows it, and what only the emulator knows."""

    id: str
    type: str
    agent_id: str
    agent_version_number: int
    status: str
    call_direction: str
    to_number: str | None
    from_number: str | None
    metadata: dict[str, Any]
    notes: str | None
    createdAt: str
    initiated_at: str | None
    ended_at: str | None
    duration: float | None
    end_reason: str | None
    transcript: str | None
    transcript_object: list[dict[str, str]]
    summary: str | None
    sentiment: None
    recording_url: None
    has_access_token: bool
    access_token_used: bool
    access_token_expires_at: str | None
    transcript_lines: list[TranscriptLine]
    ended: bool


class MediaRecord(TypedDict):
    """``GET /_control/media/{call_id}``: what the emulator observes of a call's audio, live or after it closed.

    Levels are RMS relative to full scale (0.0-1.0); ``ice_pair`` is the browser's side of the nominated pair.
    """

    call_id: str
    session_id: str
    connected: bool
    connection_state: str
    frames_received: int
    frames_sent: int
    caller_rms_recent: float
    caller_silent_for: float | None
    caller_speaking: bool
    caller_turns: int
    agent_turns: int
    agent_state: str
    data_channel_open: bool
    closed: bool
    trickled_candidates: list[str]
    ice_pair: dict[str, str] | None


class Emitted(TypedDict):
    """``POST /_control/emit``: the synthetic calls, the events they went through and the deliveries scheduled."""

    call_ids: list[str]
    events: int
    deliveries: int


async def eventually(check: Callable[[], Awaitable[bool]], within: float = 10.0, *, what: str = "") -> None:
    """Poll an async ``check`` every 50 ms until it is true; raise AssertionError after ``within`` seconds."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + within
    while not await check():
        if loop.time() > deadline:
            raise AssertionError(f"{what or getattr(check, '__name__', 'condition')} still false after {within} s")
        await asyncio.sleep(0.05)


def _without_none(values: Mapping[str, Any]) -> dict[str, Any]:
    return {name: value for name, value in values.items() if value is not None}


class EmulatorControl:
    """The control routes of the emulator at ``base_url`` (its origin, ``http://HOST:PORT``, without ``/v1``).

    Use it as an async context manager, or call :meth:`close` when done. Pass ``session`` to share a connection pool
    (it is then left open).
    """

    def __init__(self, base_url: str, *, session: aiohttp.ClientSession | None = None, timeout: float = 10.0) -> None:
        self.base_url = base_url.rstrip("/")
        self._session = session
        self._owns_session = session is None
        self._timeout = aiohttp.ClientTimeout(total=timeout)

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, traceback: TracebackType | None
    ) -> None:
        await self.close()

    async def close(self) -> None:
        if self._owns_session and self._session is not None:
            await self._session.close()
        self._session = None

    async def _request(
        self, method: str, path: str, *, json: Mapping[str, Any] | None = None, params: Mapping[str, str] | None = None
    ) -> Any:
        if self._session is None:
            self._session = aiohttp.ClientSession(timeout=self._timeout)
        async with self._session.request(method, self.base_url + path, json=json, params=params) as response:
            body = await response.json(content_type=None)
            if response.status >= 300:
                message = body.get("message") if isinstance(body, dict) else body
                text = "; ".join(message) if isinstance(message, list) else str(message)
                raise EmulatorControlError(method, path, response.status, text)
            return body

    # -- REST faults ----------------------------------------------------------------------------------------------
    async def add_fault(
        self,
        *,
        route: str,
        kind: FaultKind,
        count: int | None = None,
        delay: float | None = None,
        status: int | None = None,
        retry_after: float | None = None,
        probability: float | None = None,
        message: str | None = None,
    ) -> str:
        """Add a fault on ``route`` (``"*"`` or ``"<METHOD> <canonical path>"``, e.g. ``"POST /v1/web-calls"``) that
        meets the next ``count`` requests (default 1; 0: until cleared); returns its id."""
        fault = _without_none(
            {
                "route": route,
                "kind": kind,
                "count": count,
                "delay": delay,
                "status": status,
                "retry_after": retry_after,
                "probability": probability,
                "message": message,
            }
        )
        body = await self._request("POST", "/_control/faults", json=fault)
        fault_id: str = body["id"]
        return fault_id

    async def faults(self) -> list[FaultRecord]:
        """The faults still armed, oldest first."""
        body = await self._request("GET", "/_control/faults")
        found: list[FaultRecord] = body["faults"]
        return found

    async def remove_fault(self, fault_id: str) -> None:
        await self._request("DELETE", f"/_control/faults/{fault_id}")

    async def clear_faults(self) -> int:
        """Disarm every REST fault; returns how many there were."""
        cleared: int = (await self._request("DELETE", "/_control/faults"))["cleared"]
        return cleared

    # -- webhook faults -------------------------------------------------------------------------------------------
    async def add_webhook_fault(
        self,
        *,
        kind: WebhookFaultKind,
        probability: float | None = None,
        count: int | None = None,
        delay: float | None = None,
        seed: int | None = None,
    ) -> str:
        """Add a fault drawn for each webhook delivery attempt, in the order faults were added; returns its id."""
        fault = _without_none({"kind": kind, "probability": probability, "count": count, "delay": delay, "seed": seed})
        fault_id: str = (await self._request("POST", "/_control/webhook-faults", json=fault))["id"]
        return fault_id

    async def clear_webhook_faults(self) -> int:
        cleared: int = (await self._request("DELETE", "/_control/webhook-faults"))["cleared"]
        return cleared

    # -- what the emulator saw ------------------------------------------------------------------------------------
    async def stats(self) -> StatsRecord:
        found: StatsRecord = await self._request("GET", "/_control/stats")
        return found

    async def requests(self, route: str | None = None) -> list[RequestEntry]:
        """The last 500 REST requests, oldest first; only those on ``route`` (``"<METHOD> <canonical path>"``) when
        given."""
        found: list[RequestEntry] = await self._request("GET", "/_control/requests")
        return [r for r in found if route is None or f"{r['method']} {r['route']}" == route]

    async def request_count(self, route: str) -> int:
        """How many of the last 500 requests were on ``route``, e.g. ``"POST /v1/web-calls"``."""
        return len(await self.requests(route))

    async def call(self, call_id: str) -> CallRecord:
        """The emulator's record of the call; :class:`EmulatorControlError` (404) when it knows no such call."""
        found: CallRecord = await self._request("GET", f"/_control/calls/{call_id}")
        return found

    async def media(self, call_id: str) -> MediaRecord:
        """The call's audio as the emulator observes it; :class:`EmulatorControlError` (404) before any WHIP offer."""
        found: MediaRecord = await self._request("GET", f"/_control/media/{call_id}")
        return found

    async def deliveries(
        self, *, call_id: str | None = None, webhook_id: str | None = None, event_type: str | None = None
    ) -> list[DeliveryRecord]:
        """Webhook delivery attempts, oldest first, those matching every filter given."""
        params = _without_none({"call_id": call_id, "webhook_id": webhook_id, "event_type": event_type})
        found: list[DeliveryRecord] = await self._request("GET", "/_control/deliveries", params=params)
        return found

    async def pending_deliveries(self) -> int:
        """Webhook deliveries scheduled and not yet settled (retries included)."""
        pending: int = (await self._request("GET", "/_control/deliveries/pending"))["pending"]
        return pending

    # -- acting on calls ------------------------------------------------------------------------------------------
    async def transfer(self, call_id: str) -> dict[str, Any]:
        """Transfer a live call (DialNexa then delivers ``transfer_completed``); returns the call's REST JSON."""
        found: dict[str, Any] = await self._request("POST", f"/_control/calls/{call_id}/transfer", json={})
        return found

    async def emit(
        self,
        *,
        count: int = 1,
        event_type: str = "call_ended",
        agent_id: str | None = None,
        metadata: Mapping[str, Any] | None = None,
        call_type: Literal["phone", "web"] = "phone",
    ) -> Emitted:
        """Run ``count`` synthetic calls through the state model up to ``event_type``, delivering every event."""
        body = _without_none(
            {"count": count, "event_type": event_type, "agent_id": agent_id, "metadata": metadata, "type": call_type}
        )
        found: Emitted = await self._request("POST", "/_control/emit", json=body)
        return found

    async def reset(self) -> None:
        """Forget calls, webhooks, stats, faults and deliveries; live calls end first."""
        await self._request("POST", "/_control/reset")

    # -- waiting --------------------------------------------------------------------------------------------------
    async def wait_for(
        self,
        read: Callable[[], Awaitable[T]],
        until: Callable[[T], bool],
        *,
        within: float = 10.0,
        what: str = "",
    ) -> T:
        """Read a record (``lambda: control.media(call_id)``) every 50 ms until ``until`` holds; returns that record.

        A read that fails with 404 counts as not yet (a media session appears only once the browser offers);
        AssertionError after ``within`` seconds, naming ``what``.
        """
        latest: list[T] = []

        async def holds() -> bool:
            try:
                record = await read()
            except EmulatorControlError as error:
                if error.status != 404:
                    raise
                return False
            latest[:] = [record]
            return until(record)

        await eventually(holds, within, what=what or "the emulator's record")
        return latest[0]
