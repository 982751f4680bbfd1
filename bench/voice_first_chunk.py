"""The first piece's first audio, engine only: whole-piece synthesis vs the first streamed chunk.

Loads an MMS-sized voice folder (e.g. one saved by voice.engine.build_tiny_voice(mms_sized=True))
and alternates, per round and first clause: `VitsModel.forward` over the whole piece (what the
engine did before #14; weight norm folded in both), the first chunk of `TTSEngine.stream` as the
CPU makes it now (the streaming decoder, the flow over only what the chunk needs), the first chunk
decoded as an overlapping window (`stream_windows=True`: CUDA's way, and the CPU's before the
streaming decoder), and the part before the flow (`_prior_latents`: text encoder, duration
predictor, alignment). Prints each round and the medians.
Run: .venv/bin/python bench/voice_first_chunk.py DIR [--threads 2] [--rounds 8] [--first-frames 12]
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

PIECES = [
    "Bonjour, je suis ravie de t'aider.",
    "Salut, voici ce que je peux te dire.",
    "Avec plaisir, regardons cela.",
    "Bonne question, je vais t'expliquer.",
]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("model", type=Path)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=8)
    parser.add_argument("--first-frames", type=int, default=12, help="the first chunk's spectrogram frames")
    args = parser.parse_args()
    import torch

    from voice.engine import TTSEngine
    from voice.synthesis import EngineConfig, VoiceSpec

    engine = TTSEngine.load(
        EngineConfig(
            voices=(VoiceSpec("fra", str(args.model), "fr"),),
            default_voice="fra",
            cpu_threads=args.threads,
            cache_entries=0,
            chunk_first_frames=args.first_frames,
        )
    )
    streaming = engine.config
    windows = dataclasses.replace(streaming, stream_windows=True)
    loaded = engine._voices["fra"]
    rows: dict[str, list[float]] = {
        "whole_ms": [],
        "first_chunk_ms": [],
        "first_chunk_windows_ms": [],
        "before_flow_ms": [],
        "audio_s": [],
    }
    for number in range(args.rounds):
        text = engine.speakable_text(text=PIECES[number % len(PIECES)])
        started = time.perf_counter()
        pcm = engine._run_model(loaded, text)
        rows["whole_ms"].append((time.perf_counter() - started) * 1000)
        rows["audio_s"].append(len(pcm) / 2 / loaded.sample_rate)
        for key, config in (("first_chunk_ms", streaming), ("first_chunk_windows_ms", windows)):
            engine.config = config
            started = time.perf_counter()
            chunks = engine.stream(text=text)
            next(chunks)
            rows[key].append((time.perf_counter() - started) * 1000)
            chunks.close()
        with torch.inference_mode():
            started = time.perf_counter()
            engine._prior_latents(loaded, text)
            rows["before_flow_ms"].append((time.perf_counter() - started) * 1000)
        print(json.dumps({key: round(values[-1], 1) for key, values in rows.items()}), flush=True)
    print(json.dumps({key: round(statistics.median(values), 1) for key, values in rows.items()}))


if __name__ == "__main__":
    main()
