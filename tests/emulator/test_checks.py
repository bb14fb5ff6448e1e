"""The emulator's ICE agent checks a pair again at once when the browser's check arrives while its own first check
went unanswered (a browser that had not applied the answer yet), instead of waiting for aioice's 500 ms RTO."""

from __future__ import annotations

import asyncio
import time
from typing import Any

from aioice import Connection

from webcall.emulator.media.checks import recheck_on_incoming


def browser_ignoring_its_first_check() -> Connection:
    """The browser's side (controlling): the first check it receives is dropped, as a browser does that has not
    applied the answer yet."""
    browser = Connection(ice_controlling=True, components=1, use_ipv6=False)
    request_received = browser.request_received
    ignored: list[Any] = []

    def on_request(message: Any, addr: Any, protocol: Any) -> None:
        if not ignored:
            ignored.append(message)
            return
        request_received(message, addr, protocol)

    vars(browser)["request_received"] = on_request
    return browser


async def seconds_to_connect(*, recheck: bool) -> float:
    emulator = Connection(ice_controlling=False, components=1, use_ipv6=False)
    browser = browser_ignoring_its_first_check()
    if recheck:
        recheck_on_incoming(emulator)
    try:
        await asyncio.gather(emulator.gather_candidates(), browser.gather_candidates())
        for side, other in ((emulator, browser), (browser, emulator)):
            side.remote_username, side.remote_password = other.local_username, other.local_password
            for candidate in other.local_candidates:
                await side.add_remote_candidate(candidate)
            await side.add_remote_candidate(None)
        started = time.monotonic()
        emulator_connected = asyncio.ensure_future(emulator.connect())
        await asyncio.sleep(0.05)  # the answer is on its way: the emulator's first check arrives before it
        await asyncio.gather(emulator_connected, browser.connect())
        return time.monotonic() - started
    finally:
        await asyncio.gather(emulator.close(), browser.close())


async def test_a_check_from_the_browser_retriggers_the_unanswered_one() -> None:
    assert await seconds_to_connect(recheck=True) < 0.3


async def test_without_it_the_emulator_waits_for_its_retransmission() -> None:
    # What the emulator did before: the pair stays In-Progress until aioice retransmits, 500 ms after the first try.
    assert await seconds_to_connect(recheck=False) >= 0.45
