"""Liveness and readiness probes."""

from __future__ import annotations

import pytest
from django.test import AsyncClient

pytestmark = pytest.mark.django_db(transaction=True)

TOKEN = "ready-token-for-health-tests"


@pytest.fixture(autouse=True)
def _ready_token(settings):
    """The details of /ready are for READY_TOKEN (and staff): these tests read them."""
    settings.READY_TOKEN = TOKEN


async def ready_details():
    return await AsyncClient().get("/ready", headers={"Authorization": f"Bearer {TOKEN}"})


async def test_health_answers_without_auth():
    response = await AsyncClient().get("/health")
    assert response.status_code == 200
    assert response.json() == {"status": "ok"}


async def test_ready_reports_database_and_channel_layer(ollama):
    body = (await ready_details()).json()
    assert body["checks"]["database"]["ok"] is True
    assert body["checks"]["database"]["vendor"] == "postgresql"
    channel_layer = body["checks"]["channel_layer"]
    assert channel_layer == {**channel_layer, "ok": True, "backend": "RedisChannelLayer"}


async def test_ready_sees_ollama_with_its_model(ollama):
    body = (await ready_details()).json()
    assert body["checks"]["llm"]["ollama"]["ok"] is True
    assert body["parts"]["llm"] == "up"


async def test_ready_is_503_naming_the_llm_when_ollama_is_down_and_groq_unset(settings):
    settings.OLLAMA_URL = "http://127.0.0.1:9"
    settings.GROQ_API_KEY = ""
    response = await ready_details()
    assert response.status_code == 503
    body = response.json()
    assert body["status"] == "degraded" and body["parts"]["llm"] == "down"
    assert "Ollama unreachable" in body["checks"]["llm"]["ollama"]["error"]


async def test_ready_names_a_model_that_is_not_pulled(ollama, settings):
    settings.OLLAMA_MODEL = "llama3:70b"
    body = (await ready_details()).json()
    assert "ollama pull llama3:70b" in body["checks"]["llm"]["ollama"]["error"]
