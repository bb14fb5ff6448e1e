"""One page of a host site in either engine: the operations the browser tests use, the same in Chromium and Firefox.

A :class:`Tab` finds elements the way a visitor does, by role and accessible name (or by text, or by the widget's
``part`` names), in the page and inside open shadow roots; it clicks with real pointer input at the element's centre
once the element is visible, enabled and the one the pointer would hit; it presses keys with real keyboard input; it
reads the probe's records and the widget's state with page scripts, and waits by polling a condition. Only those
primitives differ per engine: :class:`ChromiumTab` drives Playwright, :class:`FirefoxTab` WebDriver BiDi.

Page scripts are function sources with JSON arguments and a JSON result, evaluated by the automation protocol
(which a page's CSP does not govern).
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import itertools
import json
import re
from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from playwright.async_api import Browser, BrowserContext, Page, Response

from .bidi import BiDi, Firefox
from .shared import PROBE_JS, TAG

__all__ = ["ChromiumTab", "Control", "FirefoxTab", "PageError", "Tab"]

# Locating elements by role and accessible name, through open shadow roots. A small subset of the ARIA rules, enough
# for the widget and our pages: explicit roles, the implicit roles of the elements they use, and names from
# aria-label, aria-labelledby, <label> and text content.
VIEWPORT = {"width": 1280, "height": 800}

LOCATE_JS = """
const IMPLICIT = { BUTTON: "button", A: "link", SECTION: "region", MAIN: "main", H1: "heading", H2: "heading",
  H3: "heading", UL: "list", OL: "list", LI: "listitem", TEXTAREA: "textbox" };
const INPUTS = { range: "slider", checkbox: "checkbox", text: "textbox", tel: "textbox", email: "textbox",
  search: "textbox", number: "spinbutton", submit: "button", button: "button" };
const roleOf = (el) => el.getAttribute("role") ||
  (el.tagName === "INPUT" ? INPUTS[el.type] : IMPLICIT[el.tagName]) || null;
const words = (s) => (s || "").replace(/\\s+/g, " ").trim();
const nameOf = (el) => {
  const root = el.getRootNode();
  if (el.hasAttribute("aria-label")) return words(el.getAttribute("aria-label"));
  const by = el.getAttribute("aria-labelledby");
  if (by) return words(by.split(/\\s+/).map((id) => root.getElementById(id)?.textContent || "").join(" "));
  if (el.labels && el.labels.length) return words([...el.labels].map((l) => l.textContent).join(" "));
  return ["button", "link", "heading", "listitem"].includes(roleOf(el)) ? words(el.textContent) : "";
};
const all = (root = document) => {
  const found = [];
  const walk = (node) => {
    for (const el of node.querySelectorAll("*")) {
      found.push(el);
      if (el.shadowRoot) walk(el.shadowRoot);
    }
  };
  walk(root);
  return found;
};
const visible = (el) => {
  const r = el.getBoundingClientRect();
  return el.checkVisibility({ visibilityProperty: true, opacityProperty: false }) && r.width > 0 && r.height > 0;
};
const find = (how) => {
  if (how.by === "role") {
    const named = all().filter((el) => roleOf(el) === how.role && (how.name === null || nameOf(el) === how.name));
    return named.find(visible) || named[0] || null;
  }
  if (how.by === "text") {
    const own = all().filter((el) => words(el.textContent) === how.text &&
      ![...el.children].some((c) => words(c.textContent) === how.text));
    return own.find(visible) || own[0] || null;
  }
  const host = document.querySelector(how.tag);
  return host && host.shadowRoot ? host.shadowRoot.querySelector(how.css) : null;
};
const describe = (el) => el && {
  visible: visible(el),
  enabled: !el.disabled && el.getAttribute("aria-disabled") !== "true",
  text: words(el.innerText ?? el.textContent),
  value: "value" in el ? String(el.value) : null,
  checked: "checked" in el ? el.checked : null,
  attributes: Object.fromEntries([...el.attributes].map((a) => [a.name, a.value])),
  box: (({ x, y, width, height }) => ({ x, y, width, height }))(el.getBoundingClientRect()),
};
// The element the pointer hits at (x, y), through shadow roots.
const hit = (x, y) => {
  let el = document.elementFromPoint(x, y);
  while (el && el.shadowRoot) {
    const inner = el.shadowRoot.elementFromPoint(x, y);
    if (!inner || inner === el) break;
    el = inner;
  }
  return el;
};
"""

FOCUSED_JS = f"""() => {{ {LOCATE_JS}
  let a = document.activeElement;
  while (a && a.shadowRoot && a.shadowRoot.activeElement) a = a.shadowRoot.activeElement;
  if (!a || a === document.body) return null;
  return nameOf(a) || words(a.textContent);
}}"""

WIDGET_BOX_JS = """tag => {
  const el = document.querySelector(tag);
  const rects = [el, ...el.shadowRoot.querySelectorAll("[part]")]
    .filter((e) => e.checkVisibility())
    .map((e) => e.getBoundingClientRect())
    .filter((r) => r.width && r.height);
  const x = Math.min(...rects.map((r) => r.left)), y = Math.min(...rects.map((r) => r.top));
  const r = Math.max(...rects.map((r) => r.right)), b = Math.max(...rects.map((r) => r.bottom));
  const m = 24, W = innerWidth, H = innerHeight;
  const x0 = Math.max(0, x - m), y0 = Math.max(0, y - m);
  return { x: x0, y: y0, width: Math.min(W, r + m) - x0, height: Math.min(H, b + m) - y0 };
}"""

POLL = 0.02
"""Seconds between two checks of a condition in the page."""


class PageError(AssertionError):
    """A page script threw."""


class Control:
    """An element a visitor can find: by role and accessible name, by its text, or by the widget's ``part`` name.

    Nothing is looked up until a method runs; each method finds the element again (the widget re-renders)."""

    def __init__(self, tab: Tab, how: dict[str, str | None], label: str) -> None:
        self.tab = tab
        self.how = how
        self.label = label

    def __repr__(self) -> str:
        return f"<{self.label}>"

    async def describe(self) -> dict[str, Any] | None:
        """``{"visible", "enabled", "text", "value", "attributes", "box"}``, or None when there is no such element."""
        found: dict[str, Any] | None = await self.tab.call(
            f"(how) => {{ {LOCATE_JS} return describe(find(how)); }}", self.how
        )
        return found

    async def wait(self, condition: str, check: Any, *, within: float = 10.0) -> dict[str, Any] | None:
        """Poll until ``check(description)`` is true; the assertion message names the control and ``condition``."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + within
        while True:
            seen = await self.describe()
            if check(seen):
                return seen
            if loop.time() > deadline:
                raise AssertionError(f"{self.label} is not {condition} after {within} s; it is {_brief(seen)}")
            await asyncio.sleep(POLL)

    async def wait_visible(self, *, within: float = 10.0) -> dict[str, Any]:
        seen = await self.wait("visible", lambda d: d is not None and d["visible"], within=within)
        assert seen is not None
        return seen

    async def wait_hidden(self, *, within: float = 10.0) -> None:
        await self.wait("hidden", lambda d: d is None or not d["visible"], within=within)

    async def wait_enabled(self, *, within: float = 10.0) -> None:
        await self.wait("enabled", lambda d: d is not None and d["visible"] and d["enabled"], within=within)

    async def wait_disabled(self, *, within: float = 10.0) -> None:
        await self.wait("disabled", lambda d: d is not None and not d["enabled"], within=within)

    async def wait_text(self, text: str, *, within: float = 10.0) -> None:
        """Wait until the element's text (whitespace collapsed) is exactly ``text``."""
        await self.wait(f"showing {text!r}", lambda d: d is not None and d["text"] == text, within=within)

    async def wait_contains(self, text: str, *, within: float = 10.0) -> None:
        await self.wait(f"containing {text!r}", lambda d: d is not None and text in d["text"], within=within)

    async def wait_attribute(self, name: str, value: str, *, within: float = 10.0) -> None:
        await self.wait(
            f"{name}={value!r}", lambda d: d is not None and d["attributes"].get(name) == value, within=within
        )

    async def wait_value(self, value: str, *, within: float = 10.0) -> None:
        await self.wait(f"at value {value!r}", lambda d: d is not None and d["value"] == value, within=within)

    async def text(self) -> str:
        seen = await self.describe()
        assert seen is not None, f"{self.label} is not in the page"
        return str(seen["text"])

    async def attribute(self, name: str) -> str | None:
        seen = await self.describe()
        assert seen is not None, f"{self.label} is not in the page"
        value = seen["attributes"].get(name)
        return None if value is None else str(value)

    async def box(self) -> dict[str, float]:
        seen = await self.wait_visible()
        return dict(seen["box"])

    async def fill(self, text: str) -> None:
        """Click into the field, select what it holds and type ``text`` over it with the keyboard."""
        await self.click()
        await self.tab.call(f"(how) => {{ {LOCATE_JS} find(how).select(); }}", self.how)
        await self.tab.type(text)

    async def check(self) -> None:
        """Tick the checkbox with a click (unless it is ticked already)."""
        seen = await self.wait_visible()
        if not seen["checked"]:
            await self.click()
        await self.wait("checked", lambda d: d is not None and d["checked"] is True)

    async def click(self, *, within: float = 10.0) -> None:
        """Click the element's centre with the pointer once it is visible, enabled, stable and not covered; click
        again if the click did not reach it (the page moved under the pointer meanwhile)."""
        script = f"""async (how, token) => {{ {LOCATE_JS}
          const el = find(how);
          if (!el || !visible(el) || el.disabled) return null;
          el.scrollIntoView({{ block: "nearest", inline: "nearest" }});
          // Stable: the same box a frame later (not moving, e.g. pushed down by a transcript line).
          const before = el.getBoundingClientRect();
          await new Promise((done) => {{ requestAnimationFrame(() => done()); setTimeout(done, 100); }});
          const r = el.getBoundingClientRect();
          if (["x", "y", "width", "height"].some((k) => r[k] !== before[k])) return null;
          const x = r.left + r.width / 2, y = r.top + r.height / 2;
          const top = hit(x, y);
          if (!top || !(top === el || el.contains(top))) return null;
          const landed = (window.__clicksLanded ||= []);
          el.addEventListener("click", () => landed.push(token), {{ capture: true, once: true }});
          return {{ x, y }};
        }}"""
        landed = "(token) => (window.__clicksLanded || []).includes(token)"
        loop = asyncio.get_running_loop()
        deadline = loop.time() + within
        for attempt in itertools.count():
            token = f"{id(self)}-{attempt}"
            if (point := await self.tab.call(script, self.how, token)) is not None:
                await self.tab.click_at(point["x"], point["y"])
                with contextlib.suppress(AssertionError):
                    await self.tab.wait_for(landed, token, within=0.5)
                    return
            if loop.time() > deadline:
                seen = _brief(await self.describe())
                raise AssertionError(f"{self.label} could not be clicked within {within} s; it is {seen}")
            await asyncio.sleep(POLL)


def _brief(seen: dict[str, Any] | None) -> str:
    if seen is None:
        return "not in the page"
    return json.dumps(
        {k: seen[k] for k in ("visible", "enabled", "text", "value")} | {"attributes": seen["attributes"]}
    )


class Tab(ABC):
    """One page of a host site, with what its console and probe recorded."""

    engine: str

    def __init__(self, shots: Path) -> None:
        self.shots = shots
        self.console: list[tuple[str, str]] = []
        """``(kind, text)`` of every console message; kinds are ``error``, ``warning``, ``info``, ``log``, ``debug``."""
        self.page_errors: list[str] = []
        self.responses: list[dict[str, Any]] = []
        """``{"method", "url", "status", "headers"}`` of every response the page got (header names in lower case)."""
        self._responded = asyncio.Event()

    def record_response(self, method: str, url: str, status: int, headers: dict[str, str]) -> None:
        self.responses.append({"method": method, "url": url, "status": status, "headers": headers})
        self._responded.set()

    @property
    def http_errors(self) -> list[str]:
        return [f"{r['status']} {r['method']} {r['url']}" for r in self.responses if r["status"] >= 400]

    async def wait_response(self, matches: Callable[[dict[str, Any]], bool], *, within: float = 10.0) -> dict[str, Any]:
        """The first response (already received or arriving within ``within`` s) that ``matches``."""
        async with asyncio.timeout(within):
            while (found := next((r for r in self.responses if matches(r)), None)) is None:
                self._responded.clear()
                await self._responded.wait()
        return found

    # -- what differs per engine ---------------------------------------------------------------------------------
    @abstractmethod
    async def call(self, function: str, *args: Any) -> Any:
        """Run the page script ``function`` (JavaScript source) with JSON ``args``; its JSON result."""

    @abstractmethod
    async def click_at(self, x: float, y: float) -> None:
        """Move the pointer to (x, y) in the viewport and click the main button."""

    @abstractmethod
    async def press(self, key: str) -> None:
        """Press and release a key: ``Tab``, ``Enter``, ``Escape``, ``Space``, ``Home``, ``End`` or an arrow, maybe
        with ``Shift+`` held."""

    @abstractmethod
    async def type(self, text: str) -> None:
        """Type ``text`` with the keyboard into the element that has the focus."""

    @abstractmethod
    async def screenshot(self, path: Path, clip: dict[str, float]) -> None: ...

    @abstractmethod
    async def set_viewport(self, width: int, height: int) -> None:
        """Resize the page's viewport (a phone's, a laptop's)."""

    @abstractmethod
    async def leave(self) -> None:
        """Close the page as a visitor closes the tab (its unload handlers run)."""

    @abstractmethod
    async def close(self) -> None:
        """Close the tab and its browser context (after :meth:`leave` too)."""

    # -- finding -------------------------------------------------------------------------------------------------
    def role(self, role: str, name: str | None = None) -> Control:
        """The element of ``role`` named ``name`` (of any name when None), the visible one when there are several."""
        label = role if name is None else f"{role} {name!r}"
        return Control(self, {"by": "role", "role": role, "name": name}, label)

    def button(self, name: str) -> Control:
        return self.role("button", name)

    def text(self, text: str) -> Control:
        return Control(self, {"by": "text", "text": text}, f"text {text!r}")

    def part(self, name: str) -> Control:
        """The widget's element with ``part=name``."""
        return Control(self, {"by": "part", "tag": TAG, "css": f"[part~={name}]"}, f"widget part {name!r}")

    @property
    def status(self) -> Control:
        return Control(self, {"by": "part", "tag": TAG, "css": "[role=status]"}, "the widget's status")

    @property
    def transcript(self) -> Control:
        return self.role("log", "Transcript")

    # -- the widget and the probe --------------------------------------------------------------------------------
    async def wait_for(self, function: str, *args: Any, within: float = 10.0, what: str = "") -> Any:
        """Poll the page script ``function`` until its result is truthy; returns that result."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + within
        while not (result := await self.call(function, *args)):
            if loop.time() > deadline:
                raise AssertionError(f"{what or function} still false after {within} s")
            await asyncio.sleep(POLL)
        return result

    async def widget_attribute(self, name: str) -> str | None:
        value: str | None = await self.call("(tag, name) => document.querySelector(tag)?.getAttribute(name)", TAG, name)
        return value

    async def widget_count(self) -> int:
        count: int = await self.call("(tag) => document.querySelectorAll(tag).length", TAG)
        return count

    async def state(self) -> str | None:
        return await self.widget_attribute("state")

    async def wait_state(self, *states: str, within: float = 10.0) -> str:
        """Wait until the widget's ``state`` attribute is one of ``states``; returns it."""
        state: str = await self.wait_for(
            "(tag, states) => { const s = document.querySelector(tag)?.getAttribute('state'); "
            "return states.includes(s) ? s : null; }",
            TAG,
            list(states),
            within=within,
            what=f"the widget's state in {states} (it is {await self.state()!r})",
        )
        return state

    async def events(self, type: str | None = None) -> list[dict[str, Any]]:
        """``webcall:*`` events the page saw, oldest first: ``{"type", "at", "detail"}``."""
        events: list[dict[str, Any]] = await self.call("() => window.__events")
        return [e for e in events if type is None or e["type"] == type]

    async def states(self) -> list[str]:
        return [e["detail"]["state"] for e in await self.events("state")]

    async def wait_event(self, type: str, *, within: float = 10.0) -> dict[str, Any]:
        await self.wait_for(
            "(type) => window.__events.some((e) => e.type === type)", type, within=within, what=f"a {type} event"
        )
        return (await self.events(type))[0]

    async def audio(self) -> dict[str, Any]:
        """The probe's view of the agent audio: ``rms`` now, ``peak``, ``audible`` ticks, ``audibleAt``."""
        level: dict[str, Any] = await self.call("() => window.__audio")
        return level

    async def wait_audible(self, *, within: float = 10.0) -> None:
        """Wait until the page hears the agent: 100 ms of remote audio above the silence threshold."""
        try:
            await self.wait_for("() => window.__audio.audible >= 5", within=within, what="the agent is heard")
        except AssertionError as error:
            probe = await self.call(
                "() => ({ ...window.__audio, context: window.__probeContextState && window.__probeContextState() })"
            )
            raise AssertionError(f"{error}; the probe saw {probe}") from None

    async def wait_quiet(self, level: float, *, within: float = 5.0) -> None:
        """Wait until the agent audio the page hears is below ``level`` (RMS)."""
        await self.wait_for(
            "(level) => window.__audio.rms < level", level, within=within, what=f"agent audio below {level}"
        )

    # -- keyboard ------------------------------------------------------------------------------------------------
    async def focused(self) -> str | None:
        """The accessible name of the element that has the keyboard focus, through shadow roots (None: the body)."""
        name: str | None = await self.call(FOCUSED_JS)
        return name

    async def tab_to(self, name: str, *, backwards: bool = False, presses: int = 12) -> None:
        """Press Tab (Shift+Tab ``backwards``) until the element named ``name`` has the focus."""
        visited = []
        for _ in range(presses):
            await self.press("Shift+Tab" if backwards else "Tab")
            visited.append(await self.focused())
            if visited[-1] == name:
                return
        raise AssertionError(f"{name!r} is not reachable with the Tab key (the focus went {visited})")

    # -- evidence ------------------------------------------------------------------------------------------------
    async def shot(self, name: str) -> Path:
        """Screenshot of the widget (its panel and launcher) into the test's shots folder."""
        self.shots.mkdir(parents=True, exist_ok=True)
        path = self.shots / f"{name}.png"
        await self.screenshot(path, await self.call(WIDGET_BOX_JS, TAG))
        return path

    async def assert_clean(self, *, warnings: Sequence[str] = (), errors: Sequence[str] = ()) -> None:
        """No CSP violation, no page error, and no console error or warning except those matching the given
        patterns (regular expressions), which a test allows when it provokes them."""
        assert await self.call("() => Array.isArray(window.__violations)"), "the probe did not run"
        violations = await self.call("() => window.__violations")
        assert violations == [], f"CSP violations: {json.dumps(violations)}"
        assert self.page_errors == [], f"page errors: {self.page_errors}"
        allowed = {"error": errors, "warning": warnings}
        unexpected = [
            f"{kind}: {text}"
            for kind, text in self.console
            if kind in allowed and not any(re.search(p, text) for p in allowed[kind])
        ]
        assert unexpected == [], "console:\n" + "\n".join(unexpected) + "\nHTTP errors:\n" + "\n".join(self.http_errors)


class ChromiumTab(Tab):
    """A tab of Playwright's Chromium. ``page`` is there for the tests that only run in Chromium."""

    engine = "chromium"

    def __init__(self, context: BrowserContext, page: Page, shots: Path) -> None:
        super().__init__(shots)
        self.context = context
        self.page = page
        page.on("console", lambda message: self.console.append((message.type, message.text)))
        page.on("response", self._on_response)
        page.on("pageerror", lambda error: self.page_errors.append(str(error)))

    def _on_response(self, response: Response) -> None:
        self.record_response(response.request.method, response.url, response.status, response.headers)

    async def call(self, function: str, *args: Any) -> Any:
        return await self.page.evaluate(f"(args) => ({function})(...args)", list(args))

    async def click_at(self, x: float, y: float) -> None:
        await self.page.mouse.click(x, y)

    async def press(self, key: str) -> None:
        await self.page.keyboard.press(key)

    async def type(self, text: str) -> None:
        await self.page.keyboard.type(text)

    async def set_viewport(self, width: int, height: int) -> None:
        await self.page.set_viewport_size({"width": width, "height": height})

    async def leave(self) -> None:
        await self.page.close(run_before_unload=True)

    async def screenshot(self, path: Path, clip: dict[str, float]) -> None:
        await self.page.screenshot(path=str(path), clip=clip, animations="disabled")  # type: ignore[arg-type]

    async def close(self) -> None:
        await self.context.close()


# WebDriver key values (the WebDriver spec's table of "normalised key values").
BIDI_KEYS = {
    "Shift": "\ue008",
    "Tab": "\ue004",
    "Enter": "\ue007",
    "Escape": "\ue00c",
    "Space": " ",
    "End": "\ue010",
    "Home": "\ue011",
    "ArrowLeft": "\ue012",
    "ArrowUp": "\ue013",
    "ArrowRight": "\ue014",
    "ArrowDown": "\ue015",
}
CONSOLE_KINDS = {"warn": "warning"}
"""BiDi log levels that Playwright (and so our tests) name differently."""


class FirefoxTab(Tab):
    """A tab of Firefox driven over WebDriver BiDi, in a user context of its own (like a Playwright context)."""

    engine = "firefox"

    def __init__(self, bidi: BiDi, user_context: str, context: str, shots: Path) -> None:
        super().__init__(shots)
        self.bidi = bidi
        self.user_context = user_context
        self.context = context
        self.left = False

    def on_log(self, entry: dict[str, Any]) -> None:
        """A ``log.entryAdded`` of this tab: a console message, or an uncaught error of the page."""
        text = str(entry.get("text") or "")
        if entry.get("type") == "javascript":
            self.page_errors.append(text)
        else:
            level = str(entry.get("level", "info"))
            self.console.append((CONSOLE_KINDS.get(level, level), text))

    def on_response(self, event: dict[str, Any]) -> None:
        response, request = event["response"], event["request"]
        headers = {h["name"].lower(): h["value"].get("value", "") for h in response.get("headers", [])}
        self.record_response(request["method"], response["url"], int(response["status"]), headers)

    async def call(self, function: str, *args: Any) -> Any:
        # Arguments go in as one JSON string and the result comes back as one, instead of BiDi's typed values.
        declaration = f"async (args) => JSON.stringify((await ({function})(...JSON.parse(args))) ?? null)"
        result = await self.bidi.command(
            "script.callFunction",
            {
                "functionDeclaration": declaration,
                "arguments": [{"type": "string", "value": json.dumps(list(args))}],
                "target": {"context": self.context},
                "awaitPromise": True,
                "resultOwnership": "none",
            },
        )
        if result["type"] == "exception":
            raise PageError(result["exceptionDetails"]["text"])
        return json.loads(result["result"]["value"])

    async def click_at(self, x: float, y: float) -> None:
        pointer = {"type": "pointer", "id": "mouse", "parameters": {"pointerType": "mouse"}}
        actions = [
            {"type": "pointerMove", "x": round(x), "y": round(y)},
            {"type": "pointerDown", "button": 0},
            {"type": "pointerUp", "button": 0},
        ]
        await self.bidi.command(
            "input.performActions", {"context": self.context, "actions": [{**pointer, "actions": actions}]}
        )

    async def press(self, key: str) -> None:
        values = [BIDI_KEYS.get(k, k) for k in key.split("+")]
        actions = [{"type": "keyDown", "value": v} for v in values] + [
            {"type": "keyUp", "value": v} for v in reversed(values)
        ]
        await self.bidi.command(
            "input.performActions",
            {"context": self.context, "actions": [{"type": "key", "id": "keyboard", "actions": actions}]},
        )

    async def type(self, text: str) -> None:
        actions = [{"type": kind, "value": char} for char in text for kind in ("keyDown", "keyUp")]
        await self.bidi.command(
            "input.performActions",
            {"context": self.context, "actions": [{"type": "key", "id": "keyboard", "actions": actions}]},
        )

    async def set_viewport(self, width: int, height: int) -> None:
        viewport = {"width": width, "height": height}
        await self.bidi.command("browsingContext.setViewport", {"context": self.context, "viewport": viewport})

    async def leave(self) -> None:
        await self.bidi.command("browsingContext.close", {"context": self.context, "promptUnload": True})
        self.left = True

    async def screenshot(self, path: Path, clip: dict[str, float]) -> None:
        shot = await self.bidi.command(
            "browsingContext.captureScreenshot", {"context": self.context, "clip": {"type": "box", **clip}}
        )
        await asyncio.to_thread(path.write_bytes, base64.b64decode(shot["data"]))

    async def close(self) -> None:
        try:
            if not self.left:
                await self.bidi.command("browsingContext.close", {"context": self.context})
        finally:
            await self.bidi.command("browser.removeUserContext", {"userContext": self.user_context})


# -- opening a tab ----------------------------------------------------------------------------------------------
async def open_tab(browser: Browser | Firefox, url: str, shots: Path, *, inject_probe: bool = False) -> Tab:
    """``url`` in a fresh context (Playwright context, or a Firefox user context) of ``browser``. ``inject_probe``
    adds the page probe to every page through the automation protocol, which a page's CSP does not govern."""
    if isinstance(browser, Firefox):
        return await open_firefox_tab(browser, url, shots, inject_probe=inject_probe)
    return await open_chromium_tab(browser, url, shots, inject_probe=inject_probe)


async def open_chromium_tab(browser: Browser, url: str, shots: Path, *, inject_probe: bool) -> ChromiumTab:
    context = await browser.new_context(viewport=VIEWPORT)  # type: ignore[arg-type]
    if inject_probe:
        await context.add_init_script(script=PROBE_JS)
    tab = ChromiumTab(context, await context.new_page(), shots)
    response = await tab.page.goto(url)
    assert response is not None and response.ok, f"GET {url} failed"
    return tab


async def open_firefox_tab(firefox: Firefox, url: str, shots: Path, *, inject_probe: bool) -> FirefoxTab:
    bidi = firefox.bidi
    user_context = (await bidi.command("browser.createUserContext"))["userContext"]
    context = (await bidi.command("browsingContext.create", {"type": "tab", "userContext": user_context}))["context"]
    tab = FirefoxTab(bidi, user_context, context, shots)
    firefox.tabs[context] = tab
    await bidi.command("browsingContext.setViewport", {"context": context, "viewport": VIEWPORT})
    if inject_probe:
        await bidi.command(
            "script.addPreloadScript", {"functionDeclaration": f"() => {{ {PROBE_JS} }}", "contexts": [context]}
        )
    await bidi.command("browsingContext.navigate", {"context": context, "url": url, "wait": "complete"})
    status = await tab.call("() => performance.getEntriesByType('navigation')[0]?.responseStatus ?? 0")
    assert 200 <= status < 300, f"GET {url} -> {status}"
    return tab
