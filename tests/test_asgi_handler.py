"""Django's HTTP handler lends each request a pooled thread for its sync work (evaproject/asgi_handler.py)."""

from __future__ import annotations

import asyncio
import threading

import pytest
from asgiref.testing import ApplicationCommunicator

from evaproject.asgi_handler import PooledThreadASGIHandler, ThreadPool
from tests import hooks_urls

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.urls("tests.hooks_urls")]


async def get(app, path: str) -> tuple[int, bytes]:
    scope = {
        "type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "GET", "scheme": "http",
        "path": path, "raw_path": path.encode(), "query_string": b"", "root_path": "",
        "headers": [(b"host", b"localhost")], "client": ("127.0.0.1", 40000), "server": ("127.0.0.1", 80),
    }
    communicator = ApplicationCommunicator(app, scope)
    await communicator.send_input({"type": "http.request", "body": b"", "more_body": False})
    start = await communicator.receive_output(15)
    body = b""
    while True:
        message = await communicator.receive_output(15)
        body += message.get("body", b"")
        if not message.get("more_body"):
            break
    await communicator.wait(15)
    return start["status"], body


async def back_in_the_pool(app: PooledThreadASGIHandler, count: int) -> None:
    """Executors go back from their own threads, just after the request ends."""
    for _ in range(500):
        if app.threads.idle >= count:
            return
        await asyncio.sleep(0.01)
    raise AssertionError(f"{app.threads.idle} idle executors, expected {count}")


@pytest.fixture
def threads():
    hooks_urls.threads.clear()
    hooks_urls.partners.reset()
    yield hooks_urls.threads
    hooks_urls.threads.clear()


async def test_requests_one_after_another_reuse_one_thread_off_the_loop(threads):
    app = PooledThreadASGIHandler()
    for _ in range(3):
        assert await get(app, "/nothing") == (200, b"ok")
        await back_in_the_pool(app, 1)
    assert len(threads) == 3
    assert len(set(threads)) == 1  # the same pooled thread each time, not a new one per request
    assert threads[0] is not threading.current_thread()
    assert threads[0].name.startswith("django-request")


async def test_concurrent_requests_each_get_a_thread_of_their_own(threads):
    app = PooledThreadASGIHandler()
    # The view waits for its partner: on one shared thread the second could never enter it.
    results = await asyncio.gather(get(app, "/meet"), get(app, "/meet"))
    assert results == [(200, b"met"), (200, b"met")]
    assert len(set(threads)) == 2
    await back_in_the_pool(app, 2)


async def test_other_scope_types_still_get_djangos_error():
    with pytest.raises(ValueError, match="Django can only handle ASGI/HTTP"):
        await PooledThreadASGIHandler()({"type": "websocket"}, None, None)


class WatchedPool(ThreadPool):
    """A ThreadPool that tells when an executor has come back (or been let go)."""

    def __init__(self, keep: int) -> None:
        super().__init__(keep)
        self.returns = threading.Semaphore(0)

    def _put(self, executor) -> None:
        super()._put(executor)
        self.returns.release()


def test_an_executor_returns_to_the_pool_only_once_the_work_left_on_it_is_done():
    pool = WatchedPool(keep=4)
    executor = pool.acquire()
    leftover = threading.Event()
    executor.submit(leftover.wait, 10)  # a sync call whose request was cancelled keeps running
    pool.release(executor)
    assert not pool.returns.acquire(timeout=0.2)
    assert pool.idle == 0  # not lent to the next request while busy
    leftover.set()
    assert pool.returns.acquire(timeout=10)
    assert pool.acquire() is executor


def test_idle_executors_beyond_the_limit_are_shut_down():
    pool = WatchedPool(keep=1)
    first, second = pool.acquire(), pool.acquire()
    assert first is not second
    for executor in (first, second):
        pool.release(executor)
        assert pool.returns.acquire(timeout=10)
    assert pool.idle == 1
    kept = pool.acquire()
    gone = second if kept is first else first
    with pytest.raises(RuntimeError):
        gone.submit(lambda: None)  # shut down
