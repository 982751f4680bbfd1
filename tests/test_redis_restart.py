"""The web process after its Redis restarts (#16): the pooled connections Redis dropped are
replaced and the command sent once more, so the first request after the restart works: a rate
limit is counted (not `rate_limit_unavailable`), a socket is counted under its caps, a
revocation is published, the channel layer (the TTS worker's road: not `tts_unavailable`) and
the cache answer.

A `redis-server` of the test's own (tests/voice/test_worker_redis.py's OwnRedis) is killed and
started again on the same port; each client is used once before, so that its pool holds a
connection the restart makes stale.
"""

from __future__ import annotations

import copy
import uuid
from collections.abc import Iterator

import pytest
from channels_redis.core import RedisChannelLayer
from django.core.cache.backends.redis import RedisCache

from accounts import ratelimit, revocation
from tests.voice.test_worker_redis import OwnRedis


@pytest.fixture
def own_redis(settings) -> Iterator[OwnRedis]:
    redis = OwnRedis()
    redis.start()
    settings.REDIS_URL = redis.url
    settings.CHANNEL_LAYER_PREFIX = f"evarestart{uuid.uuid4().hex[:8]}"
    ratelimit.reset_rate_limits()
    yield redis
    redis.kill()
    ratelimit.reset_rate_limits()


def restart(redis: OwnRedis) -> None:
    redis.kill()
    redis.start()


async def test_the_first_rate_limit_check_after_a_redis_restart_is_counted(own_redis):
    await ratelimit.rate_limit_check(user_id=1, api_key_id=2)
    restart(own_redis)
    await ratelimit.rate_limit_check(user_id=1, api_key_id=2)  # no rate_limit_unavailable


async def test_the_first_socket_after_a_redis_restart_is_counted_under_its_caps(own_redis):
    async def ignore(code: str) -> None:
        pass

    before = await revocation.socket_open(user_id=1, api_key_prefix="abcd", session_key=None, on_revoked=ignore)
    assert before.counted
    restart(own_redis)
    after = await revocation.socket_open(user_id=1, api_key_prefix="abcd", session_key=None, on_revoked=ignore)
    assert after.counted == before.counted  # counted, not let through uncounted as when Redis is down
    for sock in (before, after):
        await revocation.socket_close(sock)


@pytest.mark.django_db(transaction=True)
def test_a_revocation_after_a_redis_restart_is_published(own_redis, caplog):
    import redis

    # Outside a transaction, the publication runs at once (transaction.on_commit).
    revocation.credentials_revoke(credentials=[revocation.key_credential("abcd")], code="key_revoked")
    restart(own_redis)
    caplog.clear()
    revocation.credentials_revoke(credentials=[revocation.key_credential("efgh")], code="key_revoked")
    assert "could not publish" not in caplog.text
    marks = redis.Redis.from_url(own_redis.url).keys("*revoked*")
    assert marks, "the revocation left no mark in Redis"


async def test_the_channel_layer_after_a_redis_restart_sends_and_receives(own_redis, settings):
    host = copy.copy(settings.CHANNEL_LAYERS["default"]["CONFIG"]["hosts"][0])  # EVA's configuration
    layer = RedisChannelLayer(hosts=[{**host, "address": own_redis.url}], prefix=settings.CHANNEL_LAYER_PREFIX)
    try:
        channel = await layer.new_channel("restart-test")
        await layer.send(channel, {"type": "before"})
        assert (await layer.receive(channel))["type"] == "before"
        restart(own_redis)
        await layer.send(channel, {"type": "after"})  # what a TTS request does first
        assert (await layer.receive(channel))["type"] == "after"
    finally:
        await layer.close_pools()


def test_the_cache_after_a_redis_restart_answers(own_redis, settings):
    options = settings.CACHES["default"]
    cache = RedisCache(own_redis.url, {"OPTIONS": options.get("OPTIONS", {})})
    cache.set("k", "before")
    restart(own_redis)
    cache.set("k", "after")
    assert cache.get("k") == "after"
