"""MMS text-to-speech on the CPU, and time to first audio on /ws/chat with a real TTS worker.

1. Synthesis: the measurement of bench/tts_cuda.py (same functions) with --device cpu: an
   MMS-sized random-weight VITS (36.3M parameters) saved and loaded by voice.engine, a 60- and
   a 250-character French text, median of warm runs, real-time factor.
2. /ws/chat end to end on this machine: the ASGI application in-process (routing, API-key
   auth, the chat consumer, SpeechStream), the Ollama-protocol stand-in (first token after
   100 ms, then a word every 25 ms, a 276-character French reply), and one real
   `manage.py runworker voice-tts` process with the same MMS-sized model over the Redis
   channel layer. Each request sends {"type": "message", "voice": true}; time to first audio
   is measured by the client, from sending the message to receiving the first audio frame.
   "Whole reply at once" swaps SpeechStream's splitter for one that holds everything until
   the reply is complete (the baseline), all else equal.

Needs Redis on 127.0.0.1:6379 (database 13 is used and flushed of this run's keys only).
Run: .venv/bin/python bench/tts_cpu.py [--quick]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from tts_cuda import REPLY, WholeReply, build_mms_sized_voice, calibrated_rate, load_engine, print_report, run  # noqa: E402

REDIS_URL = os.environ.get("BENCH_REDIS_URL", "redis://127.0.0.1:6379/13")
PREFIX = "evabenchtts"


def django_env(*, scratch: Path, model: Path, rate: float, ollama_url: str) -> dict[str, str]:
    return {
        "DJANGO_SETTINGS_MODULE": "evaproject.settings",
        "DATABASE_URL": f"sqlite:///{scratch / 'db.sqlite3'}",
        "REDIS_URL": REDIS_URL,
        "CHANNEL_LAYER_PREFIX": PREFIX,
        "SECRET_KEY": "bench-only-secret-key-0123456789abcdefghijklmnopqrstuvwxyz",
        "DEBUG": "false",
        "SECURE_SSL": "false",
        "OLLAMA_URL": ollama_url,
        "OLLAMA_WARMUP": "false",
        "LLM_BACKENDS": "ollama",
        "GROQ_API_KEY": "",
        "RATE_LIMIT_PER_KEY": "100000/minute",
        "RATE_LIMIT_PER_USER": "100000/minute",
        "WS_MAX_SOCKETS_PER_KEY": "0",
        "WS_MAX_SOCKETS_PER_USER": "0",
        "MMS_TTS_MODEL": str(model),
        "TTS_VOICES": "none",
        "HF_HUB_OFFLINE": "1",
        "TTS_SPEAKING_RATE": f"{rate:.4f}",
        "TTS_CACHE_ENTRIES": "0",
        "LOG_LEVEL": "warning",
    }


async def one_reply(application, key: str, *, session: str) -> dict[str, float]:
    from channels.testing import WebsocketCommunicator

    socket = WebsocketCommunicator(application, "/ws/chat", headers=[(b"x-api-key", key.encode())])
    connected, _ = await socket.connect()
    assert connected
    started = time.perf_counter()
    await socket.send_json_to(
        {"type": "message", "content": "Parle-moi de la tour Eiffel.", "session_id": session, "voice": True}
    )
    first_audio = first_token = None
    audio_frames = 0
    while True:
        message = await socket.receive_output(timeout=60)
        now = (time.perf_counter() - started) * 1000
        if message.get("bytes") is not None:
            audio_frames += 1
            first_audio = first_audio or now
            last_audio = now
            continue
        frame = json.loads(message["text"])
        if frame["type"] == "token" and first_token is None:
            first_token = now
        if frame["type"] == "error":
            raise RuntimeError(frame)
        if frame["type"] == "end":
            end = now
            break
    await socket.disconnect()
    return {
        "first_token_ms": first_token,
        "first_audio_ms": first_audio,
        "end_ms": end,
        "last_audio_ms": last_audio,
        "pieces": audio_frames,
    }


async def ws_chat(application, key: str, *, runs: int) -> dict[str, dict[str, float]]:
    import voice.speech_stream as speech_stream

    sentence_splitter = speech_stream.SpeechSplitter
    results = {}
    for mode in ("sentences", "whole"):
        speech_stream.SpeechSplitter = WholeReply if mode == "whole" else sentence_splitter  # type: ignore[misc]
        await one_reply(application, key, session=f"warm-{mode}")
        samples = [await one_reply(application, key, session=f"{mode}-{n}") for n in range(runs)]
        results[mode] = {name: round(statistics.median(s[name] for s in samples), 1) for name in samples[0]}
    speech_stream.SpeechSplitter = sentence_splitter  # type: ignore[misc]
    return results


def measure_ws_chat(*, model: Path, rate: float, runs: int) -> dict:
    from tests.standins.ollama_server import OllamaBehaviour, OllamaStandIn

    words = REPLY.split(" ")
    tokens = [words[0]] + [" " + word for word in words[1:]]
    behaviour = OllamaBehaviour(reply_tokens=tokens, first_token_delay_s=0.1, token_interval_s=0.025)
    ollama = OllamaStandIn(behaviour).start()
    with tempfile.TemporaryDirectory() as scratch_dir:
        scratch = Path(scratch_dir)
        env = django_env(scratch=scratch, model=model, rate=rate, ollama_url=ollama.url)
        os.environ.update(env)
        worker = subprocess.Popen(
            [sys.executable, "manage.py", "runworker", "voice-tts"],
            cwd=ROOT,
            env={**os.environ, **env},
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        try:
            import django

            django.setup()
            from django.core.management import call_command

            call_command("migrate", verbosity=0)
            from django.contrib.auth import get_user_model

            from accounts.api_keys import api_key_create

            user = get_user_model().objects.create_user(username="bench")
            _, key = api_key_create(owner=user, name="bench", scopes="chat,tts")
            from evaproject.asgi import application
            from voice.client import tts_readiness

            async def main() -> dict:
                for _ in range(240):
                    if (await tts_readiness(timeout_s=1))["ok"]:
                        break
                    await asyncio.sleep(0.5)
                else:
                    raise RuntimeError("the TTS worker did not become ready")
                return await ws_chat(application, key, runs=runs)

            return asyncio.run(main())
        finally:
            worker.kill()
            worker.wait()
            ollama.stop()
            import redis

            client = redis.Redis.from_url(REDIS_URL)
            for key_name in client.scan_iter(f"*{PREFIX}*"):
                client.delete(key_name)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="fewer runs")
    parser.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch's default)")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    runs, stream_runs, ws_runs = (3, 1, 2) if args.quick else (9, 3, 5)
    report = run(device="cpu", runs=runs, stream_runs=stream_runs, ttft_ms=100.0, token_ms=25.0, threads=args.threads)
    print_report(report)
    with tempfile.TemporaryDirectory() as scratch:
        model, _ = build_mms_sized_voice(Path(scratch) / "mms-sized-fra")
        rate = calibrated_rate(load_engine(model, device="cpu", threads=args.threads))
        ws = measure_ws_chat(model=model, rate=rate, runs=ws_runs)
    report["ws_chat"] = ws
    print(
        "\n/ws/chat, real worker over Redis, stand-in LLM (first token 100 ms, a word every 25 ms), "
        f"medians of {ws_runs}"
    )
    print(
        f"{'mode':>22} | {'first token ms':>14} | {'first audio ms':>14} | {'end ms':>8} | "
        f"{'last audio ms':>13} | pieces"
    )
    print("-" * 94)
    for mode, label in (("sentences", "sentence by sentence"), ("whole", "whole reply at once")):
        row = ws[mode]
        print(
            f"{label:>22} | {row['first_token_ms']:>14} | {row['first_audio_ms']:>14} | {row['end_ms']:>8} | "
            f"{row['last_audio_ms']:>13} | {row['pieces']:g}"
        )
    if args.json:
        args.json.write_text(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
