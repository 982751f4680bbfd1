"""Async Postgres for the few hot statements that run on the event loop (chat turns, metrics).

The ORM reaches the database from executor threads: each call is a hop to a thread and back
and a query built in Python, which on this 2-vCPU machine costs more CPU than the statement.
Where a request path needs the database and latency matters, it runs plain SQL through one
async psycopg pool per event loop instead, on the connection settings of Django's `default`
database. Only on Postgres, and only while DATABASE_ASYNC is on; `async_db_enabled()` tells
callers whether to take this path or the ORM one.

`execute()` sends statements together: those that concurrent requests of one loop issue while
a batch is out go in the next one, pipelined on one connection (one round trip, one commit)
instead of one pool checkout and one round trip each, which at 50 chat streams cost three times
the CPU (bench/RESULTS.md). A batch is one implicit transaction: when one of its statements
fails, the whole batch is rolled back and its statements are run again one by one, so that
only the failing one's caller gets the error. A statement whose caller was cancelled before
its batch went out is not run. Alone, a statement goes out at once, as before.
"""

from __future__ import annotations

import asyncio
import weakref
from collections.abc import Iterable, Sequence
from typing import Any

from django.conf import settings
from django.db import connections

_pools: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, Any] = weakref.WeakKeyDictionary()
_batchers: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, _Batcher] = weakref.WeakKeyDictionary()
_DJANGO_ONLY_PARAMS = ("cursor_factory", "context", "client_encoding")
BATCH_MAX = 64  # statements per pipeline

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


class _Batcher:
    """The statements waiting to go out on one event loop, and the one task that sends them.

    One batch at a time per loop: while it is out, new statements wait for the next one. That
    is what makes batches (and keeps two batches of one process from locking the same rows in
    opposite orders).
    """

    def __init__(self) -> None:
        self.waiting: list[tuple[str, Params, asyncio.Future[Rows]]] = []
        self.sender: asyncio.Task[None] | None = None
        self.batches = 0  # sent so far (tests, benchmarks)

    def submit(self, sql: str, params: Params) -> asyncio.Future[Rows]:
        future: asyncio.Future[Rows] = asyncio.get_running_loop().create_future()
        self.waiting.append((sql, params, future))
        if self.sender is None:
            # Starts on the loop's next turn: what else this turn submits goes in the same batch.
            self.sender = asyncio.ensure_future(self._send_all())
        return future

    async def _send_all(self) -> None:
        try:
            while self.waiting:
                batch, self.waiting = self.waiting[:BATCH_MAX], self.waiting[BATCH_MAX:]
                batch = [entry for entry in batch if not entry[2].done()]  # callers cancelled meanwhile
                if batch:
                    self.batches += 1
                    await self._send(batch)
        finally:
            self.sender = None
            if self.waiting:  # this task was cancelled (loop shutting down): the waiting callers get that
                for _, _, future in self.waiting:
                    future.cancel()
                self.waiting = []

    async def _send(self, batch: list[tuple[str, Params, asyncio.Future[Rows]]]) -> None:
        import psycopg

        try:
            async with (await _pool()).connection() as conn:
                if len(batch) == 1:
                    sql, params, future = batch[0]
                    _settle(future, await _run(conn, sql, params))
                    return
                try:
                    async with conn.pipeline():
                        cursors = [await conn.execute(sql, params) for sql, params, _ in batch]
                    results = [await cursor.fetchall() if cursor.description else [] for cursor in cursors]
                except psycopg.Error as exc:
                    if conn.closed or isinstance(exc, psycopg.OperationalError):
                        raise  # the connection failed: whether the batch committed is unknown
                    # One statement failed and the batch was rolled back: each again, alone.
                    for sql, params, future in batch:
                        try:
                            _settle(future, await _run(conn, sql, params))
                        except psycopg.Error as one:
                            _settle(future, error=one)
                    return
                for (_, _, future), rows in zip(batch, results, strict=True):
                    _settle(future, rows)
        except Exception as exc:  # no connection, or it failed: every caller of the batch gets the error
            for _, _, future in batch:
                _settle(future, error=exc)


def _settle(future: asyncio.Future[Rows], rows: Rows | None = None, error: BaseException | None = None) -> None:
    if future.done():  # its caller was cancelled after the batch went out
        return
    if error is not None:
        future.set_exception(error)
    else:
        future.set_result(rows or [])


def _batcher() -> _Batcher:
    loop = asyncio.get_running_loop()
    batcher = _batchers.get(loop)
    if batcher is None:
        batcher = _batchers[loop] = _Batcher()
    return batcher


async def execute(sql: str, params: Params) -> Rows:
    """Run one statement (committed with its batch); its rows, if it returns any."""
    return await _batcher().submit(sql, params)


async def executemany(sql: str, params_seq: Iterable[Sequence[Any]]) -> None:
    """Run one statement for each parameter set, pipelined, in one transaction."""
    async with (await _pool()).connection() as conn:
        async with conn.transaction():
            await conn.cursor().executemany(sql, params_seq)


async def close_async_pool() -> None:
    """Close this loop's pool (tests, shutdown)."""
    loop = asyncio.get_running_loop()
    batcher = _batchers.pop(loop, None)
    if batcher is not None and batcher.sender is not None:
        await asyncio.gather(batcher.sender, return_exceptions=True)
    pool = _pools.pop(loop, None)
    if pool is not None:
        await pool.close()
