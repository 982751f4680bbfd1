"""Waiting for what another process writes to the test database in its own time (a live server's
reply row, its metric writer's batch), woken by the database, not by a clock.

`written` (sync tests) and `awritten` (async tests) ask `check` (a read of the database) until
`ready` holds for its value, and return that value. Between two asks they wait for Postgres to
say that a watched table was written: a statement trigger on each of `watched_tables()` NOTIFYs
`eva_test_writes` (`install_write_notices`, on the test database when first needed), and they
LISTEN before their first ask, so no write is missed. At the deadline they fail naming `what`
and the last value.

`eventually` / `aeventually` are for the few states that nothing announces and no test can
be told about (a query running on the server, a pool's waiting requests): they ask every
`every_s`.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar, cast

import psycopg
from asgiref.sync import iscoroutinefunction, sync_to_async
from psycopg import sql

T = TypeVar("T")

EVERY_S = 0.05
WRITES = "eva_test_writes"  # the channel the triggers NOTIFY
TRIGGER = "eva_test_notify_write"


def watched_tables() -> list[str]:
    """The tables live servers write and tests wait for: chat messages and request metrics."""
    from chat.models import ChatMessage
    from metrics.models import RequestMetric

    return [ChatMessage._meta.db_table, RequestMetric._meta.db_table]


_installed: set[str] = set()  # the databases that have the triggers, in this test session


def install_write_notices(conn: psycopg.Connection[Any]) -> None:
    """On the test database: every INSERT, UPDATE or DELETE statement on a watched table NOTIFYs
    WRITES. Once per database and session (the test database is new each session)."""
    if conn.info.dbname in _installed:
        return
    trigger = sql.Identifier(TRIGGER)
    with conn.transaction():
        conn.execute(
            sql.SQL(
                "CREATE OR REPLACE FUNCTION {}() RETURNS trigger LANGUAGE plpgsql AS "
                "$$ BEGIN PERFORM pg_notify({}, TG_TABLE_NAME); RETURN NULL; END $$"
            ).format(trigger, sql.Literal(WRITES))
        )
        for table in watched_tables():
            conn.execute(sql.SQL("DROP TRIGGER IF EXISTS {} ON {}").format(trigger, sql.Identifier(table)))
            conn.execute(
                sql.SQL(
                    "CREATE TRIGGER {} AFTER INSERT OR UPDATE OR DELETE ON {} FOR EACH STATEMENT EXECUTE FUNCTION {}()"
                ).format(trigger, sql.Identifier(table), trigger)
            )
    _installed.add(conn.info.dbname)


def _conninfo() -> dict[str, Any]:
    from django.db import connection

    s = connection.settings_dict  # the test database's, once pytest-django has created it
    given = {"dbname": s["NAME"], "user": s["USER"], "password": s["PASSWORD"], "host": s["HOST"], "port": s["PORT"]}
    return {key: value for key, value in given.items() if value}


def _timed_out(what: str, within_s: float, value: object) -> AssertionError:
    shown = repr(value)
    if len(shown) > 600:
        shown = shown[:600] + "…"
    return AssertionError(f"not so within {within_s} s: {what} (last value: {shown})")


def written(check: Callable[[], T], what: str, within_s: float = 10.0, *, ready: Callable[[T], object] = bool) -> T:
    """`check()`'s value once `ready(value)` holds (by default: once it is truthy), asked again
    after each write to a watched table, for `within_s` seconds at most."""
    deadline = time.monotonic() + within_s
    with psycopg.connect(**_conninfo(), autocommit=True) as listener:
        install_write_notices(listener)
        listener.execute(f"LISTEN {WRITES}")
        while True:
            value = check()
            if ready(value):
                return value
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise _timed_out(what, within_s, value)
            for _ in listener.notifies(timeout=remaining, stop_after=1):
                pass


async def awritten(
    check: Callable[[], T] | Callable[[], Awaitable[T]],
    what: str,
    within_s: float = 10.0,
    *,
    ready: Callable[[T], object] = bool,
) -> T:
    """`written` for async tests: `check` is a coroutine function, or a plain one (the ORM), run
    in a thread with sync_to_async."""
    ask = _asker(check)
    loop = asyncio.get_running_loop()
    deadline = loop.time() + within_s
    await asyncio.to_thread(_install_once)
    async with await psycopg.AsyncConnection.connect(**_conninfo(), autocommit=True) as listener:
        await listener.execute(f"LISTEN {WRITES}")
        while True:
            value = cast(T, await ask())
            if ready(value):
                return value
            remaining = deadline - loop.time()
            if remaining <= 0:
                raise _timed_out(what, within_s, value)
            async for _ in listener.notifies(timeout=remaining, stop_after=1):
                pass


def _install_once() -> None:
    with psycopg.connect(**_conninfo(), autocommit=True) as conn:
        install_write_notices(conn)


def _asker(check: Callable[[], T] | Callable[[], Awaitable[T]]) -> Callable[[], Awaitable[Any]]:
    if iscoroutinefunction(check):
        return cast(Callable[[], Awaitable[T]], check)
    return sync_to_async(check)


def eventually(
    check: Callable[[], T],
    what: str,
    within_s: float = 10.0,
    *,
    ready: Callable[[T], object] = bool,
    every_s: float = EVERY_S,
) -> T:
    """`check()`'s value once `ready(value)` holds, asked every `every_s` for `within_s` seconds
    at most; for a state nothing announces (a write: `written`)."""
    deadline = time.monotonic() + within_s
    while True:
        value = check()
        if ready(value):
            return value
        if time.monotonic() >= deadline:
            raise _timed_out(what, within_s, value)
        time.sleep(every_s)


async def aeventually(
    check: Callable[[], T] | Callable[[], Awaitable[T]],
    what: str,
    within_s: float = 10.0,
    *,
    ready: Callable[[T], object] = bool,
    every_s: float = EVERY_S,
) -> T:
    """`eventually` for async tests: `check` is a coroutine function, or a plain one, run in a
    thread with sync_to_async."""
    ask = _asker(check)
    loop = asyncio.get_running_loop()
    deadline = loop.time() + within_s
    while True:
        value = cast(T, await ask())
        if ready(value):
            return value
        if loop.time() >= deadline:
            raise _timed_out(what, within_s, value)
        await asyncio.sleep(every_s)
