"""With Redis: `manage.py runworker voice-tts` processes answer over the real channel layer."""

from __future__ import annotations

import asyncio
import re
import signal
import time

import pytest

from accounts.layer_wait import GAVE_UP
from tests.workers import first_to_log, wait_for
from voice import client
from voice.errors import TTSUnavailable, UnknownVoice
from voice.synthesis import AudioChunk
from voice.wav import wav_info

LONG_TEXT = "Une phrase assez longue pour occuper le travailleur un bon moment. " * 14


async def test_a_worker_synthesises_over_the_channel_layer_and_answers_pings(voice_settings, start_worker):
    start_worker()
    synthesis = await client.synthesize(text="Bonjour à 14h30 !", voice="fra")
    info = wav_info(synthesis.wav)
    assert (info.channels, info.sample_width, info.sample_rate) == (1, 2, 16000)
    assert synthesis.duration_s > 0 and synthesis.model == "tiny-mms"
    ready = await client.tts_readiness(timeout_s=3)
    assert ready["ok"] is True and ready["transport"] == "channel"
    assert ready["device"] == "cpu" and set(ready["voices"]) == {"fra", "eng"}


async def test_bad_requests_are_refused_before_reaching_a_worker(voice_settings):
    voice_settings.TTS_PICKUP_TIMEOUT_S = 30.0  # a request that waited for a worker would take this long
    started = time.monotonic()
    with pytest.raises(UnknownVoice):
        await client.synthesize(text="Bonjour", voice="klingon")
    assert time.monotonic() - started < 10  # no worker needed, none waited for (generous: shared machine)


async def test_without_any_worker_a_request_fails_fast_with_tts_unavailable(voice_settings):
    voice_settings.TTS_PICKUP_TIMEOUT_S = 1.0
    started = time.monotonic()
    with pytest.raises(TTSUnavailable) as err:
        await client.synthesize(text="Bonjour", voice=None)
    assert time.monotonic() - started < 15  # the pickup timeout, not TTS_TIMEOUT_S (30 s)
    assert "runworker voice-tts" in err.value.message


async def test_a_worker_killed_mid_request_gives_tts_unavailable_and_the_other_worker_serves_the_next(
    voice_settings, start_worker
):
    workers = [start_worker(TTS_SPEAKING_RATE="0.3"), start_worker(TTS_SPEAKING_RATE="0.3")]
    request = asyncio.create_task(client.synthesize(text=LONG_TEXT, voice=None))
    busy = await asyncio.to_thread(first_to_log, workers, f"synthesising {len(LONG_TEXT.strip())} chars")
    busy.signal(signal.SIGKILL)
    started = time.monotonic()
    with pytest.raises(TTSUnavailable) as err:
        await request
    assert time.monotonic() - started < 15  # noticed by the missing heartbeat, not the 30 s deadline
    assert "stopped answering" in err.value.message
    assert (await client.synthesize(text="Encore une fois.", voice=None)).duration_s > 0


async def test_a_hung_worker_gives_tts_unavailable_by_the_deadline(voice_settings, start_worker):
    worker = start_worker()
    worker.signal(signal.SIGSTOP)
    with pytest.raises(TTSUnavailable):
        await client.synthesize(text="Bonjour", voice=None, timeout_s=1.5)
    worker.signal(signal.SIGCONT)


async def test_several_workers_share_the_requests(voice_settings, start_worker):
    workers = [start_worker(), start_worker()]
    results = await asyncio.gather(*(client.synthesize(text=f"Phrase numéro {n}.", voice=None) for n in range(8)))
    assert all(result.duration_s > 0 for result in results)
    served = [sum("synthesising" in line for line in worker.lines) for worker in workers]
    assert sum(served) == 8 and min(served) >= 1


async def test_a_stream_left_after_its_first_chunk_is_stopped_in_the_worker(voice_settings, start_worker):
    worker = start_worker(TTS_SPEAKING_RATE="0.3")
    stream = client.synthesize_stream(text=LONG_TEXT, voice=None)
    first = await anext(stream)
    assert first.index == 0 and not first.last
    await stream.aclose()  # tts.cancel to the worker's own channel, and the abandoned mark
    line = await asyncio.to_thread(worker.wait_for_line, "cancelled by its client")
    await asyncio.to_thread(worker.wait_for_line, "stopped a streamed synthesis", start=line)
    whole = f"streamed {len(LONG_TEXT.strip())} chars"
    assert not any(whole in entry for entry in worker.lines)  # it never ran to its end
    chunks = [chunk async for chunk in client.synthesize_stream(text="Encore une fois.", voice=None)]
    assert chunks[-1].last  # and the worker serves the next one


async def test_streams_are_served_in_the_order_the_reply_asked_for_them(voice_settings, start_worker):
    """As through the embedded child (test_local_worker): a reply's pieces, asked for while the
    worker speaks the first, are synthesised whole and in the order asked. The worker's log says
    in which order it started them (each text has its own length); the client's arrivals do not,
    since the last chunk of one stream and the first of the next, on two reply channels, may be
    read in either order."""
    worker = start_worker()
    await client.synthesize(text="Bonjour", voice="fra")  # the worker is up
    chunks: dict[str, list[AudioChunk]] = {}

    async def speak(name: str, text: str) -> None:
        chunks[name] = [chunk async for chunk in client.synthesize_stream(text=text, voice="fra")]

    pieces = [("long", LONG_TEXT[:400]), *((f"p{n}", f"Phrase {'très ' * n}courte.") for n in range(6))]
    await asyncio.gather(*(asyncio.create_task(speak(name, text)) for name, text in pieces))
    by_length = {len(text.strip()): name for name, text in pieces}
    assert len(by_length) == len(pieces)

    def started() -> list[str] | None:
        found = [match for line in worker.lines if (match := re.search(r"synthesising (\d+) chars \(streamed\)", line))]
        return [by_length[int(match[1])] for match in found] if len(found) == len(pieces) else None

    order = await asyncio.to_thread(wait_for, started, give_up=lambda: worker.ended, timeout=30)
    assert order == [name for name, _ in pieces]
    for name, got in chunks.items():  # each whole: every chunk, the last one marked
        assert [chunk.index for chunk in got] == list(range(len(got))) and got[-1].last, name


class DeafToCancellation:
    """The real channel layer, whose receive, once cancelled, goes on waiting (until `let_go`), as
    a channels_redis receive cancelled just as its BZPOPMIN's own timeout ends was seen to (the
    request then hung for good). The client must end its receives without cancelling them."""

    def __init__(self) -> None:
        from channels.layers import get_channel_layer

        self.real = get_channel_layer()
        self.receives: list[asyncio.Task[object]] = []
        self.receiving = asyncio.Event()
        self.cancelled = False
        self.let_go = asyncio.Event()

    def __getattr__(self, name: str) -> object:
        return getattr(self.real, name)

    async def receive(self, channel: str) -> object:
        task = asyncio.current_task()
        assert task is not None
        self.receives.append(task)
        self.receiving.set()
        try:
            return await self.real.receive(channel)
        except asyncio.CancelledError:
            self.cancelled = True
            await self.let_go.wait()
            raise


async def test_a_timed_out_wait_ends_its_receive_with_a_message_not_a_cancellation(voice_settings, monkeypatch):
    layer = DeafToCancellation()
    monkeypatch.setattr(client, "get_channel_layer", lambda: layer)
    voice_settings.TTS_PICKUP_TIMEOUT_S = 0.5  # no worker runs: nobody takes the request
    with pytest.raises(TTSUnavailable, match="No text-to-speech worker took the request"):
        await client.synthesize(text="Bonjour", voice=None)
    [receive] = layer.receives
    assert receive.done() and not receive.cancelled() and not layer.cancelled
    assert receive.result()["type"] == GAVE_UP


async def test_a_request_cancelled_while_it_waits_ends_its_receive_in_the_background(voice_settings, monkeypatch):
    layer = DeafToCancellation()
    monkeypatch.setattr(client, "get_channel_layer", lambda: layer)
    voice_settings.TTS_PICKUP_TIMEOUT_S = 30.0
    request = asyncio.create_task(client.synthesize(text="Bonjour", voice=None))
    await layer.receiving.wait()
    request.cancel()  # as a barge-in cancels the speech that waits for its next chunk
    with pytest.raises(asyncio.CancelledError):
        await request
    [receive] = layer.receives
    assert (await receive)["type"] == GAVE_UP  # woken by its message, in the background
    assert not layer.cancelled
