"""The OpenAI-compatible API (/v1/) through the official `openai` SDK against a live daphne:
chat completions sync and async, streamed and not, with max_tokens, temperature and stop reaching
the model; the models; speech to a file (wav and pcm); errors as the SDK raises them (401, 403,
404, 400, 429 with Retry-After, 503); one metric row per request on the `openai` channel.

The model is the Ollama stand-in (its NDJSON, its timings and token counts); speech is a tiny
random-weight MMS voice (voice.engine.build_tiny_voice) in the server's own TTS worker.
"""

from __future__ import annotations

import wave
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import openai
import pytest
from django.contrib.auth import get_user_model

from accounts.api_keys import api_key_create
from accounts.models import Scope
from metrics.models import RequestMetric
from tests.live_server import LiveServer, start_daphne, stop_process
from tests.polling import written

# The first speech loads torch and the voice in the server's worker: minutes on a loaded 2-vCPU box.
pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.timeout(600)]

PER_KEY_LIMIT = 8  # per minute: the 429 test reaches it with a key of its own


@pytest.fixture(scope="module")
def server(django_db_setup, django_db_blocker, web_ollama, tmp_path_factory) -> Iterator[LiveServer]:
    from voice.engine import build_tiny_voice

    voice = build_tiny_voice(tmp_path_factory.mktemp("voices") / "tiny-mms")
    env = {
        "OLLAMA_URL": web_ollama.url,
        "TTS_TRANSPORT": "local",
        "MMS_TTS_MODEL": str(voice),
        "TTS_DEFAULT_VOICE": "fra",
        "TTS_VOICES": f"eng={voice}",
        "TTS_CPU_THREADS": "1",
        "TTS_WARMUP": "false",
        "RATE_LIMIT_PER_KEY": f"{PER_KEY_LIMIT}/minute",
        "RATE_LIMIT_PER_USER": "1000/minute",
    }
    live = start_daphne(env, tmp_path_factory.mktemp("openai-api") / "daphne.log")
    yield live
    stop_process(live.process)


@pytest.fixture
def make_key(transactional_db):
    def make(scopes: list[str] | None = None) -> str:
        user, _ = get_user_model().objects.get_or_create(username="sdk-user")
        return api_key_create(owner=user, name="sdk", scopes=scopes or [Scope.CHAT, Scope.TTS])[1]

    return make


def sdk(server: LiveServer, key: str, **options: Any) -> openai.OpenAI:
    # No retries: each error must reach the test as the server answered it.
    return openai.OpenAI(base_url=f"{server.url}/v1", api_key=key, **{"max_retries": 0, "timeout": 60, **options})


def metric_rows(count: int, **filters: Any) -> list[RequestMetric]:
    """The server's metric rows once `count` have been written (its writer batches them)."""
    return written(
        lambda: list(RequestMetric.objects.filter(channel="openai", **filters).order_by("created_at")),
        f"{count} metric row(s) of the openai channel" + (f" with {filters}" if filters else ""),
        within_s=30,
        ready=lambda rows: len(rows) >= count,
    )


MESSAGES: list[Any] = [
    {"role": "system", "content": "Answer briefly."},
    {"role": "user", "content": "Bonjour EVA"},
]


def test_a_completion_answers_with_usage_and_passes_the_sampling_options(server, make_key, ollama_behaviour,
                                                                         web_ollama):
    client = sdk(server, make_key())
    completion = client.chat.completions.create(
        model="eva", messages=MESSAGES, max_tokens=64, temperature=0.3, stop=["\n\n", "END"]
    )
    choice = completion.choices[0]
    assert choice.message.role == "assistant" and choice.message.content
    assert "Bonjour EVA" in choice.message.content  # the stand-in echoes the last user message
    assert choice.finish_reason == "stop"
    assert completion.model == "phi3:mini" and completion.object == "chat.completion"
    assert completion.usage is not None and completion.usage.completion_tokens > 0
    assert completion.usage.prompt_tokens > 0
    assert completion.usage.total_tokens == completion.usage.prompt_tokens + completion.usage.completion_tokens
    sent = web_ollama.chat_requests()[-1].body
    assert sent["options"]["num_predict"] == 64 and sent["options"]["temperature"] == 0.3
    assert sent["options"]["stop"] == ["\n\n", "END"]
    assert sent["messages"] == MESSAGES  # the client's system message replaces EVA's
    [row] = metric_rows(1)
    assert row.status == "ok" and row.backend == "ollama" and row.tokens_out == completion.usage.completion_tokens
    assert row.request_id == completion.id.removeprefix("chatcmpl-")


def test_text_parts_and_developer_messages_are_taken_as_openai_sends_them(server, make_key, ollama_behaviour,
                                                                          web_ollama):
    client = sdk(server, make_key())
    completion = client.chat.completions.create(
        model="phi3:mini",
        messages=[
            {"role": "developer", "content": "Be terse."},
            {"role": "user", "content": [{"type": "text", "text": "Part one, "}, {"type": "text", "text": "two"}]},
        ],
        max_completion_tokens=10,
    )
    assert completion.choices[0].message.content
    sent = web_ollama.chat_requests()[-1].body
    assert sent["messages"] == [
        {"role": "system", "content": "Be terse."},
        {"role": "user", "content": "Part one, two"},
    ]
    assert sent["options"]["num_predict"] == 10


def test_a_streamed_completion_sends_chunks_then_done(server, make_key, ollama_behaviour):
    client = sdk(server, make_key())
    stream = client.chat.completions.create(
        model="eva", messages=MESSAGES, stream=True, stream_options={"include_usage": True}
    )
    chunks = list(stream)
    assert chunks[0].choices[0].delta.role == "assistant"
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert "Bonjour EVA" in text
    finishing = [c for c in chunks if c.choices and c.choices[0].finish_reason]
    assert [c.choices[0].finish_reason for c in finishing] == ["stop"]
    assert chunks[-1].choices == [] and chunks[-1].usage is not None and chunks[-1].usage.completion_tokens > 0
    assert len({c.id for c in chunks}) == 1


def test_the_stream_ends_with_data_done_on_the_wire(server, make_key, ollama_behaviour):
    import httpx

    body = {"model": "eva", "messages": MESSAGES, "stream": True}
    headers = {"Authorization": f"Bearer {make_key()}"}
    with httpx.stream("POST", f"{server.url}/v1/chat/completions", json=body, headers=headers, timeout=30) as answer:
        assert answer.status_code == 200 and answer.headers["content-type"] == "text/event-stream"
        events = [line for line in answer.iter_lines() if line]
    assert all(line.startswith("data: ") for line in events)
    assert events[-1] == "data: [DONE]"


async def test_the_async_client_completes_and_streams(server, make_key, ollama_behaviour):
    from asgiref.sync import sync_to_async

    key = await sync_to_async(make_key)()
    client = openai.AsyncOpenAI(base_url=f"{server.url}/v1", api_key=key, max_retries=0, timeout=60)
    completion = await client.chat.completions.create(model="eva", messages=MESSAGES)
    assert "Bonjour EVA" in (completion.choices[0].message.content or "")
    stream = await client.chat.completions.create(model="eva", messages=MESSAGES, stream=True)
    pieces = [chunk.choices[0].delta.content or "" async for chunk in stream if chunk.choices]
    assert "".join(pieces) == completion.choices[0].message.content
    await client.close()


def test_the_models_are_listed_and_retrieved(server, make_key):
    client = sdk(server, make_key([Scope.TTS]))  # any valid key may list them
    ids = [model.id for model in client.models.list()]
    assert ids[:2] == ["eva", "phi3:mini"] and "tts-1" in ids
    assert client.models.retrieve("phi3:mini").id == "phi3:mini"
    with pytest.raises(openai.NotFoundError) as missing:
        client.models.retrieve("gpt-9")
    assert missing.value.code == "model_not_found"


def test_speech_streams_to_a_wav_file(server, make_key, tmp_path):
    client = sdk(server, make_key(), timeout=300)  # the first speech loads torch and the voice
    target = tmp_path / "speech.wav"
    text = "Bonjour tout le monde. Voici une deuxième phrase, un peu plus longue que la première."
    with client.audio.speech.with_streaming_response.create(
        model="tts-1", voice="alloy", input=text, response_format="wav"
    ) as response:
        assert response.headers["content-type"] == "audio/wav"
        rate = int(response.headers["x-sample-rate"])
        response.stream_to_file(target)
    data = target.read_bytes()
    with wave.open(str(target), "rb") as wav:
        assert (wav.getnchannels(), wav.getsampwidth(), wav.getframerate()) == (1, 2, rate)
        frames = wav.readframes(len(data))
    assert len(frames) == len(data) - 44 and len(frames) > 0
    [row] = metric_rows(1, backend="mms")
    assert row.status == "ok" and row.time_to_first_audio_ms is not None


def test_speech_as_raw_pcm(server, make_key, tmp_path):
    client = sdk(server, make_key(), timeout=300)
    response = client.audio.speech.create(model="eva-tts", voice="fra", input="Bonjour.", response_format="pcm")
    target = Path(tmp_path / "speech.pcm")
    response.write_to_file(target)
    pcm = target.read_bytes()
    assert len(pcm) > 0 and len(pcm) % 2 == 0 and not pcm.startswith(b"RIFF")


def test_speech_errors(server, make_key):
    client = sdk(server, make_key())
    with pytest.raises(openai.BadRequestError) as unsupported:
        client.audio.speech.create(model="tts-1", voice="alloy", input="Bonjour", response_format="mp3")
    assert unsupported.value.code == "unsupported_response_format" and unsupported.value.param == "response_format"
    with pytest.raises(openai.BadRequestError) as voice:
        client.audio.speech.create(model="tts-1", voice="klingon", input="Bonjour", response_format="wav")
    assert voice.value.code == "unknown_voice"
    with pytest.raises(openai.NotFoundError):
        client.audio.speech.create(model="nope", voice="alloy", input="Bonjour", response_format="wav")
    with pytest.raises(openai.PermissionDeniedError):
        sdk(server, make_key([Scope.CHAT])).audio.speech.create(model="tts-1", voice="alloy", input="Bonjour")


def test_errors_have_openais_shape_and_status(server, make_key, ollama_behaviour):
    with pytest.raises(openai.AuthenticationError) as unauthenticated:
        sdk(server, "eva_not-a-key").chat.completions.create(model="eva", messages=MESSAGES)
    assert unauthenticated.value.status_code == 401
    error = unauthenticated.value.body
    assert isinstance(error, dict) and set(error) == {"message", "type", "param", "code"}
    client = sdk(server, make_key())
    with pytest.raises(openai.NotFoundError) as missing:
        client.chat.completions.create(model="gpt-9", messages=MESSAGES)
    assert missing.value.code == "model_not_found" and missing.value.param == "model"
    with pytest.raises(openai.BadRequestError) as empty:
        client.chat.completions.create(model="eva", messages=[])
    assert empty.value.param == "messages"
    with pytest.raises(openai.BadRequestError) as tool:
        client.chat.completions.create(model="eva", messages=[{"role": "tool", "content": "x", "tool_call_id": "1"}])
    assert tool.value.code == "unsupported_role"
    with pytest.raises(openai.PermissionDeniedError):
        sdk(server, make_key([Scope.TTS])).chat.completions.create(model="eva", messages=MESSAGES)
    with pytest.raises(openai.NotFoundError) as unknown_url:
        client.embeddings.create(model="eva", input="x")
    assert unknown_url.value.code == "unknown_url"


def test_no_backend_is_503(server, make_key, ollama_behaviour):
    ollama_behaviour.mode = "busy"
    with pytest.raises(openai.InternalServerError) as unavailable:
        sdk(server, make_key()).chat.completions.create(model="eva", messages=MESSAGES)
    assert unavailable.value.status_code == 503 and unavailable.value.code == "no_backend"
    [row] = metric_rows(1)
    assert row.status == "error" and row.error_code == "no_backend"


def test_the_rate_limit_is_429_with_retry_after(server, make_key, ollama_behaviour):
    client = sdk(server, make_key())
    models = client.models.list()  # not counted: only completions and speech are
    assert models.data
    remaining = []
    for _ in range(PER_KEY_LIMIT):
        raw = client.chat.completions.with_raw_response.create(model="eva", messages=MESSAGES, max_tokens=5)
        assert raw.headers["x-ratelimit-limit"] == str(PER_KEY_LIMIT)
        remaining.append(int(raw.headers["x-ratelimit-remaining"]))
    assert remaining == list(range(PER_KEY_LIMIT - 1, -1, -1))
    with pytest.raises(openai.RateLimitError) as limited:
        client.chat.completions.create(model="eva", messages=MESSAGES)
    assert limited.value.status_code == 429 and limited.value.code == "rate_limit_exceeded"
    headers = limited.value.response.headers
    assert int(headers["retry-after"]) >= 1 and headers["x-ratelimit-remaining"] == "0"


def test_a_model_failing_in_the_middle_of_the_reply(server, make_key, ollama_behaviour):
    ollama_behaviour.mode = "error_mid_stream"  # an error line after two tokens
    client = sdk(server, make_key())
    with pytest.raises(openai.InternalServerError) as whole:
        client.chat.completions.create(model="eva", messages=MESSAGES)
    assert whole.value.status_code == 502 and whole.value.code == "upstream_error"
    stream = client.chat.completions.create(model="eva", messages=MESSAGES, stream=True)
    received = []
    with pytest.raises(openai.APIError) as streamed:
        for chunk in stream:
            received.append(chunk.choices[0].delta.content or "")
    assert "stopped in the middle of the reply" in streamed.value.message
    assert "".join(received)  # the tokens before the failure arrived
    rows = metric_rows(2)
    assert [(row.status, row.error_code) for row in rows] == [("error", "upstream_error")] * 2


async def test_a_client_that_goes_away_stops_the_model(server, make_key, ollama_behaviour, web_ollama):
    import httpx
    from asgiref.sync import sync_to_async

    ollama_behaviour.reply_tokens = [f"word{i} " for i in range(200)]
    ollama_behaviour.token_interval_s = 0.05
    key = await sync_to_async(make_key)()
    body = {"model": "eva", "messages": MESSAGES, "stream": True}
    async with httpx.AsyncClient(timeout=30) as client, client.stream(
        "POST", f"{server.url}/v1/chat/completions", json=body, headers={"Authorization": f"Bearer {key}"}
    ) as answer:
        lines = answer.aiter_lines()
        while "word0" not in await anext(lines):
            pass
        # Leaving the block closes the connection in the middle of the reply.
    assert await web_ollama.last_chat_hung_up(within_s=15)
    [row] = await sync_to_async(metric_rows)(1)
    assert (row.status, row.error_code) == ("cancelled", "cancelled") and row.tokens_out < 200
