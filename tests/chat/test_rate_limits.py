"""Rate limits per key and per user, kept in Redis: exact under concurrency."""

from __future__ import annotations

import asyncio
import contextvars
import uuid

import pytest
from asgiref.sync import sync_to_async
from django.contrib.auth import get_user_model
from django.test import AsyncClient

from accounts.api_keys import api_key_create
from tests.chat.wsclient import receive_until, ws_with_key

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture(autouse=True)
def _own_counters(settings):
    # Counters live in Redis across tests and runs: a fresh prefix gives each test its own.
    settings.CHANNEL_LAYER_PREFIX = f"rl-{uuid.uuid4().hex[:8]}"
    from accounts.ratelimit import reset_rate_limits

    reset_rate_limits()
    yield
    reset_rate_limits()


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


async def test_a_redis_that_does_not_answer_gives_503_rate_limit_unavailable(ollama, user_key, settings, monkeypatch):
    from accounts import ratelimit
    from chat.models import ChatMessage

    async def silent(reader, writer):  # accepts the connection, never answers
        await reader.read()

    server = await asyncio.start_server(silent, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    settings.REDIS_URL = f"redis://127.0.0.1:{port}/0"
    monkeypatch.setattr(ratelimit, "REDIS_TIMEOUT_S", 0.5)
    _, key = await user_key()
    async with server:
        response = await post(key)
    assert response.status_code == 503
    body = response.json()
    assert body["code"] == "rate_limit_unavailable" and "Redis" in body["message"]
    assert await ChatMessage.objects.acount() == 0  # a refused request stores nothing


async def test_the_socket_says_redis_is_down_and_stays_open(ollama, user_key, settings):
    import socket

    with socket.socket() as probe:  # a port nothing listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    settings.REDIS_URL = f"redis://127.0.0.1:{port}/0"
    _, key = await user_key()
    ws = ws_with_key(key)
    await ws.connect()
    await ws.send_json_to({"type": "message", "content": "hi"})
    frame = await ws.receive_json_from(timeout=10)
    assert frame["type"] == "error" and frame["code"] == "rate_limit_unavailable"
    await ws.send_json_to({"type": "ping"})
    assert await ws.receive_json_from() == {"type": "pong"}
    await ws.disconnect()


async def test_a_refused_request_leaves_no_task_behind(ollama, user_key, settings):
    settings.RATE_LIMIT_PER_USER = "1/minute"
    _, key = await user_key()
    assert (await post(key)).status_code == 200

    def pending() -> set[asyncio.Task]:  # the metric writer comes and goes on its own schedule
        return {t for t in asyncio.all_tasks() if not t.done() and t.get_name() != "metrics-writer"}

    before = pending()
    assert (await post(key)).status_code == 429
    left = pending() - before  # the key's hit and the history read, sent alongside: they finish
    if left:
        await asyncio.wait(left, timeout=10)
    assert pending() <= before


@pytest.fixture(params=["redis", "memory"])
def store(request, settings):
    if request.param == "memory":
        settings.REDIS_URL = ""  # the embedded default: counts in process memory
    return request.param


async def outcomes(checks) -> list[str]:
    from accounts.errors import RateLimited

    results = await asyncio.gather(*checks, return_exceptions=True)
    for result in results:
        if isinstance(result, BaseException) and not isinstance(result, RateLimited):
            raise result
    return [f"refused {r.retry_after}" if isinstance(r, RateLimited) else "ok" for r in results]


async def test_a_request_refused_by_one_limit_does_not_use_up_the_other(settings, store):
    from accounts.ratelimit import rate_limit_check

    settings.RATE_LIMIT_PER_KEY = "2/minute"
    settings.RATE_LIMIT_PER_USER = "3/minute"
    by_key_a = await outcomes(rate_limit_check(user_id=1, api_key_id=10) for _ in range(3))
    assert sorted(by_key_a)[:2] == ["ok", "ok"] and sorted(by_key_a)[2].startswith("refused")
    # The key's refusal did not count against the user: one place is left, for another key.
    assert await outcomes([rate_limit_check(user_id=1, api_key_id=11)]) == ["ok"]
    [last] = await outcomes([rate_limit_check(user_id=1, api_key_id=12)])
    assert last.startswith("refused") and 1 <= int(last.split()[1]) <= 60


async def test_parallel_checks_are_exact_and_go_to_redis_in_one_round_trip(settings, store):
    from accounts import ratelimit

    settings.RATE_LIMIT_PER_KEY = "7/minute"
    settings.RATE_LIMIT_PER_USER = "1000/minute"
    results = await outcomes(ratelimit.rate_limit_check(user_id=2, api_key_id=20) for _ in range(25))
    assert results.count("ok") == 7 and len(results) == 25
    if store == "redis":
        assert ratelimit._redis_batcher()[1].batches == 1  # all 25 issued in one loop turn


async def test_a_refused_request_leaves_a_client_error_row(ollama, user_key, settings):
    """#18: rate-limited requests are counted (as client errors, not as EVA's failures)."""
    from metrics.models import RequestMetric
    from metrics.recorder import flush_metrics

    settings.RATE_LIMIT_PER_KEY = "2/minute"
    settings.RATE_LIMIT_PER_USER = "1000/minute"
    _, key = await user_key()
    responses = [await post(key) for _ in range(5)]
    assert [r.status_code for r in responses] == [200, 200, 429, 429, 429]
    await flush_metrics()
    rows = [row async for row in RequestMetric.objects.order_by("created_at").values("status", "error_code")]
    assert [row["error_code"] for row in rows if row["status"] == "error"] == ["rate_limited"] * 3
    assert len(rows) == 5


async def test_each_check_says_where_the_caller_stands(settings, store):
    from accounts.errors import RateLimited
    from accounts.ratelimit import current_rate_limit, rate_limit_check

    settings.RATE_LIMIT_PER_KEY = "3/minute"
    settings.RATE_LIMIT_PER_USER = "100/minute"
    states = [await rate_limit_check(user_id=3, api_key_id=30) for _ in range(3)]
    assert [(s.limit, s.remaining) for s in states] == [(3, 2), (3, 1), (3, 0)]  # the key's: the tighter
    assert all(1 <= s.reset_s <= 60 for s in states)
    assert current_rate_limit() == states[-1]
    with pytest.raises(RateLimited) as refused:
        await rate_limit_check(user_id=3, api_key_id=30)
    state = current_rate_limit()
    assert state is not None and (state.limit, state.remaining, state.reset_s) == (3, 0, refused.value.retry_after)
    # A user whose own limit is the tighter one, across their keys.
    settings.RATE_LIMIT_PER_KEY = "10/minute"
    settings.RATE_LIMIT_PER_USER = "2/minute"
    first = await rate_limit_check(user_id=4, api_key_id=40)
    second = await rate_limit_check(user_id=4, api_key_id=41)
    assert [(s.limit, s.remaining) for s in (first, second)] == [(2, 1), (2, 0)]


async def test_rest_answers_carry_the_rate_limit_headers(ollama, user_key, settings):
    settings.RATE_LIMIT_PER_KEY = "2/minute"
    settings.RATE_LIMIT_PER_USER = "1000/minute"
    _, key = await user_key()
    first, second, third = [await post(key) for _ in range(3)]
    assert [r.status_code for r in (first, second, third)] == [200, 200, 429]
    assert [r["X-RateLimit-Remaining"] for r in (first, second, third)] == ["1", "0", "0"]
    assert {r["X-RateLimit-Limit"] for r in (first, second, third)} == {"2"}
    assert 1 <= int(first["X-RateLimit-Reset"]) <= 60
    assert third["Retry-After"] == third["X-RateLimit-Reset"]
    # Operations that are not counted say nothing about the limit. (A server runs each request in
    # a task of its own; Django's test client runs them in the test's, whose context holds the
    # last check: this one gets a fresh context, as it would in a server.)
    asking = AsyncClient().get("/api/v1/sessions", headers={"X-API-Key": key})
    sessions = await asyncio.create_task(asking, context=contextvars.Context())
    assert sessions.status_code == 200 and "X-RateLimit-Limit" not in sessions
