"""What a stranger can hold open, against real ``python -m webcall serve`` processes with real open-files limits.

One address holding thousands of idle sockets, or one call token holding many event streams, must not use up the
descriptors that other visitors need; and when the descriptor table does fill up, the log must not. Traffic stays on
loopback: the stranger connects from 127.0.0.1 and the other visitor from 127.0.0.2 (all of 127.0.0.0/8 is loopback
on Linux).
"""

from __future__ import annotations

import contextlib
import resource
import select
import socket
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit

import httpx
import pytest

from webcall import ConfigError, WebCallConfig
from webcall.guard import address_key

from .offers import OFFER
from .service import Service, clean_environment, running_service

pytestmark = [
    pytest.mark.timeout(180),
    pytest.mark.skipif(not sys.platform.startswith("linux"), reason="127.0.0.2 is loopback only on Linux"),
]

SERVE = [sys.executable, "-m", "webcall", "serve", "--host", "127.0.0.1", "--port", "{port}"]
ATTACK_SOCKETS = 3000
OTHER_VISITOR = "127.0.0.2"
PER_ADDRESS = 64  # the default of WEBCALL_MAX_CONNECTIONS_PER_ADDRESS
LOG_LINES_ALLOWED = 6  # the growth of the service's log while it is attacked
LOG_BYTES_ALLOWED = 2000


def serve_with_open_files(soft: int, hard: int) -> list[str]:
    """``python -m webcall serve`` started with this open-files limit, as a service manager's ``LimitNOFILE`` or
    ``ulimit -n`` would start it."""
    set_limit = (
        "import os, resource, sys; "
        "resource.setrlimit(resource.RLIMIT_NOFILE, (int(sys.argv[1]), int(sys.argv[2]))); "
        "os.execv(sys.executable, [sys.executable, *sys.argv[3:]])"
    )
    return [sys.executable, "-c", set_limit, str(soft), str(hard), *SERVE[1:]]


@pytest.fixture(autouse=True)
def room_for_the_attack() -> Iterator[None]:
    """This process holds the stranger's sockets, so it raises its own soft limit first (restored afterwards)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    needed = ATTACK_SOCKETS + 1000
    if hard != resource.RLIM_INFINITY and hard < needed:
        pytest.skip(f"the hard open-files limit ({hard}) is below the {needed} these tests hold")
    resource.setrlimit(resource.RLIMIT_NOFILE, (needed if hard == resource.RLIM_INFINITY else hard, hard))
    yield
    resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


def open_files_limit(pid: int) -> int:
    """The soft open-files limit of process ``pid``."""
    for line in Path(f"/proc/{pid}/limits").read_text().splitlines():
        if line.startswith("Max open files"):
            return int(line.split()[3])
    raise AssertionError(f"no open-files line in /proc/{pid}/limits")


def port_of(service: Service) -> int:
    port = urlsplit(service.url).port
    assert port is not None
    return port


@contextlib.contextmanager
def idle_sockets(
    port: int, count: int, *, within: float = 30, accepted_by: int | None = None
) -> Iterator[list[socket.socket]]:
    """``count`` connections to ``port`` from 127.0.0.1 that never send a byte, closed on exit. Connected means the
    handshake is done: the service may not have accepted them all yet.

    They are opened all at once (one after the other, each would wait out the SYN retries of a full accept queue).
    Past the listening socket's queue the kernel answers with SYN cookies, and a cookie connection whose last ACK
    finds the accept queue full is lost to the service for good, since nothing follows that ACK. With
    ``accepted_by`` (the service's pid) they are opened a batch at a time instead, each batch once the service has
    accepted the one before, until it stops accepting: then every connection it could take has reached it."""
    sockets: list[socket.socket] = []
    try:
        remaining = count
        while remaining > 0:
            batch = min(remaining, ACCEPT_BATCH) if accepted_by is not None else remaining
            held_before = sockets_of(accepted_by) if accepted_by is not None else 0
            sockets.extend(connected_sockets(port, batch, within=within))
            remaining -= batch
            if accepted_by is not None and not accepts_batch(accepted_by, held_before + batch):
                accepted_by = None  # it has stopped accepting: the rest at once
        yield sockets
    finally:
        for sock in sockets:
            sock.close()


ACCEPT_BATCH = 64  # half aiohttp's listen backlog of 128


def connected_sockets(port: int, count: int, *, within: float) -> list[socket.socket]:
    """``count`` non-blocking connections to ``port``, returned once their handshakes are done or ``within`` s
    have passed."""
    sockets = []
    for _ in range(count):
        sock = socket.socket()
        sockets.append(sock)
        sock.setblocking(False)
        sock.connect_ex(("127.0.0.1", port))
    waiting = select.poll()
    pending = {sock.fileno() for sock in sockets}
    for fd in pending:
        waiting.register(fd, select.POLLOUT)
    deadline = time.monotonic() + within
    while pending and time.monotonic() < deadline:
        for fd, _ in waiting.poll(200):
            waiting.unregister(fd)
            pending.discard(fd)
    return sockets


def accepts_batch(pid: int, sockets: int, *, within: float = 2) -> bool:
    """Whether process ``pid`` comes to hold ``sockets`` sockets within ``within`` seconds."""
    deadline = time.monotonic() + within
    while sockets_of(pid) < sockets:
        if time.monotonic() > deadline:
            return False
        time.sleep(0.01)
    return True


def sockets_of(pid: int) -> int:
    """How many sockets process ``pid`` has open."""
    held = 0
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        with contextlib.suppress(OSError):  # closed while we looked
            held += fd.readlink().name.startswith("socket:")
    return held


def settled_sockets_of(pid: int, *, after: float = 2, samples: int = 10) -> int:
    """The sockets process ``pid`` holds for good ``after`` seconds: the fewest of ``samples`` counts over a second
    (a connection it refuses lives until the loop's next turn, so one count may catch a few of those)."""
    time.sleep(after)
    counts = []
    for _ in range(samples):
        counts.append(sockets_of(pid))
        time.sleep(1 / samples)
    return min(counts)


def healthz_from_another_address(service: Service, *, times: int = 3) -> list[float]:
    """Seconds each ``/healthz`` took from 127.0.0.2 (a new connection each, as from another visitor); fails on
    anything but 200."""
    took = []
    transport = httpx.HTTPTransport(local_address=OTHER_VISITOR)
    with httpx.Client(transport=transport, timeout=5, headers={"Connection": "close"}) as visitor:
        for _ in range(times):
            started = time.monotonic()
            response = visitor.get(f"{service.url}/healthz")
            took.append(time.monotonic() - started)
            assert response.status_code == 200, response.text
    return took


FULL_TABLE_REPORTED = "accept() failed for want of file descriptors ([Errno 24] Too many open files"


def grown_by(service: Service, before: str) -> tuple[int, int]:
    """Lines and bytes the service's log gained since it read ``before``."""
    added = service.output()[len(before) :]
    return added.count("\n"), len(added.encode())


def test_the_service_raises_its_open_files_limit_to_the_hard_limit_and_says_so(tmp_path: Path) -> None:
    with running_service(serve_with_open_files(1024, 4096), tmp_path, env=clean_environment()) as service:
        assert open_files_limit(service.process.pid) == 4096
        printed = service.output()
        assert "webcall: open-files limit 1024 -> 4096; up to 1920 event streams (3 per call)" in printed, printed
        assert service.stop() == 0


def test_one_address_holding_3000_sockets_leaves_room_for_everyone_else(tmp_path: Path) -> None:
    with running_service(serve_with_open_files(1024, 4096), tmp_path, env=clean_environment()) as service:
        before = service.output()
        own = sockets_of(service.process.pid)  # listening, the embedded emulator's, the store's
        with idle_sockets(port_of(service), ATTACK_SOCKETS):
            held = settled_sockets_of(service.process.pid) - own
            took = healthz_from_another_address(service)
        assert held <= PER_ADDRESS, f"the service holds {held} idle connections of one address"
        assert max(took) < 1.0, took
        lines, size = grown_by(service, before)
        assert lines <= LOG_LINES_ALLOWED and size <= LOG_BYTES_ALLOWED, service.output()[len(before) :][:3000]
        assert f"connections refused beyond {PER_ADDRESS} per address" in service.output()
        assert service.stop() == 0


def test_behind_trusted_proxies_the_proxy_limits_connections(tmp_path: Path) -> None:
    """Every connection comes from the proxy then: a cap per address would cap the whole site."""
    env = clean_environment(WEBCALL_TRUSTED_PROXIES="1", WEBCALL_MAX_CONNECTIONS_PER_ADDRESS="5")
    with running_service(SERVE, tmp_path, env=env) as service:
        own = sockets_of(service.process.pid)
        with idle_sockets(port_of(service), 20):
            held = settled_sockets_of(service.process.pid, after=1) - own
        assert held >= 15, f"the service holds {held} of the proxy's 20 connections (the cap would hold 5)"
        assert service.stop() == 0


def test_ipv6_peers_count_per_64_and_mapped_ipv4_as_ipv4() -> None:
    assert address_key("2001:db8:1:2:aaaa::1") == address_key("2001:db8:1:2:ffff:ffff:ffff:ffff") == "2001:db8:1:2::/64"
    assert address_key("2001:db8:1:3::1") != address_key("2001:db8:1:2::1")
    assert address_key("::ffff:203.0.113.7") == address_key("203.0.113.7") == "203.0.113.7"
    assert address_key("fe80::1%eth0") == "fe80::/64"


def test_the_caps_come_from_the_environment_and_are_checked() -> None:
    config = WebCallConfig.from_env({"WEBCALL_MAX_EVENT_STREAMS": "7", "WEBCALL_MAX_CONNECTIONS_PER_ADDRESS": "9"})
    assert (config.max_event_streams, config.max_connections_per_address) == (7, 9)
    defaults = WebCallConfig.from_env({})
    assert (defaults.max_event_streams, defaults.max_connections_per_address) == (None, 64)
    for name in ("WEBCALL_MAX_EVENT_STREAMS", "WEBCALL_MAX_CONNECTIONS_PER_ADDRESS"):
        with pytest.raises(ConfigError, match=name):
            WebCallConfig.from_env({name: "0"})


def test_a_process_that_cannot_raise_its_limit_still_serves_others(tmp_path: Path) -> None:
    with running_service(serve_with_open_files(1024, 1024), tmp_path, env=clean_environment()) as service:
        assert "webcall: open-files limit 1024; up to 384 event streams" in service.output()
        before = service.output()
        with idle_sockets(port_of(service), ATTACK_SOCKETS):
            time.sleep(1)  # every connection has reached the service by now
            took = healthz_from_another_address(service)
        assert max(took) < 1.0, took
        lines, size = grown_by(service, before)
        assert lines <= LOG_LINES_ALLOWED and size <= LOG_BYTES_ALLOWED, service.output()[len(before) :][:3000]
        assert service.stop() == 0


def test_a_full_descriptor_table_is_logged_once_per_interval_and_passes(tmp_path: Path) -> None:
    """No per-address cap to save it: 3,000 sockets fill the table. accept() then fails thousands of times a second
    (asyncio reports each failure); the log gets one line per 10 s, and the service answers once they are gone."""
    env = clean_environment(WEBCALL_MAX_CONNECTIONS_PER_ADDRESS="100000")
    with running_service(serve_with_open_files(1024, 1024), tmp_path, env=env) as service:
        before = service.output()
        with idle_sockets(port_of(service), ATTACK_SOCKETS, within=2, accepted_by=service.process.pid):
            service.wait_for_output(FULL_TABLE_REPORTED, timeout=5)  # the table filled
            time.sleep(4)  # accept() keeps failing, thousands of times a second
        lines, size = grown_by(service, before)
        assert lines <= 3 and size <= 1000, service.output()[len(before) :][:3000]
        deadline = time.monotonic() + 10
        while True:  # the service notices the closed sockets and accepts again
            try:
                healthz_from_another_address(service, times=1)
                break
            except httpx.HTTPError:
                assert time.monotonic() < deadline, "the service never accepted connections again"
        assert service.stop() == 0
    printed = service.output()
    assert "Traceback" not in printed, printed[-3000:]  # retries scheduled during the flood find the socket closed
    assert printed.count("\n") - before.count("\n") <= 6, printed[len(before) :][:3000]


def start_call(service: Service) -> dict[str, str]:
    started = httpx.post(
        f"{service.url}/webcall/sessions",
        json={"agent": "sales", "offer": OFFER},
        headers={"Origin": service.origin},
        timeout=30,
    )
    assert started.status_code == 201, started.text
    session: dict[str, str] = started.json()
    return session


def assert_refused(response: httpx.Response, code: str) -> None:
    """``503`` with ``Retry-After`` in the plugin's error shape, instead of an event stream."""
    response.read()
    assert response.status_code == 503, response.text
    assert response.headers["Content-Type"].startswith("application/json"), response.headers
    assert int(response.headers["Retry-After"]) >= 1
    assert response.json()["code"] == code, response.text


def test_event_streams_are_capped_per_call_token_and_per_process(tmp_path: Path) -> None:
    env = clean_environment(WEBCALL_MAX_EVENT_STREAMS="5")
    with running_service(SERVE, tmp_path, env=env) as service:
        assert "up to 5 event streams (3 per call) as WEBCALL_MAX_EVENT_STREAMS says" in service.output()
        with httpx.Client(base_url=service.url, timeout=10) as http, contextlib.ExitStack() as streams:

            def events(session: dict[str, str]) -> httpx.Response:
                """One event stream of ``session``'s call, held until the test ends (or refused)."""
                request = http.build_request("GET", session["events_url"], params={"token": session["token"]})
                response = http.send(request, stream=True)
                streams.callback(response.close)
                return response

            first = start_call(service)
            held_by_first = [events(first) for _ in range(3)]
            assert [r.status_code for r in held_by_first] == [200, 200, 200]
            # A 4th on one token (a browser reconnecting before its old stream was noticed gone) ends the oldest.
            newest = events(first)
            assert newest.status_code == 200
            ended = b"".join(held_by_first[0].iter_bytes())  # returns only once the service ended that stream
            assert b"session.created" in ended
            held_by_first = [*held_by_first[1:], newest]

            second = start_call(service)
            held_by_second = [events(second) for _ in range(2)]
            assert [r.status_code for r in held_by_second] == [200, 200]
            assert_refused(events(second), "streams_full")  # the 6th in the process

            # A stream that ends gives its place back: the browser's, once the service notices at its next ping (15 s),
            # and all of a call's when the call ends (an emulated call without media ends within seconds).
            held_by_first[0].close()
            deadline = time.monotonic() + 25
            while (again := events(second)).status_code != 200:
                assert_refused(again, "streams_full")
                assert time.monotonic() < deadline, "the ended streams never gave their places back"
                time.sleep(1)
        assert service.stop() == 0
