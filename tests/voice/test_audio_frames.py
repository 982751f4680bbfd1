"""Audio of any length reaches /ws/chat: each binary frame stays under the servers' message limits."""

from __future__ import annotations

import io
import wave

import pytest

from tests.chat.wsclient import ws_with_key
from tests.voice.speech_frames import json_frames, receive_spoken_reply
from voice import client
from voice.speech_splitter import SpeechSplitter
from voice.speech_stream import AUDIO_FRAME_MAX_BYTES, AudioTooLarge, SpeechStream, split_pcm, split_wav
from voice.synthesis import AudioChunk
from voice.wav import pcm16_wav, wav_info

DAPHNE_MESSAGE_LIMIT = 1024 * 1024  # autobahn's default maxMessagePayloadSize, which daphne keeps
# One sentence under TTS_STREAM_MAX_CHARS and the worker's 200-character phrase cache.
LONG_PIECE = (
    "Voici une phrase vraiment longue que le modèle doit dire lentement, avec beaucoup de mots, "
    "pour que son fichier audio pèse bien plus que la limite des messages du serveur web."
)


def pcm_of(wav: bytes) -> bytes:
    with wave.open(io.BytesIO(wav), "rb") as source:
        return source.readframes(source.getnframes())


def test_a_long_wav_is_cut_into_complete_wavs_that_reassemble():
    pcm = bytes(range(256)) * 4000  # 1,024,000 bytes: 32 s of 16 kHz audio
    wav = pcm16_wav(pcm, sample_rate=16000)
    parts = split_wav(wav, max_bytes=100_000)
    assert len(parts) == 11 and all(len(part) <= 100_000 for part in parts)
    assert all(wav_info(part).sample_rate == 16000 for part in parts)
    assert b"".join(pcm_of(part) for part in parts) == pcm
    assert split_wav(wav, max_bytes=len(wav)) == [wav]  # within the budget: untouched


def test_oversized_bytes_that_are_no_wav_cannot_be_cut():
    with pytest.raises(AudioTooLarge):
        split_wav(b"\x00" * 5000, max_bytes=1000)


class Socket:
    def __init__(self, *, bytes_error: Exception | None = None) -> None:
        self.frames: list[dict | bytes] = []
        self.bytes_error = bytes_error

    async def send_json(self, frame: dict) -> None:
        self.frames.append(frame)

    async def send_bytes(self, data: bytes) -> None:
        if self.bytes_error is not None:
            raise self.bytes_error
        self.frames.append(data)


def speech_for(socket: Socket, pcm: bytes, *, max_frame_bytes: int) -> SpeechStream:
    async def synthesize(*, text: str, voice: str | None):
        yield AudioChunk(pcm, 16000, 0, True, "fra", "fake", cached=True)

    return SpeechStream(
        voice=None,
        send_json=socket.send_json,
        send_bytes=socket.send_bytes,
        synthesize=synthesize,
        max_in_flight=1,
        splitter=SpeechSplitter(first_min_chars=24, max_chars=220),
        max_frame_bytes=max_frame_bytes,
    )


def test_pcm_is_cut_into_parts_whose_wavs_fit_the_budget():
    pcm = b"\x01\x02" * 30_000
    parts = split_pcm(pcm, max_bytes=16_000)
    assert len(parts) == 4 and b"".join(parts) == pcm
    assert all(len(pcm16_wav(part, sample_rate=16000)) <= 16_000 for part in parts)
    with pytest.raises(AudioTooLarge):
        split_pcm(pcm, max_bytes=40)


async def test_a_chunk_over_the_budget_is_sent_as_several_numbered_chunks():
    pcm = b"\x01\x02" * 30_000  # a cached phrase comes as one chunk
    socket = Socket()
    speech = speech_for(socket, pcm, max_frame_bytes=16_000)
    speech.feed("Une seule phrase à dire.")
    await speech.finish()
    announced = [frame for frame in socket.frames if isinstance(frame, dict) and frame["type"] == "audio"]
    assert [(frame["seq"], frame["chunk"], frame["last"]) for frame in announced] == [(0, n, n == 3) for n in range(4)]
    for frame in announced:  # each announcement is followed by its binary frame, of the size it says
        data = socket.frames[socket.frames.index(frame) + 1]
        assert isinstance(data, bytes) and len(data) == frame["bytes"] <= 16_000
    assert b"".join(pcm_of(frame) for frame in socket.frames if isinstance(frame, bytes)) == pcm


async def test_audio_that_cannot_be_cut_or_sent_becomes_an_error_frame_not_silence():
    socket = Socket()
    speech = speech_for(socket, b"\x00" * 50_000, max_frame_bytes=40)
    speech.feed("Une phrase.")
    await speech.finish()
    assert [frame["type"] for frame in socket.frames] == ["error"]
    assert socket.frames[0]["code"] == "tts_unavailable" and speech.stopped

    socket = Socket(bytes_error=ValueError("message too big for the server"))
    speech = speech_for(socket, b"\x00\x00" * 100, max_frame_bytes=16_000)
    speech.feed("Une phrase.")
    await speech.finish()
    assert [frame["type"] for frame in socket.frames] == ["audio", "error"]
    assert socket.frames[1]["code"] == "tts_unavailable" and speech.stopped


@pytest.mark.django_db(transaction=True)
async def test_a_long_spoken_piece_arrives_whole_through_the_asgi_app_in_bounded_frames(
    ollama, voice_settings, start_worker, tts_key
):
    start_worker(TTS_SPEAKING_RATE="0.2")  # slow speech: this one sentence makes well over 1 MiB of WAV
    words = f"Bonjour ! {LONG_PIECE}".split(" ")  # the first piece is cut early; the next is a whole sentence
    ollama.behaviour.reply_tokens = [words[0]] + [" " + word for word in words[1:]]
    ollama.behaviour.token_interval_s = 0.001
    _, key = await tts_key("alice", scopes="chat,tts")
    socket = ws_with_key(key)
    assert (await socket.connect())[0]
    await socket.send_json_to({"type": "message", "content": "Salut", "session_id": "long", "voice": True})
    frames = await receive_spoken_reply(socket, frame_timeout_s=60)
    await socket.disconnect()
    assert frames[-1]["type"] == "speech_end" and len(json_frames(frames, "end")) == 1
    assert json_frames(frames, "error") == []
    audio, binary = [], []
    for index, frame in enumerate(frames):
        if isinstance(frame, dict) and frame["type"] == "audio" and frame["seq"] == 1:
            audio.append(frame)
            binary.append(frames[index + 1])
    assert len(audio) >= 2 and all(isinstance(data, bytes) for data in binary)
    assert {frame["text"] for frame in audio} == {LONG_PIECE}
    assert [(frame["chunk"], frame["last"]) for frame in audio] == [(n, n == len(audio) - 1) for n in range(len(audio))]
    assert [len(data) for data in binary] == [frame["bytes"] for frame in audio]
    every_binary = [frame for frame in frames if isinstance(frame, bytes)]
    assert max(len(data) for data in every_binary) <= AUDIO_FRAME_MAX_BYTES < DAPHNE_MESSAGE_LIMIT
    assert sum(len(data) for data in binary) > DAPHNE_MESSAGE_LIMIT  # one frame would have been refused
    # The worker caches this phrase: the same synthesis, asked again, is the audio that was cut.
    whole = await client.synthesize(text=LONG_PIECE, voice=None)
    assert whole.cached and b"".join(pcm_of(data) for data in binary) == pcm_of(whole.wav)
