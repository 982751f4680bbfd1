"""Rate limits per API key and per user: a moving window of requests.

With REDIS_URL set, the counts live in Redis, so that every process and every parallel request
share one exact count: a Lua script checks both of a request's limits and, only when both
allow it, counts the request in both, atomically. A request refused by one limit does not use
up the other. The scripts of concurrent requests of one event loop go to Redis together, one
pipeline per batch (accounts.batching): at 50 chat streams, one round trip per request cost
more CPU than the rest of the rate limit. Without Redis, the `limits` library's moving window
in process memory does the same for one process (REDIS_URL empty, the embedded default).

A Redis that does not answer within REDIS_TIMEOUT_S, or refuses the connection, gives the
error `rate_limit_unavailable` (503), not a hang. A pooled connection that Redis dropped (it
restarted) is replaced and the batch sent once more (redis-py's Retry), so the first request
after a Redis restart is counted, not refused; a batch whose reply alone was lost may count twice.

Each check also tells where the caller stands (`RateLimitState`: the tighter of the request's
limits, the places left in it, the seconds until its oldest counted request leaves the window),
for the X-RateLimit-* headers of the HTTP answers (`rate_limit_headers`). It is returned, and kept
in a context variable for the edge that answers (`current_rate_limit`): the check runs deep in a
generation, in the task that answers the request.
"""

from __future__ import annotations

import asyncio
import contextvars
import functools
import math
import time
import weakref
from dataclasses import dataclass
from typing import Any

import redis.asyncio
from django.conf import settings
from limits import RateLimitItem, parse
from limits.aio.storage import MemoryStorage
from limits.aio.strategies import MovingWindowRateLimiter
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import RedisError

from accounts.batching import Batcher, settle_each
from accounts.errors import EvaError, RateLimited
from accounts.redaction import redact_url

REDIS_TIMEOUT_S = 5.0

# KEYS: one list per limit, newest request first. ARGV: now, then each limit's size and window (s).
# Returns {0, the tightest limit's index, its places left, the time its oldest counted request
# leaves the window} when the request is counted, or {limit's index, the time its oldest counted
# request leaves the window} when it is refused (then nothing is counted).
_MOVING_WINDOW = """
local now = tonumber(ARGV[1])
for i, key in ipairs(KEYS) do
    local size, window = tonumber(ARGV[2 * i]), tonumber(ARGV[2 * i + 1])
    local oldest = redis.call('LINDEX', key, size - 1)
    if oldest and tonumber(oldest) > now - window then
        return {i, tostring(tonumber(oldest) + window)}
    end
end
local tightest, least, reset = 1, nil, now
for i, key in ipairs(KEYS) do
    local size, window = tonumber(ARGV[2 * i]), tonumber(ARGV[2 * i + 1])
    redis.call('LPUSH', key, ARGV[1])
    redis.call('LTRIM', key, 0, size - 1)
    redis.call('EXPIRE', key, math.ceil(window))
    -- Drop what has left the window (the oldest are last; each entry is dropped once): then
    -- the list holds exactly the requests in the window, and its last is the oldest of them.
    local last = tonumber(redis.call('LINDEX', key, -1))
    while last <= now - window do
        redis.call('RPOP', key)
        last = tonumber(redis.call('LINDEX', key, -1))
    end
    local counted, oldest = redis.call('LLEN', key), last
    if least == nil or size - counted < least then
        tightest, least, reset = i, size - counted, oldest + window
    end
end
return {0, tightest, least, tostring(reset)}
"""

Check = tuple[list[str], list[str]]  # the script's keys and arguments
_redis: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, tuple[redis.asyncio.Redis, Batcher[Check, Any]]] = (
    weakref.WeakKeyDictionary()
)
_memory: MovingWindowRateLimiter | None = None


@dataclass(frozen=True)
class RateLimitState:
    """Where a caller stands after a check: the tighter limit, its places left, seconds to the next free one."""

    limit: int
    remaining: int
    reset_s: int


_state: contextvars.ContextVar[RateLimitState | None] = contextvars.ContextVar("rate_limit_state", default=None)


def current_rate_limit() -> RateLimitState | None:
    """The state of this request's rate-limit check (None: none was made in this context)."""
    return _state.get()


def rate_limit_headers(state: RateLimitState | None) -> dict[str, str]:
    """X-RateLimit-Limit, -Remaining and -Reset (seconds) for an answer; {} when nothing was checked."""
    if state is None:
        return {}
    return {
        "X-RateLimit-Limit": str(state.limit),
        "X-RateLimit-Remaining": str(state.remaining),
        "X-RateLimit-Reset": str(state.reset_s),
    }


def _seconds_until(at: float) -> int:
    return max(0, math.ceil(at - time.time()))


def _redis_batcher() -> tuple[redis.asyncio.Redis, Batcher[Check, Any]]:
    loop = asyncio.get_running_loop()
    entry = _redis.get(loop)
    if entry is None:
        # No per-command socket timeout (redis-py would run each read under asyncio.wait_for,
        # one more task per batch): a batch is bounded by REDIS_TIMEOUT_S instead.
        # retry: a pooled connection that Redis dropped (a restart) is closed and the batch sent
        # once more on a new one, instead of failing with rate_limit_unavailable.
        client = redis.asyncio.Redis.from_url(
            settings.REDIS_URL, socket_timeout=None, socket_connect_timeout=REDIS_TIMEOUT_S, max_connections=50,
            retry=Retry(NoBackoff(), 1),
        )

        async def send(batch: list[tuple[Check, asyncio.Future[Any]]]) -> None:
            async with asyncio.timeout(REDIS_TIMEOUT_S):
                async with client.pipeline(transaction=False) as pipe:
                    for (keys, args), _ in batch:
                        pipe.eval(_MOVING_WINDOW, len(keys), *keys, *args)
                    results = await pipe.execute(raise_on_error=False)
            settle_each(batch, results)

        entry = _redis[loop] = (client, Batcher(send))
    return entry


@functools.lru_cache(maxsize=32)
def _rate(text: str) -> RateLimitItem:
    """`60/minute` as the library's item (parsing it is a regular expression: once per setting)."""
    return parse(text)


def _refused(item: RateLimitItem, reset_at: float) -> RateLimited:
    retry_after = max(1, math.ceil(reset_at - time.time()))
    _state.set(RateLimitState(limit=item.amount, remaining=0, reset_s=retry_after))
    return RateLimited(
        f"Too many requests: the limit is {item.amount} per {item.get_expiry()} s. Retry in {retry_after} s.",
        retry_after=retry_after,
    )


async def _check_redis(limits: list[tuple[RateLimitItem, str]]) -> RateLimitState:
    prefix = f"{settings.CHANNEL_LAYER_PREFIX}:rl"
    keys = [f"{prefix}:{identity}" for _, identity in limits]
    args = [repr(time.time())]
    for item, _ in limits:
        args += [str(item.amount), str(item.get_expiry())]
    outcome = await _redis_batcher()[1].submit((keys, args))
    if int(outcome[0]) != 0:
        index, reset_at = outcome
        raise _refused(limits[int(index) - 1][0], float(reset_at))
    _, index, remaining, reset_at = outcome
    item = limits[int(index) - 1][0]
    return RateLimitState(limit=item.amount, remaining=int(remaining), reset_s=_seconds_until(float(reset_at)))


async def _check_memory(limits: list[tuple[RateLimitItem, str]]) -> RateLimitState:
    global _memory
    if _memory is None:
        _memory = MovingWindowRateLimiter(MemoryStorage())  # one for the process: every loop sees the same counts
    limiter = _memory
    # Each hit is exact (the library locks the key); testing both first keeps a request refused
    # by one limit from using up the other, except when a parallel request takes the last place.
    for item, identity in limits:
        if not await limiter.test(item, identity):
            raise await _memory_refused(limiter, item, identity)
    for item, identity in limits:
        if not await limiter.hit(item, identity):
            raise await _memory_refused(limiter, item, identity)
    states = []
    for item, identity in limits:
        stats = await limiter.get_window_stats(item, identity)
        reset_s = _seconds_until(stats.reset_time)
        states.append(RateLimitState(limit=item.amount, remaining=stats.remaining, reset_s=reset_s))
    return min(states, key=lambda state: state.remaining)


async def _memory_refused(limiter: MovingWindowRateLimiter, item: RateLimitItem, identity: str) -> RateLimited:
    stats = await limiter.get_window_stats(item, identity)
    return _refused(item, stats.reset_time)


async def rate_limit_check(*, user_id: int, api_key_id: int | None) -> RateLimitState:
    """Count one request against the user's and the key's limits; RateLimited when over either.

    The state it returns is also `current_rate_limit()` for the rest of this context."""
    limits = [(_rate(settings.RATE_LIMIT_PER_USER), f"user:{user_id}")]
    if api_key_id is not None:
        limits.append((_rate(settings.RATE_LIMIT_PER_KEY), f"key:{api_key_id}"))
    if not settings.REDIS_URL:
        state = await _check_memory(limits)
        _state.set(state)
        return state
    try:
        async with asyncio.timeout(REDIS_TIMEOUT_S):
            state = await _check_redis(limits)
    except (RedisError, OSError, TimeoutError) as exc:
        raise EvaError(
            f"Rate limits are kept in Redis ({redact_url(settings.REDIS_URL)}), which did not answer "
            f"({type(exc).__name__}). "
            "Check that Redis is running and REDIS_URL is right.",
            code="rate_limit_unavailable",
            status=503,
        ) from None
    _state.set(state)
    return state


def reset_rate_limits() -> None:
    """Forget the per-loop Redis clients and the memory counts (tests that change REDIS_URL)."""
    global _memory
    _redis.clear()
    _memory = None
