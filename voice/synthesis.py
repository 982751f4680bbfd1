"""What travels between the web process and a TTS worker: voices, engine settings, results.

Plain dataclasses (no torch, no Django) so that the web process, the embedded child and the
channel-layer worker share them, and the engine settings can be pickled into a child process.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from accounts.validation import text_validate
from voice.errors import InvalidText, TextTooLong, UnknownVoice


@dataclass(frozen=True)
class VoiceSpec:
    name: str
    model: str  # a Hugging Face hub id (facebook/mms-tts-fra) or a local folder
    language: str | None  # num2words language used to spell numbers; None: left as digits

    @property
    def model_label(self) -> str:
        """The model as shown to users and in metrics: a local folder is named, not located."""
        path = Path(self.model)
        label = path.name if self.model.startswith(("/", ".", "~")) or path.is_absolute() else self.model
        return label[:100]


@dataclass(frozen=True)
class EngineConfig:
    voices: tuple[VoiceSpec, ...]
    default_voice: str
    device: str = "auto"  # auto (cuda when available), cpu or cuda
    cpu_threads: int = 0  # 0: torch's default
    speaking_rate: float = 1.0
    noise_scale: float = 0.667
    noise_scale_duration: float = 0.8
    max_chars: int = 1000
    cache_entries: int = 256
    cache_max_chars: int = 200  # only short, likely repeated phrases are cached
    cache_max_bytes: int = 16 * 1024 * 1024  # the phrase cache's PCM, all entries together
    # Streaming synthesis (TTSEngine.stream): the waveform comes in chunks of spectrogram frames,
    # the first one small, each next one `chunk_growth` times the one before, up to
    # `chunk_max_frames`. On the CPU the decoder streams (voice/streaming_decoder.py); with
    # windows (CUDA, or `stream_windows=True`) each window overlaps its neighbours by
    # `chunk_overlap_frames` on either side (more than the decoder's receptive field), cut off again.
    stream_windows: bool | None = None  # None: windows on CUDA, the streaming decoder elsewhere
    chunk_first_frames: int = 12
    chunk_growth: float = 1.25  # on the CPU a chunk's decoding must not outlast the one before it playing
    chunk_max_frames: int = 96
    chunk_overlap_frames: int = 16
    warmup: bool = True
    # The malloc of the engine's process, chosen when it starts (voice/allocator.py): "jemalloc"
    # (when installed) or "system".
    allocator: str = "jemalloc"
    # A fixed glibc mmap threshold for the engine's process, in bytes (0: glibc's adaptive one). Fixed
    # at 128 KiB the worker's memory stays flat but synthesis is twice as slow (bench/RESULTS.md, #14).
    malloc_mmap_threshold: int = 0
    offline: bool = False  # never reach the hub (HF_HUB_OFFLINE)

    def voice(self, name: str | None) -> VoiceSpec:
        """The voice called `name` (None: the default one); UnknownVoice otherwise."""
        wanted = name or self.default_voice
        for spec in self.voices:
            if spec.name == wanted:
                return spec
        known = ", ".join(spec.name for spec in self.voices)
        raise UnknownVoice(f"Unknown voice {wanted!r}; available: {known}.")

    def checked_request(self, *, text: str, voice: str | None) -> tuple[VoiceSpec, str]:
        """Validate a request before it costs a worker anything: (voice, stripped text)."""
        spec = self.voice(voice)
        if not isinstance(text, str) or not text.strip():
            raise InvalidText("There is no text to speak.")
        text = text.strip()
        if len(text) > self.max_chars:
            raise TextTooLong(f"The text has {len(text)} characters; at most {self.max_chars} can be spoken at once.")
        return spec, text_validate(text, field="The text")


@dataclass(frozen=True)
class Synthesis:
    wav: bytes
    sample_rate: int
    duration_s: float
    voice: str
    model: str  # the voice's model label
    synthesis_ms: float = 0.0  # time the engine spent, 0 for a cache hit
    cached: bool = False

    def to_wire(self) -> dict[str, Any]:
        return asdict(self)

    @property
    def nbytes(self) -> int:
        return len(self.wav)

    @classmethod
    def from_wire(cls, data: dict[str, Any]) -> Synthesis:
        return cls(**{name: data[name] for name in cls.__dataclass_fields__ if name in data})


@dataclass(frozen=True)
class AudioChunk:
    """One chunk of a streamed synthesis: 16-bit little-endian mono PCM, in order from index 0."""

    pcm: bytes
    sample_rate: int
    index: int
    last: bool
    voice: str
    model: str
    synthesis_ms: float = 0.0  # engine time spent on this chunk (for chunk 0: everything before it too)
    cached: bool = False

    @property
    def duration_s(self) -> float:
        return len(self.pcm) / 2 / self.sample_rate if self.sample_rate else 0.0

    def to_wire(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_wire(cls, data: dict[str, Any]) -> AudioChunk:
        return cls(**{name: data[name] for name in cls.__dataclass_fields__ if name in data})


def chunk_plan(frames: int, config: EngineConfig) -> list[tuple[int, int]]:
    """(start, end) spectrogram frames of each decoder chunk of a `frames`-long latent."""
    plan: list[tuple[int, int]] = []
    size = float(max(config.chunk_first_frames, 1))
    largest = max(config.chunk_max_frames, config.chunk_first_frames)
    start = 0
    while start < frames:
        end = min(start + round(size), frames)
        if frames - end < round(size) // 2:  # no tiny tail chunk: the last one takes it
            end = frames
        plan.append((start, end))
        start = end
        size = min(size * max(config.chunk_growth, 1.0), largest)
    return plan
