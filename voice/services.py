"""Text-to-speech requests as a user makes them: rate limit, synthesise, record the metric."""

from __future__ import annotations

import time
import uuid

from accounts.errors import EvaError
from accounts.ratelimit import rate_limit_check
from metrics.recorder import record_metric
from voice import client
from voice.synthesis import Synthesis

BACKEND = "mms"


async def tts_speak(*, text: str, voice: str | None, user_id: int, api_key_id: int | None) -> tuple[str, Synthesis]:
    """Synthesise for a user: (request_id, synthesis). Every call, failed or not, is one RequestMetric."""
    request_id = str(uuid.uuid4())
    started = time.perf_counter()
    fields = {
        "channel": "tts",
        "backend": BACKEND,
        "model": client.model_label(voice),
        "user_id": user_id,
        "api_key_id": api_key_id,
        "request_id": request_id,
    }
    try:
        await rate_limit_check(user_id=user_id, api_key_id=api_key_id)
        synthesis = await client.synthesize(text=text, voice=voice)
    except EvaError as exc:
        record_metric(**fields, status="error", error_code=exc.code, total_ms=_ms_since(started))
        raise
    total_ms = _ms_since(started)
    record_metric(**fields, status="ok", total_ms=total_ms, time_to_first_audio_ms=total_ms)
    return request_id, synthesis


def _ms_since(started: float) -> float:
    return round((time.perf_counter() - started) * 1000, 2)
