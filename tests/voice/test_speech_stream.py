"""Speaking a streamed reply piece by piece: order, pipelining, failures, cancel; fake and real workers."""

from __future__ import annotations

import asyncio
import time

from voice.errors import InvalidText, TTSUnavailable
from voice.speech_splitter import SpeechSplitter
from voice.speech_stream import SpeechStream
from voice.synthesis import AudioChunk
from voice.wav import wav_info

REPLY = (
    "Bonjour ! Voici la réponse à ta question, en quelques phrases. "
    "M. Dupont arrive à 14h30 avec 3,5 kilos de pommes. "
    "Ensuite, nous verrons la suite. Merci de ta patience."
)


def tokens_of(text: str, size: int = 4) -> list[str]:
    return [text[i : i + size] for i in range(0, len(text), size)]


class Socket:
    """What the consumer's send_json / send_bytes would put on the wire, with arrival times."""

    def __init__(self, *, fail_bytes: bool = False) -> None:
        self.frames: list[tuple[str, object, float]] = []
        self.fail_bytes = fail_bytes
        self.progress = asyncio.Event()  # set at each frame

    async def send_json(self, frame: dict) -> None:
        self.frames.append(("json", frame, time.perf_counter()))
        self.progress.set()

    async def send_bytes(self, data: bytes) -> None:
        if self.fail_bytes:
            raise ConnectionError("socket closed")
        self.frames.append(("bytes", data, time.perf_counter()))

    def json(self, kind: str | None = None) -> list[dict]:
        return [frame for tag, frame, _ in self.frames if tag == "json" and (kind is None or frame["type"] == kind)]


class FakeSynthesizer:
    """Stands in for voice.client.synthesize_stream: same keyword interface, two chunks of PCM per
    piece (the second after the first has been taken), a chosen delay before the first."""

    def __init__(
        self, *, delay: float = 0.02, fail_on: str | None = None, delays: dict[str, float] | None = None
    ) -> None:
        self.delay = delay
        self.fail_on = fail_on
        self.delays = delays or {}
        self.texts: list[str] = []
        self.active = 0
        self.most_active = 0
        self.cancelled = 0
        self.progress = asyncio.Event()  # set when a synthesis starts

    def __call__(self, *, text: str, voice: str | None, timeout_s: float | None = None):
        return self._chunks(text, voice)

    async def _chunks(self, text: str, voice: str | None):
        self.texts.append(text)
        self.active += 1
        self.most_active = max(self.most_active, self.active)
        self.progress.set()
        try:
            await asyncio.sleep(next((d for key, d in self.delays.items() if key in text), self.delay))
        except asyncio.CancelledError:
            self.cancelled += 1
            raise
        finally:
            self.active -= 1
        if self.fail_on and self.fail_on in text:
            raise TTSUnavailable("The text-to-speech worker stopped answering during the request.")
        if not any(char.isalpha() for char in text):
            raise InvalidText("Nothing in this text can be spoken.")
        samples = 80 * len(text)
        yield AudioChunk(b"\x01\x00" * samples, 16000, 0, False, voice or "fra", "fake", 1.0)
        yield AudioChunk(b"\x02\x00" * samples, 16000, 1, True, voice or "fra", "fake", 1.0)


def stream(socket: Socket, synthesizer, **options) -> SpeechStream:
    options.setdefault("max_in_flight", 2)
    options.setdefault("splitter", SpeechSplitter(first_min_chars=24, max_chars=220))
    return SpeechStream(
        voice=None, send_json=socket.send_json, send_bytes=socket.send_bytes, synthesize=synthesizer, **options
    )


async def test_each_piece_is_an_audio_frame_then_its_wav_in_order():
    socket, synthesizer = Socket(), FakeSynthesizer()
    speech = stream(socket, synthesizer)
    for token in tokens_of(REPLY):
        speech.feed(token)
    await speech.finish()
    tags = [tag for tag, _, _ in socket.frames]
    assert tags == ["json", "bytes"] * (len(tags) // 2) + ["json"] and len(tags) >= 17
    audio = socket.json("audio")
    pieces = len(synthesizer.texts)
    assert [(frame["seq"], frame["chunk"], frame["last"]) for frame in audio] == [
        (seq, chunk, chunk == 1) for seq in range(pieces) for chunk in (0, 1)
    ]
    assert [frame["text"] for frame in audio[::2]] == synthesizer.texts
    assert audio[0]["text"] == "Bonjour !"
    assert "M. Dupont arrive à 14h30 avec 3,5 kilos de pommes." in [frame["text"] for frame in audio]
    for (_, frame, _), (_, data, _) in zip(socket.frames[:-1:2], socket.frames[1::2], strict=True):
        assert frame == {**frame, "type": "audio", "format": "wav", "sample_rate": 16000, "bytes": len(data)}
        assert wav_info(data).frames > 0
    end = socket.frames[-1][1]
    assert end["type"] == "speech_end" and end["pieces"] == pieces and end["chunks"] == 2 * pieces
    assert end["audio_s"] == sum(160 * len(text) for text in synthesizer.texts) / 16000
    assert end["time_to_first_audio_ms"] == speech.first_audio_ms <= end["speech_total_ms"] == speech.speech_total_ms


async def test_audio_starts_while_tokens_are_still_flowing():
    socket, synthesizer = Socket(), FakeSynthesizer(delay=0.05)
    speech = stream(socket, synthesizer)
    for token in tokens_of(REPLY):
        speech.feed(token)
        await asyncio.sleep(0.01)  # an LLM writing about 400 characters a second
    last_token_at = time.perf_counter()
    await speech.finish()
    first_audio_at = socket.frames[1][2]
    assert first_audio_at < last_token_at
    assert speech.first_audio_ms is not None and speech.first_audio_ms < 400


async def test_at_most_max_in_flight_syntheses_run_and_order_survives_out_of_order_completion():
    socket = Socket()
    synthesizer = FakeSynthesizer(delay=0.01, delays={"Bonjour": 0.3})  # the first piece is the slowest
    speech = stream(socket, synthesizer, max_in_flight=2)
    speech.feed(REPLY)
    await speech.finish()
    assert synthesizer.most_active == 2
    assert [frame["text"] for frame in socket.json("audio")[::2]] == synthesizer.texts


async def test_a_synthesis_failure_sends_one_error_and_stops_speaking():
    socket, synthesizer = Socket(), FakeSynthesizer(fail_on="M. Dupont")
    speech = stream(socket, synthesizer, max_in_flight=1)
    for token in tokens_of(REPLY):
        speech.feed(token)
    await speech.finish()
    errors = socket.json("error")
    assert len(errors) == 1 and errors[0]["code"] == "tts_unavailable"
    assert socket.frames[-1][1] == errors[0]  # nothing spoken after the error
    assert not any("Merci" in text for text in synthesizer.texts)  # later pieces never synthesised
    assert speech.stopped
    speech.feed("Encore du texte. Et encore. ")  # the reply goes on; speech stays silent
    await speech.finish()
    assert len(socket.json("error")) == 1


async def test_cancel_stops_synthesis_and_sending_at_once():
    socket, synthesizer = Socket(), FakeSynthesizer(delay=0.2)
    speech = stream(socket, synthesizer)
    speech.feed(REPLY)
    while True:  # until both syntheses are under way
        synthesizer.progress.clear()
        if synthesizer.active >= 2:
            break
        await synthesizer.progress.wait()
    speech.cancel()
    await speech.finish()
    assert socket.frames == []
    assert synthesizer.cancelled == 2  # the two in flight
    assert len(synthesizer.texts) == 2  # the queued pieces never started


async def test_interrupt_drops_the_rest_and_sends_one_speech_stopped():
    socket = Socket()
    synthesizer = FakeSynthesizer(delay=0.01, delays={"M. Dupont": 30})  # the second piece never comes
    speech = stream(socket, synthesizer)
    speech.feed(REPLY)
    speech.text_done()
    while True:  # until audio went out and the slow piece is being synthesised
        socket.progress.clear()
        synthesizer.progress.clear()
        if socket.json("audio") and any("Dupont" in text for text in synthesizer.texts):
            break
        await asyncio.wait(
            [asyncio.ensure_future(socket.progress.wait()), asyncio.ensure_future(synthesizer.progress.wait())],
            return_when=asyncio.FIRST_COMPLETED,
        )
    assert await speech.interrupt("barge_in") is True
    assert await speech.interrupt("cancelled") is False  # already closed
    await speech.wait()
    assert socket.frames[-1][1] == {"type": "speech_stopped", "request_id": "", "reason": "barge_in"}
    assert synthesizer.cancelled >= 1 and speech.ended


async def test_pieces_with_nothing_to_say_are_skipped_and_seq_stays_contiguous():
    socket, synthesizer = Socket(), FakeSynthesizer()
    speech = stream(socket, synthesizer)
    speech.feed("Voilà le résultat.\n🎉🎉🎉 !!!\n42.\nEt c'est tout.")
    await speech.finish()
    assert [(frame["seq"], frame["text"]) for frame in socket.json("audio")[::2]] == [
        (0, "Voilà le résultat."),
        (1, "Et c'est tout."),
    ]
    assert socket.json("error") == []


async def test_code_blocks_are_not_read_aloud():
    socket, synthesizer = Socket(), FakeSynthesizer()
    speech = stream(socket, synthesizer)
    speech.feed("Voici le code :\n```python\nprint('bonjour')\nx = 1\n```\nC'est simple.")
    await speech.finish()
    assert [frame["text"] for frame in socket.json("audio")[::2]] == ["Voici le code :", "C'est simple."]


async def test_a_closed_socket_stops_speech_quietly():
    socket, synthesizer = Socket(fail_bytes=True), FakeSynthesizer()
    speech = stream(socket, synthesizer)
    speech.feed(REPLY)
    await speech.finish()
    assert speech.stopped and socket.json("error") == []


async def test_feeding_tokens_is_cheap():
    socket, synthesizer = Socket(), FakeSynthesizer(delay=0.001)
    speech = stream(socket, synthesizer, max_in_flight=2)
    tokens = tokens_of(REPLY * 40, size=3)
    started = time.perf_counter()
    for token in tokens:
        speech.feed(token)
    per_token_us = (time.perf_counter() - started) / len(tokens) * 1e6
    await speech.finish()
    assert per_token_us < 200  # typically a few microseconds


async def test_finish_without_any_text_sends_only_speech_end():
    socket = Socket()
    speech = stream(socket, FakeSynthesizer())
    await speech.finish()
    assert [frame["type"] for frame in socket.json()] == ["speech_end"] and speech.first_audio_ms is None
    assert socket.json()[0]["pieces"] == 0


# --- the real path: SpeechStream -> voice.client -> Redis -> runworker voice-tts -> engine ---


async def test_a_real_worker_speaks_the_reply_sentence_by_sentence(voice_settings, module_worker):
    socket = Socket()
    speech = SpeechStream(voice="fra", send_json=socket.send_json, send_bytes=socket.send_bytes)
    for token in tokens_of(REPLY):
        speech.feed(token)
        await asyncio.sleep(0.005)
    await speech.finish()
    audio = socket.json("audio")
    assert len(audio) >= 4 and socket.json("error") == []
    assert sorted({frame["seq"] for frame in audio}) == list(range(len(speech.pieces_spoken)))
    assert socket.json("speech_end")[0]["pieces"] == len(speech.pieces_spoken) >= 4
    wavs = [data for tag, data, _ in socket.frames if tag == "bytes"]
    assert all(wav_info(wav).sample_rate == 16000 and wav_info(wav).frames > 0 for wav in wavs)
    assert [len(wav) for wav in wavs] == [frame["bytes"] for frame in audio]
    assert speech.first_audio_ms is not None


async def test_cancel_with_a_real_worker_sends_nothing_more(voice_settings, module_worker):
    socket = Socket()
    speech = SpeechStream(voice="fra", send_json=socket.send_json, send_bytes=socket.send_bytes)
    speech.feed(REPLY * 3)
    speech.cancel()
    await speech.finish()
    assert socket.frames == []
