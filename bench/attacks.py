"""Replay the open-internet attacks against ``python -m webcall serve`` from a checkout and print what each achieved.

    python -m bench.attacks                      # this checkout
    python -m bench.attacks --checkout ../old    # another checkout of the project (for a before/after table)

Every service runs with default settings on its embedded emulator, whose control routes (on a port chosen here)
count what DialNexa was asked for. Visitors come from loopback addresses of their own (127.0.0.0/8), so the
per-address limits see them as different visitors. Nothing leaves the machine.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import resource
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from tests.net import RecordingServer, free_port
from tests.offers import OFFER, TRANSPORT

ROOT = Path(__file__).resolve().parents[1]
TICKET_SECRET = "attack-ticket-secret-0123456789-abcdefghij"
FRAUD_NUMBERS = ["+881631234567", "+88216123456", "+979123456789", "+870773123456"]
"""Iridium, an international-network range, international premium rate, Inmarsat: numbers an IRSF attacker owns."""
SOFT_FILE_LIMIT = 1024


@dataclass
class Service:
    url: str
    emulator: str
    log: Path
    process: subprocess.Popen[bytes]

    @property
    def origin(self) -> str:
        return self.url

    def emulator_count(self, route: str, status: int | None = None) -> int:
        requests = httpx.get(f"{self.emulator}/_control/requests").json()
        return sum(
            1
            for r in requests
            if f"{r['method']} {r['route']}" == route and (status is None or r.get("status") == status)
        )


@contextlib.contextmanager
def service(checkout: Path, *, soft_file_limit: int | None = None, **settings: str) -> Iterator[Service]:
    """``python -m webcall serve`` from ``checkout`` with ``settings`` on top of a clean environment."""
    port, emulator_port = free_port(), free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("DIALNEXA_", "WEBCALL_", "PYTHONPATH"))}
    env.update(PYTHONPATH=str(checkout), WEBCALL_EMULATOR_PORT=str(emulator_port), **settings)

    def limit_open_files() -> None:
        if soft_file_limit is not None:
            _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
            resource.setrlimit(resource.RLIMIT_NOFILE, (soft_file_limit, hard))

    log = Path(tempfile.mkstemp(prefix="attack-", suffix=".log")[1])
    with open(log, "wb") as out:
        process = subprocess.Popen(
            [sys.executable, "-m", "webcall", "serve", "--port", str(port)],
            cwd=checkout,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            preexec_fn=limit_open_files,
        )
    running = Service(f"http://127.0.0.1:{port}", f"http://127.0.0.1:{emulator_port}", log, process)
    try:
        deadline = time.monotonic() + 60
        while True:
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(f"{running.url}/healthz", timeout=1).status_code == 200:
                    break
            if process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"the service did not start:\n{log.read_text()}")
            time.sleep(0.1)
        yield running
    finally:
        process.terminate()
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        log.unlink()


def client_from(address: str, timeout: float = 30) -> httpx.Client:
    return httpx.Client(transport=httpx.HTTPTransport(local_address=address), timeout=timeout)


def start(http: httpx.Client, target: Service, **body: Any) -> httpx.Response:
    return http.post(
        f"{target.url}/webcall/sessions",
        json={"agent": "sales", "offer": OFFER, **body},
        headers={"Origin": target.origin},
    )


def ring_back(http: httpx.Client, target: Service, number: str) -> httpx.Response:
    return http.post(
        f"{target.url}/webcall/callbacks",
        json={"agent": "sales", "phone_number": number, "consent": True},
        headers={"Origin": target.origin},
    )


# -- the attacks: each returns rows of (attack, what was measured, the outcome) -----------------------------------
Rows = list[tuple[str, str, str]]


def toll_fraud(checkout: Path) -> Rows:
    """One address asks for call-backs to numbers the attacker owns; then strangers try to lock a customer out."""
    with service(checkout, WEBCALL_CALLBACK_COUNTRIES="US,CA,GB") as target:
        with client_from("127.0.0.2") as attacker:
            answers = [ring_back(attacker, target, number).status_code for number in FRAUD_NUMBERS * 3]
        time.sleep(0.5)
        placed = target.emulator_count("POST /v1/calls")
        victim = "+14155550123"
        for stranger in range(3):
            with client_from(f"127.0.0.{10 + stranger}") as http:
                ring_back(http, target, victim)
        with client_from("127.0.0.50") as owner:
            owner_status = ring_back(owner, target, victim).status_code
    accepted = sum(1 for status in answers if status == 202)
    return [
        ("toll fraud", f"phone calls to +881/+882/+979/+870 from {len(answers)} requests", f"{placed}"),
        ("toll fraud", "call-back requests accepted", f"{accepted} of {len(answers)}"),
        ("number lock-out", "the owner's request after 3 strangers asked", f"{owner_status}"),
    ]


def ended_on_stream(target: Service, session: dict[str, Any], timeout: float = 15) -> bool:
    url = f"{target.url}{session['events_url']}"
    deadline = time.monotonic() + timeout
    events = httpx.stream("GET", url, params={"token": session["token"]}, timeout=timeout)
    with contextlib.suppress(httpx.HTTPError), events as stream:
        for line in stream.iter_lines():  # the stream's pings end each wait within 15 s
            if line.startswith("data:") and json.loads(line[5:])["type"] == "call.ended":
                return True
            if time.monotonic() > deadline:
                break
    return False


def forged_host(checkout: Path) -> Rows:
    with RecordingServer() as listener, service(checkout) as target, httpx.Client(timeout=30) as http:
        forged = f"127.0.0.1:{listener.port}/any/path?x="
        first = http.post(
            f"{target.url}/webcall/sessions",
            json={"agent": "sales", "offer": OFFER},
            headers={"Host": forged, "Origin": f"http://{forged}"},
        )
        snippet = http.get(f"{target.url}/webcall/snippet", headers={"Host": forged}).text
        sessions = [first.json()] + [start(http, target).json() for _ in range(3)]
        ended = 0
        for session in sessions:
            http.post(f"{target.url}{session['end_url']}", headers={"Authorization": f"Bearer {session['token']}"})
            ended += ended_on_stream(target, session)
    return [
        ("forged Host", "webhook deliveries to the forged host", f"{len(listener.paths)}"),
        ("forged Host", "visitors' streams that got call.ended", f"{ended} of {len(sessions)}"),
        ("forged Host", "forged origin in the /snippet page", "yes" if str(listener.port) in snippet else "no"),
    ]


async def still_open(reader: asyncio.StreamReader) -> bool:
    """Whether the service still holds this event stream open: its body has not ended (no last chunk of a chunked
    body, no end of the connection) by the time it pauses."""
    received = b""
    try:
        while chunk := await asyncio.wait_for(reader.read(65536), 0.05):
            received += chunk
    except TimeoutError:
        return not received.endswith(b"\r\n0\r\n\r\n")
    except OSError:
        return False
    return False


async def open_streams(target: Service, session: dict[str, Any], wanted: int) -> tuple[int, list[Any]]:
    """Open ``wanted`` event streams with one call token, one after another; how many the service holds at the end."""
    path = f"{session['events_url']}?token={session['token']}"
    host, port = target.url.rsplit("/", 1)[1].split(":")
    streams = []
    for _ in range(wanted):
        try:
            reader, writer = await asyncio.wait_for(asyncio.open_connection(host, int(port)), 2)
            writer.write(f"GET {path} HTTP/1.1\r\nHost: {host}\r\n\r\n".encode())
            status_line = await asyncio.wait_for(reader.readline(), 2)
        except (OSError, TimeoutError):
            continue
        if b" 200 " in status_line:
            streams.append((reader, writer))
    await asyncio.sleep(0.5)  # before the call (which has no media) ends and ends its streams with it
    held = await asyncio.gather(*(still_open(reader) for reader, _ in streams))
    return sum(held), [writer for _, writer in streams]


async def idle_sockets(target: Service, count: int) -> list[socket.socket]:
    """``count`` connections from 127.0.0.1 that never send a byte (those refused or reset are not retried)."""
    host, port = target.url.rsplit("/", 1)[1].split(":")
    held = []
    for _ in range(count):
        sock = socket.socket()
        sock.setblocking(False)
        with contextlib.suppress(BlockingIOError, OSError):
            sock.connect((host, int(port)))
        held.append(sock)
    await asyncio.sleep(1)
    return held


def health_from_another_address(target: Service) -> str:
    started = time.perf_counter()
    try:
        with client_from("127.0.0.99", timeout=5) as other:
            status = other.get(f"{target.url}/healthz").status_code
    except httpx.HTTPError as err:
        return f"{type(err).__name__} after {time.perf_counter() - started:.1f} s"
    return f"{status} in {1000 * (time.perf_counter() - started):.0f} ms"


def floods(checkout: Path) -> Rows:
    """One call token holding event streams, then one address holding idle sockets, under a soft limit of 1,024."""
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))  # the attacker's own limit is no constraint
    rows: Rows = []
    with service(checkout, soft_file_limit=SOFT_FILE_LIMIT) as target, httpx.Client(timeout=30) as http:
        session = start(http, target).json()

        async def streams() -> tuple[int, str]:
            accepted, writers = await open_streams(target, session, 1100)
            health = await asyncio.to_thread(health_from_another_address, target)
            for writer in writers:
                writer.close()
            return accepted, health

        accepted, health = asyncio.run(streams())
        rows.append(("event streams", "streams one call token holds at once (1,100 opened)", f"{accepted}"))
        rows.append(("event streams", "/healthz from another address meanwhile", health))
        time.sleep(2)
        log_before = target.log.stat().st_size

        async def sockets() -> str:
            held = await idle_sockets(target, 3000)
            await asyncio.sleep(5)
            health = await asyncio.to_thread(health_from_another_address, target)
            for sock in held:
                sock.close()
            return health

        rows.append(("idle sockets", "/healthz from another address, 3,000 held", asyncio.run(sockets())))
        grown = target.log.stat().st_size - log_before
        rows.append(("idle sockets", "service log written in the 6 s", f"{grown / 1024:.1f} KiB"))
    return rows


def offer_with_candidates(ports: list[int]) -> str:
    candidates = "".join(
        f"a=candidate:{n} 1 udp {2122260223 - n} 127.0.0.1 {port} typ host\r\n" for n, port in enumerate(ports)
    )
    return OFFER.replace(TRANSPORT, candidates + TRANSPORT, 1)


def billable_garbage(checkout: Path) -> Rows:
    garbage = ["v=0", "v=0\r\nm=video 9 RTP/AVP 0\r\n", "v=0\r\no=- 1 1 IN IP4 0.0.0.0\r\ns=-\r\nt=0 0\r\n"]
    with service(checkout, WEBCALL_RATE_LIMIT="100/60") as target, httpx.Client(timeout=30) as http:
        statuses = [start(http, target, offer=offer).status_code for offer in garbage * 4]
        created = target.emulator_count("POST /v1/web-calls")
        targets = [socket.socket(socket.AF_INET, socket.SOCK_DGRAM) for _ in range(250)]
        for sock in targets:
            sock.bind(("127.0.0.1", 0))
            sock.setblocking(False)
        amplified = start(http, target, offer=offer_with_candidates([s.getsockname()[1] for s in targets]))
        time.sleep(6)
        packets, ports = 0, 0
        for sock in targets:
            received = 0
            with contextlib.suppress(BlockingIOError):
                while True:
                    sock.recv(2048)
                    received += 1
            packets += received
            ports += received > 0
            sock.close()
    return [
        ("billable garbage", f"web calls created for {len(statuses)} garbage offers", f"{created}"),
        ("billable garbage", "answers to the garbage offers", " ".join(sorted({str(s) for s in statuses}))),
        (
            "250 candidates",
            f"start answered {amplified.status_code}; STUN packets sent, to ports",
            f"{packets}, {ports}",
        ),
    ]


def lockout(checkout: Path) -> Rows:
    """70 addresses send requests refused before anything billable; then a real visitor tries."""
    bad: list[dict[str, Any]] = [
        {"content": b"{not json", "headers": {"Content-Type": "application/json"}},
        {"json": {"agent": "sales", "offer": "v=0 garbage"}},
        {"json": {"agent": "nobody", "offer": OFFER}},
        {"json": {"agent": "sales", "offer": OFFER, "ticket": "forged.ticket.value"}},
    ]
    with service(checkout) as target:

        def flood(host: int) -> int:
            refused = 0
            with client_from(f"127.0.1.{host}") as http:
                for attempt in range(10):
                    request = bad[attempt % len(bad)]
                    headers = {"Origin": target.origin, **request.get("headers", {})}
                    body = {k: v for k, v in request.items() if k != "headers"}
                    refused += http.post(f"{target.url}/webcall/sessions", headers=headers, **body).status_code >= 400
            return refused

        with ThreadPoolExecutor(max_workers=8) as pool:
            sent = sum(pool.map(flood, range(1, 71)))
        with client_from("127.0.2.1") as visitor:
            status = start(visitor, target).status_code
    proxied = service(checkout, WEBCALL_TRUSTED_PROXIES="1", WEBCALL_RATE_LIMIT="10/60")
    with proxied as target, httpx.Client(timeout=30) as http:
        ipv6 = [
            http.post(
                f"{target.url}/webcall/sessions",
                json={"agent": "sales", "offer": OFFER},
                headers={"Origin": target.origin, "X-Forwarded-For": f"2001:db8:7:7::{n:x}"},
            ).status_code
            for n in range(1, 31)
        ]
    return [
        ("global lock-out", f"a visitor's start after {sent} garbage requests from 70 addresses", f"{status}"),
        ("IPv6 /64", "starts from 30 addresses of one /64 past the limit of 10", f"{30 - ipv6.count(429)}"),
    ]


def ticket_retry(checkout: Path) -> Rows:
    from webcall.tickets import sign_ticket

    settings = {"WEBCALL_TICKET_SECRETS": TICKET_SECRET, "WEBCALL_RATE_LIMIT": "100/60"}
    with service(checkout, soft_file_limit=None, **settings) as target, httpx.Client(timeout=30) as http:
        ticket = sign_ticket(TICKET_SECRET, subject="visitor", agent="sales")
        fault = {"route": "POST /v1/web-calls", "kind": "status", "status": 500, "count": 20}
        httpx.post(f"{target.emulator}/_control/faults", json=fault).raise_for_status()
        failed = start(http, target, ticket=ticket).status_code
        httpx.delete(f"{target.emulator}/_control/faults")
        again = start(http, target, ticket=ticket).status_code
        other = sign_ticket(TICKET_SECRET, subject="visitor-2", agent="sales")

        def attempt(_: int) -> int:
            with httpx.Client(timeout=30) as own:
                return start(own, target, ticket=other).status_code

        with ThreadPoolExecutor(max_workers=8) as pool:
            parallel = list(pool.map(attempt, range(8)))
    return [
        ("failed start", f"'Try again' with the ticket after a {failed}", f"{again}"),
        ("failed start", "calls from 8 concurrent starts with one ticket", f"{parallel.count(201)}"),
    ]


ATTACKS: dict[str, Callable[[Path], Rows]] = {
    "toll-fraud": toll_fraud,
    "forged-host": forged_host,
    "floods": floods,
    "garbage": billable_garbage,
    "lockout": lockout,
    "tickets": ticket_retry,
}


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.attacks", description=__doc__.split("\n")[0])
    parser.add_argument("--checkout", type=Path, default=ROOT, help="the project checkout to attack (default: this)")
    parser.add_argument("--only", nargs="*", choices=list(ATTACKS), help="run only these attacks")
    args = parser.parse_args()
    checkout = args.checkout.resolve()
    print(f"attacks on {checkout}", flush=True)
    for name in args.only or list(ATTACKS):
        try:
            rows = ATTACKS[name](checkout)
        except Exception as err:  # one attack's failure to run is a row, not the end of the table
            rows = [(name, "could not run", f"{type(err).__name__}: {err}"[:120])]
        for attack, measure, outcome in rows:
            print(f"  {attack:<17} {measure:<62} {outcome}", flush=True)


if __name__ == "__main__":
    main()
