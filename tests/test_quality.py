"""The browser's quality summary: checked like any stranger's input, kept once, on ``call.ended`` and in metrics."""

from __future__ import annotations

import asyncio
import json
import time
from typing import Any

import pytest

from webcall.bus import QUALITY_WAIT_SECONDS
from webcall.events import CallEvent
from webcall.quality import InvalidSummary, check_summary
from webcall.webhooks import signature

from .conftest import ORIGIN_HEADERS, MakeHost, mint, problem

SUMMARY = {
    "candidate": "relay",
    "protocol": "tcp",
    "connect_ms": 412,
    "duration_s": 31,
    "samples": 15,
    "rtt_ms": 118,
    "rtt_max_ms": 240,
    "jitter_ms": 9,
    "loss_in": 0.012,
    "loss_out": None,
    "weak_s": 4,
}


@pytest.mark.parametrize(
    ("summary", "says"),
    [
        ([], "JSON object"),
        ({"note": "hello"}, "Unknown field"),
        ({"candidate": "carrier-pigeon"}, "candidate must be one of"),
        ({"protocol": "udp; DROP TABLE"}, "protocol must be one of"),
        ({"rtt_ms": "fast"}, "must be a number"),
        ({"rtt_ms": True}, "must be a number"),
        ({"rtt_ms": 10.5}, "whole number"),
        ({"rtt_ms": -1}, "between"),
        ({"loss_in": 1.5}, "between"),
        ({"jitter_ms": 10**9}, "between"),
    ],
)
def test_a_summary_holds_only_bounded_numbers_and_known_names(summary: Any, says: str) -> None:
    with pytest.raises(InvalidSummary, match=says):
        check_summary(summary)


def test_a_summary_from_the_widget_passes_as_it_is() -> None:
    assert check_summary(SUMMARY) == {key: value for key, value in SUMMARY.items() if value is not None}


async def start(client: Any, *, reports_quality: bool) -> dict[str, Any]:
    response = await mint(client, {"agent": "sales", "quality_report": reports_quality})
    assert response.status == 201, await response.text()
    body: dict[str, Any] = await response.json()
    return body


def bearer(session: dict[str, Any]) -> dict[str, str]:
    return {**ORIGIN_HEADERS, "Authorization": f"Bearer {session['token']}"}


WEBHOOK_SECRET = "quality-tests-webhook-secret"


async def dialnexa_says_ended(client: Any, call_id: str) -> None:
    """DialNexa's ``call_ended`` webhook for the call, signed as DialNexa signs it."""
    body = json.dumps({"event_type": "call_ended", "payload": {"call": {"id": call_id, "status": "ended"}}}).encode()
    headers = {"Content-Type": "application/json", "x-nexa-signature": signature(body, WEBHOOK_SECRET)}
    assert (await client.post("/webcall/webhooks", data=body, headers=headers)).status == 200


async def ended(got: list[CallEvent], within: float = 5.0) -> CallEvent:
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        for event in got:
            if event.type == "call.ended":
                return event
        await asyncio.sleep(0.02)
    raise AssertionError(f"no call.ended in {within} s: {[e.type for e in got]}")


async def test_the_summary_reaches_the_hosts_call_ended_callback(make_host: MakeHost) -> None:
    client, handle = await make_host(metrics=True, webhook_secrets=(WEBHOOK_SECRET,))
    got: list[CallEvent] = []
    handle.on_call_event.append(got.append)
    session = await start(client, reports_quality=True)
    quality_url = f"/webcall/sessions/{session['call_id']}/quality"
    await problem(await client.post(quality_url, json=SUMMARY, headers=ORIGIN_HEADERS), 401, "unauthorized")
    await problem(await client.post(quality_url, json={"rtt_ms": -5}, headers=bearer(session)), 400, "invalid_quality")
    too_big = {"candidate": "relay", "padding": "x" * 2000}
    await problem(await client.post(quality_url, json=too_big, headers=bearer(session)), 413, "payload_too_large")
    assert (await client.post(quality_url, json=SUMMARY, headers=bearer(session))).status == 204
    second = {**SUMMARY, "rtt_ms": 1}
    assert (await client.post(quality_url, json=second, headers=bearer(session))).status == 204
    await dialnexa_says_ended(client, session["call_id"])
    event = await ended(got)
    assert event.quality is not None and event.quality["rtt_ms"] == 118, "the first summary is kept"
    assert event.quality["candidate"] == "relay" and "loss_out" not in event.quality
    metrics = await (await client.get("/webcall/metrics")).text()
    assert 'webcall_call_quality_reports_total{candidate="relay",protocol="tcp"} 1.0' in metrics
    assert "webcall_call_rtt_seconds_count 1.0" in metrics
    assert 'webcall_call_packet_loss_ratio_count{direction="in"} 1.0' in metrics


async def test_call_ended_waits_a_moment_for_a_summary_on_its_way(make_host: MakeHost) -> None:
    client, handle = await make_host(webhook_secrets=(WEBHOOK_SECRET,))
    got: list[CallEvent] = []
    handle.on_call_event.append(got.append)
    session = await start(client, reports_quality=True)
    await dialnexa_says_ended(client, session["call_id"])
    await asyncio.sleep(0.3)  # the browser sends its summary after the hang-up went out
    url = f"/webcall/sessions/{session['call_id']}/quality"
    assert (await client.post(url, json=SUMMARY, headers=bearer(session))).status == 204
    event = await ended(got)
    assert event.quality is not None and event.quality["protocol"] == "tcp"


async def test_without_a_browser_that_reports_call_ended_does_not_wait(make_host: MakeHost) -> None:
    client, handle = await make_host(webhook_secrets=(WEBHOOK_SECRET,))
    got: list[CallEvent] = []
    handle.on_call_event.append(got.append)
    session = await start(client, reports_quality=False)
    hung_up_at = time.monotonic()
    await dialnexa_says_ended(client, session["call_id"])
    event = await ended(got)
    assert event.quality is None
    assert time.monotonic() - hung_up_at < QUALITY_WAIT_SECONDS
