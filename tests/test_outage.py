"""Store trouble is named once, then summarised: which store, where (no password), since when, how many attempts."""

from __future__ import annotations

import asyncio
import logging

import pytest

from webcall.errors import StoreUnavailable
from webcall.outage import Outage, address_without_password, describe_store

from .conftest import MakeHost, mint, problem
from .net import free_port

PASSWORD = "hunter2-store-password"


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def unreachable() -> StoreUnavailable:
    try:
        raise StoreUnavailable("Redis is unreachable: ConnectionError") from ConnectionRefusedError(111, "refused")
    except StoreUnavailable as err:
        return err


def test_an_outage_is_named_once_then_summarised_then_its_end_is_said(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="webcall.store")
    clock = Clock()
    outage = Outage("Redis at redis://10.0.0.5:6379/0", clock=clock, wall_clock=lambda: 3723.0)
    outage.answered()  # no outage: nothing to say
    for second in range(59):  # the dispatcher's turns, about one a second, and a few requests
        clock.now = 1000.0 + second
        outage.failed(unreachable(), by="event delivery")
        if second % 10 == 0:
            outage.failed(unreachable(), by="requests")
    lines = [r.getMessage() for r in caplog.records]
    assert lines == [
        "webcall: the state store (Redis at redis://10.0.0.5:6379/0) is unreachable: [Errno 111] refused. Until it "
        "answers, starts and webhooks get 503 and event delivery waits; this is summarised every 1 min while it lasts"
    ]
    clock.now = 1061.0
    outage.failed(unreachable(), by="event delivery")
    clock.now = 1062.0
    outage.failed(unreachable(), by="event delivery")  # not yet another summary
    clock.now = 1090.0
    outage.answered()
    outage.answered()
    assert [r.getMessage() for r in caplog.records][1:] == [
        "webcall: the state store (Redis at redis://10.0.0.5:6379/0) is still unreachable, since 01:02:03 UTC "
        "(1 min 1 s): 66 failed attempts (60 by event delivery, 6 by requests); last error: [Errno 111] refused",
        "webcall: the state store (Redis at redis://10.0.0.5:6379/0) answers again, after 1 min 30 s unreachable "
        "(67 failed attempts (61 by event delivery, 6 by requests))",
    ]
    assert not outage.ongoing


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        (f"redis://:{PASSWORD}@127.0.0.1:6379/0", "redis://127.0.0.1:6379/0"),
        (f"rediss://app:{PASSWORD}@cache.internal:6380/2", "rediss://app@cache.internal:6380/2"),
        (f"redis://cache.internal:6379/0?password={PASSWORD}", "redis://cache.internal:6379/0"),
        (f"unix:///run/redis.sock?db=1&password={PASSWORD}", "unix:///run/redis.sock"),
        ("redis://127.0.0.1:6379/0", "redis://127.0.0.1:6379/0"),
    ],
)
def test_the_address_is_logged_without_the_password(url: str, shown: str) -> None:
    assert address_without_password(url) == shown
    assert describe_store(url) == f"Redis at {shown}"


async def test_an_unreachable_redis_is_named_once_by_the_running_plugin(
    make_host: MakeHost, caplog: pytest.LogCaptureFixture
) -> None:
    """The dispatcher (about once a second) and every request once logged "the state store is unreachable" each."""
    caplog.set_level(logging.DEBUG)
    port = free_port()  # nothing listens there
    client, _ = await make_host(store=f"redis://:{PASSWORD}@127.0.0.1:{port}/0")
    for _ in range(3):
        await problem(await mint(client), 503, "store_unavailable")
    await asyncio.sleep(2.5)  # two or three turns of the dispatcher
    warnings = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    about_the_store = [w for w in warnings if "unreachable" in w]
    assert len(set(about_the_store)) == len(about_the_store), f"a line about the store is repeated: {warnings}"
    named = [w for w in about_the_store if w.startswith("webcall: the state store (")]
    assert len(named) == 1 and named[0].startswith(
        f"webcall: the state store (Redis at redis://127.0.0.1:{port}/0) is unreachable: "
    ), warnings
    assert not any(PASSWORD in r.getMessage() for r in caplog.records)
