"""
The shared state of a signaling cluster on Redis (``--redis redis://HOST:PORT/DB``).

Keys (all under :data:`PREFIX`):

- ``inst:{id}``: present while instance ``id`` lives (refreshed every second,
  expires after :data:`INSTANCE_TTL`); a name held by a dead instance can be
  taken over once it is gone, so an executor re-registers through another
  instance within seconds.
- ``exec:{name}``: an executor's record (hash: instance, conn, capacity,
  reported sessions, load, registration time, capabilities as JSON), expiring ``heartbeat_timeout``
  after its last heartbeat, so a dead instance leaves no ghost beyond that;
  ``executors``: the set of names.
- ``slots:{name}``: ids of the sessions holding a slot on the executor.
  Reserved by a Lua script that checks the capacity and adds in one step, so
  no interleaving of instances can put more sessions on an executor than its
  capacity; freed with ``SREM``, which is idempotent, so both ends' instances
  may free the same session.
- ``owner:{name}``: the credential that owns an executor name.
- ``quota:{credential}``: the credential's open sessions (hash: session id ->
  instance of the client); entries of dead instances are pruned when counted.
- channel ``to:{id}``: messages for the connections of instance ``id``
  (:func:`~signaling_server.cluster.encode_envelope`). One publisher
  connection sends them in order, which Redis keeps.

Choosing an executor and reserving its slot are one Lua script, so one round
trip and atomic: it applies the standalone registry's rule
(:meth:`Registry.choose <signaling_server.registry.Registry.choose>`: matching
requirements and the token's executors, most free slots, then lowest load,
then earliest registration, avoided executors last). A first version read
every record and then reserved the chosen one: 7x the in-memory pair time and
a twelfth of its burst rate (``benchmarks/bench_redis.py``). Only a refusal
reads the records back, to say why as the standalone server does.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import secrets
import time

import redis.asyncio as aioredis
from redis.exceptions import RedisError

from .cluster import (
    UNAVAILABLE,
    Claim,
    Directory,
    Forward,
    Grant,
    Refresh,
    Release,
    Reserve,
    Survey,
    Unclaim,
    decode_envelope,
    encode_envelope,
)
from .registry import ExecutorRecord, Registry

__all__ = ["RedisDirectory", "PREFIX", "INSTANCE_TTL"]

logger = logging.getLogger(__name__)

#: Prefix of every key and channel.
PREFIX = "remotemedia:"
#: Seconds an instance counts as alive after its last refresh.
INSTANCE_TTL = 5.0
#: Seconds one Redis command may take before the request it serves is refused.
COMMAND_TIMEOUT = 5.0
#: Most connections to Redis from one instance (requests beyond wait for one).
POOL_SIZE = 32
#: Most queued actions written in one pipeline.
BATCH = 512

_CLAIM = """
-- In the standalone hub's order: ownership, then whether the name is in use.
local owner = redis.call('GET', KEYS[2])
if ARGV[2] == '0' and owner and owner ~= ARGV[1] then return 'name_owned' end
local holder = redis.call('HGET', KEYS[1], 'instance')
if holder and redis.call('EXISTS', ARGV[5] .. 'inst:' .. holder) == 1 then return 'name_taken' end
redis.call('DEL', KEYS[1], KEYS[4])
redis.call('HSET', KEYS[1], 'instance', ARGV[3], 'since', ARGV[6], unpack(ARGV, 8))
redis.call('PEXPIRE', KEYS[1], ARGV[4])
redis.call('SADD', KEYS[3], ARGV[7])
if ARGV[1] ~= '' then redis.call('SET', KEYS[2], ARGV[1]) end
return 'ok'
"""

_REFRESH = """
local held = redis.call('HMGET', KEYS[1], 'instance', 'conn')
if held[1] then
  if held[1] ~= ARGV[1] or held[2] ~= ARGV[3] then return 0 end
else
  redis.call('HSET', KEYS[1], 'since', ARGV[4])
end
redis.call('HSET', KEYS[1], 'instance', ARGV[1], unpack(ARGV, 6))
redis.call('PEXPIRE', KEYS[1], ARGV[2])
redis.call('SADD', KEYS[2], ARGV[5])
return 1
"""

_UNCLAIM = """
local held = redis.call('HMGET', KEYS[1], 'instance', 'conn')
if held[1] == ARGV[1] and held[2] == ARGV[2] then
  redis.call('DEL', KEYS[1], KEYS[3])
  redis.call('SREM', KEYS[2], ARGV[3])
end
if ARGV[4] ~= '' and redis.call('GET', KEYS[4]) == ARGV[4] then redis.call('DEL', KEYS[4]) end
return 1
"""

_RESERVE = """
local prefix, req = ARGV[4], cjson.decode(ARGV[5])
local only, avoid = nil, {}
if ARGV[6] ~= '' then
  only = {}
  for _, n in ipairs(cjson.decode(ARGV[6])) do only[n] = true end
end
if req['avoid'] then for _, n in ipairs(req['avoid']) do avoid[n] = true end end
local function has(list, x)
  if type(list) ~= 'table' then return false end
  for _, v in ipairs(list) do if v == x then return true end end
  return false
end
local function before(a, b)
  for i = 1, #a do
    if a[i] ~= b[i] then return a[i] < b[i] end
  end
  return false
end
-- Capabilities are JSON, decoded only when the request asks for one.
local needs_caps = req['gpu'] or req['service'] or req['model']
local best, bestkey
for _, name in ipairs(redis.call('SMEMBERS', KEYS[1])) do
  local f = redis.call('HMGET', prefix .. 'exec:' .. name, 'capacity', 'reported', 'load', 'since', 'instance', 'conn', 'caps')
  if not f[1] then
    redis.call('SREM', KEYS[1], name)  -- expired: its heartbeats stopped
  else
    local free = tonumber(f[1]) - math.max(redis.call('SCARD', prefix .. 'slots:' .. name), tonumber(f[2]) or 0)
    local ok = free > 0
    if ok and req['executor'] and req['executor'] ~= name then ok = false end
    if ok and only and not only[name] then ok = false end
    if ok and needs_caps then
      local caps = cjson.decode(f[7])
      if req['gpu'] and caps['gpu'] ~= true then ok = false end
      if ok and req['service'] and not has(caps['services'], req['service']) then ok = false end
      if ok and req['model'] and not has(caps['models'], req['model']) then ok = false end
    end
    if ok then
      local key = {avoid[name] and 1 or 0, -free, tonumber(f[3]) or 0, tonumber(f[4]) or 0}
      if not bestkey or before(key, bestkey) then
        best, bestkey = {name, f[5], f[6], f[7]}, key
      end
    end
  end
end
if not best then return {'none'} end
local quota = tonumber(ARGV[2])
if quota >= 0 then
  local entries = redis.call('HGETALL', KEYS[2])
  local held = 0
  for i = 1, #entries, 2 do
    if redis.call('EXISTS', prefix .. 'inst:' .. entries[i + 1]) == 1 then
      held = held + 1
    else
      redis.call('HDEL', KEYS[2], entries[i])
    end
  end
  if held >= quota then return {'quota'} end
  redis.call('HSET', KEYS[2], ARGV[1], ARGV[3])
end
redis.call('SADD', prefix .. 'slots:' .. best[1], ARGV[1])
return {'ok', best[1], best[2], best[3], best[4]}
"""


def _fields(record: dict) -> list:
    """An executor's record (:meth:`Hub._shared_record`) as hash fields and values, flat."""
    return [
        "conn", record["conn"], "capacity", record["capacity"], "reported", record["reported"],
        "load", repr(float(record["load"])), "caps", json.dumps(record["capabilities"]),
    ]


class RedisDirectory(Directory):
    """:class:`~signaling_server.cluster.Directory` on one Redis server (see the module docstring)."""

    def __init__(self, url: str, *, heartbeat_timeout: float, instance: str | None = None) -> None:
        self.url = url
        self.instance = instance or secrets.token_hex(6)
        self._record_ttl_ms = int(heartbeat_timeout * 1000)
        options = {"decode_responses": True, "socket_connect_timeout": COMMAND_TIMEOUT}
        # A bounded pool: a burst of pairings queues for a connection rather than opening hundreds.
        pool = aioredis.BlockingConnectionPool.from_url(
            url, max_connections=POOL_SIZE, timeout=COMMAND_TIMEOUT, socket_timeout=COMMAND_TIMEOUT, **options
        )
        self._redis = aioredis.Redis(connection_pool=pool)
        # Subscribed reads block for as long as no one sends: no read timeout there.
        self._bus = aioredis.Redis.from_url(url, **options)
        self._claim = self._redis.register_script(_CLAIM)
        self._refresh = self._redis.register_script(_REFRESH)
        self._unclaim = self._redis.register_script(_UNCLAIM)
        self._reserve = self._redis.register_script(_RESERVE)
        self._queue: asyncio.Queue = asyncio.Queue()
        self._tasks: list[asyncio.Task] = []
        self._problem: str | None = None
        self._closing = False

    def _key(self, *parts: str) -> str:
        return PREFIX + ":".join(parts)

    # -- lifecycle -----------------------------------------------------------------

    async def start(self, deliver, lost=None) -> None:
        self._lost = lost or (lambda action: None)
        self._tasks = [
            asyncio.create_task(self._listen(deliver), name="redis-listen"),
            asyncio.create_task(self._write_forever(), name="redis-write"),
        ]
        await self.tick()
        if self._problem is not None:
            logger.warning("Redis at %s is unreachable (%s); pairings are refused until it is back", self.url, self._problem)

    async def close(self) -> None:
        # What the last connections left behind (Unclaim, Release, a bye) goes out first, briefly:
        # whatever does not is cleaned up anyway once this instance's key is gone.
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(self.flush(), COMMAND_TIMEOUT)
        # The tasks end by themselves: redis-py can swallow a cancellation
        # that lands inside a command, so cancel() alone may never end them.
        self._closing = True
        self._queue.put_nowait(None)
        done, pending = await asyncio.wait(self._tasks, timeout=COMMAND_TIMEOUT)
        for task in pending:
            task.cancel()
        with contextlib.suppress(RedisError, OSError):
            await self._redis.delete(self._key("inst", self.instance))
        await self._redis.aclose()
        await self._bus.aclose()

    async def tick(self) -> None:
        try:
            await self._redis.set(self._key("inst", self.instance), "1", px=int(INSTANCE_TTL * 1000))
        except (RedisError, OSError) as exc:
            self._trouble(exc)
        else:
            if self._problem is not None:
                logger.warning("Redis at %s is reachable again; pairings resume", self.url)
            self._problem = None

    def health(self) -> tuple[bool, str]:
        if self._problem is None:
            return True, ""
        return False, f"Redis at {self.url} is unreachable ({self._problem}): new pairings are refused"

    def _trouble(self, exc: BaseException) -> None:
        if self._problem is None:
            logger.warning("Redis at %s failed: %s; refusing new pairings until it answers", self.url, exc)
        self._problem = str(exc) or type(exc).__name__

    # -- requests that answer ----------------------------------------------------------

    async def claim(self, action: Claim) -> str:
        keys = [
            self._key("exec", action.name),
            self._key("owner", action.name),
            self._key("executors"),
            self._key("slots", action.name),
        ]
        args = [
            action.owner or "", "1" if action.named else "0", self.instance,
            self._record_ttl_ms, PREFIX, repr(time.time()), action.name, *_fields(action.record),
        ]
        try:
            return await self._claim(keys=keys, args=args)
        except (RedisError, OSError) as exc:
            self._trouble(exc)
            return UNAVAILABLE

    async def reserve(self, action: Reserve) -> Grant | tuple[str, str]:
        keys = [self._key("executors"), self._key("quota", action.credential)]
        quota = -1 if action.quota is None else action.quota
        only = "" if action.only is None else json.dumps(list(action.only))
        args = [action.session, quota, self.instance, PREFIX, json.dumps(action.requirements), only]
        try:
            outcome = await self._reserve(keys=keys, args=args)
            if outcome[0] == "ok":
                _, name, instance, conn, caps = outcome
                return Grant(name, instance, conn, json.loads(caps))
            if outcome[0] == "quota":
                return (
                    "quota_exceeded",
                    f"this token may hold {action.quota} open sessions at once, over all its connections, "
                    "and holds them; close one first, or ask for a token with a larger quota",
                )
            registry = await self._snapshot()  # only to say why
            return "no_executor", registry.why_none(action.requirements, only=action.only)
        except (RedisError, OSError) as exc:
            self._trouble(exc)
            return (
                UNAVAILABLE,
                f"the signaling cluster's shared registry (Redis) is unreachable ({exc}); sessions already "
                "paired go on; retry shortly",
            )

    async def survey(self, action: Survey) -> list[ExecutorRecord] | tuple[str, str]:
        try:
            return list((await self._snapshot()).executors.values())
        except (RedisError, OSError) as exc:
            self._trouble(exc)
            return (
                UNAVAILABLE,
                f"the signaling cluster's shared registry (Redis) is unreachable ({exc}); retry shortly",
            )

    async def _snapshot(self) -> Registry:
        """Every live executor as a standalone registry sees one (to explain a refusal, and for discovery)."""
        names = sorted(await self._redis.smembers(self._key("executors")))
        async with self._redis.pipeline(transaction=False) as pipe:
            for name in names:
                pipe.hgetall(self._key("exec", name))
                pipe.scard(self._key("slots", name))
            replies = await pipe.execute()
        registry, gone, rows = Registry(), [], []
        for name, fields, used in zip(names, replies[::2], replies[1::2]):
            if not fields or "capacity" not in fields:
                gone.append(name)
                continue
            rows.append((float(fields.get("since", 0)), name, fields, used))
        for _, name, fields, used in sorted(rows):
            executor = ExecutorRecord.announced(
                name,
                fields["conn"],
                int(fields["capacity"]),
                json.loads(fields.get("caps", "{}")),
                load=float(fields.get("load", 0.0)),
                reported_sessions=max(int(fields.get("reported", 0)), used),
            )
            registry.add_executor(executor)
        if gone:  # expired records: tidy the index
            await self._redis.srem(self._key("executors"), *gone)
        return registry

    # -- actions in order ------------------------------------------------------------

    def submit(self, action) -> None:
        self._queue.put_nowait(action)

    async def flush(self) -> None:
        await self._queue.join()

    async def _write_forever(self) -> None:
        while True:
            batch = [await self._queue.get()]
            while len(batch) < BATCH and not self._queue.empty():
                batch.append(self._queue.get_nowait())
            if None in batch:  # close()
                return
            try:
                refreshes = []
                async with self._redis.pipeline(transaction=False) as pipe:
                    for action in batch:
                        if isinstance(action, Refresh):
                            refreshes.append((len(pipe.command_stack), action))
                        await self._write(pipe, action)
                    replies = await pipe.execute()
                for index, action in refreshes:
                    if replies[index] == 0:  # the name is another connection's now
                        self._lost(action)
            except (RedisError, OSError) as exc:
                # Lost: relayed messages of sessions being set up (their clients
                # time out and pair again); slots free again when records expire.
                self._trouble(exc)
                logger.warning("Redis write of %d actions failed: %s", len(batch), exc)
            finally:
                for _ in batch:
                    self._queue.task_done()

    async def _write(self, pipe, action) -> None:
        if isinstance(action, Forward):
            pipe.publish(self._key("to", action.instance), encode_envelope(self.instance, action))
        elif isinstance(action, Release):
            pipe.srem(self._key("slots", action.executor), action.session)
            if action.credential:
                pipe.hdel(self._key("quota", action.credential), action.session)
        elif isinstance(action, Refresh):
            keys = [self._key("exec", action.name), self._key("executors")]
            args = [self.instance, self._record_ttl_ms, action.conn, repr(time.time()), action.name, *_fields(action.record)]
            await self._refresh(keys=keys, args=args, client=pipe)
        elif isinstance(action, Unclaim):
            keys = [
                self._key("exec", action.name), self._key("executors"),
                self._key("slots", action.name), self._key("owner", action.name),
            ]
            owner = (action.owner or "") if action.disown else ""
            await self._unclaim(keys=keys, args=[self.instance, action.conn, action.name, owner], client=pipe)
        else:
            raise TypeError(f"not a directory action: {action!r}")

    # -- delivery --------------------------------------------------------------------

    async def _listen(self, deliver) -> None:
        channel = self._key("to", self.instance)
        while not self._closing:
            pubsub = self._bus.pubsub(ignore_subscribe_messages=True)
            try:
                await pubsub.subscribe(channel)
                while not self._closing:
                    message = await pubsub.get_message(timeout=1.0)
                    if message is None:
                        continue
                    try:
                        envelope = decode_envelope(message["data"])
                    except ValueError:
                        logger.warning("ignored a malformed message on %s", channel)
                        continue
                    deliver(envelope)
            except (RedisError, OSError) as exc:
                self._trouble(exc)
                await asyncio.sleep(0.5)  # then subscribe again: Redis may be back
            finally:
                with contextlib.suppress(RedisError, OSError):
                    await pubsub.aclose()
