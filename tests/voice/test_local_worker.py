"""Without Redis: synthesis in the web process's own child process, never in the web process."""

from __future__ import annotations

import asyncio
import os
import signal
import threading
import time

import pytest

from tests.polling import aeventually
from voice import client
from voice.errors import TTSUnavailable
from voice.local_worker import Turn, Turns
from voice.wav import wav_info

LONG_TEXT = "Une phrase assez longue pour occuper le processus un bon moment. " * 15


async def test_it_synthesises_in_a_child_process(local_transport):
    synthesis = await client.synthesize(text="Bonjour à 14h30 !", voice=None)
    assert wav_info(synthesis.wav).sample_rate == 16000 and synthesis.duration_s > 0
    child = client._local_worker
    assert child is not None and child.pid not in (None, os.getpid())


async def test_readiness_pings_the_child(local_transport):
    await client.synthesize(text="Bonjour", voice=None)
    ready = await client.tts_readiness(timeout_s=3)
    assert ready["ok"] is True and ready["transport"] == "local" and ready["device"] == "cpu"


async def test_a_child_killed_mid_request_gives_tts_unavailable_and_the_next_request_restarts_it(local_transport):
    await client.synthesize(text="Bonjour", voice=None)
    first_pid = client._local_worker.pid
    request = asyncio.create_task(client.synthesize(text=LONG_TEXT, voice=None))
    await aeventually(lambda: client._local_worker.busy, "the request is with the child")
    os.kill(first_pid, signal.SIGKILL)
    with pytest.raises(TTSUnavailable) as err:
        await request
    assert err.value.code == "tts_unavailable" and err.value.status == 503
    again = await client.synthesize(text="Encore une fois.", voice=None)
    assert again.duration_s > 0
    assert client._local_worker.pid != first_pid


async def test_a_hung_child_misses_its_deadline_is_replaced_and_the_next_request_works(local_transport):
    await client.synthesize(text="Bonjour", voice=None)
    hung_pid = client._local_worker.pid
    os.kill(hung_pid, signal.SIGSTOP)  # alive, but never answers
    with pytest.raises(TTSUnavailable):
        await client.synthesize(text="Bonjour", voice=None, timeout_s=1.0)
    with pytest.raises(ProcessLookupError):
        os.kill(hung_pid, 0)  # killed and reaped, not left behind
    assert (await client.synthesize(text="Bonjour", voice=None)).duration_s > 0


async def test_a_model_that_cannot_load_is_reported_with_its_name(local_transport, tmp_path):
    local_transport.TTS_VOICES = {"fra": str(tmp_path / "missing-voice")}
    with pytest.raises(TTSUnavailable) as err:
        await client.synthesize(text="Bonjour", voice=None)
    assert "missing-voice" in err.value.message
    ready = await client.tts_readiness(timeout_s=1)
    assert ready["ok"] is False and "missing-voice" in ready["error"]


async def test_a_streamed_synthesis_comes_in_ordered_chunks_from_the_child(local_transport):
    chunks = [chunk async for chunk in client.synthesize_stream(text=LONG_TEXT[:300], voice=None)]
    assert len(chunks) >= 3 and [chunk.index for chunk in chunks] == list(range(len(chunks)))
    assert chunks[-1].last and not any(chunk.last for chunk in chunks[:-1])
    assert all(chunk.sample_rate == 16000 and chunk.pcm for chunk in chunks)


async def test_a_stream_left_after_its_first_chunk_stops_the_child_and_the_next_request_is_served(
    local_transport,
):
    stream = client.synthesize_stream(text=LONG_TEXT, voice=None)
    first = await anext(stream)
    assert first.index == 0 and not first.last
    await stream.aclose()  # the child is told and stops after the chunk under way
    pid = client._local_worker.pid
    chunks = [chunk async for chunk in client.synthesize_stream(text="Bonjour.", voice=None)]
    assert chunks[-1].last and client._local_worker.pid == pid  # the same child: it was not killed


# --- turns: the child serves requests in the order they were asked for (#14 silences) ---------


async def test_streams_are_served_in_the_order_the_reply_asked_for_them(local_transport):
    """A reply asks for its next pieces while the child speaks the current one; the first asked
    must come first (with a plain lock, whichever waiting thread the OS woke took the child)."""
    await client.synthesize(text="Bonjour", voice=None)  # the child is up
    served: list[str] = []

    async def speak(name: str, text: str) -> None:
        async for _ in client.synthesize_stream(text=text, voice=None):
            served.append(name)

    pieces = [("long", LONG_TEXT[:400]), *((f"p{n}", f"Phrase numéro {n}, assez courte.") for n in range(6))]
    await asyncio.gather(*(asyncio.create_task(speak(name, text)) for name, text in pieces))
    names = [name for name, _ in pieces]
    assert list(dict.fromkeys(served)) == names  # first chunks in the order asked
    assert served == sorted(served, key=names.index)  # and each piece whole before the next


def test_turns_are_given_in_the_order_they_were_taken_whoever_waits_first():
    turns = Turns()
    assert turns.wait(turns.take(), until=time.monotonic() + 5)  # held
    first, second = turns.take(), turns.take()
    assert turns.queued == 2
    got: list[str] = []

    def wait_for(turn: Turn, name: str) -> None:
        assert turns.wait(turn, until=time.monotonic() + 30)
        got.append(name)
        turns.release()

    late = threading.Thread(target=wait_for, args=(second, "second"))
    late.start()  # the later turn waits first
    early = threading.Thread(target=wait_for, args=(first, "first"))
    early.start()
    assert turns.busy and turns.take_if_free() is None
    turns.release()
    early.join(30)
    late.join(30)
    assert got == ["first", "second"] and not turns.busy and turns.queued == 0


def test_a_turn_given_up_or_timed_out_leaves_the_line_to_the_next():
    turns = Turns()
    assert turns.wait(turns.take(), until=time.monotonic() + 5)  # held
    dropped, timed_out, kept = turns.take(), turns.take(), turns.take()
    cancelled = threading.Event()
    outcome: list[bool] = []
    waiter = threading.Thread(
        target=lambda: outcome.append(turns.wait(dropped, until=time.monotonic() + 30, give_up=cancelled.is_set))
    )
    waiter.start()
    cancelled.set()  # as a reply stopped by barge-in
    waiter.join(30)
    assert outcome == [False]
    assert turns.wait(timed_out, until=time.monotonic()) is False  # its deadline is now
    turns.release()
    assert turns.wait(kept, until=time.monotonic() + 5) is True  # first in line now
    queued = turns.take()
    stopping = turns.take(first=True)  # as LocalWorker.stop: next after the holder, before the line
    turns.release()
    assert turns.wait(stopping, until=time.monotonic() + 5) is True and turns.queued == 1
    turns.release()
    assert turns.wait(queued, until=time.monotonic() + 5) is True
    turns.release()
    assert turns.take_if_free() is not None
