"""Async Postgres for the few hot statements that run on the event loop (chat turns, metrics).

The ORM reaches the database from executor threads: each call is a hop to a thread and back
and a query built in Python, which on this 2-vCPU machine costs more CPU than the statement.
Where a request path needs the database and latency matters, it runs plain SQL through one
async psycopg pool per event loop instead, on the connection settings of Django's `default`
database. Only on Postgres, and only while DATABASE_ASYNC is on; `async_db_enabled()` tells
callers whether to take this path or the ORM one.

`execute()` sends statements together (accounts.batching): those that concurrent requests of
one loop issue while a batch is out go in the next one, pipelined on one connection: one round
trip and one commit instead of one pool checkout, round trip and commit each.

A statement that fails affects only its own caller, who gets its psycopg error; every other
statement of the batch is executed once and committed. The batch is one transaction in which
each statement stands behind a savepoint: a failure rolls back to the failing statement's
savepoint, and the statements that PostgreSQL skipped after it (up to the pipeline's Sync) are
sent again, never executed twice. A Sync after each statement would make each its own
transaction instead, but psycopg waits for the results at each Sync: a round trip and a commit
per statement. Costs of both, and of today's way against the one before: bench/RESULTS.md,
"Batch failure isolation".

A connection that died while idle (Postgres restarted, pg_terminate_backend, a network cut) is
not checked at checkout (a round trip per batch; and psycopg_pool waits a second or more before
trying the next connection of a failed check). Instead a batch whose connection turns out dead
makes the pool check its idle connections at once (`AsyncConnectionPool.check`: the others that
died alike are replaced) and is then sent again, once, on a fresh connection, but only what is
safe to send again, up to RESENDS (2) times (reliability issue #16):
- a write goes in a transaction that only the COMMIT at the end of the pipeline commits (a lone
  write too: it is a batch of one); if the connection died before that COMMIT was handed to
  psycopg, nothing was committed, and the whole batch is sent again;
- once the COMMIT was handed over (or for a lone read, which runs in autocommit), whether it was
  made is unknown: only reads (statements that begin with SELECT and so change nothing; a SELECT
  that calls a function with side effects must not come through here) and writes declared
  with `resend_safe()` (which skip what a first run stored: the chat turn's two writes) are
  sent again, and each other write's caller gets the connection's error. Before such a write
  is sent again, the lost connection's server process is ended and waited for
  (`pg_terminate_backend(pid, 5000)`), so that a COMMIT it may still be reading becomes visible
  first; when that fails, the write is not sent again.
A failure after the last resend reaches the callers.
"""

from __future__ import annotations

import asyncio
import contextlib
import weakref
from collections.abc import AsyncIterator, Iterable, Sequence
from typing import Any

from django.conf import settings
from django.db import connections

from accounts.batching import Batcher, settle

Params = dict[str, Any] | Sequence[Any]
Rows = list[tuple[Any, ...]]

_pools: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, Any] = weakref.WeakKeyDictionary()
_batchers: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, Batcher[tuple[str, Params], Rows]] = (
    weakref.WeakKeyDictionary()
)
_DJANGO_ONLY_PARAMS = ("cursor_factory", "context", "client_encoding")


def async_db_enabled() -> bool:
    """Whether the hot statements go through this module (Postgres, DATABASE_ASYNC on) or the ORM."""
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


# Foreign keys are checked at each statement instead of at the commit (Django declares them
# DEFERRABLE INITIALLY DEFERRED), so that a violation fails its own statement, not the commit.
_OPEN = ("BEGIN", "SET CONSTRAINTS ALL IMMEDIATE")

Entry = tuple[tuple[str, Params], asyncio.Future[Rows]]


class _ConnectionLost(Exception):
    """The batch's connection died (its psycopg error is the cause); `commit_sent`: whether a
    COMMIT (or a lone autocommitted statement) may have reached the server."""

    def __init__(self, *, commit_sent: bool, backend_pid: int | None) -> None:
        super().__init__("the connection was lost")
        self.commit_sent = commit_sent
        self.backend_pid = backend_pid  # the server process that ran the batch


async def _outcome_final(pool: Any, backend_pid: int | None) -> bool:
    """Make sure the server process of a lost connection is gone, so that its COMMIT, if it was
    made, is visible (a server still reading a COMMIT the client sent before the cut would
    otherwise commit after the resend looked for it); False if that cannot be made sure."""
    import psycopg

    if backend_pid is None:
        return False
    for _ in range(3):  # a connection that died in the same stroke may still be handed out
        try:
            async with pool.connection() as conn:
                await conn.execute("SELECT pg_terminate_backend(%s, %s)", [backend_pid, 5000])
        except psycopg.OperationalError:
            continue
        except psycopg.Error:
            return False
        return True
    return False


_RESEND_SAFE: set[str] = set()
# A batch whose connection died is sent again at most this many times: connections killed in
# the same stroke (a failover, pg_terminate_backend of every backend) may still be handed out
# once after the pool's check, when they were busy during it.
RESENDS = 2


def resend_safe(sql: str) -> str:
    """Declare `sql` a write that may run twice with the effect of once (it skips what a first run
    already stored, e.g. by request_id): like a read, it is sent again when its connection died
    after the COMMIT was handed over (#16). Returns `sql`, for module constants."""
    _RESEND_SAFE.add(sql)
    return sql


def _is_read(sql: str) -> bool:
    """Whether the statement only reads (see the module's docstring): sending it again is harmless."""
    return sql.lstrip().lstrip("(").lstrip()[:6].lower() == "select"


async def _send(batch: list[Entry]) -> None:
    """One batch of statements on one connection, sent again (up to RESENDS times) if its connection died (see
    the module's docstring).

    An exception that leaves here (no connection, a lost one, a failed commit) reaches every
    caller of the batch not answered yet: none of their statements was committed, unless the
    connection was lost after the COMMIT was handed over (then a write's outcome is unknown).
    """
    pending = batch
    for attempt in range(1 + RESENDS):
        try:
            await _send_once(pending)
            return
        except _ConnectionLost as lost:
            error = lost.__cause__ or lost
            if attempt == RESENDS:
                raise error from None
            pool = await _pool()
            await pool.check()  # the connections that died with this one, replaced before the retry
            # Writes declared safe to send again look for what their first run stored: only once
            # that run's outcome is final.
            writes_again = lost.commit_sent and await _outcome_final(pool, lost.backend_pid)
            again = [
                entry
                for entry in pending
                if not lost.commit_sent or _is_read(entry[0][0]) or (writes_again and entry[0][0] in _RESEND_SAFE)
            ]
            for _, future in pending:
                if not any(future is each for _, each in again):
                    settle(future, error=error)
            pending = [entry for entry in again if not entry[1].done()]
            if not pending:
                return


async def _send_once(batch: list[Entry]) -> None:
    import psycopg

    commit_sent = [False]  # set by _run_isolated when it hands the COMMIT to psycopg
    async with (await _pool()).connection() as conn:
        backend_pid = conn.info.backend_pid
        try:
            if len(batch) == 1 and _is_read(batch[0][0][0]):
                (sql, params), future = batch[0]
                commit_sent[0] = True  # autocommit: the statement commits itself
                settle(future, await _run(conn, sql, params))
                return
            executed = await _run_isolated(conn, batch, commit_sent)
        except psycopg.Error as exc:
            if conn.closed:
                raise _ConnectionLost(commit_sent=commit_sent[0], backend_pid=backend_pid) from exc
            with contextlib.suppress(psycopg.Error):
                await conn.rollback()  # here rather than by the pool, which would warn
            raise
    for future, rows in executed:
        settle(future, rows)


async def _run_isolated(
    conn: Any, batch: list[Entry], commit_sent: list[bool]
) -> list[tuple[asyncio.Future[Rows], Rows]]:
    """Run the batch in one transaction, pipelined; each committed statement's caller and rows.

    Each statement but the first stands behind a savepoint of its own. When one fails,
    PostgreSQL skips what follows up to the pipeline's Sync: its caller gets the error, the
    transaction goes back to that statement's savepoint (what ran before it stays) and the
    statements that were skipped go in the next pipeline. Every statement is executed once,
    and a batch without failures takes one round trip.
    """
    import psycopg

    executed: list[tuple[asyncio.Future[Rows], Rows]] = []
    opening: tuple[str, ...] = _OPEN
    pending = list(enumerate(batch))  # (number in the batch, which names its savepoint; entry)
    while True:
        commands: list[Any] = []  # cursors of the round's opening commands, then of its commit
        sent: list[tuple[int, Entry, Any]] = []
        refused: set[int] = set()
        errors: list[psycopg.Error] = []
        try:
            async with conn.pipeline():
                try:
                    for command in opening:
                        await _queue(commands, conn.cursor(), command)
                    savepoints = conn.cursor()
                    for number, entry in pending:
                        if number:  # the first statement needs none: nothing runs before it
                            await savepoints.execute(f"SAVEPOINT eva_{number}", prepare=False)
                        cursor = conn.cursor()
                        sent.append((number, entry, cursor))  # before: its own failure may surface in execute()
                        try:
                            await cursor.execute(*entry[0])
                        except Exception as exc:
                            if not _refused_before_sending(exc):
                                raise
                            sent.pop()
                            refused.add(number)
                            settle(entry[1], error=exc)
                    commit_sent[0] = True
                    await _queue(commands, conn.cursor(), "COMMIT")
                except psycopg.Error as exc:  # what is not sent yet would be skipped
                    errors.append(_statement_error(exc))
        except psycopg.Error as exc:
            errors.append(_statement_error(exc))
        if not errors:
            executed += [(entry[1], await _rows(cursor)) for _, entry, cursor in sent]
            return executed
        error = next((exc for exc in errors if exc.sqlstate is not None), errors[0])
        failed = next((i for i, (_, _, cursor) in enumerate(sent) if cursor.pgresult is None), None)
        if failed is None or any(cursor.pgresult is None for cursor in commands[: len(opening)]):
            # Not a statement of the batch (the commit, a rollback to a savepoint that a failure
            # kept from being made): the transaction is lost, and with it every statement in it.
            raise error
        executed += [(entry[1], await _rows(cursor)) for _, entry, cursor in sent[:failed]]
        number, entry, _ = sent[failed]
        settle(entry[1], error=error)
        pending = [(n, e) for n, e in pending if n > number and n not in refused]
        opening = (f"ROLLBACK TO SAVEPOINT eva_{number}",) if number else ("ROLLBACK", *_OPEN)


async def _queue(cursors: list[Any], cursor: Any, command: str) -> None:
    cursors.append(cursor)
    await cursor.execute(command)


def _refused_before_sending(exc: Exception) -> bool:
    """Whether psycopg refused the statement's parameters before sending it (a NUL byte in text,
    a wrong count, a type it cannot adapt), rather than the server failing a statement."""
    import psycopg

    if not isinstance(exc, psycopg.Error):
        return True
    return isinstance(exc, psycopg.DataError | psycopg.ProgrammingError) and exc.sqlstate is None


def _statement_error(exc: Exception) -> Any:
    """`exc`, which a statement's failure raised; an error of the connection itself is re-raised."""
    import psycopg

    if isinstance(exc, psycopg.OperationalError) and not isinstance(exc, psycopg.errors.PipelineAborted):
        raise exc
    return exc


async def _rows(cursor: Any) -> Rows:
    return await cursor.fetchall() if cursor.description else []


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
    async with (await _pool()).connection() as conn, conn.transaction():
        await conn.cursor().executemany(sql, params_seq)


@contextlib.asynccontextmanager
async def transaction() -> AsyncIterator[Any]:
    """A connection of the pool inside one transaction: committed when the block ends, rolled
    back when it raises (metrics: raw rows and their rollups commit together)."""
    async with (await _pool()).connection() as conn, conn.transaction():
        yield conn


async def close_async_pool() -> None:
    """Close this loop's pool (tests, shutdown)."""
    loop = asyncio.get_running_loop()
    batcher = _batchers.pop(loop, None)
    if batcher is not None:
        await batcher.drain()
    pool = _pools.pop(loop, None)
    if pool is not None:
        await pool.close()
