"""Fuzz every route of the mounted plugin over real HTTP: cases generated from its own OpenAPI document, and hostile
hand-written requests (random bytes and unicode, deep JSON nesting, odd headers, bogus content types and tokens).

The host app and the emulator run in a background thread with their own event loop, on loopback ports, so that
synchronous Hypothesis tests can drive them with a blocking HTTP client and every log record of the server lands in
this process. For every request: no 5xx (the emulator is healthy, so not even 502/503/504), every error of the
plugin in its one JSON shape, and no record at ERROR or above in any log.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import hmac
import json
import logging
import re
import threading
import time
from collections import Counter
from collections.abc import Callable, Coroutine, Iterator
from dataclasses import dataclass, field
from typing import Any, TypeVar
from urllib.parse import quote

import httpx
import jwt
import pytest
import schemathesis
from aiohttp import web
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st
from schemathesis.core.result import Ok
from schemathesis.generation import GenerationMode

import webcall
import webcall.sse
from webcall.emulator.config import EmulatorConfig
from webcall.emulator.server import EmulatorServer
from webcall.tokens import AUDIENCE_CALL, ISSUER
from webcall.webhooks import signature

from .conftest import ERROR_KEYS, MakeHost, runtime
from .hosting import ORIGIN, host_config, served
from .offers import OFFER

T = TypeVar("T")

API_KEY = "emu_fuzz:FuzzEmulatorSecretHalf0123"
SESSION_SECRET = "fuzz-session-secret-0123456789-abcdef"
OTHER_SECRET = "another-session-secret-0123456789-abcdef"
WEBHOOK_SECRET = "fuzz-webhook-secret-0123456789"
PREFIX = "/webcall"

LIVE_CALLS = 6
MIN_SCHEMA_REQUESTS = 1000
MIN_HOSTILE_REQUESTS = 1000
MAX_URL = 6000
FUZZ_SETTINGS = settings(
    deadline=None,
    database=None,
    phases=[Phase.explicit, Phase.generate],
    suppress_health_check=list(HealthCheck),
)


# -- the server under test ------------------------------------------------------------------------------------------
class Records(logging.Handler):
    """Every log record at WARNING and above, from any logger, whichever thread emitted it."""

    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.records: list[logging.LogRecord] = []
        self._lock_records = threading.Lock()

    def emit(self, record: logging.LogRecord) -> None:
        with self._lock_records:
            self.records.append(record)

    def mark(self) -> int:
        with self._lock_records:
            return len(self.records)

    def errors(self, since: int = 0) -> list[str]:
        with self._lock_records:
            return [
                f"{r.name} {r.levelname}: {r.getMessage()}"
                + (f" [{r.exc_info[0].__name__}: {r.exc_info[1]}]" if r.exc_info and r.exc_info[0] else "")
                for r in self.records[since:]
                if r.levelno >= logging.ERROR
            ]


class LiveHost:
    """The plugin mounted in a host app, served on a loopback port from a thread with its own event loop."""

    def __init__(self) -> None:
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="fuzz-host", daemon=True)
        self._serving = contextlib.AsyncExitStack()
        # Every mint that gets through opens a media session that never connects: room for them, a short wait.
        config = EmulatorConfig(api_keys=frozenset({API_KEY}), max_media_sessions=2000, media_connect_timeout=5.0)
        self.emulator = EmulatorServer(config)
        self.handle: webcall.WebCall | None = None
        self.base = ""

    def run(self, coro: Coroutine[Any, Any, T]) -> T:
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result(timeout=60)

    def start(self) -> None:
        self._thread.start()
        self.run(self._start())

    async def _start(self) -> None:
        await self.emulator.start()
        host = web.Application()
        self.handle = webcall.setup(
            host,
            host_config(
                self.emulator,
                session_secrets=(SESSION_SECRET,),
                webhook_secrets=(WEBHOOK_SECRET,),
                # Limits high enough that they never dominate what the fuzzer sees (test_abuse exercises them).
                rate_limit=10**7,
                global_rate_limit=10**7,
                max_concurrent_calls=10**7,
                callback_rate_limit=10**7,
                callback_countries=("US", "CA"),
                callback_country_hourly_limit=10**7,
                callback_hourly_limit=10**7,
                upstream_timeout=5.0,
                metrics=True,
            ),
        )
        self.base = await self._serving.enter_async_context(served(host))

    def stop(self) -> None:
        try:
            self.run(self._stop())
        finally:
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(timeout=30)
            self._loop.close()

    async def _stop(self) -> None:
        await self._serving.aclose()
        await self.emulator.stop()

    @property
    def webcall(self) -> webcall.WebCall:
        assert self.handle is not None
        return self.handle

    def wait_for_dropped_streams(self, within: float = 5.0) -> int:
        """Wait until the server noticed every event stream the fuzzer dropped; the number still open."""

        async def settle() -> int:
            for _ in range(int(within / 0.05)):
                if not runtime(self.webcall).streams:
                    break
                await asyncio.sleep(0.05)
            return len(runtime(self.webcall).streams)

        return self.run(settle())


@dataclass
class Tally:
    """What was sent, by route, and every broken promise seen."""

    by_route: Counter[str] = field(default_factory=Counter)
    by_status: Counter[str] = field(default_factory=Counter)
    violations: list[str] = field(default_factory=list)
    not_sent: int = 0  # refused by the client's HTTP/1.1 validation, or a URL beyond aiohttp's request-line limit

    @property
    def total(self) -> int:
        return sum(self.by_route.values())

    def report(self, title: str) -> str:
        lines = [f"{title}: {self.total} requests"]
        lines += [f"  {route:<28} {n:>5}" for route, n in sorted(self.by_route.items())]
        lines.append("  statuses: " + ", ".join(f"{s}={n}" for s, n in sorted(self.by_status.items())))
        lines.append(f"  not sent (invalid HTTP/1.1, or a URL over {MAX_URL} bytes): {self.not_sent}")
        return "\n".join(lines)


_TEMPLATES = [
    ("sessions/{id}/end", re.compile(r"^/webcall/sessions/[^/]+/end$")),
    ("sessions/{id}/events", re.compile(r"^/webcall/sessions/[^/]+/events$")),
    ("sessions/{id}/media", re.compile(r"^/webcall/sessions/[^/]+/media$")),
    ("sessions", re.compile(r"^/webcall/sessions$")),
    ("callbacks", re.compile(r"^/webcall/callbacks$")),
    ("webhooks", re.compile(r"^/webcall/webhooks$")),
    ("widget.js", re.compile(r"^/webcall/widget\.js$")),
    ("healthz", re.compile(r"^/webcall/healthz$")),
    ("openapi.json", re.compile(r"^/webcall/openapi\.json$")),
    ("metrics", re.compile(r"^/webcall/metrics$")),
    ("call/{agent}", re.compile(r"^/webcall/call/[^/]+$")),
    ("snippet", re.compile(r"^/webcall/snippet$")),
    ("call.css", re.compile(r"^/webcall/call\.css$")),
]


def route_of(path: str) -> str:
    for name, pattern in _TEMPLATES:
        if pattern.match(path):
            return name
    return "unknown (under prefix)" if path.startswith(PREFIX + "/") else "unknown (outside prefix)"


def check(tally: Tally, method: str, url: str, response: httpx.Response, body: bytes) -> None:
    """Record one exchange and every promise it breaks."""
    path = response.request.url.raw_path.split(b"?")[0].decode("ascii")  # as sent: %2F stays one segment
    route = route_of(path)
    tally.by_route[route] += 1
    tally.by_status[str(response.status_code)] += 1
    where = f"{method} {url[:160]!r} -> {response.status_code}"
    if response.status_code >= 500:
        tally.violations.append(f"{where}: a 5xx {body[:200]!r}")
        return
    if response.status_code < 400 or method == "HEAD" or not path.startswith(PREFIX + "/"):
        return
    content_type = response.headers.get("Content-Type", "")
    if route == "call/{agent}" and content_type.startswith("text/html"):
        return  # the standalone call page answers people with an HTML error page
    try:
        problem = json.loads(body)
    except ValueError:
        tally.violations.append(f"{where}: not JSON ({content_type}) {body[:120]!r}")
        return
    if not isinstance(problem, dict) or set(problem) != ERROR_KEYS:
        tally.violations.append(f"{where}: not the error shape {body[:200]!r}")
        return
    if (
        problem["statusCode"] != response.status_code
        or not isinstance(problem["error"], str)
        or not isinstance(problem["message"], str)
        or not problem["message"]
        or not isinstance(problem["code"], str)
        or not re.fullmatch(r"[a-z_]+", problem["code"])
    ):
        tally.violations.append(f"{where}: wrong error fields {problem!r}")


def exchange(http: httpx.Client, tally: Tally, request: httpx.Request) -> None:
    """Send one request and check the answer; an event stream is closed as soon as its headers arrive."""
    if len(str(request.url)) > MAX_URL:  # aiohttp's request-line limit answers before any route would
        tally.not_sent += 1
        return
    try:
        response = http.send(request, stream=True)
    except (httpx.LocalProtocolError, httpx.InvalidURL):
        tally.not_sent += 1
        return
    try:
        streaming = response.headers.get("Content-Type", "").startswith("text/event-stream")
        body = b"" if streaming else response.read()
    finally:
        response.close()
    check(tally, request.method, str(request.url), response, body)


@dataclass
class Calls:
    """Real calls minted at the start: the fuzzer uses their ids, tokens and event streams."""

    ids: list[str]


def _forge(claims: dict[str, Any], key: str = SESSION_SECRET, algorithm: str = "HS256") -> str:
    """A JWT built by hand, so that any header and digest can be used (``none`` leaves the signature empty)."""
    digests = {"HS256": hashlib.sha256, "HS384": hashlib.sha384, "HS512": hashlib.sha512}
    header = jwt.utils.base64url_encode(json.dumps({"alg": algorithm, "typ": "JWT"}).encode())
    payload = jwt.utils.base64url_encode(json.dumps(claims).encode())
    signing_input = header + b"." + payload
    digest = digests.get(algorithm)
    mac = b"" if digest is None else jwt.utils.base64url_encode(hmac.new(key.encode(), signing_input, digest).digest())
    return (signing_input + b"." + mac).decode()


@pytest.fixture(scope="module")
def live() -> Iterator[tuple[LiveHost, Records, Calls]]:
    records = Records()
    root = logging.getLogger()
    root.addHandler(records)
    host = LiveHost()
    with pytest.MonkeyPatch.context() as patch:
        # Pings every fifth of a second: the event streams the fuzzer opens and drops are noticed while it runs.
        patch.setattr(webcall.sse, "PING_SECONDS", 0.2)
        try:
            host.start()
            with httpx.Client(base_url=host.base, timeout=10) as http:
                ids: list[str] = []
                for _ in range(LIVE_CALLS):
                    body = {"agent": "sales", "offer": OFFER}
                    response = http.post(f"{PREFIX}/sessions", json=body, headers={"Origin": ORIGIN})
                    assert response.status_code == 201, response.text
                    ids.append(response.json()["call_id"])
            yield host, records, Calls(ids=ids)
        finally:
            host.stop()
            root.removeHandler(records)
            _TOKEN_STRATEGIES.clear()


_TOKEN_STRATEGIES: dict[tuple[int, str], st.SearchStrategy[str]] = {}


def _token_variants(host: LiveHost, calls: Calls, call_id: str) -> st.SearchStrategy[str]:
    """Tokens a visitor might send for ``call_id``: its own (fresh), and every kind of wrong one."""
    key = (id(host), call_id)
    if key not in _TOKEN_STRATEGIES:
        _TOKEN_STRATEGIES[key] = _build_token_variants(host, calls, call_id)
    return _TOKEN_STRATEGIES[key]


def _build_token_variants(host: LiveHost, calls: Calls, call_id: str) -> st.SearchStrategy[str]:
    issuer = runtime(host.webcall).tokens
    now = int(time.time())
    claims = {"iss": ISSUER, "aud": AUDIENCE_CALL, "sub": call_id, "iat": now, "exp": now + 3600, "jti": "fuzz"}
    other = next((c for c in calls.ids if c != call_id), call_id)
    fixed = [
        issuer.issue(call_id, AUDIENCE_CALL, ttl=-60)[0],  # expired
        issuer.issue(call_id, "webcall:other", ttl=3600)[0],  # another audience
        issuer.issue(other, AUDIENCE_CALL, ttl=3600)[0],  # another call's
        _forge(claims, OTHER_SECRET),  # signed with another secret
        _forge(claims, SESSION_SECRET, "HS512"),  # another algorithm, the right secret
        _forge(claims, algorithm="none"),  # alg: none
        _forge({k: v for k, v in claims.items() if k != "jti"}),  # a claim missing
        "",
        "null",
        "Bearer",
        "a.b.c",
        "e30.e30.",
        "x" * 5000,
    ]
    fresh = st.builds(lambda: issuer.issue(call_id, AUDIENCE_CALL, ttl=3600)[0])
    segment = st.text("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_=", max_size=60)
    jwt_like = st.lists(segment, min_size=3, max_size=3).map(".".join)
    return st.one_of(
        st.sampled_from(fixed), fresh, jwt_like, st.text(st.characters(min_codepoint=0x21, max_codepoint=0x7E))
    )


# -- schema-driven ------------------------------------------------------------------------------------------------
Mutator = Callable[[dict[str, Any], st.DataObject], None]


def _to_request(http: httpx.Client, kwargs: dict[str, Any]) -> httpx.Request:
    headers = {k: _header_value(v) for k, v in kwargs.get("headers", {}).items()}
    content: bytes | None = kwargs.get("content")
    if content is not None:
        pass
    elif "json" in kwargs:
        content = json.dumps(kwargs["json"]).encode()
    elif isinstance(kwargs.get("data"), str | bytes):
        data = kwargs["data"]
        content = data.encode() if isinstance(data, str) else data
    return http.build_request(
        kwargs["method"], kwargs["url"], headers=headers, params=kwargs.get("params") or None, content=content
    )


def _header_value(value: Any) -> bytes:
    text = value if isinstance(value, str) else str(value)
    try:
        return text.encode("latin-1")
    except UnicodeEncodeError:
        return text.encode()


def _set_header(kwargs: dict[str, Any], name: str, value: str) -> None:
    kwargs.setdefault("headers", {})[name] = value


def _mint_body(kwargs: dict[str, Any], data: st.DataObject) -> None:
    _set_header(kwargs, "Origin", ORIGIN)
    body = kwargs.get("json")
    if isinstance(body, dict) and data.draw(st.booleans()):
        body["agent"] = data.draw(st.sampled_from(["sales", "support"]))
        body["offer"] = data.draw(st.sampled_from([OFFER, OFFER.replace("m=audio", "m=video"), "v=0\r\n"]))
        if data.draw(st.booleans()):
            body["variables"] = data.draw(
                st.dictionaries(st.sampled_from(["name", "company"]), st.text(max_size=40), max_size=2)
            )


def _callback_body(kwargs: dict[str, Any], data: st.DataObject) -> None:
    _set_header(kwargs, "Origin", ORIGIN)
    body = kwargs.get("json")
    if isinstance(body, dict) and data.draw(st.booleans()):
        body["agent"] = "sales"
        body["consent"] = True
        body["phone_number"] = "+1" + data.draw(st.text("0123456789", min_size=9, max_size=12))


def _signed(kwargs: dict[str, Any], data: st.DataObject) -> None:
    raw = json.dumps(kwargs.pop("json", None)).encode()
    kwargs["content"] = raw
    _set_header(kwargs, "x-nexa-signature", signature(raw, WEBHOOK_SECRET))


def _with_token(host: LiveHost, calls: Calls) -> Mutator:
    def mutate(kwargs: dict[str, Any], data: st.DataObject) -> None:
        call_id = data.draw(st.sampled_from(calls.ids))
        kwargs["url"] = re.sub(r"/sessions/[^/]+/", f"/sessions/{call_id}/", kwargs["url"])
        token = data.draw(_token_variants(host, calls, call_id))
        where = data.draw(st.sampled_from(["header", "query", "both"]))
        if where in ("header", "both"):
            _set_header(kwargs, "Authorization", f"Bearer {token}")
        if where in ("query", "both"):
            kwargs["params"] = {**(kwargs.get("params") or {}), "token": token}
        params = kwargs.get("params") or {}
        if "last_event_id" in params:  # non-ASCII and overlong ids: test_last_event_id_* below
            params["last_event_id"] = re.sub(r"[^ -~]", "", str(params["last_event_id"]))[:64]
        headers = kwargs.get("headers") or {}
        if "Last-Event-ID" in headers:
            headers["Last-Event-ID"] = re.sub(r"[^ -~]", "", str(headers["Last-Event-ID"]))[:64]

    return mutate


def _plain(kwargs: dict[str, Any], data: st.DataObject) -> None:
    return None


def _fuzz_operation(
    http: httpx.Client, tally: Tally, operation: Any, mode: GenerationMode, examples: int, mutate: Mutator, base: str
) -> None:
    """Send ``examples`` cases of one operation, each adjusted by ``mutate`` before it goes out."""

    @settings(FUZZ_SETTINGS, max_examples=examples)
    @given(case=operation.as_strategy(generation_mode=mode), data=st.data())
    def run(case: Any, data: st.DataObject) -> None:
        kwargs: dict[str, Any] = case.as_transport_kwargs(base_url=base)
        mutate(kwargs, data)
        try:
            request = _to_request(http, kwargs)
        except (httpx.InvalidURL, httpx.LocalProtocolError):
            tally.not_sent += 1
            return
        exchange(http, tally, request)

    run()


@schemathesis.serializer("application/trickle-ice-sdpfrag")
def _ice_fragment(ctx: Any, value: Any) -> bytes:
    """ICE fragments (the media resource's PATCH body) go out as the text generated for them."""
    return value.encode("utf-8", "surrogatepass") if isinstance(value, str) else json.dumps(value).encode()


def test_every_operation_from_the_spec(live: tuple[LiveHost, Records, Calls]) -> None:
    host, records, calls = live
    since = records.mark()
    with httpx.Client(timeout=10) as http:
        spec = http.get(f"{host.base}{PREFIX}/openapi.json").json()
        schema = schemathesis.openapi.from_dict(spec)
        loaded = list(schema.get_all_operations())
        assert all(isinstance(r, Ok) for r in loaded), [r for r in loaded if not isinstance(r, Ok)]
        operations = {(op.method.upper(), op.path): op for op in (r.ok() for r in loaded if isinstance(r, Ok))}
        assert len(operations) >= 9, sorted(operations)
        tally = Tally()
        # (operation, generation mode, how many cases, how the case is adjusted before it is sent)
        plan: list[tuple[tuple[str, str], GenerationMode, int, Mutator]] = []
        without_parameters = ("/widget.js", "/healthz", "/metrics", "/openapi.json", "/callbacks")
        parameterless = {("GET", path) for path in without_parameters}
        for key in operations:
            plan.append((key, GenerationMode.POSITIVE, 60, _plain))
            if key not in parameterless:
                plan.append((key, GenerationMode.NEGATIVE, 60, _plain))
        for key, mutate in (
            (("POST", "/sessions"), _mint_body),
            (("POST", "/callbacks"), _callback_body),
            (("POST", "/webhooks"), _signed),
            (("POST", "/sessions/{call_id}/end"), _with_token(host, calls)),
            (("GET", "/sessions/{call_id}/events"), _with_token(host, calls)),
            (("PATCH", "/sessions/{call_id}/media"), _with_token(host, calls)),
            (("DELETE", "/sessions/{call_id}/media"), _with_token(host, calls)),
        ):
            plan.append((key, GenerationMode.POSITIVE, 90, mutate))
            plan.append((key, GenerationMode.NEGATIVE, 50, mutate))

        for key, mode, examples, mutate in plan:
            _fuzz_operation(http, tally, operations[key], mode, examples, mutate, f"{host.base}{PREFIX}")

    assert host.wait_for_dropped_streams() == 0, "event streams the fuzzer dropped were never noticed"
    print("\n" + tally.report("schema-driven fuzz"))
    assert tally.total >= MIN_SCHEMA_REQUESTS, tally.report("too few requests")
    assert not tally.violations, "\n".join(tally.violations[:25])
    assert not records.errors(since), "\n".join(records.errors(since)[:25])
    assert set(tally.by_route) >= {
        "sessions", "sessions/{id}/end", "sessions/{id}/events", "sessions/{id}/media", "callbacks", "webhooks"
    }  # fmt: skip


# -- hostile, hand-written ----------------------------------------------------------------------------------------
_BILLABLE_AND_TOKEN_ROUTES = [
    ("POST", "/sessions"),
    ("POST", "/sessions/{id}/end"),
    ("GET", "/sessions/{id}/events"),
    ("PATCH", "/sessions/{id}/media"),
    ("DELETE", "/sessions/{id}/media"),
    ("POST", "/callbacks"),
    ("POST", "/webhooks"),
]
_ROUTES = [
    *(_BILLABLE_AND_TOKEN_ROUTES * 3),  # where hostile input can do harm: drawn three times as often
    ("GET", "/widget.js"),
    ("GET", "/healthz"),
    ("GET", "/openapi.json"),
    ("GET", "/metrics"),
    ("GET", "/call/{agent}"),
    ("GET", "/snippet"),
    ("GET", "/call.css"),
    ("GET", "/{unknown}"),
    ("GET", "/sessions/{id}/{unknown}"),
    ("GET", "{outside}"),
]
_METHODS = ["GET", "POST", "PUT", "PATCH", "DELETE", "OPTIONS", "HEAD"]
_CONTENT_TYPES = [
    "application/json",
    "application/json; charset=utf-8",
    "APPLICATION/JSON",
    "application/json; charset=bogus",
    "application/json;;;",
    "application/jsonx",
    "application/x-www-form-urlencoded",
    "multipart/form-data; boundary=xyz",
    "text/plain",
    "text/plain; charset=utf-8",
    "application/sdp",
    "*/*",
    "json",
    ";",
    "",
]
_ORIGINS = [ORIGIN, ORIGIN + "/", ORIGIN.upper(), "null", "https://evil.example", "http://shop.example", "file://"]
# Printable Latin-1 without DEL: what an HTTP/1.1 header value can carry (aiohttp decodes it as UTF-8 or escapes).
_HEADER_TEXT = st.text(st.characters(min_codepoint=0x21, max_codepoint=0xFF, exclude_characters="\x7f"), max_size=120)
_JSON_LEAF = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=False, allow_infinity=False),
    st.text(max_size=40),
)
_JSON = st.recursive(
    _JSON_LEAF,
    lambda inner: st.one_of(st.lists(inner, max_size=5), st.dictionaries(st.text(max_size=12), inner, max_size=5)),
    max_leaves=25,
)


@st.composite
def _body(draw: st.DrawFn, call_ids: list[str]) -> tuple[bytes | None, bool]:
    """A request body, and whether it may be signed (deep nesting never is: see test_signed_deep_nesting_*)."""
    kind = draw(
        st.sampled_from(["none", "empty", "bytes", "text", "json", "object", "variables", "nesting", "huge", "event"])
    )
    if kind == "none":
        return None, False
    if kind == "empty":
        return b"", True
    if kind == "bytes":
        return draw(st.binary(max_size=2048)), True
    if kind == "text":
        return draw(st.text(max_size=500)).encode("utf-8", "surrogatepass"), True
    if kind == "json":
        return json.dumps(draw(_JSON)).encode(), True
    if kind == "object":
        body = draw(
            st.dictionaries(st.sampled_from(["agent", "variables", "phone_number", "consent", "bot_token"]), _JSON)
        )
        return json.dumps(body).encode(), True
    if kind == "variables":
        variables = draw(st.dictionaries(st.text(max_size=70), st.one_of(st.text(max_size=260), _JSON), max_size=40))
        agent = draw(st.sampled_from(["sales", "support", "nobody", ""]))
        return json.dumps({"agent": agent, "variables": variables}).encode(), True
    if kind == "nesting":
        depth = draw(st.integers(min_value=1, max_value=200_000))
        opener, closer = draw(st.sampled_from([("[", "]"), ('{"a":', "}"), ('{"agent":', "}")]))
        return (opener * depth + "1" + closer * depth).encode(), False
    if kind == "huge":
        size = draw(st.integers(min_value=16 * 1024 - 64, max_value=300 * 1024))
        return json.dumps({"agent": "sales", "pad": "x" * size}).encode(), False
    event = {
        "event_type": draw(st.sampled_from(["call_initiated", "call_ended", "transfer_completed", "", "??"])),
        "payload": {"call": {"id": draw(st.sampled_from([*call_ids, "call_unknown", ""])), "extra": draw(_JSON)}},
    }
    return json.dumps(event).encode(), True


@st.composite
def hostile_requests(draw: st.DrawFn, host: LiveHost, calls: Calls) -> httpx.Request:
    method, template = draw(st.sampled_from(_ROUTES))
    # Half the requests get past the envelope checks (right method, allowed origin, JSON content type), so that
    # their hostile bodies, tokens and headers reach the code behind them.
    envelope = draw(st.booleans())
    if not envelope and draw(st.integers(0, 3)) == 0:
        method = draw(st.sampled_from(_METHODS))
    segment = st.one_of(
        st.sampled_from(calls.ids),
        st.text(max_size=80).map(lambda s: quote(s, safe="")),
        st.sampled_from(["..", ".", "%2e%2e", "%00", "%2F", "call_" + "9" * 200, "%C0%AE", "~", "sales"]),
    )
    call_id = draw(segment)
    path = (
        template.replace("{id}", call_id)
        .replace("{agent}", draw(st.one_of(st.sampled_from(["sales", "support", "SALES", ""]), segment)))
        .replace("{unknown}", draw(segment))
    )
    if template == "{outside}":
        path = draw(st.sampled_from(["/", "/webcall", "/webcallx", "/favicon.ico", "/webcall-sessions"]))
        url = host.base + path
    else:
        url = host.base + PREFIX + path
    headers: dict[str, bytes] = {}
    if envelope:
        headers["Origin"] = ORIGIN.encode()
        if method == "POST":
            headers["Content-Type"] = b"application/json"
    else:
        if draw(st.booleans()):
            headers["Origin"] = draw(st.one_of(st.sampled_from(_ORIGINS), _HEADER_TEXT)).encode("latin-1")
        if draw(st.booleans()):
            headers["Content-Type"] = draw(st.one_of(st.sampled_from(_CONTENT_TYPES), _HEADER_TEXT)).encode("latin-1")
    body, signable = draw(_body(calls.ids))
    real_call = call_id if call_id in calls.ids else calls.ids[0]
    if draw(st.booleans()):
        token = draw(_token_variants(host, calls, real_call))
        scheme = draw(st.sampled_from(["Bearer ", "bearer ", "Basic ", "Token ", "", "Bearer  "]))
        headers["Authorization"] = (scheme + token).encode("latin-1")
    query: dict[str, str] = {}
    if draw(st.booleans()):
        query = draw(
            st.dictionaries(
                st.sampled_from(["token", "agent", "v", "last_event_id", "x", ""]),
                st.one_of(_token_variants(host, calls, real_call), st.text(max_size=60)),
                max_size=4,
            )
        )
        if "last_event_id" in query:  # non-ASCII and overlong ids: test_last_event_id_* below
            query["last_event_id"] = re.sub(r"[^ -~]", "", query["last_event_id"])[:64]
    for name in draw(
        st.lists(
            st.sampled_from(
                [
                    "X-Forwarded-For",
                    "Last-Event-ID",
                    "If-None-Match",
                    "Accept-Encoding",
                    "Accept",
                    "x-nexa-signature",
                    "X-DialNexa-Signature",
                    "Access-Control-Request-Method",
                    "Access-Control-Request-Headers",
                    "Cookie",
                    "X-Random-Header",
                ]
            ),
            max_size=4,
            unique=True,
        )
    ):
        value = draw(_HEADER_TEXT)
        if name == "Last-Event-ID":
            value = re.sub(r"[^ -~]", "", value)[:64]
        headers[name] = value.encode("latin-1")
    if signable and body is not None and draw(st.booleans()):
        headers["x-nexa-signature"] = signature(body, WEBHOOK_SECRET).encode()
    raw_headers = {name.encode(): value for name, value in headers.items()}
    request = httpx.Request(method, url, headers=raw_headers, params=query or None, content=body)
    if len(str(request.url)) > MAX_URL:  # aiohttp's own request-line limit answers before any route would
        request = httpx.Request(method, url, headers=raw_headers, content=body)
    return request


def test_hostile_requests_to_every_route(live: tuple[LiveHost, Records, Calls]) -> None:
    host, records, calls = live
    since = records.mark()
    tally = Tally()
    with httpx.Client(timeout=10) as http:

        @settings(FUZZ_SETTINGS, max_examples=MIN_HOSTILE_REQUESTS + 300)
        @given(request=hostile_requests(host, calls))
        def run(request: httpx.Request) -> None:
            exchange(http, tally, request)

        run()

    assert host.wait_for_dropped_streams() == 0, "event streams the fuzzer dropped were never noticed"
    print("\n" + tally.report("hostile fuzz"))
    assert tally.total >= MIN_HOSTILE_REQUESTS, tally.report("too few requests")
    assert not tally.violations, "\n".join(tally.violations[:25])
    assert not records.errors(since), "\n".join(records.errors(since)[:25])
    expected = {name for name, _ in _TEMPLATES} | {"unknown (under prefix)", "unknown (outside prefix)"}
    assert set(tally.by_route) == expected


# -- found by fuzzing, pinned down ----------------------------------------------------------------------------------
async def _stream_session(client: Any) -> dict[str, Any]:
    response = await client.post(
        "/webcall/sessions", json={"offer": OFFER, "agent": "sales"}, headers={"Origin": ORIGIN}
    )
    assert response.status == 201, await response.text()
    session: dict[str, Any] = await response.json()
    return session


async def _deliver(client: Any, event_type: str, call_id: str) -> None:
    body = json.dumps({"event_type": event_type, "payload": {"call": {"id": call_id}}}).encode()
    headers = {"x-nexa-signature": signature(body, WEBHOOK_SECRET)}
    response = await client.post(f"{PREFIX}/webhooks", data=body, headers=headers)
    assert response.status == 200, await response.text()


async def _replayed_ids(make_host: MakeHost, last: str) -> list[int]:
    """The sequence numbers of the events a browser reconnecting with ``last_event_id=last`` (where ``{epoch}``
    stands for the epoch of the call's log) is sent, for a call whose log holds four events (1 session.created,
    2 call.started, 3 call.transferred, 4 call.ended, which closes the stream)."""
    client, handle = await make_host(webhook_secrets=(WEBHOOK_SECRET,))
    session = await _stream_session(client)
    for event_type in ("call_initiated", "transfer_completed", "call_ended"):
        await _deliver(client, event_type, session["call_id"])
    epoch = (await runtime(handle).store.events_after(session["call_id"], None))[0][0].epoch
    query = {"token": session["token"], "last_event_id": last.replace("{epoch}", epoch)}
    response = await client.get(session["events_url"], params=query)
    assert response.status == 200 and response.headers["Content-Type"].startswith("text/event-stream")
    text = await asyncio.wait_for(response.text(), 5)  # the stream ends after call.ended
    ids = [line.removeprefix("id: ").partition("-") for line in text.splitlines() if line.startswith("id: ")]
    assert {sent_epoch for sent_epoch, _, _ in ids} <= {epoch}
    return [int(seq) for _, _, seq in ids]


@pytest.mark.parametrize(
    ("last", "replayed"),
    [("{epoch}-0", [1, 2, 3, 4]), ("{epoch}-2", [3, 4]), ("{epoch}-003", [4]), ("another-2", [1, 2, 3, 4])]
    + [(unreadable, [1, 2, 3, 4]) for unreadable in ("\u0663", "2", "-1", "abc", "1.5", " 1", "{epoch}-")],
)
async def test_last_event_id_is_read_leniently(make_host: MakeHost, last: str, replayed: list[int]) -> None:
    """A readable id replays what came after it; anything else replays the whole log."""
    assert await _replayed_ids(make_host, last) == replayed


@pytest.mark.parametrize("last", ["\u00b2", "1" * 5000], ids=["superscript-two", "5000-digits"])
async def test_last_event_id_never_breaks_the_stream(
    make_host: MakeHost, caplog: pytest.LogCaptureFixture, last: str
) -> None:
    assert await _replayed_ids(make_host, last) == [1, 2, 3, 4]
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]


async def test_a_vanished_browser_is_not_a_server_error(
    emulator: EmulatorServer, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The next ping to a stream whose browser left fails to write; that is the end of the stream, not an error.
    Only a production runner shows it: aiohttp's test server cancels the handler as soon as the client leaves."""
    monkeypatch.setattr(webcall.sse, "PING_SECONDS", 0.05)
    caplog.set_level(logging.WARNING)
    host = web.Application()
    handle = webcall.setup(host, host_config(emulator))
    async with served(host) as base, httpx.AsyncClient(base_url=base, timeout=5) as http:
        minted = await http.post(
            f"{PREFIX}/sessions", json={"agent": "sales", "offer": OFFER}, headers={"Origin": ORIGIN}
        )
        session = minted.json()
        async with http.stream("GET", session["events_url"], params={"token": session["token"]}) as stream:
            assert stream.status_code == 200
            await anext(stream.aiter_raw())
        # the visitor closed the tab
        for _ in range(100):
            if not runtime(handle).streams:
                break
            await asyncio.sleep(0.02)
        assert not runtime(handle).streams, "the stream of a vanished browser was never noticed"
    errors = [f"{r.name}: {r.getMessage()}" for r in caplog.records if r.levelno >= logging.ERROR]
    assert not errors, errors


def _deep_delivery(call_id: str, depth: int) -> bytes:
    nested = "[" * depth + "]" * depth
    return f'{{"event_type": "call_ended", "payload": {{"call": {{"id": "{call_id}", "x": {nested}}}}}}}'.encode()


async def test_signed_deep_nesting_is_refused_as_unreadable(
    make_host: MakeHost, caplog: pytest.LogCaptureFixture
) -> None:
    client, _ = await make_host(webhook_secrets=(WEBHOOK_SECRET,))
    body = _deep_delivery("call_deep", 700)
    response = await client.post(
        "/webcall/webhooks", data=body, headers={"x-nexa-signature": signature(body, WEBHOOK_SECRET)}
    )
    assert response.status == 400, await response.text()
    assert (await response.json())["code"] == "invalid_event"
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]


async def test_a_refused_delivery_leaves_nothing_behind(make_host: MakeHost) -> None:
    """A signed delivery too deeply nested to read is refused (400) as often as DialNexa retries it, stores nothing,
    and does not use up the call's dedupe key: the readable delivery that follows is relayed."""
    client, handle = await make_host(webhook_secrets=(WEBHOOK_SECRET,))
    body = _deep_delivery("call_retried", 700)
    headers = {"x-nexa-signature": signature(body, WEBHOOK_SECRET)}
    for _ in range(2):
        response = await client.post("/webcall/webhooks", data=body, headers=headers)
        assert response.status == 400 and (await response.json())["code"] == "invalid_event"
    assert await runtime(handle).store.events_after("call_retried", None) == []
    await _deliver(client, "call_ended", "call_retried")
    stored = await runtime(handle).store.events_after("call_retried", None)
    assert [event["type"] for _, event in stored] == ["call.ended"]
