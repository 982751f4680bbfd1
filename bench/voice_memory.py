"""TTS engine RSS over many streamed syntheses of different texts (is anything growing?).

Loads the engine in this process (as a worker does) with the phrase cache on (its default
bounds, in entries and bytes), synthesises N different texts through TTSEngine.stream and
prints RSS after warm-up and every `--every` syntheses, and the cache's size.
Run: .venv/bin/python bench/voice_memory.py --model DIR [--count 1000] [--every 100] [--threads 2]
     [--cache-bytes 0] [--windows] [--allocator system] [--mmap-threshold 131072]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))


def rss_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


WORDS = [
    "bonjour",
    "soleil",
    "maison",
    "jardin",
    "rivière",
    "montagne",
    "voiture",
    "musique",
    "lumière",
    "matin",
    "soir",
    "ville",
    "marché",
    "pomme",
]


def text_of(n: int) -> str:
    words = [WORDS[(n * 7 + k * 3) % len(WORDS)] for k in range(4 + n % 9)]
    return f"Phrase {n} : " + " ".join(words) + "."


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--model", type=Path, required=True)
    parser.add_argument("--count", type=int, default=1000)
    parser.add_argument("--every", type=int, default=100)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--cache-bytes", type=int, default=16 * 1024 * 1024, help="0: phrase cache off")
    parser.add_argument("--windows", action="store_true", help="decode overlapping windows (CUDA's way) on the CPU")
    parser.add_argument("--mmap-threshold", type=int, default=0, help="TTS_MALLOC_MMAP_THRESHOLD (0: glibc's own)")
    parser.add_argument("--allocator", default="jemalloc", choices=("jemalloc", "system"), help="TTS_ALLOCATOR")
    args = parser.parse_args()
    from voice import allocator

    allocator.exec_with(args.allocator)  # as the TTS processes do: this process starts again on it
    print(json.dumps({"allocator": allocator.in_use()}), flush=True)
    from voice.engine import TTSEngine
    from voice.synthesis import EngineConfig, VoiceSpec

    engine = TTSEngine.load(
        EngineConfig(
            voices=(VoiceSpec("fra", str(args.model), "fr"),),
            default_voice="fra",
            cpu_threads=args.threads,
            cache_max_bytes=args.cache_bytes,
            stream_windows=True if args.windows else None,
            malloc_mmap_threshold=args.mmap_threshold,
        )
    )
    for n in range(20):  # warm-up: shapes, allocator pools
        for _ in engine.stream(text=text_of(-n - 1)):
            pass
    series = [{"n": 0, "rss_mb": round(rss_mb(), 1), **engine.cache_stats()}]
    started = time.perf_counter()
    print(json.dumps(series[-1]), flush=True)
    for n in range(1, args.count + 1):
        for _ in engine.stream(text=text_of(n)):
            pass
        if n % args.every == 0:
            series.append({"n": n, "rss_mb": round(rss_mb(), 1), **engine.cache_stats()})
            print(json.dumps(series[-1]), flush=True)
    growth = (series[-1]["rss_mb"] - series[0]["rss_mb"]) / series[0]["rss_mb"] * 100
    print(
        json.dumps(
            {
                "after_warmup_mb": series[0]["rss_mb"],
                "last_mb": series[-1]["rss_mb"],
                "growth_pct": round(growth, 1),
                "synthesis_s": round(time.perf_counter() - started, 1),
            }
        )
    )


if __name__ == "__main__":
    main()
