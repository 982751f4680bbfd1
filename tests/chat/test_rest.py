"""REST for mobile clients: POST /api/v1/chat (JSON; its SSE mode is in test_sse.py), the legacy POST /chat,
conversations."""

from __future__ import annotations

import pytest
from django.test import AsyncClient, Client

from metrics.models import RequestMetric
from metrics.recorder import flush_metrics

pytestmark = pytest.mark.django_db(transaction=True)


async def post_chat(key, body, path="/api/v1/chat", **headers):
    return await AsyncClient().post(path, body, content_type="application/json", headers={"X-API-Key": key, **headers})


async def test_chat_answers_json_with_timings(ollama, user_key):
    _, key = await user_key()
    response = await post_chat(key, {"message": "Salut", "session_id": "test"})
    assert response.status_code == 200
    body = response.json()
    assert body["response"] == "Echo: Salut" and body["session_id"] == "test"
    assert body["backend"] == "ollama" and body["model"] == "phi3:mini" and body["tokens"] == 2
    assert body["latency_ms"] >= body["ttft_ms"] > 0
    await flush_metrics()
    assert await RequestMetric.objects.filter(request_id=body["request_id"], channel="rest", status="ok").aexists()


async def test_a_conversation_created_untitled_over_rest_is_named_by_its_first_message(ollama, user_key):
    _, key = await user_key()
    client = AsyncClient()
    created = await client.post(
        "/api/v1/sessions", {"session_id": "later"}, content_type="application/json", headers={"X-API-Key": key}
    )
    assert created.status_code == 201 and created.json()["title"] == ""
    assert (await post_chat(key, {"message": "Idées   de voyage", "session_id": "later"})).status_code == 200
    assert (await post_chat(key, {"message": "Autre chose", "session_id": "later"})).status_code == 200
    session = await client.get("/api/v1/sessions/later", headers={"X-API-Key": key})
    assert session.json()["title"] == "Idées de voyage"


async def test_the_legacy_fastapi_endpoint_still_answers(ollama, user_key):
    _, key = await user_key()
    response = await post_chat(key, {"message": "Salut", "session_id": "test"}, path="/chat")
    assert response.status_code == 200
    assert response.json()["response"] == "Echo: Salut"


async def test_bearer_tokens_work_like_x_api_key(ollama, user_key):
    _, key = await user_key()
    response = await AsyncClient().post(
        "/api/v1/chat", {"message": "hi"}, content_type="application/json", headers={"Authorization": f"Bearer {key}"}
    )
    assert response.status_code == 200


@pytest.mark.parametrize(
    ("body", "code"),
    [
        ({"message": ""}, "empty_message"),
        ({"message": "x" * 8001}, "message_too_long"),
        ({"message": 5}, "invalid_request"),
        ({}, "invalid_request"),
        ({"message": "hi", "session_id": "a b"}, "invalid_session_id"),
    ],
)
async def test_bad_input_is_422_with_a_code(ollama, user_key, body, code):
    _, key = await user_key()
    response = await post_chat(key, body)
    assert response.status_code == 422
    assert response.json()["code"] == code and response.json()["message"]


async def test_malformed_json_is_a_clear_error(user_key):
    _, key = await user_key()
    response = await AsyncClient().post(
        "/api/v1/chat", "{nope", content_type="application/json", headers={"X-API-Key": key}
    )
    assert response.status_code in (400, 422) and response.json()["code"] in ("bad_request", "invalid_request")


async def test_no_backend_is_503(user_key, settings):
    settings.OLLAMA_URL = "http://127.0.0.1:9"
    settings.GROQ_API_KEY = ""
    _, key = await user_key()
    response = await post_chat(key, {"message": "hi"})
    assert response.status_code == 503 and response.json()["code"] == "no_backend"


async def test_a_missing_key_is_401_and_a_key_without_chat_scope_403(user_key):
    response = await AsyncClient().post("/api/v1/chat", {"message": "hi"}, content_type="application/json")
    assert response.status_code == 401 and response.json()["code"] == "unauthenticated"
    _, tts_only = await user_key("tina", scopes="tts")
    response = await post_chat(tts_only, {"message": "hi"})
    assert response.status_code == 403 and response.json()["code"] == "missing_scope"
    response = await post_chat("eva_abc_def", {"message": "hi"})
    assert response.status_code == 401 and response.json()["code"] == "invalid_api_key"


async def test_an_upstream_failure_after_tokens_is_502_and_the_partial_is_kept(ollama, user_key):
    ollama.behaviour.mode = "error_mid_stream"
    _, key = await user_key()
    response = await post_chat(key, {"message": "a b c d"})
    assert response.status_code == 502 and response.json()["code"] == "upstream_error"


def test_conversations_lifecycle_over_rest(alice):
    from accounts.api_keys import api_key_create

    key = api_key_create(owner=alice, name="k", scopes="chat")[1]
    client = Client(HTTP_X_API_KEY=key)
    created = client.post("/api/v1/sessions", {"session_id": "trip", "title": "Trip"}, content_type="application/json")
    assert created.status_code == 201 and created.json()["session_id"] == "trip"
    assert client.post("/api/v1/sessions", {"session_id": "trip"}, content_type="application/json").status_code == 409
    random_one = client.post("/api/v1/sessions", {}, content_type="application/json").json()
    assert random_one["session_id"].startswith("s-")
    assert {s["session_id"] for s in client.get("/api/v1/sessions").json()} == {"trip", random_one["session_id"]}
    renamed = client.patch("/api/v1/sessions/trip", {"title": "Rome trip"}, content_type="application/json")
    assert renamed.json()["title"] == "Rome trip"
    assert client.get("/api/v1/sessions/trip").json()["title"] == "Rome trip"
    assert client.delete("/api/v1/sessions/trip").status_code == 204
    assert client.get("/api/v1/sessions/trip").status_code == 404


def test_messages_are_paginated_oldest_first(alice):
    from accounts.api_keys import api_key_create
    from chat.services import chat_turn_begin, chat_turn_finish

    for i in range(5):
        session_pk = chat_turn_begin(owner_id=alice.pk, session_id="p", content=f"q{i}", request_id=str(i))
        chat_turn_finish(
            session_pk=session_pk, content=f"a{i}", status="complete", backend="ollama", model="m", request_id=str(i)
        )
    key = api_key_create(owner=alice, name="k", scopes="chat")[1]
    client = Client(HTTP_X_API_KEY=key)
    page = client.get("/api/v1/sessions/p/messages?limit=4&offset=2").json()
    assert page["count"] == 10 and [m["content"] for m in page["items"]] == ["q1", "a1", "q2", "a2"]
    assert client.get("/api/v1/sessions/p/messages?limit=0").status_code == 422
    assert client.post("/api/v1/sessions/p/clear").status_code == 204
    assert client.get("/api/v1/sessions/p/messages").json()["count"] == 0


def test_nobody_reads_another_users_conversation(alice, bob):
    from accounts.api_keys import api_key_create
    from chat.services import chat_turn_begin

    chat_turn_begin(owner_id=alice.pk, session_id="default", content="alice's secret", request_id="1")
    bob_client = Client(HTTP_X_API_KEY=api_key_create(owner=bob, name="k", scopes="chat")[1])
    assert bob_client.get("/api/v1/sessions").json() == []
    for response in (
        bob_client.get("/api/v1/sessions/default"),
        bob_client.get("/api/v1/sessions/default/messages"),
        bob_client.patch("/api/v1/sessions/default", {"title": "x"}, content_type="application/json"),
        bob_client.delete("/api/v1/sessions/default"),
    ):
        assert response.status_code == 404 and response.json()["code"] == "not_found"


def test_the_openapi_schema_and_docs_are_served():
    client = Client()
    schema = client.get("/api/openapi.json").json()
    assert schema["openapi"].startswith("3.")
    assert "/api/v1/chat" in schema["paths"] and "/api/v1/sessions/{session_id}/messages" in schema["paths"]
    assert client.get("/api/docs").status_code == 200
