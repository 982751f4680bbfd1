"""A request's own sampling options (GenerationOptions: the OpenAI-compatible API's max_tokens,
temperature, stop) reach each backend in its own terms, through the fallback; without them, the
configured LLM_* settings are sent as before. Ollama is the NDJSON stand-in, Groq the SSE
stand-in through the real groq SDK."""

from __future__ import annotations

import pytest

from chat.llm.base import Done, GenerationOptions, Token
from chat.llm.fallback import StreamStart, default_provider, reset_default_provider

MESSAGES = [{"role": "user", "content": "hello"}]


@pytest.fixture(autouse=True)
def _both_backends(settings):
    settings.LLM_BACKENDS = ["ollama", "groq"]
    reset_default_provider()
    yield
    reset_default_provider()


async def collect(options: GenerationOptions | None) -> list[object]:
    stream = default_provider().stream(MESSAGES, options) if options else default_provider().stream(MESSAGES)
    return [item async for item in stream]


async def test_ollama_gets_the_options_in_its_own_names(ollama, settings):
    items = await collect(GenerationOptions(max_tokens=7, temperature=0.25, stop=("\n\n", "END")))
    assert isinstance(items[0], StreamStart) and items[0].backend == "ollama"
    assert isinstance(items[-1], Done) and any(isinstance(item, Token) for item in items)
    sent = ollama.chat_requests()[-1].body["options"]
    assert (sent["num_predict"], sent["temperature"], sent["stop"]) == (7, 0.25, ["\n\n", "END"])
    assert sent["num_ctx"] == settings.LLM_NUM_CTX


async def test_without_options_the_settings_are_sent_and_no_stop(ollama, settings):
    await collect(None)
    sent = ollama.chat_requests()[-1].body["options"]
    assert (sent["num_predict"], sent["temperature"]) == (settings.LLM_NUM_PREDICT, settings.LLM_TEMPERATURE)
    assert "stop" not in sent


async def test_after_a_fallback_groq_gets_the_same_options(ollama, groq_cloud, settings):
    ollama.behaviour.mode = "busy"
    items = await collect(GenerationOptions(max_tokens=9, temperature=1.5, stop=("x",)))
    assert isinstance(items[0], StreamStart) and items[0].backend == "groq" and items[0].fell_back
    sent = groq_cloud.requests[-1]
    assert (sent["max_tokens"], sent["temperature"], sent["stop"]) == (9, 1.5, ["x"])
    await collect(None)
    sent = groq_cloud.requests[-1]
    assert (sent["max_tokens"], sent["temperature"]) == (settings.LLM_NUM_PREDICT, settings.LLM_TEMPERATURE)
    assert "stop" not in sent
