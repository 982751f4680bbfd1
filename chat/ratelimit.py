"""Rate limits per API key and per user, with the `limits` library.

A moving window kept in Redis when REDIS_URL is set (one atomic Lua script per hit, so many
processes and parallel requests share one exact count), in process memory otherwise.
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

from chat.errors import RateLimited

_limiters: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, MovingWindowRateLimiter] = weakref.WeakKeyDictionary()
_memory_storage: Storage | None = None


def _limiter() -> MovingWindowRateLimiter:
    global _memory_storage
    loop = asyncio.get_running_loop()
    limiter = _limiters.get(loop)
    if limiter is None:
        if settings.REDIS_URL:
            # A blocking pool: a burst waits for a free connection instead of failing.
            pool = redis.asyncio.BlockingConnectionPool.from_url(settings.REDIS_URL, max_connections=50, timeout=5)
            storage: Storage = RedisStorage(
                f"async+{settings.REDIS_URL}",
                implementation="redispy",
                key_prefix=f"{settings.CHANNEL_LAYER_PREFIX}:rl",
                connection_pool=pool,
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


async def rate_limit_check(*, user_id: int, api_key_id: int | None) -> None:
    """Count one request against the key's and the user's limits; RateLimited when over either."""
    hits = [_hit(parse(settings.RATE_LIMIT_PER_USER), "user", str(user_id))]
    if api_key_id is not None:
        hits.append(_hit(parse(settings.RATE_LIMIT_PER_KEY), "key", str(api_key_id)))
    await asyncio.gather(*hits)  # two round trips to Redis at once, not one after the other
