"""Debian's WebKitGTK (MiniBrowser) over classic WebDriver, on a private Xvfb display.

WebKitGTK has no ``RTCPeerConnection``, so it stands for every browser that cannot make a voice call: the widget
must say so, offer a call back instead, and lay out as well as anywhere. ``WebKitWebDriver`` speaks the W3C WebDriver
protocol over HTTP (``POST /session``, ``/url``, ``/execute/sync``, ``/screenshot``…); MiniBrowser needs a display,
which a private ``Xvfb`` provides. Both are started per session and stopped with it.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import os
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp

from ..net import free_port

XVFB = "/usr/bin/Xvfb"
WEBKIT_DRIVER = "/usr/bin/WebKitWebDriver"
MINIBROWSER = Path("/usr/lib/x86_64-linux-gnu/webkit2gtk-4.1/MiniBrowser")


def missing() -> str | None:
    """What is not installed for WebKit tests (None when everything is)."""
    for path in (XVFB, WEBKIT_DRIVER, str(MINIBROWSER)):
        if not os.access(path, os.X_OK):
            return path
    return None


class WebDriverError(Exception):
    """A WebDriver command was answered with an error."""


@dataclass
class WebKit:
    """One MiniBrowser session: navigate, run page scripts, resize, take screenshots."""

    http: aiohttp.ClientSession
    base: str

    async def command(self, method: str, path: str, body: dict[str, Any] | None = None) -> Any:
        async with self.http.request(method, f"{self.base}{path}", json=body) as response:
            payload = await response.json(content_type=None)
        value = payload.get("value") if isinstance(payload, dict) else None
        if response.status >= 400:
            error = value if isinstance(value, dict) else {}
            raise WebDriverError(f"{method} {path}: {error.get('error')}: {error.get('message')}")
        return value

    async def goto(self, url: str) -> None:
        await self.command("POST", "/url", {"url": url})

    async def run(self, script: str, *args: Any) -> Any:
        """Run ``script`` (a function body; ``arguments`` holds ``args``) in the page; returns its result."""
        return await self.command("POST", "/execute/sync", {"script": script, "args": list(args)})

    async def resize(self, width: int, height: int) -> None:
        await self.command("POST", "/window/rect", {"width": width, "height": height})

    async def screenshot(self, path: Path) -> None:
        encoded = await self.command("GET", "/screenshot")
        await asyncio.to_thread(path.write_bytes, base64.b64decode(encoded))


async def _start(*command: str, env: dict[str, str] | None = None) -> asyncio.subprocess.Process:
    return await asyncio.create_subprocess_exec(
        *command,
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.DEVNULL,
        env=env,
    )


async def _stop(process: asyncio.subprocess.Process) -> None:
    if process.returncode is None:
        process.terminate()
        try:
            await asyncio.wait_for(process.wait(), 5)
        except TimeoutError:
            process.kill()
            await process.wait()


def _display_socket(number: int) -> Path:
    return Path(f"/tmp/.X11-unix/X{number}")


def _free_display() -> int:
    """An X display number whose socket does not exist yet."""
    for number in range(90, 200):
        if not _display_socket(number).exists() and not Path(f"/tmp/.X{number}-lock").exists():
            return number
    raise RuntimeError("no free X display number between :90 and :199")


@contextlib.asynccontextmanager
async def webkit_session(*, within: float = 30.0) -> AsyncIterator[WebKit]:
    """Xvfb, WebKitWebDriver and one MiniBrowser session, all stopped on exit."""
    display = _free_display()
    xvfb = await _start(XVFB, f":{display}", "-screen", "0", "1400x1000x24", "-nolisten", "tcp")
    driver: asyncio.subprocess.Process | None = None
    http = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=within))
    try:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + within
        while not await asyncio.to_thread(_display_socket(display).exists):
            if xvfb.returncode is not None or loop.time() > deadline:
                raise RuntimeError(f"Xvfb did not start on :{display} (exit code {xvfb.returncode})")
            await asyncio.sleep(0.05)
        port = free_port()
        env = {**os.environ, "DISPLAY": f":{display}"}
        driver = await _start(WEBKIT_DRIVER, f"--port={port}", "--host=127.0.0.1", env=env)
        base = f"http://127.0.0.1:{port}"
        while True:
            try:
                async with http.get(f"{base}/status") as response:
                    if response.status == 200:
                        break
            except aiohttp.ClientError:
                pass
            if driver.returncode is not None or loop.time() > deadline:
                raise RuntimeError(f"WebKitWebDriver did not start (exit code {driver.returncode})")
            await asyncio.sleep(0.1)
        options = {"binary": str(MINIBROWSER), "args": ["--automation"]}
        capabilities = {"capabilities": {"alwaysMatch": {"webkitgtk:browserOptions": options}}}
        async with http.post(f"{base}/session", json=capabilities) as response:
            created = await response.json(content_type=None)
        if response.status != 200:
            raise RuntimeError(f"MiniBrowser did not start: {created}")
        session_id = created["value"]["sessionId"]
        browser = WebKit(http, f"{base}/session/{session_id}")
        try:
            yield browser
        finally:
            with contextlib.suppress(aiohttp.ClientError, TimeoutError, WebDriverError):
                await browser.command("DELETE", "")
    finally:
        await http.close()
        if driver is not None:
            await _stop(driver)
        await _stop(xvfb)
