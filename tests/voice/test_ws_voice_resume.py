"""A spoken reply and resumable replies (chat/replay.py): a spoken reply sends its audio to its
own socket, so it stops when that socket drops, even with a grace; its text so far is kept, and a
resume gets it, then an `end` marked cancelled. The real consumer, Ollama stand-in and TTS worker."""

from __future__ import annotations

import pytest

from chat import replay
from chat.generation import drain_background_writes
from tests.chat.wsclient import receive_until, ws_with_key

pytestmark = pytest.mark.django_db(transaction=True)


async def test_a_spoken_reply_stops_with_its_socket_and_its_text_can_still_be_resumed(
    ollama, voice_settings, module_worker, tts_key
):
    voice_settings.REPLAY_GRACE_S = 60.0
    ollama.behaviour.reply_tokens = ["Bonjour !"] + [f" mot{i}" for i in range(300)]
    ollama.behaviour.token_interval_s = 0.02
    _, key = await tts_key("alice", scopes="chat,tts")
    socket = ws_with_key(key)
    assert (await socket.connect())[0]
    await socket.send_json_to({"type": "message", "content": "Salut", "voice": True})
    start = await socket.receive_json_from(timeout=30)
    assert start["type"] == "start"
    await socket.disconnect()
    assert await ollama.last_chat_hung_up(within_s=10)  # no grace for a spoken reply
    await replay.drain_writes()
    await drain_background_writes()
    again = ws_with_key(key)
    assert (await again.connect())[0]
    await again.send_json_to({"type": "resume", "request_id": start["request_id"], "after": 1})
    frames = await receive_until(again, "end", frame_timeout_s=30)
    await again.disconnect()
    assert all(frame["type"] in ("token", "end") for frame in frames)
    assert [frame["n"] for frame in frames] == list(range(2, len(frames) + 2))
    assert frames[-1]["done_reason"] == "cancelled"
    assert ollama.chat_requests()[-1].tokens_sent < 301
