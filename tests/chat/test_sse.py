"""Chat as Server-Sent Events through the real ASGI application (chat/sse.py): POST
/api/v1/chat/stream, the aliases on POST /api/v1/chat and the legacy POST /chat, their errors,
auth, disconnects and failures after the start."""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass

import pytest
from asgiref.sync import sync_to_async
from channels.testing import ApplicationCommunicator, HttpCommunicator
from django.conf import settings as django_settings
from django.contrib.auth import get_user_model
from django.test import AsyncClient, Client

from chat.generation import drain_background_writes
from chat.models import ChatMessage
from metrics.models import RequestMetric
from metrics.recorder import flush_metrics

pytestmark = pytest.mark.django_db(transaction=True)

STREAM = "/api/v1/chat/stream"


@dataclass
class Reply:
    status: int
    headers: dict[str, str]
    body: bytes

    def json(self) -> dict:
        return json.loads(self.body)

    def events(self) -> list[tuple[str, dict]]:
        return parse_sse(self.body)


def parse_sse(raw: bytes) -> list[tuple[str, dict]]:
    events = []
    for block in raw.decode().split("\n\n"):
        if not block.strip():
            continue
        lines = dict(line.split(": ", 1) for line in block.splitlines())
        events.append((lines["event"], json.loads(lines["data"])))
    return events


def _headers(key: str | None, extra: dict[str, str]) -> list[tuple[bytes, bytes]]:
    headers = {
        "host": "localhost:8000",  # a browser's Origin check compares it with Origin
        "content-type": "application/json",
        **({"x-api-key": key} if key else {}),
        **extra,
    }
    return [(name.lower().encode(), value.encode()) for name, value in headers.items()]


async def request(
    path: str, body: object = None, *, key: str | None = None, method: str = "POST", **headers: str
) -> Reply:
    """One request through evaproject.asgi.application, as a server would make it: the body, then
    http.disconnect once the response is complete; the application must then finish."""
    from evaproject.asgi import application

    raw = body if isinstance(body, bytes) else (b"" if body is None else json.dumps(body).encode())
    communicator = HttpCommunicator(application, method, path, body=raw, headers=_headers(key, headers))
    response = await communicator.get_response(timeout=10)
    await communicator.send_input({"type": "http.disconnect"})
    await communicator.wait(timeout=10)
    return Reply(
        status=response["status"],
        headers={name.decode().lower(): value.decode() for name, value in response["headers"]},
        body=response["body"],
    )


@sync_to_async
def stored(session_id="default", username="alice"):
    return list(
        ChatMessage.objects.filter(session__session_id=session_id, session__owner__username=username)
        .order_by("created_at", "id")
        .values_list("role", "content", "status")
    )


@sync_to_async
def browser_session(username: str = "carol") -> str:
    get_user_model().objects.create_user(username, password="pw-carol-123")
    client = Client()
    assert client.login(username=username, password="pw-carol-123")
    return client.cookies[django_settings.SESSION_COOKIE_NAME].value


def cookie(session_key: str) -> str:
    return f"{django_settings.SESSION_COOKIE_NAME}={session_key}"


# --- streams ----------------------------------------------------------------------------
async def test_the_stream_endpoint_answers_server_sent_events(ollama, user_key):
    _, key = await user_key()
    reply = await request(STREAM, {"message": "un deux", "session_id": "s"}, key=key)
    assert reply.status == 200
    assert reply.headers["content-type"] == "text/event-stream"
    assert reply.headers["cache-control"] == "no-cache" and reply.headers["x-accel-buffering"] == "no"
    events = reply.events()
    assert [name for name, _ in events] == ["start", "token", "token", "token", "end"]
    assert all(data["type"] == name for name, data in events)
    assert "".join(data["content"] for name, data in events if name == "token") == "Echo: un deux"
    assert events[-1][1]["done_reason"] == "stop" and events[-1][1]["session_id"] == "s"
    assert await stored("s") == [("user", "un deux", "complete"), ("assistant", "Echo: un deux", "complete")]
    await flush_metrics()
    metrics = RequestMetric.objects.filter(channel="sse", status="ok", request_id=events[0][1]["request_id"])
    assert await metrics.aexists()


async def test_stream_true_on_the_chat_url_streams(ollama, user_key):
    _, key = await user_key()
    reply = await request("/api/v1/chat", {"message": "un deux", "stream": True}, key=key)
    assert reply.status == 200 and reply.headers["content-type"] == "text/event-stream"
    assert [name for name, _ in reply.events()] == ["start", "token", "token", "token", "end"]
    await flush_metrics()
    assert await RequestMetric.objects.filter(channel="sse", status="ok").acount() == 1


async def test_accept_event_stream_on_the_chat_url_streams(ollama, user_key):
    _, key = await user_key()
    reply = await request("/api/v1/chat", {"message": "hi"}, key=key, accept="text/event-stream")
    assert reply.headers["content-type"] == "text/event-stream"
    assert [name for name, _ in reply.events()] == ["start", "token", "token", "end"]


async def test_the_legacy_chat_url_streams_too(ollama, user_key):
    _, key = await user_key()
    reply = await request("/chat", {"message": "hi", "stream": True}, key=key)
    assert reply.headers["content-type"] == "text/event-stream"
    assert [name for name, _ in reply.events()][-1] == "end"


async def test_without_stream_the_chat_url_still_answers_json_through_django(ollama, user_key):
    _, key = await user_key()
    for path in ("/api/v1/chat", "/chat"):
        reply = await request(path, {"message": "Salut", "stream": False}, key=key)
        assert reply.status == 200 and reply.headers["content-type"].startswith("application/json")
        assert reply.json()["response"] == "Echo: Salut"
    await flush_metrics()
    assert await RequestMetric.objects.filter(channel="rest", status="ok").acount() == 2


async def test_a_body_in_several_chunks_is_read_whole(ollama, user_key):
    from evaproject.asgi import application

    _, key = await user_key()
    raw = json.dumps({"message": "un deux", "stream": True}).encode()
    scope = {
        "type": "http", "http_version": "1.1", "method": "POST", "path": "/api/v1/chat", "query_string": b"",
        "headers": _headers(key, {}),
    }
    communicator = ApplicationCommunicator(application, scope)
    for start in range(0, len(raw), 7):
        await communicator.send_input({"type": "http.request", "body": raw[start:start + 7], "more_body": True})
    await communicator.send_input({"type": "http.request", "body": b"", "more_body": False})
    head = await communicator.receive_output(timeout=10)
    assert head["status"] == 200
    body = b""
    while True:
        chunk = await communicator.receive_output(timeout=10)
        body += chunk["body"]
        if not chunk.get("more_body"):
            break
    await communicator.send_input({"type": "http.disconnect"})
    await communicator.wait(timeout=10)
    assert "".join(data["content"] for name, data in parse_sse(body) if name == "token") == "Echo: un deux"


# --- errors before the start: JSON with a status ------------------------------------------
@pytest.mark.parametrize(
    ("body", "status", "code"),
    [
        ({"message": ""}, 422, "empty_message"),
        ({"message": "x" * 8001}, 422, "message_too_long"),
        ({"message": 5}, 422, "invalid_request"),
        ({}, 422, "invalid_request"),
        ({"message": "hi", "session_id": "a b"}, 422, "invalid_session_id"),
        (b"{nope", 400, "bad_request"),
    ],
)
async def test_bad_input_in_stream_mode_is_a_json_error_with_a_code(ollama, user_key, body, status, code):
    _, key = await user_key()
    for path in (STREAM, "/api/v1/chat"):
        sent = body if isinstance(body, bytes) else {**body, "stream": True}
        reply = await request(path, sent, key=key, accept="text/event-stream")
        assert reply.status == status and reply.headers["content-type"] == "application/json"
        assert reply.json()["code"] == code and reply.json()["message"]
    assert ollama.chat_requests() == []


async def test_a_schema_error_reads_as_the_rest_apis(user_key):
    _, key = await user_key()
    streamed = await request(STREAM, {"session_id": 5}, key=key)
    answered = await AsyncClient().post(
        "/api/v1/chat", {"session_id": 5}, content_type="application/json", headers={"X-API-Key": key}
    )
    assert streamed.status == answered.status_code == 422
    assert streamed.json() == answered.json()


async def test_no_backend_is_503_before_the_stream(user_key, settings):
    settings.OLLAMA_URL = "http://127.0.0.1:9"
    settings.GROQ_API_KEY = ""
    _, key = await user_key()
    for path in (STREAM, "/api/v1/chat"):
        reply = await request(path, {"message": "hi", "stream": True}, key=key)
        assert reply.status == 503 and reply.json()["code"] == "no_backend"


async def test_a_body_over_the_limit_is_413(ollama, user_key, settings):
    settings.DATA_UPLOAD_MAX_MEMORY_SIZE = 1000
    _, key = await user_key()
    big = {"message": "x" * 2000, "stream": True}
    for path, body in ((STREAM, big), ("/api/v1/chat", big), ("/api/v1/chat", {"message": "x" * 2000})):
        reply = await request(path, body, key=key)
        assert reply.status == 413 and reply.json()["code"] == "request_too_large"
    assert ollama.chat_requests() == []


async def test_only_post_is_allowed(user_key):
    _, key = await user_key()
    reply = await request(STREAM, key=key, method="GET")
    assert reply.status == 405 and reply.headers["allow"] == "POST"
    assert reply.json()["code"] == "method_not_allowed"


@pytest.fixture
def own_rate_counters(settings):
    # Counters live in Redis across tests and runs: a fresh prefix gives the test its own.
    from accounts.ratelimit import reset_rate_limits

    settings.CHANNEL_LAYER_PREFIX = f"rl-{uuid.uuid4().hex[:8]}"
    reset_rate_limits()
    yield
    reset_rate_limits()


async def test_the_rate_limit_is_429_with_retry_after(ollama, user_key, settings, own_rate_counters):
    settings.RATE_LIMIT_PER_KEY = "1/minute"
    _, key = await user_key()
    streamed = await request(STREAM, {"message": "hi"}, key=key)
    assert streamed.status == 200
    assert (streamed.headers["x-ratelimit-limit"], streamed.headers["x-ratelimit-remaining"]) == ("1", "0")
    assert 1 <= int(streamed.headers["x-ratelimit-reset"]) <= 60
    reply = await request(STREAM, {"message": "hi"}, key=key)
    assert reply.status == 429 and reply.json()["code"] == "rate_limited"
    assert 1 <= int(reply.headers["retry-after"]) <= 60
    assert reply.headers["x-ratelimit-remaining"] == "0" and reply.headers["x-ratelimit-limit"] == "1"


# --- who may stream ---------------------------------------------------------------------
async def test_a_missing_or_bad_key_is_401_and_a_key_without_chat_scope_403(user_key):
    reply = await request(STREAM, {"message": "hi"})
    assert reply.status == 401 and reply.json()["code"] == "unauthenticated"
    assert reply.headers["www-authenticate"] == 'Bearer realm="eva"'
    reply = await request(STREAM, {"message": "hi"}, key="eva_abc_def")
    assert reply.status == 401 and reply.json()["code"] == "invalid_api_key"
    _, tts_only = await user_key("tina", scopes="tts")
    reply = await request(STREAM, {"message": "hi"}, key=tts_only)
    assert reply.status == 403 and reply.json()["code"] == "missing_scope"


async def test_a_bearer_token_works_like_x_api_key(ollama, user_key):
    _, key = await user_key()
    reply = await request(STREAM, {"message": "hi"}, authorization=f"Bearer {key}")
    assert reply.status == 200 and reply.events()[-1][0] == "end"


async def test_a_logged_in_browser_from_our_origin_streams(ollama):
    session = await browser_session()
    reply = await request(STREAM, {"message": "hi"}, cookie=cookie(session), origin="http://localhost:8000")
    assert reply.status == 200 and reply.events()[-1][0] == "end"
    assert await stored(username="carol") == [("user", "hi", "complete"), ("assistant", "Echo: hi", "complete")]


@pytest.mark.parametrize("origin", ["https://evil.example", None])
async def test_a_cookie_from_another_origin_or_none_is_refused(ollama, origin):
    session = await browser_session()
    headers = {"cookie": cookie(session), **({"origin": origin} if origin else {})}
    for path in (STREAM, "/api/v1/chat"):
        reply = await request(path, {"message": "hi", "stream": True}, **headers)
        assert reply.status == 403 and reply.json()["code"] == "origin_not_allowed"
    assert ollama.chat_requests() == []


async def test_the_legacy_url_streams_for_api_keys_only(ollama):
    session = await browser_session()
    reply = await request("/chat", {"message": "hi", "stream": True}, cookie=cookie(session), origin="http://localhost:8000")
    assert reply.status == 401 and reply.json()["code"] == "unauthenticated"


# --- after the start: every stream ends with end or error -----------------------------------
async def test_an_upstream_failure_mid_stream_is_an_error_event_and_the_partial_is_kept(ollama, user_key):
    ollama.behaviour.mode = "error_mid_stream"
    _, key = await user_key()
    reply = await request(STREAM, {"message": "a b c d"}, key=key)
    assert reply.status == 200
    events = reply.events()
    assert events[0][0] == "start" and events[-1][0] == "error"
    assert events[-1][1]["code"] == "upstream_error"
    assert (await stored())[-1][2] == "partial"


async def test_a_failing_reply_write_ends_the_stream_with_an_error_event(ollama, user_key, monkeypatch):
    from chat.store import chat_store

    store_class = type(chat_store())

    async def broken_turn_finish(self, **fields):
        raise RuntimeError("the database went away")

    monkeypatch.setattr(store_class, "turn_finish", broken_turn_finish)
    _, key = await user_key()
    reply = await request(STREAM, {"message": "un deux"}, key=key)
    events = reply.events()
    assert [name for name, _ in events] == ["start", "token", "token", "token", "error"]
    assert events[-1][1]["code"] == "internal_error"
    assert events[-1][1]["request_id"] == events[0][1]["request_id"]
    await drain_background_writes()
    await flush_metrics()  # the request still has its metric row
    metric = await RequestMetric.objects.aget(request_id=events[0][1]["request_id"])
    assert (metric.channel, metric.status, metric.error_code) == ("sse", "error", "internal_error")


async def test_a_client_that_goes_away_stops_the_generation_and_ollama(ollama, user_key):
    from evaproject.asgi import application

    ollama.behaviour.reply_tokens = [f" w{i}" for i in range(200)]
    ollama.behaviour.token_interval_s = 0.02
    _, key = await user_key()
    communicator = HttpCommunicator(
        application, "POST", STREAM, body=json.dumps({"message": "long please"}).encode(), headers=_headers(key, {})
    )
    await communicator.send_input({"type": "http.request", "body": communicator.body})
    head = await communicator.receive_output(timeout=10)
    assert head["status"] == 200
    seen = b""
    while b"event: token" not in seen:
        seen += (await communicator.receive_output(timeout=10))["body"]
    await communicator.send_input({"type": "http.disconnect"})
    await communicator.wait(timeout=10)  # the consumer stops
    assert await ollama.last_chat_hung_up()  # the upstream request is closed, so Ollama stops
    assert ollama.chat_requests()[-1].tokens_sent < 200
    await drain_background_writes()
    await flush_metrics()
    assert await RequestMetric.objects.filter(channel="sse", status="cancelled").acount() == 1
    rows = await stored()
    assert rows[-1][0] == "assistant" and rows[-1][2] == "partial"


# --- Django's own view, reached without EVA's ASGI router ----------------------------------
async def test_a_stream_request_that_reaches_django_is_sent_to_the_stream_url(user_key):
    _, key = await user_key()
    asked = (({"message": "hi", "stream": True}, {}), ({"message": "hi"}, {"Accept": "text/event-stream"}))
    for body, headers in asked:
        response = await AsyncClient().post(
            "/api/v1/chat", body, content_type="application/json", headers={"X-API-Key": key, **headers}
        )
        assert response.status_code == 307 and response["Location"] == STREAM
