"""The README's quickstart runs as written: the five-line app starts, answers the curl command, and starts a call."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from .offers import OFFER
from .quickstart import health_with_curl, serve_quickstart, start_call


@pytest.fixture
def quickstart(tmp_path: Path) -> Iterator[int]:
    with serve_quickstart(sys.executable, tmp_path, this_checkout=True) as port:
        yield port


def test_quickstart_answers_curl_and_starts_a_call(quickstart: int) -> None:
    health = health_with_curl(quickstart)
    assert health["status"] == "ok" and health["upstream"] == "emulator"
    assert health["agents"] == ["collections", "sales", "support"]
    status, headers, body = start_call(quickstart, OFFER)
    assert status == 201, body
    assert body["call_id"].startswith("call_") and body["agent"] == "sales" and body["answer"].startswith("v=0")
    assert headers["Location"] == body["media_url"] and body["token"]
    assert "access_token" not in body and "media" not in body
