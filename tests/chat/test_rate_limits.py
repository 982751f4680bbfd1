"""Rate limits per key and per user, kept in Redis: exact under concurrency."""

from __future__ import annotations

import asyncio
import uuid

import pytest
from asgiref.sync import sync_to_async
from django.contrib.auth import get_user_model
from django.test import AsyncClient

from chat.api_keys import api_key_create
from tests.chat.wsclient import receive_until, ws_with_key

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture(autouse=True)
def _own_counters(settings):
    # Counters live in Redis across tests and runs: a fresh prefix gives each test its own.
    settings.CHANNEL_LAYER_PREFIX = f"rl-{uuid.uuid4().hex[:8]}"
    from chat import ratelimit

    ratelimit._limiters.clear()
    yield
    ratelimit._limiters.clear()


async def post(key):
    return await AsyncClient().post(
        "/api/v1/chat", {"message": "hi"}, content_type="application/json", headers={"X-API-Key": key}
    )


async def test_parallel_requests_with_one_key_never_exceed_the_limit(ollama, user_key, settings):
    settings.RATE_LIMIT_PER_KEY = "5/minute"
    settings.RATE_LIMIT_PER_USER = "1000/minute"
    _, key = await user_key()
    responses = await asyncio.gather(*(post(key) for _ in range(30)))
    codes = sorted(r.status_code for r in responses)
    assert codes.count(200) == 5 and codes.count(429) == 25
    limited = next(r for r in responses if r.status_code == 429)
    assert limited.json()["code"] == "rate_limited"
    assert 1 <= int(limited["Retry-After"]) <= 60


async def test_the_user_limit_spans_all_of_a_users_keys(ollama, settings):
    settings.RATE_LIMIT_PER_KEY = "100/minute"
    settings.RATE_LIMIT_PER_USER = "4/minute"

    @sync_to_async
    def two_keys():
        user = get_user_model().objects.create_user("alice")
        return [api_key_create(owner=user, name=f"k{i}", scopes="chat")[1] for i in range(2)]

    keys = await two_keys()
    responses = await asyncio.gather(*(post(keys[i % 2]) for i in range(12)))
    assert sorted(r.status_code for r in responses).count(200) == 4


async def test_the_socket_gets_a_rate_limited_frame_and_stays_open(ollama, user_key, settings):
    settings.RATE_LIMIT_PER_KEY = "2/minute"
    _, key = await user_key()
    ws = ws_with_key(key)
    await ws.connect()
    for _ in range(2):
        await ws.send_json_to({"type": "message", "content": "hi"})
        assert (await receive_until(ws, "end"))[-1]["type"] == "end"
    await ws.send_json_to({"type": "message", "content": "hi"})
    frame = await ws.receive_json_from()
    assert frame["type"] == "error" and frame["code"] == "rate_limited" and "Retry in" in frame["message"]
    await ws.send_json_to({"type": "ping"})
    assert await ws.receive_json_from() == {"type": "pong"}
    await ws.disconnect()
