"""Browser harness: Debian's Chromium (driven by Playwright) and Debian's Firefox ESR (driven over WebDriver BiDi by
``bidi.py``), on host sites that mount the plugin as a customer would.

Each host site is an aiohttp app on loopback serving its pages under the plugin's strict CSP
(``handle.content_security_policy``, nothing relaxed), with ``webcall.setup()`` pointed at an emulator running in this
process. Every page loads ``/probe.js`` first: a script file (the CSP blocks inline scripts) that records CSP
violations, the widget's ``webcall:*`` events with ``performance.now()`` times, page clicks, and the level of the agent
audio the widget plays (an ``AnalyserNode`` on the stream of its ``<audio>`` element).

Tests see a page as a :class:`~tests.browser.tabs.Tab`, the same in both engines. A test marked
``@pytest.mark.engines("chromium", "firefox")`` runs once per engine (ids ``[chromium]`` and ``[firefox]``); an
unmarked one runs in Chromium. Each engine's session browser is launched on first use with the microphone allowed:
Chromium's fake microphone plays silence, Firefox's a tone. Tests that speak into the call launch a Chromium of their
own with a WAV synthesized by the emulator's own TTS; tests that refuse the microphone launch a browser of their
engine with the permission refused. All async fixtures share the session's event loop.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import AsyncIterator, Awaitable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import pytest
import pytest_asyncio
from aiohttp import web
from playwright.async_api import Browser, Playwright, async_playwright

import webcall
from webcall import Agent
from webcall.emulator.config import EmulatorConfig
from webcall.emulator.media import MEDIA_HUB
from webcall.emulator.media.liveness import ice_connections
from webcall.emulator.media.tts import OUTPUT_RATE, get_synthesizer, write_wav
from webcall.emulator.server import EmulatorServer
from webcall.events import CallEvent

from ..hosting import host_config, served
from .bidi import Firefox, firefox_prefs, launch_firefox
from .shared import CHROMIUM, CHROMIUM_ARGS, TAG, add_site_pages, start_demo
from .tabs import Tab, open_tab

API_KEY = "emu_browser:BrowserTestsEmulatorKey"
SESSION_SECRET = "browser-tests-session-secret-0123456789"
WEBHOOK_SECRET = "browser-tests-webhook-secret-0123456789"
HOST_VARIABLES = {"name": "Priya", "company": "Acme"}
AGENTS = {
    "sales": Agent(id="agent_sales", visitor_variables=frozenset({"name", "company"}), label="Sales"),
    "support": Agent(id="agent_support", label="Support"),
}
CALLER_LINE = "I would like to know more about pricing."


# -- audio files for the fake microphone ---------------------------------------------------------------------------
async def write_speech(path: Path, *parts: str | float) -> Path:
    """A 48 kHz mono 16-bit WAV of ``parts``: a string is spoken by the emulator's TTS, a number is that many seconds of
    silence. Chromium plays it in a loop as its fake microphone."""
    synthesizer = get_synthesizer()
    chunks = [
        await synthesizer.synthesize(part) if isinstance(part, str) else np.zeros(int(part * OUTPUT_RATE), np.int16)
        for part in parts
    ]
    write_wav(path, np.concatenate(chunks))
    return path


@pytest.fixture(scope="session")
def audio_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("fake-microphone")


@pytest_asyncio.fixture(scope="session", loop_scope="session")
async def silence_wav(audio_dir: Path) -> Path:
    return await write_speech(audio_dir / "silence.wav", 2.0)


@pytest_asyncio.fixture(scope="session", loop_scope="session")
async def speech_wav(audio_dir: Path) -> Path:
    """1.5 s of silence, the caller's line, then a long silence: one caller turn every ~12 s."""
    return await write_speech(audio_dir / "caller.wav", 1.5, CALLER_LINE, 8.0)


@pytest_asyncio.fixture(scope="session", loop_scope="session")
async def chatty_wav(audio_dir: Path) -> Path:
    """A caller who keeps talking: the line four times over with short breaths (~10 s of speech per loop)."""
    return await write_speech(audio_dir / "chatty.wav", *[part for _ in range(4) for part in (CALLER_LINE, 0.15)])


# -- engines ------------------------------------------------------------------------------------------------------
ENGINES = ("chromium", "firefox")


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers", "engines(*names): run the test once in each browser engine named (chromium, firefox)"
    )


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    """A test marked ``engines("chromium", "firefox")`` runs once per engine (ids ``[chromium]``, ``[firefox]``);
    an unmarked browser test runs in Chromium."""
    marker = metafunc.definition.get_closest_marker("engines")
    if marker is None or "engine" not in metafunc.fixturenames:
        return
    unknown = set(marker.args) - set(ENGINES)
    if unknown or not marker.args:
        raise pytest.UsageError(f"{metafunc.definition.nodeid}: engines{marker.args}: choose from {ENGINES}")
    metafunc.parametrize("engine", marker.args, indirect=True)


@pytest.fixture
def engine(request: pytest.FixtureRequest) -> str:
    """The browser engine of this test: ``chromium`` unless the test is marked ``engines(...)``."""
    name: str = getattr(request, "param", "chromium")
    return name


AnyBrowser = Browser | Firefox
"""A Playwright Chromium or a Firefox on WebDriver BiDi."""


# -- Chromium ------------------------------------------------------------------------------------------------------
@pytest_asyncio.fixture(scope="session", loop_scope="session")
async def playwright() -> AsyncIterator[Playwright]:
    async with async_playwright() as driver:
        yield driver


async def launch_chromium(driver: Playwright, microphone: Path | None, *, allowed: bool = True) -> Browser:
    """Chromium with a fake microphone playing ``microphone`` (a WAV); unless ``allowed`` the permission is refused."""
    args = [a for a in CHROMIUM_ARGS if allowed or not a.startswith("--use-fake-ui")]
    if microphone is not None:
        args.append(f"--use-file-for-fake-audio-capture={microphone}")
    return await driver.chromium.launch(executable_path=CHROMIUM, args=args)


# -- the session's browsers ---------------------------------------------------------------------------------------
class SessionBrowsers:
    """The session's browser of each engine, launched on first use: microphone allowed.

    Chromium's fake microphone plays silence, so the agent never takes a caller turn. Firefox's plays a continuous
    tone (it cannot play a file), which the emulator hears as a caller talking without a pause: no caller turn ends
    within the 20 s a turn may last."""

    def __init__(self, playwright: Playwright, silence: Path) -> None:
        self._playwright = playwright
        self._silence = silence
        self._launched: dict[str, AnyBrowser] = {}
        self._lock = asyncio.Lock()

    async def get(self, engine: str) -> AnyBrowser:
        async with self._lock:
            if engine not in self._launched:
                if engine == "firefox":
                    self._launched[engine] = await launch_firefox(firefox_prefs(microphone=True))
                else:
                    self._launched[engine] = await launch_chromium(self._playwright, self._silence)
            return self._launched[engine]

    async def close(self) -> None:
        for browser in self._launched.values():
            await browser.close()


@pytest_asyncio.fixture(scope="session", loop_scope="session")
async def browsers(playwright: Playwright, silence_wav: Path) -> AsyncIterator[SessionBrowsers]:
    session = SessionBrowsers(playwright, silence_wav)
    yield session
    await session.close()


@pytest_asyncio.fixture(scope="session", loop_scope="session")
async def chromium(browsers: SessionBrowsers) -> Browser:
    """The session's Chromium, for tests that use Playwright directly."""
    browser = await browsers.get("chromium")
    assert isinstance(browser, Browser)
    return browser


class MakeBrowser(Protocol):
    def __call__(self, microphone: Path | None = None, *, allowed: bool = True) -> Awaitable[AnyBrowser]: ...


@pytest_asyncio.fixture(loop_scope="session")
async def make_browser(engine: str, playwright: Playwright) -> AsyncIterator[MakeBrowser]:
    """Launch a browser of the test's engine of its own, closed after the test: with the microphone permission
    refused (not ``allowed``), or (Chromium only) a fake microphone playing the WAV ``microphone``."""
    browsers: list[AnyBrowser] = []

    async def make(microphone: Path | None = None, *, allowed: bool = True) -> AnyBrowser:
        browser: AnyBrowser
        if engine == "chromium":
            browser = await launch_chromium(playwright, microphone, allowed=allowed)
        elif microphone is not None:
            raise pytest.UsageError("Firefox's fake microphone plays a tone, not a file: speaking is Chromium-only")
        else:
            browser = await launch_firefox(firefox_prefs(microphone=allowed))
        browsers.append(browser)
        return browser

    yield make
    for browser in browsers:
        await browser.close()


@pytest_asyncio.fixture(loop_scope="session")
async def talking_browser(
    engine: str, make_browser: MakeBrowser, browsers: SessionBrowsers, chatty_wav: Path
) -> AnyBrowser:
    """A browser whose visitor keeps talking into the call: Chromium plays the chatty WAV as its microphone;
    Firefox's fake microphone is a continuous tone anyway."""
    if engine == "firefox":
        return await browsers.get("firefox")
    return await make_browser(chatty_wav)


# -- emulator ------------------------------------------------------------------------------------------------------
class MakeEmulator(Protocol):
    def __call__(self, **config: Any) -> Awaitable[EmulatorServer]: ...


@pytest_asyncio.fixture(loop_scope="session")
async def make_emulator() -> AsyncIterator[MakeEmulator]:
    started: list[EmulatorServer] = []

    async def make(**config: Any) -> EmulatorServer:
        server = EmulatorServer(EmulatorConfig(api_keys=frozenset({API_KEY}), **config))
        await server.start()
        started.append(server)
        return server

    yield make
    for server in reversed(started):
        await server.stop()


@pytest_asyncio.fixture(loop_scope="session")
async def emu(make_emulator: MakeEmulator) -> EmulatorServer:
    return await make_emulator()


def drop_media(emulator: EmulatorServer, call_id: str) -> None:
    """Cut the call's media path both ways, as a network drop would, while the emulator itself stays up.

    The emulator's ICE sockets stay open but stop sending and ignore whatever arrives, so the browser's consent
    checks go unanswered and its peer connection goes ``disconnected``; HTTP (WHIP DELETE, the REST API) still works.
    """
    session = emulator.app[MEDIA_HUB].by_call[call_id]
    connections = ice_connections(session.pc)
    assert connections, "the call has no ICE transport"

    def drop(*args: Any) -> None:
        return None

    async def drop_async(*args: Any) -> None:
        return None

    for connection in connections:
        for protocol in connection._protocols:
            # Instance attributes shadow the methods asyncio and aioice call.
            vars(protocol).update(datagram_received=drop, send_stun=drop, send_data=drop_async)


# -- host sites ----------------------------------------------------------------------------------------------------
@dataclass
class Site:
    """A customer's site on loopback with the plugin mounted at ``/webcall``."""

    origin: str
    handle: webcall.WebCall
    emulator: EmulatorServer | None
    events: list[CallEvent] = field(default_factory=list)
    changed: asyncio.Event = field(default_factory=asyncio.Event)

    async def record(self, event: CallEvent) -> None:
        """The host's ``on_call_event`` callback."""
        self.events.append(event)
        self.changed.set()

    def found(self, type: str, call_id: str | None = None) -> CallEvent | None:
        return next((e for e in self.events if e.type == type and call_id in (None, e.call_id)), None)

    async def event(self, type: str, call_id: str | None = None, *, within: float = 10.0) -> CallEvent:
        """The first host callback event of ``type`` (for ``call_id``), waiting up to ``within`` seconds."""
        async with asyncio.timeout(within):
            while (found := self.found(type, call_id)) is None:
                self.changed.clear()
                await self.changed.wait()
        return found

    async def call_id(self, *, within: float = 10.0) -> str:
        """The id of the latest call minted on this site (from the host's ``session.created`` callback)."""
        await self.event("session.created", within=within)
        return [e for e in self.events if e.type == "session.created"][-1].call_id


class MakeSite(Protocol):
    def __call__(
        self, emulator: EmulatorServer | None, *, widget: Mapping[str, str] | None = None, **options: Any
    ) -> Awaitable[Site]: ...


def bind_loopback() -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(("127.0.0.1", 0))
        sock.setblocking(False)
    except BaseException:
        sock.close()
        raise
    return sock


def host_variables(request: web.Request, alias: str, agent: Agent) -> dict[str, str]:
    """The host's ``variables`` hook: what the site knows about the visitor."""
    return dict(HOST_VARIABLES)


@pytest_asyncio.fixture(loop_scope="session")
async def make_site(make_emulator: MakeEmulator) -> AsyncIterator[MakeSite]:
    """Build and serve a host site. ``widget`` adds attributes to the page's ``<dialnexa-webcall agent="sales">``;
    options override the plugin's configuration (``base_url`` without an emulator: DialNexa unreachable)."""
    async with contextlib.AsyncExitStack() as serving:

        async def make(
            emulator: EmulatorServer | None, *, widget: Mapping[str, str] | None = None, **options: Any
        ) -> Site:
            sock = bind_loopback()
            try:
                return await serve(sock, emulator, widget, options)
            except BaseException:
                sock.close()
                raise

        async def serve(
            sock: socket.socket,
            emulator: EmulatorServer | None,
            widget: Mapping[str, str] | None,
            options: dict[str, Any],
        ) -> Site:
            origin = f"http://127.0.0.1:{sock.getsockname()[1]}"
            settings: dict[str, Any] = {
                "agents": AGENTS,
                "allowed_origins": (origin,),
                "session_secrets": (SESSION_SECRET,),
                "webhook_secrets": (WEBHOOK_SECRET,),
                "variables": host_variables,
                "upstream_timeout": 2.0,
                "upstream_deadline": 4.0,
                "callback_countries": ("US", "CA", "GB"),  # call-backs are off until a site names where they ring
            }
            if emulator is None:
                settings.update(api_key=API_KEY)
            settings.update(options)
            app = web.Application()
            handle = webcall.setup(app, host_config(emulator, **settings))
            site = Site(origin=origin, handle=handle, emulator=emulator)
            handle.on_call_event.append(site.record)
            add_site_pages(app, handle, {"agent": "sales", **(widget or {})})
            await serving.enter_async_context(served(app, sock=sock))
            if emulator is not None:
                await handle.ensure_webhook(origin + "/webcall/webhooks")
            return site

        yield make


@pytest_asyncio.fixture(loop_scope="session")
async def site(make_site: MakeSite, emu: EmulatorServer) -> Site:
    return await make_site(emu)


# -- pages ---------------------------------------------------------------------------------------------------------
class NewTab(Protocol):
    def __call__(
        self, site: Site | str, path: str = "/", *, browser: AnyBrowser | None = None, inject_probe: bool = False
    ) -> Awaitable[Tab]: ...


@pytest_asyncio.fixture(loop_scope="session")
async def new_tab(
    engine: str, browsers: SessionBrowsers, make_browser: MakeBrowser, tmp_path: Path
) -> AsyncIterator[NewTab]:
    """Open a page of a host site (or of any origin) in a fresh browser context of the test's engine, in the
    session's browser of that engine unless another is given. Sites we build load /probe.js themselves; elsewhere
    ``inject_probe`` adds it to every page through the automation protocol (which a page's CSP does not govern).
    Tabs close before the test's own browsers (``make_browser``) do."""
    tabs: list[Tab] = []
    shots = tmp_path / "shots"

    async def open_site_tab(
        site: Site | str, path: str = "/", *, browser: AnyBrowser | None = None, inject_probe: bool = False
    ) -> Tab:
        url = (site.origin if isinstance(site, Site) else site) + path
        browser = browser or await browsers.get(engine)
        tab = await open_tab(browser, url, shots, inject_probe=inject_probe)
        tabs.append(tab)
        await tab.wait_for(
            "(tag) => customElements.get(tag) !== undefined && document.querySelector(tag) !== null",
            TAG,
            what="the widget is defined and in the page",
        )
        return tab

    yield open_site_tab
    for tab in tabs:
        await tab.close()


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def demo_url() -> AsyncIterator[str]:
    """``python -m demo`` on its embedded emulator, for the tests of one module; its URL."""
    process, url, _ = await start_demo()
    try:
        yield url
    finally:
        if process.returncode is None:
            process.terminate()
        await asyncio.wait_for(process.wait(), 15)
