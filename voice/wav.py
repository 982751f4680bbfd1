"""16-bit PCM WAV files: written by the engine, read back by tests and benchmarks (stdlib only)."""

from __future__ import annotations

import io
import wave
from dataclasses import dataclass


def pcm16_wav(pcm: bytes, *, sample_rate: int) -> bytes:
    """A mono 16-bit little-endian PCM WAV file holding `pcm`."""
    buffer = io.BytesIO()
    with wave.open(buffer, "wb") as out:
        out.setnchannels(1)
        out.setsampwidth(2)
        out.setframerate(sample_rate)
        out.writeframes(pcm)
    return buffer.getvalue()


@dataclass(frozen=True)
class WavInfo:
    channels: int
    sample_width: int
    sample_rate: int
    frames: int

    @property
    def duration_s(self) -> float:
        return self.frames / self.sample_rate if self.sample_rate else 0.0


def wav_info(data: bytes) -> WavInfo:
    """Header facts of a WAV file; raises wave.Error when it is not one."""
    with wave.open(io.BytesIO(data), "rb") as wav:
        return WavInfo(wav.getnchannels(), wav.getsampwidth(), wav.getframerate(), wav.getnframes())
