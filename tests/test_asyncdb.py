"""accounts.asyncdb: statements of concurrent requests go out together, and fail alone."""

from __future__ import annotations

import asyncio

import psycopg
import pytest

from accounts import asyncdb

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
async def probe():
    await asyncdb.execute("CREATE TABLE asyncdb_probe (v integer PRIMARY KEY)", ())
    yield
    await asyncdb.execute("DROP TABLE asyncdb_probe", ())


async def stored() -> list[int]:
    return [v for (v,) in await asyncdb.execute("SELECT v FROM asyncdb_probe ORDER BY v", ())]


def insert(v: int):
    return asyncdb.execute("INSERT INTO asyncdb_probe VALUES (%s) RETURNING v", (v,))


async def test_concurrent_statements_share_round_trips_and_each_caller_gets_its_own_rows():
    batcher = asyncdb._batcher()
    await asyncdb.execute("SELECT 1", ())  # the pool is open
    before = batcher.batches
    # Two statements, interleaved: each kind goes through one executemany, each caller gets its rows.
    statements = [
        ("SELECT %s::int, %s::text", (i, f"r{i}")) if i % 2 else ("SELECT g, %s::text FROM generate_series(1, %s) g", (f"s{i}", i % 3))
        for i in range(40)
    ]
    results = await asyncio.gather(*(asyncdb.execute(sql, params) for sql, params in statements))
    assert results == [[(i, f"r{i}")] if i % 2 else [(g, f"s{i}") for g in range(1, i % 3 + 1)] for i in range(40)]
    assert batcher.batches - before == 1  # all forty issued in one loop turn: one pipeline


async def test_a_lone_statement_goes_out_at_once(probe):
    assert await insert(1) == [(1,)]
    assert await stored() == [1]


async def test_one_failing_statement_fails_alone_and_the_others_are_committed(probe):
    await insert(1)
    results = await asyncio.gather(insert(2), insert(1), insert(3), return_exceptions=True)
    assert results[0] == [(2,)] and results[2] == [(3,)]
    assert isinstance(results[1], psycopg.errors.UniqueViolation)
    assert await stored() == [1, 2, 3]


async def test_a_statement_whose_caller_was_cancelled_before_its_batch_left_is_not_run(probe):
    cancelled = asyncio.ensure_future(insert(5))
    kept = asyncio.ensure_future(insert(6))
    await asyncio.sleep(0)  # both submitted, the batch not yet out
    cancelled.cancel()
    assert await kept == [(6,)]
    with pytest.raises(asyncio.CancelledError):
        await cancelled
    assert await stored() == [6]


async def test_a_connection_lost_mid_batch_fails_its_callers_and_the_next_statement_works(probe):
    results = await asyncio.gather(
        insert(7), asyncdb.execute("SELECT pg_terminate_backend(pg_backend_pid())", ()), return_exceptions=True
    )
    assert all(isinstance(r, psycopg.OperationalError) for r in results), results
    assert await insert(8) == [(8,)]
    assert await stored() == [8]  # 7 went with the uncommitted batch


async def test_callers_of_a_batch_cut_short_by_the_loop_closing_are_cancelled_not_left_waiting():
    batcher = asyncdb._batcher()
    out = asyncio.ensure_future(asyncdb.execute("SELECT pg_sleep(5)", ()))
    await asyncio.sleep(0.2)  # its batch is at the database
    queued = asyncio.ensure_future(asyncdb.execute("SELECT 1", ()))
    await asyncio.sleep(0)
    batcher.sender.cancel()  # as asyncio.run does with every task when its loop ends
    for caller in (out, queued):
        with pytest.raises(asyncio.CancelledError):
            await asyncio.wait_for(caller, 2)


async def test_when_no_connection_comes_in_time_the_statements_queued_behind_fail_at_once(settings):
    from psycopg_pool import PoolTimeout

    settings.DATABASE_ASYNC_POOL_MAX = 1
    settings.DATABASE_ASYNC_POOL_TIMEOUT_S = 0.5
    batcher = asyncdb._batcher()
    pool = await asyncdb._pool()
    async with pool.connection():  # the pool's only connection, held elsewhere
        first = batcher.submit(("SELECT 1", ()))
        await asyncio.sleep(0.1)  # its batch is out, waiting for a connection
        queued = batcher.submit(("SELECT 2", ()))
        with pytest.raises(PoolTimeout):
            await first
        assert queued.done() and isinstance(queued.exception(), PoolTimeout)  # not another 0.5 s wait
    assert await asyncdb.execute("SELECT 3", ()) == [(3,)]  # and the pool serves again
