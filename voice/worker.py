"""The TTS worker: `python manage.py runworker voice-tts`, Channels' worker model.

Request/reply protocol over the channel layer (all messages carry `reply_channel`):

- web -> "voice-tts": {"type": "tts.synthesize", "text", "voice", "deadline", "pickup_deadline"}
  (epoch seconds), {"type": "tts.stream", same fields} or {"type": "tts.ping", "deadline",
  "pickup_deadline"}.
- worker -> reply channel: {"type": "tts.accepted", "worker_channel"} at once, then
  {"type": "tts.working"} every HEARTBEAT_S while the request waits or runs, then exactly one
  {"type": "tts.result", "ok": true, <Synthesis fields>} or {"type": "tts.result", "ok": false,
  "code", "message"}; a ping gets one {"type": "tts.pong", ...}. A tts.stream gets
  {"type": "tts.chunk", <AudioChunk fields>} for each chunk as soon as it exists, the last one
  with "last": true (or a failed tts.result instead of what is left).
- web -> the worker's own channel (`worker_channel`): {"type": "tts.cancel", "request_id"}: the
  request is dropped at once, whether it still waits in the worker's queue or is being
  synthesised (it stops after the chunk under way). A request not yet taken is dropped by the
  abandoned mark below.

The client treats silence (no acceptance within TTS_PICKUP_TIMEOUT_S, no heartbeat for
HEARTBEAT_TIMEOUT_S) or the deadline as `tts_unavailable`, so a worker that dies mid-request
costs its client seconds, not the whole deadline. A worker drops requests not taken by their
pickup deadline, so a backlog (no worker was running) is not synthesised for nobody.

channels_redis delivers at least once: a message another worker is handling, or one a dead
worker had taken, can be handed out again. Each request therefore carries a `request_id` that
a worker claims in the cache (an atomic add) before working on it; a client that stops waiting
(timeout, cancel) marks it abandoned there, and the worker then skips or stops it, and sends
nothing more to a reply channel nobody reads (channels_redis would keep such messages in the
web process's memory for ever).

Several workers may listen on "voice-tts"; each request goes to one of them. Each worker
synthesises one request at a time (one engine thread), the model loaded once at start.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import threading
import time
from collections.abc import Awaitable, Callable
from concurrent.futures import Future, ThreadPoolExecutor
from typing import TYPE_CHECKING, Any

from channels.consumer import AsyncConsumer
from django.core.cache import cache

from accounts.errors import EvaError
from voice.errors import TTSUnavailable
from voice.synthesis import AudioChunk, EngineConfig, Synthesis

if TYPE_CHECKING:
    from voice.engine import TTSEngine

logger = logging.getLogger("voice.worker")

HEARTBEAT_S = 1.0
ABANDONED = "abandoned"
LOAD_RETRY_S = 30.0
WORKER_ID = f"{socket.gethostname()}:{os.getpid()}"


class EngineHost:
    """This process's engine: loaded once off the event loop, used by one thread at a time."""

    def __init__(self, config: EngineConfig, *, hang_exit_s: float = 0.0) -> None:
        self.config = config
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="tts-engine")
        self._stops: dict[str, threading.Event] = {}  # a streamed request's stop, by request id
        self._engine: TTSEngine | None = None
        self._loading: Future[TTSEngine] | None = None
        self._load_error: tuple[float, str] | None = None
        self._lock = threading.Lock()
        self._busy_since: float | None = None
        self._hang_exit_s = hang_exit_s
        if hang_exit_s > 0:
            threading.Thread(target=self._watchdog, name="tts-watchdog", daemon=True).start()

    def start_loading(self) -> Future[TTSEngine]:
        """Begin loading (once; again after LOAD_RETRY_S if it failed)."""
        with self._lock:
            if self._loading is not None and not (self._loading.done() and self._engine is None and self._retry_due()):
                return self._loading
            self._loading = self._executor.submit(self._load)
            return self._loading

    def _retry_due(self) -> bool:
        return self._load_error is None or time.monotonic() - self._load_error[0] >= LOAD_RETRY_S

    def _load(self) -> TTSEngine:
        from voice.engine import TTSEngine

        try:
            engine = TTSEngine.load(self.config)
        except EvaError as exc:
            logger.critical("cannot load the TTS engine: %s", exc.message)
            self._load_error = (time.monotonic(), exc.message)
            raise
        except Exception as exc:
            logger.exception("cannot load the TTS engine")
            self._load_error = (time.monotonic(), f"{type(exc).__name__}: {exc}")
            raise TTSUnavailable(f"The TTS worker cannot load its model: {exc}") from exc
        self._engine = engine
        self._load_error = None
        return engine

    def status(self) -> dict[str, Any]:
        if self._engine is not None:
            return {"ok": True, "busy": self._busy_since is not None, **self._engine.describe()}
        if self._load_error is not None:
            return {"ok": False, "error": self._load_error[1]}
        return {"ok": False, "error": "the TTS worker is still loading its model"}

    async def synthesize(self, *, text: str, voice: str | None, deadline: float, request_id: str = "") -> Synthesis:
        loading = self.start_loading()
        await asyncio.wrap_future(loading)  # raises the load error, if any
        return await asyncio.wrap_future(self._executor.submit(self._synthesize, text, voice, deadline, request_id))

    def _synthesize(self, text: str, voice: str | None, deadline: float, request_id: str) -> Synthesis:
        if time.time() > deadline:
            raise TTSUnavailable("The request waited past its deadline in the TTS worker's queue.")
        if request_id and cache.get(request_key(request_id)) == ABANDONED:
            raise TTSUnavailable("The client stopped waiting before the synthesis started.")
        assert self._engine is not None
        logger.info("synthesising %d chars", len(text))
        self._busy_since = time.monotonic()
        try:
            return self._engine.synthesize(text=text, voice=voice)
        finally:
            self._busy_since = None

    async def stream(
        self,
        *,
        text: str,
        voice: str | None,
        deadline: float,
        on_chunk: Callable[[AudioChunk], Awaitable[None]],
        request_id: str = "",
    ) -> int:
        """Synthesise chunk by chunk, awaiting `on_chunk` for each; the number of chunks sent.

        Cancelling the caller drops the work: still queued, it never runs; running, it stops
        after the chunk under way (the engine thread checks between chunks)."""
        loading = self.start_loading()
        await asyncio.wrap_future(loading)
        loop = asyncio.get_running_loop()
        queue: asyncio.Queue[AudioChunk | BaseException | None] = asyncio.Queue()
        stop = threading.Event()

        def put(item: AudioChunk | BaseException | None) -> None:
            loop.call_soon_threadsafe(queue.put_nowait, item)

        def run() -> None:
            try:
                if stop.is_set():
                    return
                if time.time() > deadline:
                    raise TTSUnavailable("The request waited past its deadline in the TTS worker's queue.")
                if request_id and cache.get(request_key(request_id)) == ABANDONED:
                    raise TTSUnavailable("The client stopped waiting before the synthesis started.")
                assert self._engine is not None
                logger.info("synthesising %d chars (streamed)", len(text))
                self._busy_since = time.monotonic()
                for chunk in self._engine.stream(text=text, voice=voice):
                    put(chunk)
                    if stop.is_set():
                        logger.info("stopped a streamed synthesis after chunk %d: its client left", chunk.index)
                        return
            except BaseException as exc:
                put(exc)
            finally:
                self._busy_since = None
                put(None)

        if request_id:
            self._stops[request_id] = stop
        work = self._executor.submit(run)
        sent = 0
        try:
            while True:
                item = await queue.get()
                if item is None:
                    if stop.is_set():  # stopped by tts.cancel (stop_request) before its last chunk
                        raise asyncio.CancelledError
                    return sent
                if isinstance(item, BaseException):
                    raise item
                if stop.is_set():
                    continue  # its client left: nothing more goes out, the engine thread is stopping
                await on_chunk(item)
                sent += 1
        finally:
            stop.set()
            if request_id:
                self._stops.pop(request_id, None)
            if work.cancel():
                logger.info("dropped a queued synthesis: its client left")

    def stop_request(self, request_id: str) -> None:
        """Its client left (tts.cancel): the engine thread stops after the chunk under way, whether or
        not the cancellation of the task that streams it has reached it yet."""
        stop = self._stops.get(request_id)
        if stop is not None:
            stop.set()

    def _watchdog(self) -> None:
        # A synthesis stuck in native code cannot be interrupted from Python: exit so that the
        # process manager restarts a healthy worker instead of one that takes requests forever.
        while True:
            time.sleep(1.0)
            busy_since = self._busy_since
            if busy_since is not None and time.monotonic() - busy_since > self._hang_exit_s:
                logger.critical(
                    "a synthesis has run for over %.0f s: exiting so that the worker is restarted", self._hang_exit_s
                )
                logging.shutdown()
                os._exit(70)


_host: EngineHost | None = None
_host_lock = threading.Lock()


def engine_host() -> EngineHost:
    """The process-wide EngineHost, built from settings on first use."""
    global _host
    with _host_lock:
        if _host is None:
            from django.conf import settings

            from voice.config import engine_config

            _host = EngineHost(engine_config(), hang_exit_s=settings.TTS_WORKER_HANG_EXIT_S)
        return _host


def request_key(request_id: str) -> str:
    """The cache key a worker claims a request under, and a client marks it abandoned under."""
    return f"voice-tts:request:{request_id}"


async def claim_request(request_id: str, *, deadline: float) -> bool:
    """True for the one worker that gets to handle this request (False: a duplicate delivery,
    or its client has already given up)."""
    if not request_id:
        return True
    claim_s = max(deadline - time.time(), 0) + 60
    return bool(await cache.aadd(request_key(request_id), f"claimed:{WORKER_ID}", timeout=claim_s))


async def is_abandoned(request_id: str) -> bool:
    return bool(request_id) and await cache.aget(request_key(request_id)) == ABANDONED


def preload() -> None:
    """Start loading the model now, so the first request does not pay for it."""
    engine_host().start_loading()


class TTSWorkerConsumer(AsyncConsumer):
    """Answers tts.synthesize, tts.stream, tts.cancel and tts.ping sent to the "voice-tts" channel."""

    async def tts_synthesize(self, message: dict[str, Any]) -> None:
        await self._take(message)

    async def tts_stream(self, message: dict[str, Any]) -> None:
        await self._take(message)

    async def tts_cancel(self, message: dict[str, Any]) -> None:
        """Its client left: drop the request now, queued or running (sent to this worker's channel)."""
        request_id = str(message.get("request_id") or "")
        task = self._by_request().pop(request_id, None)
        if task is not None and not task.done():
            logger.info("dropped request %s: cancelled by its client", request_id)
            engine_host().stop_request(request_id)
            task.cancel()

    async def _take(self, message: dict[str, Any]) -> None:
        reply_channel = message.get("reply_channel")
        deadline = float(message.get("deadline") or 0)
        if not reply_channel:
            logger.warning("dropped a %s without reply_channel", message.get("type"))
            return
        if time.time() > min(deadline, float(message.get("pickup_deadline") or deadline)):
            # Its client has given up: a backlog left while no worker ran, or a message that
            # channels_redis re-delivered after the worker that first took it died.
            logger.info("dropped a request its client no longer waits for")
            return
        request_id = str(message.get("request_id") or "")
        if not await claim_request(request_id, deadline=deadline):
            logger.info("dropped request %s: another worker has it, or its client gave up", request_id)
            return
        await self.channel_layer.send(
            reply_channel, {"type": "tts.accepted", "worker": WORKER_ID, "worker_channel": self.channel_name}
        )
        answer = self._answer_stream if message.get("type") == "tts.stream" else self._answer
        task = asyncio.create_task(answer(message, reply_channel=reply_channel, deadline=deadline))
        self._tasks().add(task)
        task.add_done_callback(self._tasks().discard)
        if request_id:
            self._by_request()[request_id] = task
            task.add_done_callback(lambda _: self._by_request().pop(request_id, None))

    def _tasks(self) -> set[asyncio.Task[None]]:
        if not hasattr(self, "_running"):
            self._running: set[asyncio.Task[None]] = set()
        return self._running

    def _by_request(self) -> dict[str, asyncio.Task[None]]:
        if not hasattr(self, "_requests"):
            self._requests: dict[str, asyncio.Task[None]] = {}
        return self._requests

    async def _answer(self, message: dict[str, Any], *, reply_channel: str, deadline: float) -> None:
        request_id = str(message.get("request_id") or "")
        heartbeat = asyncio.create_task(self._heartbeat(reply_channel, deadline, request_id))
        try:
            started = time.perf_counter()
            synthesis = await engine_host().synthesize(
                text=str(message.get("text", "")), voice=message.get("voice"), deadline=deadline, request_id=request_id
            )
            reply: dict[str, Any] = {"type": "tts.result", "ok": True, "worker": WORKER_ID, **synthesis.to_wire()}
            logger.info(
                "synthesised %d chars as %.2f s of audio in %.0f ms%s",
                len(str(message.get("text", ""))),
                synthesis.duration_s,
                (time.perf_counter() - started) * 1000,
                " (cached)" if synthesis.cached else "",
            )
        except EvaError as exc:
            reply = {"type": "tts.result", "ok": False, "code": exc.code, "message": exc.message}
        except Exception as exc:  # the worker must keep serving after any one failure
            logger.exception("synthesis failed")
            reply = {
                "type": "tts.result",
                "ok": False,
                "code": "tts_unavailable",
                "message": f"Synthesis failed: {exc}",
            }
        finally:
            heartbeat.cancel()
        # Past the deadline or abandoned, nobody reads the reply channel: do not fill it.
        if time.time() <= deadline and not await is_abandoned(request_id):
            await self.channel_layer.send(reply_channel, reply)

    async def _answer_stream(self, message: dict[str, Any], *, reply_channel: str, deadline: float) -> None:
        request_id = str(message.get("request_id") or "")
        heartbeat = asyncio.create_task(self._heartbeat(reply_channel, deadline, request_id))

        async def send_chunk(chunk: AudioChunk) -> None:
            await self.channel_layer.send(reply_channel, {"type": "tts.chunk", **chunk.to_wire()})

        reply: dict[str, Any] | None = None
        try:
            started = time.perf_counter()
            chunks = await engine_host().stream(
                text=str(message.get("text", "")),
                voice=message.get("voice"),
                deadline=deadline,
                on_chunk=send_chunk,
                request_id=request_id,
            )
            logger.info(
                "streamed %d chars in %d chunks in %.0f ms",
                len(str(message.get("text", ""))),
                chunks,
                (time.perf_counter() - started) * 1000,
            )
        except EvaError as exc:
            reply = {"type": "tts.result", "ok": False, "code": exc.code, "message": exc.message}
        except Exception as exc:  # the worker must keep serving after any one failure
            logger.exception("streamed synthesis failed")
            reply = {
                "type": "tts.result",
                "ok": False,
                "code": "tts_unavailable",
                "message": f"Synthesis failed: {exc}",
            }
        finally:
            heartbeat.cancel()
        if reply is not None and time.time() <= deadline and not await is_abandoned(request_id):
            await self.channel_layer.send(reply_channel, reply)

    async def _heartbeat(self, reply_channel: str, deadline: float, request_id: str) -> None:
        while time.time() < deadline:
            await asyncio.sleep(HEARTBEAT_S)
            if await is_abandoned(request_id):
                # Its client left without reaching us (no tts.cancel came): drop the work too.
                task = self._by_request().pop(request_id, None)
                if task is not None and task is not asyncio.current_task():
                    logger.info("dropped request %s: abandoned by its client", request_id)
                    task.cancel()
                return
            await self.channel_layer.send(reply_channel, {"type": "tts.working"})

    async def tts_ping(self, message: dict[str, Any]) -> None:
        reply_channel = message.get("reply_channel")
        deadline = float(message.get("deadline") or 0)
        if not reply_channel or time.time() > min(deadline, float(message.get("pickup_deadline") or deadline)):
            return
        if not await claim_request(str(message.get("request_id") or ""), deadline=deadline):
            return
        host = engine_host()
        host.start_loading()
        await self.channel_layer.send(reply_channel, {"type": "tts.pong", "worker": WORKER_ID, **host.status()})
