"""/ws/chat with "voice": true through the real consumer, the Ollama stand-in and a real TTS worker."""

from __future__ import annotations

import json

import pytest

from metrics.models import RequestMetric
from metrics.recorder import flush_metrics
from tests.chat.wsclient import receive_reply_with_audio, ws_with_key
from voice.wav import wav_info

pytestmark = pytest.mark.django_db(transaction=True)

REPLY = "Bonjour ! M. Dupont arrive à 14h30 avec 3,5 kilos de pommes. Ensuite, nous verrons la suite."


async def test_a_voice_reply_streams_tokens_and_each_sentence_audio_in_order(
    ollama, voice_settings, module_worker, tts_key
):
    words = REPLY.split(" ")
    ollama.behaviour.reply_tokens = [words[0]] + [" " + word for word in words[1:]]
    ollama.behaviour.token_interval_s = 0.01
    _, key = await tts_key("alice", scopes="chat,tts")
    socket = ws_with_key(key)
    assert (await socket.connect())[0]
    await socket.send_json_to({"type": "message", "content": "Salut", "session_id": "voice", "voice": True})
    frames = await receive_reply_with_audio(socket, frame_timeout_s=30)
    await socket.disconnect()
    audio = [frame for frame in frames if isinstance(frame, dict) and frame["type"] == "audio"]
    assert [frame["text"] for frame in audio] == [
        "Bonjour !",
        "M. Dupont arrive à 14h30 avec 3,5 kilos de pommes.",
        "Ensuite, nous verrons la suite.",
    ]
    assert [frame["seq"] for frame in audio] == [0, 1, 2]
    for frame in audio:  # each audio frame is followed by its WAV
        wav = frames[frames.index(frame) + 1]
        assert isinstance(wav, bytes) and len(wav) == frame["bytes"] and wav_info(wav).sample_rate == 16000
    end = frames[-1]
    assert isinstance(end, dict) and end["type"] == "end"
    assert "".join(f["content"] for f in frames if isinstance(f, dict) and f["type"] == "token") == REPLY
    await flush_metrics()
    metric = await RequestMetric.objects.aget(request_id=end["request_id"])
    assert metric.channel == "ws" and metric.time_to_first_audio_ms is not None and metric.time_to_first_audio_ms > 0


async def test_no_audio_follows_the_error_when_the_model_fails_mid_reply(
    ollama, voice_settings, module_worker, tts_key
):
    ollama.behaviour.reply_tokens = ["Bonjour !", " Une", " phrase", " assez", " longue", " pour", " parler."]
    ollama.behaviour.mode = "error_mid_stream"
    ollama.behaviour.error_after_tokens = 4
    _, key = await tts_key("alice", scopes="chat,tts")
    socket = ws_with_key(key)
    assert (await socket.connect())[0]
    await socket.send_json_to({"type": "message", "content": "Salut", "voice": True})
    while True:
        output = await socket.receive_output(timeout=30)
        if output.get("text") and json.loads(output["text"])["type"] == "error":
            break
    assert json.loads(output["text"])["code"] == "upstream_error"
    assert await socket.receive_nothing(timeout=1.5)  # speech was stopped with the reply
    await socket.disconnect()
