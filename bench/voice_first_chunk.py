"""The first piece's first audio, engine only: whole-piece synthesis vs the first streamed chunk.

Loads an MMS-sized voice folder (e.g. one saved by voice.engine.build_tiny_voice(mms_sized=True))
and alternates, per round and first clause: `VitsModel.forward` over the whole piece (what the
engine did before #14; weight norm folded in both), the first chunk of `TTSEngine.stream`, and
the part of it before the decoder (`_latents`). Prints each round and the medians.
Run: .venv/bin/python bench/voice_first_chunk.py DIR [--threads 2] [--rounds 8]
"""

from __future__ import annotations

import argparse
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
        )
    )
    loaded = engine._voices["fra"]
    rows: dict[str, list[float]] = {"whole_ms": [], "first_chunk_ms": [], "before_decoder_ms": [], "audio_s": []}
    for number in range(args.rounds):
        text = engine.speakable_text(text=PIECES[number % len(PIECES)])
        started = time.perf_counter()
        pcm = engine._run_model(loaded, text)
        rows["whole_ms"].append((time.perf_counter() - started) * 1000)
        rows["audio_s"].append(len(pcm) / 2 / loaded.sample_rate)
        started = time.perf_counter()
        chunks = engine.stream(text=text)
        next(chunks)
        rows["first_chunk_ms"].append((time.perf_counter() - started) * 1000)
        chunks.close()
        with torch.inference_mode():
            started = time.perf_counter()
            engine._latents(loaded, text)
            rows["before_decoder_ms"].append((time.perf_counter() - started) * 1000)
        print(json.dumps({key: round(values[-1], 1) for key, values in rows.items()}), flush=True)
    print(json.dumps({key: round(statistics.median(values), 1) for key, values in rows.items()}))


if __name__ == "__main__":
    main()
