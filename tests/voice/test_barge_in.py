"""Barge-in on /ws/chat: a new message or a cancel while the previous reply is being spoken.

Through the real ASGI app, the Ollama stand-in and one real TTS worker of this module's own (no
shared worker: the worker is stopped with SIGSTOP so that speech is still pending when the
text has ended, then resumed, and its log says what it did with the dropped requests).
"""

from __future__ import annotations

import asyncio
import signal

import pytest

from tests.chat.wsclient import receive_until, ws_with_key
from tests.voice.speech_frames import json_frames, receive_spoken_reply
from tests.voice.test_ws_voice import tokens

pytestmark = pytest.mark.django_db(transaction=True)


async def wait_for_lines(worker, fragment: str, count: int) -> None:
    index = -1
    for _ in range(count):
        index = await asyncio.to_thread(worker.wait_for_line, fragment, timeout=30, start=index + 1)


SIX = (
    "Bonjour, je suis là. Il fait beau aujourd'hui à Paris. Nous irons au marché demain matin. "
    "Il faudra acheter des pommes et du pain. Ensuite nous rentrerons déjeuner. Bonne journée à toi !"
)


async def test_a_new_message_during_speech_stops_it_and_empties_the_workers_queue(
    ollama, voice_settings, start_worker, tts_key
):
    voice_settings.TTS_PICKUP_TIMEOUT_S = 60.0  # the stopped worker must not look dead meanwhile
    worker = start_worker()
    worker.signal(signal.SIGSTOP)  # speech cannot progress: its requests wait for the worker
    ollama.behaviour.reply_tokens = tokens(SIX)
    ollama.behaviour.token_interval_s = 0.001
    _, key = await tts_key("alice", scopes="chat,tts")
    socket = ws_with_key(key)
    assert (await socket.connect())[0]
    await socket.send_json_to({"type": "message", "content": "Salut", "session_id": "barge", "voice": True})
    first = await receive_until(socket, "end", frame_timeout_s=30)  # the text ends while speech waits
    assert json_frames(first, "audio") == []
    await socket.send_json_to({"type": "message", "content": "Autre chose", "session_id": "barge", "voice": True})
    stopped = await socket.receive_json_from(timeout=30)
    assert stopped == {"type": "speech_stopped", "request_id": first[-1]["request_id"], "reason": "barge_in"}
    worker.signal(signal.SIGCONT)
    second = await receive_spoken_reply(socket, frame_timeout_s=30)
    await socket.disconnect()
    (start,) = json_frames(second, "start")
    assert start["request_id"] != first[-1]["request_id"]
    assert second[-1]["type"] == "speech_end" and second[-1]["pieces"] == 6
    assert {frame["request_id"] for frame in json_frames(second, "audio")} == {start["request_id"]}
    # The first reply's requests that had reached the worker's queue (sent before the new reply's,
    # so handled first) were dropped there, never synthesised: only the new reply's six were.
    await wait_for_lines(worker, "streamed", 6)  # the log is read by a thread: it may lag the frames
    assert any("dropped" in line for line in worker.lines), "\n".join(worker.lines[-20:])
    assert sum("synthesising" in line for line in worker.lines) == 6, "\n".join(worker.lines[-20:])


async def test_cancel_during_speech_stops_it_at_once(ollama, voice_settings, start_worker, tts_key, recorded_metrics):
    voice_settings.TTS_PICKUP_TIMEOUT_S = 60.0
    worker = start_worker()
    worker.signal(signal.SIGSTOP)
    ollama.behaviour.reply_tokens = tokens(SIX)
    ollama.behaviour.token_interval_s = 0.001
    _, key = await tts_key("alice", scopes="chat,tts")
    socket = ws_with_key(key)
    assert (await socket.connect())[0]
    await socket.send_json_to({"type": "message", "content": "Salut", "voice": True})
    text = await receive_until(socket, "end", frame_timeout_s=30)
    await socket.send_json_to({"type": "cancel"})
    assert await socket.receive_json_from(timeout=30) == {
        "type": "speech_stopped",
        "request_id": text[-1]["request_id"],
        "reason": "cancelled",
    }
    await socket.send_json_to({"type": "cancel"})
    assert (await socket.receive_json_from(timeout=30))["code"] == "nothing_to_cancel"
    worker.signal(signal.SIGCONT)
    ollama.behaviour.reply_tokens = tokens("Merci beaucoup.")
    await socket.send_json_to({"type": "message", "content": "Merci", "voice": True})
    after = await receive_spoken_reply(socket, frame_timeout_s=30)
    await socket.disconnect()
    assert json_frames(after)[0]["type"] == "start"  # nothing of the old speech came
    assert after[-1]["type"] == "speech_end" and after[-1]["pieces"] == 1
    # The worker took the old requests first (a queue): it dropped them and spoke only the new one.
    await wait_for_lines(worker, "streamed", 1)
    assert any("dropped" in line for line in worker.lines), "\n".join(worker.lines[-20:])
    assert sum("synthesising" in line for line in worker.lines) == 1, "\n".join(worker.lines[-20:])
    metric = await recorded_metrics.row(text[-1]["request_id"])
    assert metric.status == "ok" and metric.time_to_first_audio_ms is None  # the text was whole; nothing spoken
