"""Every object the plugin keeps on its aiohttp application, each under one typed key."""

from __future__ import annotations

from typing import TYPE_CHECKING

from aiohttp import web

if TYPE_CHECKING:
    from .app import WebCall

WEBCALL: web.AppKey[WebCall] = web.AppKey("webcall.webcall")
