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


# --- issue #19: search, rewind (regenerate / edit), export --------------------------------------
def _exchange(owner_id: int, session_id: str, question: str, answer: str, request_id: str, **reply) -> None:
    from chat.services import chat_turn_begin, chat_turn_finish

    session_pk = chat_turn_begin(owner_id=owner_id, session_id=session_id, content=question, request_id=request_id)
    chat_turn_finish(
        session_pk=session_pk, content=answer, status=reply.pop("status", "complete"), backend="ollama",
        model="phi3:mini", request_id=request_id, **reply,
    )


def test_search_finds_conversations_by_title_and_by_message_any_case_paginated(alice, bob):
    from accounts.api_keys import api_key_create
    from chat.services import session_rename

    _exchange(alice.pk, "trip", "Where to go in May?", "Lisbon is lovely in spring.", "1")
    _exchange(alice.pk, "code", "Read a file in Python", "Use open() with a WITH block.", "2")
    _exchange(alice.pk, "misc", "Hello", "Hi! 100% sure, a_b", "3")
    session_rename(owner_id=alice.pk, session_id="misc", title="Lisbon plans")
    _exchange(bob.pk, "bob", "lisbon for bob", "no", "4")
    client = Client(HTTP_X_API_KEY=api_key_create(owner=alice, name="k", scopes="chat")[1])

    found = client.get("/api/v1/search/sessions", {"q": "LISBON"}).json()
    assert found["count"] == 2  # alice's only: one by a reply, one by its title
    by_id = {item["session_id"]: item for item in found["items"]}
    assert set(by_id) == {"trip", "misc"}
    assert "Lisbon is lovely" in by_id["trip"]["excerpt"] and by_id["misc"]["excerpt"] == ""
    page = client.get("/api/v1/search/sessions", {"q": "lisbon", "limit": 1, "offset": 1}).json()
    assert page["count"] == 2 and len(page["items"]) == 1 and page["limit"] == 1
    # LIKE's wildcards are searched for as text.
    assert [i["session_id"] for i in client.get("/api/v1/search/sessions", {"q": "100%"}).json()["items"]] == ["misc"]
    assert client.get("/api/v1/search/sessions", {"q": "a_b"}).json()["count"] == 1
    assert client.get("/api/v1/search/sessions", {"q": "x%y"}).json()["count"] == 0
    assert client.get("/api/v1/search/sessions", {"q": ""}).status_code == 422
    bad = client.get("/api/v1/search/sessions", {"q": "a\x00b"})
    assert bad.status_code == 422 and bad.json()["code"] == "invalid_text_characters"


@pytest.mark.parametrize(("model", "field", "index"), [
    ("ChatMessage", "content", "chat_message_content_trgm"), ("ChatSession", "title", "chat_session_title_trgm"),
])
def test_search_lookups_can_use_the_trigram_indexes_on_postgres(model, field, index):
    """Django's icontains SQL (UPPER(col::text) LIKE UPPER(%s)) matches the indexes' expressions.
    (Which plan a real search takes is the planner's choice, by the table's statistics.)"""
    from django.db import connection

    from chat import models

    if connection.vendor != "postgresql":
        pytest.skip("the trigram indexes exist on Postgres only")
    query = getattr(models, model).objects.filter(**{f"{field}__icontains": "lisbon"})
    sql, params = query.query.sql_with_params()
    with connection.cursor() as cursor:
        cursor.execute("SET enable_seqscan = off")
        cursor.execute(f"EXPLAIN {sql}", params)
        plan = "\n".join(row[0] for row in cursor.fetchall())
        cursor.execute("RESET enable_seqscan")
    assert index in plan, plan


def test_rewind_supersedes_the_exchange_which_stays_stored(alice, bob):
    from accounts.api_keys import api_key_create
    from chat.models import ChatMessage
    from chat.selectors import session_history

    _exchange(alice.pk, "s", "Capital of France?", "Paris.", "1")
    _exchange(alice.pk, "s", "And of Spein?", "Madrid.", "2")
    client = Client(HTTP_X_API_KEY=api_key_create(owner=alice, name="k", scopes="chat")[1])
    taken = client.post("/api/v1/sessions/s/rewind", {"request_id": "2"}, content_type="application/json")
    assert taken.status_code == 200 and taken.json() == {"content": "And of Spein?", "request_id": "2"}
    listed = client.get("/api/v1/sessions/s/messages").json()
    assert [m["content"] for m in listed["items"]] == ["Capital of France?", "Paris."] and listed["count"] == 2
    assert client.get("/api/v1/sessions/s").json()["message_count"] == 2
    assert session_history(owner_id=alice.pk, session_id="s", turns=10) == [
        {"role": "user", "content": "Capital of France?"}, {"role": "assistant", "content": "Paris."},
    ]
    kept = list(ChatMessage.objects.values_list("content", "superseded_at"))
    assert [content for content, at in kept if at is not None] == ["And of Spein?", "Madrid."], kept
    # Without a request id: the newest exchange still shown.
    assert client.post("/api/v1/sessions/s/rewind", {}, content_type="application/json").json()["request_id"] == "1"
    missing = client.post("/api/v1/sessions/s/rewind", {"request_id": "9"}, content_type="application/json")
    assert missing.status_code == 404 and missing.json()["code"] == "message_not_found"
    bob_client = Client(HTTP_X_API_KEY=api_key_create(owner=bob, name="k", scopes="chat")[1])
    assert bob_client.post("/api/v1/sessions/s/rewind", {}, content_type="application/json").status_code == 404


def test_export_as_markdown_and_json(alice, bob):
    from accounts.api_keys import api_key_create
    from chat.services import exchange_supersede

    _exchange(alice.pk, "s", "Old question", "Old answer", "0")
    exchange_supersede(owner_id=alice.pk, session_id="s", request_id="0")
    _exchange(alice.pk, "s", "Print hi in sh?", "```sh\necho hi\n```", "1", ttft_ms=120.0, total_ms=900.0)
    _exchange(alice.pk, "s", "More?", "Well", "2", status="partial", done_reason="cancelled", ttft_ms=50.0)
    client = Client(HTTP_X_API_KEY=api_key_create(owner=alice, name="k", scopes="chat")[1])

    markdown = client.get("/api/v1/sessions/s/export")
    assert markdown.status_code == 200 and markdown["Content-Type"] == "text/markdown; charset=utf-8"
    assert markdown["Content-Disposition"] == 'attachment; filename="Old-question.md"'
    text = markdown.content.decode()
    assert text.startswith("# Old question\n") and "```sh\necho hi\n```" in text
    assert "first token 120 ms, total 900 ms" in text and "Stopped" in text and "Old answer" not in text

    exported = client.get("/api/v1/sessions/s/export", {"format": "json"})
    assert exported.status_code == 200 and exported["Content-Disposition"].endswith('.json"')
    body = exported.json()
    assert body["session_id"] == "s"
    assert [m["content"] for m in body["messages"]][:2] == ["Print hi in sh?", "```sh\necho hi\n```"]
    assert body["messages"][-1]["done_reason"] == "cancelled" and body["messages"][-1]["superseded_at"] is None
    everything = client.get("/api/v1/sessions/s/export", {"format": "json", "include_superseded": "true"}).json()
    assert len(everything["messages"]) == 6 and everything["messages"][0]["superseded_at"] is not None
    assert client.get("/api/v1/sessions/s/export", {"format": "pdf"}).status_code == 422
    bob_client = Client(HTTP_X_API_KEY=api_key_create(owner=bob, name="k", scopes="chat")[1])
    assert bob_client.get("/api/v1/sessions/s/export").status_code == 404
