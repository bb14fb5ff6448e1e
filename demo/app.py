"""The demo host site: a landing page with the floating widget, agent and theme choices, a persona form whose
values reach the agent through the ``variables`` hook, a live console fed by ``on_call_event``, and an embed page.

The console is private to each visitor: the first page a browser opens gives it a random visitor cookie, the
``variables`` hook stores a digest of that cookie with each call the browser starts, and the console streams a
browser only the lines of calls stored with its own digest (a call without one is shown to nobody).
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import secrets
from collections import OrderedDict, deque
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import jinja2
from aiohttp import web
from aiohttp.typedefs import Handler

import webcall
from webcall import CallEvent, Mailbox

HERE = Path(__file__).resolve().parent
PERSONA_COOKIE = "demo_persona"
VISITOR_COOKIE = "demo_visitor"
"""A random id per browser (HttpOnly, SameSite=Lax), set by the first page it opens."""
VISITOR_VARIABLE = "demo_visitor"
"""The call's variable holding the digest of its visitor's cookie (never the cookie itself)."""
_VISITOR_ID = re.compile(r"[A-Za-z0-9_-]{32}")
VISITOR_MAX_AGE = 30 * 86400
CONSOLE_LINES = 200
"""Console lines kept per visitor (the newest)."""
CONSOLE_VISITORS = 1000
"""Visitors whose console lines are kept (those with the most recent calls)."""
CONSOLE_BACKLOG = 30
"""Lines a console shows from before it opened."""
_CLEAN = re.compile(r"[\x00-\x1f\x7f{}<>]")

AGENTS = {
    "sales": ("Sales", "Nova answers questions about plans and books a trial.", "#4f46e5"),
    "support": ("Support", "Sam troubleshoots an account and fixes it on the call.", "#0d9488"),
    "collections": ("Accounts", "Ava agrees a payment plan, politely.", "#b45309"),
}
THEMES = {
    "light": {"label": "Light"},
    "dark": {"label": "Dark"},
    "brand": {"label": "Brand"},
}
THEME_PROPERTIES = {
    "light": {},
    "dark": {"--webcall-bg": "#111827", "--webcall-fg": "#f9fafb", "--webcall-accent": "#818cf8"},
    "brand": {
        "--webcall-accent": "#e11d48",
        "--webcall-radius": "4px",
        "--webcall-bg": "#fff7ed",
        "--webcall-fg": "#431407",
    },
}

CALLBACK_COUNTRIES = "US,CA,GB"
"""Where the demo's "call me back" may ring, unless ``WEBCALL_CALLBACK_COUNTRIES`` says otherwise (call-backs are off
until a site names its countries)."""

CONSOLE: web.AppKey[Console] = web.AppKey("demo.console")
TEMPLATES: web.AppKey[jinja2.Environment] = web.AppKey("demo.templates")


class Console:
    """What the host's callback receives, kept per visitor for the page's live console: the newest
    ``lines_per_visitor`` lines of each of the ``visitors`` visitors with the most recent calls."""

    def __init__(self, *, lines_per_visitor: int = CONSOLE_LINES, visitors: int = CONSOLE_VISITORS) -> None:
        self.lines_per_visitor = lines_per_visitor
        self.visitors = visitors
        self.lines: OrderedDict[str, deque[dict[str, Any]]] = OrderedDict()
        self.listeners: dict[str, set[Mailbox[dict[str, Any]]]] = {}
        self.streams: set[Mailbox[dict[str, Any]]] = set()

    async def record(self, event: CallEvent) -> None:
        visitor = visitor_of(event)
        if visitor is None:  # not started from a demo page: no visitor's console shows it
            return
        kept = self.lines.get(visitor)
        if kept is None:
            kept = self.lines[visitor] = deque(maxlen=self.lines_per_visitor)
        self.lines.move_to_end(visitor)
        while len(self.lines) > self.visitors:
            self.lines.popitem(last=False)
        for line in describe(event):
            kept.append(line)
            for box in list(self.listeners.get(visitor, ())):
                box.put(line)

    def backlog(self, visitor: str, count: int = CONSOLE_BACKLOG) -> list[dict[str, Any]]:
        """The visitor's newest ``count`` lines."""
        return list(self.lines.get(visitor, ()))[-count:]

    def listen(self, visitor: str | None, box: Mailbox[dict[str, Any]]) -> None:
        """Stream the visitor's new lines to ``box`` (none for a browser without a visitor id) until shutdown."""
        self.streams.add(box)
        if visitor is not None:
            self.listeners.setdefault(visitor, set()).add(box)

    def forget(self, visitor: str | None, box: Mailbox[dict[str, Any]]) -> None:
        self.streams.discard(box)
        if visitor is not None and visitor in self.listeners:
            self.listeners[visitor].discard(box)
            if not self.listeners[visitor]:
                del self.listeners[visitor]

    async def close(self) -> None:
        for box in list(self.streams):
            box.close()


def visitor_of(event: CallEvent) -> str | None:
    """The visitor digest stored with the event's call, if it was started from a demo page."""
    variables = event.context.get("variables") or {}
    visitor = variables.get(VISITOR_VARIABLE) if isinstance(variables, dict) else None
    return visitor if isinstance(visitor, str) and visitor else None


def describe(event: CallEvent) -> list[dict[str, Any]]:
    """Console lines for one event: the event itself, then (for call.ended) the transcript and summary."""
    context = event.context or {}
    variables = context.get("variables") or {}
    head = {
        "time": event.time,
        "type": event.type,
        "call_id": event.call_id,
        "agent": context.get("agent"),
        "detail": "",
    }
    if event.type == "session.created":
        shown = {k: v for k, v in variables.items() if k != VISITOR_VARIABLE}
        head["detail"] = "variables: " + (", ".join(f"{k}={v}" for k, v in shown.items()) or "none")
    elif event.type == "call.started":
        head["detail"] = "media connected"
    elif event.type == "call.ended":
        head["detail"] = f"{event.call.get('end_reason') or 'ended'}, {event.call.get('duration') or 0:.0f} s"
    elif event.type == "callback.requested":
        head["detail"] = f"ringing {context.get('phone_number', '')}"
    lines = [head]
    if event.type == "call.ended":
        for turn in event.call.get("transcript_object") or []:
            role = "Agent" if turn.get("role") == "agent" else "Caller"
            lines.append({**head, "type": "transcript", "detail": f"{role}: {turn.get('content', '')}"})
        if event.call.get("summary"):
            lines.append({**head, "type": "summary", "detail": str(event.call["summary"])})
        if event.quality:
            lines.append({**head, "type": "quality", "detail": describe_quality(event.quality)})
    return lines


def describe_quality(quality: dict[str, Any]) -> str:
    """The browser's quality summary in a sentence: how it connected, how the audio travelled."""
    route = {"host": "direct", "srflx": "through NAT", "prflx": "through NAT", "relay": "through TURN"}
    parts = [f"{route.get(quality.get('candidate', ''), 'unknown route')} over {quality.get('protocol', '?')}"]
    if "connect_ms" in quality:
        parts.append(f"connected in {quality['connect_ms']} ms")
    if "rtt_ms" in quality:
        parts.append(f"round trip {quality['rtt_ms']} ms (worst {quality.get('rtt_max_ms', '?')})")
    if "jitter_ms" in quality:
        parts.append(f"jitter {quality['jitter_ms']} ms")
    lost_out = f"{quality['loss_out'] * 100:.1f} %" if "loss_out" in quality else "n/a"
    parts.append(f"lost {quality.get('loss_in', 0) * 100:.1f} % in / {lost_out} out")
    parts.append(f"weak {quality.get('weak_s', 0)} s")
    return ", ".join(parts)


def persona(request: web.Request) -> dict[str, str]:
    raw = request.cookies.get(PERSONA_COOKIE, "")
    try:
        data = json.loads(raw) if raw else {}
    except ValueError:
        data = {}
    out = {}
    for key in ("name", "company"):
        value = data.get(key) if isinstance(data, dict) else None
        if isinstance(value, str) and _CLEAN.sub("", value).strip():
            out[key] = _CLEAN.sub("", value).strip()[:60]
    return out


def visitor_cookie(request: web.Request) -> str | None:
    """The browser's visitor id, when it has a well-formed one."""
    value = request.cookies.get(VISITOR_COOKIE, "")
    return value if _VISITOR_ID.fullmatch(value) else None


def visitor_digest(request: web.Request) -> str | None:
    """Who the browser is, as stored with its calls: a digest of its visitor cookie, so nothing stored or logged
    with a call lets anyone read that visitor's console."""
    value = visitor_cookie(request)
    return hashlib.sha256(value.encode()).hexdigest()[:32] if value is not None else None


def give_visitor_cookie(request: web.Request, response: web.StreamResponse) -> None:
    """A browser without a visitor id gets a random one."""
    if visitor_cookie(request) is None:
        response.set_cookie(
            VISITOR_COOKIE,
            secrets.token_urlsafe(24),
            httponly=True,
            samesite="Lax",
            max_age=VISITOR_MAX_AGE,
            secure=request.secure,
        )


async def persona_variables(request: web.Request, alias: str, agent: webcall.Agent) -> dict[str, str]:
    """The host's ``variables`` hook: the visitor's persona from the demo form, and the visitor's digest, which ties
    the call's events to that visitor's console. What the visitor left out, the agent fills from its own defaults
    ("Hello there!")."""
    values = persona(request)
    visitor = visitor_digest(request)
    if visitor is not None:
        values[VISITOR_VARIABLE] = visitor
    return values


@web.middleware
async def security_headers(request: web.Request, handler: Handler) -> web.StreamResponse:
    response = await handler(request)
    if response.content_type == "text/html":
        csp = webcall.handle_of(request.app).content_security_policy
        response.headers["Content-Security-Policy"] = (
            f"{csp}; form-action 'self'; base-uri 'none'; frame-ancestors 'none'"
        )
        response.headers["Referrer-Policy"] = "same-origin"
        response.headers["X-Content-Type-Options"] = "nosniff"
    return response


def _choice(request: web.Request, name: str, options: dict[str, Any], default: str) -> str:
    value = request.query.get(name, default)
    return value if value in options else default


def _render(request: web.Request, template: str, **context: Any) -> web.Response:
    html = request.app[TEMPLATES].get_template(template).render(**context)
    response = web.Response(text=html, content_type="text/html")
    give_visitor_cookie(request, response)
    return response


def _state(request: web.Request) -> dict[str, Any]:
    agent = _choice(request, "agent", AGENTS, "sales")
    theme = _choice(request, "theme", THEMES, "light")
    return {
        "agent": agent,
        "theme": theme,
        "agents": AGENTS,
        "themes": THEMES,
        "persona": persona(request),
        "handle": webcall.handle_of(request.app),
        "link": lambda **change: "?" + urlencode({"agent": agent, "theme": theme, **change}),
    }


async def index(request: web.Request) -> web.Response:
    return _render(request, "index.html", **_state(request))


async def embed(request: web.Request) -> web.Response:
    state = _state(request)
    handle = webcall.handle_of(request.app)
    snippet_attributes = {"data-agent": state["agent"], "data-callback": "true"}
    properties = THEME_PROPERTIES[state["theme"]]
    return _render(
        request,
        "embed.html",
        **state,
        widget_url=handle.widget_url,
        widget_sri=handle.widget_sri,
        snippet_attributes=snippet_attributes,
        properties=properties,
        csp=handle.content_security_policy,
    )


async def save_persona(request: web.Request) -> web.Response:
    form = await request.post()
    data = {k: str(form.get(k, ""))[:60] for k in ("name", "company")}
    back = "/?" + urlencode(
        {"agent": _choice(request, "agent", AGENTS, "sales"), "theme": _choice(request, "theme", THEMES, "light")}
    )
    response = web.HTTPSeeOther(back)
    response.set_cookie(PERSONA_COOKIE, json.dumps(data), httponly=True, samesite="Lax", max_age=86400)
    give_visitor_cookie(request, response)
    raise response


async def console_stream(request: web.Request) -> web.StreamResponse:
    """The visitor's own console lines: the newest from before, then each as it comes. A browser without a visitor
    cookie has no calls of its own, so it sees nothing."""
    console = request.app[CONSOLE]
    visitor = visitor_digest(request)
    box: Mailbox[dict[str, Any]] = Mailbox(size=500)
    console.listen(visitor, box)
    try:
        return await webcall.EventStream(request).relay(
            box,
            as_event=lambda line: webcall.ServerSentEvent(json.dumps(line)),
            backlog=console.backlog(visitor) if visitor is not None else [],
        )
    finally:
        console.forget(visitor, box)


async def _close_console(app: web.Application) -> None:
    await app[CONSOLE].close()


def create_demo_app(config: webcall.WebCallConfig | None = None) -> web.Application:
    """The demo site with webcall mounted at /webcall (on the embedded emulator unless DIALNEXA_API_KEY is set)."""
    app = web.Application(middlewares=[security_headers])
    console = Console()
    environ = {"WEBCALL_CALLBACK_COUNTRIES": CALLBACK_COUNTRIES, **os.environ}
    config = config or webcall.WebCallConfig.from_env(environ, variables=persona_variables, rate_limit=30)
    handle = webcall.setup(app, config)
    handle.on_call_event.append(console.record)
    app[CONSOLE] = console
    app[TEMPLATES] = jinja2.Environment(loader=jinja2.FileSystemLoader(HERE / "templates"), autoescape=True)
    app.on_shutdown.append(_close_console)
    app.router.add_get("/", index, name="index")
    app.router.add_get("/embed", embed, name="embed")
    app.router.add_post("/persona", save_persona, name="persona")
    app.router.add_get("/demo/console", console_stream, name="console")
    app.router.add_static("/static", HERE / "static", name="static")
    return app
