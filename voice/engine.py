"""Meta's MMS text-to-speech through transformers' VitsModel (torch is imported here and in
voice/streaming_decoder.py only).

Runs inside a TTS worker (``manage.py runworker voice-tts``) or the web process's embedded
child, never in the web process itself. One `TTSEngine` holds every configured voice, loaded
once; `synthesize` is synchronous and meant to be called from one thread at a time.
"""

from __future__ import annotations

import ctypes
import functools
import logging
import socket
import threading
import time
from collections import OrderedDict
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import numpy as np
import torch
from transformers import AutoTokenizer, VitsModel
from transformers.utils import logging as transformers_logging

from voice import allocator
from voice.errors import InvalidText, TextTooLong, TTSUnavailable
from voice.spoken_text import fold_to_vocabulary, spoken_form
from voice.streaming_decoder import StreamingHifiGan
from voice.synthesis import AudioChunk, EngineConfig, Synthesis, VoiceSpec, chunk_plan
from voice.wav import pcm16_wav

logger = logging.getLogger("voice.engine")

HUB_PROBE_TIMEOUT_S = 3.0
# On CUDA the decoder's input is padded to a multiple of this many spectrogram frames (see
# _tune_for_cuda); the padding is cut off again with sequence_lengths.
DECODER_FRAME_BUCKET = 64


class ModelNotAvailable(TTSUnavailable):
    """The weights are neither in a local folder nor in the hub cache, and cannot be fetched."""


@dataclass
class _LoadedVoice:
    spec: VoiceSpec
    model: Any  # VitsModel
    tokenizer: Any  # VitsTokenizer
    vocabulary: frozenset[str]
    sample_rate: int
    romanizer: Any | None  # uroman.Uroman for voices whose tokenizer says is_uroman

    @property
    def hop(self) -> int:
        """Waveform samples per spectrogram frame (the product of the decoder's upsample rates)."""
        return int(np.prod(self.model.config.upsample_rates))


def resolve_device(requested: str) -> str:
    """With "auto", CUDA when torch sees a GPU; asking for CUDA without one is an error."""
    if requested == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if requested == "cuda" and not torch.cuda.is_available():
        raise TTSUnavailable("TTS_DEVICE is cuda but torch sees no CUDA device on this worker.")
    return requested


def _without_cudnn(forward: Any) -> Any:
    @functools.wraps(forward)
    def run(*args: Any, **kwargs: Any) -> Any:
        with torch.backends.cudnn.flags(enabled=False):
            return forward(*args, **kwargs)

    return run


def _pad_decoder_input(module: Any, args: tuple[Any, ...]) -> tuple[Any, ...] | None:
    spectrogram = args[0]
    frames = spectrogram.shape[-1]
    padded = -(-frames // DECODER_FRAME_BUCKET) * DECODER_FRAME_BUCKET
    if padded == frames:
        return None
    return (torch.nn.functional.pad(spectrogram, (0, padded - frames)), *args[1:])


def _tune_for_cuda(model: Any) -> None:
    """Every utterance has new tensor lengths, and cuDNN builds an execution plan for each new
    shape of each convolution: on an H100 that CPU work was about half of a synthesis, far
    more than its GPU time. So the HiFi-GAN decoder (most of the GPU work) gets its input
    padded to a few bucketed lengths whose plans are reused, and the text encoder, duration
    predictor and flow, whose lengths cannot be bucketed from outside, run PyTorch's own
    convolution kernels. Measured in bench/RESULTS.md (CUDA section)."""
    model.decoder.register_forward_pre_hook(_pad_decoder_input)
    for part in (model.text_encoder, model.duration_predictor, model.flow):
        part.forward = _without_cudnn(part.forward)


M_MMAP_THRESHOLD = -3  # glibc's mallopt parameter (malloc.h)


def fix_mmap_threshold(threshold: int) -> bool:
    """Make every block above `threshold` bytes its own mapping, unmapped when freed (glibc only).

    glibc's threshold is adaptive: each freed mapped block raises it to that block's size (up to
    32 MiB), and from then on blocks below it come from the heap. Synthesis allocates tensors of
    new sizes for every text and chunk, so the heap fragments and the TTS process settles at
    1.4 to 1.7 GB with an MMS voice instead of 0.64 GB. A fixed 128 KiB threshold keeps it at
    0.64 GB, but every large tensor is then a fresh mapping whose pages fault in, and synthesis
    took twice as long (bench/RESULTS.md, #14 memory): so it is a setting, off by default.
    Returns whether it was set; elsewhere than glibc nothing is done.
    """
    if threshold <= 0:
        return False
    try:
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError):
        return False  # not glibc
    if mallopt(M_MMAP_THRESHOLD, threshold) != 1:
        logger.warning("could not set the mmap threshold to %d bytes", threshold)
        return False
    return True


def _hub_reachable() -> bool:
    """A quick TCP probe, so that a machine without network fails in seconds, not after retries."""
    from huggingface_hub import constants

    parsed = urlparse(constants.ENDPOINT)
    port = parsed.port or (443 if parsed.scheme == "https" else 80)
    try:
        with socket.create_connection((parsed.hostname or "", port), timeout=HUB_PROBE_TIMEOUT_S):
            return True
    except OSError:
        return False


def _how_to_get(model: str) -> str:
    return (
        f"Download it on a machine with network access with `hf download {model}` "
        f"(huggingface_hub's CLI; then copy ~/.cache/huggingface), or with `hf download {model} --local-dir DIR` "
        f"and point MMS_TTS_MODEL / TTS_VOICES at DIR (a folder holding config.json, the weights and vocab.json)."
    )


def _from_pretrained(loader: Any, model: str, *, offline: bool) -> Any:
    """Load from a local folder, else the hub cache, else the hub; never hang without network."""
    path = Path(model).expanduser()
    if path.is_dir():
        try:
            return loader.from_pretrained(str(path), local_files_only=True)
        except (OSError, ValueError) as exc:
            raise ModelNotAvailable(f"The TTS model folder {model} cannot be loaded: {exc}") from None
    if model.startswith(("/", ".", "~")):
        raise ModelNotAvailable(f"The TTS model folder {model} does not exist. {_how_to_get('facebook/mms-tts-fra')}")
    try:
        return loader.from_pretrained(model, local_files_only=True)
    except OSError:
        pass  # not cached yet
    from huggingface_hub import constants

    if offline or constants.HF_HUB_OFFLINE:
        raise ModelNotAvailable(
            f"The TTS model {model} is not in the Hugging Face cache and HF_HUB_OFFLINE is set. {_how_to_get(model)}"
        )
    if not _hub_reachable():
        raise ModelNotAvailable(
            f"The TTS model {model} is not in the Hugging Face cache and the hub cannot be reached. "
            f"{_how_to_get(model)}"
        )
    try:
        return loader.from_pretrained(model)
    except OSError as exc:
        raise ModelNotAvailable(f"The TTS model {model} could not be downloaded: {exc}. {_how_to_get(model)}") from None


class TTSEngine:
    """Every configured voice, loaded once and warmed up; synthesis to 16-bit PCM WAV."""

    def __init__(
        self,
        config: EngineConfig,
        voices: dict[str, _LoadedVoice],
        device: str,
        unavailable: dict[str, str] | None = None,
    ) -> None:
        self.config = config
        self.device = device
        self._voices = voices
        self._unavailable = unavailable or {}  # voice name -> why it could not be loaded
        # Phrase cache: (voice, folded text) -> int16 PCM, bounded in entries and in bytes.
        self._cache: OrderedDict[tuple[str, str], bytes] = OrderedDict()
        self._cache_bytes = 0
        self._cache_lock = threading.Lock()

    @classmethod
    def load(cls, config: EngineConfig) -> TTSEngine:
        """Load every voice on the configured device, then synthesise once per voice (warm-up)."""
        started = time.perf_counter()
        fix_mmap_threshold(config.malloc_mmap_threshold)
        transformers_logging.disable_progress_bar()  # type: ignore[no-untyped-call]  # worker logs, not a terminal
        if config.cpu_threads > 0:
            torch.set_num_threads(config.cpu_threads)
        device = resolve_device(config.device)
        voices: dict[str, _LoadedVoice] = {}
        unavailable: dict[str, str] = {}
        for spec in config.voices:
            try:
                voices[spec.name] = cls._load_voice(spec, config=config, device=device)
            except ModelNotAvailable as exc:
                if spec.name == config.default_voice:
                    raise
                # An extra voice without weights must not take the default voice down with it.
                logger.error("voice %s is unavailable: %s", spec.name, exc.message)
                unavailable[spec.name] = exc.message
        engine = cls(config, voices, device, unavailable)
        if config.warmup:
            for name in voices:
                engine._warm_up(name)
        logger.info(
            "TTS engine ready in %.1f s on %s: %s",
            time.perf_counter() - started,
            device,
            ", ".join(f"{name}={voice.spec.model}" for name, voice in voices.items()),
        )
        return engine

    @staticmethod
    def _load_voice(spec: VoiceSpec, *, config: EngineConfig, device: str) -> _LoadedVoice:
        tokenizer = _from_pretrained(AutoTokenizer, spec.model, offline=config.offline)
        model = _from_pretrained(VitsModel, spec.model, offline=config.offline)
        if getattr(tokenizer, "phonemize", False):
            # MMS voices use characters; phonemizing needs espeak, which EVA does not ship.
            tokenizer.phonemize = False
        model.to(device)
        model.eval()
        _fold_weight_norm(model)
        if device == "cuda":
            _tune_for_cuda(model)
        # On the model, not model.config: VitsModel copies these from its config at construction.
        model.speaking_rate = config.speaking_rate
        model.noise_scale = config.noise_scale
        model.noise_scale_duration = config.noise_scale_duration
        romanizer = None
        if getattr(tokenizer, "is_uroman", False):
            import uroman

            romanizer = uroman.Uroman()
        vocabulary = frozenset(tokenizer.get_vocab())
        return _LoadedVoice(spec, model, tokenizer, vocabulary, int(model.config.sampling_rate), romanizer)

    def _warm_up(self, voice: str) -> None:
        loaded = self._voices[voice]
        letters = [c for c in sorted(loaded.vocabulary) if len(c) == 1 and c.isalpha()][:6]
        text = fold_to_vocabulary("bonjour hello", loaded.vocabulary) or "".join(letters)
        if text:
            self._run_model(loaded, text)
            for _ in self.stream(text=text, voice=voice):
                pass

    @property
    def voice_names(self) -> list[str]:
        return list(self._voices)

    def describe(self) -> dict[str, Any]:
        return {
            "device": self.device,
            "torch": torch.__version__,
            "threads": torch.get_num_threads(),
            "allocator": allocator.in_use(),
            "voices": {
                name: {"model": v.spec.model_label, "sample_rate": v.sample_rate} for name, v in self._voices.items()
            },
            "unavailable_voices": dict(self._unavailable),
        }

    def speakable_text(self, *, text: str, voice: str | None = None) -> str:
        """What the voice will actually say: spelled out, romanised if needed, folded to its alphabet."""
        spec, text = self.config.checked_request(text=text, voice=voice)
        if spec.name in self._unavailable:
            reason = self._unavailable[spec.name]
            raise TTSUnavailable(f"The voice {spec.name!r} is not loaded on this worker: {reason}")
        loaded = self._voices[spec.name]
        spoken = spoken_form(text, language=spec.language)
        if loaded.romanizer is not None and not spoken.isascii():
            spoken = loaded.romanizer.romanize_string(spoken)
        folded = fold_to_vocabulary(spoken, loaded.vocabulary)
        if not folded.strip():
            raise InvalidText(f"Nothing in this text can be spoken by the voice {spec.name!r}.")
        if len(folded) > self.config.max_chars * 4:
            raise TextTooLong("Once numbers are spelled out, this text is too long to speak at once.")
        return folded

    def synthesize(self, *, text: str, voice: str | None = None) -> Synthesis:
        """Speak `text` with `voice` (None: the default voice) as a 16-bit PCM WAV file."""
        name = self.config.voice(voice).name
        folded = self.speakable_text(text=text, voice=name)
        loaded = self._voices[name]
        pcm = self._cached(name, folded)
        cached = pcm is not None
        started = time.perf_counter()
        if pcm is None:
            pcm = self._run_model(loaded, folded)
            self._remember(name, folded, pcm)
        return Synthesis(
            wav=pcm16_wav(pcm, sample_rate=loaded.sample_rate),
            sample_rate=loaded.sample_rate,
            duration_s=len(pcm) / 2 / loaded.sample_rate,
            voice=name,
            model=loaded.spec.model_label,
            synthesis_ms=0.0 if cached else (time.perf_counter() - started) * 1000,
            cached=cached,
        )

    def stream(self, *, text: str, voice: str | None = None) -> Iterator[AudioChunk]:
        """Speak `text` chunk by chunk: each chunk of the waveform is yielded as soon as it exists.

        The text encoder and the duration predictor run once over the whole piece, the flow
        once over it too (on the CPU in two windows: the first chunk's, then the rest); the
        HiFi-GAN decoder then makes the waveform chunk by chunk (see `chunk_plan`). On the
        CPU it streams (voice/streaming_decoder.py: each layer computes each output once, so a
        chunk costs its own audio and no context twice); on CUDA, or with `stream_windows`, it
        decodes windows of the latent widened by `chunk_overlap_frames` on both sides and cut
        back (fixed window shapes suit cuDNN's per-shape plans). Either way the joined chunks
        are the whole-piece waveform (tests/voice/test_streaming_engine.py measures how close).
        Stop iterating (close the generator) to drop the rest of the work.
        """
        name = self.config.voice(voice).name
        folded = self.speakable_text(text=text, voice=name)
        loaded = self._voices[name]
        label = loaded.spec.model_label
        rate = loaded.sample_rate
        pcm = self._cached(name, folded)
        if pcm is not None:
            yield AudioChunk(pcm, rate, 0, True, name, label, cached=True)
            return
        started = time.perf_counter()
        parts: list[bytes] = []
        with torch.inference_mode():
            prior = self._prior_latents(loaded, folded)
            pieces = self._decode_windows if self._windows() else self._decode_streaming
            for index, (part, last) in enumerate(pieces(loaded, prior)):
                parts.append(part)
                now = time.perf_counter()
                yield AudioChunk(part, rate, index, last, name, label, (now - started) * 1000)
                started = time.perf_counter()  # the consumer's time between chunks is not ours
        del prior
        self._remember(name, folded, b"".join(parts))

    def _windows(self) -> bool:
        """Decode overlapping windows (CUDA's default) rather than stream the decoder (the CPU's)."""
        if self.config.stream_windows is None:
            return self.device == "cuda"
        return self.config.stream_windows

    def _decode_windows(self, loaded: _LoadedVoice, prior: Any) -> Iterator[tuple[bytes, bool]]:
        latents = self._flow(loaded, prior, 0, int(prior.shape[-1]))
        plan = chunk_plan(int(latents.shape[-1]), self.config)
        for index, (start, end) in enumerate(plan):
            yield self._decode_window(loaded, latents, start, end), index == len(plan) - 1

    def _decode_streaming(self, loaded: _LoadedVoice, prior: Any) -> Iterator[tuple[bytes, bool]]:
        """Push the latent to a streaming decoder up to each chunk's end plus the decoder's reach.

        The flow runs first over just what the first chunk needs, then once over the rest."""
        frames = int(prior.shape[-1])
        decoder = StreamingHifiGan(loaded.model.decoder, frames)
        pushed = 0
        rest: Any = None
        for _, end in chunk_plan(frames, self.config):
            upto = min(end + decoder.lag_frames, frames)
            if pushed == 0 and upto < frames:
                latents = self._flow(loaded, prior, 0, upto)
            else:
                if rest is None:
                    rest, rest_from = self._flow(loaded, prior, pushed, frames), pushed
                latents = rest[..., pushed - rest_from : upto - rest_from]
            samples = decoder.push(latents)
            pushed = upto
            yield _pcm16(samples), pushed == frames
            if pushed == frames:
                return

    def _cached(self, name: str, folded: str) -> bytes | None:
        if not self._cacheable(folded):
            return None
        with self._cache_lock:
            hit = self._cache.get((name, folded))
            if hit is not None:
                self._cache.move_to_end((name, folded))
            return hit

    def _cacheable(self, folded: str) -> bool:
        return (
            self.config.cache_entries > 0
            and self.config.cache_max_bytes > 0
            and (len(folded) <= self.config.cache_max_chars)
        )

    def _remember(self, name: str, folded: str, pcm: bytes) -> None:
        if not self._cacheable(folded) or len(pcm) > self.config.cache_max_bytes:
            return
        with self._cache_lock:
            previous = self._cache.pop((name, folded), None)
            if previous is not None:
                self._cache_bytes -= len(previous)
            self._cache[(name, folded)] = pcm
            self._cache_bytes += len(pcm)
            while len(self._cache) > self.config.cache_entries or self._cache_bytes > self.config.cache_max_bytes:
                _, dropped = self._cache.popitem(last=False)
                self._cache_bytes -= len(dropped)

    def cache_stats(self) -> dict[str, int]:
        with self._cache_lock:
            return {"entries": len(self._cache), "bytes": self._cache_bytes}

    def _run_model(self, loaded: _LoadedVoice, text: str) -> bytes:
        """The model's waveform for already-folded text, trimmed to its length, as int16 PCM."""
        inputs = loaded.tokenizer(text, return_tensors="pt")
        input_ids = inputs["input_ids"].to(self.device)
        attention_mask = inputs["attention_mask"].to(self.device)
        with torch.inference_mode():
            output = loaded.model(input_ids=input_ids, attention_mask=attention_mask)
        length = int(output.sequence_lengths[0])
        return _pcm16(output.waveform[0, :length])

    def _latents(self, loaded: _LoadedVoice, text: str) -> Any:
        """What VitsModel.forward computes before its decoder, for one unpadded text."""
        prior = self._prior_latents(loaded, text)
        return self._flow(loaded, prior, 0, int(prior.shape[-1]))

    def _prior_latents(self, loaded: _LoadedVoice, text: str) -> Any:
        """What VitsModel.forward computes before its flow, for one unpadded text.

        Coupled to transformers' VitsModel (pinned in requirements.txt): the same public
        submodules (text_encoder, duration_predictor; the flow in `_flow`) called in the same order with the
        same random draws, so that with the same seed the latent is the whole-piece one. The
        alignment is built with repeat_interleave instead of forward's one-hot matmul (the same
        values: each output frame copies one text position). tests/voice/test_streaming_engine.py
        guards the coupling on a tiny and an MMS-sized model.
        """
        model = loaded.model
        input_ids = loaded.tokenizer(text, return_tensors="pt")["input_ids"].to(self.device)
        mask_dtype = model.text_encoder.embed_tokens.weight.dtype
        padding_mask = torch.ones_like(input_ids).unsqueeze(-1).to(mask_dtype)
        encoded = model.text_encoder(input_ids=input_ids, padding_mask=padding_mask, attention_mask=None)
        hidden_states = encoded.last_hidden_state.transpose(1, 2)
        padding_mask = padding_mask.transpose(1, 2)
        if model.config.use_stochastic_duration_prediction:
            log_duration = model.duration_predictor(
                hidden_states, padding_mask, None, reverse=True, noise_scale=model.noise_scale_duration
            )
        else:
            log_duration = model.duration_predictor(hidden_states, padding_mask, None)
        duration = torch.ceil(torch.exp(log_duration) * padding_mask * (1.0 / model.speaking_rate))
        repeats = duration[0, 0].long()
        if int(repeats.sum()) < 1:  # forward clamps the length to at least one frame
            repeats = torch.zeros_like(repeats)
            repeats[0] = 1
        positions = torch.repeat_interleave(torch.arange(repeats.shape[0], device=repeats.device), repeats)
        prior_means = encoded.prior_means[:, positions].transpose(1, 2)
        prior_log_variances = encoded.prior_log_variances[:, positions].transpose(1, 2)
        return prior_means + torch.randn_like(prior_means) * torch.exp(prior_log_variances) * model.noise_scale

    def _flow(self, loaded: _LoadedVoice, prior: Any, start: int, end: int) -> Any:
        """Frames [start, end) of the flow's output (reversed, as forward runs it) over `prior`.

        Each coupling layer is a stack of dilated convolutions plus pointwise work, so an output
        frame depends on the prior within `_flow_reach` frames of it: the flow runs over
        [start, end) widened by that much (clamped to the latent, where forward pads with zeros
        too) and is cut back, the same values as over the whole latent."""
        model = loaded.model
        reach = _flow_reach(model.config)
        low, high = max(start - reach, 0), min(end + reach, int(prior.shape[-1]))
        window = prior[..., low:high]
        output_mask = torch.ones(1, 1, window.shape[-1], dtype=window.dtype, device=window.device)
        return model.flow(window, output_mask, None, reverse=True)[..., start - low : end - low]

    def _decode_window(self, loaded: _LoadedVoice, latents: Any, start: int, end: int) -> bytes:
        """Frames [start, end) of the waveform, decoded with `chunk_overlap_frames` of context each side."""
        overlap = self.config.chunk_overlap_frames
        low, high = max(start - overlap, 0), min(end + overlap, int(latents.shape[-1]))
        waveform = loaded.model.decoder(latents[..., low:high], None)[0, 0]
        hop = loaded.hop
        return _pcm16(waveform[(start - low) * hop : (end - low) * hop])


def _flow_reach(config: Any) -> int:
    """How many frames either side the prior flow's output depends on (its WaveNets' reach)."""
    per_layer = (config.wavenet_kernel_size - 1) // 2
    wavenet = sum(per_layer * config.wavenet_dilation_rate**i for i in range(config.prior_encoder_num_wavenet_layers))
    return int(config.prior_encoder_num_flows * wavenet)


def _pcm16(waveform: Any) -> bytes:
    samples = waveform.float().clamp(-1.0, 1.0).cpu().numpy()
    return bytes((samples * 32767.0).astype("<i2").tobytes())


def _fold_weight_norm(model: Any) -> None:
    """Compute weight-normalised weights once instead of at every call (torch's public
    parametrize API; the flow's WaveNet layers carry them). Inference only."""
    from torch.nn.utils import parametrize

    for module in model.modules():
        if parametrize.is_parametrized(module):
            for name in list(module.parametrizations):
                parametrize.remove_parametrizations(module, name, leave_parametrized=True)


def build_tiny_voice(
    folder: str | Path, *, vocabulary: str | None = None, seed: int = 0, mms_sized: bool = False, **config: Any
) -> Path:
    """Save a random-weight MMS-style voice (real VitsConfig and character tokenizer) into `folder`.

    For tests and benchmarks where real weights cannot be downloaded: it loads through
    exactly the same `from_pretrained` path as facebook/mms-tts-*. Tiny by default (fast
    tests); `mms_sized=True` keeps VitsConfig's defaults, which are the MMS checkpoints'
    architecture (hidden 192, 6 layers, about 36M parameters). `config` overrides sizes.
    """
    import json
    import tempfile

    from transformers import VitsConfig, VitsTokenizer

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    letters = vocabulary or "abcdefghijklmnopqrstuvwxyzàâçéèêëîïôùûüÿœæ'-"
    tokens = ["_", " ", *dict.fromkeys(letters)]  # "_" (id 0) is the blank MMS inserts between characters
    with tempfile.TemporaryDirectory() as scratch:
        vocab_file = Path(scratch) / "vocab.json"
        vocab_file.write_text(json.dumps({token: index for index, token in enumerate(tokens)}), encoding="utf-8")
        tokenizer = VitsTokenizer(str(vocab_file), pad_token="_", unk_token="_", phonemize=False, normalize=True)
        tokenizer.save_pretrained(folder)
    sizes: dict[str, Any] = {
        "hidden_size": 16,
        "num_hidden_layers": 1,
        "num_attention_heads": 2,
        "ffn_dim": 32,
        "flow_size": 16,
        "spectrogram_bins": 17,
        "upsample_initial_channel": 16,
        "upsample_rates": [8, 8, 2, 2],
        "upsample_kernel_sizes": [16, 16, 4, 4],
        "resblock_kernel_sizes": [3],
        "resblock_dilation_sizes": [[1]],
        "prior_encoder_num_flows": 1,
        "prior_encoder_num_wavenet_layers": 1,
        "posterior_encoder_num_wavenet_layers": 1,
        "duration_predictor_filter_channels": 16,
        "duration_predictor_num_flows": 1,
        "depth_separable_num_layers": 1,
    }
    if mms_sized:
        sizes = {}
    sizes.update(config)
    vits_config = VitsConfig(vocab_size=len(tokens), pad_token_id=0, sampling_rate=16_000, **sizes)
    torch.manual_seed(seed)
    VitsModel(vits_config).save_pretrained(folder)
    return folder


__all__ = ["ModelNotAvailable", "TTSEngine", "build_tiny_voice", "fix_mmap_threshold", "resolve_device"]
