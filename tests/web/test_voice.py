"""Voice end to end: the page, the live server, a real `runworker voice-tts` on Redis, a tiny MMS voice.

Real weights cannot be downloaded here, so the worker speaks with a random-weight voice
(voice.engine.build_tiny_voice): the audio is noise, but every step a real reply takes is real.
"""

from __future__ import annotations

import asyncio
import json
import signal

import pytest
from playwright.async_api import expect

from tests.web.chatpage import last_reply, open_chat, send, word_tokens
from tests.workers import WorkerProcess

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True), pytest.mark.asyncio(loop_scope="session")]


@pytest.fixture(scope="module")
def tts_worker(tmp_path_factory, live_asgi):
    from django.conf import settings

    from voice.engine import build_tiny_voice

    voice = build_tiny_voice(tmp_path_factory.mktemp("voices") / "tiny-mms")
    worker = WorkerProcess(
        model=voice, REDIS_URL=settings.REDIS_URL, CHANNEL_LAYER_PREFIX=settings.CHANNEL_LAYER_PREFIX
    ).wait_ready(timeout=120)
    yield worker.process
    worker.stop()


async def test_each_sentence_is_spoken_in_order_while_the_reply_streams(page, logged_in, ollama_behaviour, tts_worker):
    ollama_behaviour.reply_tokens = word_tokens(
        "Bonjour, je suis EVA et je vous écoute. Voici une deuxième phrase pour la voix. Et enfin la troisième phrase."
    )
    ollama_behaviour.token_interval_s = 0.05
    frames = record_frames(page)
    await logged_in("alice")
    await open_chat(page)
    await page.get_by_role("switch", name="Voice").check()
    await send(page, "Parle-moi")
    reply = last_reply(page)
    await expect(reply).to_have_attribute("data-status", "complete", timeout=30_000)
    await frames.until(lambda fs: bool(fs) and fs[-1]["type"] == "speech_end")  # speech goes on after `end`
    seqs = [frame["seq"] for frame in frames if frame["type"] == "audio"]
    assert seqs == sorted(seqs) and sorted(set(seqs)) == list(range(frames[-1]["pieces"])) and len(set(seqs)) >= 2
    expected = ",".join(str(seq) for seq in sorted(set(seqs)))
    await expect(reply).to_have_attribute("data-audio-played", expected, timeout=15_000)
    await expect(page.locator("#speaking-indicator")).to_be_hidden(timeout=30_000)  # once all has played
    await expect(reply.locator(".message-notice")).to_be_hidden()
    assert page.js_errors == []


class Frames(list):
    """Every JSON frame the page's socket receives, in order; `until(check)` waits for frames, not time."""

    def __init__(self, page) -> None:
        super().__init__()
        self.arrived = asyncio.Event()

        def on_frame(payload) -> None:
            if isinstance(payload, str):
                self.append(json.loads(payload))
                self.arrived.set()

        page.on("websocket", lambda ws: ws.on("framereceived", on_frame))

    async def until(self, check, *, timeout_s: float = 30) -> None:
        while True:
            self.arrived.clear()
            if check(self):
                return
            await asyncio.wait_for(self.arrived.wait(), timeout_s)


def record_frames(page) -> Frames:
    return Frames(page)


async def spoken_reply_pending(page, logged_in, ollama_behaviour, tts_worker) -> Frames:
    """A voice reply whose text has ended while its speech cannot progress (the worker is stopped)."""
    ollama_behaviour.reply_tokens = word_tokens("Bonjour, je suis EVA. Voici une phrase. Et une autre encore.")
    ollama_behaviour.token_interval_s = 0.01
    frames = record_frames(page)
    await logged_in("alice")
    await open_chat(page)
    await page.get_by_role("switch", name="Voice").check()
    tts_worker.send_signal(signal.SIGSTOP)
    await send(page, "Parle-moi")
    await expect(last_reply(page)).to_have_attribute("data-status", "complete", timeout=30_000)
    # The text is complete, speech is not: EVA is speaking, and Stop is there to silence it.
    await expect(page.locator("#speaking-indicator")).to_be_visible()
    await expect(page.get_by_role("button", name="Stop")).to_be_visible()
    return frames


async def test_stop_silences_speech_that_goes_on_after_the_text(page, logged_in, ollama_behaviour, tts_worker):
    frames = await spoken_reply_pending(page, logged_in, ollama_behaviour, tts_worker)
    try:
        await page.get_by_role("button", name="Stop").click()
        await expect(page.locator("#speaking-indicator")).to_be_hidden()
        await expect(page.get_by_role("button", name="Send")).to_be_visible()
        await page.wait_for_function("() => !window.eva.player.speaking")
        await frames.until(lambda fs: [f["type"] for f in fs if f["type"].startswith("speech_")] == ["speech_stopped"])
        assert [f["reason"] for f in frames if f["type"] == "speech_stopped"] == ["cancelled"]
    finally:
        tts_worker.send_signal(signal.SIGCONT)
    assert page.js_errors == []


async def test_escape_and_voice_off_silence_speech_too(page, logged_in, ollama_behaviour, tts_worker):
    frames = await spoken_reply_pending(page, logged_in, ollama_behaviour, tts_worker)
    try:
        await page.get_by_label("Message to EVA").press("Escape")
        await expect(page.locator("#speaking-indicator")).to_be_hidden()
        await frames.until(lambda fs: sum(f["type"] == "speech_stopped" for f in fs) == 1)
        await send(page, "Encore")  # a second spoken reply, pending the same way
        await expect(last_reply(page)).to_have_attribute("data-status", "complete", timeout=30_000)
        await expect(page.locator("#speaking-indicator")).to_be_visible()
        await page.get_by_role("switch", name="Voice").uncheck()
        await expect(page.locator("#speaking-indicator")).to_be_hidden()
        await frames.until(lambda fs: sum(f["type"] == "speech_stopped" for f in fs) == 2)
    finally:
        tts_worker.send_signal(signal.SIGCONT)
    assert page.js_errors == []


async def test_a_new_message_interrupts_speech_and_its_own_reply_is_spoken(
    page, logged_in, ollama_behaviour, tts_worker
):
    frames = await spoken_reply_pending(page, logged_in, ollama_behaviour, tts_worker)
    first = next(f for f in frames if f["type"] == "start")["request_id"]
    ollama_behaviour.reply_tokens = word_tokens("Bien sûr, je change de sujet. Voilà.")
    await send(page, "Autre chose")  # Enter works while EVA speaks: barge-in
    await expect(page.locator(".message-assistant")).to_have_count(2)
    tts_worker.send_signal(signal.SIGCONT)
    await expect(last_reply(page)).to_have_attribute("data-status", "complete", timeout=30_000)
    stopped = [f for f in frames if f["type"] == "speech_stopped"]
    assert [(f["request_id"], f["reason"]) for f in stopped] == [(first, "barge_in")]
    await expect(last_reply(page)).to_have_attribute("data-audio-played", "0,1", timeout=30_000)
    await frames.until(lambda fs: fs[-1]["type"] == "speech_end")
    await expect(page.locator("#speaking-indicator")).to_be_hidden(timeout=30_000)
    assert page.js_errors == []
