"""POST /v1/audio/speech: OpenAI's TTS request spoken by EVA's voices, streamed as synthesis goes.

The input is cut into speakable pieces (voice.speech_splitter, as spoken chat replies are), each
synthesised by a TTS worker, the next one while the current one is sent. `wav`: a WAV header
whose sizes say "unknown" (0xFFFFFFFF, as streamed WAV does), then 16-bit PCM as each piece is
ready; `pcm`: the raw 16-bit little-endian mono PCM (X-Sample-Rate tells its rate). The headers go
once the first piece is spoken, so that a failure before it (no worker: 503) is a status code;
a worker failing later ends the audio early, and the metric row says error.

`voice`: an EVA voice (GET /api/v1/voices), or one of OpenAI's voice names, which speak with
EVA's default voice. `model`: one of SPEECH_MODELS. `speed` other than 1 and other formats than
wav and pcm are refused (400); `instructions` is ignored.
"""

from __future__ import annotations

import asyncio
import io
import struct
import time
import uuid
import wave
from collections.abc import AsyncGenerator
from dataclasses import dataclass, field
from typing import Any

from django.conf import settings

from accounts.errors import EvaError
from accounts.ratelimit import rate_limit_check
from metrics.models import Channel, Status
from metrics.recorder import DropReason, metric_dropped, record_metric
from openai_api.errors import OpenAIError
from openai_api.schemas import SpeechIn
from voice import client
from voice.config import engine_config
from voice.services import BACKEND
from voice.speech_splitter import SpeechSplitter
from voice.synthesis import Synthesis

SPEECH_MODELS = ("eva-tts", "tts-1", "tts-1-hd", "gpt-4o-mini-tts")
OPENAI_VOICES = frozenset(
    {"alloy", "ash", "ballad", "coral", "echo", "fable", "nova", "onyx", "sage", "shimmer", "verse", "marin", "cedar"}
)
FORMATS = {"wav": "audio/wav", "pcm": "audio/pcm"}


def wav_stream_header(*, sample_rate: int) -> bytes:
    """A 16-bit mono PCM WAV header for a stream of unknown length (RIFF and data sizes 0xFFFFFFFF)."""
    unknown = 0xFFFFFFFF
    return (
        b"RIFF" + struct.pack("<I", unknown) + b"WAVE"
        + b"fmt " + struct.pack("<IHHIIHH", 16, 1, 1, sample_rate, sample_rate * 2, 2, 16)
        + b"data" + struct.pack("<I", unknown)
    )


def pcm_of(synthesis: Synthesis) -> bytes:
    with wave.open(io.BytesIO(synthesis.wav), "rb") as wav:
        return wav.readframes(wav.getnframes())


@dataclass
class SpeechRequest:
    """A checked request: the voice to speak with, the pieces to speak, the format."""

    user_id: int
    api_key_id: int | None
    voice: str
    pieces: list[str]
    response_format: str
    request_id: str = field(default_factory=lambda: str(uuid.uuid4()))


def speech_request(body: SpeechIn, *, user_id: int, api_key_id: int | None) -> SpeechRequest:
    """Check OpenAI's body against what EVA can speak; OpenAIError (400, 404) otherwise."""
    if body.model not in SPEECH_MODELS:
        raise OpenAIError(
            f"The model {body.model!r} does not exist; speech models: {', '.join(SPEECH_MODELS)}.",
            code="model_not_found",
            status=404,
            param="model",
        )
    if body.response_format not in FORMATS:
        raise OpenAIError(
            f"response_format {body.response_format!r} is not supported; use wav or pcm.",
            code="unsupported_response_format",
            param="response_format",
        )
    if body.speed is not None and body.speed != 1.0:
        raise OpenAIError("Only speed 1.0 is supported.", code="unsupported_speed", param="speed")
    if body.stream_format not in (None, "audio"):
        raise OpenAIError("Only stream_format audio is supported.", code="unsupported_stream_format",
                          param="stream_format")
    config = engine_config()
    voice = config.default_voice if body.voice in OPENAI_VOICES else body.voice
    try:
        spec, text = config.checked_request(text=body.input, voice=voice)
    except EvaError as exc:
        param = "voice" if exc.code == "unknown_voice" else "input"
        raise OpenAIError(exc.message, code=exc.code, param=param) from None
    splitter = SpeechSplitter(
        first_min_chars=settings.TTS_STREAM_FIRST_MIN_CHARS, max_chars=settings.TTS_STREAM_MAX_CHARS
    )
    pieces = [p for p in [*splitter.feed(text), *splitter.flush()] if any(c.isalnum() for c in p)]
    if not pieces:
        raise OpenAIError("There is nothing speakable in the input.", code="invalid_text", param="input")
    return SpeechRequest(
        user_id=user_id, api_key_id=api_key_id, voice=spec.name, pieces=pieces, response_format=body.response_format
    )


class Speech:
    """One request's synthesis: `start()` waits for the first piece, then `audio()` yields bytes."""

    def __init__(self, request: SpeechRequest) -> None:
        self.request = request
        self.started = time.perf_counter()
        self.first_audio_ms: float | None = None
        self.sample_rate = 0
        self._recorded = False

    async def start(self) -> AsyncGenerator[bytes, None]:
        """Rate limit, then the first piece: EvaError (429, 503) before any byte is sent."""
        request = self.request
        try:
            await rate_limit_check(user_id=request.user_id, api_key_id=request.api_key_id)
            first = await self._speak(request.pieces[0])
        except EvaError as exc:
            self.record(status=Status.ERROR, error_code=exc.code)
            raise
        self.first_audio_ms = self._elapsed_ms()
        self.sample_rate = first.sample_rate
        return self._audio(first)

    async def _audio(self, first: Synthesis) -> AsyncGenerator[bytes, None]:
        pieces = self.request.pieces[1:]
        ahead: asyncio.Task[Synthesis] | None = None
        try:
            if self.request.response_format == "wav":
                yield wav_stream_header(sample_rate=first.sample_rate)
            current = first
            for piece in [*pieces, None]:
                ahead = asyncio.ensure_future(self._speak(piece)) if piece is not None else None
                yield pcm_of(current)
                if ahead is None:
                    break
                current = await ahead
                ahead = None
        except EvaError as exc:
            self.record(status=Status.ERROR, error_code=exc.code)
            raise
        except BaseException:
            self.record(status=Status.CANCELLED, error_code="cancelled")
            raise
        finally:
            if ahead is not None and not ahead.done():
                ahead.cancel()
        self.record(status=Status.OK)

    async def _speak(self, text: str) -> Synthesis:
        return await client.synthesize(text=text, voice=self.request.voice)

    def _elapsed_ms(self) -> float:
        return round((time.perf_counter() - self.started) * 1000, 3)

    def record(self, *, status: str, error_code: str = "") -> None:
        if self._recorded:
            return
        self._recorded = True
        total_ms = self._elapsed_ms()
        fields: dict[str, Any] = dict(
            request_id=self.request.request_id,
            user_id=self.request.user_id,
            api_key_id=self.request.api_key_id,
            channel=Channel.OPENAI,
            backend=BACKEND,
            model=client.model_label(self.request.voice),
            status=status,
            error_code=error_code,
            total_ms=total_ms,
            time_to_first_audio_ms=self.first_audio_ms,
            speech_total_ms=total_ms if status == Status.OK else None,
        )
        try:
            record_metric(**fields)
        except Exception as exc:
            metric_dropped(fields=fields, reason=DropReason.RECORD_FAILED, error=exc)
