"""Text-to-speech as the web process sees it: validate, send to a worker, wait with a deadline.

Synthesis never runs here. With TTS_TRANSPORT "channel" (the default when REDIS_URL is set)
requests go over the channel layer to `manage.py runworker voice-tts` workers; with "local"
they go to the web process's own child process (voice.local_worker). Every failure to get an
answer is a `TTSUnavailable` (503, code tts_unavailable); the web process never crashes on it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
import time
import uuid
import weakref
from collections.abc import AsyncGenerator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from channels.layers import get_channel_layer
from django.conf import settings
from django.core.cache import cache

from accounts.errors import EvaError
from accounts.layer_wait import receive_within
from accounts.redaction import redact
from voice.config import TTS_CHANNEL, engine_config, transport_name
from voice.errors import TTSUnavailable, error_from_wire
from voice.local_worker import LocalWorker
from voice.synthesis import AudioChunk, EngineConfig, Synthesis
from voice.worker import ABANDONED, request_key

logger = logging.getLogger("voice.client")

HEARTBEAT_TIMEOUT_S = 5.0  # a worker sends tts.working every second while it holds a request

# Waiting on the child's pipe blocks a thread; these waits get their own small pool so that
# they never starve the default executor.
_local_waits = ThreadPoolExecutor(max_workers=8, thread_name_prefix="tts-wait")
_local_worker: LocalWorker | None = None
_local_lock = threading.Lock()
# Requests leave each event loop in the order they were asked (see _send_request).
_send_order: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, asyncio.Lock] = weakref.WeakKeyDictionary()


def voices() -> list[dict[str, Any]]:
    """The configured voices, default first."""
    config = engine_config()
    listed = [
        {
            "name": spec.name,
            "language": spec.language,
            "model": spec.model_label,
            "default": spec.name == config.default_voice,
        }
        for spec in config.voices
    ]
    return sorted(listed, key=lambda voice: not voice["default"])


def model_label(voice: str | None) -> str:
    """The model a voice speaks with, as metrics name it; "" for an unknown voice."""
    config = engine_config()
    name = voice or config.default_voice
    return next((spec.model_label for spec in config.voices if spec.name == name), "")


async def synthesize(*, text: str, voice: str | None, timeout_s: float | None = None) -> Synthesis:
    """Speak `text` with `voice` (None: the default voice) on a worker, within `timeout_s`."""
    config = engine_config()
    spec, text = config.checked_request(text=text, voice=voice)
    timeout_s = settings.TTS_TIMEOUT_S if timeout_s is None else timeout_s
    request = {"text": text, "voice": spec.name}
    if transport_name() == "channel":
        reply = await _channel_request("tts.synthesize", request, timeout_s=timeout_s)
    else:
        reply = (await _local_request({"op": "synthesize", **request}, config=config, timeout_s=timeout_s))["result"]
    return Synthesis.from_wire(reply)


async def synthesize_stream(
    *, text: str, voice: str | None, timeout_s: float | None = None
) -> AsyncGenerator[AudioChunk, None]:
    """Speak `text` chunk by chunk: each AudioChunk as soon as the worker has it, the last with
    `last` set. Closing the generator early (or cancelling its reader) drops the request in the
    worker, whether it is still queued there or being synthesised."""
    config = engine_config()
    spec, text = config.checked_request(text=text, voice=voice)
    timeout_s = settings.TTS_TIMEOUT_S if timeout_s is None else timeout_s
    request = {"text": text, "voice": spec.name}
    if transport_name() == "channel":
        chunks = _channel_stream(request, timeout_s=timeout_s)
    else:
        chunks = _local_stream(request, config=config, timeout_s=timeout_s)
    try:
        async for chunk in chunks:
            yield chunk
    finally:
        await chunks.aclose()


async def _channel_stream(request: dict[str, Any], *, timeout_s: float) -> AsyncGenerator[AudioChunk, None]:
    layer: Any = get_channel_layer()
    if layer is None:
        raise TTSUnavailable("No channel layer is configured, so no TTS worker can be reached.")
    pickup_timeout_s = settings.TTS_PICKUP_TIMEOUT_S
    request_id = uuid.uuid4().hex
    worker_channel: str | None = None
    completed = False
    try:
        reply_channel, deadline = await _send_request(
            layer, "tts.stream", request, request_id=request_id, timeout_s=timeout_s, pickup_timeout_s=pickup_timeout_s
        )
        first = True
        while True:
            message = await _next_reply(
                layer,
                reply_channel,
                first=first,
                deadline=deadline,
                timeout_s=timeout_s,
                pickup_timeout_s=pickup_timeout_s,
            )
            first = False
            kind = message.get("type")
            if kind == "tts.accepted":
                worker_channel = message.get("worker_channel") or None
            elif kind == "tts.chunk":
                chunk = AudioChunk.from_wire(message)
                if chunk.last:
                    completed = True
                yield chunk
                if chunk.last:
                    return
            elif kind == "tts.result":
                completed = True  # the worker is done with it, failed
                raise error_from_wire(str(message.get("code", "")), str(message.get("message", "unknown error")))
    except Exception as exc:
        if isinstance(exc, EvaError):
            raise
        logger.warning("channel layer failure during a TTS request: %s: %s", type(exc).__name__, redact(str(exc)))
        raise TTSUnavailable(f"The channel layer failed: {type(exc).__name__}: {exc}") from exc
    finally:
        if not completed:
            # Awaited (shielded: a second cancel leaves it running), so that once a stopped speech
            # has ended the worker has been told, and cannot start the request any more.
            with contextlib.suppress(BaseException):
                await asyncio.shield(_abandon(request_id, timeout_s=timeout_s, worker_channel=worker_channel))


async def _local_stream(
    request: dict[str, Any], *, config: EngineConfig, timeout_s: float
) -> AsyncGenerator[AudioChunk, None]:
    worker = _local_worker_for(config)
    deadline = time.monotonic() + timeout_s
    loop = asyncio.get_running_loop()
    queue: asyncio.Queue[AudioChunk | None] = asyncio.Queue()
    cancelled = threading.Event()

    def on_chunk(wire: dict[str, Any]) -> None:
        loop.call_soon_threadsafe(queue.put_nowait, AudioChunk.from_wire(wire))

    # The turn is taken here, on the event loop, in the order the reply asks for its pieces (the
    # executor's threads would start in any order); the thread only waits for it.
    turn = worker.turns.take()

    def run() -> None:
        try:
            worker.stream(
                {"op": "stream", **request}, deadline=deadline, on_chunk=on_chunk, cancelled=cancelled, turn=turn
            )
        finally:
            loop.call_soon_threadsafe(queue.put_nowait, None)

    done = loop.run_in_executor(_local_waits, run)
    try:
        while True:
            chunk = await queue.get()
            if chunk is None:
                await done  # raises the worker's error, if any
                return
            yield chunk
            if chunk.last:
                return
    finally:
        cancelled.set()  # a no-op once the last chunk came; otherwise the child stops
        if not done.done():
            done.add_done_callback(_retrieve)


def _retrieve(future: asyncio.Future[Any]) -> None:
    if not future.cancelled() and future.exception() is not None:
        logger.debug("a dropped local TTS stream ended with %r", future.exception())


async def tts_readiness(*, timeout_s: float) -> dict[str, Any]:
    """For /ready: a worker answers a ping (channel), or the child process runs (local)."""
    transport = transport_name()
    if transport == "channel":
        try:
            pong = await _channel_request("tts.ping", {}, timeout_s=timeout_s, pickup_timeout_s=timeout_s)
        except TTSUnavailable as exc:
            return {"ok": False, "transport": transport, "error": exc.message}
        return {**pong, "ok": bool(pong.get("ok")), "transport": transport}
    worker = _local_worker_for(engine_config())
    loop = asyncio.get_running_loop()
    status = await loop.run_in_executor(_local_waits, lambda: worker.status(timeout_s=timeout_s))
    return {**status, "transport": transport}


async def _channel_request(
    kind: str, payload: dict[str, Any], *, timeout_s: float, pickup_timeout_s: float | None = None
) -> dict[str, Any]:
    layer = get_channel_layer()
    if layer is None:
        raise TTSUnavailable("No channel layer is configured, so no TTS worker can be reached.")
    pickup_timeout_s = settings.TTS_PICKUP_TIMEOUT_S if pickup_timeout_s is None else pickup_timeout_s
    request_id = uuid.uuid4().hex
    try:
        return await _exchange_over_layer(
            layer, kind, payload, request_id=request_id, timeout_s=timeout_s, pickup_timeout_s=pickup_timeout_s
        )
    except BaseException as exc:
        _abandon(request_id, timeout_s=timeout_s)  # so that no worker starts it or answers it now
        if isinstance(exc, (EvaError, asyncio.CancelledError)) or not isinstance(exc, Exception):
            raise
        logger.warning("channel layer failure during a TTS request: %s: %s", type(exc).__name__, redact(str(exc)))
        raise TTSUnavailable(f"The channel layer failed: {type(exc).__name__}: {exc}") from exc


_abandoning: set[asyncio.Task[None]] = set()


def _abandon(request_id: str, *, timeout_s: float, worker_channel: str | None = None) -> asyncio.Task[None]:
    """Mark a request abandoned for the workers, and tell the worker that took it, if any, to drop
    it now; without waiting (we may be cancelled)."""

    async def mark() -> None:
        if worker_channel:
            try:
                layer = get_channel_layer()
                if layer is not None:
                    await layer.send(worker_channel, {"type": "tts.cancel", "request_id": request_id})
            except Exception:
                logger.warning("could not tell a TTS worker to drop request %s", request_id, exc_info=True)
        try:
            await cache.aset(request_key(request_id), ABANDONED, timeout=timeout_s + 60)
        except Exception:
            logger.warning("could not mark TTS request %s abandoned", request_id, exc_info=True)

    task = asyncio.get_running_loop().create_task(mark())
    _abandoning.add(task)
    task.add_done_callback(_abandoning.discard)
    return task


async def _next_reply(
    layer: Any, reply_channel: str, *, first: bool, deadline: float, timeout_s: float, pickup_timeout_s: float
) -> dict[str, Any]:
    """The worker's next message on `reply_channel`: the first within the pickup timeout, each later
    one within the heartbeat timeout, all before `deadline`; else TTSUnavailable saying which."""
    remaining = deadline - time.time()
    wait = min(remaining, pickup_timeout_s if first else HEARTBEAT_TIMEOUT_S)
    message = await receive_within(layer, reply_channel, wait) if wait > 0 else None
    if message is None:
        if first:
            raise TTSUnavailable(
                f"No text-to-speech worker took the request within {min(pickup_timeout_s, timeout_s):g} s: "
                f"is `python manage.py runworker {TTS_CHANNEL}` running?"
            ) from None
        if remaining <= wait:
            raise TTSUnavailable(f"The text-to-speech worker did not answer within {timeout_s:g} s.") from None
        raise TTSUnavailable("The text-to-speech worker stopped answering during the request.") from None
    return message


async def _send_request(
    layer: Any, kind: str, payload: dict[str, Any], *, request_id: str, timeout_s: float, pickup_timeout_s: float
) -> tuple[str, float]:
    """Send a request to the workers' channel; its reply channel and deadline.

    Requests leave in the order they were asked: a reply's pieces, asked one after the other, must
    reach the workers in that order, and concurrent sends do not keep it (channels_redis orders
    the channel by the time of its ZADD, which comes after other round trips on pooled
    connections). So each send holds this event loop's FIFO lock until Redis has the message;
    the lock is taken when the request is asked, before any await."""
    loop = asyncio.get_running_loop()
    order = _send_order.get(loop)
    if order is None:
        order = _send_order[loop] = asyncio.Lock()
    async with order:
        reply_channel = await layer.new_channel("voice-tts-reply")
        now = time.time()
        deadline = now + timeout_s
        message = {
            **payload,
            "type": kind,
            "reply_channel": reply_channel,
            "request_id": request_id,
            "deadline": deadline,
            # Not taken by then, the request is abandoned here: no worker should start it later.
            "pickup_deadline": now + min(pickup_timeout_s, timeout_s),
        }
        await layer.send(TTS_CHANNEL, message)
    return reply_channel, deadline


async def _exchange_over_layer(
    layer: Any, kind: str, payload: dict[str, Any], *, request_id: str, timeout_s: float, pickup_timeout_s: float
) -> dict[str, Any]:
    reply_channel, deadline = await _send_request(
        layer, kind, payload, request_id=request_id, timeout_s=timeout_s, pickup_timeout_s=pickup_timeout_s
    )
    first = True
    while True:
        message = await _next_reply(
            layer, reply_channel, first=first, deadline=deadline, timeout_s=timeout_s, pickup_timeout_s=pickup_timeout_s
        )
        first = False
        kind_received = message.get("type")
        if kind_received in ("tts.accepted", "tts.working"):
            continue
        if kind_received == "tts.pong":
            return {key: value for key, value in message.items() if key != "type"}
        if message.get("ok"):
            return dict(message)
        raise error_from_wire(str(message.get("code", "")), str(message.get("message", "unknown error")))


def _local_worker_for(config: EngineConfig) -> LocalWorker:
    """The web process's child worker; replaced when the settings it was started with change."""
    global _local_worker
    with _local_lock:
        start_timeout_s = settings.TTS_START_TIMEOUT_S
        worker = _local_worker
        if worker is None or worker.config != config or worker.start_timeout_s != start_timeout_s:
            if worker is not None:
                worker.stop()
            worker = _local_worker = LocalWorker(config, start_timeout_s=start_timeout_s)
        return worker


async def _local_request(request: dict[str, Any], *, config: EngineConfig, timeout_s: float) -> dict[str, Any]:
    worker = _local_worker_for(config)
    deadline = time.monotonic() + timeout_s
    loop = asyncio.get_running_loop()
    return await loop.run_in_executor(_local_waits, lambda: worker.call(request, deadline=deadline))


def stop_local_worker() -> None:
    """Stop the embedded child process, if any (tests, shutdown)."""
    global _local_worker
    with _local_lock:
        if _local_worker is not None:
            _local_worker.stop()
            _local_worker = None
