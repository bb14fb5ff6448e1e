"""GET /webcall/openapi.json describes the surface accurately: real responses validate against it."""

from __future__ import annotations

import json
from typing import Any

import jsonschema

from webcall.webhooks import signature

from .conftest import MakeHost
from .hosting import ORIGIN
from .offers import OFFER

SECRET = "openapi-webhook-secret-0123"


def check(spec: dict[str, Any], path: str, method: str, status: int, body: Any) -> None:
    operation = spec["paths"][path][method]
    assert str(status) in operation["responses"], f"{method.upper()} {path} answered {status}, not in the spec"
    content = operation["responses"][str(status)].get("content", {})
    if "application/json" in content:
        schema = {**spec, **content["application/json"]["schema"]}
        jsonschema.Draft202012Validator(schema).validate(body)


async def test_real_responses_match_the_spec(make_host: MakeHost) -> None:
    client, _ = await make_host(webhook_secrets=(SECRET,), rate_limit=20, callback_countries=("US",))
    response = await client.get("/webcall/openapi.json")
    assert response.status == 200
    spec = await response.json()
    jsonschema.Draft202012Validator.check_schema({"$defs": spec["components"]["schemas"]})
    assert spec["openapi"] == "3.1.0" and spec["servers"] == [{"url": "/webcall"}]
    h = {"Origin": ORIGIN}
    seen = 0

    async def expect(path: str, method: str, response: Any) -> Any:
        nonlocal seen
        body = await response.json()
        check(spec, path, method, response.status, body)
        seen += 1
        return body

    session = await expect(
        "/sessions", "post", await client.post("/webcall/sessions", json={"offer": OFFER, "agent": "sales"}, headers=h)
    )
    await expect(
        "/sessions", "post", await client.post("/webcall/sessions", json={"offer": OFFER, "agent": "x"}, headers=h)
    )
    await expect("/sessions", "post", await client.post("/webcall/sessions", data="x", headers=h))
    await expect("/sessions", "post", await client.post("/webcall/sessions", json={"offer": OFFER, "agent": "sales"}))
    await expect(
        "/callbacks",
        "post",
        await client.post(
            "/webcall/callbacks", json={"agent": "sales", "phone_number": "+14155550123", "consent": True}, headers=h
        ),
    )
    await expect(
        "/callbacks",
        "post",
        await client.post(
            "/webcall/callbacks", json={"agent": "sales", "phone_number": "555", "consent": True}, headers=h
        ),
    )
    await expect(
        "/callbacks",
        "post",
        await client.post(
            "/webcall/callbacks", json={"agent": "sales", "phone_number": "+881632000000", "consent": True}, headers=h
        ),
    )
    assert await expect("/callbacks", "get", await client.get("/webcall/callbacks", headers=h)) == {"countries": ["US"]}
    body = json.dumps({"event_type": "call_ended", "payload": {"call": {"id": session["call_id"]}}}).encode()
    await expect(
        "/webhooks",
        "post",
        await client.post("/webcall/webhooks", data=body, headers={"x-nexa-signature": signature(body, SECRET)}),
    )
    await expect("/webhooks", "post", await client.post("/webcall/webhooks", data=body))
    await expect("/sessions/{call_id}/end", "post", await client.post(session["end_url"]))
    await expect(
        "/sessions/{call_id}/end",
        "post",
        await client.post(session["end_url"], headers={"Authorization": f"Bearer {session['token']}"}),
    )
    await expect("/sessions/{call_id}/events", "get", await client.get(session["events_url"]))
    await expect("/healthz", "get", await client.get("/webcall/healthz"))
    assert seen == 14


async def test_every_route_is_documented(make_host: MakeHost) -> None:
    client, handle = await make_host()
    spec = await (await client.get("/webcall/openapi.json")).json()
    documented = {(path, method.upper()) for path, ops in spec["paths"].items() for method in ops}
    pages = {"/call/{agent}", "/snippet", "/call.css"}
    for route in handle.app.router.routes():
        info = route.resource.canonical.removeprefix("/webcall") if route.resource else ""
        if route.method in ("OPTIONS", "HEAD") or info in pages:
            continue
        assert (info, route.method) in documented, f"{route.method} {info} is not in openapi.json"
