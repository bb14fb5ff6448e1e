"""``python -m webcall doctor`` checks each TURN URL by allocating a relay on a real coturn (on loopback), with
credentials minted from the configured secret, and names the fix when it cannot: a wrong secret, a closed port, a
TLS certificate for another name or from an unknown CA, a server that never answers.

The harness CA is trusted the way an operator with a private CA would do it: ``SSL_CERT_FILE`` naming it.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import socket
import tempfile
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest

from webcall.dialnexa import DialNexaClient
from webcall.doctor import FAILED, OK, Check, Doctor, diagnose
from webcall.emulator.server import EmulatorServer
from webcall.turn_probe import REASON_CREDENTIALS, TurnProbeError, allocate

from .net import free_port
from .test_doctor import config, register
from .turn_server import TurnServer


@pytest.fixture
def coturn(tmp_path: Path) -> Iterator[TurnServer]:
    """coturn on loopback, its certificate naming 127.0.0.1 and localhost."""
    with TurnServer(tmp_path / "coturn", "127.0.0.1", tls_names=("127.0.0.1", "localhost")) as server:
        yield server


@pytest.fixture
def trust(coturn: TurnServer, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Trust the harness CA (only it) for TLS, as OpenSSL reads ``SSL_CERT_FILE``."""
    monkeypatch.setenv("SSL_CERT_FILE", str(coturn.ca))
    return coturn.ca


@pytest.fixture
async def client(emulator: EmulatorServer) -> AsyncIterator[DialNexaClient]:
    async with DialNexaClient(api_key=emulator.api_key, base_url=emulator.base_url) as dialnexa:
        yield dialnexa


async def turn_checks(
    emulator: EmulatorServer, client: DialNexaClient, urls: list[str], secret: str, **overrides: Any
) -> dict[str, Check]:
    doctor = Doctor(config(emulator, turn_urls=tuple(urls), turn_secret=secret, **overrides), client)
    await doctor.check_turn(within=2.0)
    return {check.name.removeprefix("TURN "): check for check in doctor.checks}


async def test_a_relay_is_allocated_over_udp_tcp_and_tls(
    emulator: EmulatorServer, client: DialNexaClient, coturn: TurnServer, trust: Path
) -> None:
    urls = [coturn.turn_url("udp"), coturn.turn_url("tcp"), coturn.turns_url(), coturn.turns_url("localhost")]
    checks = await turn_checks(emulator, client, urls, coturn.secret)
    assert list(checks) == urls
    for url, carried in zip(urls, ("udp", "tcp", "tls", "tls"), strict=True):
        check = checks[url]
        assert check.outcome == OK, check.line()
        assert re.fullmatch(rf"relay 127\.0\.0\.1:\d+ allocated over {carried} in \d+ ms", check.detail), check.detail
    # coturn saw each allocation, and each was released at once (a Refresh with lifetime 0).
    log = coturn.log_text()
    assert log.count("incoming packet ALLOCATE processed, success") == 4, log[-2000:]
    assert log.count("refreshed, realm=<webcall.test>") == 4 and "lifetime=0" in log, log[-2000:]


async def test_a_wrong_secret_is_named_as_the_secret(
    emulator: EmulatorServer, client: DialNexaClient, coturn: TurnServer, trust: Path
) -> None:
    urls = [coturn.turn_url("udp"), coturn.turn_url("tcp"), coturn.turns_url()]
    checks = await turn_checks(emulator, client, urls, "not-the-static-auth-secret-of-coturn")
    for url in urls:
        check = checks[url]
        assert check.outcome == FAILED, check.line()
        assert check.detail == "the server refused the credentials (401 Unauthorized)"
        assert check.fix.startswith("the secret differs from coturn's static-auth-secret"), check.fix
    assert "error 401" in coturn.log_text()


async def test_a_closed_port(emulator: EmulatorServer, client: DialNexaClient, coturn: TurnServer) -> None:
    tcp, udp = f"turn:127.0.0.1:{free_port()}?transport=tcp", f"turn:127.0.0.1:{free_port()}?transport=udp"
    checks = await turn_checks(emulator, client, [tcp, udp], coturn.secret)
    port = tcp.split(":")[2].split("?")[0]
    assert checks[tcp].outcome == FAILED
    assert checks[tcp].detail == f"127.0.0.1:{port} refused the connection (TCP)"
    assert checks[tcp].fix.startswith(f"port {port}/tcp is closed on 127.0.0.1"), checks[tcp].fix
    assert checks[udp].outcome == FAILED and "(UDP)" in checks[udp].detail
    assert "/udp is closed on 127.0.0.1" in checks[udp].fix


async def test_a_certificate_for_another_name(
    emulator: EmulatorServer, client: DialNexaClient, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    with TurnServer(tmp_path / "other", "127.0.0.1", tls_names=("turn.other.example",)) as other:
        monkeypatch.setenv("SSL_CERT_FILE", str(other.ca))
        by_address, by_name = other.turns_url(), other.turns_url("localhost")
        checks = await turn_checks(emulator, client, [by_address, by_name], other.secret)
    for url, host in ((by_address, "127.0.0.1"), (by_name, "localhost")):
        check = checks[url]
        assert check.outcome == FAILED, check.line()
        assert check.detail.startswith(f"the TLS certificate does not name {host} ("), check.detail
        assert check.fix.startswith(f"give coturn (cert=) a certificate that names {host}"), check.fix


async def test_a_certificate_from_an_unknown_ca(
    emulator: EmulatorServer,
    client: DialNexaClient,
    coturn: TurnServer,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Another CA trusted instead of the harness CA: coturn's certificate chains to nothing trusted.
    with TurnServer(tmp_path / "stranger", "127.0.0.1") as stranger:
        monkeypatch.setenv("SSL_CERT_FILE", str(stranger.ca))
        checks = await turn_checks(emulator, client, [coturn.turns_url()], coturn.secret)
    check = checks[coturn.turns_url()]
    assert check.outcome == FAILED, check.line()
    assert check.detail.startswith("the TLS certificate is not from a trusted CA ("), check.detail
    assert "public CA" in check.fix and "SSL_CERT_FILE" in check.fix


async def test_a_server_that_never_answers_times_out(
    emulator: EmulatorServer, client: DialNexaClient, coturn: TurnServer
) -> None:
    """A TCP port that accepts and stays silent, a UDP port that swallows every datagram: as a firewall that drops."""
    accepted: list[asyncio.StreamWriter] = []

    def accept(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        accepted.append(writer)

    silent = await asyncio.start_server(accept, "127.0.0.1", 0)
    sink = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        sink.bind(("127.0.0.1", 0))
        tcp = f"turn:127.0.0.1:{silent.sockets[0].getsockname()[1]}?transport=tcp"
        udp = f"turn:127.0.0.1:{sink.getsockname()[1]}"
        checks = await turn_checks(emulator, client, [tcp, udp], coturn.secret)
    finally:
        sink.close()
        for writer in accepted:
            writer.close()
        silent.close()
        await silent.wait_closed()
    for url, carried in ((tcp, "tcp"), (udp, "udp")):
        check = checks[url]
        assert check.outcome == FAILED, check.line()
        assert check.detail.endswith(f"did not answer over {carried} within 2 s"), check.detail
        assert "open port" in check.fix and "firewall" in check.fix, check.fix


async def test_static_ice_servers_with_a_wrong_credential(
    emulator: EmulatorServer, client: DialNexaClient, coturn: TurnServer
) -> None:
    servers = ({"urls": [coturn.turn_url("tcp")], "username": "someone", "credential": "wrong"},)
    doctor = Doctor(config(emulator, ice_servers=servers), client)
    await doctor.check_turn(within=2.0)
    [check] = doctor.checks
    assert check.name == f"TURN {coturn.turn_url('tcp')}" and check.outcome == FAILED
    assert check.fix == "correct this server's username and credential in WEBCALL_ICE_SERVERS"


async def test_no_turn_configured_adds_no_line(emulator: EmulatorServer, client: DialNexaClient) -> None:
    doctor = Doctor(config(emulator), client)
    await doctor.check_turn()
    assert doctor.checks == []


async def test_the_report_has_a_line_per_turn_url(emulator: EmulatorServer, coturn: TurnServer, trust: Path) -> None:
    await register(emulator)
    urls = (coturn.turn_url("tcp"), coturn.turns_url())
    checks = await diagnose(config(emulator, turn_urls=urls, turn_secret=coturn.secret))
    names = [check.name for check in checks]
    assert names.index("store") < names.index(f"TURN {urls[0]}") < names.index(f"TURN {urls[1]}")
    assert all(check.outcome == OK for check in checks), "\n".join(check.line() for check in checks)


async def test_the_probe_itself_refuses_a_wrong_password(coturn: TurnServer) -> None:
    with pytest.raises(TurnProbeError) as refused:
        await allocate(coturn.turn_url("tcp"), "1:someone", "wrong", within=2.0)
    assert refused.value.reason == REASON_CREDENTIALS


# -- the documented reports (docs/doctor.md, written by tests/test_doctor.py) ---------------------------------------
TURN_NOTE = """\
## How the TURN lines are checked

For each URL of `WEBCALL_TURN_URLS` (with credentials minted from `WEBCALL_TURN_SECRET`, as for a visitor) and each
`turn:`/`turns:` URL of `WEBCALL_ICE_SERVERS` (with its username and credential), the doctor allocates a relay as a
browser does (a TURN Allocate with long-term credentials, over UDP, TCP or TLS as the URL says), then releases it.
The URLs are checked together, 5 s each; nothing beyond the standard library is needed. A `401` after the
credentials were sent means the secret differs from coturn's `static-auth-secret` (or a clock is far off: the
credentials carry their expiry). A `turns:` certificate is checked as browsers check it: from a trusted CA, naming
the URL's host. The system's CAs are trusted; for a certificate from a private CA, run the doctor with
`SSL_CERT_FILE=/path/to/ca.pem` (visitors' browsers refuse it all the same unless their machines trust that CA).
The doctor runs where the site runs: a ✔ says coturn works and is reachable from there, not that every visitor's
network lets it through (the browser tests check that, in a network namespace that drops UDP).
"""


@contextlib.contextmanager
def trusting(ca: Path) -> Iterator[None]:
    """``SSL_CERT_FILE`` naming ``ca`` for the duration."""
    before = os.environ.get("SSL_CERT_FILE")
    os.environ["SSL_CERT_FILE"] = str(ca)
    try:
        yield
    finally:
        if before is None:
            del os.environ["SSL_CERT_FILE"]
        else:
            os.environ["SSL_CERT_FILE"] = before


async def turn_reports(emulator: EmulatorServer) -> list[tuple[str, list[Check]]]:
    """The TURN lines of the doctor's report, against a real coturn on loopback: every URL working, then each way
    it fails. Ports, relayed addresses and times are made stable (3478 plain, 5349 TLS, 3479 a closed port)."""
    sections: list[tuple[str, list[Check]]] = []
    with (
        tempfile.TemporaryDirectory(prefix="webcall-coturn-") as workdir,
        TurnServer(Path(workdir), "127.0.0.1", tls_names=("127.0.0.1",)) as turn,
        trusting(turn.ca),
    ):
        closed = free_port()
        ports = {turn.port: 3478, turn.tls_port: 5349, closed: 3479}
        async with DialNexaClient(api_key=emulator.api_key, base_url=emulator.base_url) as client:
            working = [turn.turn_url("udp"), turn.turn_url("tcp"), turn.turns_url()]
            doctor = Doctor(config(emulator, turn_urls=tuple(working), turn_secret=turn.secret), client)
            await doctor.check_turn(within=2.0)
            sections.append(("TURN servers that work: the TURN lines", doctor.checks))
            secret = "not-coturns-static-auth-secret"
            broken = [turn.turn_url("tcp"), f"turn:127.0.0.1:{closed}?transport=tcp", turn.turns_url("localhost")]
            doctor = Doctor(config(emulator, turn_urls=tuple(broken), turn_secret=secret), client)
            await doctor.check_turn(within=2.0)
            sections.append(
                (
                    "A wrong TURN secret, a closed port, a certificate without the URL's name: the TURN lines",
                    doctor.checks,
                )
            )

    def stable(text: str) -> str:
        text = re.sub(r"127\.0\.0\.1:(\d+)", lambda m: f"127.0.0.1:{ports.get(int(m[1]), 49152)}", text)
        text = re.sub(r"localhost:(\d+)", lambda m: f"localhost:{ports.get(int(m[1]), 49152)}", text)
        text = re.sub(r"port (\d+)/", lambda m: f"port {ports.get(int(m[1]), 49152)}/", text)
        return re.sub(r" in \d+ ms$", " in 3 ms", text)

    return [
        (title, [Check(stable(c.name), c.outcome, stable(c.detail), stable(c.fix)) for c in checks])
        for title, checks in sections
    ]
