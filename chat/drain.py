"""Graceful restart (#16): the chat streams a web process holds, and how they end when it stops.

Each open WebSocket, each running SSE reply and each reply going on after its client left (a
detached reply, kept for a resume: chat/replay.py) registers here. `drain_streams(deadline)`
(called by evaproject.restart when the process gets SIGTERM) marks the process as draining, then
asks every registered stream to end: a reply in flight is let finish until the deadline; one
still running then is stopped (its partial reply stored, its metric row recorded with error_code
`server_restarting`); the client, if it is still there, is told with an `error` frame or event
`server_restarting` (and WebSockets close with 1012, "service restart"). Writes started
meanwhile (partial replies, metric rows) are awaited before it returns.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any, Protocol

from chat.generation import ChatGeneration, drain_background_writes
from metrics.recorder import flush_metrics

logger = logging.getLogger("chat.drain")

RESTARTING_CODE = "server_restarting"
RESTARTING_MESSAGE = "The server is restarting: reconnect in a moment and send your message again."
CLOSE_RESTARTING = 1012  # RFC 6455 registry: service restart
# daphne's WebSocket library (autobahn) refuses to send close codes other than 1000 and
# 3000-4999, 1012 included (its send raises): there the close is 4012, the same in private range.
CLOSE_RESTARTING_DAPHNE = 4012


class Drainable(Protocol):
    """A stream that can end itself before the process stops (a socket, an SSE reply)."""

    async def drain(self, deadline: float) -> None:
        """Let a reply in flight finish until `deadline` (the loop's clock), stop it after; tell the client."""


async def let_finish(task: asyncio.Task[Any], deadline: float) -> bool:
    """Wait for a reply's task until `deadline` (the loop's clock); whether it ended by then."""
    if task.done():
        return True
    done, _ = await asyncio.wait([task], timeout=max(0.0, deadline - asyncio.get_running_loop().time()))
    return bool(done)


async def finish_or_stop(task: asyncio.Task[Any], generation: ChatGeneration | None, deadline: float) -> bool:
    """A reply may finish until `deadline`; one still running then is stopped with
    `server_restarting` as its stop code (its own cleanup keeps it as partial and records its
    metric row). Whether it had to be stopped."""
    if await let_finish(task, deadline):
        return False
    if generation is not None:
        generation.stop_code = RESTARTING_CODE
    task.cancel()
    await asyncio.wait([task])
    return True


_streams: set[Drainable] = set()
_draining = False


def draining() -> bool:
    """Whether this process is stopping: new work is refused with `server_restarting`."""
    return _draining


def stream_opened(stream: Drainable) -> None:
    _streams.add(stream)


def stream_closed(stream: Drainable) -> None:
    _streams.discard(stream)


def open_streams() -> int:
    return len(_streams)


async def drain_streams(deadline: float) -> None:
    """End every registered stream (see the module's docstring), then wait for their writes."""
    global _draining
    _draining = True
    streams = list(_streams)
    if streams:
        logger.warning("draining %d chat stream(s) before the process stops", len(streams))
        outcomes = await asyncio.gather(*(stream.drain(deadline) for stream in streams), return_exceptions=True)
        for outcome in outcomes:
            if isinstance(outcome, BaseException):
                logger.error("a chat stream failed to drain", exc_info=outcome)
    await drain_background_writes()  # partial replies stored after a stop
    await flush_metrics()


def reset_for_tests() -> None:
    """Back to serving (tests that drain in-process)."""
    global _draining
    _draining = False
    _streams.clear()
