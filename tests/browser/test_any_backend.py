"""A static page with no backend of its own (origin A) embeds the widget from the webcall service (origin B, a real
``python -m webcall serve`` process on its embedded emulator, ``WEBCALL_REQUIRE_TICKET=true``); the page's script
asks the host's backend (origin C, another process) for a call ticket signed with the README's snippet.

With the ticket, the agent greets the visitor by the ticket's name; without one, the visitor sees a clear refusal and
nothing reaches DialNexa. Both under a strict CSP that names only B (and C for the ticket fetch), with no violation.
"""

from __future__ import annotations

import asyncio
import re
import sys
from collections.abc import AsyncIterator
from contextlib import AbstractContextManager
from dataclasses import dataclass
from pathlib import Path

import pytest
import pytest_asyncio
from aiohttp import web

from webcall.emulator.testing import EmulatorControl

from ..hosting import served
from ..service import Service, clean_environment, running_service
from .conftest import NewTab, bind_loopback
from .shared import LIVE, PAGE, PROBE_JS, SITE_CSS, TAG
from .tabs import Tab

pytestmark = [
    pytest.mark.browser,
    pytest.mark.asyncio(loop_scope="session"),
    pytest.mark.engines("chromium", "firefox"),
]

ROOT = Path(__file__).resolve().parents[2]
TICKET_SECRET = "static-site-ticket-secret-0123456789-abcdef"

# The page's own script asks the host's backend for a ticket and hands it to the widget.
PAGE_JS = """\
addEventListener("DOMContentLoaded", async () => {
  const widget = document.querySelector("dialnexa-webcall");
  const response = await fetch(document.querySelector("meta[name=ticket-backend]").content);
  widget.setAttribute("ticket", (await response.json()).ticket);
  document.body.dataset.ticket = "ready";
});
"""


@dataclass
class StaticSite:
    origin: str
    service: Service
    backend: Service


def csp(service: str, backend: str) -> str:
    return (
        f"default-src 'self'; script-src 'self' {service}; connect-src 'self' {service} {backend}; img-src 'self' data:"
    )


async def enter(manager: AbstractContextManager[Service]) -> Service:
    return await asyncio.to_thread(manager.__enter__)


@pytest_asyncio.fixture(loop_scope="session")
async def static_site(tmp_path: Path, request: pytest.FixtureRequest) -> AsyncIterator[StaticSite]:
    """The three origins; the service requires a ticket unless the test parametrizes this fixture with False."""
    require_ticket = getattr(request, "param", True)
    sock = bind_loopback()
    origin = f"http://127.0.0.1:{sock.getsockname()[1]}"
    service_process = running_service(
        [sys.executable, "-m", "webcall", "serve", "--port", "{port}"],
        tmp_path,
        env=clean_environment(
            WEBCALL_ALLOWED_ORIGINS=origin,
            WEBCALL_REQUIRE_TICKET=str(require_ticket).lower(),
            WEBCALL_TICKET_SECRETS=TICKET_SECRET,
        ),
    )
    backend_process = running_service(
        [sys.executable, "-m", "tests.browser.ticket_backend", "{port}"],
        tmp_path,
        env=clean_environment(PAGE_ORIGIN=origin, WEBCALL_TICKET_SECRETS=TICKET_SECRET, PYTHONPATH=str(ROOT)),
    )
    service = await enter(service_process)
    try:
        backend = await enter(backend_process)
        try:
            headers = {"Content-Security-Policy": csp(service.origin, backend.origin)}

            def page(page_script: str) -> web.Response:
                scripts = f'<script src="{service.origin}/webcall/widget.js" defer></script>\n{page_script}'
                body = PAGE.format(script=scripts, element=f'<{TAG} agent="sales"></{TAG}>')
                return web.Response(text=body, content_type="text/html", headers=headers)

            async def with_ticket(request: web.Request) -> web.Response:
                meta = f'<meta name="ticket-backend" content="{backend.origin}/ticket">'
                return page(f'{meta}\n<script src="/page.js" defer></script>')

            async def without_ticket(request: web.Request) -> web.Response:
                return page("")

            async def script(request: web.Request) -> web.Response:
                text = PROBE_JS if request.path == "/probe.js" else PAGE_JS
                return web.Response(text=text, content_type="text/javascript")

            async def css(request: web.Request) -> web.Response:
                return web.Response(text=SITE_CSS, content_type="text/css")

            app = web.Application()
            app.router.add_get("/", with_ticket)
            app.router.add_get("/no-ticket", without_ticket)
            app.router.add_get("/probe.js", script)
            app.router.add_get("/page.js", script)
            app.router.add_get("/site.css", css)
            async with served(app, sock=sock):
                yield StaticSite(origin=origin, service=service, backend=backend)
        finally:
            await asyncio.to_thread(backend_process.__exit__, None, None, None)
    finally:
        await asyncio.to_thread(service_process.__exit__, None, None, None)
        sock.close()


async def call_and_hang_up(tab: Tab, *, hearing: str) -> None:
    """Start a call, hear the agent say ``hearing`` (shown in the transcript), hang up; nothing went wrong."""
    await tab.button("Start call").click()
    await tab.wait_state(*LIVE, within=20)
    await tab.transcript.wait_contains(hearing, within=15)
    await tab.wait_audible()
    await tab.button("End call").click()
    await tab.wait_state("ended")
    await tab.assert_clean()


async def test_a_static_page_calls_with_a_ticket_from_its_backend(static_site: StaticSite, new_tab: NewTab) -> None:
    tab = await new_tab(static_site.origin)
    await tab.wait_for("() => document.body.dataset.ticket === 'ready'", what="the page fetched its ticket")
    await call_and_hang_up(tab, hearing="Hello Grace!")
    printed = await asyncio.to_thread(static_site.service.wait_for_output, "call.ended")
    assert "agent=sales" in printed
    assert await web_calls_created(static_site.service) == 1


@pytest.mark.parametrize("static_site", [False], ids=["tickets-optional"], indirect=True)
async def test_a_static_page_with_no_backend_makes_a_call(static_site: StaticSite, new_tab: NewTab) -> None:
    tab = await new_tab(static_site.origin, "/no-ticket")
    await call_and_hang_up(tab, hearing="This is Nova from DialNexa sales")


async def test_without_a_ticket_the_visitor_sees_a_clear_refusal(static_site: StaticSite, new_tab: NewTab) -> None:
    tab = await new_tab(static_site.origin, "/no-ticket")
    await tab.button("Start call").click()
    assert await tab.wait_state("error", "ended", within=15) == "error"
    errors = [event["detail"] for event in await tab.events("error") if event["detail"]["fatal"]]
    assert [error["code"] for error in errors] == ["ticket_required"]
    await tab.status.wait_text(errors[0]["message"])
    await tab.button("Try again").wait_visible()
    await tab.assert_clean(
        warnings=[r"^\[webcall\] POST \S+/webcall/sessions → 401 ticket_required"],
        errors=[r"^Failed to load resource: the server responded with a status of 401\b"],
    )
    assert await web_calls_created(static_site.service) == 0, "the refusal came before DialNexa"


async def web_calls_created(service: Service) -> int:
    """How many web calls the service's embedded emulator was asked for (its address is in the service's log)."""
    found = re.search(r"local DialNexa emulator at (http://\S+)/v1", service.output())
    assert found, service.output()
    async with EmulatorControl(found[1]) as control:
        return await control.request_count("POST /v1/web-calls")
