"""What the plugin does with calls, apart from HTTP: start a web call, ring a visitor back, hang up, relay events.

:class:`CallDesk` is given everything it works with (store, DialNexa client, event bus, tokens, agents) and knows
nothing of requests: the views parse and answer, the desk decides and writes. What it refuses it raises as
:class:`~webcall.errors.TokenError`, :class:`~webcall.errors.CallRefused` or, when DialNexa failed,
:class:`~webcall.errors.UpstreamFailed`; the views' error handling answers each with its HTTP status.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
import time
from collections.abc import Coroutine
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import Any

from .bus import EventBus
from .catalog import AgentCatalog, placeholders
from .config import Agent
from .dialnexa import DialNexaClient
from .dialnexa.models import CallRecord, MediaUpdate, WebCallSession, iso
from .errors import (
    CallRefused,
    DialNexaAPIError,
    DialNexaConflict,
    DialNexaError,
    DialNexaTransportError,
    StoreUnavailable,
    TokenReused,
    UpstreamFailed,
)
from .events import CallEvent, from_delivery
from .metrics import Metrics
from .reconcile import OpenCalls
from .store import Store
from .store.base import NewCall
from .tokens import AUDIENCE_CALL, TokenClaims, TokenIssuer

log = logging.getLogger("webcall")

CONTEXT_GRACE_SECONDS = 3600
"""How long a call's host context outlives its maximum length (late webhooks still find it)."""
CALLBACK_CONTEXT_SECONDS = 24 * 3600
SLOT_GRACE_SECONDS = 60
TOKEN_GRACE_SECONDS = 120
RECONCILE_WAITS = (0.0, 0.5, 1.0)
"""Pauses between looks for a call-back whose creation failed ambiguously."""


@dataclass(frozen=True, kw_only=True)
class Caller:
    """Who asks for a call and what it is for: the outcome of the views' admission checks."""

    alias: str
    agent: Agent
    variables: dict[str, Any]
    origin: str
    identity: str | None
    reports_quality: bool = False
    """The browser will send a quality summary at the end (the widget does): ``call.ended`` waits a moment for it."""


@dataclass(eq=False)
class Slot:
    """One of the concurrent-call slots, claimed for a start request when its visit is counted (one store step);
    ``taken`` is False when every line was busy, which refuses the request once its other checks have passed.

    It has one owner at a time: the start request, which gives it back if the start fails
    (:func:`webcall.admission.slot`), until :meth:`CallDesk.create_call` asks DialNexa for the call; from then on the
    call holds it (``held_by_call``), and the call's end, its hang-up or its failed creation gives it back."""

    id: str
    taken: bool
    held_by_call: bool = False


@dataclass(frozen=True, kw_only=True)
class StartedCall:
    """A web call created at DialNexa and connected to the browser's offer: the SDP answer for the browser, the
    plugin token for its per-call routes, and the media resource's entity tag."""

    session: WebCallSession
    answer: str
    media_etag: str | None
    token: str
    token_expires_at: float
    max_call_seconds: int


# What DialNexa's refusal of a browser's offer means for the visitor (other failures are the service's).
OFFER_REFUSALS = {400: "the offer could not be answered", 413: "the offer is too large", 415: "the offer is not SDP"}


def call_context(call_id: str, caller: Caller, **more: Any) -> dict[str, Any]:
    """The host context stored with a call at creation; every later event about the call carries it."""
    return {
        "call_id": call_id,
        "agent": caller.alias,
        "agent_id": caller.agent.id,
        "origin": caller.origin,
        "identity": caller.identity,
        "variables": caller.variables,
        "created_at": iso(datetime.now(UTC)),
        **more,
    }


def plugin_event(kind: str, context: dict[str, Any], call: dict[str, Any]) -> CallEvent:
    """An event the plugin itself raises (``session.created``, ``callback.requested``)."""
    call_id = str(context["call_id"])
    return CallEvent(
        id=f"{call_id}:{kind}",
        type=kind,
        call_id=call_id,
        time=str(context["created_at"]),
        call={"id": call_id, "agent_id": context["agent_id"], **call},
        context=context,
        source="webcall",
    )


class CallDesk:
    def __init__(
        self,
        *,
        store: Store,
        client: DialNexaClient,
        bus: EventBus,
        tokens: TokenIssuer,
        catalog: AgentCatalog,
        metrics: Metrics,
        max_concurrent_calls: int,
        max_call_seconds: int,
    ) -> None:
        self.store = store
        self.client = client
        self.bus = bus
        self.tokens = tokens
        self.catalog = catalog
        self.metrics = metrics
        self.max_concurrent_calls = max_concurrent_calls
        self.max_call_seconds = max_call_seconds
        self.open_calls = OpenCalls(store)
        """The calls started and not yet seen to end, looked up at DialNexa by :class:`webcall.reconcile.Reconciler`."""
        self._background: set[asyncio.Task[None]] = set()

    # -- web calls -------------------------------------------------------------------------------------------------
    @property
    def slot_lease_seconds(self) -> float:
        """How long a slot is leased at most: the site's longest call and a grace (a call's end gives it back)."""
        return self.max_call_seconds + SLOT_GRACE_SECONDS

    async def create_call(self, caller: Caller, slot: Slot) -> WebCallSession:
        """In the slot the request took, create the web call at DialNexa: the first billable step. From here the call
        owns the slot; a failure to create it gives the slot back. Should the request be cancelled (the visitor left)
        while DialNexa creates the call, the call is hung up once it exists."""
        slot.held_by_call = True
        creating = asyncio.create_task(
            self.client.create_web_call(
                agent_id=caller.agent.id, agent_version_number=caller.agent.version, metadata=caller.variables
            )
        )
        try:
            return await asyncio.shield(creating)
        except asyncio.CancelledError:
            self._in_background(self._abandon_when_created(creating, slot.id))
            raise
        except DialNexaError as err:
            await self.store.release_slot(slot.id)
            raise UpstreamFailed(err, doing="starting the call") from err

    async def connect(self, caller: Caller, session: WebCallSession, offer: str, slot_id: str) -> StartedCall:
        """Hand the created call the browser's SDP ``offer`` (WHIP, with the call's access token, which never leaves
        the server), remember its context, announce it. Whatever fails from here (DialNexa refusing the offer, the
        store going down, the request cancelled because the visitor left) hangs the call up and gives its slot back."""
        try:
            return await self._connect(caller, session, offer, slot_id)
        except BaseException as failure:
            left = isinstance(failure, asyncio.CancelledError)
            await self._abandon(session.id, slot_id, reason="user_disconnected" if left else "network_failure")
            raise

    async def _connect(self, caller: Caller, session: WebCallSession, offer: str, slot_id: str) -> StartedCall:
        max_seconds = self.catalog.max_call_seconds(caller.alias, self.max_call_seconds)
        try:
            answer = await self.client.send_offer(session.media.whip_url, session.access_token, offer)
        except DialNexaError as err:
            status = err.status_code if isinstance(err, DialNexaAPIError) else None
            if status == 401:  # the single-use access token expired before the offer reached DialNexa
                raise CallRefused(
                    "call_expired", "The call expired before its audio connected; start it again.", retry_after=1
                ) from err
            if status in OFFER_REFUSALS:
                raise CallRefused(
                    "invalid_offer", f"The browser's SDP offer was refused: {OFFER_REFUSALS[status]}."
                ) from err
            raise UpstreamFailed(err, doing="connecting the call's audio") from err
        missing = self.catalog.required_variables(caller.alias) - caller.variables.keys()
        if missing:
            log.warning(
                "call %s: agent %r uses %s but this session gives no value; the agent will say the placeholder aloud",
                session.id,
                caller.alias,
                placeholders(missing),
            )
        context = call_context(session.id, caller, slot_id=slot_id)
        created = plugin_event("session.created", context, {"status": session.status, "type": "web"})
        new_call = NewCall(
            call_id=session.id,
            context=context,
            ttl=max_seconds + CONTEXT_GRACE_SECONDS,
            deadline_at=time.time() + max_seconds,
            media={
                "resource_url": answer.resource_url,
                "access_token": session.access_token,
                "etag": answer.etag,
                "reports_quality": caller.reports_quality,
            },
            media_ttl=max_seconds + TOKEN_GRACE_SECONDS,
        )
        await asyncio.gather(
            self.bus.publish(created, new_call=new_call),  # the context, deadline, media and event: one store step
            self.open_calls.add(session.id, new_call),
        )
        token, claims = self.tokens.issue(session.id, AUDIENCE_CALL, ttl=max_seconds + TOKEN_GRACE_SECONDS)
        self.metrics.minted(caller.alias)
        log.info("call %s: session minted for agent %r from %s", session.id, caller.alias, caller.origin)
        return StartedCall(
            session=session,
            answer=answer.sdp,
            media_etag=answer.etag,
            token=token,
            token_expires_at=claims.expires_at,
            max_call_seconds=max_seconds,
        )

    async def _abandon(self, call_id: str, slot_id: str, *, reason: str) -> None:
        """A call whose start failed after DialNexa created it: hang it up (best effort) and free its slot, to the end
        even when the request is cancelled meanwhile."""
        await asyncio.shield(self._in_background(self._hang_up(call_id, slot_id, reason=reason)))

    async def _abandon_when_created(self, creating: asyncio.Task[WebCallSession], slot_id: str) -> None:
        """The start was cancelled while DialNexa was creating the call: hang the call up once it exists, or just free
        the slot when it was not created."""
        try:
            session = await creating
        except DialNexaError:
            await self._release(slot_id)
        else:
            await self._hang_up(session.id, slot_id, reason="user_disconnected")

    async def _hang_up(self, call_id: str, slot_id: str, *, reason: str) -> None:
        """End the call at DialNexa with ``reason`` (best effort: it may have ended already) and free its slot."""
        try:
            await self.client.end_call(call_id, reason=reason)
        except DialNexaError as err:
            log.info("call %s: could not hang up the call whose start failed: %s", call_id, err)
        else:
            log.info("call %s: hung up: its start failed after DialNexa had created it", call_id)
        await self._release(slot_id)

    async def _release(self, slot_id: str) -> None:
        """Give a slot back, now or (the store is down) as soon as the store answers again."""
        try:
            await self.store.release_slot(slot_id)
        except StoreUnavailable:
            self.open_calls.release_later(slot_id)

    def _in_background(self, work: Coroutine[Any, Any, None]) -> asyncio.Task[None]:
        """Run ``work`` to its end whatever happens to the request that asked for it."""
        task = asyncio.create_task(work)
        self._background.add(task)
        task.add_done_callback(self._background.discard)
        return task

    # -- the call's media resource (WHIP) ----------------------------------------------------------------------------
    def verify_call_token(self, call_id: str, token: str | None) -> TokenClaims:
        """The claims of the call's plugin token; :class:`~webcall.errors.TokenError` when it is missing, invalid,
        expired or another call's."""
        return self.tokens.verify(token, AUDIENCE_CALL, call_id=call_id)

    async def media(self, call_id: str) -> dict[str, Any]:
        media = await self.store.media_of(call_id)
        if media is None:
            raise CallRefused("not_found", "This call has no media session (it ended, or never started).")
        return media

    async def update_media(self, call_id: str, fragment: str, *, content_type: str, if_match: str) -> MediaUpdate:
        """Relay an ICE restart or trickled candidates to DialNexa's WHIP resource. ``if_match`` is ``*`` or the
        resource's current ETag (:class:`CallRefused` ``precondition_failed`` otherwise). Returns DialNexa's answer,
        its media type filled in when DialNexa named none."""
        media = await self.media(call_id)
        current = media.get("etag")
        if if_match != "*" and (current is None or if_match != current):
            raise CallRefused("precondition_failed", "If-Match does not name the media session's current ETag.")
        try:
            update = await self.client.update_media(
                str(media["resource_url"]),
                str(media["access_token"]),
                fragment,
                content_type=content_type,
                if_match=if_match if if_match == "*" else current,
            )
        except DialNexaError as err:
            raise UpstreamFailed(err, doing="restarting the call's connection") from err
        etag = update.headers.get("ETag")
        if etag is not None and etag != current:
            ttl = self.max_call_seconds + TOKEN_GRACE_SECONDS
            await self.store.remember_media(call_id, {**media, "etag": etag}, ttl=ttl)
        return replace(update, content_type=update.content_type or "application/trickle-ice-sdpfrag")

    async def keep_quality(self, call_id: str, summary: dict[str, Any]) -> bool:
        """Keep the browser's quality summary with the call's media record; False when one was kept already."""
        media = await self.media(call_id)
        if media.get("quality") is not None:
            return False
        ttl = self.max_call_seconds + TOKEN_GRACE_SECONDS
        await self.store.remember_media(call_id, {**media, "quality": summary}, ttl=ttl)
        return True

    async def delete_media(self, call_id: str) -> None:
        """Relay the visitor's hang-up to DialNexa's WHIP resource: the media session ends."""
        media = await self.media(call_id)
        try:
            await self.client.delete_media(str(media["resource_url"]), str(media["access_token"]))
        except DialNexaError as err:
            raise UpstreamFailed(err, doing="ending the call's audio") from err

    async def hang_up_for_visitor(self, call_id: str, token: str | None) -> CallRecord | None:
        """The visitor's hang-up, authorized by the call's token, which hangs up once."""
        claims = self.verify_call_token(call_id, token)
        if not await self.store.use_once(f"end:{claims.jti}", ttl=claims.expires_at - time.time() + 60):
            raise TokenReused("this call's token was already used to hang up")
        try:
            return await self.end(call_id, reason="user_disconnected")
        except DialNexaError as err:
            raise UpstreamFailed(err, doing="ending the call") from err

    async def end(self, call_id: str, *, reason: str | None = None) -> CallRecord | None:
        """Hang a call up at DialNexa (None when it had already ended) and free what it held."""
        try:
            record: CallRecord | None = await self.client.end_call(call_id, reason=reason)
        except DialNexaConflict:
            record = None
        await self.finished(call_id)
        log.info("call %s: ended through the API", call_id)
        return record

    async def end_at_deadline(self, call_id: str) -> None:
        log.info("call %s: maximum call length reached; hanging up", call_id)
        try:
            await self.end(call_id)
        except DialNexaError as err:
            log.warning("call %s: could not hang up at the maximum call length: %s", call_id, err)

    async def finished(self, call_id: str) -> None:
        """Free what a call held: its concurrent-call slot and its maximum-length deadline."""
        context = await self.store.get_context(call_id)
        if context and context.get("slot_id"):
            await self.store.release_slot(str(context["slot_id"]))
        await self.store.deadline_clear(call_id)

    # -- events from DialNexa --------------------------------------------------------------------------------------
    async def record_delivery(self, event_type: str, call: dict[str, Any], *, source: str = "dialnexa") -> bool:
        """Relay a verified webhook delivery (or what DialNexa's call record says, from reconciliation: ``source``)
        to the host and browsers; False when it was a duplicate. A call's end frees what it held and closes it."""
        context = await self.store.get_context(str(call["id"]))
        event = from_delivery(event_type, call, context, source=source)
        fresh = await self.bus.publish(event)
        if event.type == "call.ended":
            await asyncio.gather(self.finished(event.call_id), self.open_calls.remove(event.call_id))
        return fresh

    # -- "call me back" --------------------------------------------------------------------------------------------
    async def ring_back(self, caller: Caller, phone_number: str) -> str:
        """Ask DialNexa to call the visitor's phone; returns the call id. Never creates the call twice."""
        request_id = secrets.token_urlsafe(12)
        notes = {"webcall_request": request_id, "source": "webcall callback"}
        try:
            call = await self.client.create_call(
                phone_number=phone_number,
                agent_id=caller.agent.id,
                agent_version_number=caller.agent.version,
                metadata=caller.variables,
                notes=notes,
            )
            call_id = call.id
        except DialNexaTransportError as err:
            # Ambiguous: the call may exist. Never retry blindly; look for it first.
            found = await self.find_requested_call(caller.agent.id, request_id)
            if found is None:
                raise UpstreamFailed(err, doing="requesting the call back") from err
            call_id = found
        except DialNexaError as err:
            raise UpstreamFailed(err, doing="requesting the call back") from err
        context = call_context(call_id, caller, phone_number=phone_number)
        await self.store.put_context(call_id, context, ttl=CALLBACK_CONTEXT_SECONDS)
        requested = plugin_event("callback.requested", context, {"type": "phone", "to_number": phone_number})
        await self.bus.publish(requested)
        await self.open_calls.add(call_id)
        self.metrics.callback(caller.alias)
        log.info("call %s: call back requested for agent %r", call_id, caller.alias)
        return call_id

    async def find_requested_call(self, agent_id: str, request_id: str) -> str | None:
        """After an ambiguous failure, look for the call we may have created (by the request id in its notes)."""
        for wait in RECONCILE_WAITS:
            await asyncio.sleep(wait)
            try:
                recent = await self.client.list_calls(limit=50, type="phone", agent_id=agent_id)
            except DialNexaError:
                continue
            for record in recent:
                notes = record.raw.get("notes")
                if isinstance(notes, dict) and notes.get("webcall_request") == request_id:
                    log.info("call %s: found after an ambiguous failure; not created twice", record.id)
                    return record.id
        return None
