"""Tolerant parsing of DialNexa answers."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from webcall.dialnexa.models import AgentInfo, CallRecord, ParseError, WebCallSession, WebhookRecord, list_items

WEB_CALL = {
    "id": "call_1",
    "type": "web_call",
    "agent_id": "agent_1",
    "agent_version_number": 2,
    "status": "created",
    "access_token": "wct_abc",
    "expires_at": "2026-11-24T10:00:30Z",
    "media": {"transport": "webrtc-whip", "whip_url": "https://m.example/whip", "ice_servers": [{"urls": "stun:x"}]},
}


@pytest.mark.parametrize(
    "body",
    [
        WEB_CALL,
        {"data": WEB_CALL},
        {"web_call": WEB_CALL},
        {"data": {"call": WEB_CALL}},
        {**WEB_CALL, "id": None, "call_id": "call_1", "access_token": None, "token": "wct_abc"},
    ],
)
def test_web_call_envelopes(body: dict[str, object]) -> None:
    session = WebCallSession.parse(body)
    assert session.id == "call_1" and session.access_token == "wct_abc"
    assert session.media.whip_url == "https://m.example/whip"
    assert session.expires_at == datetime(2026, 11, 24, 10, 0, 30, tzinfo=UTC)
    assert "wct_abc" not in repr(session)


def test_web_call_epoch_millis_and_missing_fields() -> None:
    session = WebCallSession.parse({**WEB_CALL, "expires_at": 1_795_000_000_000})
    assert session.expires_at is not None and session.expires_at.year == 2026
    with pytest.raises(ParseError, match="access_token"):
        WebCallSession.parse({**WEB_CALL, "access_token": None})
    with pytest.raises(ParseError):
        WebCallSession.parse(["not", "an", "object"])


def test_agent_placeholders_and_versions() -> None:
    agent = AgentInfo.parse(
        {
            "data": {
                "id": "agent_1",
                "agent_type": "Single_Prompt_Agent",
                "versions": [
                    {"version_number": 1, "is_published": True, "welcome_message": "Hi {{name}}, {{ call_id }}"},
                    {
                        "version_number": 2,
                        "is_published": True,
                        "welcome_message": "Hello {{name}} from {{company}}",
                        "prompt": "Use {{plan}}",
                        "default_dynamic_variables": {"plan": "basic"},
                    },
                    {"version_number": 3, "is_published": False, "welcome_message": "{{draft}}"},
                ],
            }
        }
    )
    assert agent.version(None) is not None and agent.version(None).version_number == 2  # type: ignore[union-attr]
    assert agent.version(3) is None
    assert agent.required_variables(None) == {"name", "company"}
    assert agent.required_variables(1) == {"name"}


def test_call_record_and_lists() -> None:
    record = CallRecord.parse({"id": "call_1", "status": "completed", "duration": 12, "disconnection_reason": "x"})
    assert record.duration == 12.0 and record.end_reason == "x" and record.metadata == {}
    assert list_items([{"id": 1}, "junk"], "calls") == [{"id": 1}]
    assert list_items({"data": {"webhooks": [{"id": 2}]}}, "webhooks") == [{"id": 2}]
    with pytest.raises(ParseError):
        list_items({"nothing": 1}, "calls")


def test_webhook_flat_and_wrapped() -> None:
    flat = {"id": "wh_1", "url": "https://x/webhooks", "events": ["call.completed"], "is_active": True}
    assert WebhookRecord.parse(flat).id == "wh_1"
    assert WebhookRecord.parse({"message": "ok", "webhook": flat}).url == "https://x/webhooks"
