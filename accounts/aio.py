"""Awaiting with a deadline that holds even when the awaited work does not honour cancellation.

`asyncio.wait_for` (Python 3.11), past its timeout, cancels the work and then waits until it has
ended. A channels_redis receive cancelled just as its BZPOPMIN's own timeout ends can miss that
cancellation and go on receiving (seen with redis-py 8: a TTS request then hung for good instead of
failing). `within` gives cancelled work a short grace and, past it, leaves it to end on its own.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable
from typing import Any, TypeVar

logger = logging.getLogger("eva.aio")

T = TypeVar("T")
CANCEL_GRACE_S = 1.0

# Work that did not end when cancelled, kept referenced until it does.
_strays: set[asyncio.Future[Any]] = set()


async def within(work: Awaitable[T], timeout_s: float, *, what: str, grace_s: float = CANCEL_GRACE_S) -> T:
    """`work`'s result if it ends within `timeout_s`; else TimeoutError once it is cancelled, or
    `grace_s` after cancelling it if it has not ended by then. A result that comes while it is
    being cancelled is returned. Cancelling the caller cancels `work` without waiting for it."""
    task = asyncio.ensure_future(work)
    try:
        await asyncio.wait({task}, timeout=timeout_s)
        if not task.done():
            task.cancel()
            await asyncio.wait({task}, timeout=grace_s)
    except asyncio.CancelledError:
        task.cancel()
        raise
    if not task.done():
        logger.warning("%s did not end when cancelled; leaving it to end on its own", what)
        _strays.add(task)
        task.add_done_callback(_forget)
        raise TimeoutError
    if task.cancelled():
        raise TimeoutError
    return task.result()


def strays() -> int:
    """How many cancelled tasks are still running (tests, diagnostics)."""
    return len(_strays)


def _forget(task: asyncio.Future[Any]) -> None:
    _strays.discard(task)
    if not task.cancelled():
        task.exception()  # retrieved: it has nobody to report to
