"""The README's quickstart runs as written: the five-line app starts and the curl command mints a session."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from .quickstart import mint_with_curl, serve_quickstart


@pytest.fixture
def quickstart(tmp_path: Path) -> Iterator[int]:
    with serve_quickstart(sys.executable, tmp_path) as port:
        yield port


def test_quickstart_mints_a_session_with_curl(quickstart: int) -> None:
    body = mint_with_curl(quickstart)
    assert body["call_id"].startswith("call_") and body["agent"] == "sales"
    assert body["media"]["whip_url"].startswith("http://127.0.0.1:")
    assert body["token"] and body["access_token"]
