"""Liveness and readiness probes."""

from __future__ import annotations

import pytest
from django.test import AsyncClient

pytestmark = pytest.mark.django_db(transaction=True)


async def test_health_answers_without_auth():
    response = await AsyncClient().get("/health")
    assert response.status_code == 200
    assert response.json() == {"status": "ok"}


async def test_ready_reports_database_and_channel_layer(ollama):
    body = (await AsyncClient().get("/ready")).json()
    assert body["checks"]["database"]["ok"] is True
    assert body["checks"]["database"]["vendor"] == "postgresql"
    assert body["checks"]["channel_layer"] == {**body["checks"]["channel_layer"], "ok": True, "backend": "RedisChannelLayer"}


async def test_ready_sees_ollama_with_its_model(ollama):
    body = (await AsyncClient().get("/ready")).json()
    assert body["checks"]["llm"]["ollama"]["ok"] is True
    assert "llm" not in body["down"]


async def test_ready_is_503_naming_the_llm_when_ollama_is_down_and_groq_unset(settings):
    settings.OLLAMA_URL = "http://127.0.0.1:9"
    settings.GROQ_API_KEY = ""
    response = await AsyncClient().get("/ready")
    assert response.status_code == 503
    body = response.json()
    assert "llm" in body["down"]
    assert "Ollama unreachable" in body["checks"]["llm"]["ollama"]["error"]


async def test_ready_names_a_model_that_is_not_pulled(ollama, settings):
    settings.OLLAMA_MODEL = "llama3:70b"
    body = (await AsyncClient().get("/ready")).json()
    assert "ollama pull llama3:70b" in body["checks"]["llm"]["ollama"]["error"]
