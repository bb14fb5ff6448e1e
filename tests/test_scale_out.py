"""Several real worker processes sharing one real redis-server: the plugin keeps its promises across workers."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from webcall.emulator.config import EmulatorConfig
from webcall.emulator.server import EmulatorServer
from webcall.webhooks import signature

from .hosting import ORIGIN
from .net import free_port
from .offers import OFFER
from .redis_server import RedisServer

ROOT = Path(__file__).resolve().parents[1]
WEBHOOK_SECRET = "scale-out-webhook-secret-0123456789"
SESSION_SECRET = "scale-out-session-secret-0123456789abcdef"


class Workers:
    def __init__(self, tmp: Path, redis: RedisServer, emulator: EmulatorServer) -> None:
        self.tmp = tmp
        self.redis = redis
        self.emulator = emulator
        self.events = tmp / "callbacks.jsonl"
        self.events.touch()
        self.procs: dict[str, subprocess.Popen[bytes]] = {}
        self.ports: dict[str, int] = {}

    def start(self, name: str, **env: str) -> str:
        port = free_port()
        settings = {
            **{k: v for k, v in os.environ.items() if not k.startswith(("DIALNEXA_", "WEBCALL_"))},
            "PORT": str(port),
            "WORKER_NAME": name,
            "WORKER_EVENTS": str(self.events),
            "DIALNEXA_API_KEY": self.emulator.api_key,
            "DIALNEXA_BASE_URL": self.emulator.base_url,
            "WEBCALL_AGENTS": "sales=agent_sales+name",
            "WEBCALL_ALLOWED_ORIGINS": ORIGIN,
            "WEBCALL_SESSION_SECRET": SESSION_SECRET,
            "WEBCALL_WEBHOOK_SECRETS": WEBHOOK_SECRET,
            "WEBCALL_STORE": self.redis.url,
            "WEBCALL_CALLBACK_TIMEOUT": "30",
            "WEBCALL_OUTBOX_RECLAIM_SECONDS": "2",
            **env,
        }
        log = open(self.tmp / f"{name}.log", "ab")  # noqa: SIM115 - closed with the process
        self.procs[name] = subprocess.Popen(
            [sys.executable, "-m", "tests.worker_app"], cwd=ROOT, env=settings, stdout=log, stderr=subprocess.STDOUT
        )
        log.close()
        self.ports[name] = port
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            if self.procs[name].poll() is not None:
                raise AssertionError((self.tmp / f"{name}.log").read_text())
            try:
                if httpx.get(f"{self.url(name)}/webcall/healthz", timeout=0.5).status_code == 200:
                    return self.url(name)
            except httpx.HTTPError:
                pass
            time.sleep(0.1)
        raise AssertionError(f"worker {name} did not start")

    def url(self, name: str) -> str:
        return f"http://127.0.0.1:{self.ports[name]}"

    def kill(self, name: str) -> None:
        proc = self.procs.pop(name)
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=10)

    def stop_all(self) -> None:
        """SIGTERM every worker (a graceful shutdown), SIGKILL any still running after 10 s, and reap them all."""
        for proc in self.procs.values():
            proc.terminate()
        for proc in self.procs.values():
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=10)
        self.procs.clear()

    def callback_lines(self) -> list[dict[str, str]]:
        return [json.loads(line) for line in self.events.read_text().splitlines() if line.strip()]


@pytest.fixture
async def emulator_for_workers() -> AsyncIterator[EmulatorServer]:
    # Every mint opens a media session that never connects (no browser): room for them, and a short wait.
    async with EmulatorServer(EmulatorConfig(max_media_sessions=1000, media_connect_timeout=5.0)) as emu:
        yield emu


@pytest.fixture
async def workers(tmp_path: Path, redis: RedisServer, emulator_for_workers: EmulatorServer) -> AsyncIterator[Workers]:
    pool = Workers(tmp_path, redis, emulator_for_workers)
    yield pool
    # In a thread: the emulator runs on this event loop, and a worker shutting down may still be talking to it.
    await asyncio.to_thread(pool.stop_all)


def webhook(call_id: str, event_type: str, **call: Any) -> tuple[bytes, dict[str, str]]:
    body = json.dumps({"event_type": event_type, "payload": {"call": {"id": call_id, **call}}}).encode()
    return body, {"Content-Type": "application/json", "x-nexa-signature": signature(body, WEBHOOK_SECRET)}


async def mint(http: httpx.AsyncClient, base: str) -> httpx.Response:
    body = {"agent": "sales", "offer": OFFER}
    return await http.post(f"{base}/webcall/sessions", json=body, headers={"Origin": ORIGIN})


async def wait_for(predicate: Any, seconds: float = 15.0) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if predicate():
            return
        await asyncio.sleep(0.05)
    raise AssertionError("condition not met in time")


async def test_webhook_to_worker_a_reaches_sse_client_on_worker_b(workers: Workers) -> None:
    a = await asyncio.to_thread(workers.start, "a")
    b = await asyncio.to_thread(workers.start, "b")
    async with httpx.AsyncClient(timeout=10) as http:
        session = (await mint(http, a)).json()
        async with http.stream(
            "GET", f"{b}{session['events_url']}?token={session['token']}", headers={"Origin": ORIGIN}
        ) as stream:
            assert stream.status_code == 200
            lines = stream.aiter_lines()
            await asyncio.sleep(0.2)
            body, headers = webhook(session["call_id"], "call_ended", summary="relayed")
            assert (await http.post(f"{a}/webcall/webhooks", content=body, headers=headers)).status_code == 200
            seen: list[str] = []

            async def collect() -> None:
                async for line in lines:
                    seen.append(line)
                    if '"type": "call.ended"' in line:
                        return

            await asyncio.wait_for(collect(), 10)
    types = [json.loads(line[5:])["type"] for line in seen if line.startswith("data:")]
    assert types == ["session.created", "call.ended"]
    assert any('"summary": "relayed"' in line for line in seen)


async def test_rate_limit_holds_across_workers(workers: Workers) -> None:
    urls = [await asyncio.to_thread(workers.start, n, WEBCALL_RATE_LIMIT="5/60") for n in ("a", "b", "c")]
    async with httpx.AsyncClient(timeout=10) as http:
        responses = await asyncio.gather(*(mint(http, urls[i % 3]) for i in range(30)))
    codes = [r.status_code for r in responses]
    assert codes.count(201) == 5 and codes.count(429) == 25
    assert len(workers.emulator.state.calls) == 5


async def test_concurrent_call_cap_holds_across_workers(workers: Workers) -> None:
    env = {"WEBCALL_RATE_LIMIT": "1000/60", "WEBCALL_MAX_CONCURRENT_CALLS": "4"}
    urls = [await asyncio.to_thread(workers.start, n, **env) for n in ("a", "b", "c")]
    async with httpx.AsyncClient(timeout=10) as http:
        responses = await asyncio.gather(*(mint(http, urls[i % 3]) for i in range(24)))
    codes = [r.status_code for r in responses]
    assert codes.count(201) == 4 and codes.count(503) == 20
    assert len(workers.emulator.state.calls) == 4


async def test_worker_killed_before_its_callback_finished_event_delivered_once_by_another(workers: Workers) -> None:
    a = await asyncio.to_thread(workers.start, "a", WORKER_SLOW="30")
    body, headers = webhook("call_killed", "call_ended")
    async with httpx.AsyncClient(timeout=10) as http:
        assert (await http.post(f"{a}/webcall/webhooks", content=body, headers=headers)).status_code == 200
    await wait_for(lambda: any(x["id"] == "call_killed:call.ended" for x in workers.callback_lines()))
    workers.kill("a")  # accepted and started, never finished
    await asyncio.to_thread(workers.start, "b")
    await wait_for(lambda: any(x["phase"] == "done" for x in workers.callback_lines()))
    await asyncio.sleep(0.5)
    done = [x for x in workers.callback_lines() if x["phase"] == "done" and x["id"] == "call_killed:call.ended"]
    assert done == [{"worker": "b", "phase": "done", "id": "call_killed:call.ended"}]


async def test_redis_outage_gives_503_then_recovers_without_losing_events(workers: Workers, redis: RedisServer) -> None:
    a = await asyncio.to_thread(workers.start, "a")
    async with httpx.AsyncClient(timeout=10) as http:
        body1, headers1 = webhook("call_1", "call_ended")
        assert (await http.post(f"{a}/webcall/webhooks", content=body1, headers=headers1)).status_code == 200
        await wait_for(
            lambda: any(x["id"] == "call_1:call.ended" and x["phase"] == "done" for x in workers.callback_lines())
        )
        redis.stop()
        body2, headers2 = webhook("call_2", "call_ended")
        down = await http.post(f"{a}/webcall/webhooks", content=body2, headers=headers2)
        assert down.status_code == 503 and int(down.headers["Retry-After"]) > 0
        assert down.json()["code"] == "store_unavailable"
        minted = await mint(http, a)
        assert minted.status_code == 503 and "Retry-After" in minted.headers
        health = await http.get(f"{a}/webcall/healthz")
        assert health.status_code == 503
        await asyncio.to_thread(redis.start)  # same port; DialNexa retries the refused delivery
        await wait_for(lambda: httpx.get(f"{a}/webcall/healthz").status_code == 200)
        again = await http.post(f"{a}/webcall/webhooks", content=body2, headers=headers2)
        assert again.status_code == 200
        assert (await mint(http, a)).status_code == 201
    await wait_for(
        lambda: any(x["id"] == "call_2:call.ended" and x["phase"] == "done" for x in workers.callback_lines())
    )
    done = sorted(x["id"] for x in workers.callback_lines() if x["phase"] == "done" and x["id"].endswith("ended"))
    assert done == ["call_1:call.ended", "call_2:call.ended"]
