"""Secret hygiene on every path: every route, every error, real signed webhooks, SSE, metrics, pages, host callbacks.

Neither the DialNexa key (nor its secret half), nor a webhook secret, nor a session secret appears in any response
body or header, in any file the plugin serves, or in any log record at INFO and above from any logger. The plugin's
own loggers also never print a call token or DialNexa's media access token at INFO and above.
"""

from __future__ import annotations

import asyncio
import json
import logging
from typing import Any

import pytest

from webcall.emulator.server import EmulatorServer
from webcall.emulator.testing import EmulatorControl
from webcall.events import CallEvent
from webcall.resources import static_dir, templates_dir
from webcall.webhooks import signature

from .conftest import ORIGIN_HEADERS, MakeHost, runtime
from .hosting import ORIGIN
from .offers import OFFER

NEW_WEBHOOK_SECRET = "hygiene-webhook-new-0123456789abcdef"
OLD_WEBHOOK_SECRET = "hygiene-webhook-old-0123456789abcdef"
NEW_SESSION_SECRET = "hygiene-session-new-0123456789-abcdefgh"
OLD_SESSION_SECRET = "hygiene-session-old-0123456789-abcdefgh"


class Seen:
    """Every response body and header the test received, and every route and status it touched."""

    def __init__(self) -> None:
        self.texts: list[str] = []
        self.exchanges: list[tuple[str, str, int]] = []

    async def __call__(self, response: Any, *, stream: bool = False) -> Any:
        body = b"" if stream else await response.read()
        self.texts.append(body.decode("utf-8", "replace"))
        self.texts.append("\n".join(f"{k}: {v}" for k, v in response.headers.items()))
        self.exchanges.append((response.method, response.url.path, response.status))
        return response

    def json(self, index: int = -2) -> Any:
        return json.loads(self.texts[index])


def served_files() -> list[str]:
    """The text of every file the plugin can serve: the widget, its stylesheet, the page templates."""
    return [p.read_text(errors="replace") for d in (static_dir(), templates_dir()) for p in d.rglob("*") if p.is_file()]


def log_text(record: logging.LogRecord) -> str:
    text = record.getMessage()
    if record.exc_info:
        text += "\n" + logging.Formatter().formatException(record.exc_info)
    if record.stack_info:
        text += "\n" + record.stack_info
    return text


async def read_sse(response: Any, until: str = "call.ended") -> str:
    """The raw stream up to the event ``until`` (events carry their type in the data)."""
    raw = ""
    async for line in response.content:
        raw += line.decode()
        if line.startswith(b"data:") and json.loads(line[5:])["type"] == until:
            break
    return raw


async def test_no_secret_on_any_path(
    make_host: MakeHost, emulator: EmulatorServer, control: EmulatorControl, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    client, handle = await make_host(
        session_secrets=(NEW_SESSION_SECRET, OLD_SESSION_SECRET),
        webhook_secrets=(NEW_WEBHOOK_SECRET, OLD_WEBHOOK_SECRET),
        metrics=True,
        trusted_proxies=1,
        rate_limit=2,
        max_concurrent_calls=4,
        upstream_timeout=0.3,
        callback_attempts=1,
        callback_timeout=1,
        callback_countries=("US",),
    )
    seen = Seen()
    calls_seen: list[CallEvent] = []

    async def failing_callback(event: CallEvent) -> None:
        calls_seen.append(event)
        raise RuntimeError(f"the host's database is down while handling {event.type}")

    handle.on_call_event.append(failing_callback)
    await handle.ensure_webhook(str(client.make_url("/webcall/webhooks")))  # the emulator now delivers to us
    ip = iter(f"198.51.100.{n}" for n in range(1, 250))

    def visitor(**extra: str) -> dict[str, str]:
        return {**ORIGIN_HEADERS, "X-Forwarded-For": next(ip), **extra}

    async def post_session(body: Any = None, headers: dict[str, str] | None = None) -> Any:
        """A start request as the widget sends it: the SDP offer added to a body that has none."""
        if body is None:
            body = {"agent": "sales"}
        if isinstance(body, dict) and "offer" not in body:
            body = {**body, "offer": OFFER}
        return await seen(await client.post("/webcall/sessions", json=body, headers=headers))

    # pages, assets, ops routes, unknown routes and methods
    await seen(await client.get("/webcall/widget.js"))
    etag = (await seen(await client.get("/webcall/widget.js", headers={"Accept-Encoding": "gzip"}))).headers["ETag"]
    await seen(await client.get("/webcall/widget.js", headers={"If-None-Match": etag}))
    await seen(await client.get(handle.widget_url))
    await seen(await client.get("/webcall/call.css"))
    for path in ("/webcall/call/sales", "/webcall/call/nobody", "/webcall/snippet", "/webcall/snippet?agent=nobody"):
        await seen(await client.get(path))
    for path in ("/webcall/healthz", "/webcall/openapi.json", "/webcall/nothing-here"):
        await seen(await client.get(path))
    await seen(await client.get("/webcall/sessions"))
    await seen(await client.delete("/webcall/webhooks"))
    for origin in (ORIGIN, "https://evil.example"):
        await seen(
            await client.options(
                "/webcall/sessions", headers={"Origin": origin, "Access-Control-Request-Method": "POST"}
            )
        )

    # minting, and every way it is refused
    minted = await (await post_session({"agent": "sales", "variables": {"name": "Priya"}}, visitor())).json()
    seen.texts.append(json.dumps(minted))
    await post_session(headers={"Origin": "https://evil.example"})
    await post_session(headers={})
    await seen(
        await client.post("/webcall/sessions", data="agent=sales", headers=visitor(**{"Content-Type": "text/plain"}))
    )
    await seen(
        await client.post("/webcall/sessions", data="{nope", headers=visitor(**{"Content-Type": "application/json"}))
    )
    await post_session({"agent": "sales", "pad": "x" * 20_000}, visitor())
    await post_session({"agent": "nobody"}, visitor())
    await post_session({"agent": "sales", "variables": {"plan": "{{secret}}"}}, visitor())
    crowded = visitor()
    for _ in range(3):
        await post_session(headers=crowded)  # the third is rate limited
    # DialNexa failing in every way the browser can see
    for fault in (
        {"kind": "status", "status": 500},
        {"kind": "status", "status": 401},
        {"kind": "status", "status": 429, "retry_after": 30},
        {"kind": "timeout", "delay": 1.0},
        {"kind": "reset"},
    ):
        await control.add_fault(route="POST /v1/web-calls", count=1, **fault)
        await post_session(headers=visitor())
    while (await post_session(headers=visitor())).status == 201:  # up to the concurrent-call cap
        pass

    # the call's own routes: its media resource, events over SSE, then signed webhooks, then hang-up
    media_url = minted["media_url"]
    fragment = {"Content-Type": "application/trickle-ice-sdpfrag", "If-Match": "*"}
    call_token = {**ORIGIN_HEADERS, "Authorization": f"Bearer {minted['token']}"}
    await seen(await client.patch(media_url, data="a=ice-ufrag:x\r\n", headers={**ORIGIN_HEADERS, **fragment}))
    await seen(
        await client.patch(media_url, data="a=ice-ufrag:x\r\na=ice-pwd:y\r\n", headers={**call_token, **fragment})
    )
    await seen(await client.delete(media_url, headers={**ORIGIN_HEADERS, "Authorization": "Bearer forged"}))
    events_url = minted["events_url"]
    await seen(await client.get(events_url))
    await seen(await client.get(events_url, params={"token": "forged.token.value"}))
    stream = await client.get(events_url, params={"token": minted["token"]}, headers=ORIGIN_HEADERS)
    assert stream.status == 200
    await seen(stream, stream=True)
    started = json.dumps({"event_type": "call_initiated", "payload": {"call": {"id": minted["call_id"]}}}).encode()
    ended = json.dumps(
        {"event_type": "call_ended", "payload": {"call": {"id": minted["call_id"], "status": "completed"}}}
    ).encode()
    for body, secret, header in (
        (started, NEW_WEBHOOK_SECRET, "x-nexa-signature"),
        (ended, OLD_WEBHOOK_SECRET, "X-DialNexa-Signature"),  # rotation
        (ended, NEW_WEBHOOK_SECRET, "x-nexa-signature"),  # a duplicate
        (ended, "not-the-secret-0123456789", "x-nexa-signature"),
        (b'{"hello": "world"}', NEW_WEBHOOK_SECRET, "x-nexa-signature"),
    ):
        response = await client.post("/webcall/webhooks", data=body, headers={header: signature(body, secret)})
        await seen(response)
    await seen(await client.post("/webcall/webhooks", data=ended))
    await seen(await client.post("/webcall/webhooks", data=b"{" + b" " * 300_000 + b"}"))
    seen.texts.append(await asyncio.wait_for(read_sse(stream), 5))
    replay = await client.get(
        events_url, params={"token": minted["token"]}, headers={**ORIGIN_HEADERS, "Last-Event-ID": "1"}
    )
    seen.texts.append(await asyncio.wait_for(read_sse(replay), 5))
    end_url = minted["end_url"]
    await seen(await client.post(end_url, headers=ORIGIN_HEADERS))
    await seen(await client.post(end_url, headers={**ORIGIN_HEADERS, "Authorization": "Bearer forged"}))
    await seen(await client.post(end_url, headers={**ORIGIN_HEADERS, "Authorization": f"Bearer {minted['token']}"}))
    await seen(await client.post(end_url, headers={**ORIGIN_HEADERS, "Authorization": f"Bearer {minted['token']}"}))

    # call-backs: the emulator rings no phone, runs the call and delivers its webhooks, signed, to us
    callback = {"agent": "sales", "phone_number": "+14155550123", "consent": True}
    placed = await seen(await client.post("/webcall/callbacks", json=callback, headers=visitor()))
    assert placed.status == 202, seen.texts[-2]
    phone_call = seen.json()["callback_id"]
    await seen(await client.post("/webcall/callbacks", json={**callback, "phone_number": "555"}, headers=visitor()))
    await seen(await client.post("/webcall/callbacks", json={**callback, "consent": False}, headers=visitor()))
    await control.add_fault(route="POST /v1/calls", kind="status", status=503, count=1)
    await seen(await client.post("/webcall/callbacks", json=callback, headers=visitor()))
    for _ in range(200):  # the emulator's deliveries for the phone call arrive through our receiver
        if any(e.call_id == phone_call and e.type == "call.ended" for e in calls_seen):
            break
        await asyncio.sleep(0.05)
    assert any(e.call_id == phone_call and e.type == "call.ended" for e in calls_seen), "no delivery arrived"
    await runtime(handle).bus.drain()
    await seen(await client.get("/webcall/metrics"))
    await seen(await client.get("/webcall/healthz"))

    # what was covered
    statuses = {status for _, _, status in seen.exchanges}
    assert {200, 201, 202, 204, 304, 400, 401, 403, 404, 405, 413, 415, 429, 502, 503, 504} <= statuses, statuses
    assert len(seen.exchanges) >= 50
    records = [r for r in caplog.records if r.levelno >= logging.INFO]
    assert any(r.levelno >= logging.WARNING and r.name.startswith("webcall") for r in records)
    assert any("callback" in log_text(r).lower() and r.levelno >= logging.WARNING for r in records)

    # What only the server may know of DialNexa: every call's media access token and the media server's address.
    access_tokens = {c.id: c.access_token for c in emulator.state.calls.values() if c.access_token}
    assert minted["call_id"] in access_tokens and len(access_tokens) >= 3
    secrets = {
        **{f"media access token of {call_id}": token for call_id, token in access_tokens.items()},
        "API key": emulator.api_key,
        "API key secret half": emulator.api_key.split(":", 1)[1],
        "new webhook secret": NEW_WEBHOOK_SECRET,
        "old webhook secret": OLD_WEBHOOK_SECRET,
        "new session secret": NEW_SESSION_SECRET,
        "old session secret": OLD_SESSION_SECRET,
    }
    served = served_files()
    logged = [(r.name, log_text(r)) for r in records]
    for name, secret in secrets.items():
        assert not [t for t in seen.texts if secret in t], f"the {name} reached a client"
        assert not [t for t in served if secret in t], f"the {name} is in a served file"
        assert not [f"{n}: {t[:200]}" for n, t in logged if secret in t], f"the {name} reached a log line at INFO+"

    # The browser talks only to the plugin: nothing it received names the media server.
    assert not [t[:200] for t in seen.texts if emulator.origin in t], "the media server's origin reached a client"

    # The plugin's own log lines carry call ids, never the tokens that open a call.
    tokens = {"call token": minted["token"], "media access token": access_tokens[minted["call_id"]]}
    ours = [t for n, t in logged if n.startswith("webcall") and not n.startswith("webcall.emulator")]
    for name, token in tokens.items():
        assert not [t[:200] for t in ours if token in t], f"the {name} reached a webcall log line at INFO+"
