"""MMS text-to-speech speed with EVA's engine: synthesis time and time to first audio.

Self-contained: needs torch (a CUDA build for --device cuda), transformers, numpy and this
repository; no Django, Redis, network or downloaded weights. A random-weight model with the
real MMS architecture (VitsConfig's defaults: hidden 192, 6 layers, about 36M parameters)
and a French character vocabulary is saved with save_pretrained, then loaded by
voice.engine.TTSEngine exactly as facebook/mms-tts-fra would be.

Random weights predict arbitrary phoneme durations, and synthesis time grows with the audio
produced, so the speaking rate is first calibrated until the model speaks at a natural
15 characters a second (real MMS French is close to that); every figure uses that rate.

Measured:
1. synthesis of a 60- and a 250-character French text: median and p90 of warm runs, audio
   seconds, real-time factor (synthesis time / audio time);
2. time to first audio for a streamed reply (a simulated LLM: first token after --ttft-ms,
   then one word every --token-ms), speaking sentence by sentence with
   voice.speech_stream.SpeechStream (the code /ws/chat runs) against synthesising the whole
   reply once its last token has arrived. Syntheses run one at a time on one engine thread,
   as in a TTS worker.

Usage:  python bench/tts_cuda.py                 (CUDA; exits 2 without a CUDA device)
        python bench/tts_cuda.py --device cpu    (the same measurement on the CPU)
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import torch  # noqa: E402
from transformers.utils import logging as transformers_logging  # noqa: E402

from voice.engine import TTSEngine, build_tiny_voice  # noqa: E402
from voice.speech_splitter import SpeechSplitter  # noqa: E402
from voice.speech_stream import SpeechStream  # noqa: E402
from voice.synthesis import EngineConfig, VoiceSpec  # noqa: E402

NATURAL_CHARS_PER_S = 15.0
transformers_logging.disable_progress_bar()
TEXT_250 = (
    "La tour Eiffel est une tour de fer puddlé construite par Gustave Eiffel pour l'exposition "
    "universelle de Paris. Elle mesure environ trois cents mètres et reste le monument payant le "
    "plus visité du monde, avec des millions de visiteurs chaque année depuis son ouverture."
)[:250]
TEXT_60 = "Bonjour, je suis EVA. Comment puis-je vous aider aujourd'hui ?"[:60]
REPLY = (
    "Bien sûr, je peux t'aider avec ça. La tour Eiffel mesure environ trois cents mètres de haut. "
    "Elle a été construite pour l'exposition universelle de mille huit cent quatre-vingt-neuf. "
    "Aujourd'hui, c'est le monument le plus visité de Paris, et on y monte à pied ou en ascenseur."
)


def build_mms_sized_voice(folder: Path) -> tuple[Path, int]:
    """Save the MMS-sized random voice; returns (folder, parameter count)."""
    from transformers import VitsModel

    build_tiny_voice(folder, mms_sized=True)
    parameters = sum(p.numel() for p in VitsModel.from_pretrained(str(folder)).parameters())
    return folder, parameters


def load_engine(folder: Path, *, device: str, speaking_rate: float = 1.0, threads: int = 0) -> TTSEngine:
    config = EngineConfig(
        voices=(VoiceSpec("fra", str(folder), "fr"),),
        default_voice="fra",
        device=device,
        cpu_threads=threads,
        speaking_rate=speaking_rate,
        cache_entries=0,  # every run synthesises
    )
    return TTSEngine.load(config)


def calibrated_rate(engine: TTSEngine) -> float:
    """The speaking rate at which this random-weight model says 15 characters a second."""
    durations = [engine.synthesize(text=TEXT_250).duration_s for _ in range(5)]
    seconds_per_char = statistics.median(durations) / len(TEXT_250)
    return seconds_per_char * NATURAL_CHARS_PER_S


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def measure_synthesis(engine: TTSEngine, text: str, *, runs: int) -> dict[str, float]:
    """Warm runs of engine.synthesize (normalise, tokenise, model, WAV): median/p90 ms, RTF."""
    for _ in range(2):
        engine.synthesize(text=text)
    timings, durations = [], []
    for _ in range(runs):
        started = time.perf_counter()
        result = engine.synthesize(text=text)
        timings.append((time.perf_counter() - started) * 1000)
        durations.append(result.duration_s)
    median_ms = statistics.median(timings)
    audio_s = statistics.median(durations)
    return {
        "chars": len(text),
        "median_ms": round(median_ms, 1),
        "p90_ms": round(percentile(timings, 0.9), 1),
        "audio_s": round(audio_s, 2),
        "rtf": round(median_ms / 1000 / audio_s, 4),
        "runs": runs,
    }


class WholeReply(SpeechSplitter):
    """The baseline: nothing is spoken before the reply is complete, then all of it at once."""

    def feed(self, text: str) -> list[str]:
        self._buffer += text
        return []

    def flush(self) -> list[str]:
        rest, self._buffer = self._buffer.strip(), ""
        return [rest] if rest else []


async def stream_once(
    engine: TTSEngine, executor: ThreadPoolExecutor, *, mode: str, ttft_ms: float, token_ms: float
) -> dict[str, float]:
    """One simulated reply; times are milliseconds from the request (SpeechStream's construction)."""
    loop = asyncio.get_running_loop()
    audio_at: list[float] = []
    started = time.perf_counter()

    async def synthesize(*, text: str, voice: str | None, timeout_s: float | None = None):
        return await loop.run_in_executor(executor, lambda: engine.synthesize(text=text, voice=voice))

    async def send_json(frame: dict) -> None:
        if frame["type"] == "error":
            raise RuntimeError(frame["message"])

    async def send_bytes(data: bytes) -> None:
        audio_at.append((time.perf_counter() - started) * 1000)

    splitter = WholeReply() if mode == "whole" else SpeechSplitter(first_min_chars=24, max_chars=220)
    speech = SpeechStream(
        voice=None,
        send_json=send_json,
        send_bytes=send_bytes,
        synthesize=synthesize,
        max_in_flight=2,
        splitter=splitter,
    )
    words = REPLY.split(" ")
    tokens = [words[0]] + [" " + word for word in words[1:]]
    await asyncio.sleep(ttft_ms / 1000)
    for index, token in enumerate(tokens):
        if index:
            await asyncio.sleep(token_ms / 1000)
        speech.feed(token)
    last_token_ms = (time.perf_counter() - started) * 1000
    await speech.finish()
    return {
        "first_audio_ms": speech.first_audio_ms or float("nan"),
        "last_token_ms": last_token_ms,
        "all_audio_ms": audio_at[-1],
        "pieces": len(audio_at),
    }


def measure_streaming(engine: TTSEngine, *, runs: int, ttft_ms: float, token_ms: float) -> dict[str, dict[str, float]]:
    executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="tts-engine")
    results: dict[str, dict[str, float]] = {}
    for mode in ("sentences", "whole"):
        asyncio.run(stream_once(engine, executor, mode=mode, ttft_ms=ttft_ms, token_ms=token_ms))  # warm
        samples = [
            asyncio.run(stream_once(engine, executor, mode=mode, ttft_ms=ttft_ms, token_ms=token_ms))
            for _ in range(runs)
        ]
        results[mode] = {key: round(statistics.median(s[key] for s in samples), 1) for key in samples[0]}
    executor.shutdown()
    return results


def run(*, device: str, runs: int, stream_runs: int, ttft_ms: float, token_ms: float, threads: int) -> dict:
    with tempfile.TemporaryDirectory() as scratch:
        folder, parameters = build_mms_sized_voice(Path(scratch) / "mms-sized-fra")
        probe = load_engine(folder, device=device, threads=threads)
        rate = calibrated_rate(probe)
        del probe
        engine = load_engine(folder, device=device, speaking_rate=rate, threads=threads)
        if device == "cuda":
            hardware = torch.cuda.get_device_name(0)
        else:
            hardware = f"CPU, {torch.get_num_threads()} torch threads"
        return {
            "device": device,
            "hardware": hardware,
            "torch": torch.__version__,
            "parameters_m": round(parameters / 1e6, 1),
            "speaking_rate": round(rate, 3),
            "synthesis": [measure_synthesis(engine, text, runs=runs) for text in (TEXT_60, TEXT_250)],
            "stream": {
                "ttft_ms": ttft_ms,
                "token_ms": token_ms,
                "reply_chars": len(REPLY),
                **measure_streaming(engine, runs=stream_runs, ttft_ms=ttft_ms, token_ms=token_ms),
            },
        }


def print_report(report: dict) -> None:
    print(
        f"\nMMS-sized VITS ({report['parameters_m']}M parameters, random weights), {report['hardware']}, "
        f"torch {report['torch']}"
    )
    print(f"speaking rate calibrated to {NATURAL_CHARS_PER_S:g} chars/s: {report['speaking_rate']}\n")
    print(f"{'text':>10} | {'median ms':>9} | {'p90 ms':>8} | {'audio s':>7} | {'RTF':>7} | runs")
    print("-" * 60)
    for row in report["synthesis"]:
        print(
            f"{row['chars']:>5} chars | {row['median_ms']:>9} | {row['p90_ms']:>8} | {row['audio_s']:>7} | "
            f"{row['rtf']:>7} | {row['runs']}"
        )
    stream = report["stream"]
    print(
        f"\nStreamed reply of {stream['reply_chars']} chars: LLM first token after {stream['ttft_ms']:g} ms, "
        f"then a word every {stream['token_ms']:g} ms (medians)"
    )
    print(f"{'mode':>22} | {'first audio ms':>14} | {'last token ms':>13} | {'all audio ms':>12} | pieces")
    print("-" * 80)
    for mode, label in (("sentences", "sentence by sentence"), ("whole", "whole reply at once")):
        row = stream[mode]
        print(
            f"{label:>22} | {row['first_audio_ms']:>14} | {row['last_token_ms']:>13} | {row['all_audio_ms']:>12} | "
            f"{row['pieces']:g}"
        )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", choices=("cuda", "cpu"), default="cuda")
    parser.add_argument("--runs", type=int, default=20, help="warm synthesis runs per text")
    parser.add_argument("--stream-runs", type=int, default=5)
    parser.add_argument("--ttft-ms", type=float, default=100.0, help="simulated LLM time to first token")
    parser.add_argument("--token-ms", type=float, default=25.0, help="simulated LLM time per word token")
    parser.add_argument("--threads", type=int, default=0, help="CPU threads for torch (0: torch's default)")
    parser.add_argument("--json", type=Path, help="also write the figures to this file")
    args = parser.parse_args()
    if args.device == "cuda" and not torch.cuda.is_available():
        print(f"tts_cuda: torch sees no CUDA device (torch {torch.__version__}); nothing measured.", file=sys.stderr)
        return 2
    report = run(
        device=args.device,
        runs=args.runs,
        stream_runs=args.stream_runs,
        ttft_ms=args.ttft_ms,
        token_ms=args.token_ms,
        threads=args.threads,
    )
    print_report(report)
    if args.json:
        args.json.write_text(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
