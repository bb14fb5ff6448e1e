"""ICE servers for the browser and trickle ICE through the plugin.

The widget asks ``POST {prefix}/ice-servers`` before the click: the configured STUN/TURN servers, TURN credentials
minted now by the TURN REST convention (coturn's ``use-auth-secret``), and what the host's hook returns. DialNexa's
per-call ``ice_servers`` come back on the start's ``201`` as WHIP ``Link`` headers. Candidates gathered after the
offer are trickled with ``PATCH`` on the call's media resource and reach the emulator's aiortc peer connection.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import time
from typing import Any

import pytest

from webcall import ConfigError, WebCallConfig
from webcall.emulator.config import EmulatorConfig
from webcall.emulator.server import EmulatorServer
from webcall.ice import link_header_values, turn_rest_credentials, usable_servers

from .conftest import ORIGIN_HEADERS, MakeHost, mint, problem
from .hosting import ORIGIN
from .test_media_resource import authorized, started

TURN_SECRET = "a-coturn-static-auth-secret"
TURN_URLS = ("turn:turn.example.com:3478?transport=tcp", "turns:turn.example.com:443?transport=tcp")
STUN = {"urls": "stun:stun.example.com:3478"}
OFFER_ICE = "a=ice-ufrag:FD59\r\na=ice-pwd:8xCG10n5dvj3wHJIReDxRp\r\nm=audio 9 UDP/TLS/RTP/SAVPF 111\r\na=mid:0\r\n"
"""The ICE credentials of the standard test offer (tests/offers.py): a fragment naming them is a trickle."""
SDP_FRAGMENT = {"Content-Type": "application/trickle-ice-sdpfrag"}


def test_turn_rest_credentials_are_what_coturn_checks() -> None:
    username, credential = turn_rest_credentials(TURN_SECRET, ttl=600, now=1_800_000_000)
    expiry, _, opaque = username.partition(":")
    assert expiry == "1800000600" and len(opaque) >= 12
    expected = base64.b64encode(hmac.new(TURN_SECRET.encode(), username.encode(), hashlib.sha1).digest()).decode()
    assert credential == expected
    assert turn_rest_credentials(TURN_SECRET, ttl=600)[0] != turn_rest_credentials(TURN_SECRET, ttl=600)[0]


@pytest.mark.parametrize(
    ("environ", "says"),
    [
        ({"WEBCALL_TURN_URLS": "turn:t.example.com"}, "set both"),
        ({"WEBCALL_TURN_SECRET": TURN_SECRET}, "set both"),
        ({"WEBCALL_TURN_URLS": "https://t.example.com", "WEBCALL_TURN_SECRET": TURN_SECRET}, "must start with turn:"),
        ({"WEBCALL_TURN_URLS": "stun:t.example.com", "WEBCALL_TURN_SECRET": TURN_SECRET}, "must start with turn:"),
        ({"WEBCALL_TURN_URLS": "turn:t.example.com", "WEBCALL_TURN_SECRET": "short"}, "at least 16 bytes"),
        ({"WEBCALL_TURN_URLS": "turn:x.example", "WEBCALL_TURN_SECRET": TURN_SECRET, "WEBCALL_TURN_TTL": "5"}, "60"),
        ({"WEBCALL_ICE_SERVERS": "[{"}, "is not JSON"),
        ({"WEBCALL_ICE_SERVERS": '{"urls": "stun:s.example.com"}'}, "must be a list"),
        ({"WEBCALL_ICE_SERVERS": '[{"urls": "turn:t.example.com"}]'}, "needs a username"),
        ({"WEBCALL_ICE_SERVERS": '[{"url": "stun:s.example.com"}]'}, "unknown key"),
        ({"WEBCALL_ICE_SERVERS": '[{"urls": "stun:"}]'}, "must start with"),
    ],
)
def test_ice_configuration_mistakes_are_found_at_start_up(environ: dict[str, str], says: str) -> None:
    with pytest.raises(ConfigError, match=says):
        WebCallConfig.from_env(environ)


def test_turn_settings_from_the_environment() -> None:
    config = WebCallConfig.from_env(
        {
            "WEBCALL_TURN_URLS": ", ".join(TURN_URLS),
            "WEBCALL_TURN_SECRET": TURN_SECRET,
            "WEBCALL_TURN_TTL": "300",
            "WEBCALL_ICE_SERVERS": '[{"urls": ["stun:stun.example.com"]}]',
        }
    )
    assert config.turn is not None and config.turn.urls == TURN_URLS and config.turn.ttl == 300
    assert config.ice_servers == ({"urls": ["stun:stun.example.com"]},)
    assert TURN_SECRET not in repr(config) and TURN_SECRET not in repr(config.turn)


async def ice_servers(client: Any, headers: dict[str, str] | None = None) -> Any:
    return await client.post("/webcall/ice-servers", json={}, headers=ORIGIN_HEADERS if headers is None else headers)


async def test_the_browser_gets_fresh_turn_credentials_never_the_secret(make_host: MakeHost) -> None:
    client, _ = await make_host(ice_servers=(STUN,), turn_urls=TURN_URLS, turn_secret=TURN_SECRET, turn_ttl=300)
    response = await ice_servers(client)
    assert response.status == 200
    assert response.headers["Cache-Control"] == "no-store"
    text = await response.text()
    assert TURN_SECRET not in text
    body = await response.json()
    assert body["ttl"] == 300
    stun, turn = body["ice_servers"]
    assert stun == {"urls": ["stun:stun.example.com:3478"]}
    assert turn["urls"] == list(TURN_URLS)
    expiry = int(turn["username"].split(":")[0])
    assert time.time() + 290 < expiry <= time.time() + 301
    expected = hmac.new(TURN_SECRET.encode(), turn["username"].encode(), hashlib.sha1).digest()
    assert base64.b64decode(turn["credential"]) == expected
    again = (await (await ice_servers(client)).json())["ice_servers"][1]
    assert again["username"] != turn["username"], "credentials are minted per request"


async def test_without_ice_configuration_the_list_is_empty(make_host: MakeHost) -> None:
    client, _ = await make_host()
    assert await (await ice_servers(client)).json() == {"ice_servers": [], "ttl": None}


async def test_ice_servers_are_asked_for_like_a_start(make_host: MakeHost) -> None:
    client, _ = await make_host(turn_urls=TURN_URLS, turn_secret=TURN_SECRET, rate_limit_window=60.0)
    await problem(await ice_servers(client, {}), 403, "origin_not_allowed")
    await problem(await ice_servers(client, {"Origin": "https://attacker.example"}), 403, "origin_not_allowed")
    statuses = [(await ice_servers(client)).status for _ in range(31)]
    assert statuses[:30] == [200] * 30 and statuses[30] == 429


async def test_a_host_hook_adds_a_hosted_providers_servers(make_host: MakeHost) -> None:
    seen: list[str] = []

    async def hosted_turn(request: Any) -> list[dict[str, Any]]:
        seen.append(request.headers["Origin"])
        return [{"urls": ["turns:global.turn.example.net:443?transport=tcp"], "username": "u1", "credential": "c1"}]

    client, _ = await make_host(ice_servers_hook=hosted_turn)
    body = await (await ice_servers(client)).json()
    assert body["ice_servers"] == [
        {"urls": ["turns:global.turn.example.net:443?transport=tcp"], "username": "u1", "credential": "c1"}
    ]
    assert seen == [ORIGIN]


async def test_a_hook_returning_garbage_is_the_hosts_500_not_the_browsers(
    make_host: MakeHost, caplog: pytest.LogCaptureFixture
) -> None:
    client, _ = await make_host(ice_servers_hook=lambda request: [{"urls": "http://not-turn"}])
    await problem(await ice_servers(client), 500, "hook_failed")
    assert "ice_servers_hook" in caplog.text


def test_link_headers_follow_rfc_9725() -> None:
    servers = [
        {"urls": ["stun:stun.dialnexa.example:3478"]},
        {"urls": "turn:turn.dialnexa.example?transport=udp", "username": "user", "credential": "pass"},
        {"urls": "http://not-ice"},
        "not a server",
    ]
    assert link_header_values(usable_servers(servers)) == [
        '<stun:stun.dialnexa.example:3478>; rel="ice-server"',
        '<turn:turn.dialnexa.example?transport=udp>; rel="ice-server"; username="user"; credential="pass"; '
        'credential-type="password"',
    ]


async def test_dialnexas_per_call_ice_servers_reach_the_browser_as_link_headers(make_host: MakeHost) -> None:
    per_call = ({"urls": ["turn:turn.dialnexa.example:3478"], "username": "call-user", "credential": "call-pass"},)
    config = EmulatorConfig(api_keys=frozenset({"emu_test:IceServersEmulatorKey"}), ice_servers=per_call)
    async with EmulatorServer(config) as dialnexa:
        client, _ = await make_host(api_key=dialnexa.api_key, base_url=dialnexa.base_url)
        response = await mint(client)
        assert response.status == 201, await response.text()
        assert response.headers.getall("Link") == [
            '<turn:turn.dialnexa.example:3478>; rel="ice-server"; username="call-user"; credential="call-pass"; '
            'credential-type="password"'
        ]
        body = await response.json()
        assert body["ice_servers"] == [{**per_call[0], "urls": ["turn:turn.dialnexa.example:3478"]}]
        cross_origin = await client.post(
            "/webcall/sessions", json={"agent": "sales"}, headers={"Origin": "https://other.example"}
        )
        assert cross_origin.status == 403


async def test_trickled_candidates_reach_the_media_server(make_host: MakeHost, emulator: EmulatorServer) -> None:
    client, _ = await make_host()
    call = await started(client)
    url = call["media_url"]
    trickle = authorized(call, **SDP_FRAGMENT, **{"If-Match": call["etag"]})
    # Firefox hides a relay's base behind an mDNS name (raddr), which aiortc cannot write back out.
    relay = "a=candidate:2 1 udp 41885439 127.0.0.1 40001 typ relay raddr 69bc1755-4699.local rport 9\r\n"
    first = await client.patch(url, data=OFFER_ICE + relay, headers=trickle)
    assert first.status == 204, await first.text()
    host = "a=candidate:1 1 udp 2122194687 127.0.0.1 40000 typ host\r\n"
    last = await client.patch(url, data=OFFER_ICE + host + "a=end-of-candidates\r\n", headers=trickle)
    assert last.status == 204, await last.text()
    media = await emulator.control.media(call["call_id"])
    assert media["trickled_candidates"] == ["relay", "host"]


async def test_new_ice_credentials_are_a_restart_the_emulator_refuses(
    make_host: MakeHost, emulator: EmulatorServer
) -> None:
    client, _ = await make_host()
    call = await started(client)
    restart = OFFER_ICE.replace("FD59", "NEW1")
    response = await client.patch(
        call["media_url"], data=restart, headers=authorized(call, **SDP_FRAGMENT, **{"If-Match": call["etag"]})
    )
    await problem(response, 405, "media_update_refused")
    assert (await emulator.control.media(call["call_id"]))["trickled_candidates"] == []
