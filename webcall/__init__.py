"""webcall: put a live DialNexa AI voice call on any website from an aiohttp backend.

Mount it in five lines::

    from aiohttp import web
    import webcall

    app = web.Application()
    webcall.setup(app, webcall.WebCallConfig.from_env())
    web.run_app(app)
"""

from .app import WebCall, create_app, setup
from .config import Agent, WebCallConfig
from .errors import (
    ConfigError,
    DialNexaAPIError,
    DialNexaError,
    HTTPProblem,
    TokenError,
    WebCallError,
)

__all__ = [
    "Agent",
    "ConfigError",
    "DialNexaAPIError",
    "DialNexaError",
    "HTTPProblem",
    "TokenError",
    "WebCall",
    "WebCallConfig",
    "WebCallError",
    "create_app",
    "setup",
]

__version__ = "0.1.0"
