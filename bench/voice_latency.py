"""Real-time speech on the CPU: time to first audio, silences, real-time factor, RSS; before vs after.

What a user of /ws/chat with "voice": true gets, minus the socket: an LLM writing a 6-sentence
French reply at 30 tokens a second (a word or punctuation mark per token) into the voice
pipeline of a project tree (its SpeechStream, voice.client, its embedded TTS child process
running its engine), with an MMS-sized random-weight VITS (VitsConfig's defaults, 36M
parameters, saved with save_pretrained and loaded by the engine like facebook/mms-tts-fra),
spoken at a rate calibrated to 15 characters a second. Per reply:

- first audio from the first token, and from the token that completes the first speakable
  piece (the tree's own splitter and settings say which token that is);
- the silence a player hears that starts playing the first audio frame when it arrives and
  plays every frame back to back, in real time: the sum, over the reply, of the time it waits
  for a frame that has not arrived yet;
- each wait of 20 ms or more, with the piece and chunk it waits for, when that piece's synthesis
  was asked for and when the piece before it was done (printed per reply);
- the real-time factor (wall time of synthesis / seconds of audio) and the TTS child's RSS.

"before" is the tree of main at 96dc0a1 (extracted with `git archive`, nothing checked out),
"after" this tree; `--variant NAME:KEY=VALUE,...` adds this tree with settings changed (e.g.
`first8:TTS_CHUNK_FIRST_FRAMES=8`); rounds alternate the variants on the same machine, each in a
fresh process.
Run: .venv/bin/python bench/voice_latency.py [--replies 20] [--rounds 2] [--before DIR] [--variant ...]
"""

from __future__ import annotations

import argparse
import asyncio
import inspect
import io
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
import wave
from pathlib import Path

HERE = Path(__file__).resolve().parent.parent
TOKENS_PER_S = 30.0
NATURAL_CHARS_PER_S = 15.0

SENTENCES = [
    [
        "Bonjour, je suis ravie de t'aider aujourd'hui.",
        "Salut, voici ce que je peux te dire.",
        "Avec plaisir, regardons cela ensemble.",
        "Bonne question, je vais t'expliquer.",
    ],
    [
        "La tour Eiffel mesure environ trois cents mètres de haut.",
        "Paris compte plus de deux millions d'habitants.",
        "Le marché ouvre tous les matins à huit heures.",
        "La Seine traverse la ville d'est en ouest.",
    ],
    [
        "Elle a été construite pour l'exposition universelle de mille huit cent quatre-vingt-neuf.",
        "Beaucoup de visiteurs viennent chaque année du monde entier.",
        "Les prix varient selon la saison et le quartier.",
        "Il est conseillé de réserver quelques jours avant.",
    ],
    [
        "Au sommet, la vue sur la ville est vraiment magnifique.",
        "Le soir, les lumières rendent le spectacle encore plus beau.",
        "On peut aussi prendre un bateau pour découvrir les monuments.",
        "Les musées sont souvent gratuits le premier dimanche.",
    ],
    [
        "Si tu y vas, pense à prendre une veste, car il peut faire frais.",
        "N'oublie pas tes billets et une bouteille d'eau.",
        "Le métro reste le moyen le plus simple pour circuler.",
        "Prévois une bonne paire de chaussures pour marcher.",
    ],
    [
        "Veux-tu que je t'en dise plus ?",
        "Bonne visite et à bientôt !",
        "N'hésite pas si tu as d'autres questions.",
        "J'espère que cela t'aide un peu.",
    ],
]


def replies(count: int) -> list[str]:
    """`count` different 6-sentence French replies."""
    out = []
    for n in range(count):
        out.append(" ".join(group[(n + k * (n // 4 + 1)) % len(group)] for k, group in enumerate(SENTENCES)))
    return out


def tokens_of(text: str) -> list[str]:
    words = text.split(" ")
    return [words[0]] + [" " + word for word in words[1:]]


def wav_seconds(data: bytes) -> float:
    with wave.open(io.BytesIO(data), "rb") as wav:
        return wav.getnframes() / wav.getframerate()


def rss_mb(pid: int | None) -> float | None:
    if pid is None:
        return None
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except OSError:
        return None
    return None


async def speak_one(text: str) -> dict[str, float | None]:
    """One reply through the tree's SpeechStream at 30 tokens/s; the client's view of its audio."""
    from django.conf import settings

    from voice import client as voice_client
    from voice.speech_splitter import SpeechSplitter
    from voice.speech_stream import SpeechStream

    arrivals: list[tuple[float, float]] = []  # (arrival, seconds of audio)
    labels: list[str] = []  # "piece.chunk" of each arrival, from the audio frame before it
    speech_end: dict[str, object] = {}
    header: dict[str, object] = {}

    async def send_json(frame: dict) -> None:
        if frame.get("type") == "speech_end":
            speech_end.update(frame)
        elif frame.get("type") == "audio":
            header.update(frame)

    async def send_bytes(data: bytes) -> None:
        arrivals.append((time.perf_counter(), wav_seconds(data)))
        labels.append(f"{header.get('seq')}.{header.get('chunk')}")

    splitter = SpeechSplitter(
        first_min_chars=settings.TTS_STREAM_FIRST_MIN_CHARS,
        max_chars=min(settings.TTS_STREAM_MAX_CHARS, settings.TTS_MAX_CHARS),
    )
    # Each piece's synthesis: when it was asked for, its first and its last chunk (a tree without
    # streamed synthesis, like 96dc0a1, goes without).
    calls: list[dict[str, float]] = []
    options = {}
    if "synthesize" in inspect.signature(SpeechStream).parameters and hasattr(voice_client, "synthesize_stream"):
        synthesize_stream = voice_client.synthesize_stream

        async def timed(*, text: str, voice: str | None):
            call = {"asked": time.perf_counter()}
            calls.append(call)
            async for chunk in synthesize_stream(text=text, voice=voice):
                call.setdefault("first", time.perf_counter())
                call["last"] = time.perf_counter()
                yield chunk

        options["synthesize"] = timed
    speech = SpeechStream(voice=None, send_json=send_json, send_bytes=send_bytes, **options)
    first_token = completing = None
    started = time.perf_counter()
    for index, token in enumerate(tokens_of(text)):
        due = started + index / TOKENS_PER_S
        await asyncio.sleep(max(0.0, due - time.perf_counter()))
        now = time.perf_counter()
        first_token = first_token or now
        if completing is None and splitter.feed(token):
            completing = now
        speech.feed(token)
    text_end = time.perf_counter()
    await speech.finish()
    if not arrivals:
        return {"failed": 1.0}
    first_audio = arrivals[0][0]
    playing_until = first_audio
    silence = 0.0
    waits = []  # each wait of a real-time player: before which piece.chunk, when, how long
    for (arrival, seconds), label in zip(arrivals, labels, strict=True):
        if arrival > playing_until:
            silence += arrival - playing_until
            if arrival - playing_until >= 0.02:
                wait = {
                    "before": label,
                    "at_ms": round((arrival - first_audio) * 1000),
                    "wait_ms": round((arrival - playing_until) * 1000),
                    "text_ended": arrival > text_end,
                }
                piece = int(label.split(".")[0]) if label.split(".")[0].isdigit() else -1
                if 0 <= piece < len(calls):  # when its synthesis was asked for, and the one before ended
                    wait["asked_ms"] = round((calls[piece]["asked"] - first_audio) * 1000)
                    if piece > 0 and "last" in calls[piece - 1]:
                        wait["previous_done_ms"] = round((calls[piece - 1]["last"] - first_audio) * 1000)
                waits.append(wait)
            playing_until = arrival
        playing_until += seconds
    audio_s = sum(seconds for _, seconds in arrivals)
    assert first_token is not None
    return {
        "first_token_to_audio_ms": (first_audio - first_token) * 1000,
        "completing_token_to_audio_ms": (first_audio - (completing or text_end)) * 1000,
        "silence_ms": silence * 1000,
        "waits": waits,
        "audio_s": audio_s,
        "speech_after_text_ms": (arrivals[-1][0] - text_end) * 1000,
        "rtf_wall": (arrivals[-1][0] - first_token) / audio_s,
        "rtf_engine": float(speech_end["real_time_factor"]) if speech_end.get("real_time_factor") else None,
    }


async def round_main(count: int, offset: int) -> list[dict]:
    from voice import client

    texts = replies(offset + count)[offset:]
    await client.synthesize(text="Bonjour, je me prépare.", voice=None)  # start the child, warm it
    results = []
    started = time.perf_counter()
    for text in texts:
        result = await speak_one(text)
        worker = client._local_worker
        result["rss_mb"] = rss_mb(worker.pid if worker is not None else None)
        result["t_s"] = time.perf_counter() - started
        results.append(result)
        print(json.dumps(result), file=sys.stderr, flush=True)
    client.stop_local_worker()
    return results


def child(args: argparse.Namespace) -> None:
    sys.path.insert(0, os.getcwd())
    import django

    django.setup()
    results = asyncio.run(round_main(args.replies, args.offset))
    print(json.dumps(results))


def calibrate(model: Path) -> float:
    """The speaking rate at which this random-weight model says 15 characters a second (one sentence)."""
    sys.path.insert(0, str(HERE))
    from voice.engine import TTSEngine
    from voice.synthesis import EngineConfig, VoiceSpec

    engine = TTSEngine.load(
        EngineConfig(voices=(VoiceSpec("fra", str(model), "fr"),), default_voice="fra", cache_entries=0, warmup=False)
    )
    text = SENTENCES[1][0]
    return engine.synthesize(text=text).duration_s / len(text) * NATURAL_CHARS_PER_S


def env_for(model: Path, rate: float, scratch: Path) -> dict[str, str]:
    return {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "evaproject.settings",
        "DATABASE_URL": f"sqlite:///{scratch / 'db.sqlite3'}",
        "REDIS_URL": "",
        "TTS_TRANSPORT": "local",
        "SECRET_KEY": "bench-only-secret-key-0123456789abcdefghijklmnopqrstuvwxyz",
        "DEBUG": "false",
        "MMS_TTS_MODEL": str(model),
        "TTS_VOICES": "none",
        "HF_HUB_OFFLINE": "1",
        "TTS_SPEAKING_RATE": f"{rate:.4f}",
        "TTS_CACHE_ENTRIES": "0",
        "TTS_TIMEOUT_S": "300",
        "TTS_START_TIMEOUT_S": "900",
        "LOG_LEVEL": "warning",
    }


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--replies", type=int, default=20, help="replies per variant, over all rounds")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--before", type=Path, default=None, help="the tree of main at 96dc0a1")
    parser.add_argument("--model", type=Path, default=None, help="an MMS-sized voice folder (else built)")
    parser.add_argument(
        "--variant", action="append", default=[], help="NAME:KEY=VALUE[,KEY=VALUE]: this tree with these settings"
    )
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--offset", type=int, default=0, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args)
        return
    scratch = Path(tempfile.mkdtemp(prefix="voice-latency-"))
    model = args.model
    if model is None:
        sys.path.insert(0, str(HERE))
        from voice.engine import build_tiny_voice

        model = build_tiny_voice(scratch / "mms-sized", mms_sized=True)
    rate = calibrate(model)
    print(f"speaking rate {rate:.3f} (15 chars/s)", flush=True)
    trees: dict[str, tuple[Path, dict[str, str]]] = {"after": (HERE, {})}
    if args.before is not None:
        trees = {"before": (args.before, {}), "after": (HERE, {})}
    for variant in args.variant:
        name, _, pairs = variant.partition(":")
        trees[name] = (HERE, dict(pair.split("=", 1) for pair in pairs.split(",") if pair))
    per_round = max(1, args.replies // args.rounds)
    results: dict[str, list[dict]] = {name: [] for name in trees}
    for number in range(args.rounds):
        for name, (tree, extra) in trees.items():
            output = subprocess.run(
                [
                    sys.executable,
                    str(Path(__file__).resolve()),
                    "--child",
                    "--replies",
                    str(per_round),
                    "--offset",
                    str(number * per_round),
                ],
                cwd=tree,
                env={**env_for(model, rate, scratch), **extra},
                capture_output=True,
                text=True,
                check=False,
            )
            if output.returncode != 0:
                print(output.stderr[-3000:], file=sys.stderr)
                raise SystemExit(f"{name} round {number} failed")
            results[name].extend(json.loads(output.stdout.strip().splitlines()[-1]))
            print(f"round {number} {name}: {per_round} replies", flush=True)
    keys = [
        "first_token_to_audio_ms",
        "completing_token_to_audio_ms",
        "silence_ms",
        "speech_after_text_ms",
        "audio_s",
        "rtf_wall",
        "rtf_engine",
        "rss_mb",
    ]
    summary = {}
    for name, rows in results.items():
        summary[name] = {}
        for key in keys:
            values = [row[key] for row in rows if row.get(key) is not None]
            if values:
                summary[name][key] = {
                    "p50": round(statistics.median(values), 3),
                    "p95": round(pct(values, 0.95), 3),
                    "min": round(min(values), 3),
                    "max": round(max(values), 3),
                }
        summary[name]["replies"] = len(rows)
        summary[name]["rss_series_mb"] = [round(row["rss_mb"], 1) for row in rows if row.get("rss_mb")]
        summary[name]["silence_series_ms"] = [round(row.get("silence_ms", 0.0)) for row in rows]  # in reply order
        summary[name]["long_waits"] = [  # the waits of 100 ms or more, by reply (0-based, in reply order)
            {"reply": index, **wait}
            for index, row in enumerate(rows)
            for wait in row.get("waits", [])
            if wait["wait_ms"] >= 100
        ]
    print(json.dumps(summary, indent=1))


if __name__ == "__main__":
    main()
