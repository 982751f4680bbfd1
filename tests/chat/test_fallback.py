"""Fallback from Ollama to Groq: only before the first token; breakers; the no-backend error.

Ollama is the NDJSON stand-in, Groq the SSE stand-in reached through the real groq SDK.
"""

from __future__ import annotations

import pytest

from chat.llm.fallback import default_provider
from chat.models import ChatMessage
from metrics.models import RequestMetric
from metrics.recorder import flush_metrics
from tests.chat.wsclient import receive_until, ws_with_key

pytestmark = pytest.mark.django_db(transaction=True)


async def ask(user_key, content="hello", session_id="default"):
    _, key = await user_key()
    ws = ws_with_key(key)
    assert (await ws.connect())[0]
    await ws.send_json_to({"type": "message", "content": content, "session_id": session_id})
    frames = await receive_until(ws, "end", frame_timeout_s=15)
    await ws.disconnect()
    return frames


async def ask_until_error_or_end(user_key, content="hello"):
    _, key = await user_key()
    ws = ws_with_key(key)
    assert (await ws.connect())[0]
    await ws.send_json_to({"type": "message", "content": content})
    frames = []
    while True:
        frame = await ws.receive_json_from(timeout=15)
        frames.append(frame)
        if frame["type"] in ("end", "error"):
            break
    await ws.disconnect()
    return frames


def tokens(frames):
    return "".join(f["content"] for f in frames if f["type"] == "token")


@pytest.mark.parametrize("mode", ["busy", "http_500"])
async def test_falls_back_to_groq_when_ollama_answers_an_error_status(ollama, groq_cloud, user_key, mode):
    ollama.behaviour.mode = mode
    frames = await ask(user_key)
    assert frames[0]["backend"] == "groq" and frames[0]["model"] == "llama-3.1-8b-instant"
    assert tokens(frames) == "Hello from Groq"
    assert groq_cloud.authorizations == ["Bearer gsk_test_standin"]


async def test_falls_back_to_groq_when_ollama_refuses_the_connection(groq_cloud, user_key, settings):
    settings.OLLAMA_URL = "http://127.0.0.1:9"
    frames = await ask(user_key)
    assert frames[0]["backend"] == "groq" and tokens(frames) == "Hello from Groq"


async def test_falls_back_to_groq_when_the_ollama_model_is_missing(ollama, groq_cloud, user_key, settings):
    settings.OLLAMA_MODEL = "llama3:70b"
    frames = await ask(user_key)
    assert frames[0]["backend"] == "groq"
    assert ollama.chat_requests()[-1].body["model"] == "llama3:70b"


async def test_falls_back_when_ollama_sends_no_first_token_in_time(ollama, groq_cloud, user_key, settings):
    settings.LLM_FIRST_TOKEN_DEADLINE_S = 0.3
    ollama.behaviour.mode = "stall"
    frames = await ask(user_key)
    assert frames[0]["backend"] == "groq"
    assert await ollama.last_chat_hung_up()  # the upstream request is closed, so Ollama stops


async def test_falls_back_when_ollama_errors_before_any_token(ollama, groq_cloud, user_key):
    ollama.behaviour.mode = "error_mid_stream"
    ollama.behaviour.error_after_tokens = 0
    frames = await ask(user_key)
    assert frames[0]["backend"] == "groq"


async def test_a_fallback_is_recorded_as_such(ollama, groq_cloud, user_key):
    ollama.behaviour.mode = "busy"
    end = (await ask(user_key))[-1]
    await flush_metrics()
    metric = await RequestMetric.objects.aget(request_id=end["request_id"])
    assert (metric.backend, metric.status) == ("groq", "fallback")
    assert (metric.upstream_queue_ms, metric.upstream_prompt_ms, metric.upstream_generation_ms) == (12.0, 3.0, 21.0)
    assert metric.tokens_out == 3


async def test_a_reply_from_groq_while_ollamas_breaker_is_open_is_a_fallback(ollama, groq_cloud, user_key, settings):
    settings.BREAKER_FAILURE_THRESHOLD = 1
    settings.BREAKER_COOLDOWN_S = 600.0  # stays open for the whole test
    ollama.behaviour.mode = "busy"
    await ask(user_key)  # Ollama fails once: its breaker opens
    assert default_provider().breakers["ollama"].state == "open"
    asked = len(ollama.chat_requests())
    frames = await ask(user_key)
    assert len(ollama.chat_requests()) == asked  # skipped, not failed, this time
    assert frames[0]["type"] == "start" and frames[0]["backend"] == "groq"
    await flush_metrics()
    metric = await RequestMetric.objects.aget(request_id=frames[-1]["request_id"])
    assert (metric.backend, metric.status, metric.error_code) == ("groq", "fallback", "")


async def test_a_reply_from_the_first_backend_in_the_order_is_ok_not_fallback(ollama, groq_cloud, user_key, settings):
    settings.LLM_BACKENDS = ["groq", "ollama"]
    end = (await ask(user_key))[-1]
    await flush_metrics()
    metric = await RequestMetric.objects.aget(request_id=end["request_id"])
    assert (metric.backend, metric.status) == ("groq", "ok")


async def test_no_fallback_after_the_first_token(ollama, groq_cloud, user_key):
    ollama.behaviour.mode = "error_mid_stream"
    ollama.behaviour.error_after_tokens = 2
    ollama.behaviour.reply_tokens = ["one", " two", " three"]
    frames = await ask_until_error_or_end(user_key)
    assert frames[0]["backend"] == "ollama"
    assert tokens(frames) == "one two"
    assert frames[-1]["type"] == "error" and frames[-1]["code"] == "upstream_error"
    assert frames[-1]["request_id"] == frames[0]["request_id"]
    assert groq_cloud.requests == []
    reply = await ChatMessage.objects.filter(role="assistant").alast()
    assert (reply.content, reply.status, reply.backend) == ("one two", "partial", "ollama")


async def test_a_stall_after_tokens_ends_the_reply_as_partial(ollama, groq_cloud, user_key, settings):
    settings.LLM_TOKEN_IDLE_TIMEOUT_S = 0.3
    ollama.behaviour.mode = "stall_after_first"
    ollama.behaviour.reply_tokens = ["only", " this"]
    frames = await ask_until_error_or_end(user_key)
    assert tokens(frames) == "only" and frames[-1]["code"] == "upstream_error"
    assert groq_cloud.requests == []
    reply = await ChatMessage.objects.filter(role="assistant").alast()
    assert (reply.content, reply.status) == ("only", "partial")


async def test_a_connection_dropped_after_tokens_ends_the_reply_as_partial(ollama, groq_cloud, user_key):
    ollama.behaviour.mode = "drop_after_first"
    ollama.behaviour.reply_tokens = ["kept", " lost"]
    frames = await ask_until_error_or_end(user_key)
    assert tokens(frames) == "kept" and frames[-1]["code"] == "upstream_error"
    assert "broke off" in frames[-1]["message"]
    assert not ollama.chat_requests()[-1].client_disconnected  # the server dropped it, not EVA
    assert groq_cloud.requests == []
    reply = await ChatMessage.objects.filter(role="assistant").alast()
    assert (reply.content, reply.status) == ("kept", "partial")


async def test_a_groq_error_in_the_middle_of_its_stream_keeps_the_partial(ollama, groq_cloud, user_key):
    ollama.behaviour.mode = "busy"
    groq_cloud.behaviour.mode = "error_mid_stream"
    groq_cloud.behaviour.error_after_tokens = 2
    frames = await ask_until_error_or_end(user_key)
    assert frames[0]["backend"] == "groq" and tokens(frames) == "Hello from"
    assert frames[-1]["code"] == "upstream_error"
    reply = await ChatMessage.objects.filter(role="assistant").alast()
    assert (reply.content, reply.status, reply.backend) == ("Hello from", "partial", "groq")


async def test_no_backend_gives_an_error_saying_what_to_start_or_set(user_key, settings):
    settings.OLLAMA_URL = "http://127.0.0.1:9"
    settings.GROQ_API_KEY = ""
    frames = await ask_until_error_or_end(user_key)
    assert frames == [frames[0]] and frames[0]["type"] == "error" and frames[0]["code"] == "no_backend"
    assert "ollama serve" in frames[0]["message"] and "GROQ_API_KEY" in frames[0]["message"]


async def test_groq_refusing_as_well_is_no_backend(ollama, groq_cloud, user_key):
    ollama.behaviour.mode = "busy"
    groq_cloud.behaviour.mode = "503"
    frames = await ask_until_error_or_end(user_key)
    assert frames[-1]["code"] == "no_backend"
    assert "ollama: Ollama answered 503" in frames[-1]["message"] and "groq: Groq answered 503" in frames[-1]["message"]


async def test_the_breaker_skips_a_failing_ollama_then_probes_it_again(
    ollama, groq_cloud, user_key, settings, monkeypatch
):
    settings.BREAKER_FAILURE_THRESHOLD = 2
    settings.BREAKER_COOLDOWN_S = 0.5
    ollama.behaviour.mode = "busy"
    for _ in range(2):
        assert (await ask(user_key))[0]["backend"] == "groq"
    seen = len(ollama.chat_requests())
    assert (await ask(user_key))[0]["backend"] == "groq"
    assert len(ollama.chat_requests()) == seen  # skipped: not even asked
    assert default_provider().breakers["ollama"].state == "open"
    ollama.behaviour.mode = "ok"
    breaker = default_provider().breakers["ollama"]
    after_cooldown = breaker.clock() + settings.BREAKER_COOLDOWN_S
    monkeypatch.setattr(breaker, "clock", lambda: after_cooldown)  # the cooldown has passed, on its clock
    assert breaker.state == "half_open"
    assert (await ask(user_key))[0]["backend"] == "ollama"  # the probe succeeds and closes the breaker
    assert default_provider().breakers["ollama"].state == "closed"


async def test_backend_order_is_configurable(ollama, groq_cloud, user_key, settings):
    settings.LLM_BACKENDS = ["groq", "ollama"]
    frames = await ask(user_key)
    assert frames[0]["backend"] == "groq" and ollama.chat_requests() == []
