"""Text-to-speech errors: each has a stable `code` that REST and WebSocket clients branch on."""

from __future__ import annotations

from accounts.errors import EvaError


class TTSUnavailable(EvaError):
    """No worker could synthesise in time: none running, it died, hung, or cannot load its model."""

    code = "tts_unavailable"
    status = 503


class InvalidText(EvaError):
    """Nothing speakable: empty, or nothing left once the voice's alphabet is applied."""

    code = "invalid_text"
    status = 422


class UnknownVoice(EvaError):
    code = "unknown_voice"
    status = 422


class TextTooLong(EvaError):
    code = "text_too_long"
    status = 422


_BY_CODE: dict[str, type[EvaError]] = {
    cls.code: cls for cls in (TTSUnavailable, InvalidText, UnknownVoice, TextTooLong)
}


def error_from_wire(code: str, message: str) -> EvaError:
    """Rebuild the error a worker reported; an unknown code is a worker failure (503)."""
    cls = _BY_CODE.get(code)
    if cls is None:
        return TTSUnavailable(f"The text-to-speech worker failed: {message}")
    return cls(message)
