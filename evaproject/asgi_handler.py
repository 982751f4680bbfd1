"""Django's ASGI handler, with each request's sync thread taken from a pool instead of started.

Under ASGI, Django gives every HTTP request a thread of its own for its sync work (the request
signals' receivers, the hooks of sync middlewares, sync views): asgiref starts a one-thread
executor at the request's first such call and joins it when the request ends. Starting and
joining that thread was a fifth of the server's CPU for SSE chat at 50 streams (bench/RESULTS.md).
Here the request gets an idle one-thread executor from a pool and gives it back when it ends:
still one thread per request at a time, as before, so thread-local state (Django's database
connections) behaves as in a threaded WSGI server, where threads serve one request after another;
the request signals' receivers close or return connections as they do there.

asgiref's public `ThreadSensitiveContext(executor=...)` does the routing. An executor goes back to
the pool only once the work already queued on it has run (a sync call whose request was cancelled
keeps running), so a request never waits behind another's leftover. A task that a request
starts and that outlives it must not make thread-sensitive sync calls (asgiref refuses them once
the request's context has exited; with Django's own handler they went to an executor nobody
joined): EVA's background writes (chat replies after a cancel, metrics) use
`thread_sensitive=False` or the async database path.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from typing import Any

from asgiref.sync import ThreadSensitiveContext
from django.core.handlers.asgi import ASGIHandler

IDLE_THREADS_KEPT = 128  # beyond this many idle request threads, finished ones are let go


def _nothing() -> None:
    return None


class ThreadPool:
    """One-thread executors, each lent to one request at a time."""

    def __init__(self, keep: int = IDLE_THREADS_KEPT) -> None:
        self.keep = keep
        self._idle: list[ThreadPoolExecutor] = []  # list.pop/append are atomic: the loop takes, workers give back

    @property
    def idle(self) -> int:
        return len(self._idle)

    def acquire(self) -> ThreadPoolExecutor:
        try:
            return self._idle.pop()
        except IndexError:
            return ThreadPoolExecutor(max_workers=1, thread_name_prefix="django-request")

    def release(self, executor: ThreadPoolExecutor) -> None:
        # Queued behind whatever the request left running; its callback runs on the executor's thread.
        executor.submit(_nothing).add_done_callback(lambda _: self._put(executor))

    def _put(self, executor: ThreadPoolExecutor) -> None:
        if len(self._idle) < self.keep:
            self._idle.append(executor)
        else:
            executor.shutdown(wait=False)


class PooledThreadASGIHandler(ASGIHandler):
    """ASGIHandler whose requests borrow their sync thread from a `ThreadPool`."""

    def __init__(self) -> None:
        super().__init__()
        self.threads = ThreadPool()

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await super().__call__(scope, receive, send)  # Django's own error for other types
            return
        executor = self.threads.acquire()
        try:
            async with ThreadSensitiveContext(executor=executor):
                await self.handle(scope, receive, send)
        finally:
            self.threads.release(executor)
