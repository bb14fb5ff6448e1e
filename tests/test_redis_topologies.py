"""The Redis store on the shapes of Redis operators run, with real processes: a three-master Redis Cluster and a
primary with a replica watched by Sentinel (the store contract runs on both too: tests/test_store_contract.py).

``python -m webcall serve`` starts, ends and relays calls on either; a plain URL at one cluster node is a 503 with a
reason, never a 500; a Sentinel failover during live calls costs seconds, and no call's events."""

from __future__ import annotations

import asyncio
import json
import re
import secrets
import sys
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import AbstractContextManager, AsyncExitStack, closing
from pathlib import Path
from typing import Any

import httpx
import pytest

from webcall.config import WebCallConfig
from webcall.errors import ConfigError, StoreUnavailable
from webcall.store.redis import KeyLayout, RedisStore, parse_store_url

from .net import free_port
from .offers import OFFER
from .redis_server import RedisClusterNodes, RedisSentinelGroup, RedisServer, command
from .service import Service, clean_environment, running_service

pytestmark = pytest.mark.timeout(180)

SERVE = [sys.executable, "-m", "webcall", "serve", "--port", "{port}"]
SESSION_SECRET = "topologies-session-secret-0123456789-abcdef"


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisClusterNodes]:
    nodes = RedisClusterNodes(tmp_path_factory.mktemp("cluster"))
    nodes.start()
    yield nodes
    nodes.stop()


@pytest.fixture
def sentinel_group(tmp_path: Path) -> Iterator[RedisSentinelGroup]:
    """A primary, a replica and a Sentinel of the test's own (a failover changes them for good)."""
    group = RedisSentinelGroup(tmp_path / "sentinel")
    group.start()
    yield group
    group.stop()


# -- store URLs ------------------------------------------------------------------------------------------------------
def test_cluster_and_sentinel_urls_are_read_with_their_default_ports_and_logins() -> None:
    cluster = parse_store_url("redis+cluster://10.0.0.1:7000,10.0.0.2,[::1]:7002")
    assert cluster.topology == "cluster" and not cluster.tls
    assert cluster.nodes == (("10.0.0.1", 7000), ("10.0.0.2", 6379), ("::1", 7002))
    sentinel = parse_store_url("rediss+sentinel://app:p%40ss@s1:26380,s2/mymaster/2")
    assert sentinel.topology == "sentinel" and sentinel.tls and sentinel.service_name == "mymaster"
    assert sentinel.nodes == (("s1", 26380), ("s2", 26379)) and sentinel.db == 2
    assert (sentinel.username, sentinel.password) == ("app", "p@ss")
    assert parse_store_url("redis+sentinel://:secret@s1/mymaster").password == "secret"
    assert parse_store_url("redis://localhost:6379/0").topology == "server"


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("redis+cluster://", "at least one host:port"),
        ("redis+cluster://a:7000,,b:7001", "a host is missing"),
        ("redis+cluster://a:seventy", "must be a number from 1 to 65535"),
        ("redis+cluster://a:70000", "must be a number from 1 to 65535"),
        ("redis+cluster://a:7000/3", "one database"),
        ("redis+cluster://[::1:7000", "IPv6"),
        ("redis+sentinel://s1:26379", "name the service Sentinel watches"),
        ("redis+sentinel://s1:26379/mymaster/x", "the database must be a number"),
        ("redis+sentinel://s1:26379/mymaster/0/1", "ends with /service_name"),
        ("redis+cluster://a:7000?ssl_cert_reqs=none", "takes no ?options"),
        ("redis+shard://a:7000", "redis+cluster://"),
    ],
)
def test_a_malformed_store_url_is_refused_with_a_sentence_that_keeps_its_password(url: str, message: str) -> None:
    secret_url = url.replace("://", "://user:hunter2@", 1)
    with pytest.raises(ConfigError, match=re.escape(message)) as refused:
        WebCallConfig.from_env({"WEBCALL_STORE": secret_url, "WEBCALL_SESSION_SECRET": SESSION_SECRET})
    assert "hunter2" not in str(refused.value)


def test_the_configuration_accepts_cluster_and_sentinel_urls() -> None:
    for url in ("redis+cluster://a:7000,b:7001", "rediss+sentinel://s1:26379,s2:26379/mymaster/0"):
        assert WebCallConfig.from_env({"WEBCALL_STORE": url, "WEBCALL_SESSION_SECRET": SESSION_SECRET}).store == url


@pytest.mark.parametrize("url", ["redis+cluster://127.0.0.1:{port}", "redis+sentinel://127.0.0.1:{port}/webcall"])
async def test_a_cluster_or_sentinel_that_does_not_answer_is_unavailable(url: str) -> None:
    """What the routes answer with 503 (never a 500): a cluster no node of which answers, Sentinels that do not."""
    store = RedisStore(url.format(port=free_port()))
    try:
        with pytest.raises(StoreUnavailable, match="Redis is unreachable"):
            await store.ping()
        with pytest.raises(StoreUnavailable):
            await store.hit_all_and_acquire([("rl:ip:1", 10)], 60, "slot", 4, 60)
        with pytest.raises(StoreUnavailable):
            await store.subscribe("call_1").start()
    finally:
        await store.close()


# -- the cluster's pub/sub -------------------------------------------------------------------------------------------
def call_on(cluster: RedisClusterNodes, node: RedisServer, keys: KeyLayout) -> str:
    """A call id whose keys live on ``node``."""
    while True:
        call_id = f"call_{secrets.token_hex(4)}"
        if cluster.master_of(keys.call(call_id, "log")) is node:
            return call_id


async def test_a_worker_hears_the_events_of_calls_on_every_cluster_node(cluster: RedisClusterNodes) -> None:
    """Each worker listens through one node; an event is published on the node of its call: every node hears it."""
    keys = KeyLayout(f"t{secrets.token_hex(4)}:")
    store = RedisStore(cluster.url, prefix=keys.prefix)
    try:
        calls = [call_on(cluster, node, keys) for node in cluster.masters]
        subscriptions = [store.subscribe(call_id) for call_id in calls]
        for subscription in subscriptions:
            await subscription.start()
        for call_id in calls:
            await store.publish_event(
                {"event": call_id},
                dedupe_key=f"{call_id}:ended",
                dedupe_ttl=60,
                call_id=call_id,
                browser_event={"type": "call.ended", "call": call_id},
                log_ttl=60,
            )
        for call_id, subscription in zip(calls, subscriptions, strict=True):
            item = await asyncio.wait_for(subscription.get(), 5)
            assert item is not None and item[1] == {"type": "call.ended", "call": call_id}
            await subscription.close()
    finally:
        await store.close()


def listening_node(cluster: RedisClusterNodes) -> RedisServer:
    """The live node a worker's pub/sub connection is on (the only node with a pub/sub client)."""
    for node in (node for node in cluster.nodes if node.proc is not None):
        with closing(node.client()) as client:
            if command(client, "CLIENT LIST", "TYPE", "pubsub"):
                return node
    raise AssertionError("no node has a pub/sub client")


async def test_when_the_node_a_worker_listens_through_dies_it_listens_through_another(tmp_path: Path) -> None:
    """The node dies (a master: its replica takes its slots over); the worker subscribes again through another
    node, and an event another worker publishes afterwards reaches it."""
    cluster = RedisClusterNodes(tmp_path / "cluster", replicas=1, node_timeout_ms=1000)
    cluster.start()
    keys = KeyLayout(f"t{secrets.token_hex(4)}:")
    listener, publisher = RedisStore(cluster.url, prefix=keys.prefix), RedisStore(cluster.url, prefix=keys.prefix)
    try:
        first = listener.subscribe("call_first")
        await first.start()
        dying = listening_node(cluster)
        call_id = call_on(cluster, next(node for node in cluster.masters if node is not dying), keys)
        subscription = listener.subscribe(call_id)
        await subscription.start()
        dying.kill()
        await asyncio.to_thread(cluster.wait_until_served, dying)
        deadline = time.monotonic() + 20
        while True:  # the client finds the promoted replica when the outbox was on the node that died
            try:
                await publisher.publish_event(
                    {}, dedupe_key="ended", dedupe_ttl=60, call_id=call_id, browser_event={"type": "x"}, log_ttl=60
                )
                break
            except StoreUnavailable:
                assert time.monotonic() < deadline, "the cluster did not take the event"
                await asyncio.sleep(0.2)
        item = await asyncio.wait_for(subscription.get(), 10)
        assert item is not None and item[1] == {"type": "x"}
        assert listening_node(cluster) is not dying
        await first.close()
        await subscription.close()
    finally:
        await listener.close()
        await publisher.close()
        cluster.stop()


# -- the service -----------------------------------------------------------------------------------------------------
def serve(tmp_path: Path, store_url: str, ready_path: str = "/healthz") -> AbstractContextManager[Service]:
    """``python -m webcall serve`` on the embedded emulator, its store at ``store_url``; yielded once ``ready_path``
    answers 200."""
    env = clean_environment(WEBCALL_STORE=store_url, WEBCALL_SESSION_SECRET=SESSION_SECRET)
    return running_service(SERVE, tmp_path, env=env, ready_path=ready_path)


async def start_call(http: httpx.AsyncClient, service: Service) -> httpx.Response:
    return await http.post(
        f"{service.url}/webcall/sessions",
        json={"agent": "sales", "offer": OFFER},
        headers={"Origin": service.origin, "Connection": "close"},
    )


async def end_call(http: httpx.AsyncClient, service: Service, session: dict[str, Any]) -> None:
    ended = await http.post(
        f"{service.url}{session['end_url']}", headers={"Authorization": f"Bearer {session['token']}"}
    )
    assert ended.status_code == 200, ended.text


async def browser_events(http: httpx.AsyncClient, service: Service, session: dict[str, Any], seen: list[str]) -> None:
    """Read the call's browser event stream as the widget does, noting each event's type, until ``call.ended``."""
    url = f"{service.url}{session['events_url']}?token={session['token']}"
    async with http.stream("GET", url, headers={"Origin": service.origin}) as stream:
        assert stream.status_code == 200
        async for line in stream.aiter_lines():
            if line.startswith("data:"):
                seen.append(json.loads(line[5:])["type"])
                if seen[-1] == "call.ended":
                    return


async def until(condition: Any, seconds: float, what: str) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"{what} within {seconds:g} s")
        await asyncio.sleep(0.05)


@pytest.fixture
async def http() -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(timeout=httpx.Timeout(30, read=None)) as client:
        yield client


async def a_call_starts_ends_and_reaches_its_browser(http: httpx.AsyncClient, service: Service) -> None:
    health = (await http.get(f"{service.url}/healthz")).json()
    assert health["status"] == "ok" and health["store"] == "redis"
    started = await start_call(http, service)
    assert started.status_code == 201, started.text
    session = started.json()
    seen: list[str] = []
    reading = asyncio.create_task(browser_events(http, service, session, seen))
    await until(lambda: "session.created" in seen, 10, "the stream never got session.created")
    await end_call(http, service, session)
    await asyncio.wait_for(reading, 10)
    assert seen == ["session.created", "call.ended"]


async def test_serve_on_a_redis_cluster(tmp_path: Path, cluster: RedisClusterNodes, http: httpx.AsyncClient) -> None:
    with serve(tmp_path, cluster.url) as service:
        await a_call_starts_ends_and_reaches_its_browser(http, service)


async def test_serve_on_sentinel(tmp_path: Path, sentinel_group: RedisSentinelGroup, http: httpx.AsyncClient) -> None:
    with serve(tmp_path, sentinel_group.url) as service:
        await a_call_starts_ends_and_reaches_its_browser(http, service)


@pytest.mark.parametrize("holds_the_slots", [True, False], ids=["node-with-the-admission-keys", "another-node"])
async def test_a_plain_url_at_one_cluster_node_is_503_with_a_reason_never_500(
    tmp_path: Path, cluster: RedisClusterNodes, http: httpx.AsyncClient, holds_the_slots: bool
) -> None:
    slots_node = cluster.master_of(KeyLayout("webcall:").admission("slots"))
    node = slots_node if holds_the_slots else next(n for n in cluster.masters if n is not slots_node)
    with serve(tmp_path, node.url, ready_path="/webcall/widget.js") as service:  # up, but not ready
        health = await http.get(f"{service.url}/healthz")
        assert health.status_code == 503 and health.headers["Retry-After"]
        assert health.json()["status"] == "unavailable" and "redis+cluster://" in health.json()["reason"]
        started = await start_call(http, service)
        assert started.status_code == 503 and started.json()["code"] == "store_unavailable", started.text


async def test_a_sentinel_failover_during_live_calls(
    tmp_path: Path, sentinel_group: RedisSentinelGroup, http: httpx.AsyncClient
) -> None:
    """The primary dies with four calls live: Sentinel promotes the replica, starts work again within seconds, and
    the four calls, ended afterwards, reach their browsers' event streams."""
    with serve(tmp_path, sentinel_group.url) as service:
        async with AsyncExitStack() as stack:
            sessions: list[dict[str, Any]] = []
            seen: list[list[str]] = []
            readers: list[asyncio.Task[None]] = []
            for _ in range(4):
                started = await start_call(http, service)
                assert started.status_code == 201, started.text
                sessions.append(started.json())
                seen.append([])
                readers.append(asyncio.create_task(browser_events(http, service, sessions[-1], seen[-1])))
                stack.callback(readers[-1].cancel)
            await until(lambda: all(kinds == ["session.created"] for kinds in seen), 10, "the streams did not open")
            with closing(sentinel_group.primary.client()) as primary:
                assert command(primary, "WAIT", 1, 5000) == 1  # the replica has what the calls wrote

            old_primary = sentinel_group.primary_port()
            killed_at = time.monotonic()
            sentinel_group.primary.kill()
            await asyncio.to_thread(sentinel_group.wait_for_promotion, old_primary)
            while (await start_call(http, service)).status_code != 201:
                assert time.monotonic() - killed_at < 20, "starts did not work again after the failover"
                await asyncio.sleep(0.2)

            for session in sessions:
                await end_call(http, service, session)
            await asyncio.wait_for(asyncio.gather(*readers), 15)
            assert seen == [["session.created", "call.ended"]] * 4
