"""The README's quickstart runs as written: the five-line app starts, answers the curl command, and starts a call."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from webcall.emulator.server import EmulatorServer

from .conftest import MakeHost, mint, problem, runtime
from .offers import OFFER
from .quickstart import health_with_curl, readme_block, serve_quickstart, start_call


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


def test_the_serve_command_is_the_one_the_fresh_venv_test_runs() -> None:
    """``test_minimum_versions`` installs the project with its emulator extra and runs ``python -m webcall serve``."""
    command = readme_block("quickstart:serve").strip()
    assert command == 'pip install "dialnexa-webcall[emulator]" && python -m webcall serve'


async def test_the_python_ticket_snippet_signs_what_the_service_accepts(
    make_host: MakeHost, emulator: EmulatorServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    secret = "the-host-backend-ticket-secret-0123456789"
    monkeypatch.setenv("WEBCALL_TICKET_SECRET", secret)
    snippet: dict[str, Any] = {}
    exec(compile(readme_block("tickets:python"), "README.md", "exec"), snippet)
    ticket = snippet["call_ticket"]("user-7", "Grace")
    client, handle = await make_host(ticket_secrets=(secret,), require_ticket=True)
    response = await mint(client, {"agent": "sales", "ticket": ticket})
    assert response.status == 201, await response.text()
    call_id = (await response.json())["call_id"]
    assert emulator.state.calls[call_id].metadata["name"] == "Grace"
    context = await runtime(handle).store.get_context(call_id)
    assert context is not None and context["identity"] == "user-7"
    await problem(await mint(client, {"agent": "sales", "ticket": ticket}), 409, "ticket_used")
