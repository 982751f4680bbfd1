"""Rate limits per API key and per user, with the `limits` library.

A moving window kept in Redis when REDIS_URL is set (one atomic Lua script per hit, so many
processes and parallel requests share one exact count), in process memory otherwise.

The check sits on the path to the first token, where every trip around a busy event loop
costs time: the two hits go out together without a gather (one runs in this task), and the
Redis client has no per-command socket timeout (redis-py runs each send under asyncio.wait_for,
one more task per command); the whole check is bounded by REDIS_TIMEOUT_S instead. A Redis that
does not answer gives the error `rate_limit_unavailable` (503), not a hang.
"""

from __future__ import annotations

import asyncio
import math
import time
import weakref

import redis.asyncio
from django.conf import settings
from limits import RateLimitItem, parse
from limits.aio.storage import MemoryStorage, RedisStorage, Storage
from limits.aio.strategies import MovingWindowRateLimiter
from limits.errors import StorageError

from chat.errors import EvaError, RateLimited

_limiters: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, MovingWindowRateLimiter] = weakref.WeakKeyDictionary()
_memory_storage: Storage | None = None
REDIS_TIMEOUT_S = 5.0


def _limiter() -> MovingWindowRateLimiter:
    global _memory_storage
    loop = asyncio.get_running_loop()
    limiter = _limiters.get(loop)
    if limiter is None:
        if settings.REDIS_URL:
            # A blocking pool: a burst waits for a free connection instead of failing.
            pool = redis.asyncio.BlockingConnectionPool.from_url(
                settings.REDIS_URL, max_connections=50, timeout=5, socket_timeout=None, socket_connect_timeout=5
            )
            storage: Storage = RedisStorage(
                f"async+{settings.REDIS_URL}",
                implementation="redispy",
                key_prefix=f"{settings.CHANNEL_LAYER_PREFIX}:rl",
                connection_pool=pool,
                wrap_exceptions=True,
            )
        else:
            # One memory store for the process: every loop must see the same counts.
            _memory_storage = _memory_storage or MemoryStorage()
            storage = _memory_storage
        limiter = MovingWindowRateLimiter(storage)
        _limiters[loop] = limiter
    return limiter


async def _hit(item: RateLimitItem, scope: str, identity: str) -> None:
    limiter = _limiter()
    if not await limiter.hit(item, scope, identity):
        stats = await limiter.get_window_stats(item, scope, identity)
        retry_after = max(1, math.ceil(stats.reset_time - time.time()))
        raise RateLimited(
            f"Too many requests: the limit is {item.amount} per {item.get_expiry()} s. Retry in {retry_after} s.",
            retry_after=retry_after,
        )


def _retrieve(task: asyncio.Task[None]) -> None:
    if not task.cancelled():
        task.exception()


async def rate_limit_check(*, user_id: int, api_key_id: int | None) -> None:
    """Count one request against the key's and the user's limits; RateLimited when over either."""
    user_hit = _hit(parse(settings.RATE_LIMIT_PER_USER), "user", str(user_id))
    try:
        async with asyncio.timeout(REDIS_TIMEOUT_S):
            if api_key_id is None:
                await user_hit
                return
            # Both hits go out at once; this task runs one, a second task the other.
            key_hit = asyncio.ensure_future(_hit(parse(settings.RATE_LIMIT_PER_KEY), "key", str(api_key_id)))
            try:
                await user_hit
            except RateLimited:
                key_hit.add_done_callback(_retrieve)  # it counts as before; its outcome no longer matters
                raise
            except BaseException:  # cancelled, timed out, Redis failed: do not leave it running
                key_hit.cancel()
                raise
            await key_hit
    except (StorageError, TimeoutError) as exc:
        raise EvaError(
            f"Rate limits are kept in Redis ({settings.REDIS_URL}), which did not answer ({type(exc).__name__}). "
            "Check that Redis is running and REDIS_URL is right.",
            code="rate_limit_unavailable",
            status=503,
        ) from None
