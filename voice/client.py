"""Client side of text-to-speech, used by the web process (being built)."""

from __future__ import annotations

from typing import Any


async def tts_readiness(*, timeout_s: float) -> dict[str, Any]:
    """Not built yet: reports the TTS worker as absent."""
    return {"ok": False, "error": "text-to-speech is not built yet"}
