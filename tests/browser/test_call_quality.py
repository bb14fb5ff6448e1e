"""How a call sounded reaches the site owner: the widget samples ``getStats()`` during a real call and sends one
summary as it ends, which the host's ``call.ended`` callback receives as ``event.quality``."""

from __future__ import annotations

import asyncio

import pytest

from .conftest import NewTab, Site
from .shared import LIVE

pytestmark = [
    pytest.mark.browser,
    pytest.mark.asyncio(loop_scope="session"),
    pytest.mark.engines("chromium", "firefox"),
]


async def test_the_host_callback_gets_the_calls_quality_numbers(site: Site, new_tab: NewTab) -> None:
    tab = await new_tab(site)
    await tab.button("Start call").click()
    await tab.wait_state(*LIVE)
    call_id = await site.call_id()
    await asyncio.sleep(4.5)  # three samples: at connect, +2 s, +4 s
    await tab.button("End call").click()
    ended = await site.event("call.ended", call_id, within=10)
    quality = ended.quality
    assert quality is not None, "the widget's summary should be on call.ended"
    assert quality["candidate"] == "host" and quality["protocol"] == "udp", quality  # loopback, UDP open
    assert quality["samples"] >= 2, quality
    assert 0 < quality["connect_ms"] < 8000, quality
    assert 4 <= quality["duration_s"] <= 10, quality
    assert 0 <= quality["rtt_ms"] < 100, quality  # loopback
    assert quality["loss_in"] < 0.02 and quality["weak_s"] == 0, quality
    assert 0 <= quality["jitter_ms"] < 60, quality
