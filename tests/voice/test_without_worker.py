"""When no TTS worker runs: clear 503s, a failing readiness check, and speech that stops cleanly."""

from __future__ import annotations

import time

import pytest
from django.test import AsyncClient

from metrics.models import RequestMetric
from metrics.recorder import flush_metrics
from voice.speech_stream import SpeechStream

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def no_worker(voice_settings):
    voice_settings.TTS_PICKUP_TIMEOUT_S = 1.0
    return voice_settings


async def test_rest_answers_503_tts_unavailable_quickly_and_records_it(no_worker, tts_key):
    _, key = await tts_key()
    started = time.monotonic()
    response = await AsyncClient().post(
        "/api/v1/tts", {"text": "Bonjour"}, content_type="application/json", headers={"X-API-Key": key}
    )
    assert time.monotonic() - started < 15  # the 1 s pickup timeout, not TTS_TIMEOUT_S (30 s)
    assert response.status_code == 503
    assert response.json()["code"] == "tts_unavailable"
    assert "runworker voice-tts" in response.json()["message"]
    await flush_metrics()
    metric = await RequestMetric.objects.aget(channel="tts")
    assert (metric.status, metric.error_code) == ("error", "tts_unavailable")


async def test_ready_names_tts_as_down(no_worker):
    no_worker.READY_TOKEN = "ready-token-for-voice-tests"  # the details are for READY_TOKEN and staff
    response = await AsyncClient().get("/ready", headers={"Authorization": "Bearer ready-token-for-voice-tests"})
    assert response.status_code == 503
    body = response.json()
    assert body["parts"]["tts"] == "down"
    assert body["checks"]["tts"]["ok"] is False and body["checks"]["tts"]["transport"] == "channel"


async def test_speech_sends_one_error_frame_and_stops(no_worker):
    frames: list[dict] = []
    audio: list[bytes] = []

    async def send_json(frame: dict) -> None:
        frames.append(frame)

    async def send_bytes(data: bytes) -> None:
        audio.append(data)

    speech = SpeechStream(voice=None, send_json=send_json, send_bytes=send_bytes)
    for token in ["Première", "phrase.", "Deuxième", "phrase.", "Troisième", "phrase."]:
        speech.feed(token + " ")
    await speech.finish()
    assert [frame["type"] for frame in frames] == ["error"]
    assert frames[0]["code"] == "tts_unavailable"
    assert audio == [] and speech.first_audio_ms is None and speech.ended
