"""``create_app()`` builds the plugin's sub-application; ``setup()`` mounts it in a host app and returns its handle;
``handle_of()`` finds that handle again from the host app (e.g. ``handle_of(request.app)`` in a host handler).

Every lifetime (upstream, store, DialNexa client, event bus) opens and closes in one ``cleanup_ctx``. The host
application is never touched beyond ``add_subapp`` and one typed key that records the mounted handle.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

from aiohttp import web

from . import views
from .config import WebCallConfig
from .errors import ConfigError
from .handle import WebCall
from .keys import HANDLE, MOUNTED, RUNTIME
from .runtime import Runtime


async def _lifetime(app: web.Application) -> AsyncIterator[None]:
    async with app[RUNTIME].running(webhook_path=str(app.router["webhooks"].url_for())):
        yield


async def _close_streams(app: web.Application) -> None:
    await app[RUNTIME].close_streams()


def create_app(config: WebCallConfig | None = None) -> web.Application:
    """The plugin as an aiohttp application, to mount under a prefix (see :func:`setup`)."""
    config = config if config is not None else WebCallConfig.from_env()
    runtime = Runtime(config)
    app = web.Application(middlewares=[views.error_middleware], client_max_size=config.max_body_bytes)
    app[RUNTIME] = runtime
    app[HANDLE] = WebCall(runtime, app)
    app.cleanup_ctx.append(_lifetime)
    app.on_shutdown.append(_close_streams)
    views.add_routes(app)
    return app


def setup(host: web.Application, config: WebCallConfig | None = None, *, prefix: str = "/webcall") -> WebCall:
    """Mount the plugin into ``host`` under ``prefix`` and return its handle."""
    if not prefix.startswith("/") or prefix.endswith("/") or prefix == "/":
        raise ConfigError("prefix must look like '/webcall' (a leading slash, no trailing slash).")
    mounted = host.get(MOUNTED)
    if mounted is None:
        mounted = host[MOUNTED] = {}
    if prefix in mounted:
        raise ConfigError(f"webcall is already mounted at {prefix!r} in this application.")
    app = create_app(config)
    host.add_subapp(prefix, app)
    mounted[prefix] = app[HANDLE]
    return app[HANDLE]


def handle_of(app: web.Application, prefix: str | None = None) -> WebCall:
    """The handle of the plugin mounted in ``app`` (at ``prefix``, needed only when several are mounted), or of
    the plugin application itself."""
    if HANDLE in app:
        return app[HANDLE]
    mounted = app.get(MOUNTED) or {}
    if prefix is not None:
        if prefix not in mounted:
            raise ConfigError(f"webcall is not mounted at {prefix!r} in this application.")
        return mounted[prefix]
    if len(mounted) != 1:
        where = ", ".join(sorted(mounted)) or "nowhere"
        raise ConfigError(f"webcall is mounted {where} in this application: name the prefix.")
    return next(iter(mounted.values()))
