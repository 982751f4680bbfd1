"""Speak an LLM reply while it is being written: the voice half of /ws/chat with "voice": true.

Speech is a stream of its own: it starts while tokens flow and goes on after the text's `end`.
Contract for the chat consumer (one SpeechStream per reply, created inside the event loop):

    speech = SpeechStream(voice=None, send_json=self.send_json, send_bytes=send_audio)
    for each token:    speech.feed(token)            # sync, cheap, never blocks
    text complete:     speech.text_done()            # sync: the rest is spoken; `end` may go out now
    barge-in / cancel: await speech.interrupt(reason) # drop everything, tell the client (speech_stopped)
    socket gone:       speech.cancel()               # drop everything, say nothing
    metric:            speech.when_done(callback)     # once, when speech has ended in any way
                       speech.first_audio_ms, speech.speech_total_ms

Each speakable piece is synthesised as a stream of chunks (voice.client.synthesize_stream; the
worker sends each chunk of the waveform as soon as its decoder window is done). For each chunk,
in order: send_json({"type": "audio", "request_id", "seq": N, "chunk": K, "last": bool,
"text": piece, "format": "wav", "sample_rate": R, "bytes": len(wav)}) then send_bytes(wav), a
complete WAV file of that chunk (a chunk over `max_frame_bytes`, e.g. a cached phrase that comes
whole, is cut at sample boundaries into several chunks, so that no binary frame reaches a
server's WebSocket message limit: daphne's is 1 MiB). Played back to back, the chunks are the
piece. Pieces are synthesised while tokens still flow, at most `max_in_flight` at a time, so the
next piece is ready while the current one plays. A piece with nothing to say (emoji, a code
fence) is skipped; text inside Markdown code fences is not read aloud.

Speech then ends with exactly one frame: {"type": "speech_end", "request_id", "pieces",
"chunks", "audio_s", "synthesis_ms", "real_time_factor", "time_to_first_audio_ms",
"speech_total_ms"} when all was spoken; {"type": "speech_stopped", "request_id", "reason"} when
`interrupt` stopped it (barge-in, cancel); or {"type": "error", "code": "tts_unavailable",
"request_id", ...} when synthesis failed or audio could not be sent (the text reply is not
affected). A socket that went away gets nothing.
"""

from __future__ import annotations

import asyncio
import collections
import io
import logging
import time
import wave
from collections.abc import AsyncGenerator, Awaitable, Callable
from typing import Any

from accounts.errors import EvaError
from voice.errors import InvalidText, TTSUnavailable
from voice.speech_splitter import SpeechSplitter
from voice.synthesis import AudioChunk
from voice.wav import pcm16_wav

logger = logging.getLogger("voice.speech_stream")

StreamSynthesizer = Callable[..., AsyncGenerator[AudioChunk, None]]

# Under daphne's (autobahn's) 1 MiB WebSocket message limit and uvicorn's 16 MiB, with room to
# spare: about 8 s of 16 kHz speech per binary frame.
AUDIO_FRAME_MAX_BYTES = 256 * 1024
WAV_HEADER_BYTES = 44  # what the stdlib's wave module writes for PCM


class AudioTooLarge(EvaError):
    """A piece's audio exceeds the frame budget and is not a WAV file that can be cut."""

    code = "audio_too_large"
    status = 413


def split_wav(wav: bytes, *, max_bytes: int) -> list[bytes]:
    """`wav` cut at sample boundaries into complete WAV files of at most `max_bytes` each."""
    if len(wav) <= max_bytes:
        return [wav]
    try:
        with wave.open(io.BytesIO(wav), "rb") as source:
            params = source.getparams()
            pcm = source.readframes(params.nframes)
    except (wave.Error, EOFError) as exc:
        raise AudioTooLarge(f"A piece's audio has {len(wav)} bytes and cannot be cut: {exc}") from exc
    frame_size = params.nchannels * params.sampwidth
    chunk = (max_bytes - WAV_HEADER_BYTES) // frame_size * frame_size
    if chunk <= 0:
        raise AudioTooLarge(f"A frame budget of {max_bytes} bytes cannot hold any audio.")
    parts = []
    for start in range(0, len(pcm), chunk):
        buffer = io.BytesIO()
        with wave.open(buffer, "wb") as out:
            out.setnchannels(params.nchannels)
            out.setsampwidth(params.sampwidth)
            out.setframerate(params.framerate)
            out.writeframes(pcm[start : start + chunk])
        parts.append(buffer.getvalue())
    return parts


def split_pcm(pcm: bytes, *, max_bytes: int) -> list[bytes]:
    """16-bit PCM cut at sample boundaries so that each part's WAV is at most `max_bytes`."""
    room = (max_bytes - WAV_HEADER_BYTES) // 2 * 2
    if room <= 0:
        raise AudioTooLarge(f"A frame budget of {max_bytes} bytes cannot hold any audio.")
    if len(pcm) <= room:
        return [pcm]
    return [pcm[start : start + room] for start in range(0, len(pcm), room)]


class SpeechStream:
    """Piece-by-piece, chunk-by-chunk speech for one streamed reply (see the module docstring)."""

    def __init__(
        self,
        *,
        voice: str | None,
        send_json: Callable[[dict[str, Any]], Awaitable[None]],
        send_bytes: Callable[[bytes], Awaitable[None]],
        synthesize: StreamSynthesizer | None = None,
        max_in_flight: int | None = None,
        splitter: SpeechSplitter | None = None,
        max_frame_bytes: int = AUDIO_FRAME_MAX_BYTES,
        request_id: str = "",
    ) -> None:
        self._started = time.perf_counter()
        self._voice = voice
        self._send_json = send_json
        self._send_bytes = send_bytes
        if synthesize is None or max_in_flight is None or splitter is None:
            from django.conf import settings

            if synthesize is None:
                from voice.client import synthesize_stream

                synthesize = synthesize_stream
            max_in_flight = max_in_flight or settings.TTS_STREAM_MAX_IN_FLIGHT
            splitter = splitter or SpeechSplitter(
                first_min_chars=settings.TTS_STREAM_FIRST_MIN_CHARS,
                max_chars=min(settings.TTS_STREAM_MAX_CHARS, settings.TTS_MAX_CHARS),
            )
        self._synthesize: StreamSynthesizer = synthesize
        self._max_in_flight = max_in_flight
        self._max_frame_bytes = max_frame_bytes
        self._splitter = splitter
        self.request_id = request_id
        self._waiting: collections.deque[str] = collections.deque()
        self._ordered: collections.deque[_Piece] = collections.deque()
        self._running = 0
        self._wakeup = asyncio.Event()
        self._sender: asyncio.Task[None] | None = None
        self._finishing = False
        self._stopped = False
        self._closed = False  # the closing frame (speech_end, speech_stopped or error) went out, or never will
        self._ended = asyncio.Event()
        self._dropped: list[asyncio.Task[None]] = []  # cancelled by a stop, maybe not finished yet
        self._done_callbacks: list[Callable[[], None]] = []
        self._in_code_block = False
        self._seq = 0
        self._chunks = 0
        self._audio_s = 0.0
        self._synthesis_ms = 0.0
        self._first_audio_ms: float | None = None
        self._speech_total_ms: float | None = None
        self.pieces_spoken: list[str] = []

    @property
    def first_audio_ms(self) -> float | None:
        """Milliseconds from construction to the first audio frame sent; None if none was."""
        return self._first_audio_ms

    @property
    def speech_total_ms(self) -> float | None:
        """Milliseconds from construction to the last audio frame sent; None if none was."""
        return self._speech_total_ms

    @property
    def stopped(self) -> bool:
        return self._stopped

    @property
    def ended(self) -> bool:
        """Speech is over: everything was spoken, or it was stopped."""
        return self._ended.is_set()

    def feed(self, text: str) -> None:
        """Add streamed reply text; complete pieces start synthesising at once."""
        if self._stopped or self._finishing or not text:
            return
        for piece in self._splitter.feed(text):
            self._enqueue(piece)

    def text_done(self) -> None:
        """The reply's text is complete: the rest is spoken, in the background."""
        if self._stopped or self._finishing:
            return
        self._finishing = True
        for piece in self._splitter.flush():
            self._enqueue(piece)
        self._wakeup.set()
        if self._sender is None:  # nothing was said: the sender closes with speech_end at once
            self._sender = asyncio.get_running_loop().create_task(self._send_in_order())

    async def finish(self) -> None:
        """text_done(), then wait until speech has ended (tests, benchmarks)."""
        self.text_done()
        await self.wait()

    async def wait(self) -> None:
        """Until speech has ended, in any way, and the work it dropped has stopped."""
        await self._ended.wait()
        dropped, self._dropped = self._dropped, []
        if dropped:
            await asyncio.gather(*dropped, return_exceptions=True)

    def when_done(self, callback: Callable[[], None]) -> None:
        """Call `callback` once speech has ended (at once if it has)."""
        if self._ended.is_set():
            callback()
        else:
            self._done_callbacks.append(callback)

    def cancel(self) -> None:
        """Stop now, silently: queued pieces are dropped, pending syntheses and sending are cancelled."""
        self._stop()

    async def interrupt(self, reason: str) -> bool:
        """Stop now and tell the client with a speech_stopped frame, unless speech had already
        closed; True when that frame was sent."""
        self._stop()
        if self._closed:
            return False
        self._closed = True
        await self.wait()  # the dropped syntheses have told their worker
        try:
            await self._send_json({"type": "speech_stopped", "request_id": self.request_id, "reason": reason})
        except Exception:
            logger.debug("could not send speech_stopped", exc_info=True)
            return False
        return True

    def _stop(self) -> None:
        self._stopped = True
        self._waiting.clear()
        for piece in self._ordered:
            piece.task.cancel()
            self._dropped.append(piece.task)
        self._ordered.clear()
        if self._sender is not None and self._sender is not asyncio.current_task():
            self._sender.cancel()
            self._dropped.append(self._sender)
        self._wakeup.set()
        self._end()

    def _end(self) -> None:
        if self._ended.is_set():
            return
        self._ended.set()
        callbacks, self._done_callbacks = self._done_callbacks, []
        for callback in callbacks:
            try:
                callback()
            except Exception:
                logger.exception("a speech-done callback failed")

    def _enqueue(self, piece: str) -> None:
        if piece.lstrip().startswith("```"):
            self._in_code_block = not self._in_code_block
            return
        if self._in_code_block:
            return
        self._waiting.append(piece)
        self._start_more()

    def _start_more(self) -> None:
        loop = asyncio.get_running_loop()
        while self._waiting and self._running < self._max_in_flight and not self._stopped:
            piece = _Piece(self._waiting.popleft())
            piece.task = loop.create_task(self._synthesise(piece))
            self._running += 1
            piece.task.add_done_callback(self._synthesis_done)
            self._ordered.append(piece)
        if self._sender is None and self._ordered:
            self._sender = loop.create_task(self._send_in_order())
        self._wakeup.set()

    async def _synthesise(self, piece: _Piece) -> None:
        """Pull the piece's chunks into its queue as they come; the sender drains it in order."""
        chunks = self._synthesize(text=piece.text, voice=self._voice)
        try:
            async for chunk in chunks:
                piece.chunks.put_nowait(chunk)
        except asyncio.CancelledError:
            raise
        except BaseException as exc:
            piece.chunks.put_nowait(exc)
        finally:
            piece.chunks.put_nowait(None)
            await chunks.aclose()

    def _synthesis_done(self, task: asyncio.Task[None]) -> None:
        self._running -= 1
        if not self._stopped:
            self._start_more()

    async def _send_in_order(self) -> None:
        try:
            await self._send_pieces()
        finally:
            if not self._stopped:
                self._end()

    async def _send_pieces(self) -> None:
        while not self._stopped:
            if not self._ordered:
                if self._finishing and not self._waiting and self._running == 0:
                    await self._close_with_speech_end()
                    return
                self._wakeup.clear()
                await self._wakeup.wait()
                continue
            piece = self._ordered[0]
            index = 0
            while True:
                item = await piece.chunks.get()
                if item is None:
                    break
                if isinstance(item, InvalidText):
                    break  # nothing speakable in this piece (emoji, symbols)
                if isinstance(item, EvaError):
                    await self._fail(item)
                    return
                if isinstance(item, BaseException):  # never let a synthesis bug end the text reply
                    logger.error("synthesis of a reply piece failed", exc_info=item)
                    await self._fail(TTSUnavailable(f"Synthesis failed: {item}"))
                    return
                try:
                    frames = split_pcm(item.pcm, max_bytes=self._max_frame_bytes)
                except AudioTooLarge as exc:
                    await self._fail(TTSUnavailable(exc.message))
                    return
                for number, pcm in enumerate(frames):
                    last = item.last and number == len(frames) - 1
                    if not await self._send_chunk(piece.text, index, last, pcm, item.sample_rate):
                        return
                    index += 1
                self._audio_s += item.duration_s
                self._synthesis_ms += item.synthesis_ms
            if self._ordered and self._ordered[0] is piece:
                self._ordered.popleft()
            if index:
                self._seq += 1
                self.pieces_spoken.append(piece.text)

    async def _send_chunk(self, text: str, index: int, last: bool, pcm: bytes, sample_rate: int) -> bool:
        wav = pcm16_wav(pcm, sample_rate=sample_rate)
        try:
            await self._send_json(
                {
                    "type": "audio",
                    "request_id": self.request_id,
                    "seq": self._seq,
                    "chunk": index,
                    "last": last,
                    "text": text,
                    "format": "wav",
                    "sample_rate": sample_rate,
                    "bytes": len(wav),
                }
            )
            await self._send_bytes(wav)
        except ConnectionError:  # the socket went away: nobody is listening any more
            logger.debug("could not send audio; stopping speech", exc_info=True)
            self._closed = True
            self._stop()
            return False
        except Exception as exc:  # the socket is still there: say so rather than fall silent
            logger.warning("could not send audio; stopping speech", exc_info=True)
            await self._fail(TTSUnavailable(f"The audio could not be sent: {type(exc).__name__}."))
            return False
        now_ms = (time.perf_counter() - self._started) * 1000
        if self._first_audio_ms is None:
            self._first_audio_ms = round(now_ms, 3)
        self._speech_total_ms = round(now_ms, 3)
        self._chunks += 1
        return True

    async def _close_with_speech_end(self) -> None:
        if self._closed:
            return
        self._closed = True
        audio_s = round(self._audio_s, 3)
        frame = {
            "type": "speech_end",
            "request_id": self.request_id,
            "pieces": len(self.pieces_spoken),
            "chunks": self._chunks,
            "audio_s": audio_s,
            "synthesis_ms": round(self._synthesis_ms, 1),
            "real_time_factor": round(self._synthesis_ms / 1000 / audio_s, 3) if audio_s else None,
            "time_to_first_audio_ms": self._first_audio_ms,
            "speech_total_ms": self._speech_total_ms,
        }
        try:
            await self._send_json(frame)
        except Exception:
            logger.debug("could not send speech_end", exc_info=True)

    async def _fail(self, exc: EvaError) -> None:
        code = exc.code if exc.code != "invalid_text" else "tts_unavailable"
        self._stop()
        if self._closed:
            return
        self._closed = True
        try:
            await self._send_json(
                {
                    "type": "error",
                    "code": code,
                    "message": f"Speech stopped: {exc.message}",
                    "request_id": self.request_id,
                }
            )
        except Exception:
            logger.debug("could not send the speech error frame", exc_info=True)


class _Piece:
    """One speakable piece: its synthesis task and the chunks (or the error) it has produced."""

    def __init__(self, text: str) -> None:
        self.text = text
        self.chunks: asyncio.Queue[AudioChunk | BaseException | None] = asyncio.Queue()
        self.task: asyncio.Task[None]
