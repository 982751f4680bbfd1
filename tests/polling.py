"""Waiting for what another process writes in its own time (a live server's reply row, its
metric writer's batch): the tests' one poll with a deadline.

Tests order events with events; a poll is kept for a write the test cannot be told about (it
happens in another process, or after the last frame the test gets), and goes through here:
`eventually` (sync tests) and `aeventually` (async tests) ask `check` until `ready` holds for
its value, and return that value; at the deadline they fail naming `what` and the last value.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar, cast

from asgiref.sync import iscoroutinefunction, sync_to_async

T = TypeVar("T")

EVERY_S = 0.05


def _timed_out(what: str, within_s: float, value: object) -> AssertionError:
    shown = repr(value)
    if len(shown) > 600:
        shown = shown[:600] + "…"
    return AssertionError(f"not so within {within_s} s: {what} (last value: {shown})")


def eventually(
    check: Callable[[], T],
    what: str,
    within_s: float = 10.0,
    *,
    ready: Callable[[T], object] = bool,
    every_s: float = EVERY_S,
) -> T:
    """`check()`'s value once `ready(value)` holds (by default: once it is truthy), asked every
    `every_s` for `within_s` seconds at most; AssertionError naming `what` otherwise."""
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
    """`eventually` for async tests: `check` is a coroutine function, or a plain one (the ORM),
    run in a thread with sync_to_async."""
    ask: Callable[[], Awaitable[Any]] = (
        cast(Callable[[], Awaitable[T]], check) if iscoroutinefunction(check) else sync_to_async(check)
    )
    loop = asyncio.get_running_loop()
    deadline = loop.time() + within_s
    while True:
        value = cast(T, await ask())
        if ready(value):
            return value
        if loop.time() >= deadline:
            raise _timed_out(what, within_s, value)
        await asyncio.sleep(every_s)
