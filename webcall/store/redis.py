"""Redis store: several workers (or machines) share limits, slots, contexts, the outbox and browser events.

Redis comes in the shapes operators run, named by the store URL (:func:`parse_store_url`): one server
(``redis://``), a primary with failover watched by Sentinel (``redis+sentinel://``) and a Redis Cluster
(``redis+cluster://``); ``rediss`` for TLS.

Every read-modify-write is one Lua script or one atomic command, so workers never race. Times that must agree
across machines (slot leases) come from Redis' own clock. The outbox is a Redis Stream with one consumer group:
an entry taken by a worker that died stays pending and is claimed by another (``XAUTOCLAIM``). Browser events are
published on one channel per call; each worker holds one pub/sub connection and fans out to its own streams.

The keys (:class:`KeyLayout`) carry hash tags, so that a script's keys share one hash slot on a cluster: one call's
keys share its id as tag, and the keys every call shares are grouped under a few fixed tags. A store operation that
writes to several slots (an event goes to the outbox and to its call's log; a new call also sets its deadline) is a
:class:`_Step` of parts, one script per slot: where one server holds every key (one Redis, Sentinel's primary) the
parts run as one script, in one round trip and atomically; on a cluster each part runs on the node of its slot, all
sent at once. Each part is idempotent by itself (an event is marked in the outbox and in its call's log separately),
so when one part fails the retry (DialNexa redelivers a webhook answered 503) does it without repeating the others.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import re
import secrets
import time
from collections.abc import Awaitable, Callable, Coroutine, Sequence
from dataclasses import dataclass
from functools import wraps
from typing import Any, Literal, ParamSpec, TypeVar
from urllib.parse import unquote

import redis.asyncio as aioredis
from redis.asyncio.cluster import ClusterNode, RedisCluster
from redis.asyncio.retry import Retry
from redis.asyncio.sentinel import Sentinel
from redis.backoff import ExponentialBackoff, NoBackoff
from redis.exceptions import (
    AskError,
    ClusterCrossSlotError,
    ClusterDownError,
    ReadOnlyError,
    RedisClusterException,
    ResponseError,
)
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from ..errors import ConfigError, StoreUnavailable
from .base import RECLAIMED, EventFeed, EventId, Item, Mailbox, NewCall, Store

log = logging.getLogger("webcall.store")

P = ParamSpec("P")
R = TypeVar("R")
GROUP = "webcall"

# -- store URLs ----------------------------------------------------------------------------------------------------
Topology = Literal["server", "sentinel", "cluster"]
_TOPOLOGY_PORTS = {"sentinel": 26379, "cluster": 6379}
URL_FORMS = (
    "redis://host:6379/0 (one server), redis+sentinel://host:26379[,host:26379...]/service_name[/db] (Sentinel) or "
    "redis+cluster://host:6379[,host:6379...] (Redis Cluster); rediss instead of redis for TLS"
)


@dataclass(frozen=True, kw_only=True)
class StoreAddress:
    """Where a Redis store lives and in which shape, as :func:`parse_store_url` read it."""

    topology: Topology
    url: str
    """The URL as given (for one server, redis-py reads it)."""
    nodes: tuple[tuple[str, int], ...] = ()
    """The Sentinels, or the cluster nodes asked first (any node tells the client where the others are)."""
    service_name: str = ""
    """The name under which Sentinel watches the primary."""
    db: int = 0
    username: str | None = None
    password: str | None = None
    tls: bool = False


def parse_store_url(url: str) -> StoreAddress:
    """Read a Redis store URL (``URL_FORMS``); :class:`ConfigError` says what is wrong with a malformed one, without
    repeating it (it may hold a password)."""
    scheme, separator, rest = url.partition("://")
    if scheme in ("redis", "rediss", "unix") and separator:
        return StoreAddress(topology="server", url=url)
    base, _, shape = scheme.partition("+")
    if not separator or base not in ("redis", "rediss") or shape not in _TOPOLOGY_PORTS:
        raise ConfigError(f"WEBCALL_STORE must be 'memory' or a Redis URL: {URL_FORMS}.")
    topology: Topology = "sentinel" if shape == "sentinel" else "cluster"
    where, _, query = rest.partition("?")
    if query:
        raise ConfigError(f"WEBCALL_STORE: a {scheme}:// URL takes no ?options.")
    netloc, _, path = where.partition("/")
    credentials, at, hosts = netloc.rpartition("@")
    username = password = None
    if at:
        user, colon, secret = credentials.partition(":")
        username = unquote(user) or None
        password = unquote(secret) if colon else None
    if not hosts:
        raise ConfigError(f"WEBCALL_STORE: name at least one host:port after {scheme}://.")
    nodes = tuple(_host_and_port(part, _TOPOLOGY_PORTS[topology]) for part in hosts.split(","))
    segments = path.rstrip("/").split("/") if path.rstrip("/") else []
    service_name, db_text = "", "0"
    if topology == "sentinel":
        if not segments or not segments[0]:
            raise ConfigError(
                "WEBCALL_STORE: name the service Sentinel watches after the hosts: "
                "redis+sentinel://host:26379/service_name[/db]."
            )
        service_name = unquote(segments[0])
        if len(segments) > 2:
            raise ConfigError("WEBCALL_STORE: a redis+sentinel:// URL ends with /service_name or /service_name/db.")
        db_text = segments[1] if len(segments) == 2 else "0"
    elif segments not in ([], ["0"]):
        raise ConfigError(
            "WEBCALL_STORE: a Redis Cluster has one database: end the redis+cluster:// URL with the hosts."
        )
    if not db_text.isdigit():
        raise ConfigError(f"WEBCALL_STORE: the database must be a number (got {db_text!r}).")
    return StoreAddress(
        topology=topology,
        url=url,
        nodes=nodes,
        service_name=service_name,
        db=int(db_text),
        username=username,
        password=password,
        tls=base == "rediss",
    )


def _host_and_port(text: str, default_port: int) -> tuple[str, int]:
    """``host``, ``host:port`` or ``[IPv6]:port``."""
    if text.startswith("["):
        host, bracket, after = text[1:].partition("]")
        if not bracket or (after and not after.startswith(":")):
            raise ConfigError(f"WEBCALL_STORE: {text!r} is not [IPv6 address]:port.")
        port_text = after[1:]
    else:
        host, _, port_text = text.partition(":")
    if not host:
        raise ConfigError("WEBCALL_STORE: a host is missing in the list of host:port (an empty one between commas?).")
    if not port_text:
        return host, default_port
    if not port_text.isdigit() or not 0 < int(port_text) < 65536:
        raise ConfigError(f"WEBCALL_STORE: the port of {host!r} must be a number from 1 to 65535 (got {port_text!r}).")
    return host, int(port_text)


# -- keys ------------------------------------------------------------------------------------------------------------
class KeyLayout:
    """Every key's name. On a cluster, keys whose hash tags (the part in braces) are equal share a slot, and only
    keys of one slot can be used by one script:

    - one call's keys share its id: ``{<call id>}:ctx``, ``:media``, ``:ids`` (its log's epoch and last sequence
      number), ``:log``, ``:seen:<dedupe key>`` and the pub/sub channel ``:ch``;
    - ``{admission}``: every rate-limit counter and the concurrent-call slots (a visit's counters and its slot are
      taken in one script);
    - ``{outbox}``: the stream, its dedupe marks ``:once:<dedupe key>`` and the parts of entries already done;
    - ``{calls}``: the deadlines, the open calls and the store's generation (lost with the open calls);
    - ``{dead}``: dead letters;
    - single-use ids (``once:<key>``) carry no tag and spread over the cluster.

    The fixed tags each live on one node, which every visit (admission), every event (outbox) and every new call
    (calls) goes to: the cost of limits, a queue and deadlines that hold for all workers together.
    """

    def __init__(self, prefix: str) -> None:
        if "{" in prefix or "}" in prefix:
            raise ValueError("a Redis key prefix cannot hold braces: they would be the hash tag of every key")
        self.prefix = prefix

    def call(self, call_id: str, name: str) -> str:
        return f"{self.prefix}{{{call_id}}}:{name}"

    def channel(self, call_id: str) -> str:
        return self.call(call_id, "ch")

    def call_of_channel(self, channel: str) -> str:
        """The call id in a :meth:`channel` name."""
        return channel[len(self.prefix) + 1 : -len("}:ch")]

    def admission(self, name: str) -> str:
        return f"{self.prefix}{{admission}}:{name}"

    def outbox(self, name: str) -> str:
        return f"{self.prefix}{{outbox}}:{name}"

    def calls(self, name: str) -> str:
        return f"{self.prefix}{{calls}}:{name}"

    def dead(self, name: str) -> str:
        return f"{self.prefix}{{dead}}:{name}"

    def once(self, key: str) -> str:
        return f"{self.prefix}once:{key}"


# -- scripts ---------------------------------------------------------------------------------------------------------
_HIT = """
local cur = tonumber(redis.call('GET', KEYS[1]) or '0')
if cur >= tonumber(ARGV[1]) then
  local ttl = redis.call('PTTL', KEYS[1])
  if ttl < 0 then ttl = tonumber(ARGV[2]) end
  return ttl
end
cur = redis.call('INCR', KEYS[1])
if cur == 1 then redis.call('PEXPIRE', KEYS[1], ARGV[2]) end
return -1
"""
_UNCOUNT = """
if tonumber(redis.call('GET', KEYS[1]) or '0') > 0 then redis.call('DECR', KEYS[1]) end
"""
# The visit counters: every limit allows it (each is then counted) or the first refusing one answers {index, ms}.
# KEYS[1..n] are the counters, ARGV[1] the window in ms, ARGV[i + 1] the limit of KEYS[i].
_COUNT_VISIT = """
for i = 1, n do
  local cur = tonumber(redis.call('GET', KEYS[i]) or '0')
  if cur >= tonumber(ARGV[i + 1]) then
    local ttl = redis.call('PTTL', KEYS[i])
    if ttl < 0 then ttl = tonumber(ARGV[1]) end
    return {i - 1, ttl}
  end
end
for i = 1, n do
  if redis.call('INCR', KEYS[i]) == 1 then redis.call('PEXPIRE', KEYS[i], ARGV[1]) end
end
"""
# A slot lease, timed by Redis' clock: 1 when taken (or already held), 0 when all ``cap`` are.
_TAKE_SLOT = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
redis.call('ZREMRANGEBYSCORE', slots, '-inf', now)
if not redis.call('ZSCORE', slots, slot_id) and redis.call('ZCARD', slots) >= cap then
  return 0
end
redis.call('ZADD', slots, now + lease_ms, slot_id)
return 1
"""
_HIT_ALL = "local n = #KEYS\n" + _COUNT_VISIT + "return false"
_ACQUIRE = "local slots, slot_id, cap, lease_ms = KEYS[1], ARGV[1], tonumber(ARGV[2]), tonumber(ARGV[3])\n" + _TAKE_SLOT
# Both in one step: the counters as _HIT_ALL, then (when every limit allowed the visit) the slot, whose key is last.
_HIT_ALL_ACQUIRE = (
    "local n = #KEYS - 1\n"
    + _COUNT_VISIT
    + "local slots, slot_id, cap, lease_ms = KEYS[n + 1], ARGV[n + 2], tonumber(ARGV[n + 3]), tonumber(ARGV[n + 4])\n"
    + _TAKE_SLOT
)
_RELEASE = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local score = redis.call('ZSCORE', KEYS[1], ARGV[1])
redis.call('ZREM', KEYS[1], ARGV[1])
if score and tonumber(score) > now then return 1 end
return 0
"""
_ACTIVE = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
return redis.call('ZCOUNT', KEYS[1], '(' .. now, '+inf')
"""
# {outbox}: KEYS[1] the stream, KEYS[2] the dedupe mark; ARGV[1] the entry, ARGV[2] the dedupe key ('' for none),
# ARGV[3] the mark's ms. The entry id, or false when the mark was already set.
_OUTBOX_ADD = """
if ARGV[2] ~= '' then
  if not redis.call('SET', KEYS[2], '1', 'NX', 'PX', ARGV[3]) then return false end
end
return redis.call('XADD', KEYS[1], '*', 'data', ARGV[1])
"""
# {outbox}, an event: KEYS[1] the stream, KEYS[2] the event's dedupe mark; ARGV[1] the entry, ARGV[2] the mark's ms.
_QUEUE_EVENT = """
if not redis.call('SET', KEYS[2], '1', 'NX', 'PX', ARGV[2]) then return false end
return redis.call('XADD', KEYS[1], '*', 'data', ARGV[1])
"""
# {<call id>}: KEYS[1] the event's mark in the call's log, KEYS[2] the log's ids (a hash: its epoch and its last
# sequence number), KEYS[3] the log; ARGV[1] the browser event, ARGV[2] the mark's ms, ARGV[3] the log's ms, ARGV[4]
# the call's channel. Logs and publishes the event as ``[<epoch>-<seq>, event]`` unless it is marked.
_LOG_EVENT = """
if not redis.call('SET', KEYS[1], '1', 'NX', 'PX', ARGV[2]) then return false end
local seq = redis.call('HINCRBY', KEYS[2], 'seq', 1)
local epoch = redis.call('HGET', KEYS[2], 'epoch')
if not epoch then
  local t = redis.call('TIME')
  epoch = string.format('%x', tonumber(t[1]) * 1000000 + tonumber(t[2]))
  redis.call('HSET', KEYS[2], 'epoch', epoch)
end
redis.call('PEXPIRE', KEYS[2], ARGV[3])
local item = cjson.encode({epoch .. '-' .. seq, cjson.decode(ARGV[1])})
redis.call('RPUSH', KEYS[3], item)
redis.call('PEXPIRE', KEYS[3], ARGV[3])
redis.call('PUBLISH', ARGV[4], item)
return true
"""
# {<call id>}: KEYS[1] the context; ARGV[1] the context, ARGV[2] its ms.
_KEEP_CONTEXT = """
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
"""
# {<call id>}, a new call: KEYS[4] its context, KEYS[5] its media record, ARGV[5..8] them and their ms, then
# _LOG_EVENT (keys and arguments 1-3 and 1-4) for its event.
_KEEP_NEW_CALL = (
    """
redis.call('SET', KEYS[4], ARGV[5], 'PX', ARGV[6])
redis.call('SET', KEYS[5], ARGV[7], 'PX', ARGV[8])
"""
    + _LOG_EVENT
)
# {calls}: KEYS[1] the deadlines; ARGV[1] when, ARGV[2] the call.
_SET_DEADLINE = """
redis.call('ZADD', KEYS[1], ARGV[1], ARGV[2])
"""
_OUTBOX_ACK = """
local ids = {unpack(ARGV, 2)}
redis.call('XACK', KEYS[1], ARGV[1], unpack(ids))
redis.call('XDEL', KEYS[1], unpack(ids))
redis.call('DEL', unpack(KEYS, 2))
"""
_MARK_DONE = """
redis.call('SADD', KEYS[1], ARGV[1])
redis.call('PEXPIRE', KEYS[1], ARGV[2])
"""
_DEAD_TAKE = """
local v = redis.call('HGET', KEYS[1], ARGV[1])
if v then redis.call('HDEL', KEYS[1], ARGV[1]) end
return v
"""
_DUE = """
local ids = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', ARGV[1], 'LIMIT', 0, tonumber(ARGV[2]))
for _, id in ipairs(ids) do redis.call('ZREM', KEYS[1], id) end
return ids
"""
# The open calls due to be looked up, leased to the taker: their next look moves to the lease's end.
_CALLS_TO_CHECK = """
local ids = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', ARGV[1], 'LIMIT', 0, tonumber(ARGV[2]))
for _, id in ipairs(ids) do redis.call('ZADD', KEYS[1], 'XX', ARGV[3], id) end
return ids
"""
_GENERATION = """
local current = redis.call('GET', KEYS[1])
if current then return current end
redis.call('SET', KEYS[1], ARGV[1])
return ARGV[1]
"""


@dataclass(frozen=True)
class _Part:
    """A script over the keys of one hash slot, and how many keys and arguments it takes."""

    body: str
    keys: int
    args: int


_NUMBERED = re.compile(r"\b(KEYS|ARGV)\[([0-9]+)\]")


def _run_together(parts: Sequence[_Part]) -> str:
    """One script running ``parts`` in turn, each on its own share of KEYS and ARGV (in order, no more than the
    parts' own), which returns every part's result (false for none). Each part's ``KEYS[n]`` and ``ARGV[n]`` are
    renumbered, so such parts may index KEYS and ARGV with numbers only."""
    functions, results = [], []
    keys_before = args_before = 0
    for number, part in enumerate(parts, start=1):
        if "KEYS" in _NUMBERED.sub("", part.body) or "ARGV" in _NUMBERED.sub("", part.body):
            raise ValueError(f"part {number} indexes KEYS or ARGV otherwise than with a number")

        def renumbered(found: re.Match[str], keys: int = keys_before, args: int = args_before) -> str:
            return f"{found[1]}[{int(found[2]) + (keys if found[1] == 'KEYS' else args)}]"

        functions.append(f"local function part_{number}()\n{_NUMBERED.sub(renumbered, part.body)}\nend")
        results.append(f"local result_{number} = part_{number}()")
        keys_before, args_before = keys_before + part.keys, args_before + part.args
    returned = ", ".join(f"result_{number} or false" for number in range(1, len(parts) + 1))
    return "\n".join([*functions, *results, f"return {{{returned}}}"])


Client = aioredis.Redis | RedisCluster
Call = tuple[Sequence[str], Sequence[Any]]
"""One part's keys and arguments."""


class _Step:
    """Scripts that a store operation runs together, each over the keys of one hash slot: one script, one round
    trip, where one server holds every key; on a cluster, one script per part on its own node, sent at once."""

    def __init__(self, client: Client, parts: Sequence[_Part], *, clustered: bool) -> None:
        self._parts = parts
        self._apart = [client.register_script(part.body) for part in parts] if clustered else []
        self._together = None if clustered else client.register_script(_run_together(parts))

    async def __call__(self, *calls: Call) -> list[Any]:
        """Each part's result, in order, for its ``(keys, arguments)``."""
        for part, (keys, args) in zip(self._parts, calls, strict=True):
            if (len(keys), len(args)) != (part.keys, part.args):
                raise ValueError(f"a part takes {part.keys} keys and {part.args} arguments")
        if self._together is not None:
            keys = [key for part_keys, _ in calls for key in part_keys]
            args = [arg for _, part_args in calls for arg in part_args]
            return list(await self._together(keys=keys, args=args))
        outcomes = await asyncio.gather(
            *(script(keys=keys, args=args) for script, (keys, args) in zip(self._apart, calls, strict=True)),
            return_exceptions=True,
        )
        for outcome in outcomes:
            if isinstance(outcome, BaseException):
                raise outcome
        return list(outcomes)


# -- errors ------------------------------------------------------------------------------------------------------------
NOT_A_CLUSTER_CLIENT = (
    "WEBCALL_STORE names one node of a Redis Cluster: name its nodes as redis+cluster://host:port[,host:port...]"
)
_UNREACHABLE = (RedisConnectionError, RedisTimeoutError, OSError, RedisClusterException)
"""What redis-py raises when no server (no cluster node) answers."""


def _unavailable(fn: Callable[P, Coroutine[Any, Any, R]]) -> Callable[P, Coroutine[Any, Any, R]]:
    """Redis unreachable, or reachable but unusable as configured: :class:`StoreUnavailable`, which routes answer
    with 503 (never a 500)."""

    @wraps(fn)
    async def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        try:
            return await fn(*args, **kwargs)
        except _UNREACHABLE as err:
            raise StoreUnavailable(f"Redis is unreachable: {type(err).__name__}") from err
        except (AskError, ClusterCrossSlotError) as err:  # a plain client sent to a cluster node (MOVED, CROSSSLOT)
            raise StoreUnavailable(NOT_A_CLUSTER_CLIENT) from err
        except ClusterDownError as err:
            raise StoreUnavailable("the Redis Cluster is down (some of its slots have no node)") from err
        except ReadOnlyError as err:
            raise StoreUnavailable("Redis answers as a read-only replica, not the primary") from err

    return wrapper


def _ms(seconds: float) -> int:
    return max(1, int(seconds * 1000))


def _refusal(reply: Any) -> tuple[int, float]:
    """_COUNT_VISIT's ``{index, ms}`` as (index of the refusing limit, seconds to wait)."""
    return int(reply[0]), max(int(reply[1]) / 1000, 0.001)


def _entry_id(reply: Any) -> str | None:
    """An outbox entry id as a script returns it; None for the script's false (a duplicate)."""
    if reply is None:
        return None
    return reply.decode() if isinstance(reply, bytes) else str(reply)


# -- pub/sub ---------------------------------------------------------------------------------------------------------
class _Hub:
    """One pub/sub connection per worker, fanned out to every local subscriber of a call's channel.

    ``connect`` gives the client to listen through. Should the connection fail, a new one is made and subscribed to
    every channel again (on a cluster, through the next node: every node hears every publication), and what was
    published in between is caught up from the calls' logs (see :meth:`_subscribed`)."""

    def __init__(
        self,
        connect: Callable[[], Awaitable[aioredis.Redis]],
        keys: KeyLayout,
        logged: Callable[[str], Awaitable[list[Item]]],
        *,
        owns_clients: bool,
    ) -> None:
        self._connect = connect
        self._owns_clients = owns_clients
        self._keys = keys
        self._logged = logged
        """A call's logged events: read when its channel is subscribed again (see :meth:`_subscribed`)."""
        self._confirmed: set[str] = set()
        """The calls whose subscription Redis has confirmed."""
        self._queues: dict[str, set[Mailbox[Item]]] = {}  # call id -> the local subscribers' mailboxes
        self._listener: aioredis.Redis | None = None
        self._pubsub: Any = None
        self._reader: asyncio.Task[None] | None = None
        self._lock = asyncio.Lock()

    async def _listen(self) -> None:
        """A new pub/sub connection, subscribed to every call with local subscribers."""
        self._listener = await self._connect()
        self._pubsub = self._listener.pubsub()  # its confirmations are read too: see _subscribed
        await self._pubsub.subscribe(*(self._keys.channel(call_id) for call_id in self._queues))

    async def _hang_up(self) -> None:
        pubsub, listener = self._pubsub, self._listener
        self._pubsub = self._listener = None
        if pubsub is not None:
            with contextlib.suppress(Exception):
                await pubsub.aclose()
        if listener is not None and self._owns_clients:
            with contextlib.suppress(Exception):
                await listener.aclose()

    async def add(self, call_id: str, queue: Mailbox[Item]) -> None:
        async with self._lock:
            first = call_id not in self._queues
            self._queues.setdefault(call_id, set()).add(queue)
            try:
                if self._pubsub is None:
                    await self._listen()
                elif first:
                    await self._pubsub.subscribe(self._keys.channel(call_id))
            except BaseException:
                self._forget(call_id, queue)
                raise
            if self._reader is None or self._reader.done():
                self._reader = asyncio.create_task(self._read(), name="webcall-redis-pubsub")

    async def remove(self, call_id: str, queue: Mailbox[Item]) -> None:
        async with self._lock:
            if self._forget(call_id, queue) and self._pubsub is not None:
                with contextlib.suppress(Exception):
                    await self._pubsub.unsubscribe(self._keys.channel(call_id))

    def _forget(self, call_id: str, queue: Mailbox[Item]) -> bool:
        """Drop a local subscriber; True when it was the call's last."""
        queues = self._queues.get(call_id)
        if queues is None:
            return False
        queues.discard(queue)
        if queues:
            return False
        del self._queues[call_id]
        return True

    async def _read(self) -> None:
        while True:
            try:
                if self._pubsub is None:
                    async with self._lock:
                        if not self._queues:
                            return  # nothing to listen for: the next subscriber starts a reader again
                        await self._listen()
                message = await self._pubsub.get_message(timeout=1.0)
            except asyncio.CancelledError:
                raise
            except Exception as err:
                if self._pubsub is not None and self._pubsub.connection is not None:
                    log.warning("webcall: Redis pub/sub interrupted (%s); resubscribing", type(err).__name__)
                async with self._lock:
                    await self._hang_up()
                await asyncio.sleep(0.5)
                continue
            if message is None:
                continue
            channel = message["channel"]
            call_id = self._keys.call_of_channel(channel.decode() if isinstance(channel, bytes) else str(channel))
            kind = message.get("type")
            if kind == "subscribe":
                await self._subscribed(call_id)
            elif kind == "unsubscribe":
                self._confirmed.discard(call_id)
            elif kind == "message":
                text, event = json.loads(message["data"])
                event_id = EventId.parse(str(text))
                if event_id is not None:
                    for box in list(self._queues.get(call_id, ())):
                        box.put((event_id, event))

    async def _subscribed(self, call_id: str) -> None:
        """Redis confirmed a subscription. A second confirmation for one call means the connection was made again
        (Redis restarted, Sentinel's primary was replaced, the network failed): what was published in between
        reached no one here, so the call's log is handed to its subscribers (the streams skip the events they
        have)."""
        if call_id not in self._confirmed:
            self._confirmed.add(call_id)
            return
        try:
            items = await self._logged(call_id)
        except Exception as err:  # unreachable again: the next subscription catches up
            log.warning("call %s: could not catch up on events after a pub/sub reconnection: %s", call_id, err)
            return
        for box in list(self._queues.get(call_id, ())):
            for item in items:
                box.put(item)

    async def close(self) -> None:
        if self._reader is not None:
            self._reader.cancel()
            await asyncio.gather(self._reader, return_exceptions=True)
        for boxes in self._queues.values():
            for box in boxes:
                box.close()
        self._queues.clear()
        await self._hang_up()


class _RedisEventFeed(EventFeed):
    def __init__(self, hub: _Hub, call_id: str) -> None:
        self._hub = hub
        self._call_id = call_id
        self._box: Mailbox[Item] = Mailbox()
        self._joined = False

    async def start(self) -> None:
        if not self._joined and not self._box.closed:
            try:
                await self._hub.add(self._call_id, self._box)
            except _UNREACHABLE as err:
                raise StoreUnavailable(f"Redis is unreachable: {type(err).__name__}") from err
            self._joined = True

    async def get(self) -> Item | None:
        await self.start()
        return await self._box.get()

    async def close(self) -> None:
        self._box.close()
        if self._joined:
            with contextlib.suppress(Exception):
                await self._hub.remove(self._call_id, self._box)


# -- the store -------------------------------------------------------------------------------------------------------
_TIMEOUTS: dict[str, Any] = {"socket_timeout": 5, "socket_connect_timeout": 2, "health_check_interval": 10}


def _retry() -> Retry:
    return Retry(ExponentialBackoff(cap=0.2, base=0.02), 2)


class RedisStore(Store):
    def __init__(self, url: str, *, prefix: str = "webcall:", client: Client | None = None) -> None:
        self.address = parse_store_url(url)
        self._keys = KeyLayout(prefix)
        self._sentinel: Sentinel | None = None
        self._client: Client = client or self._connect()
        self._clustered = isinstance(self._client, RedisCluster)
        self._checked_not_a_cluster_node = self.address.topology != "server"
        connect = self._cluster_node if self._clustered else self._the_client
        self._hub = _Hub(connect, self._keys, self._whole_log, owns_clients=self._clustered)
        self._next_listening_node = 0
        script = self._client.register_script
        self._hit = script(_HIT)
        self._uncount = script(_UNCOUNT)
        self._acquire = script(_ACQUIRE)
        self._hit_all = script(_HIT_ALL)
        self._hit_all_acquire = script(_HIT_ALL_ACQUIRE)
        self._release = script(_RELEASE)
        self._active = script(_ACTIVE)
        self._outbox_add = script(_OUTBOX_ADD)
        self._outbox_ack = script(_OUTBOX_ACK)
        self._mark_done = script(_MARK_DONE)
        self._dead_take = script(_DEAD_TAKE)
        self._due = script(_DUE)
        self._calls_to_check = script(_CALLS_TO_CHECK)
        self._generation = script(_GENERATION)
        steps = {"clustered": self._clustered}
        queue, log_event = _Part(_QUEUE_EVENT, keys=2, args=2), _Part(_LOG_EVENT, keys=3, args=4)
        keep_context, set_deadline = _Part(_KEEP_CONTEXT, keys=1, args=2), _Part(_SET_DEADLINE, keys=1, args=2)
        self._publish = _Step(self._client, [queue, log_event], **steps)
        keep_new_call = _Part(_KEEP_NEW_CALL, keys=log_event.keys + 2, args=log_event.args + 4)
        self._publish_new_call = _Step(self._client, [queue, keep_new_call, set_deadline], **steps)
        self._remember_call = _Step(self._client, [keep_context, set_deadline], **steps)
        self._group_ready = False
        self._next_claim = 0.0

    def _connect(self) -> Client:
        """A client for the store URL's shape. A pooled connection may be stale (Redis restarted, Sentinel's primary
        replaced): one quick retry on a fresh connection. Every write here is either idempotent or guarded by a
        dedupe mark, so a retried command cannot double an event."""
        address = self.address
        options: dict[str, Any] = {
            **_TIMEOUTS,
            "max_connections": 1024,  # a burst of mints each holds one briefly (the default pool refuses at 100)
            "retry": _retry(),
            "retry_on_error": [RedisConnectionError, RedisTimeoutError],
        }
        if address.topology == "server":
            return aioredis.Redis.from_url(address.url, **options)
        login: dict[str, Any] = {"username": address.username, "password": address.password}
        if address.topology == "cluster":
            nodes = [ClusterNode(host, port) for host, port in address.nodes]
            return RedisCluster(startup_nodes=nodes, ssl=address.tls, **login, **options)
        self._sentinel = Sentinel(
            address.nodes,
            sentinel_kwargs={"ssl": address.tls, "socket_timeout": 2, "socket_connect_timeout": 2},
            ssl=address.tls,
        )
        primary: aioredis.Redis = self._sentinel.master_for(address.service_name, db=address.db, **login, **options)
        return primary

    async def _whole_log(self, call_id: str) -> list[Item]:
        """Every logged event of a call (the hub's catch-up after it subscribed again)."""
        return await self.events_after(call_id, None)

    async def _the_client(self) -> aioredis.Redis:
        """The store's own client (one server, or Sentinel's primary), to listen through."""
        assert isinstance(self._client, aioredis.Redis)
        return self._client

    async def _cluster_node(self) -> aioredis.Redis:
        """A client of one cluster node, the next one each time, to hear the cluster's publications through."""
        assert isinstance(self._client, RedisCluster)
        await self._client.initialize()
        nodes = sorted(self._client.get_nodes(), key=lambda node: node.name)
        node = nodes[self._next_listening_node % len(nodes)]
        self._next_listening_node += 1
        address = self.address
        return aioredis.Redis(
            host=node.host,
            port=int(node.port),
            username=address.username,
            password=address.password,
            ssl=address.tls,
            retry=Retry(NoBackoff(), 0),  # a node that fails is left at once for the next
            **_TIMEOUTS,
        )

    @_unavailable
    async def ping(self) -> None:
        await self._client.ping()
        if not self._checked_not_a_cluster_node:
            # A plain URL at a cluster node answers PING, yet most of its keys live on other nodes.
            cluster = await self._client.info("cluster")
            if str(cluster.get("cluster_enabled", "0")) == "1":
                raise StoreUnavailable(NOT_A_CLUSTER_CLIENT)
            self._checked_not_a_cluster_node = True

    async def close(self) -> None:
        await self._hub.close()
        await self._client.aclose()
        if self._sentinel is not None:
            for sentinel in self._sentinel.sentinels:
                await sentinel.aclose()

    @_unavailable
    async def hit(self, key: str, limit: int, window: float) -> float | None:
        wait = int(await self._hit(keys=[self._keys.admission(key)], args=[limit, _ms(window)]))
        return None if wait < 0 else max(wait / 1000, 0.001)

    @_unavailable
    async def hit_all(self, limits: Sequence[tuple[str, int]], window: float) -> tuple[int, float] | None:
        keys = [self._keys.admission(key) for key, _ in limits]
        args: list[int] = [_ms(window), *(limit for _, limit in limits)]
        refused = await self._hit_all(keys=keys, args=args)
        return _refusal(refused) if refused else None

    @_unavailable
    async def uncount(self, key: str) -> None:
        await self._uncount(keys=[self._keys.admission(key)])

    @_unavailable
    async def hit_all_and_acquire(
        self, limits: Sequence[tuple[str, int]], window: float, slot_id: str, cap: int, ttl: float
    ) -> tuple[tuple[int, float] | None, bool]:
        keys = [*(self._keys.admission(key) for key, _ in limits), self._keys.admission("slots")]
        args: list[int | str] = [_ms(window), *(limit for _, limit in limits), slot_id, cap, _ms(ttl)]
        outcome = await self._hit_all_acquire(keys=keys, args=args)
        if isinstance(outcome, list):  # a limit refused the visit: no slot was taken
            return _refusal(outcome), False
        return None, bool(outcome)

    @_unavailable
    async def remember_call(self, call_id: str, context: dict[str, Any], ttl: float, deadline_at: float) -> None:
        await self._remember_call(
            ([self._keys.call(call_id, "ctx")], [json.dumps(context), _ms(ttl)]),
            ([self._keys.calls("deadlines")], [repr(deadline_at), call_id]),
        )

    @_unavailable
    async def acquire_slot(self, slot_id: str, cap: int, ttl: float) -> bool:
        return bool(await self._acquire(keys=[self._keys.admission("slots")], args=[slot_id, cap, _ms(ttl)]))

    @_unavailable
    async def release_slot(self, slot_id: str) -> bool:
        return bool(await self._release(keys=[self._keys.admission("slots")], args=[slot_id]))

    @_unavailable
    async def active_slots(self) -> int:
        return int(await self._active(keys=[self._keys.admission("slots")]))

    @_unavailable
    async def put_context(self, call_id: str, context: dict[str, Any], ttl: float) -> None:
        await self._client.set(self._keys.call(call_id, "ctx"), json.dumps(context), px=_ms(ttl))

    @_unavailable
    async def get_context(self, call_id: str) -> dict[str, Any] | None:
        raw = await self._client.get(self._keys.call(call_id, "ctx"))
        return json.loads(raw) if raw else None

    @_unavailable
    async def remember_media(self, call_id: str, media: dict[str, Any], ttl: float) -> None:
        await self._client.set(self._keys.call(call_id, "media"), json.dumps(media), px=_ms(ttl))

    @_unavailable
    async def media_of(self, call_id: str) -> dict[str, Any] | None:
        raw = await self._client.get(self._keys.call(call_id, "media"))
        return json.loads(raw) if raw else None

    @_unavailable
    async def use_once(self, key: str, ttl: float) -> bool:
        return bool(await self._client.set(self._keys.once(key), b"1", nx=True, px=_ms(ttl)))

    @_unavailable
    async def forget_once(self, key: str) -> None:
        await self._client.delete(self._keys.once(key))

    # -- outbox ----------------------------------------------------------------------------------------------------
    async def _ensure_group(self) -> None:
        if self._group_ready:
            return
        try:
            await self._client.xgroup_create(self._keys.outbox("stream"), GROUP, id="0", mkstream=True)
        except ResponseError as err:
            if "BUSYGROUP" not in str(err):
                raise
        self._group_ready = True

    @_unavailable
    async def outbox_add(
        self, entry: dict[str, Any], *, dedupe_key: str | None = None, dedupe_ttl: float = 0
    ) -> str | None:
        await self._ensure_group()
        keys = [self._keys.outbox("stream"), self._keys.outbox(f"once:{dedupe_key or '-'}")]
        entry_id = await self._outbox_add(keys=keys, args=[json.dumps(entry), dedupe_key or "", _ms(dedupe_ttl or 1)])
        return _entry_id(entry_id)

    def _queueing(self, entry: dict[str, Any], dedupe_key: str, dedupe_ttl: float) -> Call:
        """_QUEUE_EVENT's keys and arguments for an event's outbox entry."""
        keys = [self._keys.outbox("stream"), self._keys.outbox(f"once:{dedupe_key}")]
        return keys, [json.dumps(entry), _ms(dedupe_ttl)]

    def _logging(
        self, call_id: str, dedupe_key: str, dedupe_ttl: float, event: dict[str, Any], ttl: float
    ) -> tuple[list[str], list[Any]]:
        """_LOG_EVENT's keys and arguments for an event in its call's log."""
        keys = [self._keys.call(call_id, f"seen:{dedupe_key}"), self._keys.call(call_id, "ids")]
        keys.append(self._keys.call(call_id, "log"))
        return keys, [json.dumps(event), _ms(dedupe_ttl), _ms(ttl), self._keys.channel(call_id)]

    @_unavailable
    async def publish_event(
        self,
        entry: dict[str, Any],
        *,
        dedupe_key: str,
        dedupe_ttl: float,
        call_id: str,
        browser_event: dict[str, Any],
        log_ttl: float,
    ) -> str | None:
        await self._ensure_group()
        queued, _ = await self._publish(
            self._queueing(entry, dedupe_key, dedupe_ttl),
            self._logging(call_id, dedupe_key, dedupe_ttl, browser_event, log_ttl),
        )
        return _entry_id(queued)

    @_unavailable
    async def publish_new_call(
        self,
        call: NewCall,
        entry: dict[str, Any],
        *,
        dedupe_key: str,
        dedupe_ttl: float,
        browser_event: dict[str, Any],
        log_ttl: float,
    ) -> str | None:
        await self._ensure_group()
        keys, args = self._logging(call.call_id, dedupe_key, dedupe_ttl, browser_event, log_ttl)
        keys += [self._keys.call(call.call_id, "ctx"), self._keys.call(call.call_id, "media")]
        args += [json.dumps(call.context), _ms(call.ttl), json.dumps(call.media), _ms(call.media_ttl)]
        queued, _, _ = await self._publish_new_call(
            self._queueing(entry, dedupe_key, dedupe_ttl),
            (keys, args),
            ([self._keys.calls("deadlines")], [repr(call.deadline_at), call.call_id]),
        )
        return _entry_id(queued)

    @_unavailable
    async def outbox_take(
        self, consumer: str, count: int, *, block: float, reclaim_after: float
    ) -> list[tuple[str, dict[str, Any]]]:
        try:
            return await self._take(consumer, count, block=block, reclaim_after=reclaim_after)
        except ResponseError as err:
            if "NOGROUP" not in str(err):
                raise
            self._group_ready = False  # Redis lost its data (restarted without persistence): start over
            return []

    async def _take(
        self, consumer: str, count: int, *, block: float, reclaim_after: float
    ) -> list[tuple[str, dict[str, Any]]]:
        await self._ensure_group()
        stream = self._keys.outbox("stream")
        messages: list[Any] = []
        reclaimed: set[Any] = set()
        now = time.monotonic()
        if now >= self._next_claim:  # entries of dead workers: looked for a few times per reclaim period
            self._next_claim = now + min(reclaim_after / 4, 5.0)
            claimed = await self._client.xautoclaim(
                stream, GROUP, consumer, min_idle_time=_ms(reclaim_after), start_id="0-0", count=count
            )
            messages = list(claimed[1]) if claimed else []
            reclaimed = {entry_id for entry_id, _ in messages}
            if len(messages) >= count:
                self._next_claim = now  # more may be waiting
        if not messages:
            answer: Any = await self._client.xreadgroup(
                GROUP, consumer, {stream: ">"}, count=count, block=_ms(block) if block > 0 else None
            )
            for _, items in answer or []:  # RESP2: [[stream, [(id, fields), ...]]]
                messages.extend(items)
        out = []
        for entry_id, fields in messages:
            if not fields:
                continue  # deleted meanwhile
            key = entry_id.decode() if isinstance(entry_id, bytes) else str(entry_id)
            entry = json.loads(fields[b"data"] if b"data" in fields else fields["data"])
            if entry_id in reclaimed:
                entry[RECLAIMED] = True
            out.append((key, entry))
        return out

    @_unavailable
    async def outbox_ack(self, entry_id: str) -> None:
        await self.outbox_ack_all([entry_id])

    @_unavailable
    async def outbox_ack_all(self, entry_ids: Sequence[str]) -> None:
        if entry_ids:
            keys = [self._keys.outbox("stream"), *(self._keys.outbox(f"done:{entry_id}") for entry_id in entry_ids)]
            await self._outbox_ack(keys=keys, args=[GROUP, *entry_ids])

    @_unavailable
    async def outbox_depth(self) -> int:
        return int(await self._client.xlen(self._keys.outbox("stream")))

    @_unavailable
    async def mark_done(self, entry_id: str, part: str, ttl: float) -> None:
        await self._mark_done(keys=[self._keys.outbox(f"done:{entry_id}")], args=[part, _ms(ttl)])

    @_unavailable
    async def done_parts(self, entry_id: str) -> set[str]:
        members = await self._client.smembers(self._keys.outbox(f"done:{entry_id}"))
        return {m.decode() if isinstance(m, bytes) else str(m) for m in members}

    # -- dead letters ----------------------------------------------------------------------------------------------
    @_unavailable
    async def dead_add(self, letter: dict[str, Any]) -> str:
        number = await self._client.incr(self._keys.dead("seq"))
        letter_id = f"dl-{number:012d}"
        await self._client.hset(self._keys.dead("letters"), letter_id, json.dumps(letter))
        return letter_id

    @_unavailable
    async def dead_list(self) -> list[tuple[str, dict[str, Any]]]:
        items = await self._client.hgetall(self._keys.dead("letters"))
        decoded = {(k.decode() if isinstance(k, bytes) else str(k)): json.loads(v) for k, v in items.items()}
        return sorted(decoded.items())

    @_unavailable
    async def dead_count(self) -> int:
        return int(await self._client.hlen(self._keys.dead("letters")))

    @_unavailable
    async def dead_take(self, letter_id: str) -> dict[str, Any] | None:
        raw = await self._dead_take(keys=[self._keys.dead("letters")], args=[letter_id])
        return json.loads(raw) if raw else None

    # -- event log and fan-out -------------------------------------------------------------------------------------
    @_unavailable
    async def events_after(self, call_id: str, seen: EventId | None) -> list[Item]:
        items = await self._client.lrange(self._keys.call(call_id, "log"), 0, -1)
        out = []
        for raw in items:
            text, event = json.loads(raw)
            event_id = EventId.parse(str(text))
            if event_id is not None and event_id.is_after(seen):
                out.append((event_id, event))
        return out

    def subscribe(self, call_id: str) -> EventFeed:
        return _RedisEventFeed(self._hub, call_id)

    # -- deadlines -------------------------------------------------------------------------------------------------
    @_unavailable
    async def deadline_set(self, call_id: str, at: float) -> None:
        await self._client.zadd(self._keys.calls("deadlines"), {call_id: at})

    @_unavailable
    async def deadline_clear(self, call_id: str) -> None:
        await self._client.zrem(self._keys.calls("deadlines"), call_id)

    @_unavailable
    async def deadlines_due(self, now: float, limit: int = 50) -> list[str]:
        ids = await self._due(keys=[self._keys.calls("deadlines")], args=[now, limit])
        return [i.decode() if isinstance(i, bytes) else str(i) for i in ids]

    # -- open calls ------------------------------------------------------------------------------------------------
    @_unavailable
    async def watch_call(self, call_id: str, check_at: float) -> None:
        await self._client.zadd(self._keys.calls("open"), {call_id: check_at}, nx=True)

    @_unavailable
    async def unwatch_call(self, call_id: str) -> None:
        await self._client.zrem(self._keys.calls("open"), call_id)

    @_unavailable
    async def open_calls(self) -> list[str]:
        ids = await self._client.zrange(self._keys.calls("open"), 0, -1)
        return [i.decode() if isinstance(i, bytes) else str(i) for i in ids]

    @_unavailable
    async def calls_to_check(self, due_by: float, limit: int, lease_until: float) -> list[str]:
        keys = [self._keys.calls("open")]
        ids = await self._calls_to_check(keys=keys, args=[repr(due_by), limit, repr(lease_until)])
        return [i.decode() if isinstance(i, bytes) else str(i) for i in ids]

    @_unavailable
    async def check_again(self, call_ids: Sequence[str], at: float) -> None:
        if call_ids:
            await self._client.zadd(self._keys.calls("open"), dict.fromkeys(call_ids, at), xx=True)

    @_unavailable
    async def generation(self) -> str:
        current = await self._generation(keys=[self._keys.calls("generation")], args=[secrets.token_hex(8)])
        return current.decode() if isinstance(current, bytes) else str(current)
