"""`manage.py runworker voice-tts`: Channels' worker, listening again when the channel layer comes back.

Channels' worker ends when a receive on the channel layer raises (Redis restarted, network
cut), and with it the whole process: voice then stays down until something restarts it.
This command (same name and arguments; it takes precedence because "voice" is listed before
"channels" in INSTALLED_APPS) runs a Worker subclass whose listeners start listening again
after a connection failure, with a bounded, logged back-off; the engine stays loaded.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

from channels.management.commands.runworker import Command as ChannelsRunworker
from channels.worker import Worker
from django.conf import settings
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from voice import allocator
from voice.config import TTS_CHANNEL

logger = logging.getLogger("voice.worker")

RETRY_FIRST_S = 0.5
RETRY_MAX_S = 10.0
# A listener that ran this long before failing had a working connection: start the back-off over.
HEALTHY_AFTER_S = 30.0
CONNECTION_ERRORS = (RedisConnectionError, RedisTimeoutError, OSError)


def retry_delay(*, failures: int) -> float:
    """Seconds to wait after `failures` consecutive failures: doubling from RETRY_FIRST_S, capped."""
    return float(min(RETRY_MAX_S, RETRY_FIRST_S * 2 ** max(0, failures - 1)))


class ReconnectingWorker(Worker):
    """Channels' Worker whose listeners survive the channel layer going away and coming back."""

    async def listener(self, channel: str) -> None:
        failures = 0
        while True:
            started = time.monotonic()
            try:
                await super().listener(channel)
                return
            except CONNECTION_ERRORS as exc:
                failures = 1 if time.monotonic() - started >= HEALTHY_AFTER_S else failures + 1
                delay = retry_delay(failures=failures)
                logger.warning(
                    "channel layer unreachable while listening on %s (%s: %s); listening again in %.1f s (attempt %d)",
                    channel,
                    type(exc).__name__,
                    exc,
                    delay,
                    failures,
                )
            await asyncio.sleep(delay)
            logger.info("listening on %s again", channel)


class Command(ChannelsRunworker):
    help = "Run a Channels worker that keeps listening across channel-layer (Redis) outages."
    worker_class = ReconnectingWorker

    def handle(self, *args: Any, **options: Any) -> None:
        if TTS_CHANNEL in options.get("channels", ()):
            allocator.exec_with(settings.TTS_ALLOCATOR)  # the TTS process on jemalloc: starts again once
        super().handle(*args, **options)
