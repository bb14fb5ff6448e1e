"""webcall: put a live DialNexa AI voice call on any website from an aiohttp backend.

Mount it in five lines::

    from aiohttp import web
    import webcall

    app = web.Application()
    webcall.setup(app, webcall.WebCallConfig.from_env())
    web.run_app(app)

In a host handler, ``webcall.handle_of(request.app)`` returns the same handle.
"""

from .app import create_app, handle_of, setup
from .bus import Callback, CallbackList, DeadLetter
from .config import Agent, AuthorizeHook, BotCheckHook, VariablesHook, WebCallConfig
from .dialnexa.models import CallRecord, MediaDescriptor, WebCallSession
from .errors import ConfigError, DialNexaAPIError, DialNexaError, HTTPProblem, WebCallError
from .events import CallEvent
from .handle import WebCall
from .ice import IceServer, IceServersHook, TurnRest
from .sse import EventStream, RelaySource, ServerSentEvent
from .store.base import Mailbox
from .tickets import sign_ticket

__all__ = [
    "Agent",
    "AuthorizeHook",
    "BotCheckHook",
    "CallEvent",
    "CallRecord",
    "Callback",
    "CallbackList",
    "ConfigError",
    "DeadLetter",
    "DialNexaAPIError",
    "DialNexaError",
    "EventStream",
    "HTTPProblem",
    "IceServer",
    "IceServersHook",
    "Mailbox",
    "MediaDescriptor",
    "RelaySource",
    "ServerSentEvent",
    "TurnRest",
    "VariablesHook",
    "WebCall",
    "WebCallConfig",
    "WebCallError",
    "WebCallSession",
    "create_app",
    "handle_of",
    "setup",
    "sign_ticket",
]

__version__ = "0.1.0"
