"""Fixtures for chat tests: users with keys, the Ollama stand-in, a clean provider per test."""

from __future__ import annotations

import pytest
from asgiref.sync import sync_to_async
from django.contrib.auth import get_user_model

from chat.api_keys import api_key_create


@pytest.fixture(autouse=True)
def _fresh_provider(settings):
    """Breaker state is process-wide; each test starts with closed breakers."""
    from chat.llm.fallback import reset_default_provider

    settings.LLM_SYSTEM_PROMPT = "You are EVA."
    reset_default_provider()
    yield
    reset_default_provider()


@pytest.fixture
def user_key():
    """`await user_key("alice")` → (user, plaintext key with chat+tts scopes)."""

    @sync_to_async
    def make(username: str = "alice", scopes: str = "chat,tts"):
        user, _ = get_user_model().objects.get_or_create(username=username)
        return user, api_key_create(owner=user, name=f"{username}-key", scopes=scopes)[1]

    return make


@pytest.fixture
def groq_cloud(settings):
    """The Groq stand-in, reached by the real groq SDK through GROQ_BASE_URL."""
    from tests.standins.groq_server import GroqStandIn

    server = GroqStandIn().start()
    settings.GROQ_API_KEY = "gsk_test_standin"
    settings.GROQ_BASE_URL = server.url
    settings.GROQ_MODEL = "llama-3.1-8b-instant"
    settings.GROQ_MAX_RETRIES = 0
    yield server
    server.stop()
