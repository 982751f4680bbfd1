"""/ws/chat with "voice": true through the real consumer, the Ollama stand-in and a real TTS worker."""

from __future__ import annotations

import json

import pytest

from tests.chat.wsclient import receive_until, ws_with_key
from tests.voice.speech_frames import json_frames, receive_spoken_reply
from voice.wav import wav_info

pytestmark = pytest.mark.django_db(transaction=True)

REPLY = "Bonjour ! M. Dupont arrive à 14h30 avec 3,5 kilos de pommes. Ensuite, nous verrons la suite."


async def test_a_voice_reply_streams_tokens_and_each_sentence_audio_in_order(
    ollama, voice_settings, module_worker, tts_key, recorded_metrics
):
    words = REPLY.split(" ")
    ollama.behaviour.reply_tokens = [words[0]] + [" " + word for word in words[1:]]
    ollama.behaviour.token_interval_s = 0.01
    _, key = await tts_key("alice", scopes="chat,tts")
    socket = ws_with_key(key)
    assert (await socket.connect())[0]
    await socket.send_json_to({"type": "message", "content": "Salut", "session_id": "voice", "voice": True})
    frames = await receive_spoken_reply(socket, frame_timeout_s=30)
    await socket.disconnect()
    audio = json_frames(frames, "audio")
    assert [frame["text"] for frame in audio if frame["last"]] == [
        "Bonjour !",
        "M. Dupont arrive à 14h30 avec 3,5 kilos de pommes.",
        "Ensuite, nous verrons la suite.",
    ]
    for seq in (0, 1, 2):  # each piece's chunks in order, the last one marked
        chunks = [frame for frame in audio if frame["seq"] == seq]
        assert [(frame["chunk"], frame["last"]) for frame in chunks] == [
            (n, n == len(chunks) - 1) for n in range(len(chunks))
        ]
    for index, frame in enumerate(frames):  # each audio frame is followed by its WAV
        if isinstance(frame, dict) and frame["type"] == "audio":
            wav = frames[index + 1]
            assert isinstance(wav, bytes) and len(wav) == frame["bytes"] and wav_info(wav).sample_rate == 16000
    (end,) = json_frames(frames, "end")
    speech_end = frames[-1]
    assert speech_end["type"] == "speech_end" and speech_end["request_id"] == end["request_id"]
    # Speech is a stream of its own: the last piece is spoken after the text's end.
    assert frames.index(end) < frames.index(audio[-1])
    assert speech_end["pieces"] == 3 and speech_end["chunks"] == len(audio)
    assert speech_end["audio_s"] > 0 and speech_end["real_time_factor"] > 0
    assert 0 < speech_end["time_to_first_audio_ms"] <= speech_end["speech_total_ms"]
    assert "".join(f["content"] for f in json_frames(frames, "token")) == REPLY
    metric = await recorded_metrics.row(end["request_id"])
    assert metric.channel == "ws" and metric.status == "ok"
    assert metric.total_ms == pytest.approx(end["total_ms"])  # the text's total, not the speech's
    assert metric.time_to_first_audio_ms == pytest.approx(speech_end["time_to_first_audio_ms"])
    assert metric.speech_total_ms == pytest.approx(speech_end["speech_total_ms"]) and metric.speech_total_ms > 0


def tokens(text: str) -> list[str]:
    words = text.split(" ")
    return [words[0]] + [" " + word for word in words[1:]]


SIX = (
    "Bonjour, je suis là. Il fait beau aujourd'hui à Paris. Nous irons au marché demain matin. "
    "Il faudra acheter des pommes et du pain. Ensuite nous rentrerons déjeuner. Bonne journée à toi !"
)


async def test_cancel_while_the_text_streams_ends_text_and_speech(ollama, voice_settings, module_worker, tts_key):
    ollama.behaviour.reply_tokens = tokens(SIX * 3)
    ollama.behaviour.token_interval_s = 0.05
    _, key = await tts_key("alice", scopes="chat,tts")
    socket = ws_with_key(key)
    assert (await socket.connect())[0]
    await socket.send_json_to({"type": "message", "content": "Salut", "voice": True})
    await receive_until(socket, "token", frame_timeout_s=30)
    await socket.send_json_to({"type": "cancel"})
    frames = []
    while not frames or not (isinstance(frames[-1], dict) and frames[-1]["type"] == "speech_stopped"):
        output = await socket.receive_output(timeout=30)
        frames.append(output["bytes"] if output.get("bytes") is not None else json.loads(output["text"]))
    ends = json_frames(frames, "end")
    assert len(ends) == 1 and ends[0]["done_reason"] == "cancelled"
    assert frames[-1]["reason"] == "cancelled" and frames.index(ends[0]) < len(frames) - 1
    await socket.send_json_to({"type": "ping"})
    assert await socket.receive_json_from(timeout=30) == {"type": "pong"}  # no audio after speech_stopped
    await socket.disconnect()


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
