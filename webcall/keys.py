"""Every object the plugin keeps on an aiohttp application, each under one typed key."""

from __future__ import annotations

from typing import TYPE_CHECKING

from aiohttp import web

if TYPE_CHECKING:
    from .handle import WebCall
    from .runtime import Runtime

RUNTIME: web.AppKey[Runtime] = web.AppKey("webcall.runtime")
"""On the plugin's sub-application: what its routes share."""
HANDLE: web.AppKey[WebCall] = web.AppKey("webcall.handle")
"""On the plugin's sub-application: the host's handle."""
MOUNTED: web.AppKey[dict[str, WebCall]] = web.AppKey("webcall.mounted")
"""On a host application: the handles of the plugins :func:`webcall.setup` mounted in it, by prefix."""
