"""WHIP (RFC 9725) routes of the emulator, the registry of live media sessions, and the media control route.

Routes (added to the emulator app by :func:`webcall.emulator.media.setup_media`):

- ``POST   /v1/web-calls/{call_id}/whip`` — ``application/sdp`` offer + ``Authorization: Bearer <access_token>``
  → ``201`` SDP answer, ``Location: <this path>/{session_id}``, ``ETag``.
- ``DELETE /v1/web-calls/{call_id}/whip/{session_id}`` → ``200``; ends the call (``user_disconnected``).
- ``PATCH  /v1/web-calls/{call_id}/whip/{session_id}`` → ``204``: trickled candidates (RFC 8840) reach aiortc's
  ``addIceCandidate``; an ICE restart → ``405``: aiortc cannot restart ICE.
- ``OPTIONS`` on both → ``204`` (CORS preflight; any origin, the access token is the credential).
- ``GET    /_control/media/{call_id}`` → what the emulator observes of the call's audio (for tests).

Errors use DialNexa's shape ``{"statusCode", "message", "error"}``.
"""

from __future__ import annotations

import asyncio
import hmac
import logging
from collections import OrderedDict
from collections.abc import AsyncIterator
from http import HTTPStatus
from typing import Any

from aiohttp import web
from aiortc.exceptions import InvalidStateError
from aiortc.sdp import SessionDescription

from webcall.emulator.state import Call, EmulatorState

from .candidates import parse_fragment
from .session import MediaSession, MediaSettings, NegotiationError
from .stt import get_transcriber
from .tts import get_synthesizer

__all__ = ["MEDIA_HUB", "MediaHub", "add_routes"]

log = logging.getLogger("webcall.emulator.media")

INVALID_TOKEN = "Web call access token is invalid, expired or already used"
TRICKLE_FRAGMENT = "application/trickle-ice-sdpfrag"
ICE_RESTART_UNSUPPORTED = "ICE restart is not supported by this WHIP session; end the call and start a new one."
CORS_HEADERS = {
    "Access-Control-Allow-Origin": "*",
    "Access-Control-Allow-Methods": "POST, DELETE, PATCH, OPTIONS",
    "Access-Control-Allow-Headers": "authorization, content-type, if-match",
    "Access-Control-Expose-Headers": "location, etag",
}
_FINISHED_KEPT = 256


class MediaHub:
    """Every media session of one emulator app, indexed by session id and by call id."""

    def __init__(self, state: EmulatorState, settings: MediaSettings) -> None:
        self.state = state
        self.settings = settings
        self.synthesizer = get_synthesizer()
        self.transcriber = get_transcriber()
        self.sessions: dict[str, MediaSession] = {}
        self.by_call: dict[str, MediaSession] = {}
        # Last view of recently closed sessions, for the control route and idempotent DELETEs.
        self.finished: OrderedDict[str, dict[str, Any]] = OrderedDict()
        self.active = False

    def on_state_event(self, event_type: str, call: Call) -> None:
        """State listener: a call ended elsewhere closes its media."""
        if event_type != "call_ended" or not self.active:
            return
        session = self.by_call.get(call.id)
        if session is not None:
            session.on_call_ended()

    def open(self, call: Call) -> MediaSession:
        session = MediaSession(
            state=self.state,
            call=call,
            settings=self.settings,
            synthesizer=self.synthesizer,
            transcriber=self.transcriber,
            on_closed=self._closed,
        )
        self.sessions[session.id] = session
        self.by_call[call.id] = session
        return session

    def _closed(self, session: MediaSession) -> None:
        self.sessions.pop(session.id, None)
        if self.by_call.get(session.call.id) is session:
            del self.by_call[session.call.id]
        self.finished[session.call.id] = session.snapshot(asyncio.get_running_loop().time())
        while len(self.finished) > _FINISHED_KEPT:
            self.finished.popitem(last=False)

    async def lifespan(self, app: web.Application) -> AsyncIterator[None]:
        """cleanup_ctx: load espeak-ng at startup (fail fast), close every session at shutdown."""
        await self.synthesizer.load()
        self.active = True
        yield
        self.active = False
        sessions = list(self.sessions.values())
        for session in sessions:
            session.end("emulator_shutdown")
        await asyncio.gather(*(s.wait_closed() for s in sessions), return_exceptions=True)


MEDIA_HUB = web.AppKey("webcall.emulator.media", MediaHub)


def _error(status: int, message: str, headers: dict[str, str] | None = None) -> web.Response:
    body = {"statusCode": status, "message": message, "error": HTTPStatus(status).phrase}
    return web.json_response(body, status=status, headers={**CORS_HEADERS, **(headers or {})})


def _bearer(request: web.Request) -> str | None:
    scheme, _, token = request.headers.get("Authorization", "").partition(" ")
    token = token.strip()
    return token if scheme.lower() == "bearer" and token else None


def _offer_problem(sdp: str) -> str | None:
    """Why an SDP offer cannot be answered, judged before the single-use token is spent; None when it looks fine."""
    try:
        media = SessionDescription.parse(sdp).media
    except Exception:
        return "The SDP offer could not be parsed."
    if not any(m.kind == "audio" for m in media):
        return "The SDP offer must contain an audio media section (m=audio)."
    for m in media:
        if m.ice is None or not m.ice.usernameFragment or not m.ice.password:
            return f"The SDP offer's {m.kind} section lacks a=ice-ufrag / a=ice-pwd."
        if m.dtls is None or not m.dtls.fingerprints:
            return f"The SDP offer's {m.kind} section lacks a=fingerprint / a=setup."
    return None


async def whip_options(request: web.Request) -> web.Response:
    headers = {**CORS_HEADERS, "Access-Control-Max-Age": "600"}
    if "session_id" not in request.match_info:
        headers["Accept-Post"] = "application/sdp"
    return web.Response(status=204, headers=headers)


async def whip_post(request: web.Request) -> web.Response:
    hub = request.app[MEDIA_HUB]
    call_id = request.match_info["call_id"]
    if request.content_type != "application/sdp":
        return _error(415, "The WHIP offer must be sent with Content-Type: application/sdp.")
    token = _bearer(request)
    if token is None:
        return _error(401, INVALID_TOKEN, {"WWW-Authenticate": "Bearer"})
    limit = hub.settings.max_offer_bytes
    if request.content_length is not None and request.content_length > limit:
        return _error(413, f"The SDP offer is larger than {limit} bytes.")
    raw = await request.read()  # also bounded by the app's client_max_size
    if len(raw) > limit:
        return _error(413, f"The SDP offer is larger than {limit} bytes.")
    try:
        offer = raw.decode("utf-8")
    except UnicodeDecodeError:
        return _error(400, "The SDP offer is not valid UTF-8.")
    problem = _offer_problem(offer)
    if problem is not None:
        return _error(400, problem)

    call = hub.state.calls.get(call_id)
    if call is None or call.access_token is None or not hmac.compare_digest(call.access_token.encode(), token.encode()):
        return _error(401, INVALID_TOKEN, {"WWW-Authenticate": "Bearer"})
    if len(hub.sessions) >= hub.settings.max_sessions:
        log.warning("call %s: refusing media, %d sessions already live", call_id, len(hub.sessions))
        return _error(
            503, "The emulator is at its limit of simultaneous web calls; try again shortly.", {"Retry-After": "5"}
        )
    if hub.state.redeem_token(token) is not call:
        return _error(401, INVALID_TOKEN, {"WWW-Authenticate": "Bearer"})

    session = hub.open(call)
    try:
        answer = await session.answer(offer)
    except NegotiationError as err:
        log.warning("call %s: %s", call_id, err)
        session.end("media_negotiation_failed")
        await session.wait_closed()
        return _error(400, str(err))
    except InvalidStateError:
        # The call was ended (e.g. through the REST API) while the offer was being answered.
        await session.wait_closed()
        return _error(409, "The call ended while its media was being set up.")
    except BaseException:
        session.end("error")
        await session.wait_closed()
        raise
    if session.ending:
        await session.wait_closed()
        return _error(409, "The call ended while its media was being set up.")
    location = f"{request.path.rstrip('/')}/{session.id}"
    return web.Response(
        status=201,
        body=answer.encode(),
        content_type="application/sdp",
        headers={**CORS_HEADERS, "Location": location, "ETag": session.etag},
    )


def _session_for(request: web.Request) -> tuple[MediaSession | None, bool]:
    """(live session, whether the session id names a recently finished session of this call)."""
    hub = request.app[MEDIA_HUB]
    call_id, session_id = request.match_info["call_id"], request.match_info["session_id"]
    session = hub.sessions.get(session_id)
    if session is not None and session.call.id == call_id:
        return session, False
    finished = hub.finished.get(call_id)
    return None, finished is not None and hmac.compare_digest(str(finished["session_id"]), session_id)


def _token_mismatch(request: web.Request, call: Call) -> bool:
    """An Authorization header, when sent, must carry the call's access token (the session URL is the secret)."""
    if "Authorization" not in request.headers:
        return False
    token = _bearer(request)
    return token is None or call.access_token is None or not hmac.compare_digest(token, call.access_token)


async def whip_delete(request: web.Request) -> web.Response:
    session, finished = _session_for(request)
    if session is None:
        if finished:
            return web.Response(status=200, headers=CORS_HEADERS)
        return _error(404, "No such WHIP session; it may have ended already.")
    if _token_mismatch(request, session.call):
        return _error(401, INVALID_TOKEN, {"WWW-Authenticate": "Bearer"})
    session.end("user_disconnected")
    await session.wait_closed()
    return web.Response(status=200, headers=CORS_HEADERS)


async def whip_patch(request: web.Request) -> web.Response:
    """Trickled candidates (RFC 8840 fragment, ``If-Match`` the session's ETag) → ``204``. An ICE restart (``If-Match:
    *``, or new ICE credentials) → ``405``: aiortc cannot restart ICE."""
    session, finished = _session_for(request)
    if session is None:
        if finished:
            return _error(409, "The WHIP session has ended.")
        return _error(404, "No such WHIP session; it may have ended already.")
    if _token_mismatch(request, session.call):
        return _error(401, INVALID_TOKEN, {"WWW-Authenticate": "Bearer"})
    if request.content_type != TRICKLE_FRAGMENT:
        return _error(415, f"Send the fragment as {TRICKLE_FRAGMENT}.")
    if_match = request.headers.get("If-Match", "")
    restart = _error(405, ICE_RESTART_UNSUPPORTED, {"Allow": "PATCH, DELETE, OPTIONS"})
    if if_match == "*":
        return restart
    if if_match != session.etag:
        return _error(412, "If-Match does not name this WHIP session's ETag.")
    try:
        fragment = parse_fragment(await request.text())
    except ValueError as err:
        return _error(400, f"The ICE fragment could not be read: {err}")
    if not session.is_current_ice(fragment.username_fragment, fragment.password):
        return restart
    await session.add_remote_candidates(fragment.candidates, end=fragment.end_of_candidates)
    return web.Response(status=204, headers={**CORS_HEADERS, "ETag": session.etag})


async def control_media(request: web.Request) -> web.Response:
    hub = request.app[MEDIA_HUB]
    call_id = request.match_info["call_id"]
    session = hub.by_call.get(call_id)
    if session is not None:
        return web.json_response(session.snapshot(asyncio.get_running_loop().time()))
    finished = hub.finished.get(call_id)
    if finished is not None:
        return web.json_response(finished)
    return _error(404, f"No media session for call {call_id}.")


def add_routes(app: web.Application) -> None:
    endpoint = "/v1/web-calls/{call_id}/whip"
    resource = endpoint + "/{session_id}"
    app.router.add_post(endpoint, whip_post)
    app.router.add_route("OPTIONS", endpoint, whip_options)
    app.router.add_delete(resource, whip_delete)
    app.router.add_patch(resource, whip_patch)
    app.router.add_route("OPTIONS", resource, whip_options)
    app.router.add_get("/_control/media/{call_id}", control_media)
