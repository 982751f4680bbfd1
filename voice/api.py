"""REST endpoints of the voice app (mounted under /api/v1/): POST /tts, GET /voices."""

from __future__ import annotations

from typing import Any

from django.http import HttpRequest, HttpResponse
from ninja import Field, Router, Schema

from accounts.auth import auth_for, request_principal
from accounts.error_schemas import AUTH_ERRORS, BODY_ERRORS, error_responses
from accounts.models import Scope
from accounts.ratelimit import current_rate_limit, rate_limit_headers
from voice import client
from voice.services import tts_speak

router = Router(tags=["voice"], auth=auth_for(Scope.TTS))


class SpeechIn(Schema):
    text: str = Field(
        ..., description="What to say: 1 to TTS_MAX_CHARS characters; numbers, times and money are spelled out."
    )
    voice: str | None = Field(None, description="A voice name from GET /api/v1/voices; default: TTS_DEFAULT_VOICE.")


class VoiceOut(Schema):
    name: str
    language: str | None
    model: str
    default: bool


@router.post(
    "/tts",
    response={200: None, **error_responses(*AUTH_ERRORS, *BODY_ERRORS, 429, 503)},
    summary="Speak a text",
    description=(
        "Answers `audio/wav` (16-bit PCM, mono, the voice's sample rate, 16 kHz for MMS). "
        "Errors: 422 `invalid_text` (empty or nothing speakable), `text_too_long`, `unknown_voice`, "
        "`invalid_text_characters` (a NUL character or a lone surrogate); "
        "503 `tts_unavailable` (no TTS worker answered in time)."
    ),
    openapi_extra={
        "responses": {
            200: {
                "description": "The speech",
                "content": {"audio/wav": {"schema": {"type": "string", "format": "binary"}}},
            }
        }
    },
    auth=auth_for(Scope.TTS, for_async_view=True),
)
async def speak(request: HttpRequest, payload: SpeechIn) -> HttpResponse:
    principal = request_principal(request)
    request_id, synthesis = await tts_speak(
        text=payload.text, voice=payload.voice, user_id=principal.user_id, api_key_id=principal.api_key_id
    )
    response = HttpResponse(synthesis.wav, content_type="audio/wav")
    response["Content-Disposition"] = 'inline; filename="speech.wav"'
    response["X-Request-Id"] = request_id
    response["X-Voice"] = synthesis.voice
    response["X-Audio-Duration"] = f"{synthesis.duration_s:.3f}"
    for name, value in rate_limit_headers(current_rate_limit()).items():
        response[name] = value
    return response


@router.get(
    "/voices",
    response={200: list[VoiceOut], **error_responses(*AUTH_ERRORS)},
    summary="The voices available for /tts and /ws/chat",
)
def list_voices(request: HttpRequest) -> list[dict[str, Any]]:
    return client.voices()
