"""/api/openapi.json is true and complete (issue #17): valid OpenAPI, no duplicated key, every
operation declares every error status it can answer with the error body, binary audio and the
SSE stream declared as such. Through Django's test client: the schema is what the server sends.
"""

from __future__ import annotations

import json
from typing import Any

import pytest
from openapi_spec_validator import validate

pytestmark = pytest.mark.django_db

METHODS = ("get", "post", "put", "patch", "delete")
ERROR_REF = {"$ref": "#/components/schemas/ErrorOut"}


def _reject_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    keys = [key for key, _ in pairs]
    duplicated = sorted({key for key in keys if keys.count(key) > 1})
    if duplicated:
        raise ValueError(f"duplicated keys {duplicated} in an object with keys {keys}")
    return dict(pairs)


def strict_json(text: str) -> dict[str, Any]:
    """json.loads that refuses an object with a key twice (as Swagger UI's YAML parser does)."""
    loaded: dict[str, Any] = json.loads(text, object_pairs_hook=_reject_duplicates)
    return loaded


@pytest.fixture
def schema(client) -> dict[str, Any]:
    response = client.get("/api/openapi.json")
    assert response.status_code == 200
    return strict_json(response.content.decode())


def operations(schema: dict[str, Any]) -> list[tuple[str, str, dict[str, Any]]]:
    return [
        (method.upper(), path, operation)
        for path, item in schema["paths"].items()
        for method, operation in item.items()
        if method in METHODS
    ]


def test_the_duplicate_key_loader_refuses_a_key_twice():
    with pytest.raises(ValueError, match="duplicated keys"):
        strict_json('{"responses": {"200": {}, "200": {}}}')


def test_the_schema_has_no_duplicated_key_and_is_valid_openapi(schema):
    validate(schema)  # openapi-spec-validator: raises on any violation of OpenAPI 3.1
    assert schema["openapi"].startswith("3.1")
    assert len(operations(schema)) >= 17


def test_every_operation_declares_its_error_statuses_with_the_error_body(schema):
    for method, path, operation in operations(schema):
        responses = operation["responses"]
        where = f"{method} {path}"
        assert "500" in responses, where  # on_unexpected: internal_error, anywhere
        if operation.get("security"):
            assert {"401", "403"} <= set(responses), where
        if "application/json" in operation.get("requestBody", {}).get("content", {}):
            assert {"400", "413", "422"} <= set(responses), where
        if any(name in path for name in ("{session_id}", "{key_id}")):
            assert "422" in responses, where  # not an id
            if not path.endswith("/clear"):  # clearing nothing is no error
                assert "404" in responses, where  # someone else's, or none
        for status, response in responses.items():
            if int(status) >= 400:
                assert response["content"] == {"application/json": {"schema": ERROR_REF}}, (where, status)
        assert any(int(status) < 400 for status in responses), where
        for status, response in responses.items():
            for media_type, content in response.get("content", {}).items():
                assert "schema" in content, (where, status, media_type)  # else clients parse nothing


def test_the_rate_limited_operations_declare_429_and_503_and_the_rate_limit_headers(schema):
    limited = {"/api/v1/chat", "/api/v1/chat/stream", "/api/v1/tts"}
    for path in limited:
        responses = schema["paths"][path]["post"]["responses"]
        assert {"429", "503"} <= set(responses), path
        assert {"X-RateLimit-Limit", "X-RateLimit-Remaining", "X-RateLimit-Reset"} <= set(responses["200"]["headers"])
        assert responses["429"]["headers"]["Retry-After"]["required"] is True
    for method, path, operation in operations(schema):
        if path not in limited:
            assert "429" not in operation["responses"], (method, path)


def test_speech_is_declared_as_binary_wav(schema):
    ok = schema["paths"]["/api/v1/tts"]["post"]["responses"]["200"]
    assert ok["content"] == {"audio/wav": {"schema": {"type": "string", "format": "binary"}}}


def test_the_stream_is_declared_as_server_sent_events_with_its_frames(schema):
    stream = schema["paths"]["/api/v1/chat/stream"]["post"]
    assert stream["requestBody"]["content"]["application/json"]["schema"] == {"$ref": "#/components/schemas/ChatIn"}
    content = stream["responses"]["200"]["content"]
    assert list(content) == ["text/event-stream"]
    # Per event, as OpenAPI models SSE: its name, and `data` one of the frames as JSON.
    event, whole = content["text/event-stream"]["schema"]["anyOf"]
    assert whole == {"type": "string", "description": whole["description"]}
    assert event["properties"]["event"]["enum"] == ["start", "token", "end", "error"]
    data = event["properties"]["data"]
    assert data["contentMediaType"] == "application/json"
    components = schema["components"]["schemas"]
    frames = [components[ref["$ref"].rsplit("/", 1)[1]] for ref in data["contentSchema"]["oneOf"]]
    assert [frame["properties"]["type"]["const"] for frame in frames] == ["start", "token", "end", "error"]
    # /api/v1/chat answers either, as the body's `stream` or the Accept header asks.
    chat = schema["paths"]["/api/v1/chat"]["post"]["responses"]["200"]["content"]
    assert set(chat) == {"application/json", "text/event-stream"}


def test_the_stream_operation_takes_the_credentials_of_chat(schema):
    chat = schema["paths"]["/api/v1/chat"]["post"]["security"]
    assert schema["paths"]["/api/v1/chat/stream"]["post"]["security"] == chat
    schemes = schema["components"]["securitySchemes"]
    assert all(name in schemes for requirement in chat for name in requirement)
