"""Waiting on a channel-layer channel with a timeout, without cancelling the receive.

A channels_redis receive (4.3, redis-py 8, Python 3.11) that is cancelled just as its BZPOPMIN's
own timeout ends can lose the cancellation: `Task.cancelling()` says 1, no CancelledError reaches
it, and it goes on receiving, deaf to every later cancel. `asyncio.wait_for` then waits for it
forever past its timeout (a TTS request whose worker had died hung for good instead of failing
with tts_unavailable), and so does the event loop's shutdown. So a receive that has waited long
enough is ended the way it expects to end: by a message on its channel (`layer_wait.gave_up`),
sent by the waiter; the caller gets None, or the real message if one came first.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from typing import Any

logger = logging.getLogger("eva.layer_wait")

GAVE_UP = "layer_wait.gave_up"
END_GRACE_S = 5.0  # how long the wake-up message is given to reach a receive

# Receives being woken after their caller was cancelled (or whose wake-up did not arrive): kept
# referenced until they end.
_ending: set[asyncio.Task[Any]] = set()


async def receive_within(layer: Any, channel: str, timeout_s: float) -> dict[str, Any] | None:
    """The next message on `channel` (a channel of this process's) within `timeout_s`, else None.
    Cancelling the caller does not cancel the receive either: it is woken the same way, in the
    background. A wake-up left over from an earlier wait (a real message beat it) is skipped."""
    deadline = time.monotonic() + max(timeout_s, 0.0)
    while True:
        message = await _receive_once(layer, channel, deadline - time.monotonic())
        if message is None or message.get("type") != GAVE_UP:
            return message


async def _receive_once(layer: Any, channel: str, timeout_s: float) -> dict[str, Any] | None:
    receive = asyncio.ensure_future(layer.receive(channel))
    token = ""
    try:
        await asyncio.wait({receive}, timeout=max(timeout_s, 0.0))
        if not receive.done():
            token = uuid.uuid4().hex
            await layer.send(channel, {"type": GAVE_UP, "token": token})
            await asyncio.wait({receive}, timeout=END_GRACE_S)
    except BaseException:
        _end_later(layer, channel, receive, woken=bool(token))
        raise
    if not receive.done():
        logger.warning("a receive on %s was not woken by its wake-up message", channel)
        _keep(receive)
        return None
    message: dict[str, Any] = receive.result()
    if token and message.get("type") == GAVE_UP and message.get("token") == token:
        return None  # its own wake-up: the time is up
    return message  # a real message, or an older wake-up (skipped by the caller)


def ending() -> int:
    """How many receives are still being ended in the background (tests, diagnostics)."""
    return len(_ending)


def _end_later(layer: Any, channel: str, receive: asyncio.Task[Any], *, woken: bool) -> None:
    if receive.done():
        _retrieve(receive)
        return
    _keep(receive)
    if woken:  # its wake-up is on its way (or failed to go: then it ends with the layer)
        return

    async def wake() -> None:
        try:
            await layer.send(channel, {"type": GAVE_UP, "token": uuid.uuid4().hex})
        except Exception:
            logger.warning("could not wake a receive on %s; cancelling it", channel, exc_info=True)
            receive.cancel()

    _keep(asyncio.get_running_loop().create_task(wake()))


def _keep(task: asyncio.Task[Any]) -> None:
    _ending.add(task)
    task.add_done_callback(_forget)


def _forget(task: asyncio.Task[Any]) -> None:
    _ending.discard(task)
    _retrieve(task)


def _retrieve(task: asyncio.Task[Any]) -> None:
    if not task.cancelled():
        task.exception()  # retrieved: nobody waits for it any more
