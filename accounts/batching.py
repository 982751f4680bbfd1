"""Requests of one event loop that go out together: one round trip for many callers.

On the chat hot path, many requests each send one small command to Postgres or Redis. Each
command alone costs a pool checkout, a round trip and a few trips around the event loop; under
load that CPU, not the servers, is what delays the first token. A `Batcher` collects what the
loop's tasks submit while a batch is out and sends it as the next batch through `send`
(a pipeline), so that the cost is paid once per batch. A command alone goes out on the loop's
next turn, with nothing to wait for.

One batch at a time per loop: while it is out, new commands wait for the next one. That is
what makes batches (and keeps two batches of one process from locking the same rows in
opposite orders). A command whose caller was cancelled before its batch went out is dropped.
`send` gives each caller its own result or error (a command that fails must fail alone:
accounts.asyncdb does it with savepoints); an exception that leaves `send` reaches every
caller of the batch that it has not answered.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any, Generic, TypeVar, cast

Item = TypeVar("Item")
Result = TypeVar("Result")


class Batcher(Generic[Item, Result]):
    """`submit(item)` gives a future that `send(batch)` settles (see `settle`)."""

    def __init__(
        self,
        send: Callable[[list[tuple[Item, asyncio.Future[Result]]]], Awaitable[None]],
        *,
        max_batch: int = 64,
        fails_all: tuple[type[Exception], ...] = (),
    ) -> None:
        self._send = send
        self.max_batch = max_batch
        # Errors that say the server cannot be reached now (a pool that gave no connection in
        # its timeout): the commands queued behind the batch get them at once instead of each
        # waiting as long again.
        self.fails_all = fails_all
        self.waiting: list[tuple[Item, asyncio.Future[Result]]] = []
        self.sender: asyncio.Task[None] | None = None
        self.batches = 0  # sent so far (tests, benchmarks)

    def submit(self, item: Item) -> asyncio.Future[Result]:
        future: asyncio.Future[Result] = asyncio.get_running_loop().create_future()
        self.waiting.append((item, future))
        if self.sender is None:
            # Starts on the loop's next turn: what else this turn submits goes in the same batch.
            self.sender = asyncio.ensure_future(self._send_all())
        return future

    async def _send_all(self) -> None:
        batch: list[tuple[Item, asyncio.Future[Result]]] = []
        try:
            while self.waiting:
                batch, self.waiting = self.waiting[: self.max_batch], self.waiting[self.max_batch :]
                batch = [entry for entry in batch if not entry[1].done()]  # callers cancelled meanwhile
                if batch:
                    self.batches += 1
                    try:
                        await self._send(batch)
                    except Exception as exc:  # no connection, a lost one: every caller of the batch gets it
                        failed = batch + self.waiting if isinstance(exc, self.fails_all) else batch
                        if failed is not batch:
                            self.waiting = []
                        for _, future in failed:
                            settle(future, error=exc)
        finally:
            self.sender = None
            for _, future in batch + self.waiting:  # cancelled (the loop is closing): the callers learn it
                future.cancel()
            self.waiting = []

    async def drain(self) -> None:
        """Wait for the batch that is out and those waiting (shutdown, tests)."""
        if self.sender is not None:
            await asyncio.gather(self.sender, return_exceptions=True)


def settle(future: asyncio.Future[Result], result: Result | None = None, *, error: BaseException | None = None) -> None:
    """Give a caller its result or error, unless it was cancelled after its batch went out."""
    if future.done():
        return
    if error is not None:
        future.set_exception(error)
    else:
        # A sender passes a result whenever it passes no error; None is a valid Result too.
        future.set_result(cast(Result, result))


def settle_each(batch: list[tuple[Any, asyncio.Future[Result]]], results: list[Any]) -> None:
    """Give each caller of a pipelined batch its own result, or its own error (an Exception result)."""
    for (_, future), result in zip(batch, results, strict=True):
        if isinstance(result, Exception):
            settle(future, error=result)
        else:
            settle(future, result)
