"""The emulator's webhook sender: signed deliveries of call events to the registered URLs, with DialNexa's retries.

Every call event the state model announces (``call_initiated``, ``call_ended``, ``transfer_completed``) goes to each
**active** webhook subscribed to it. Subscriptions use the names DialNexa documents
(:data:`DOCUMENTED_SUBSCRIPTION_EVENTS`; any other name is refused with a 400 when the webhook is created or
updated), and deliveries carry the delivery names in ``event_type``. DialNexa does not document how the two relate;
the emulator assumes (:func:`subscribed`): a webhook with any ``call.*`` subscription receives ``call_initiated`` and
``transfer_completed`` for every call, and ``call_ended`` when the call's final status matches one of its names
(``completed`` → ``call.completed``; ``failed``, ``cancelled``, ``retry_expired`` → ``call.failed``; ``did_not_pick``,
``busy``, ``no_answer`` → ``call.no_answer``). ``campaign.*`` and ``workflow.*`` subscriptions receive no call
deliveries. An agent bound to one subscription (``webhook_id``) sends only to it; an agent whose webhook setting is
off (``webhook_enabled: false``) sends nothing. A delivery is a POST of the raw JSON
``{"event_type": ..., "payload": {"call": {...}}}`` (serialised once, when the event happens) with
``Content-Type: application/json`` and ``x-nexa-signature: sha256=<hex HMAC-SHA256 of those exact bytes>``.

Deliveries run in background tasks: the state listener only schedules them. An attempt fails on a timeout
(``webhook_timeout``), a connection error or any non-2xx answer, and is retried up to ``webhook_retries`` times after
``webhook_backoff * 2**n`` seconds. Every attempt is recorded (the last :data:`DELIVERY_LOG_SIZE`).

Faults (``POST /_control/webhook-faults``) are drawn for each attempt, in the order they were added:

* ``drop`` — the attempt is never sent and the delivery ends there, as if DialNexa lost the event;
* ``duplicate`` — the attempt is sent twice, the same bytes with the same signature; it succeeds if either copy does;
* ``bad_signature`` — the attempt is signed with a wrong secret (its retry is signed correctly unless the fault
  fires again);
* ``delay`` — wait ``delay`` seconds before sending (not counted against the timeout).

Whether a fault with ``probability`` < 1 fires is a pure function of (seed, fault number, delivery number, attempt),
so with a fixed seed (``webhook_seed`` or the fault's own ``seed``) the same sequence of events meets the same faults
whatever the timing.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import secrets
import time
from collections import deque
from collections.abc import AsyncIterator, Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, TypedDict

import aiohttp
from aiohttp import web

from webcall.dialnexa.facts import DELIVERY_EVENT_TYPES, DOCUMENTED_SUBSCRIPTION_EVENTS, SIGNATURE_HEADER, signature
from webcall.emulator.faults import FaultList
from webcall.emulator.state import Call, EmulatorState
from webcall.emulator.tasks import BackgroundTasks

if TYPE_CHECKING:
    from webcall.emulator.config import EmulatorConfig

log = logging.getLogger("webcall.emulator")

EVENT_TYPES = DELIVERY_EVENT_TYPES
CALL_SUBSCRIPTIONS = frozenset({"call.completed", "call.failed", "call.no_answer"})
# A call's final status -> the subscription that receives its call_ended delivery (assumed, see the module docstring).
ENDED_SUBSCRIPTION = {
    "completed": "call.completed",
    "failed": "call.failed",
    "cancelled": "call.failed",
    "retry_expired": "call.failed",
    "did_not_pick": "call.no_answer",
    "busy": "call.no_answer",
    "no_answer": "call.no_answer",
}
WEBHOOK_FAULT_KINDS = ("drop", "delay", "bad_signature", "duplicate")
DELIVERY_LOG_SIZE = 5000
RESPONSE_LOG_BYTES = 1024
USER_AGENT = "DialNexa-Webhooks/1.0 (webcall emulator)"


def undocumented(events: Iterable[str]) -> list[str]:
    """The names in ``events`` that DialNexa does not document as subscription events."""
    return [name for name in events if name not in DOCUMENTED_SUBSCRIPTION_EVENTS]


def subscribed(events: Iterable[str], event_type: str, status: str) -> bool:
    """Whether a webhook subscribed to ``events`` receives an ``event_type`` delivery for a call in ``status``."""
    names = set(events)
    if event_type == "call_ended":
        return ENDED_SUBSCRIPTION.get(status, "call.completed") in names
    return bool(names & CALL_SUBSCRIPTIONS)


def _chance(*parts: object) -> float:
    """A number in [0, 1) that depends only on ``parts`` (stable across runs and processes)."""
    digest = hashlib.blake2b(":".join(map(str, parts)).encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") / 2**64


class DeliveryRecord(TypedDict):
    """One attempt (one copy of it, for a duplicated attempt) as ``GET /_control/deliveries`` shows it."""

    delivery_id: str
    webhook_id: str
    url: str
    event_type: str
    call_id: str
    attempt: int
    copy: int
    status: int | None
    error: str | None
    fault: str | None
    signed_ok: bool
    response: str | None


@dataclass
class WebhookFault:
    id: str
    kind: str
    seq: int
    probability: float = 1.0
    count: int = 1
    delay: float = 0.0
    seed: int | None = None
    fired: int = 0

    def as_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "kind": self.kind,
            "probability": self.probability,
            "count": self.count,
            "delay": self.delay,
            "seed": self.seed,
            "fired": self.fired,
        }


class WebhookFaults(FaultList[WebhookFault]):
    """The active delivery faults of one emulator, in the order they were added."""

    def __init__(self, seed: int | None = None) -> None:
        super().__init__()
        self.seed = seed if seed is not None else secrets.randbits(63)
        self._added = 0

    def add(
        self, *, kind: str, probability: float = 1.0, count: int = 1, delay: float = 0.0, seed: int | None = None
    ) -> WebhookFault:
        if kind not in WEBHOOK_FAULT_KINDS:
            raise ValueError(f"unknown webhook fault kind {kind!r}")
        self._added += 1
        fault = WebhookFault(
            id=f"whfault_{secrets.token_hex(6)}",
            kind=kind,
            seq=self._added,
            probability=probability,
            count=count,
            delay=delay,
            seed=seed,
        )
        self._faults.append(fault)
        return fault

    def reset(self) -> None:
        """Forget every fault and restart the fault numbering (a fresh emulator draws the same faults again)."""
        self._faults.clear()
        self._added = 0

    def draw(self, delivery_seq: int, attempt: int) -> list[WebhookFault]:
        """The faults that fire for one attempt of one delivery (counts are used up here)."""
        fired: list[WebhookFault] = []
        for fault in list(self._faults):
            if fault.probability < 1.0:
                seed = fault.seed if fault.seed is not None else self.seed
                if _chance(seed, fault.seq, delivery_seq, attempt) >= fault.probability:
                    continue
            fault.fired += 1
            if fault.count > 0:
                fault.count -= 1
                if fault.count == 0:
                    self._faults.remove(fault)
            fired.append(fault)
        return fired


@dataclass(frozen=True)
class Delivery:
    """One event for one webhook: the exact bytes every attempt sends."""

    seq: int
    webhook_id: str
    url: str
    event_type: str
    call_id: str
    body: bytes = field(repr=False)
    secret: str = field(repr=False)

    @property
    def id(self) -> str:
        return f"dlv_{self.seq:06d}"


class WebhookSender:
    """Delivers call events to the registered webhooks; :meth:`on_state_event` is the state listener.

    One HTTP client is opened in :meth:`lifespan` (a ``cleanup_ctx``); deliveries in flight are cancelled when it
    closes and on :meth:`reset`.
    """

    def __init__(
        self,
        state: EmulatorState,
        *,
        retries: int = 3,
        timeout: float = 10.0,
        backoff: float = 0.2,
        seed: int | None = None,
        log_size: int = DELIVERY_LOG_SIZE,
    ) -> None:
        self.state = state
        self.retries = retries
        self.timeout = timeout
        self.backoff = backoff
        self.faults = WebhookFaults(seed)
        self.deliveries: deque[DeliveryRecord] = deque(maxlen=log_size)
        self.scheduled = 0
        self._tasks = BackgroundTasks()
        self._session: aiohttp.ClientSession | None = None

    @classmethod
    def from_config(cls, state: EmulatorState, config: EmulatorConfig) -> WebhookSender:
        return cls(
            state,
            retries=config.webhook_retries,
            timeout=config.webhook_timeout,
            backoff=config.webhook_backoff,
            seed=config.webhook_seed,
        )

    @property
    def pending(self) -> int:
        """Deliveries still running (sending, or waiting to retry)."""
        return len(self._tasks)

    # -- lifetime --------------------------------------------------------------------------------------------------
    async def lifespan(self, app: web.Application) -> AsyncIterator[None]:
        self._session = aiohttp.ClientSession(headers={"User-Agent": USER_AGENT})
        try:
            yield
        finally:
            session, self._session = self._session, None
            await self._tasks.cancel_all()
            await session.close()

    async def reset(self) -> None:
        """Cancel deliveries in flight; forget faults, the delivery log and the numbering."""
        await self._tasks.cancel_all()
        self.faults.reset()
        self.deliveries.clear()
        self.scheduled = 0

    async def drain(self, within: float = 30.0) -> None:
        """Wait until no delivery is running (every attempt and retry has finished)."""
        deadline = time.monotonic() + within
        while self._tasks:
            if time.monotonic() >= deadline:
                raise TimeoutError(f"{len(self._tasks)} webhook deliveries still running after {within:g} s")
            await asyncio.sleep(0.01)

    # -- scheduling ------------------------------------------------------------------------------------------------
    def on_state_event(self, event_type: str, call: Call) -> None:
        """State listener: schedule one delivery per matching active webhook; never blocks."""
        agent = self.state.agents.get(call.agent_id)
        if agent is not None and not agent.webhook_enabled:
            return  # the agent's "Enable Webhook" setting is off: its calls send nothing
        hooks = [
            h
            for h in self.state.webhooks.values()
            if h.is_active
            and subscribed(h.events, event_type, call.status)
            and (agent is None or agent.webhook_id in (None, h.id))
        ]
        if not hooks:
            return
        if self._session is None:
            log.info(
                "emulator: call %s: %s not delivered to %d webhook(s): the emulator is not serving",
                call.id,
                event_type,
                len(hooks),
            )
            return
        envelope = {"event_type": event_type, "payload": {"call": self.state.webhook_call_json(call)}}
        body = json.dumps(envelope).encode()
        for hook in hooks:
            self.scheduled += 1
            delivery = Delivery(
                seq=self.scheduled,
                webhook_id=hook.id,
                url=hook.url,
                event_type=event_type,
                call_id=call.id,
                body=body,
                secret=hook.secret,
            )
            self._tasks.spawn(self._deliver(delivery), name=f"emulator-webhook-{delivery.id}")

    # -- delivering ------------------------------------------------------------------------------------------------
    async def _deliver(self, delivery: Delivery) -> None:
        attempts = self.retries + 1
        try:
            for attempt in range(1, attempts + 1):
                outcome = await self._attempt(delivery, attempt)
                if outcome is None or outcome:
                    return
                if attempt < attempts:
                    await asyncio.sleep(self.backoff * 2 ** (attempt - 1))
            log.warning(
                "emulator: call %s: %s to webhook %s failed %d time(s); giving up",
                delivery.call_id,
                delivery.event_type,
                delivery.webhook_id,
                attempts,
            )
        except Exception:
            log.exception(
                "emulator: call %s: delivering %s to webhook %s broke",
                delivery.call_id,
                delivery.event_type,
                delivery.webhook_id,
            )

    async def _attempt(self, delivery: Delivery, attempt: int) -> bool | None:
        """Send one attempt; True when it was answered 2xx, False to retry, None when a fault dropped it."""
        fired = self.faults.draw(delivery.seq, attempt)
        kinds = {f.kind for f in fired}
        if "drop" in kinds:
            self._record(delivery, attempt, 1, None, None, "drop", True, None)
            log.info(
                "emulator: call %s: %s to webhook %s dropped (fault)",
                delivery.call_id,
                delivery.event_type,
                delivery.webhook_id,
            )
            return None
        label = "+".join(kind for kind in WEBHOOK_FAULT_KINDS if kind in kinds) or None
        delay = sum(f.delay for f in fired if f.kind == "delay")
        if delay > 0:
            await asyncio.sleep(delay)
        signed_ok = "bad_signature" not in kinds
        header = signature(delivery.body, delivery.secret if signed_ok else "wrong-" + secrets.token_hex(16))
        delivered = False
        for copy in range(1, 3 if "duplicate" in kinds else 2):
            status, error, response = await self._post(delivery, header)
            self._record(delivery, attempt, copy, status, error, label, signed_ok, response)
            ok = status is not None and 200 <= status < 300
            delivered = delivered or ok
            if ok:
                log.debug(
                    "emulator: call %s: %s delivered to webhook %s (attempt %d, HTTP %d)",
                    delivery.call_id,
                    delivery.event_type,
                    delivery.webhook_id,
                    attempt,
                    status,
                )
            else:
                log.info(
                    "emulator: call %s: %s to webhook %s attempt %d failed: %s",
                    delivery.call_id,
                    delivery.event_type,
                    delivery.webhook_id,
                    attempt,
                    error or f"HTTP {status}",
                )
        return delivered

    async def _post(self, delivery: Delivery, header: str) -> tuple[int | None, str | None, str | None]:
        """(status, error, start of the response body) of one POST."""
        session = self._session
        if session is None:
            return None, "the emulator is shutting down", None
        headers = {"Content-Type": "application/json", SIGNATURE_HEADER: header}
        try:
            async with session.post(
                delivery.url,
                data=delivery.body,
                headers=headers,
                timeout=aiohttp.ClientTimeout(total=self.timeout),
                allow_redirects=False,
            ) as response:
                text = (await response.content.read(RESPONSE_LOG_BYTES)).decode("utf-8", "replace")
                return response.status, None, text
        except TimeoutError:
            return None, f"timed out after {self.timeout:g} s", None
        except aiohttp.ClientError as err:
            return None, f"{type(err).__name__}: {err}", None

    def _record(
        self,
        delivery: Delivery,
        attempt: int,
        copy: int,
        status: int | None,
        error: str | None,
        fault: str | None,
        signed_ok: bool,
        response: str | None,
    ) -> None:
        self.deliveries.append(
            {
                "delivery_id": delivery.id,
                "webhook_id": delivery.webhook_id,
                "url": delivery.url,
                "event_type": delivery.event_type,
                "call_id": delivery.call_id,
                "attempt": attempt,
                "copy": copy,
                "status": status,
                "error": error,
                "fault": fault,
                "signed_ok": signed_ok,
                "response": response,
            }
        )
