"""Debian's Firefox ESR over WebDriver BiDi: a small client on aiohttp's websocket, and Firefox's launch.

Firefox is started headless with ``--remote-debugging-port=0`` and a fresh profile whose ``user.js`` holds the
prefs below, beside its own PulseAudio server playing into a null sink (see :class:`NullSoundServer`). It prints
the BiDi address (``WebDriver BiDi listening on ws://127.0.0.1:<port>``) on stderr, and the session lives at
``ws://127.0.0.1:<port>/session``. Commands are JSON objects ``{"id", "method", "params"}`` answered by
``{"id", "type": "success", "result"}`` or ``{"id", "type": "error", "error", "message"}``; events
(``{"type": "event", "method", "params"}``) go to the handlers registered with :meth:`BiDi.on`.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import logging
import os
import re
import shutil
import tempfile
from collections import defaultdict
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol
from urllib.parse import urlsplit

import aiohttp

__all__ = ["FIREFOX", "BiDi", "BiDiError", "Firefox", "NullSoundServer", "firefox_prefs", "launch_firefox"]

log = logging.getLogger("tests.browser.bidi")

FIREFOX = "/usr/bin/firefox-esr"

QUIET_PREFS: dict[str, Any] = {
    # A closed network: no updates, telemetry, safe browsing, captive-portal or connectivity probes, remote settings.
    "app.update.enabled": False,
    "app.update.auto": False,
    "app.normandy.enabled": False,
    "browser.safebrowsing.malware.enabled": False,
    "browser.safebrowsing.phishing.enabled": False,
    "browser.safebrowsing.downloads.enabled": False,
    "browser.safebrowsing.blockedURIs.enabled": False,
    "browser.search.update": False,
    "browser.shell.checkDefaultBrowser": False,
    "browser.startup.homepage_override.mstone": "ignore",
    "browser.startup.page": 0,
    "browser.newtabpage.enabled": False,
    "browser.aboutwelcome.enabled": False,
    "browser.discovery.enabled": False,
    "browser.ping-centre.telemetry": False,
    "captivedetect.canonicalURL": "",
    "network.captive-portal-service.enabled": False,
    "network.connectivity-service.enabled": False,
    "network.dns.disablePrefetch": True,
    "network.prefetch-next": False,
    "network.predictor.enabled": False,
    "datareporting.healthreport.uploadEnabled": False,
    "datareporting.policy.dataSubmissionEnabled": False,
    "toolkit.telemetry.enabled": False,
    "toolkit.telemetry.unified": False,
    "toolkit.telemetry.server": "",
    "extensions.update.enabled": False,
    "extensions.getAddons.cache.enabled": False,
    "extensions.systemAddon.update.enabled": False,
    "services.settings.server": "",
    "media.gmp-manager.updateEnabled": False,
    "media.gmp-gmpopenh264.enabled": False,
    "identity.fxaccounts.enabled": False,
    "dom.push.enabled": False,
    "remote.prefs.recommended": True,
}

MEDIA_PREFS: dict[str, Any] = {
    # Fake capture devices (a tone on the microphone) instead of real ones.
    "media.navigator.streams.fake": True,
    # Sound goes to the PulseAudio server started with Firefox (no sound card on a CI machine).
    "media.cubeb.backend": "pulse",
    "media.autoplay.default": 0,
    "media.autoplay.blocking_policy": 0,
}

MICROPHONE_ALLOWED: dict[str, Any] = {
    # Grant getUserMedia without a prompt. With a granted (fake) device Firefox offers real host candidates: the
    # permission.fake pref counts as granted; without it Firefox hides its addresses behind mDNS names.
    "media.navigator.permission.disabled": True,
    "media.navigator.permission.fake": True,
}

MICROPHONE_REFUSED: dict[str, Any] = {
    # The visitor said no: the permission prompt is answered "block", so getUserMedia rejects with NotAllowedError,
    # and Firefox offers only mDNS (.local) host candidates.
    "media.navigator.permission.disabled": False,
    "permissions.default.microphone": 2,
    "permissions.default.camera": 2,
}


def firefox_prefs(*, microphone: bool) -> dict[str, Any]:
    """The profile's prefs: quiet, fake media, and the microphone allowed or refused."""
    return {**QUIET_PREFS, **MEDIA_PREFS, **(MICROPHONE_ALLOWED if microphone else MICROPHONE_REFUSED)}


def user_js(prefs: Mapping[str, Any]) -> str:
    return "".join(f"user_pref({json.dumps(name)}, {json.dumps(value)});\n" for name, value in prefs.items())


class BiDiError(Exception):
    """A BiDi command was answered with an error."""

    def __init__(self, method: str, error: str, message: str) -> None:
        super().__init__(f"{method}: {error}: {message}")
        self.error = error


class BiDi:
    """One WebDriver BiDi session over a websocket."""

    def __init__(self, http: aiohttp.ClientSession, ws: aiohttp.ClientWebSocketResponse) -> None:
        self._http = http
        self._ws = ws
        self._ids = itertools.count(1)
        self._pending: dict[int, tuple[str, asyncio.Future[dict[str, Any]]]] = {}
        self._handlers: defaultdict[str, list[Callable[[dict[str, Any]], None]]] = defaultdict(list)
        self._reader = asyncio.ensure_future(self._read())

    @classmethod
    async def connect(cls, url: str, *, host: str | None = None) -> BiDi:
        """The session at ``url``; ``host`` is the ``Host`` header when ``url`` is not the address Firefox announced
        (a forward from another network namespace): its Remote Agent answers only a ``Host`` naming its own."""
        http = aiohttp.ClientSession()
        try:
            headers = {"Host": host} if host is not None else None
            ws = await http.ws_connect(url, max_msg_size=64 * 1024 * 1024, headers=headers)
        except BaseException:
            await http.close()
            raise
        return cls(http, ws)

    def on(self, event: str, handler: Callable[[dict[str, Any]], None]) -> None:
        """Call ``handler(params)`` for every ``event`` (subscribe to it with ``session.subscribe`` too)."""
        self._handlers[event].append(handler)

    async def command(self, method: str, params: Mapping[str, Any] | None = None) -> dict[str, Any]:
        """Send a command; its ``result``, or :class:`BiDiError`."""
        if self._reader.done():
            raise ConnectionError(f"{method}: the BiDi connection is closed")
        id = next(self._ids)
        answer: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        self._pending[id] = (method, answer)
        try:
            await self._ws.send_str(json.dumps({"id": id, "method": method, "params": dict(params or {})}))
            return await answer
        finally:
            self._pending.pop(id, None)

    async def _read(self) -> None:
        try:
            async for message in self._ws:
                if message.type != aiohttp.WSMsgType.TEXT:
                    continue
                self._dispatch(json.loads(message.data))
        finally:
            for method, answer in self._pending.values():
                if not answer.done():
                    answer.set_exception(ConnectionError(f"{method}: the BiDi connection closed"))

    def _dispatch(self, message: dict[str, Any]) -> None:
        if message.get("type") == "event":
            for handler in self._handlers.get(message["method"], ()):
                try:
                    handler(message["params"])
                except Exception:
                    log.exception("BiDi event handler for %s failed", message["method"])
            return
        pending = self._pending.get(message.get("id", -1))
        if pending is None:
            return
        method, answer = pending
        if answer.done():
            return
        if message.get("type") == "success":
            answer.set_result(message["result"])
        else:
            answer.set_exception(BiDiError(method, message.get("error", "error"), message.get("message", "")))

    async def close(self) -> None:
        await self._ws.close()
        await self._http.close()
        with contextlib.suppress(asyncio.CancelledError):
            await self._reader


class TabListener(Protocol):
    """What a tab hears of its browsing context."""

    def on_log(self, entry: dict[str, Any]) -> None: ...

    def on_response(self, event: dict[str, Any]) -> None: ...


PULSEAUDIO = "/usr/bin/pulseaudio"


@dataclass
class NullSoundServer:
    """A private PulseAudio server whose only output is a null sink, for one Firefox.

    Firefox's audio graph runs on its sound output's clock: with no sound device it falls back to a system clock, and
    then every ``AudioContext`` stays ``suspended``, so a page (or the test probe) hears nothing. Neither
    ``media.cubeb.force_null_context`` nor an ALSA null device changes that; a PulseAudio null sink does. The server
    listens on a socket in its own directory (``PULSE_SERVER``), without a session bus, a cookie or a config file.
    """

    process: asyncio.subprocess.Process
    directory: Path

    @property
    def address(self) -> str:
        return f"unix:{self.directory / 'native'}"

    @classmethod
    async def start(cls, *, within: float = 15.0) -> NullSoundServer:
        if not os.access(PULSEAUDIO, os.X_OK):
            raise RuntimeError(f"{PULSEAUDIO} is missing: apt-get install pulseaudio (Firefox needs a sound server)")
        directory = Path(tempfile.mkdtemp(prefix="webcall-pulse-"))
        socket_path = directory / "native"
        process = await asyncio.create_subprocess_exec(
            PULSEAUDIO,
            "--daemonize=no",
            "--exit-idle-time=-1",
            "--use-pid-file=no",
            "--disable-shm",
            "-n",  # no default.pa: only the modules below
            "--load=module-null-sink sink_name=null",
            f"--load=module-native-protocol-unix auth-anonymous=1 socket={socket_path}",
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.DEVNULL,
            env={**os.environ, "HOME": str(directory), "XDG_RUNTIME_DIR": str(directory)},
        )
        server = cls(process, directory)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + within
        while not socket_path.exists():
            if process.returncode is not None or loop.time() > deadline:
                await server.close()
                raise RuntimeError(f"PulseAudio did not start (exit code {process.returncode})")
            await asyncio.sleep(0.05)
        return server

    async def close(self) -> None:
        if self.process.returncode is None:
            self.process.terminate()
            try:
                await asyncio.wait_for(self.process.wait(), 5)
            except TimeoutError:
                self.process.kill()
                await self.process.wait()
        shutil.rmtree(self.directory, ignore_errors=True)


@dataclass
class Firefox:
    """A running Firefox and its BiDi session; the tabs open in it, by browsing context id, get their events."""

    process: asyncio.subprocess.Process
    profile: Path
    bidi: BiDi
    sound: NullSoundServer
    stderr: list[str] = field(default_factory=list)
    tabs: dict[str, TabListener] = field(default_factory=dict)
    drain: asyncio.Future[None] | None = None

    async def listen(self) -> None:
        """Route console messages, page errors and responses to the tab of their browsing context."""

        def on_log(entry: dict[str, Any]) -> None:
            if tab := self.tabs.get(entry.get("source", {}).get("context", "")):
                tab.on_log(entry)

        def on_response(event: dict[str, Any]) -> None:
            if tab := self.tabs.get(event.get("context") or ""):
                tab.on_response(event)

        self.bidi.on("log.entryAdded", on_log)
        self.bidi.on("network.responseCompleted", on_response)
        await self.bidi.command("session.subscribe", {"events": ["log.entryAdded", "network.responseCompleted"]})

    async def close(self) -> None:
        with contextlib.suppress(Exception):
            await asyncio.wait_for(self.bidi.command("browser.close"), 5)
        await self.bidi.close()
        try:
            await asyncio.wait_for(self.process.wait(), 10)
        except TimeoutError:
            self.process.kill()
            await self.process.wait()
        if self.drain is not None:
            await self.drain
        await self.sound.close()
        shutil.rmtree(self.profile, ignore_errors=True)


def _environment(sound: NullSoundServer) -> dict[str, str]:
    """Firefox's environment: headless for sure (no display), no crash reporter, its own sound server."""
    env = {k: v for k, v in os.environ.items() if k not in ("DISPLAY", "WAYLAND_DISPLAY")}
    return {**env, "MOZ_HEADLESS": "1", "MOZ_CRASHREPORTER_DISABLE": "1", "PULSE_SERVER": sound.address}


_LISTENING = re.compile(r"WebDriver BiDi listening on (ws://\S+)")


async def launch_firefox(
    prefs: Mapping[str, Any],
    *,
    within: float = 60.0,
    command_prefix: Sequence[str] = (),
    prepare_profile: Callable[[Path], Awaitable[None]] | None = None,
    reach: Callable[[str], Awaitable[str]] | None = None,
) -> Firefox:
    """Start headless Firefox on a fresh profile with ``prefs`` and open a BiDi session on it.

    Optional, for a Firefox elsewhere (e.g. in a network namespace): ``command_prefix`` goes before the command
    (``ip netns exec NAME``), ``prepare_profile(profile)`` runs on the new profile before Firefox starts (e.g. to add a
    CA to its certificate database), and ``reach(url)`` maps the BiDi address Firefox announces to one this process
    can connect to (e.g. through a forwarder)."""
    sound = await NullSoundServer.start()
    profile = Path(tempfile.mkdtemp(prefix="webcall-firefox-"))
    (profile / "user.js").write_text(user_js(prefs))
    try:
        if prepare_profile is not None:
            await prepare_profile(profile)
    except BaseException:
        await sound.close()
        shutil.rmtree(profile, ignore_errors=True)
        raise
    process = await asyncio.create_subprocess_exec(
        *command_prefix,
        FIREFOX,
        "--headless",
        "--no-remote",
        "--remote-debugging-port=0",
        "--profile",
        str(profile),
        "about:blank",
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.PIPE,
        env=_environment(sound),
    )
    stderr: list[str] = []
    try:
        announced = await asyncio.wait_for(_bidi_address(process, stderr), within)
        url = announced if reach is None else await reach(announced)
        host = None if url == announced else urlsplit(announced).netloc
        bidi = await BiDi.connect(url.rstrip("/") + "/session", host=host)
        try:
            await bidi.command("session.new", {"capabilities": {"alwaysMatch": {"unhandledPromptBehavior": "ignore"}}})
        except BaseException:
            await bidi.close()
            raise
    except BaseException:
        if process.returncode is None:
            process.kill()
            await process.wait()
        await sound.close()
        shutil.rmtree(profile, ignore_errors=True)
        raise
    firefox = Firefox(process=process, profile=profile, bidi=bidi, sound=sound, stderr=stderr)
    firefox.drain = asyncio.ensure_future(_drain(process, stderr))
    await firefox.listen()
    return firefox


async def _bidi_address(process: asyncio.subprocess.Process, stderr: list[str]) -> str:
    assert process.stderr is not None
    while line := await process.stderr.readline():
        text = line.decode(errors="replace").rstrip()
        stderr.append(text)
        if match := _LISTENING.search(text):
            return match[1]
    raise RuntimeError("Firefox exited before it listened for WebDriver BiDi:\n" + "\n".join(stderr[-20:]))


async def _drain(process: asyncio.subprocess.Process, stderr: list[str]) -> None:
    """Keep reading Firefox's stderr (so it never blocks on a full pipe); the last lines help a failing test."""
    assert process.stderr is not None
    while line := await process.stderr.readline():
        stderr.append(line.decode(errors="replace").rstrip())
        del stderr[:-200]
