"""What the browser tests and the browser benchmarks share: the test site's pages, the page probe, and starting
``python -m demo``."""

from __future__ import annotations

import asyncio
import html
import os
import sys
import time
from collections.abc import Mapping
from pathlib import Path

import httpx
from aiohttp import web

import webcall

from ..net import free_port

ROOT = Path(__file__).resolve().parents[2]
TAG = "dialnexa-webcall"
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = (
    "--no-sandbox",
    "--use-fake-ui-for-media-stream",
    "--use-fake-device-for-media-stream",
    "--disable-background-networking",
    "--disable-component-update",
    "--no-first-run",
    "--autoplay-policy=no-user-gesture-required",
)
LIVE = ("listening", "thinking", "speaking")
"""The widget's states while a call is connected."""
AUDIBLE = 0.01
"""RMS relative to full scale above which the page hears the agent (decoded silence is ~0)."""

PROBE_JS = """\
// Test probe, a script file because the page's CSP blocks inline scripts. Records CSP violations, the widget's
// webcall:* events (with performance.now() times), clicks, and the RMS level of the agent audio the widget plays.
(() => {
  "use strict";
  const w = window;
  const AUDIBLE = __AUDIBLE__;
  const TYPES = ["state", "transcript", "ended", "error", "mute", "before-start", "before-callback", "callback",
    "session.created", "call.started", "call.ended", "call.transferred", "callback.requested"];
  w.__violations = [];
  w.__events = [];
  w.__clicks = [];
  w.__audio = { rms: 0, peak: 0, audible: 0, attached: 0, attachedAt: null, audibleAt: null };
  document.addEventListener("securitypolicyviolation", (e) => {
    w.__violations.push({ directive: e.violatedDirective, blocked: e.blockedURI, source: e.sourceFile,
      line: e.lineNumber, sample: e.sample });
  });
  for (const type of TYPES) {
    document.addEventListener("webcall:" + type, (e) => {
      let detail = null;
      try {
        detail = JSON.parse(JSON.stringify(e.detail === undefined ? null : e.detail));
      } catch (x) {
        detail = String(e.detail);
      }
      w.__events.push({ type, at: performance.now(), detail });
    });
  }
  addEventListener("click", () => w.__clicks.push(performance.now()), true);

  let ctx = null;
  let stream = null;
  let source = null;
  let analyser = null;
  let buf = null;
  const tick = () => {
    const el = document.querySelector("__TAG__");
    const audio = el && el.shadowRoot ? el.shadowRoot.querySelector("audio") : null;
    const s = audio ? audio.srcObject : null;
    if (s !== stream || (s && !source && s.getAudioTracks().length)) {
      if (source) source.disconnect();
      stream = s;
      source = null;
      if (s && s.getAudioTracks().length) {
        ctx = ctx || new AudioContext();
        ctx.resume();
        analyser = ctx.createAnalyser();
        analyser.fftSize = 1024;
        buf = new Float32Array(analyser.fftSize);
        source = ctx.createMediaStreamSource(s);
        source.connect(analyser);
        Object.assign(w.__audio, { attached: w.__audio.attached + 1, attachedAt: performance.now(),
          audibleAt: null, audible: 0, peak: 0 });
      }
    }
    if (!source) {
      w.__audio.rms = 0;
      return;
    }
    analyser.getFloatTimeDomainData(buf);
    let sum = 0;
    for (const v of buf) sum += v * v;
    const rms = Math.sqrt(sum / buf.length);
    w.__audio.rms = rms;
    w.__audio.peak = Math.max(w.__audio.peak, rms);
    if (rms >= AUDIBLE) {
      w.__audio.audible += 1;
      if (w.__audio.audibleAt === null) w.__audio.audibleAt = performance.now();
    }
  };
  w.__probeContextState = () => (ctx ? ctx.state : "none");
  setInterval(tick, 10);
})();
""".replace("__AUDIBLE__", str(AUDIBLE)).replace("__TAG__", TAG)


SITE_CSS = """\
body{margin:0;font:16px/1.5 system-ui,sans-serif;color:#1f2937;background:#f8fafc}
main{max-width:760px;margin:0 auto;padding:32px 24px 160px}
h1{margin:0 0 8px;font-size:28px}
"""

PAGE = """\
<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>Acme: talk to us</title>
<link rel="icon" href="data:,">
<link rel="stylesheet" href="/site.css">
<script src="/probe.js"></script>
{script}
</head>
<body>
<main>
<h1>Acme</h1>
<p>Questions about our plans? Talk to our assistant right here.</p>
{element}
</main>
</body>
</html>
"""
"""The test site's page: ``{script}`` goes in the head after the probe, ``{element}`` in the main column."""
WIDGET_SCRIPT = '<script src="/webcall/widget.js" defer></script>'


def attributes(values: Mapping[str, str]) -> str:
    return "".join(f' {name}="{html.escape(value)}"' for name, value in values.items())


def add_site_pages(
    app: web.Application, handle: webcall.WebCall, widget: Mapping[str, str], *, probe: str = PROBE_JS
) -> None:
    """The test site's pages on ``app``, which has the plugin (``handle``) at ``/webcall``, under the plugin's CSP:
    ``/`` with the widget element (``widget`` its attributes), ``/zero`` with the zero-markup script alone, and
    ``/probe.js`` (``probe``: the page probe, or a bench's script that watches the page its own way), ``/site.css``
    and an empty ``/favicon.ico``."""

    def page(script: str, element: str) -> web.Response:
        body = PAGE.format(script=script, element=element)
        headers = {"Content-Security-Policy": handle.content_security_policy}
        return web.Response(text=body, content_type="text/html", headers=headers)

    async def index(request: web.Request) -> web.Response:
        return page(WIDGET_SCRIPT, f"<{TAG}{attributes(widget)}></{TAG}>")

    async def zero_markup(request: web.Request) -> web.Response:
        return page('<script src="/webcall/widget.js" data-agent="sales" defer></script>', "")

    async def probe_script(request: web.Request) -> web.Response:
        return web.Response(text=probe, content_type="text/javascript")

    async def css(request: web.Request) -> web.Response:
        return web.Response(text=SITE_CSS, content_type="text/css")

    async def favicon(request: web.Request) -> web.Response:
        return web.Response(status=204)

    app.router.add_get("/", index)
    app.router.add_get("/zero", zero_markup)
    app.router.add_get("/probe.js", probe_script)
    app.router.add_get("/site.css", css)
    app.router.add_get("/favicon.ico", favicon)


async def start_demo(*, stderr: int = asyncio.subprocess.DEVNULL) -> tuple[asyncio.subprocess.Process, str, float]:
    """``python -m demo`` on a free port, on its embedded emulator (no DialNexa settings in its environment).

    Returns the process, its URL and the seconds it took to serve its first page."""
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("DIALNEXA_", "WEBCALL_"))}
    began = time.monotonic()
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "demo",
        "--port",
        str(port),
        cwd=ROOT,
        env=env,
        stdout=asyncio.subprocess.DEVNULL,
        stderr=stderr,
    )
    url = f"http://127.0.0.1:{port}"
    async with httpx.AsyncClient(timeout=1) as http:
        while True:
            if process.returncode is not None or time.monotonic() - began > 30:
                if process.returncode is None:
                    process.terminate()
                raise RuntimeError(f"python -m demo did not start (exit code {process.returncode})")
            try:
                if (await http.get(url + "/")).status_code == 200:
                    return process, url, time.monotonic() - began
            except httpx.TransportError:
                await asyncio.sleep(0.05)
