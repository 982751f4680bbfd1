"""Bad input at every edge is a 4xx with a stable code (or a WebSocket error frame), never a 500 or a hang:
text the stores refuse (NUL, lone surrogates), numbers and dates out of bounds, bodies over the limit,
session ids with a trailing newline; and the Origin check matches scheme, host and port (security issue #15)."""

from __future__ import annotations

import json

import pytest
from asgiref.sync import sync_to_async
from channels.testing import HttpCommunicator
from django.contrib.auth import get_user_model
from django.core.management import CommandError, call_command
from django.test import AsyncClient, Client

from accounts.api_keys import api_key_create
from accounts.errors import InvalidInput
from accounts.validation import INVALID_TEXT_CODE, text_problem
from accounts.ws_auth import origin_allowed
from chat.models import ChatMessage, ChatSession
from chat.services import session_id_validate
from metrics.windows import parse_duration
from tests.chat.wsclient import receive_until, ws_with_key, ws_with_session

pytestmark = pytest.mark.django_db(transaction=True)

NUL = "a\x00b"
# A lone surrogate as a client writes it in JSON: Python's json module lets it through.
SURROGATE_JSON = '"a\\ud800b"'
TOO_LARGE = 2_621_440 + 1  # one byte over Django's default DATA_UPLOAD_MAX_MEMORY_SIZE


@pytest.fixture(autouse=True)
def _fresh_provider(settings):
    from chat.llm.fallback import reset_default_provider

    reset_default_provider()
    yield
    reset_default_provider()


@pytest.fixture
def key(user_key):
    """`await key()`: a plaintext key of alice's with the chat and tts scopes."""

    async def make() -> str:
        return (await user_key("alice", "chat,tts"))[1]

    return make


@pytest.fixture
def no_tts_worker(settings):
    """TTS over the channel layer with no worker: anything that reached a worker would be a quick 503."""
    settings.TTS_TRANSPORT = "channel"
    settings.TTS_PICKUP_TIMEOUT_S = 0.1
    return settings


def assert_code(response, status: int, code: str) -> None:
    assert response.status_code == status, response.content[:300]
    body = response.json()
    assert body["code"] == code and body["message"], body


async def post(path: str, body: object, *, key: str, method: str = "post"):
    raw = body if isinstance(body, str) else json.dumps(body)
    call = getattr(AsyncClient(), method)
    return await call(path, raw, content_type="application/json", headers={"X-API-Key": key})


# --- 4. NUL and lone surrogates, at every edge ------------------------------------------------
def test_the_validator_names_both_problems():
    assert text_problem("fine, même accentué 😀") is None
    assert "NUL" in text_problem(NUL)
    assert "surrogate" in text_problem("a\ud800b")


@pytest.mark.parametrize("path", ["/api/v1/chat", "/chat"])
@pytest.mark.parametrize("raw", [json.dumps({"message": NUL}), f'{{"message": {SURROGATE_JSON}}}'])
async def test_rest_chat_refuses_text_postgres_cannot_store(ollama, key, path, raw):
    response = await post(path, raw, key=await key())
    assert_code(response, 422, INVALID_TEXT_CODE)
    assert not ollama.chat_requests()  # refused before the model was asked
    assert not await ChatMessage.objects.aexists()


async def sse(body: bytes, *, key: str) -> tuple[int, dict]:
    from evaproject.asgi import application

    headers = [(b"host", b"localhost:8000"), (b"content-type", b"application/json"), (b"x-api-key", key.encode())]
    communicator = HttpCommunicator(application, "POST", "/api/v1/chat/stream", body=body, headers=headers)
    response = await communicator.get_response(timeout=10)
    await communicator.send_input({"type": "http.disconnect"})
    await communicator.wait(timeout=10)
    return response["status"], json.loads(response["body"])


async def test_sse_chat_refuses_nul_with_the_same_code(ollama, key):
    status, body = await sse(json.dumps({"message": NUL}).encode(), key=await key())
    assert (status, body["code"]) == (422, INVALID_TEXT_CODE)


async def test_sse_chat_refuses_a_lone_surrogate_as_a_bad_body(ollama, key):
    # orjson refuses lone surrogates while parsing: the body is not JSON it accepts.
    status, body = await sse(f'{{"message": {SURROGATE_JSON}}}'.encode(), key=await key())
    assert (status, body["code"]) == (400, "bad_request")
    assert not ollama.chat_requests()


async def test_a_websocket_frame_with_nul_gets_an_error_frame_and_the_socket_lives_on(ollama, key):
    ws = ws_with_key(await key())
    assert (await ws.connect())[0]
    await ws.send_json_to({"type": "message", "content": NUL})
    frame = await ws.receive_json_from()
    assert frame["type"] == "error" and frame["code"] == INVALID_TEXT_CODE
    await ws.send_to(text_data=f'{{"type": "message", "content": {SURROGATE_JSON}}}')
    assert (await ws.receive_json_from())["code"] == "invalid_json"
    await ws.send_json_to({"type": "message", "content": "still here"})
    assert (await receive_until(ws, "end"))[-1]["type"] == "end"
    await ws.disconnect()
    assert len(ollama.chat_requests()) == 1


@pytest.mark.parametrize("raw", [json.dumps({"title": NUL}), f'{{"title": {SURROGATE_JSON}}}'])
async def test_a_conversation_title_is_checked_on_create_and_rename(key, raw):
    plaintext = await key()
    assert_code(await post("/api/v1/sessions", raw, key=plaintext), 422, INVALID_TEXT_CODE)
    assert (await post("/api/v1/sessions", {"session_id": "trip"}, key=plaintext)).status_code == 201
    assert_code(await post("/api/v1/sessions/trip", raw, key=plaintext, method="patch"), 422, INVALID_TEXT_CODE)
    assert await ChatSession.objects.filter(session_id="trip", title="").aexists()


@pytest.mark.parametrize("method", ["get", "patch", "delete"])
@pytest.mark.parametrize("session_id", ["a%00b", "ok%0A"])
async def test_a_session_id_in_the_path_is_checked_by_every_verb(key, method, session_id):
    plaintext = await key()
    path = f"/api/v1/sessions/{session_id}"
    if method == "patch":
        response = await post(path, {"title": "x"}, key=plaintext, method="patch")
    else:
        response = await getattr(AsyncClient(), method)(path, headers={"X-API-Key": plaintext})
    assert_code(response, 422, "invalid_session_id")


def session_client(username: str = "alice") -> Client:
    user, _ = get_user_model().objects.get_or_create(username=username)
    client = Client()
    client.force_login(user)
    return client


@pytest.mark.parametrize("raw", [json.dumps({"name": NUL}), f'{{"name": {SURROGATE_JSON}}}'])
def test_a_key_name_is_checked(raw):
    response = session_client().post("/api/v1/keys", raw, content_type="application/json")
    assert_code(response, 422, INVALID_TEXT_CODE)


@pytest.mark.parametrize("expires_at", ["9999-12-31T23:59:59-23:59", "0001-01-01T00:00:00+01:00", "3001-01-01T00:00"])
def test_a_key_expiry_is_bounded(expires_at):
    body = json.dumps({"name": "phone", "expires_at": expires_at})
    response = session_client().post("/api/v1/keys", body, content_type="application/json")
    assert_code(response, 422, "invalid_request")
    assert "expires_at" in response.json()["message"]


@pytest.fixture
def metrics_key(db) -> str:
    user = get_user_model().objects.create_user("root", is_staff=True)
    return api_key_create(owner=user, name="grafana", scopes="metrics")[1]


@pytest.mark.parametrize("path", ["/api/v1/metrics/latency", "/api/v1/metrics/export.csv"])
@pytest.mark.parametrize("param", ["model", "backend"])
def test_metrics_filters_refuse_nul_at_once(metrics_key, path, param):
    response = Client().get(f"{path}?{param}=a%00b", HTTP_X_API_KEY=metrics_key)
    assert_code(response, 422, INVALID_TEXT_CODE)


@pytest.mark.parametrize("raw", [json.dumps({"text": NUL}), f'{{"text": {SURROGATE_JSON}}}'])
async def test_tts_text_is_checked_before_any_worker_is_asked(no_tts_worker, key, raw):
    assert_code(await post("/api/v1/tts", raw, key=await key()), 422, INVALID_TEXT_CODE)


# --- 5. bounds: numbers, dates, bodies --------------------------------------------------------
async def test_a_page_offset_beyond_any_store_is_422(key):
    plaintext = await key()
    assert (await post("/api/v1/sessions", {"session_id": "trip"}, key=plaintext)).status_code == 201
    for query in ("offset=99999999999999999999", "offset=-1", "limit=0", "limit=99999999999999999999"):
        response = await AsyncClient().get(f"/api/v1/sessions/trip/messages?{query}", headers={"X-API-Key": plaintext})
        assert_code(response, 422, "invalid_request")


@pytest.mark.parametrize(
    ("query", "code"),
    [
        ("window=99999999999999999999d", "invalid_duration"),
        (f"window={'9' * 5000}d", "invalid_duration"),
        ("window=36501d", "invalid_duration"),
        ("end=0001-01-01T00:00:01Z", "invalid_window"),
        ("start=0001-01-01T00:00:00Z", "invalid_window"),
        ("start=9999-12-31T23:59:59-23:59", "invalid_window"),
        ("end=9999-12-31T23:59:59Z", "invalid_window"),
        ("user=99999999999999999999", "invalid_request"),
        ("key=-1", "invalid_request"),
    ],
)
@pytest.mark.parametrize("path", ["/api/v1/metrics/latency", "/api/v1/metrics/export.csv"])
def test_metrics_windows_and_ids_are_bounded(metrics_key, path, query, code):
    response = Client().get(f"{path}?{query}", HTTP_X_API_KEY=metrics_key)
    assert_code(response, 422, code)


def test_a_duration_is_bounded_before_any_date_arithmetic():
    with pytest.raises(InvalidInput) as err:
        parse_duration("99999999999999999999d")
    assert err.value.code == "invalid_duration"
    assert parse_duration("36500d").days == 36500


def test_the_dashboard_shows_an_out_of_range_date_as_a_form_error():
    client = Client()
    # The dashboard needs metrics.view_latency (#18): a superuser has it.
    client.force_login(get_user_model().objects.create_user("staff", is_staff=True, is_superuser=True))
    response = client.get("/dashboard/latency/?window=custom&end=0001-01-01T00:00:01")
    assert response.status_code == 200
    assert b"must lie between" in response.content
    response = client.get("/dashboard/latency/?user=99999999999999999999")
    assert response.status_code == 200


def test_metrics_prune_refuses_an_unbounded_retention_or_batch():
    with pytest.raises(CommandError, match="at most"):
        call_command("metrics_prune", "--older-than", "99999999999999999999d")
    with pytest.raises(CommandError, match="batch-size"):
        call_command("metrics_prune", "--batch-size", "99999999999999999999")


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("post", "/api/v1/chat"),
        ("post", "/chat"),
        ("post", "/api/v1/sessions"),
        ("patch", "/api/v1/sessions/trip"),
        ("post", "/api/v1/tts"),
    ],
)
async def test_a_body_over_the_limit_is_413_with_a_json_body(no_tts_worker, key, method, path):
    body = json.dumps({"message": "x" * TOO_LARGE, "text": "x", "title": "x"})
    assert_code(await post(path, body, key=await key(), method=method), 413, "request_too_large")


def test_a_body_over_the_limit_is_413_on_the_keys_api_too():
    response = session_client().post(
        "/api/v1/keys", json.dumps({"name": "x" * TOO_LARGE}), content_type="application/json"
    )
    assert_code(response, 413, "request_too_large")


# --- 8. session ids: no trailing newline -------------------------------------------------------
@pytest.mark.parametrize("session_id", ["ok\n", "ok\r\n", "\nok", "ok\x00"])
def test_a_session_id_is_the_whole_string(session_id):
    with pytest.raises(InvalidInput) as err:
        session_id_validate(session_id)
    assert err.value.code == "invalid_session_id"


async def test_a_session_id_with_a_trailing_newline_is_refused_over_rest_and_websocket(ollama, key):
    plaintext = await key()
    assert_code(
        await post("/api/v1/chat", {"message": "hi", "session_id": "ok\n"}, key=plaintext), 422, "invalid_session_id"
    )
    assert_code(await post("/api/v1/sessions", {"session_id": "ok\n"}, key=plaintext), 422, "invalid_session_id")
    ws = ws_with_key(plaintext)
    assert (await ws.connect())[0]
    await ws.send_json_to({"type": "message", "content": "hi", "session_id": "ok\n"})
    assert (await ws.receive_json_from())["code"] == "invalid_session_id"
    await ws.send_json_to({"type": "clear", "session_id": "ok\n"})
    assert (await ws.receive_json_from())["code"] == "invalid_session_id"
    await ws.disconnect()
    assert not ollama.chat_requests()


# --- 7. Origin: scheme, host and port ---------------------------------------------------------
def scope(origin: str | None, *, host: str | None = "localhost:8000", scheme: str = "ws", **headers: str) -> dict:
    pairs = {"host": host, "origin": origin, **headers}
    return {
        "type": "websocket",
        "scheme": scheme,
        "headers": [(name.encode(), value.encode()) for name, value in pairs.items() if value is not None],
    }


@pytest.mark.parametrize(
    ("origin", "host", "scheme", "allowed"),
    [
        ("http://localhost:8000", "localhost:8000", "ws", True),
        ("http://127.0.0.1:8000", "127.0.0.1:8000", "ws", True),
        ("http://[::1]:8000", "[::1]:8000", "ws", True),
        ("https://localhost", "localhost", "wss", True),
        ("https://localhost:443", "localhost", "wss", True),
        ("http://127.0.0.1:9999", "127.0.0.1:8000", "ws", False),  # another port of the same host
        ("https://localhost:4443", "localhost:8000", "ws", False),
        ("https://localhost:8000", "localhost:8000", "ws", False),  # the scheme differs
        ("http://localhost:8000", "localhost:8000", "wss", False),
        ("http://localhost", "localhost:8000", "ws", False),
        ("http://evil.example:8000", "evil.example:8000", "ws", False),  # not in ALLOWED_HOSTS
        ("http://localhost:8000", None, "ws", False),  # no Host: nothing to be the same as
        ("null", "localhost:8000", "ws", False),
        ("http://localhost:8000/chat", "localhost:8000", "ws", False),
        ("http://user@localhost:8000", "localhost:8000", "ws", False),
        ("http://localhost:notaport", "localhost:8000", "ws", False),
    ],
)
def test_the_origin_must_be_the_requests_own(settings, origin, host, scheme, allowed):
    settings.ALLOWED_HOSTS = ["localhost", "127.0.0.1", "[::1]"]
    settings.CSRF_TRUSTED_ORIGINS = []
    assert origin_allowed(scope(origin, host=host, scheme=scheme)) is allowed


def test_behind_a_tls_proxy_x_forwarded_proto_decides_the_scheme(settings):
    settings.ALLOWED_HOSTS = ["eva.example"]
    settings.CSRF_TRUSTED_ORIGINS = []
    proxied = scope("https://eva.example", host="eva.example", scheme="ws", **{"x-forwarded-proto": "https"})
    settings.SECURE_PROXY_SSL_HEADER = None
    assert not origin_allowed(proxied)  # a header anyone can send is not trusted by default
    settings.SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
    assert origin_allowed(proxied)
    assert not origin_allowed(scope("http://eva.example", host="eva.example", **{"x-forwarded-proto": "https"}))


@pytest.mark.parametrize(
    ("origin", "allowed"),
    [
        ("https://app.example.com", True),
        ("https://app.example.com:443", True),
        ("http://app.example.com", False),
        ("https://app.example.com:8443", False),
        ("https://a.wild.example", True),
        ("https://wild.example", True),
        ("https://a.wild.example:8443", False),
        ("http://a.wild.example", False),
        ("https://notwild.example", False),
    ],
)
def test_csrf_trusted_origins_match_scheme_host_and_port(settings, origin, allowed):
    settings.CSRF_TRUSTED_ORIGINS = ["https://app.example.com", "https://*.wild.example"]
    assert origin_allowed(scope(origin, host="eva.internal:8000")) is allowed


@sync_to_async
def browser_session() -> str:
    get_user_model().objects.create_user("carol", password="pw-carol-123")
    client = Client()
    assert client.login(username="carol", password="pw-carol-123")
    return client.cookies["sessionid"].value


@pytest.mark.parametrize("origin", ["http://127.0.0.1:9999", "https://localhost:4443", "http://localhost:9999"])
async def test_a_cookie_socket_from_another_port_or_scheme_is_refused(origin):
    ws = ws_with_session(await browser_session(), origin=origin)
    assert (await ws.connect())[0]
    assert (await ws.receive_json_from())["code"] == "origin_not_allowed"
    assert await ws.receive_output() == {"type": "websocket.close", "code": 4403}
    await ws.disconnect()


async def test_a_cookie_stream_from_another_port_is_refused(ollama):
    from evaproject.asgi import application

    session = await browser_session()
    headers = [
        (b"host", b"localhost:8000"),
        (b"origin", b"http://localhost:9999"),
        (b"content-type", b"application/json"),
        (b"cookie", f"sessionid={session}".encode()),
    ]
    body = json.dumps({"message": "hi"}).encode()
    communicator = HttpCommunicator(application, "POST", "/api/v1/chat/stream", body=body, headers=headers)
    response = await communicator.get_response(timeout=10)
    await communicator.send_input({"type": "http.disconnect"})
    await communicator.wait(timeout=10)
    assert response["status"] == 403 and json.loads(response["body"])["code"] == "origin_not_allowed"
    assert not ollama.chat_requests()
