"""`manage.py runworker voice-tts` survives its Redis going away and coming back, in the same process.

The worker and this test talk to a Redis of the test's own (a `redis-server` on a free port),
so that killing it does not touch the shared one.
"""

from __future__ import annotations

import asyncio
import itertools
import socket
import subprocess
import time
import uuid
from collections.abc import Iterator

import pytest
from channels_redis.core import RedisChannelLayer

from voice.management.commands.runworker import RETRY_MAX_S, retry_delay

ANSWER_WITHIN_S = 45.0  # after Redis is back: the back-off's cap plus the model's warm caches, on a busy machine


class OwnRedis:
    """A throw-away `redis-server` on one port, which the test kills and starts again."""

    def __init__(self) -> None:
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            self.port = probe.getsockname()[1]
        self.process: subprocess.Popen[str] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        self.process = subprocess.Popen(
            ["redis-server", "--port", str(self.port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        assert self.process.stdout is not None
        for line in self.process.stdout:  # blocks until the server says it listens
            if "Ready to accept connections" in line:
                return
        raise AssertionError(f"redis-server on port {self.port} did not start")

    def kill(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait(timeout=10)


@pytest.fixture
def own_redis() -> Iterator[OwnRedis]:
    redis = OwnRedis()
    redis.start()
    yield redis
    redis.kill()


async def ping(url: str, *, prefix: str, timeout_s: float) -> dict:
    """One tts.ping over a fresh channel layer on `url`; the worker's pong."""
    layer = RedisChannelLayer(hosts=[url], prefix=prefix)
    try:
        reply_channel = await layer.new_channel("voice-tts-reply")
        now = time.time()
        await layer.send(
            "voice-tts",
            {
                "type": "tts.ping",
                "reply_channel": reply_channel,
                "request_id": uuid.uuid4().hex,
                "deadline": now + timeout_s,
                "pickup_deadline": now + timeout_s,
            },
        )
        return await asyncio.wait_for(layer.receive(reply_channel), timeout=timeout_s)
    finally:
        await layer.close_pools()


async def ping_until_answered(url: str, *, prefix: str, within_s: float) -> dict:
    deadline = time.monotonic() + within_s
    while True:
        try:
            return await ping(url, prefix=prefix, timeout_s=3.0)
        except Exception as exc:  # no pong in time, or redis-py's ConnectionError while Redis comes up
            if time.monotonic() > deadline:
                raise AssertionError(f"the worker did not answer within {within_s:g} s: {exc!r}") from exc


def test_the_back_off_doubles_and_is_bounded():
    delays = [retry_delay(failures=n) for n in range(1, 12)]
    assert delays[0] > 0 and all(b >= a for a, b in itertools.pairwise(delays))
    assert delays[1] == 2 * delays[0] and max(delays) == RETRY_MAX_S


async def test_the_worker_answers_again_after_its_redis_restarts_without_restarting_itself(own_redis, start_worker):
    prefix = f"evattsredis{uuid.uuid4().hex[:8]}"
    worker = start_worker(REDIS_URL=own_redis.url, CHANNEL_LAYER_PREFIX=prefix)
    before = await ping_until_answered(own_redis.url, prefix=prefix, within_s=30)
    assert before["type"] == "tts.pong" and before["ok"] is True

    mark = len(worker.lines)
    own_redis.kill()
    await asyncio.to_thread(worker.wait_for_line, "channel layer unreachable", start=mark, timeout=30)
    # It keeps trying while Redis is down, with a logged, growing delay.
    await asyncio.to_thread(worker.wait_for_line, "(attempt 2)", start=mark, timeout=30)
    assert worker.process.poll() is None

    own_redis.start()
    after = await ping_until_answered(own_redis.url, prefix=prefix, within_s=ANSWER_WITHIN_S)
    assert after["type"] == "tts.pong" and after["ok"] is True
    assert after["worker"] == before["worker"]  # host:pid, the same process
    assert worker.process.poll() is None
    assert any("listening on voice-tts again" in line for line in worker.lines[mark:])
