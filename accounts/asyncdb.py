"""Async Postgres for the few hot statements that run on the event loop (chat turns, metrics).

The ORM reaches the database from executor threads: each call is a hop to a thread and back
and a query built in Python, which on this 2-vCPU machine costs more CPU than the statement.
Where a request path needs the database and latency matters, it runs plain SQL through one
async psycopg pool per event loop instead, on the connection settings of Django's `default`
database. Only on Postgres, and only while DATABASE_ASYNC is on; `async_db_enabled()` tells
callers whether to take this path or the ORM one.

`execute()` sends statements together (accounts.batching): those that concurrent requests of
one loop issue while a batch is out go in the next one, pipelined on one connection (one round
trip, one commit) instead of one pool checkout and one round trip each, which at 50 chat
streams cost three times the CPU (bench/RESULTS.md). A batch is one implicit transaction: when
one of its statements fails, the whole batch is rolled back and its statements are run again
one by one, so that only the failing one's caller gets the error.
"""

from __future__ import annotations

import asyncio
import weakref
from collections.abc import Iterable, Sequence
from typing import Any

from django.conf import settings
from django.db import connections

from accounts.batching import Batcher, settle

_pools: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, Any] = weakref.WeakKeyDictionary()
_batchers: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, Batcher] = weakref.WeakKeyDictionary()
_DJANGO_ONLY_PARAMS = ("cursor_factory", "context", "client_encoding")

Params = dict[str, Any] | Sequence[Any]
Rows = list[tuple[Any, ...]]


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


async def _run(conn: Any, sql: str, params: Params) -> Rows:
    cursor = await conn.execute(sql, params)
    return await cursor.fetchall() if cursor.description else []


async def _send(batch: list[tuple[tuple[str, Params], asyncio.Future[Rows]]]) -> None:
    """One batch of statements, pipelined on one connection (see the module's docstring).

    An exception that leaves here (no connection, a lost one) reaches every caller of the batch.
    """
    import psycopg

    async with (await _pool()).connection() as conn:
        if len(batch) == 1:
            (sql, params), future = batch[0]
            settle(future, await _run(conn, sql, params))
            return
        # Callers of one batch are concurrent: their statements may run in any order. The same
        # statement's parameter sets go through one executemany (15-25 % less CPU per statement
        # than one execute each, measured in isolation).
        groups: dict[str, list[tuple[tuple[str, Params], asyncio.Future[Rows]]]] = {}
        for entry in batch:
            groups.setdefault(entry[0][0], []).append(entry)
        try:
            sent = []
            async with conn.pipeline():
                for sql, entries in groups.items():
                    cursor = conn.cursor()
                    await cursor.executemany(sql, [params for (_, params), _ in entries], returning=True)
                    sent.append((cursor, entries))
            results = []
            for cursor, entries in sent:
                for _, future in entries:
                    results.append((future, await cursor.fetchall() if cursor.description else []))
                    cursor.nextset()
        except psycopg.Error as exc:
            if conn.closed or isinstance(exc, psycopg.OperationalError):
                raise  # the connection failed: whether the batch committed is unknown
            # One statement failed and the batch was rolled back: each again, alone.
            for (sql, params), future in batch:
                try:
                    settle(future, await _run(conn, sql, params))
                except psycopg.Error as one:
                    settle(future, error=one)
            return
        for future, rows in results:
            settle(future, rows)


def _batcher() -> Batcher[tuple[str, Params], Rows]:
    loop = asyncio.get_running_loop()
    batcher = _batchers.get(loop)
    if batcher is None:
        from psycopg_pool import PoolTimeout

        batcher = _batchers[loop] = Batcher(_send, fails_all=(PoolTimeout,))
    return batcher


async def execute(sql: str, params: Params) -> Rows:
    """Run one statement (committed with its batch); its rows, if it returns any."""
    return await _batcher().submit((sql, params))


async def executemany(sql: str, params_seq: Iterable[Sequence[Any]]) -> None:
    """Run one statement for each parameter set, pipelined, in one transaction."""
    async with (await _pool()).connection() as conn:
        async with conn.transaction():
            await conn.cursor().executemany(sql, params_seq)


async def close_async_pool() -> None:
    """Close this loop's pool (tests, shutdown)."""
    loop = asyncio.get_running_loop()
    batcher = _batchers.pop(loop, None)
    if batcher is not None:
        await batcher.drain()
    pool = _pools.pop(loop, None)
    if pool is not None:
        await pool.close()
