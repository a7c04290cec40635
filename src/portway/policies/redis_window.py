"""Rate limit counts shared by every worker and replica through Redis, off the request path.

Why this shape: a rate limit runs for every request on the event loop, and a Redis round trip per
request would put Redis's latency (and its outages) into every answer. So the decision stays
``LocalWindow.hit``, purely in memory, and Redis is only *synchronised with* in the background:

* Every key's entry (the ``LocalWindow`` list ``[window, previous, current]``) carries six more
  ints (``new_entry``): the window they refer to, how many of this instance's own hits of the
  previous and current window have been added to Redis ("pushed"), the last totals read from
  Redis for those windows, and whether the previous window's total is final. Keeping them in the
  entry means they are forgotten with the key (``max_keys`` bounds both) and cost no extra lookup.
* ``shared(key, entry)`` (called by ``hit`` for every request) answers the counts of everybody
  else: ``total - pushed`` for each window, never negative. This instance's own hits, pushed or
  not, are already in the entry's own counts. It also marks the key for the next sync.
* A task on the worker's loop wakes every ``sync_interval`` and, for the keys used since the last
  sync (at most ``_BATCH_KEYS`` per pipeline, ``_MAX_BATCHES`` pipelines per tick; the rest wait
  for the next tick), sends one pipeline (``transaction=False``): ``INCRBY
  {prefix}:rl:{policy}:{window}:{key} <own - pushed>`` + ``EXPIRE`` (2 windows + 2 s) where there
  are unpushed hits, else a ``GET``; the previous window is read too until a read made after every
  instance's last push of it (``sync_interval * 2 + timeout`` after its end) made it final. Keys
  tracked but not used are not refreshed: their data only matters when they are hit again, and
  then they are synced at the next tick.

Over-admission bound. An instance admits while ``own + seen_others < limit``. What it has seen of
another instance is at most one sync old on each side (the other pushes hits within ``s + d`` of
admitting them, ``s`` = ``sync_interval``, ``d`` = a sync's duration, bounded by ``timeout``; this
one reads within ``s + d``). Take the last request admitted in a window: at that moment the true
total was below ``limit`` plus what this instance had not seen, so::

    admitted per window <= limit + hits the *other* instances admitted in any 2 * (s + d)

With ``W`` instances each admitting at rate ``r`` that is ``limit + (W - 1) * r * 2 * (s + d)``;
the sliding weight of the previous window does not change the argument (both windows lag alike).
A key no instance has synced yet (all of them see it first within one tick) is the worst case:
up to ``W * limit`` in its first ``s + d``.

Redis down or slow. Every pipeline (connect included) is bounded by ``timeout`` (socket timeouts
and ``asyncio.timeout``); redis-py's own retries are off, this task retries with a jittered
exponential back-off (``sync_interval`` doubling to 2 s). Meanwhile requests are decided as
before: own counts always, others' last known totals for the windows they were read for, which
roll into the previous window and then out (so after two windows the limit is purely local).
Unpushed hits stay in the entries (bounded by ``max_keys``; a key evicted from the window loses
them) and are pushed when Redis answers again. The outage and the recovery are each logged once
on ``portway.policies``; failed syncs are counted in ``state()``.

Redis losing the counts (restarted without persistence, failover to an empty replica, flushed):
each pipeline also does ``SET {prefix}:rl:epoch <random> NX`` + ``GET`` of it. A value other than
the one seen before means the data went away: every instance forgets what it had pushed and pushes
its own counts of the current and previous window again, so the totals converge back to the sum of
everybody's hits. (A total smaller than what this instance pushed means the same for one key.) A
pipeline that timed out may still have been applied; its hits are pushed again, erring towards
refusing rather than admitting. After a failure nothing but ``PING`` is sent until Redis answers
one: a hung server may still execute every pipeline queued to it, and only the first is sent.

Costs and limits: one pooled connection per redis-backed rate limit per worker; the epoch key
has no TTL (one small key per prefix); hits admitted in the last interval before ``close`` (a
reload replacing the policy, a worker stopping) are not pushed.

Why ``INCRBY`` on one counter and not a hash of per-instance counts (``HSET`` of absolute counts is
idempotent and attributes exactly): reading a hash costs one value per instance, so ``W`` instances
reading each other cost ``W**2`` per key and tick; one counter costs ``W``.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import math
import random
import secrets
import time
from itertools import islice
from typing import Any, Final
from urllib.parse import urlsplit

from redis.asyncio import ConnectionPool, Redis
from redis.asyncio.connection import AbstractConnection
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff

from portway.config.policies import RedisConfig
from portway.policies.window import LocalWindow

logger = logging.getLogger("portway.policies")

# The fields RedisWindow appends to a LocalWindow entry [window, previous, current].
_SYNCED: Final = 3  # the window index the fields below call "current"
_PUSHED_PREV: Final = 4  # own hits of that window - 1 added to Redis
_PUSHED_CUR: Final = 5  # own hits of that window added to Redis
_TOTAL_PREV: Final = 6  # last total read from Redis for that window - 1
_TOTAL_CUR: Final = 7  # last total read from Redis for that window
_SETTLED: Final = 8  # 1: the previous window's total was read after it could still grow

_BATCH_KEYS: Final = 500  # keys per pipeline (at most 4 commands each, plus 2)
_MAX_BATCHES: Final = 20  # pipelines per tick; keys beyond wait for the next tick
_MAX_KEY_BYTES: Final = 200  # longer keys are named by their SHA-256
_BACKOFF_CAP: Final = 2.0  # seconds between attempts while Redis does not answer
_IDLE_CHECK: Final = 1.0  # with nothing to sync, still check Redis (and the epoch) this often


class _OwningPool(ConnectionPool):
    """A pool that keeps every connection it made, so that the window can close them all itself.

    ``ConnectionPool.disconnect`` closes them in tasks made by ``gather``: cancelled before they
    started, they close nothing, and the sockets stayed open until the garbage collector found
    them. The pool also holds the connections in use only weakly. The window replaces its pool
    after every failure (``RedisWindow._disconnect``), so ``made`` stays short.
    """

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.made: list[AbstractConnection] = []

    def make_connection(self) -> AbstractConnection:
        connection: AbstractConnection = super().make_connection()  # type: ignore[no-untyped-call]
        self.made.append(connection)
        return connection


def _align(entry: list[int]) -> None:
    """Move the Redis fields to the window the entry's own counts are in (``LocalWindow.hit``
    rolls those): the current window becomes the previous one, older data is dropped."""
    window = entry[0]
    synced = entry[_SYNCED]
    if synced == window:
        return
    if synced == window - 1:
        entry[_PUSHED_PREV] = entry[_PUSHED_CUR]
        entry[_TOTAL_PREV] = entry[_TOTAL_CUR]
    else:
        entry[_PUSHED_PREV] = entry[_TOTAL_PREV] = 0
    entry[_PUSHED_CUR] = entry[_TOTAL_CUR] = entry[_SETTLED] = 0
    entry[_SYNCED] = window


def redis_key_name(key: str) -> bytes:
    """The part of a Redis key naming a rate limit key: the key itself (Redis keys are binary
    safe), or ``sha256:<hex>`` when it is longer than 200 bytes, so that a client-chosen header
    value cannot make keys (and Redis's memory) arbitrarily large."""
    raw = key.encode("utf-8", "surrogatepass")
    if len(raw) > _MAX_KEY_BYTES:
        return b"sha256:" + hashlib.sha256(raw).hexdigest().encode("ascii")
    return raw


def display_url(url: str) -> str:
    """The Redis URL without credentials, for logs."""
    parts = urlsplit(url)
    host = parts.netloc.rpartition("@")[2]
    return f"{parts.scheme}://{host}{parts.path}"


class _Planned:
    """One command of a sync pipeline and what its answer updates."""

    __slots__ = ("delta", "entry", "index", "key", "wrote")

    def __init__(self, key: str, entry: list[int], index: int, delta: int, wrote: bool) -> None:
        self.key = key
        self.entry = entry
        self.index = index  # absolute window index
        self.delta = delta  # own hits added by this command (INCRBY), 0 for a GET
        self.wrote = wrote


class RedisWindow(LocalWindow):
    """A ``LocalWindow`` whose keys also count the hits of other workers and replicas, exchanged
    with Redis by a background task on ``loop``; ``hit`` never waits for it."""

    store = "redis"

    def __init__(
        self,
        name: str,
        limit: int,
        per: float,
        max_keys: int,
        redis: RedisConfig,
        loop: asyncio.AbstractEventLoop,
    ) -> None:
        super().__init__(limit, per, max_keys)
        self.name = name
        self.config = redis
        self.loop = loop
        self.interval = max(redis.sync_interval, 0.001)
        self.timeout = redis.timeout
        self.ttl = math.ceil(2 * per) + 2
        # A window's total can still grow this long after it ended (the last pushes of others).
        self.settle = 2 * self.interval + self.timeout
        self.base = f"{redis.key_prefix}:rl:{name}:".encode()
        self.epoch_key = f"{redis.key_prefix}:rl:epoch"
        self.url = display_url(redis.url)
        # Keys used since they were last synced, in order (a dict as an ordered set).
        self.dirty: dict[str, None] = {}
        self.epoch: bytes | None = None
        self.up = False
        self.sync_errors = 0
        self.last_error: str | None = None
        self.last_sync: float | None = None  # time.monotonic() of the last successful pipeline
        self.down_since: float | None = None
        self.outage_logged = False
        self.probing = False  # after a failure: PING before sending counts again
        self.closed = False
        self.task: asyncio.Task[None] | None = None
        self.pool: _OwningPool | None = None
        self.client: Redis | None = None
        # The loop may not run yet (the first snapshot is built before it does), and this may be
        # called off its thread: start the task from the loop itself.
        if not loop.is_closed():
            loop.call_soon_threadsafe(self._start)

    def _start(self) -> None:
        if not self.closed:
            self.task = self.loop.create_task(self._run(), name=f"redis-window-{self.name}")

    # The request path: pure memory.

    def new_entry(self, window: int) -> list[int]:
        return [window, 0, 0, window, 0, 0, 0, 0, 0]

    def shared(self, key: str, entry: list[int]) -> tuple[int, int]:
        self.dirty[key] = None
        return self.others(entry)

    def others(self, entry: list[int]) -> tuple[int, int]:
        if entry[_SYNCED] != entry[0]:
            _align(entry)
        previous = entry[_TOTAL_PREV] - entry[_PUSHED_PREV]
        current = entry[_TOTAL_CUR] - entry[_PUSHED_CUR]
        return (previous if previous > 0 else 0, current if current > 0 else 0)

    # The background task.

    def _new_client(self) -> None:
        pool = self.pool = _OwningPool.from_url(
            self.config.url,
            socket_timeout=self.timeout,
            socket_connect_timeout=self.timeout,
            retry=Retry(NoBackoff(), 0),  # this task retries, with back-off
            max_connections=2,
            client_name="portway",
        )
        self.client = Redis(connection_pool=pool)

    async def _run(self) -> None:
        self._new_client()
        failures = 0
        delay = self.interval
        try:
            # ``closed`` too, not only the cancellation: redis-py swallows a CancelledError that
            # lands in some of its awaits (seen with redis 8.2 mid-pipeline).
            while not self.closed:
                await asyncio.sleep(delay)
                try:
                    await self.sync()
                except asyncio.CancelledError:
                    raise
                except Exception as error:  # any failure is an outage, never fatal to the task
                    failures += 1
                    self._failed(error)
                    await self._disconnect(replace=True)
                    backoff = min(_BACKOFF_CAP, self.interval * 2.0**failures)
                    delay = max(self.interval, backoff * random.uniform(0.5, 1.0))
                else:
                    failures = 0
                    delay = self.interval
        finally:
            self.up = False
            await self._disconnect()

    async def _disconnect(self, replace: bool = False) -> None:
        """Close every connection the pool made; with ``replace``, the next command goes through
        a new pool (and connects anew)."""
        pool = self.pool
        if pool is None:
            return
        if replace:
            self._new_client()
        # One by one in this task, not waiting for the closes to complete: ``close`` cancels the
        # task, maybe while it runs this from its ``finally``, and a cancellation must not land
        # before every socket's close has begun (it did in tasks ``gather`` had not yet started).
        for connection in pool.made:
            with contextlib.suppress(Exception):
                await connection.disconnect(nowait=True)

    async def sync(self) -> None:
        """One tick: push and read the keys used since the last one (in bounded batches); with
        none, check Redis once in a while. Raises whatever a pipeline raised."""
        client = self.client
        assert client is not None, "sync runs in the window's task"
        if self.probing:
            # Write nothing to a Redis that did not answer until it answers a PING: a hung
            # server (or a network that holds packets) may still run every pipeline sent to it,
            # and each would add its deltas once more.
            async with asyncio.timeout(self.timeout):
                await client.ping()
            self.probing = False
        if not self.dirty:
            last = self.last_sync
            if self.up and last is not None and time.monotonic() - last < _IDLE_CHECK:
                return
            await self._sync_batch(client, [])
            return
        for _ in range(_MAX_BATCHES):
            if not self.dirty:
                break
            keys = list(islice(self.dirty, _BATCH_KEYS))
            for key in keys:
                del self.dirty[key]
            try:
                await self._sync_batch(client, keys)
            except BaseException:
                # Synced at a later tick; their unpushed hits are still in their entries.
                counts = self.counts
                for key in keys:
                    if key in counts:
                        self.dirty[key] = None
                raise

    async def _sync_batch(self, client: Redis, keys: list[str]) -> None:
        counts = self.counts
        per = self.per
        sent_at = time.time()
        oldest = int(sent_at // per) - 1  # the previous window: older counts matter to nobody
        base = self.base
        pipe = client.pipeline(transaction=False)
        # A fresh value each time: after a restart this instance's SET may be the one that lands,
        # and it must differ from the epoch it saw before.
        pipe.set(self.epoch_key, secrets.token_hex(8), nx=True)
        pipe.get(self.epoch_key)
        plan: list[_Planned] = []
        for key in keys:
            entry = counts.get(key)
            if entry is None or entry[0] < oldest:
                continue
            _align(entry)
            window = entry[0]
            name = redis_key_name(key)
            for index, own, pushed in (
                (window, entry[2], entry[_PUSHED_CUR]),
                (window - 1, entry[1], entry[_PUSHED_PREV]),
            ):
                if index < oldest:
                    continue
                redis_key = b"%s%d:%s" % (base, index, name)
                delta = own - pushed
                if delta > 0:
                    pipe.incrby(redis_key, delta)
                    pipe.expire(redis_key, self.ttl)
                    plan.append(_Planned(key, entry, index, delta, True))
                elif index == window or not entry[_SETTLED]:
                    pipe.get(redis_key)
                    plan.append(_Planned(key, entry, index, 0, False))
        async with asyncio.timeout(self.timeout):
            results: list[Any] = await pipe.execute()
        self._succeeded()
        epoch = results[1]
        if self.epoch is not None and epoch != self.epoch:
            self._counts_lost(oldest)
        self.epoch = epoch
        position = 2
        for planned in plan:
            value = results[position]
            position += 2 if planned.wrote else 1
            entry = planned.entry
            if counts.get(planned.key) is not entry:
                continue  # forgotten (evicted) while the pipeline ran
            index = planned.index
            if index == entry[_SYNCED]:
                pushed_field, total_field = _PUSHED_CUR, _TOTAL_CUR
            elif index == entry[_SYNCED] - 1:
                pushed_field, total_field = _PUSHED_PREV, _TOTAL_PREV
                if sent_at >= (index + 1) * per + self.settle:
                    entry[_SETTLED] = 1
            else:
                continue  # the key moved on by two windows meanwhile
            total = int(value or 0)
            pushed = entry[pushed_field] + planned.delta
            if total < pushed:
                # Redis has less than this instance alone added: it lost counts. Consider only
                # what is there ours, and push the rest again at the next tick.
                pushed = total
                self.dirty[planned.key] = None
            entry[pushed_field] = pushed
            entry[total_field] = total

    def _counts_lost(self, oldest: int) -> None:
        """Redis lost every count (the epoch changed): push all of this instance's again."""
        logger.warning(
            "rate limit %r: redis %s lost the shared counts (restarted without persistence?); "
            "pushing this worker's counts again",
            self.name,
            self.url,
        )
        for key, entry in self.counts.items():
            entry[_PUSHED_PREV] = entry[_PUSHED_CUR] = 0
            entry[_TOTAL_PREV] = entry[_TOTAL_CUR] = entry[_SETTLED] = 0
            if entry[0] >= oldest and (entry[1] or entry[2]):
                self.dirty[key] = None

    def _failed(self, error: BaseException) -> None:
        self.probing = True
        self.sync_errors += 1
        detail = str(error) or "no answer within the timeout"
        self.last_error = f"{type(error).__name__}: {detail}"
        if self.up or self.down_since is None:
            self.down_since = time.monotonic()
        self.up = False
        if not self.outage_logged:
            self.outage_logged = True
            logger.warning(
                "rate limit %r: redis %s unreachable (%s); limiting with this worker's own "
                "counts and the last known totals until it answers",
                self.name,
                self.url,
                self.last_error,
            )

    def _succeeded(self) -> None:
        now = time.monotonic()
        self.last_sync = now
        if not self.up:
            self.up = True
            if self.outage_logged:
                self.outage_logged = False
                down = now - self.down_since if self.down_since is not None else 0.0
                logger.info(
                    "rate limit %r: redis %s reachable again after %.1fs; counts shared again",
                    self.name,
                    self.url,
                    down,
                )
            self.down_since = None

    # Admin and lifecycle.

    def state(self, now: float, top: int = 20) -> dict[str, Any]:
        """The window's state (estimates include the other instances' counts last read) and
        the link to Redis."""
        state = super().state(now, top)
        age = None if self.last_sync is None else round(time.monotonic() - self.last_sync, 3)
        state["redis"] = {
            "up": self.up,
            "last_sync_age_seconds": age,
            "sync_errors": self.sync_errors,
            "last_error": self.last_error,
        }
        return state

    def close(self) -> None:
        """Stop the task; its ``finally`` closes the connections on the loop. Never waits."""
        if self.closed:
            return
        self.closed = True
        task = self.task
        if task is not None and not task.done() and not self.loop.is_closed():
            self.loop.call_soon_threadsafe(task.cancel)
