"""Speak an LLM reply while it is being written: the voice half of /ws/chat with "voice": true.

Contract for the chat consumer (one SpeechStream per reply, created inside the event loop):

    speech = SpeechStream(voice=None, send_json=self.send_json, send_bytes=send_audio)
    for each token:   speech.feed(token)          # sync, cheap, never blocks
    at the end:       await speech.finish()       # flush, wait until every frame is sent
    on cancel/close:  speech.cancel()             # stop synthesis and sending at once
    metric:           speech.first_audio_ms       # None when nothing was spoken

For every speakable piece, in order, for each of its parts: send_json({"type": "audio", "seq": N,
"part": K, "parts": P, "text": piece, "format": "wav", "sample_rate": R, "bytes": len(part)})
then send_bytes(part). A piece's WAV over `max_frame_bytes` is cut at sample boundaries into P
parts, each a complete WAV file of its own, so that no binary frame reaches a server's WebSocket
message limit (daphne's is 1 MiB) and a client that plays each binary frame as it comes plays
the piece whole. Pieces are synthesised while tokens still flow, at most `max_in_flight` at a
time. A piece with nothing to say (emoji, a code fence) is skipped. If synthesis fails, or audio
cannot be sent, one {"type": "error", "code": "tts_unavailable", ...} is sent and the stream
stops speaking; the text reply is not affected. Text inside Markdown code fences is not read aloud.
"""

from __future__ import annotations

import asyncio
import collections
import io
import logging
import time
import wave
from collections.abc import Awaitable, Callable
from typing import Any

from accounts.errors import EvaError
from voice.errors import InvalidText, TTSUnavailable
from voice.speech_splitter import SpeechSplitter
from voice.synthesis import Synthesis

logger = logging.getLogger("voice.speech_stream")

Synthesizer = Callable[..., Awaitable[Synthesis]]

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


class SpeechStream:
    """Sentence-by-sentence speech for one streamed reply (see the module docstring)."""

    def __init__(
        self,
        *,
        voice: str | None,
        send_json: Callable[[dict[str, Any]], Awaitable[None]],
        send_bytes: Callable[[bytes], Awaitable[None]],
        synthesize: Synthesizer | None = None,
        max_in_flight: int | None = None,
        splitter: SpeechSplitter | None = None,
        max_frame_bytes: int = AUDIO_FRAME_MAX_BYTES,
    ) -> None:
        self._started = time.perf_counter()
        self._voice = voice
        self._send_json = send_json
        self._send_bytes = send_bytes
        if synthesize is None or max_in_flight is None or splitter is None:
            from django.conf import settings

            if synthesize is None:
                from voice.client import synthesize as client_synthesize

                synthesize = client_synthesize
            max_in_flight = max_in_flight or settings.TTS_STREAM_MAX_IN_FLIGHT
            splitter = splitter or SpeechSplitter(
                first_min_chars=settings.TTS_STREAM_FIRST_MIN_CHARS,
                max_chars=min(settings.TTS_STREAM_MAX_CHARS, settings.TTS_MAX_CHARS),
            )
        self._synthesize: Synthesizer = synthesize
        self._max_in_flight = max_in_flight
        self._max_frame_bytes = max_frame_bytes
        self._splitter = splitter
        self._waiting: collections.deque[str] = collections.deque()
        self._ordered: collections.deque[tuple[str, asyncio.Task[Synthesis]]] = collections.deque()
        self._running = 0
        self._wakeup = asyncio.Event()
        self._sender: asyncio.Task[None] | None = None
        self._finishing = False
        self._stopped = False
        self._in_code_block = False
        self._seq = 0
        self._first_audio_ms: float | None = None
        self.pieces_spoken: list[str] = []

    @property
    def first_audio_ms(self) -> float | None:
        """Milliseconds from construction to the first audio frame sent; None if none was."""
        return self._first_audio_ms

    @property
    def stopped(self) -> bool:
        return self._stopped

    def feed(self, text: str) -> None:
        """Add streamed reply text; complete pieces start synthesising at once."""
        if self._stopped or self._finishing or not text:
            return
        for piece in self._splitter.feed(text):
            self._enqueue(piece)

    async def finish(self) -> None:
        """The reply is complete: speak the rest and return once every frame has been sent."""
        if self._stopped:
            return
        if not self._finishing:
            self._finishing = True
            for piece in self._splitter.flush():
                self._enqueue(piece)
            self._wakeup.set()
        sender = self._sender
        if sender is None:
            return
        try:
            await asyncio.shield(sender)
        except asyncio.CancelledError:
            current = asyncio.current_task()
            if current is not None and current.cancelling():
                raise  # our caller is being cancelled, not just the speech

    def cancel(self) -> None:
        """Stop now: queued pieces are dropped, pending syntheses and sending are cancelled."""
        self._stop()

    def _stop(self) -> None:
        self._stopped = True
        self._waiting.clear()
        for _, task in self._ordered:
            task.cancel()
        self._ordered.clear()
        if self._sender is not None and self._sender is not asyncio.current_task():
            self._sender.cancel()
        self._wakeup.set()

    def _enqueue(self, piece: str) -> None:
        if piece.lstrip().startswith("```"):
            self._in_code_block = not self._in_code_block
            return
        if self._in_code_block:
            return
        self._waiting.append(piece)
        self._start_more()

    def _start_more(self) -> None:
        while self._waiting and self._running < self._max_in_flight and not self._stopped:
            piece = self._waiting.popleft()
            task = asyncio.get_running_loop().create_task(self._speak(piece))
            self._running += 1
            task.add_done_callback(self._synthesis_done)
            self._ordered.append((piece, task))
        if self._sender is None and self._ordered:
            self._sender = asyncio.get_running_loop().create_task(self._send_in_order())
        self._wakeup.set()

    async def _speak(self, piece: str) -> Synthesis:
        return await self._synthesize(text=piece, voice=self._voice)

    def _synthesis_done(self, task: asyncio.Task[Synthesis]) -> None:
        self._running -= 1
        if not self._stopped:
            self._start_more()

    async def _send_in_order(self) -> None:
        while not self._stopped:
            if not self._ordered:
                if self._finishing and not self._waiting and self._running == 0:
                    return
                self._wakeup.clear()
                await self._wakeup.wait()
                continue
            piece, task = self._ordered[0]
            try:
                synthesis = await asyncio.shield(task)
            except InvalidText:
                self._ordered.popleft()  # nothing speakable in this piece (emoji, symbols)
                continue
            except asyncio.CancelledError:
                # Through the property: cancel() may have run during the await, and mypy would keep the
                # loop condition's narrowing of the attribute across it.
                if self.stopped:
                    return
                raise
            except EvaError as exc:
                await self._fail(exc)
                return
            except Exception as exc:  # never let a synthesis bug end the text reply
                logger.exception("synthesis of a reply piece failed")
                await self._fail(TTSUnavailable(f"Synthesis failed: {exc}"))
                return
            self._ordered.popleft()
            try:
                parts = split_wav(synthesis.wav, max_bytes=self._max_frame_bytes)
            except AudioTooLarge as exc:
                logger.warning("%s", exc.message)
                await self._fail(TTSUnavailable(exc.message))
                return
            try:
                for index, part in enumerate(parts):
                    await self._send_json(
                        {
                            "type": "audio",
                            "seq": self._seq,
                            "part": index,
                            "parts": len(parts),
                            "text": piece,
                            "format": "wav",
                            "sample_rate": synthesis.sample_rate,
                            "bytes": len(part),
                        }
                    )
                    await self._send_bytes(part)
            except ConnectionError:  # the socket went away: nobody is listening any more
                logger.debug("could not send audio; stopping speech", exc_info=True)
                self._stop()
                return
            except Exception as exc:  # the socket is still there: say so rather than fall silent
                logger.warning("could not send audio; stopping speech", exc_info=True)
                await self._fail(TTSUnavailable(f"The audio could not be sent: {type(exc).__name__}."))
                return
            if self._first_audio_ms is None:
                self._first_audio_ms = (time.perf_counter() - self._started) * 1000
            self._seq += 1
            self.pieces_spoken.append(piece)

    async def _fail(self, exc: EvaError) -> None:
        code = exc.code if exc.code != "invalid_text" else "tts_unavailable"
        self._stop()
        try:
            await self._send_json({"type": "error", "code": code, "message": f"Speech stopped: {exc.message}"})
        except Exception:
            logger.debug("could not send the speech error frame", exc_info=True)
