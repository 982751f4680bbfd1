"""POST /api/v1/tts and GET /api/v1/voices, answered by a real worker over Redis."""

from __future__ import annotations

import pytest
from django.test import AsyncClient

from metrics.models import RequestMetric
from metrics.recorder import flush_metrics
from voice.wav import wav_info

pytestmark = pytest.mark.django_db(transaction=True)


async def post_tts(key: str | None, body: dict) -> object:
    headers = {"X-API-Key": key} if key else {}
    return await AsyncClient().post("/api/v1/tts", body, content_type="application/json", headers=headers)


@pytest.fixture
async def key(voice_settings, module_worker, tts_key):
    _, plaintext = await tts_key()
    return plaintext


async def test_it_answers_a_wav_file_and_records_the_request(key):
    response = await post_tts(key, {"text": "Bonjour, il est 14h30.", "voice": "fra"})
    assert response.status_code == 200
    assert response["Content-Type"] == "audio/wav"
    info = wav_info(response.content)
    assert (info.channels, info.sample_width, info.sample_rate) == (1, 2, 16000) and info.frames > 0
    assert response["X-Voice"] == "fra"
    assert float(response["X-Audio-Duration"]) == pytest.approx(info.duration_s, abs=0.001)
    # Counted against the rate limits, and says where the caller stands (accounts.ratelimit).
    assert 0 <= int(response["X-RateLimit-Remaining"]) < int(response["X-RateLimit-Limit"])
    assert int(response["X-RateLimit-Reset"]) >= 0
    await flush_metrics()
    metric = await RequestMetric.objects.aget(request_id=response["X-Request-Id"])
    assert (metric.channel, metric.status, metric.backend, metric.model) == ("tts", "ok", "mms", "tiny-mms")
    assert metric.total_ms > 0 and metric.api_key_id is not None and metric.user_id is not None


async def test_a_bearer_key_and_the_default_voice_work_too(key):
    response = await AsyncClient().post(
        "/api/v1/tts", {"text": "Bonjour"}, content_type="application/json", headers={"Authorization": f"Bearer {key}"}
    )
    assert response.status_code == 200 and response["X-Voice"] == "fra"


async def test_digits_only_text_is_spelled_out_and_spoken(key):
    response = await post_tts(key, {"text": "2024"})
    assert response.status_code == 200
    assert wav_info(response.content).frames > 0


@pytest.mark.parametrize(
    ("body", "code"),
    [
        ({"text": ""}, "invalid_text"),
        ({"text": "   \n "}, "invalid_text"),
        ({"text": "🙂🎉 !!!"}, "invalid_text"),
        ({"text": "x" * 1001}, "text_too_long"),
        ({"text": "Bonjour", "voice": "klingon"}, "unknown_voice"),
    ],
)
async def test_bad_input_is_422_with_a_stable_code_and_is_recorded(key, body, code):
    response = await post_tts(key, body)
    assert response.status_code == 422
    assert response.json()["code"] == code and response.json()["message"]
    await flush_metrics()
    assert await RequestMetric.objects.filter(channel="tts", status="error", error_code=code).aexists()


async def test_a_missing_text_field_is_a_validation_error(key):
    response = await post_tts(key, {"voice": "fra"})
    assert response.status_code == 422 and response.json()["code"] == "invalid_request"


async def test_it_needs_credentials(voice_settings):
    response = await post_tts(None, {"text": "Bonjour"})
    assert response.status_code == 401 and response.json()["code"] == "unauthenticated"


async def test_a_key_without_the_tts_scope_is_refused(voice_settings, tts_key):
    _, chat_only = await tts_key("bob", scopes="chat")
    response = await post_tts(chat_only, {"text": "Bonjour"})
    assert response.status_code == 403 and response.json()["code"] == "missing_scope"


async def test_voices_lists_the_configured_voices_default_first(key):
    response = await AsyncClient().get("/api/v1/voices", headers={"X-API-Key": key})
    assert response.status_code == 200
    assert response.json() == [
        {"name": "fra", "language": "fr", "model": "tiny-mms", "default": True},
        {"name": "eng", "language": "en", "model": "tiny-mms", "default": False},
    ]
