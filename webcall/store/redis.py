"""Redis store: several workers (or machines) share limits, slots, contexts, the outbox and browser events.

Every read-modify-write is one Lua script or one atomic command, so workers never race. Times that must agree
across machines (slot leases) come from Redis' own clock. The outbox is a Redis Stream with one consumer group:
an entry taken by a worker that died stays pending and is claimed by another (``XAUTOCLAIM``). Browser events are
published on one channel per call; each worker holds one pub/sub connection and fans out to its own streams.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections.abc import Callable, Coroutine, Sequence
from functools import wraps
from typing import Any, ParamSpec, TypeVar

import redis.asyncio as aioredis
from redis.asyncio.retry import Retry
from redis.backoff import ExponentialBackoff
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import ResponseError
from redis.exceptions import TimeoutError as RedisTimeoutError

from ..errors import StoreUnavailable
from .base import RECLAIMED, Item, Mailbox, NewCall, Store, Subscription

log = logging.getLogger("webcall.store")

P = ParamSpec("P")
R = TypeVar("R")
GROUP = "webcall"

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
_OUTBOX_ADD = """
if ARGV[2] ~= '' then
  if not redis.call('SET', KEYS[2], '1', 'NX', 'PX', ARGV[3]) then return false end
end
return redis.call('XADD', KEYS[1], '*', 'data', ARGV[1])
"""
_PUBLISH = """
if not redis.call('SET', KEYS[2], '1', 'NX', 'PX', ARGV[2]) then return false end
local id = redis.call('XADD', KEYS[1], '*', 'data', ARGV[1])
local seq = redis.call('INCR', KEYS[3])
redis.call('PEXPIRE', KEYS[3], ARGV[4])
local item = cjson.encode({seq, cjson.decode(ARGV[3])})
redis.call('RPUSH', KEYS[4], item)
redis.call('PEXPIRE', KEYS[4], ARGV[4])
redis.call('PUBLISH', KEYS[5], item)
return id
"""
# The writes below are scripts rather than MULTI/EXEC pipelines: one reply to read instead of one per command.
_REMEMBER_CALL = """
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
redis.call('ZADD', KEYS[2], ARGV[3], ARGV[4])
"""
# A new call: its context, deadline and media record, then _PUBLISH (keys and arguments 1-5 and 1-4) for its event.
_PUBLISH_NEW_CALL = (
    """
redis.call('SET', KEYS[6], ARGV[5], 'PX', ARGV[6])
redis.call('ZADD', KEYS[7], ARGV[7], ARGV[8])
redis.call('SET', KEYS[8], ARGV[9], 'PX', ARGV[10])
"""
    + _PUBLISH
)
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


def _unavailable(fn: Callable[P, Coroutine[Any, Any, R]]) -> Callable[P, Coroutine[Any, Any, R]]:
    @wraps(fn)
    async def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        try:
            return await fn(*args, **kwargs)
        except (RedisConnectionError, RedisTimeoutError, OSError) as err:
            raise StoreUnavailable(f"Redis is unreachable: {type(err).__name__}") from err

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


class _Hub:
    """One pub/sub connection per worker, fanned out to every local subscriber of a call's channel."""

    def __init__(self, client: aioredis.Redis, prefix: str) -> None:
        self._client = client
        self._prefix = prefix
        self._queues: dict[str, set[Mailbox]] = {}
        self._pubsub: Any = None
        self._reader: asyncio.Task[None] | None = None
        self._lock = asyncio.Lock()

    def channel(self, call_id: str) -> str:
        return f"{self._prefix}ch:{call_id}"

    async def add(self, call_id: str, queue: Mailbox) -> None:
        async with self._lock:
            if self._pubsub is None:
                self._pubsub = self._client.pubsub(ignore_subscribe_messages=True)
            first = call_id not in self._queues
            self._queues.setdefault(call_id, set()).add(queue)
            if first:
                await self._pubsub.subscribe(self.channel(call_id))
            if self._reader is None or self._reader.done():
                self._reader = asyncio.create_task(self._read(), name="webcall-redis-pubsub")

    async def remove(self, call_id: str, queue: Mailbox) -> None:
        async with self._lock:
            queues = self._queues.get(call_id)
            if queues is None:
                return
            queues.discard(queue)
            if not queues:
                del self._queues[call_id]
                with contextlib.suppress(Exception):
                    await self._pubsub.unsubscribe(self.channel(call_id))

    async def _read(self) -> None:
        prefix = f"{self._prefix}ch:"
        while True:
            try:
                message = await self._pubsub.get_message(timeout=1.0)
            except asyncio.CancelledError:
                raise
            except Exception as err:
                log.warning("webcall: Redis pub/sub interrupted (%s); resubscribing", type(err).__name__)
                await asyncio.sleep(0.5)
                with contextlib.suppress(Exception):
                    channels = [self.channel(c) for c in self._queues]
                    if channels:
                        await self._pubsub.subscribe(*channels)
                continue
            if message is None or message.get("type") != "message":
                continue
            channel = message["channel"]
            channel = channel.decode() if isinstance(channel, bytes) else str(channel)
            seq, event = json.loads(message["data"])
            for box in list(self._queues.get(channel[len(prefix) :], ())):
                box.put((int(seq), event))

    async def close(self) -> None:
        if self._reader is not None:
            self._reader.cancel()
            await asyncio.gather(self._reader, return_exceptions=True)
        for boxes in self._queues.values():
            for box in boxes:
                box.close()
        self._queues.clear()
        if self._pubsub is not None:
            with contextlib.suppress(Exception):
                await self._pubsub.aclose()


class _RedisSubscription(Subscription):
    def __init__(self, hub: _Hub, call_id: str) -> None:
        self._hub = hub
        self._call_id = call_id
        self._box = Mailbox()
        self._joined = False

    async def start(self) -> None:
        if not self._joined and not self._box.closed:
            self._joined = True
            try:
                await self._hub.add(self._call_id, self._box)
            except (RedisConnectionError, RedisTimeoutError, OSError) as err:
                raise StoreUnavailable("Redis is unreachable") from err

    async def get(self) -> Item | None:
        await self.start()
        return await self._box.get()

    async def close(self) -> None:
        self._box.close()
        if self._joined:
            with contextlib.suppress(Exception):
                await self._hub.remove(self._call_id, self._box)


class RedisStore(Store):
    def __init__(self, url: str, *, prefix: str = "webcall:", client: aioredis.Redis | None = None) -> None:
        # A pooled connection may be stale (Redis restarted): one quick retry on a fresh connection. Every write
        # here is either idempotent or guarded by a dedupe key, so a retried command cannot double an event.
        self._client = client or aioredis.Redis.from_url(
            url,
            socket_timeout=5,
            socket_connect_timeout=2,
            health_check_interval=10,
            max_connections=1024,  # a burst of mints each holds one briefly (the default pool refuses at 100)
            retry=Retry(ExponentialBackoff(cap=0.2, base=0.02), 2),
            retry_on_error=[RedisConnectionError, RedisTimeoutError],
        )
        self._p = prefix
        self._hub = _Hub(self._client, prefix)
        self._hit = self._client.register_script(_HIT)
        self._uncount = self._client.register_script(_UNCOUNT)
        self._acquire = self._client.register_script(_ACQUIRE)
        self._hit_all = self._client.register_script(_HIT_ALL)
        self._hit_all_acquire = self._client.register_script(_HIT_ALL_ACQUIRE)
        self._release = self._client.register_script(_RELEASE)
        self._active = self._client.register_script(_ACTIVE)
        self._outbox_add = self._client.register_script(_OUTBOX_ADD)
        self._publish = self._client.register_script(_PUBLISH)
        self._remember_call = self._client.register_script(_REMEMBER_CALL)
        self._publish_new_call = self._client.register_script(_PUBLISH_NEW_CALL)
        self._outbox_ack = self._client.register_script(_OUTBOX_ACK)
        self._mark_done = self._client.register_script(_MARK_DONE)
        self._dead_take = self._client.register_script(_DEAD_TAKE)
        self._due = self._client.register_script(_DUE)
        self._group_ready = False
        self._next_claim = 0.0

    def _k(self, name: str) -> str:
        return self._p + name

    def _context_key(self, call_id: str) -> str:
        return self._k(f"ctx:{call_id}")

    @_unavailable
    async def ping(self) -> None:
        await self._client.ping()

    async def close(self) -> None:
        await self._hub.close()
        await self._client.aclose()

    @_unavailable
    async def hit(self, key: str, limit: int, window: float) -> float | None:
        wait = int(await self._hit(keys=[self._k(key)], args=[limit, _ms(window)]))
        return None if wait < 0 else max(wait / 1000, 0.001)

    @_unavailable
    async def hit_all(self, limits: Sequence[tuple[str, int]], window: float) -> tuple[int, float] | None:
        keys = [self._k(key) for key, _ in limits]
        args: list[int] = [_ms(window), *(limit for _, limit in limits)]
        refused = await self._hit_all(keys=keys, args=args)
        return _refusal(refused) if refused else None

    @_unavailable
    async def uncount(self, key: str) -> None:
        await self._uncount(keys=[self._k(key)])

    @_unavailable
    async def hit_all_and_acquire(
        self, limits: Sequence[tuple[str, int]], window: float, slot_id: str, cap: int, ttl: float
    ) -> tuple[tuple[int, float] | None, bool]:
        keys = [*(self._k(key) for key, _ in limits), self._k("slots")]
        args: list[int | str] = [_ms(window), *(limit for _, limit in limits), slot_id, cap, _ms(ttl)]
        outcome = await self._hit_all_acquire(keys=keys, args=args)
        if isinstance(outcome, list):  # a limit refused the visit: no slot was taken
            return _refusal(outcome), False
        return None, bool(outcome)

    @_unavailable
    async def remember_call(self, call_id: str, context: dict[str, Any], ttl: float, deadline_at: float) -> None:
        keys = [self._context_key(call_id), self._k("deadlines")]
        await self._remember_call(keys=keys, args=[json.dumps(context), _ms(ttl), repr(deadline_at), call_id])

    @_unavailable
    async def acquire_slot(self, slot_id: str, cap: int, ttl: float) -> bool:
        return bool(await self._acquire(keys=[self._k("slots")], args=[slot_id, cap, _ms(ttl)]))

    @_unavailable
    async def release_slot(self, slot_id: str) -> bool:
        return bool(await self._release(keys=[self._k("slots")], args=[slot_id]))

    @_unavailable
    async def active_slots(self) -> int:
        return int(await self._active(keys=[self._k("slots")]))

    @_unavailable
    async def put_context(self, call_id: str, context: dict[str, Any], ttl: float) -> None:
        await self._client.set(self._context_key(call_id), json.dumps(context), px=_ms(ttl))

    @_unavailable
    async def get_context(self, call_id: str) -> dict[str, Any] | None:
        raw = await self._client.get(self._context_key(call_id))
        return json.loads(raw) if raw else None

    @_unavailable
    async def use_once(self, key: str, ttl: float) -> bool:
        return bool(await self._client.set(self._k(f"once:{key}"), b"1", nx=True, px=_ms(ttl)))

    @_unavailable
    async def forget_once(self, key: str) -> None:
        await self._client.delete(self._k(f"once:{key}"))

    # -- outbox ----------------------------------------------------------------------------------------------------
    async def _ensure_group(self) -> None:
        if self._group_ready:
            return
        try:
            await self._client.xgroup_create(self._k("outbox"), GROUP, id="0", mkstream=True)
        except ResponseError as err:
            if "BUSYGROUP" not in str(err):
                raise
        self._group_ready = True

    @_unavailable
    async def outbox_add(
        self, entry: dict[str, Any], *, dedupe_key: str | None = None, dedupe_ttl: float = 0
    ) -> str | None:
        await self._ensure_group()
        dedupe = self._k(f"once:{dedupe_key}") if dedupe_key else self._k("once:-")
        entry_id = await self._outbox_add(
            keys=[self._k("outbox"), dedupe], args=[json.dumps(entry), dedupe_key or "", _ms(dedupe_ttl or 1)]
        )
        return _entry_id(entry_id)

    def _publication(
        self, entry: dict[str, Any], dedupe_key: str, dedupe_ttl: float, call_id: str, event: dict[str, Any], ttl: float
    ) -> tuple[list[str], list[str | int]]:
        """_PUBLISH's keys and arguments."""
        keys = [
            self._k("outbox"),
            self._k(f"once:{dedupe_key}"),
            self._k(f"seq:{call_id}"),
            self._k(f"log:{call_id}"),
            self._hub.channel(call_id),
        ]
        return keys, [json.dumps(entry), _ms(dedupe_ttl), json.dumps(event), _ms(ttl)]

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
        keys, args = self._publication(entry, dedupe_key, dedupe_ttl, call_id, browser_event, log_ttl)
        return _entry_id(await self._publish(keys=keys, args=args))

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
        keys, args = self._publication(entry, dedupe_key, dedupe_ttl, call.call_id, browser_event, log_ttl)
        media_key = self._context_key(f"media:{call.call_id}")  # where remember_media keeps it (put_context)
        keys += [self._context_key(call.call_id), self._k("deadlines"), media_key]
        args += [json.dumps(call.context), _ms(call.ttl), repr(call.deadline_at), call.call_id]
        args += [json.dumps(call.media), _ms(call.media_ttl)]
        return _entry_id(await self._publish_new_call(keys=keys, args=args))

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
        stream = self._k("outbox")
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
            keys = [self._k("outbox"), *(self._k(f"done:{entry_id}") for entry_id in entry_ids)]
            await self._outbox_ack(keys=keys, args=[GROUP, *entry_ids])

    @_unavailable
    async def outbox_depth(self) -> int:
        return int(await self._client.xlen(self._k("outbox")))

    @_unavailable
    async def mark_done(self, entry_id: str, part: str, ttl: float) -> None:
        await self._mark_done(keys=[self._k(f"done:{entry_id}")], args=[part, _ms(ttl)])

    @_unavailable
    async def done_parts(self, entry_id: str) -> set[str]:
        members = await self._client.smembers(self._k(f"done:{entry_id}"))
        return {m.decode() if isinstance(m, bytes) else str(m) for m in members}

    # -- dead letters ----------------------------------------------------------------------------------------------
    @_unavailable
    async def dead_add(self, letter: dict[str, Any]) -> str:
        number = await self._client.incr(self._k("dead:seq"))
        letter_id = f"dl-{number:012d}"
        await self._client.hset(self._k("dead"), letter_id, json.dumps(letter))
        return letter_id

    @_unavailable
    async def dead_list(self) -> list[tuple[str, dict[str, Any]]]:
        items = await self._client.hgetall(self._k("dead"))
        decoded = {(k.decode() if isinstance(k, bytes) else str(k)): json.loads(v) for k, v in items.items()}
        return sorted(decoded.items())

    @_unavailable
    async def dead_take(self, letter_id: str) -> dict[str, Any] | None:
        raw = await self._dead_take(keys=[self._k("dead")], args=[letter_id])
        return json.loads(raw) if raw else None

    # -- event log and fan-out -------------------------------------------------------------------------------------
    @_unavailable
    async def events_after(self, call_id: str, seq: int) -> list[tuple[int, dict[str, Any]]]:
        items = await self._client.lrange(self._k(f"log:{call_id}"), 0, -1)
        out = []
        for raw in items:
            number, event = json.loads(raw)
            if int(number) > seq:
                out.append((int(number), event))
        return out

    def subscribe(self, call_id: str) -> Subscription:
        return _RedisSubscription(self._hub, call_id)

    # -- deadlines -------------------------------------------------------------------------------------------------
    @_unavailable
    async def deadline_set(self, call_id: str, at: float) -> None:
        await self._client.zadd(self._k("deadlines"), {call_id: at})

    @_unavailable
    async def deadline_clear(self, call_id: str) -> None:
        await self._client.zrem(self._k("deadlines"), call_id)

    @_unavailable
    async def deadlines_due(self, now: float, limit: int = 50) -> list[str]:
        ids = await self._due(keys=[self._k("deadlines")], args=[now, limit])
        return [i.decode() if isinstance(i, bytes) else str(i) for i in ids]
