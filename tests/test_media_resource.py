"""One round trip: the browser's offer goes with the start request, and the call's media resource lives on the plugin.

The plugin speaks WHIP (RFC 9725) to DialNexa with the call's access token, which never leaves the server; the browser
drives ICE restarts and hang-ups through ``PATCH``/``DELETE {prefix}/sessions/{call_id}/media`` with its call token.
"""

from __future__ import annotations

from typing import Any

import pytest

from webcall import ConfigError
from webcall.emulator.server import EmulatorServer
from webcall.emulator.testing import EmulatorControl
from webcall.sdp import MAX_CANDIDATES, InvalidOffer, sanitize_fragment
from webcall.views import MEDIA_UPDATES_PER_CALL

from .conftest import ORIGIN_HEADERS, MakeHost, mint, problem, runtime

FRAGMENT = "a=ice-ufrag:NEW1\r\na=ice-pwd:newpasswordnewpassword1\r\nm=audio 9 UDP/TLS/RTP/SAVPF 0\r\na=mid:0\r\n"


async def started(client: Any) -> dict[str, Any]:
    response = await mint(client)
    assert response.status == 201, await response.text()
    body: dict[str, Any] = await response.json()
    body["etag"] = response.headers["ETag"]
    return body


def authorized(body: dict[str, Any], **headers: str) -> dict[str, str]:
    return {**ORIGIN_HEADERS, "Authorization": f"Bearer {body['token']}", **headers}


async def test_a_start_without_an_offer_is_refused_before_anything_is_created(
    make_host: MakeHost, emulator: EmulatorServer, control: EmulatorControl
) -> None:
    client, _ = await make_host()
    for body in (
        {"agent": "sales", "offer": None},
        {"agent": "sales", "offer": "hello"},
        {"agent": "sales", "offer": 3},
    ):
        await problem(await mint(client, body), 400, "offer_required")
    assert await control.request_count("POST /v1/web-calls") == 0


async def test_an_offer_dialnexa_cannot_answer_ends_the_call_and_frees_its_slot(
    make_host: MakeHost, emulator: EmulatorServer, control: EmulatorControl
) -> None:
    client, handle = await make_host(max_concurrent_calls=1)
    # The plugin passes the offer on (it is well formed); DialNexa's WHIP endpoint refuses it.
    await control.add_fault(route="POST /v1/web-calls/{call_id}/whip", kind="status", status=400, count=1)
    body = await problem(await mint(client), 400, "invalid_offer")
    assert "refused" in body["message"]
    (call,) = emulator.state.calls.values()
    assert call.ended and call.end_reason == "network_failure", "the call created for the refused offer is hung up"
    assert await runtime(handle).store.active_slots() == 0
    assert (await mint(client)).status == 201, "the slot was freed"


async def test_an_access_token_that_expired_before_the_offer_is_call_expired(
    make_host: MakeHost, emulator: EmulatorServer, control: EmulatorControl
) -> None:
    client, _ = await make_host()
    await control.add_fault(route="POST /v1/web-calls/{call_id}/whip", kind="status", status=401, count=1)
    body = await problem(await mint(client), 502, "call_expired")
    assert "start it again" in body["message"]


async def test_ice_restart_is_relayed_with_rfc_9725_semantics(make_host: MakeHost, emulator: EmulatorServer) -> None:
    client, _ = await make_host()
    call = await started(client)
    url = call["media_url"]
    sdpfrag = {"Content-Type": "application/trickle-ice-sdpfrag"}
    await problem(await client.patch(url, data=FRAGMENT, headers={**ORIGIN_HEADERS, **sdpfrag}), 401, "unauthorized")
    wrong_type = authorized(call, **{"Content-Type": "application/sdp", "If-Match": "*"})
    await problem(await client.patch(url, data=FRAGMENT, headers=wrong_type), 415, "unsupported_media_type")
    no_precondition = authorized(call, **sdpfrag)
    await problem(await client.patch(url, data=FRAGMENT, headers=no_precondition), 428, "precondition_required")
    stale = authorized(call, **sdpfrag, **{"If-Match": '"not-the-etag"'})
    await problem(await client.patch(url, data=FRAGMENT, headers=stale), 412, "precondition_failed")
    # The emulator's WHIP sessions do not restart ICE: its 405 and Allow come back as they are.
    restart = await client.patch(url, data=FRAGMENT, headers=authorized(call, **sdpfrag, **{"If-Match": "*"}))
    await problem(restart, 405, "media_update_refused")
    assert restart.headers["Allow"] == "PATCH, DELETE, OPTIONS"
    current = await client.patch(url, data=FRAGMENT, headers=authorized(call, **sdpfrag, **{"If-Match": call["etag"]}))
    assert current.status == 405


async def test_hang_up_through_the_media_resource(make_host: MakeHost, emulator: EmulatorServer) -> None:
    client, _ = await make_host()
    call = await started(client)
    other = await started(client)
    url = call["media_url"]
    await problem(await client.delete(url, headers=ORIGIN_HEADERS), 401, "unauthorized")
    await problem(await client.delete(url, headers=authorized(other)), 401, "unauthorized")
    assert (await client.delete(url, headers=authorized(call))).status == 200
    assert emulator.state.calls[call["call_id"]].ended
    assert (await client.delete(url, headers=authorized(call))).status == 200, "already gone counts as done"
    unknown = await client.delete("/webcall/sessions/call_nope/media", headers=authorized(call))
    await problem(unknown, 401, "unauthorized")


async def test_the_media_resource_is_reachable_cross_origin(make_host: MakeHost) -> None:
    client, _ = await make_host()
    call = await started(client)
    preflight = await client.options(
        call["media_url"],
        headers={
            **ORIGIN_HEADERS,
            "Access-Control-Request-Method": "PATCH",
            "Access-Control-Request-Headers": "if-match",
        },
    )
    assert preflight.status == 204
    assert "PATCH" in preflight.headers["Access-Control-Allow-Methods"]
    assert "if-match" in preflight.headers["Access-Control-Allow-Headers"]


async def test_host_code_gets_the_raw_descriptor_from_python(make_host: MakeHost, emulator: EmulatorServer) -> None:
    """For a native app's backend: the descriptor a browser never sees, from a method on the handle."""
    _, handle = await make_host()
    session = await handle.create_web_call("sales", {"name": "Priya"})
    assert session.access_token and session.media.whip_url.startswith(emulator.origin)
    assert emulator.state.calls[session.id].metadata == {"name": "Priya"}
    with pytest.raises(ConfigError, match="nobody"):
        await handle.create_web_call("nobody")


# -- fragments are strangers' input too ------------------------------------------------------------------------------
def fragment_with_candidates(count: int, address: str = "127.0.0.1") -> str:
    candidates = "".join(
        f"a=candidate:{n} 1 udp {2122260223 - n} {address} {40000 + n} typ host\r\n" for n in range(count)
    )
    return FRAGMENT + candidates


def test_a_fragment_passes_at_most_the_offer_cap_of_usable_candidates() -> None:
    checked = sanitize_fragment(fragment_with_candidates(250), local_upstream=True)
    assert checked.candidates == MAX_CANDIDATES == checked.sdp.count("a=candidate:")
    assert checked.dropped["over_cap"] == 250 - MAX_CANDIDATES
    assert checked.sdp.startswith(FRAGMENT)  # the credentials and the rest pass unchanged
    remote = sanitize_fragment(fragment_with_candidates(3), local_upstream=False)
    assert remote.candidates == 0 and remote.dropped["address"] == 3  # loopback is nobody's address at DialNexa
    multicast = sanitize_fragment(fragment_with_candidates(2, address="224.0.0.1"), local_upstream=True)
    assert multicast.candidates == 0


@pytest.mark.parametrize(
    "fragment",
    ["v=0\r\n", "c=IN IP4 198.51.100.1\r\n", "a=mid:0\r\nnot an sdp line\r\n", "a=mid:0\x0ba=candidate:x\r\n"],
)
def test_a_fragment_with_lines_that_do_not_belong_is_refused(fragment: str) -> None:
    with pytest.raises(InvalidOffer):
        sanitize_fragment(fragment, local_upstream=True)


async def test_a_call_cannot_flood_its_media_resource(
    make_host: MakeHost, emulator: EmulatorServer, control: EmulatorControl
) -> None:
    client, _ = await make_host()
    call = await started(client)
    url = call["media_url"]
    headers = authorized(call, **{"Content-Type": "application/trickle-ice-sdpfrag", "If-Match": "*"})
    await problem(await client.patch(url, data="v=0\r\n", headers=headers), 400, "invalid_fragment")
    assert await control.request_count("PATCH /v1/web-calls/{call_id}/whip/{session_id}") == 0
    statuses = [
        (await client.patch(url, data=fragment_with_candidates(40), headers=headers)).status
        for _ in range(MEDIA_UPDATES_PER_CALL + 1)
    ]
    assert statuses[-1] == 429 and 429 not in statuses[:-1], statuses
    assert await control.request_count("PATCH /v1/web-calls/{call_id}/whip/{session_id}") == MEDIA_UPDATES_PER_CALL
