"""The emulator's media side: a WHIP endpoint on aiortc with a simulated, speaking DialNexa agent.

Needs the ``emulator`` extra (aiortc, numpy, espeakng-loader, pocketsphinx); importing this package without it
raises ``ImportError``, which the emulator app treats as "no media".
"""

from __future__ import annotations

from aiohttp import web

from webcall.emulator.state import EmulatorState

from .session import MediaSettings
from .tts import SpeechSynthesisError
from .vad import TurnSettings
from .whip import MEDIA_HUB, MediaHub, add_routes

__all__ = ["MEDIA_HUB", "MediaHub", "MediaSettings", "SpeechSynthesisError", "TurnSettings", "setup_media"]


def setup_media(app: web.Application, state: EmulatorState, *, settings: MediaSettings | None = None) -> None:
    """Add the WHIP routes, the media control route and the media lifetime (cleanup_ctx) to the emulator ``app``.

    At startup libespeak-ng is loaded (a :class:`SpeechSynthesisError` says what is missing); at shutdown every
    peer connection is closed and its call ended.
    """
    hub = MediaHub(state, settings or MediaSettings())
    app[MEDIA_HUB] = hub
    state.listen(hub.on_state_event)
    add_routes(app)
    app.cleanup_ctx.append(hub.lifespan)
