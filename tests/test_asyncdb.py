"""accounts.asyncdb: statements of concurrent requests go out together, and fail alone."""

from __future__ import annotations

import asyncio

import psycopg
import pytest

from accounts import asyncdb
from tests.polling import aeventually

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
async def probe():
    # Every statement of the tests below takes a number from asyncdb_runs: a sequence is not
    # rolled back, so its last value counts the statements the server executed, even those
    # whose work a rollback undid.
    await asyncdb.execute("CREATE SEQUENCE asyncdb_runs", ())
    await asyncdb.execute(
        "CREATE TABLE asyncdb_probe (v integer PRIMARY KEY CHECK (v > 0), note text NOT NULL DEFAULT '', "
        "run bigint NOT NULL DEFAULT nextval('asyncdb_runs'))",
        (),
    )
    await asyncdb.execute(  # as Django declares foreign keys: checked at the commit unless told otherwise
        "CREATE TABLE asyncdb_child (run bigint NOT NULL DEFAULT nextval('asyncdb_runs'), "
        "parent integer NOT NULL REFERENCES asyncdb_probe (v) DEFERRABLE INITIALLY DEFERRED)",
        (),
    )
    yield
    await asyncdb.execute("DROP TABLE asyncdb_child, asyncdb_probe", ())
    await asyncdb.execute("DROP SEQUENCE asyncdb_runs", ())


async def stored() -> list[int]:
    return [v for (v,) in await asyncdb.execute("SELECT v FROM asyncdb_probe ORDER BY v", ())]


def insert(v: int, note: str = ""):
    return asyncdb.execute("INSERT INTO asyncdb_probe (v, note) VALUES (%s, %s) RETURNING v", (v, note))


async def runs() -> int:
    """How many statements took a number from asyncdb_runs (see `probe`)."""
    ((last, called),) = await asyncdb.execute("SELECT last_value, is_called FROM asyncdb_runs", ())
    return last if called else 0


async def test_concurrent_statements_share_round_trips_and_each_caller_gets_its_own_rows():
    batcher = asyncdb._batcher()
    await asyncdb.execute("SELECT 1", ())  # the pool is open
    before = batcher.batches
    # Two statements, interleaved, in one batch: each caller gets its own rows.
    pairs = ("SELECT %s::int, %s::text", "SELECT g, %s::text FROM generate_series(1, %s) g")
    statements = [(pairs[0], (i, f"r{i}")) if i % 2 else (pairs[1], (f"s{i}", i % 3)) for i in range(40)]
    results = await asyncio.gather(*(asyncdb.execute(sql, params) for sql, params in statements))
    assert results == [[(i, f"r{i}")] if i % 2 else [(g, f"s{i}") for g in range(1, i % 3 + 1)] for i in range(40)]
    assert batcher.batches - before == 1  # all forty issued in one loop turn: one pipeline


async def test_a_lone_statement_goes_out_at_once(probe):
    assert await insert(1) == [(1,)]
    assert await stored() == [1]


async def test_a_batch_is_one_transaction():
    await asyncdb.execute("SELECT 1", ())  # the pool is open
    xids = await asyncio.gather(*(asyncdb.execute("SELECT pg_current_xact_id()::text", ()) for _ in range(5)))
    assert len(set(map(str, xids))) == 1  # one commit for the five


FAILURES = {
    "unique": (lambda: insert(1), psycopg.errors.UniqueViolation, 1),  # 1 is there before the batch
    "check": (lambda: insert(-5), psycopg.errors.CheckViolation, 1),
    "foreign key": (
        lambda: asyncdb.execute("INSERT INTO asyncdb_child (parent) VALUES (404) RETURNING parent", ()),
        psycopg.errors.ForeignKeyViolation,
        1,
    ),
    "NUL byte": (lambda: insert(50, "a\x00b"), psycopg.DataError, 0),  # refused by psycopg: never sent
    "unadaptable": (lambda: insert(object()), psycopg.ProgrammingError, 0),  # likewise
}


@pytest.mark.parametrize("kind", FAILURES)
@pytest.mark.parametrize("position", [0, 2, 4], ids=["first", "middle", "last"])
async def test_a_failing_statement_fails_alone_and_every_other_runs_once(probe, kind, position):
    failing, error, executed = FAILURES[kind]
    await insert(1)
    batcher = asyncdb._batcher()
    before_runs, before_batches = await runs(), batcher.batches
    calls = [insert(v) for v in (2, 3, 4, 5)]
    calls.insert(position, failing())
    results = await asyncio.gather(*calls, return_exceptions=True)

    assert batcher.batches - before_batches == 1  # all five went out together
    assert isinstance(results.pop(position), error)
    assert results == [[(2,)], [(3,)], [(4,)], [(5,)]]
    assert await stored() == [1, 2, 3, 4, 5]
    assert await asyncdb.execute("SELECT count(*) FROM asyncdb_child", ()) == [(0,)]
    assert await runs() - before_runs == 4 + executed  # no statement ran twice


async def test_several_failures_in_one_batch_each_fail_alone(probe):
    await insert(1)
    before = await runs()
    calls = (insert(1), insert(2), insert(-1), insert(3), insert(1), insert(4))
    results = await asyncio.gather(*calls, return_exceptions=True)
    errors = psycopg.errors
    assert [type(r) for r in results[0:5:2]] == [errors.UniqueViolation, errors.CheckViolation, errors.UniqueViolation]
    assert results[1::2] == [[(2,)], [(3,)], [(4,)]]
    assert await stored() == [1, 2, 3, 4]
    assert await runs() - before == 6


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


async def sleeping_on_the_server() -> bool:
    pool = await asyncdb._pool()
    async with pool.connection() as conn:  # another of the pool's connections
        cursor = await conn.execute(
            "SELECT count(*) FROM pg_stat_activity WHERE state = 'active' AND query = 'SELECT pg_sleep(5)'"
        )
        (count,) = await cursor.fetchone()
    return count == 1


async def test_callers_of_a_batch_cut_short_by_the_loop_closing_are_cancelled_not_left_waiting():
    batcher = asyncdb._batcher()
    out = asyncio.ensure_future(asyncdb.execute("SELECT pg_sleep(5)", ()))
    await aeventually(sleeping_on_the_server, "the batch is at the database")
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
        waiting = lambda: pool.get_stats().get("requests_waiting", 0)  # noqa: E731
        await aeventually(waiting, "the batch is out, waiting for a connection")
        queued = batcher.submit(("SELECT 2", ()))
        with pytest.raises(PoolTimeout):
            await first
        assert queued.done() and isinstance(queued.exception(), PoolTimeout)  # not another 0.5 s wait
    assert await asyncdb.execute("SELECT 3", ()) == [(3,)]  # and the pool serves again
