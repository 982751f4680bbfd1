"""The engine's settings, read from Django settings at call time (tests override them)."""

from __future__ import annotations

from django.conf import settings

from voice.spoken_text import language_of_voice
from voice.synthesis import EngineConfig, VoiceSpec

TTS_CHANNEL = "voice-tts"  # `manage.py runworker voice-tts` listens here


def engine_config() -> EngineConfig:
    """EngineConfig built from the TTS_* settings."""
    voices = tuple(
        VoiceSpec(name=name, model=model, language=language_of_voice(name))
        for name, model in settings.TTS_VOICES.items()
    )
    return EngineConfig(
        voices=voices,
        default_voice=settings.TTS_DEFAULT_VOICE,
        device=settings.TTS_DEVICE,
        cpu_threads=settings.TTS_CPU_THREADS,
        speaking_rate=settings.TTS_SPEAKING_RATE,
        noise_scale=settings.TTS_NOISE_SCALE,
        noise_scale_duration=settings.TTS_NOISE_SCALE_DURATION,
        max_chars=settings.TTS_MAX_CHARS,
        cache_entries=settings.TTS_CACHE_ENTRIES,
        cache_max_bytes=settings.TTS_CACHE_MAX_BYTES,
        chunk_first_frames=settings.TTS_CHUNK_FIRST_FRAMES,
        chunk_growth=settings.TTS_CHUNK_GROWTH,
        chunk_max_frames=settings.TTS_CHUNK_MAX_FRAMES,
        warmup=settings.TTS_WARMUP,
        allocator=settings.TTS_ALLOCATOR,
        malloc_mmap_threshold=settings.TTS_MALLOC_MMAP_THRESHOLD,
        offline=settings.TTS_HUB_OFFLINE,
    )


def transport_name() -> str:
    """The TTS transport: "channel" (runworker voice-tts over the channel layer) or "local" (a child process)."""
    if settings.TTS_TRANSPORT != "auto":
        return str(settings.TTS_TRANSPORT)
    return "channel" if settings.REDIS_URL else "local"
