"""Streaming synthesis (TTSEngine.stream) against whole-piece synthesis with the same seed.

The engine re-runs what transformers' VitsModel.forward does before its decoder, through the
model's public submodules, then decodes the latent with a streaming HiFi-GAN (the CPU's way,
voice/streaming_decoder.py) or in overlapping windows (CUDA's way). These tests guard both
couplings to the pinned transformers version: the joined chunks must be the whole-piece
waveform (same length; SNR and largest difference over the whole signal), on the tiny voice
and on an MMS-sized one (VitsConfig's defaults, the architecture of facebook/mms-tts-*, with
random weights saved by save_pretrained).
"""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch

from voice.engine import TTSEngine, build_tiny_voice
from voice.streaming_decoder import StreamingHifiGan
from voice.synthesis import EngineConfig, VoiceSpec, chunk_plan

TEXTS = ("bonjour, je suis eva.", "une phrase un peu plus longue pour voir plusieurs morceaux du décodeur.")


def engine_for(folder, **overrides) -> TTSEngine:
    config = EngineConfig(
        voices=(VoiceSpec("fra", str(folder), "fr"),),
        default_voice="fra",
        cpu_threads=1,
        cache_entries=0,
        warmup=False,
        **overrides,
    )
    return TTSEngine.load(config)


def pcm(data: bytes) -> np.ndarray:
    return np.frombuffer(data, dtype="<i2").astype(np.float64)


def compare(engine: TTSEngine, text: str, *, seed: int = 7) -> tuple[float, float, int]:
    """(SNR in dB, largest difference in 16-bit steps, chunks) of streamed vs whole synthesis."""
    loaded = engine._voices["fra"]
    torch.manual_seed(seed)
    whole = pcm(engine._run_model(loaded, text))
    torch.manual_seed(seed)
    chunks = list(engine.stream(text=text))
    streamed = pcm(b"".join(chunk.pcm for chunk in chunks))
    assert [chunk.index for chunk in chunks] == list(range(len(chunks)))
    assert [chunk.last for chunk in chunks] == [False] * (len(chunks) - 1) + [True]
    assert streamed.shape == whole.shape
    noise = np.sum((streamed - whole) ** 2)
    snr = float("inf") if noise == 0 else 10 * np.log10(np.sum(whole**2) / noise)
    return snr, float(np.max(np.abs(streamed - whole))), len(chunks)


@pytest.mark.parametrize("windows", [False, True], ids=["streaming-decoder", "windows"])
@pytest.mark.parametrize("text", TEXTS)
def test_streamed_chunks_join_into_the_whole_piece_waveform_on_the_tiny_voice(tiny_voice, text, windows):
    engine = engine_for(tiny_voice, chunk_first_frames=4, chunk_max_frames=8, stream_windows=windows)
    snr, largest, chunks = compare(engine, text)
    assert chunks >= 3
    assert snr > 60 and largest <= 4  # float rounding in 16-bit steps, of 32767


def test_too_little_overlap_shows_at_the_seams(tiny_voice):
    # The check can fail: without overlap each window's edges see zero padding, not their neighbours.
    engine = engine_for(
        tiny_voice, chunk_first_frames=4, chunk_max_frames=8, chunk_overlap_frames=0, stream_windows=True
    )
    snr, largest, _ = compare(engine, TEXTS[1])
    assert snr < 60 or largest > 4


def test_the_cpu_streams_the_decoder_and_cuda_decodes_windows(tiny_voice):
    engine = engine_for(tiny_voice)
    assert engine.device == "cpu" and not engine._windows()
    engine.device = "cuda"  # what is chosen there, without running anything on it
    assert engine._windows()
    assert not engine_for(tiny_voice, stream_windows=False)._windows()


def latent_of(engine: TTSEngine, text: str) -> torch.Tensor:
    loaded = engine._voices["fra"]
    with torch.inference_mode():
        return engine._latents(loaded, engine.speakable_text(text=text))


@pytest.mark.parametrize("pushes", [[1] * 400, [3, 1, 7, 2, 50], [5000]], ids=["frame-by-frame", "uneven", "at-once"])
def test_the_streaming_decoder_gives_forwards_waveform_however_the_latent_is_pushed(tiny_voice, pushes):
    engine = engine_for(tiny_voice)
    decoder_module = engine._voices["fra"].model.decoder
    latents = latent_of(engine, TEXTS[1])
    frames = int(latents.shape[-1])
    with torch.inference_mode():
        whole = decoder_module(latents, None)[0, 0]
        decoder = StreamingHifiGan(decoder_module, frames)
        out, pushed = [], 0
        for size in pushes:
            if pushed < frames:
                out.append(decoder.push(latents[..., pushed : pushed + size]))
                pushed = min(pushed + size, frames)
        if pushed < frames:
            out.append(decoder.push(latents[..., pushed:]))
        joined = torch.cat(out)
    assert joined.shape == whole.shape == (frames * decoder.hop,)
    assert float((joined - whole).abs().max()) < 1e-4
    with pytest.raises(ValueError):
        decoder.push(latents[..., :1])  # nothing is left to push


def test_the_flow_over_a_window_is_the_flow_over_the_whole_latent(tiny_voice):
    """The first chunk runs the flow over only what it needs: the same frames as over the whole."""
    engine = engine_for(tiny_voice)
    loaded = engine._voices["fra"]
    with torch.inference_mode():
        prior = engine._prior_latents(loaded, engine.speakable_text(text=TEXTS[1]))
        frames = int(prior.shape[-1])
        whole = engine._flow(loaded, prior, 0, frames)
        for start, end in ((0, 5), (3, 11), (frames - 7, frames), (frames // 2, frames // 2 + 1)):
            window = engine._flow(loaded, prior, start, end)
            assert window.shape[-1] == end - start
            assert float((window - whole[..., start:end]).abs().max()) < 1e-5


def test_the_streaming_decoders_reach_is_exact(tiny_voice):
    """Pushing a chunk's frames plus `lag_frames` gives all of its samples, one frame fewer does not."""
    engine = engine_for(tiny_voice)
    decoder_module = engine._voices["fra"].model.decoder
    latents = latent_of(engine, TEXTS[1])
    frames, first = int(latents.shape[-1]), 4
    with torch.inference_mode():
        short = StreamingHifiGan(decoder_module, frames)
        lag = short.lag_frames
        assert lag > 0 and first + lag < frames
        assert short.push(latents[..., : first + lag - 1]).shape[0] < first * short.hop
        enough = StreamingHifiGan(decoder_module, frames)
        assert enough.push(latents[..., : first + lag]).shape[0] >= first * enough.hop


@pytest.fixture(scope="module")
def mms_sized_voice(tmp_path_factory):
    return build_tiny_voice(tmp_path_factory.mktemp("voices") / "mms-sized", mms_sized=True)


@pytest.mark.parametrize("windows", [False, True], ids=["streaming-decoder", "windows"])
def test_streamed_chunks_join_into_the_whole_piece_waveform_on_an_mms_sized_voice(mms_sized_voice, windows):
    engine = engine_for(mms_sized_voice, stream_windows=windows)
    snr, largest, chunks = compare(engine, TEXTS[0])
    assert chunks >= 2
    assert snr > 60 and largest <= 4  # float rounding in 16-bit steps, of 32767


def test_the_chunk_plan_covers_every_frame_once_and_starts_small():
    for growth in (1.0, 1.25, 2.0):
        config = EngineConfig(
            voices=(), default_voice="fra", chunk_first_frames=12, chunk_growth=growth, chunk_max_frames=96
        )
        for frames in (1, 5, 12, 13, 17, 100, 1000):
            plan = chunk_plan(frames, config)
            assert plan[0][0] == 0 and plan[-1][1] == frames
            assert all(a[1] == b[0] for a, b in itertools.pairwise(plan))
            assert all(end - start <= 96 + 48 for start, end in plan)
            sizes = [end - start for start, end in plan[:-1]]
            assert sizes == sorted(sizes)  # never shrinking before the tail
    config = EngineConfig(voices=(), default_voice="fra", chunk_first_frames=12, chunk_growth=2, chunk_max_frames=96)
    assert chunk_plan(1000, config)[:4] == [(0, 12), (12, 36), (36, 84), (84, 180)]
    config = EngineConfig(voices=(), default_voice="fra")  # the defaults: 12, then 1.25 times larger each
    assert [end - start for start, end in chunk_plan(1000, config)[:6]] == [12, 15, 19, 23, 29, 37]


def test_a_cached_phrase_streams_as_one_chunk_and_the_cache_is_bounded_in_bytes(tiny_voice):
    engine = engine_for(tiny_voice)
    engine.config = EngineConfig(**{**engine.config.__dict__, "cache_entries": 100, "cache_max_bytes": 60_000})
    first = list(engine.stream(text="bonjour"))
    again = list(engine.stream(text="bonjour"))
    assert len(again) == 1 and again[0].cached and again[0].last
    assert again[0].pcm == b"".join(chunk.pcm for chunk in first)
    for n in range(30):
        engine.synthesize(text=f"phrase numéro {n} pour remplir le cache")
    stats = engine.cache_stats()
    assert 0 < stats["bytes"] <= 60_000 and stats["entries"] < 30
