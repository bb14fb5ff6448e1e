"""``python -m webcall serve`` and gunicorn workers: the plugin as its own service, in real processes."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from webcall.tickets import sign_ticket

from .net import free_port
from .offers import OFFER
from .redis_server import RedisServer
from .service import Service, clean_environment, running_service

pytestmark = pytest.mark.timeout(180)

SERVE = [sys.executable, "-m", "webcall", "serve", "--port", "{port}"]
TICKET_SECRET = "service-ticket-secret-0123456789-abcdefgh"
SESSION_SECRET = "service-session-secret-0123456789-abcdefg"
STATIC_SITE = "https://static.example"


def start_call(service: Service, origin: str | None = None, **body: object) -> httpx.Response:
    return httpx.post(
        f"{service.url}/webcall/sessions",
        json={"agent": "sales", "offer": OFFER, **body},
        headers={"Origin": origin or service.origin, "Connection": "close"},
        timeout=30,
    )


def test_serve_runs_the_plugin_on_the_embedded_emulator(tmp_path: Path) -> None:
    with running_service(SERVE, tmp_path, env=clean_environment()) as service:
        printed = service.wait_for_output("webcall: serving on")
        assert "with the embedded DialNexa emulator" in printed
        home = httpx.get(f"{service.url}/", follow_redirects=False)
        assert home.status_code == 302 and home.headers["Location"] == "/webcall/call/sales"
        page = httpx.get(f"{service.url}/webcall/call/sales")
        assert page.status_code == 200 and '<dialnexa-webcall agent="sales"' in page.text
        health = httpx.get(f"{service.url}/healthz").json()
        assert health["status"] == "ok" and health["upstream"] == "emulator" and "sales" in health["agents"]

        started = start_call(service)
        assert started.status_code == 201, started.text
        session = started.json()
        ended = httpx.post(
            f"{service.url}{session['end_url']}", headers={"Authorization": f"Bearer {session['token']}"}, timeout=30
        )
        assert ended.status_code == 200, ended.text
        printed = service.wait_for_output(f"call.ended {session['call_id']}")
        lines = printed.splitlines()
        event_lines = [line for line in lines if session["call_id"] in line and "webcall.service" in line]
        assert event_lines and "agent=sales" in event_lines[-1], printed
        assert service.stop() == 0
    assert "webcall: stopped" in service.output()


def test_serve_takes_its_address_and_prefix_from_flags(tmp_path: Path) -> None:
    command = [*SERVE, "--host", "127.0.0.1", "--prefix", "/voice"]
    with running_service(command, tmp_path, env=clean_environment(WEBCALL_AGENTS="")) as service:
        assert httpx.get(f"{service.url}/voice/widget.js").status_code == 200
        assert httpx.get(f"{service.url}/webcall/widget.js").status_code == 404
        assert httpx.get(f"{service.url}/", follow_redirects=False).headers["Location"] == "/voice/call/sales"
        assert service.stop() == 0


def test_where_calls_need_a_ticket_the_home_page_is_the_snippet(tmp_path: Path) -> None:
    env = clean_environment(WEBCALL_TICKET_SECRETS=TICKET_SECRET, WEBCALL_REQUIRE_TICKET="true")
    with running_service(SERVE, tmp_path, env=env) as service:
        home = httpx.get(f"{service.url}/", follow_redirects=False)
        assert home.status_code == 302 and home.headers["Location"] == "/webcall/snippet"
        assert "Calls here need a call ticket" in httpx.get(f"{service.url}/webcall/snippet").text
        assert service.stop() == 0


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        ({"WEBCALL_REQUIRE_TICKET": "true"}, "WEBCALL_TICKET_SECRETS"),
        ({"WEBCALL_TICKET_SECRETS": "short"}, "at least 32 bytes"),
        ({"WEBCALL_RATE_LIMIT": "lots"}, "WEBCALL_RATE_LIMIT"),
    ],
)
def test_serve_refuses_a_wrong_configuration_with_a_sentence(settings: dict[str, str], message: str) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "webcall", "serve", "--port", str(free_port())],
        env=clean_environment(**settings),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 1 and message in done.stderr, done.stderr
    assert "Traceback" not in done.stderr


def worker_processes(master: int) -> list[int]:
    """The pids of the processes gunicorn's master ``master`` started."""
    children = Path(f"/proc/{master}/task/{master}/children").read_text().split()
    return [int(pid) for pid in children]


def test_gunicorn_workers_share_tickets_limits_and_tokens_through_redis(
    tmp_path: Path, redis: RedisServer, emulator_process: Service
) -> None:
    env = clean_environment(
        DIALNEXA_API_KEY="emu_key:emu_secret",
        DIALNEXA_BASE_URL=f"{emulator_process.url}/v1",
        WEBCALL_AGENTS="sales=agent_sales+name",
        WEBCALL_STORE=redis.url,
        WEBCALL_SESSION_SECRET=SESSION_SECRET,
        WEBCALL_TICKET_SECRETS=TICKET_SECRET,
        WEBCALL_REQUIRE_TICKET="true",
        WEBCALL_ALLOWED_ORIGINS=STATIC_SITE,
        WEBCALL_IDENTITY_RATE_LIMIT="4",
        WEBCALL_RATE_LIMIT="100/60",
    )
    command = [
        sys.executable, "-m", "gunicorn", "webcall.service:app", "--worker-class", "aiohttp.GunicornWebWorker",
        "--workers", "3", "--bind", "127.0.0.1:{port}", "--graceful-timeout", "5",
    ]  # fmt: skip
    with running_service(command, tmp_path, env=env, startup_timeout=90) as service:
        assert len(worker_processes(service.process.pid)) == 3
        assert httpx.get(f"{service.url}/healthz").json()["store"] == "redis"

        # Each request on its own connection, so the three workers share them out.
        refused = start_call(service, STATIC_SITE)
        assert refused.status_code == 401 and refused.json()["code"] == "ticket_required"
        sessions = []
        for visitor in range(6):
            ticket = sign_ticket(TICKET_SECRET, subject=f"visitor-{visitor}", agent="sales", variables={"name": "Ada"})
            started = start_call(service, STATIC_SITE, ticket=ticket)
            assert started.status_code == 201, started.text
            sessions.append(started.json())
            reused = start_call(service, STATIC_SITE, ticket=ticket)
            assert reused.status_code == 409 and reused.json()["code"] == "ticket_used", reused.text

        for attempt in range(5):  # one identity's limit holds across workers: 4 starts, then 429
            ticket = sign_ticket(TICKET_SECRET, subject="frequent-caller", agent="sales")
            started = start_call(service, STATIC_SITE, ticket=ticket)
            assert started.status_code == (201 if attempt < 4 else 429), started.text

        for session in sessions:  # each worker logs its call events, as `serve` does, without a logging setup
            service.wait_for_output(f"session.created {session['call_id']} agent=sales")
        for session in sessions:  # a token from any worker is honoured by whichever answers
            ended = httpx.post(
                f"{service.url}{session['end_url']}",
                headers={"Authorization": f"Bearer {session['token']}", "Connection": "close"},
                timeout=30,
            )
            assert ended.status_code == 200, ended.text
        assert service.stop() == 0


def test_on_the_embedded_emulator_the_cap_is_what_its_media_server_carries(tmp_path: Path) -> None:
    """The plugin's default cap (20) is above the emulator's 16 live calls: the 17th visitor hears that every line
    is busy (503 capacity_reached), not that the voice service failed."""
    with running_service(SERVE, tmp_path, env=clean_environment(WEBCALL_RATE_LIMIT="100/60")) as service:
        statuses = [start_call(service).status_code for _ in range(16)]
        assert statuses == [201] * 16
        busy = start_call(service)
        assert busy.status_code == 503 and busy.json()["code"] == "capacity_reached", busy.text
        assert service.stop() == 0
