"""Async Postgres for the few hot statements that run on the event loop (chat turns, metrics).

The ORM reaches the database from executor threads: each call is a hop to a thread and back
and a query built in Python, which on this 2-vCPU machine costs more CPU than the statement.
Where a request path needs the database and latency matters, it runs plain SQL through one
async psycopg pool per event loop instead, on the connection settings of Django's `default`
database. Only on Postgres, and only while DATABASE_ASYNC is on; `async_db_enabled()` tells
callers whether to take this path or the ORM one.
"""

from __future__ import annotations

import asyncio
import weakref
from collections.abc import Iterable, Sequence
from typing import Any

from django.conf import settings
from django.db import connections

_pools: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, Any] = weakref.WeakKeyDictionary()
_DJANGO_ONLY_PARAMS = ("cursor_factory", "context", "client_encoding")


def async_db_enabled() -> bool:
    return bool(settings.DATABASE_ASYNC) and connections["default"].vendor == "postgresql"


async def _pool() -> Any:
    from psycopg_pool import AsyncConnectionPool

    loop = asyncio.get_running_loop()
    pool = _pools.get(loop)
    if pool is None:
        params = connections["default"].get_connection_params()
        kwargs = {key: value for key, value in params.items() if key not in _DJANGO_ONLY_PARAMS}
        pool = AsyncConnectionPool(
            kwargs={**kwargs, "autocommit": True},
            min_size=1,
            max_size=settings.DATABASE_ASYNC_POOL_MAX,
            timeout=settings.DATABASE_ASYNC_POOL_TIMEOUT_S,
            name="eva-async",
            open=False,
        )
        _pools[loop] = pool
        await pool.open()
    return pool


async def execute(sql: str, params: dict[str, Any] | Sequence[Any]) -> list[tuple[Any, ...]]:
    """Run one statement (autocommit); its rows, if it returns any."""
    async with (await _pool()).connection() as conn:
        cursor = await conn.execute(sql, params)
        return await cursor.fetchall() if cursor.description else []


async def executemany(sql: str, params_seq: Iterable[Sequence[Any]]) -> None:
    """Run one statement for each parameter set, pipelined, in one transaction."""
    async with (await _pool()).connection() as conn:
        async with conn.transaction():
            await conn.cursor().executemany(sql, params_seq)


async def close_async_pool() -> None:
    """Close this loop's pool (tests, shutdown)."""
    pool = _pools.pop(asyncio.get_running_loop(), None)
    if pool is not None:
        await pool.close()
