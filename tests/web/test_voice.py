"""Voice end to end: the page, the live server, a real `runworker voice-tts` on Redis, a tiny MMS voice.

Real weights cannot be downloaded here, so the worker speaks with a random-weight voice
(voice.engine.build_tiny_voice): the audio is noise, but every step a real reply takes is real.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time

import pytest
from playwright.async_api import expect

from tests.web.chatpage import last_reply, open_chat, send, word_tokens
from tests.web.conftest import ROOT

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True), pytest.mark.asyncio(loop_scope="session")]


@pytest.fixture(scope="module")
def tts_worker(tmp_path_factory, live_asgi):
    from django.conf import settings

    from voice.engine import build_tiny_voice

    voice = build_tiny_voice(tmp_path_factory.mktemp("voices") / "tiny-mms")
    env = {
        **os.environ,
        "MMS_TTS_MODEL": str(voice),
        "TTS_DEFAULT_VOICE": "fra",
        "TTS_VOICES": f"eng={voice}",
        "TTS_CPU_THREADS": "1",
        "REDIS_URL": settings.REDIS_URL,
        "CHANNEL_LAYER_PREFIX": settings.CHANNEL_LAYER_PREFIX,
        "LOG_LEVEL": "info",
        "PYTHONUNBUFFERED": "1",
    }
    process = subprocess.Popen(
        [sys.executable, "manage.py", "runworker", "voice-tts"],
        cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )
    lines: list[str] = []
    threading.Thread(target=lambda: lines.extend(line.rstrip() for line in process.stdout), daemon=True).start()
    deadline = time.monotonic() + 120
    while not any("TTS engine ready" in line for line in lines):
        if process.poll() is not None or time.monotonic() > deadline:
            process.kill()
            pytest.fail("the TTS worker did not start:\n" + "\n".join(lines[-30:]))
        time.sleep(0.1)
    yield process
    process.kill()
    process.wait(10)


async def test_each_sentence_is_spoken_in_order_while_the_reply_streams(page, logged_in, ollama_behaviour, tts_worker):
    ollama_behaviour.reply_tokens = word_tokens(
        "Bonjour, je suis EVA et je vous écoute. Voici une deuxième phrase pour la voix. Et enfin la troisième phrase."
    )
    ollama_behaviour.token_interval_s = 0.05
    audio_frames: list[dict] = []

    def on_socket(ws):
        def on_frame(payload):
            if isinstance(payload, str) and json.loads(payload).get("type") == "audio":
                audio_frames.append(json.loads(payload))

        ws.on("framereceived", on_frame)

    page.on("websocket", on_socket)
    await logged_in("alice")
    await open_chat(page)
    await page.get_by_role("switch", name="Voice").check()
    await send(page, "Parle-moi")
    reply = last_reply(page)
    await expect(reply).to_have_attribute("data-status", "complete", timeout=30_000)
    assert [frame["seq"] for frame in audio_frames] == list(range(len(audio_frames))) and len(audio_frames) >= 2
    expected = ",".join(str(frame["seq"]) for frame in audio_frames)
    await expect(reply).to_have_attribute("data-audio-played", expected, timeout=15_000)
    await expect(reply.locator(".message-notice")).to_be_hidden()
    assert page.js_errors == []
