"""Fixtures for chat tests: users with keys, the Ollama stand-in, a clean provider per test."""

from __future__ import annotations

import pytest


@pytest.fixture(autouse=True)
def _fresh_provider(settings):
    """Breaker state is process-wide; each test starts with closed breakers."""
    from chat.llm.fallback import reset_default_provider

    settings.LLM_SYSTEM_PROMPT = "You are EVA."
    reset_default_provider()
    yield
    reset_default_provider()


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
