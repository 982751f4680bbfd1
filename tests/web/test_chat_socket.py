"""The chat page's side of the socket protocol, with frames played by the test.

Playwright's WebSocket routing stands between the page and the server: it passes frames
through to the live server (to drop the connection on purpose) or answers them itself, to
play frames the stand-in Ollama cannot produce here (sentence audio, rate limiting).
"""

from __future__ import annotations

import asyncio
import json
import math
import re
import struct

import pytest
from playwright.async_api import expect

from tests.web.chatpage import last_reply, open_chat, send
from voice.wav import pcm16_wav

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True), pytest.mark.asyncio(loop_scope="session")]

WS_URL = re.compile(r"/ws/chat$")


def sentence_wav(seconds: float = 0.2, hz: float = 440.0, rate: int = 16000) -> bytes:
    """A WAV like the TTS worker's: 16 kHz, mono, 16-bit PCM."""
    frames = b"".join(
        struct.pack("<h", int(8000 * math.sin(2 * math.pi * hz * n / rate))) for n in range(int(seconds * rate))
    )
    return pcm16_wav(frames, sample_rate=rate)


class PlayedServer:
    """Answers the page's frames with a script: `replies` is a list of frame lists, one per message."""

    def __init__(self, replies):
        self.replies = list(replies)
        self.received: list[dict] = []
        self.routes = []
        # The event loop keeps only weak references to tasks: hold each playback until it ends.
        self.playing: set[asyncio.Future] = set()

    async def handler(self, route):
        self.routes.append(route)
        route.on_message(lambda message: self.on_message(route, message))

    def on_message(self, route, message):
        frame = json.loads(message)
        self.received.append(frame)
        if frame["type"] == "ping":
            route.send(json.dumps({"type": "pong"}))
        elif frame["type"] == "message" and self.replies:
            playback = asyncio.ensure_future(self.play(route, frame, self.replies.pop(0)))
            self.playing.add(playback)
            playback.add_done_callback(self.playing.discard)

    async def play(self, route, frame, script):
        for item in script:
            await asyncio.sleep(0.03)
            if isinstance(item, bytes):
                route.send(item)
            else:
                route.send(json.dumps({"session_id": frame["session_id"], **item}))


def start(request_id="r1"):
    return {"type": "start", "request_id": request_id, "backend": "ollama", "model": "phi3:mini"}


def end(request_id="r1", **extra):
    return {"type": "end", "request_id": request_id, "backend": "ollama", "model": "phi3:mini", "ttft_ms": 42.0,
            "total_ms": 900.0, "tokens": 4, "done_reason": "stop", **extra}


def audio(seq, text, wav):
    """The frame announcing one sentence's WAV, which follows it as a binary frame."""
    return {"type": "audio", "seq": seq, "text": text, "format": "wav", "sample_rate": 16000, "bytes": len(wav)}


async def test_the_page_reconnects_after_the_connection_drops(page, logged_in, ollama_behaviour):
    routes = []

    async def pass_through(route):
        routes.append(route)
        route.connect_to_server()

    await page.route_web_socket(WS_URL, pass_through)
    await logged_in("alice")
    await open_chat(page)
    await routes[0].close(code=1012, reason="server restart")
    status = page.locator("#connection-status")
    await expect(status).to_have_attribute("data-state", "open", timeout=10_000)
    assert len(routes) == 2
    await send(page, "Back online?")
    await expect(last_reply(page).locator(".message-body")).to_have_text("Echo: Back online?")


async def test_a_reply_cut_by_a_dropped_connection_that_cannot_be_resumed_offers_a_retry(
    page, logged_in, ollama_behaviour
):
    ollama_behaviour.reply_tokens = [f" t{i}" for i in range(40)]
    ollama_behaviour.token_interval_s = 0.1
    routes = []

    async def pass_through(route):
        routes.append(route)
        server = route.connect_to_server()

        def forward(message):
            frame = json.loads(message)
            if frame["type"] == "resume":  # as a server that no longer has the reply answers
                route.send(json.dumps({"type": "error", "code": "not_found", "message": "No reply to resume."}))
            else:
                server.send(message)

        route.on_message(forward)

    await page.route_web_socket(WS_URL, pass_through)
    await logged_in("alice")
    await open_chat(page)
    await send(page, "Long one please")
    reply = last_reply(page)
    await expect(reply.locator(".message-body")).to_contain_text("t2")
    # The page asks to resume the reply (static/chat/resume.js); the server no longer has it.
    await routes[0].close(code=1012, reason="server restart")
    await expect(reply).to_have_attribute("data-error-code", "connection_lost")
    await expect(reply.locator(".message-body")).to_contain_text("t2")  # what came is kept
    await expect(page.locator("#connection-status")).to_have_attribute("data-state", "open", timeout=10_000)
    ollama_behaviour.reply_tokens = ["Whole", " reply"]
    ollama_behaviour.token_interval_s = 0.0
    await reply.get_by_role("button", name="Retry").click()
    await expect(last_reply(page).locator(".message-body")).to_have_text("Whole reply")


async def test_rate_limiting_is_shown_in_place_with_a_retry(page, logged_in):
    server = PlayedServer(
        [
            [{"type": "error", "code": "rate_limited", "message": "Too many requests: try again in 12 s."}],
            [start("r2"), {"type": "token", "content": "Now it works."}, end("r2")],
        ]
    )
    await page.route_web_socket(WS_URL, server.handler)
    await logged_in("alice")
    await open_chat(page)
    await send(page, "Hello")
    reply = last_reply(page)
    await expect(reply).to_have_attribute("data-error-code", "rate_limited")
    await expect(reply.get_by_role("alert")).to_contain_text(
        "You are sending messages too fast. Too many requests: try again in 12 s."
    )
    await reply.get_by_role("button", name="Retry").click()
    await expect(last_reply(page).locator(".message-body")).to_have_text("Now it works.")
    messages = [frame for frame in server.received if frame["type"] == "message"]
    assert [frame["content"] for frame in messages] == ["Hello", "Hello"]
    assert messages[0]["session_id"] == messages[1]["session_id"]


async def test_with_voice_on_each_sentence_plays_in_order_as_it_arrives(page, logged_in):
    wav = sentence_wav()
    server = PlayedServer(
        [
            [
                start(),
                {"type": "token", "content": "First sentence."},
                audio(0, "First sentence.", wav),
                wav,
                {"type": "token", "content": " Second one."},
                audio(1, "Second one.", wav),
                wav,
                {"type": "token", "content": " Third."},
                audio(2, "Third.", wav),
                wav,
                end(),
            ]
        ]
    )
    await page.route_web_socket(WS_URL, server.handler)
    await logged_in("alice")
    await open_chat(page)
    await page.get_by_role("switch", name="Voice").check()
    await send(page, "Speak to me")
    reply = last_reply(page)
    await expect(reply).to_have_attribute("data-audio-played", "0,1,2", timeout=10_000)
    assert [frame.get("voice") for frame in server.received if frame["type"] == "message"] == [True]
    assert page.js_errors == []


async def test_with_voice_off_audio_is_not_asked_for_nor_played(page, logged_in):
    wav = sentence_wav()
    server = PlayedServer(
        [[start(), {"type": "token", "content": "Quiet."},
          audio(0, "Quiet.", wav), wav,
          end()]]
    )
    await page.route_web_socket(WS_URL, server.handler)
    await logged_in("alice")
    await open_chat(page)
    await send(page, "Shh")
    reply = last_reply(page)
    await expect(reply).to_have_attribute("data-status", "complete")
    await page.wait_for_timeout(300)
    assert await reply.get_attribute("data-audio-played") is None
    assert [frame.get("voice") for frame in server.received if frame["type"] == "message"] == [False]


async def test_voice_unavailable_is_a_notice_and_the_text_goes_on(page, logged_in):
    server = PlayedServer(
        [[start(), {"type": "token", "content": "Text still"},
          {"type": "error", "code": "tts_unavailable", "message": "No TTS worker answered.", "request_id": "r1"},
          {"type": "token", "content": " arrives."}, end()]]
    )
    await page.route_web_socket(WS_URL, server.handler)
    await logged_in("alice")
    await open_chat(page)
    await page.get_by_role("switch", name="Voice").check()
    await send(page, "Talk")
    reply = last_reply(page)
    await expect(reply).to_have_attribute("data-status", "complete")
    await expect(reply.locator(".message-body")).to_have_text("Text still arrives.")
    await expect(reply.locator(".message-notice")).to_have_text("Voice is unavailable: No TTS worker answered.")
