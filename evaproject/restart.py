"""Graceful restart on SIGTERM (#16), under daphne and uvicorn alike, without touching either.

What each server does with SIGTERM on its own: daphne (Twisted's handler) stops the reactor at
once, and its shutdown trigger cancels every application instance: sockets end with no frame,
SSE bodies are cut, replies in flight are lost. uvicorn stops accepting, closes each WebSocket
with 1012 at once (no frame from the application first), lets HTTP responses in flight finish,
then runs the lifespan shutdown (after the connections are gone: too late to tell anyone).

So EVA takes the signal first. `GracefulRestart` wraps the ASGI application; on its first call
(on the event loop, in the main thread, after the server has installed its own handlers) it puts
its own SIGTERM handler in front of the server's, with `signal.signal`, keeping the server's.
On SIGTERM it:
1. refuses new work: every new HTTP request gets 503 `server_restarting` (JSON, Retry-After,
   `Connection: close`; /health too, so a load balancer takes the process out), every new
   WebSocket gets the `server_restarting` error frame and close 1012 (4012 under daphne, whose
   WebSocket library cannot send 1012); a message on an open socket the same;
2. drains the chat streams (chat.drain): replies in flight finish, for DRAIN_TIMEOUT_S at most;
   those still running then are stopped and stored as partial with their metric rows; idle
   sockets get `server_restarting` + 1012 at once; other HTTP requests in flight finish within
   the same deadline;
3. hands the signal back to the server: the server's own handler is put back and the signal
   raised again, so the server stops as it always does, now with nothing left in flight.
A second SIGTERM during the drain goes to the server at once.

The listening socket stays open during the drain (only the server could close it); what
arrives is refused as said. A process that never served a request has installed nothing: the
server handles SIGTERM alone (nothing is in flight). Exit status: daphne exits 0; uvicorn, by
design, raises the signal again once its own shutdown is done (exit status 143 / -15).
"""

from __future__ import annotations

import asyncio
import logging
import signal
import threading
from types import FrameType
from typing import Any

import orjson
from django.conf import settings

from accounts.errors import error_body
from chat import drain

logger = logging.getLogger("evaproject.restart")

_RESTARTING_BODY = orjson.dumps(error_body(code=drain.RESTARTING_CODE, message=drain.RESTARTING_MESSAGE))


class GracefulRestart:
    """ASGI middleware around the whole application (see the module's docstring)."""

    def __init__(self, app: Any) -> None:
        self.app = app
        self.installed = False
        self.signalled = False
        self.http_in_flight = 0
        self.http_idle = asyncio.Event()
        self.http_idle.set()

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        kind = scope["type"]
        if kind not in ("http", "websocket"):
            await self.app(scope, receive, send)  # lifespan, channel layer messages (runworker)
            return
        if not self.installed:
            self._install()
        if drain.draining():
            await (_refuse_http(send) if kind == "http" else _refuse_websocket(receive, send))
            return
        if kind == "websocket":
            await self.app(scope, receive, send)
            return
        self.http_in_flight += 1
        self.http_idle.clear()
        try:
            await self.app(scope, receive, send)
        finally:
            self.http_in_flight -= 1
            if not self.http_in_flight:
                self.http_idle.set()

    # --- the signal ----------------------------------------------------------------------
    def _install(self) -> None:
        self.installed = True
        if threading.current_thread() is not threading.main_thread():
            logger.warning("the application runs outside the main thread: no graceful restart on SIGTERM")
            return
        loop = asyncio.get_running_loop()
        server_handler = signal.getsignal(signal.SIGTERM)

        def on_sigterm(signum: int, frame: FrameType | None) -> None:
            if self.signalled or loop.is_closed():  # a second SIGTERM, or no loop to drain on: the server's stop, now
                signal.signal(signal.SIGTERM, server_handler)
                signal.raise_signal(signum)
                return
            self.signalled = True
            loop.call_soon_threadsafe(lambda: loop.create_task(self._drain_then_stop(server_handler)))

        signal.signal(signal.SIGTERM, on_sigterm)

    async def _drain_then_stop(self, server_handler: Any) -> None:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + settings.DRAIN_TIMEOUT_S
        logger.warning("SIGTERM: draining for %s s at most, then stopping", settings.DRAIN_TIMEOUT_S)
        try:
            await drain.drain_streams(deadline)
            if self.http_in_flight:
                try:
                    async with asyncio.timeout_at(deadline):
                        await self.http_idle.wait()
                except TimeoutError:
                    logger.warning("%d HTTP request(s) still running at the drain's deadline", self.http_in_flight)
        except Exception:
            logger.exception("the drain failed; stopping anyway")
        finally:
            logger.warning("drained: handing SIGTERM to the server")
            if self.signalled and signal.getsignal(signal.SIGTERM) is not server_handler:
                signal.signal(signal.SIGTERM, server_handler)
                signal.raise_signal(signal.SIGTERM)


async def _refuse_http(send: Any) -> None:
    await send(
        {
            "type": "http.response.start",
            "status": 503,
            "headers": [
                (b"content-type", b"application/json"),
                (b"retry-after", b"1"),
                (b"connection", b"close"),
                (b"x-content-type-options", b"nosniff"),
            ],
        }
    )
    await send({"type": "http.response.body", "body": _RESTARTING_BODY})


async def _refuse_websocket(receive: Any, send: Any) -> None:
    message = await receive()
    if message["type"] != "websocket.connect":
        return
    await send({"type": "websocket.accept"})
    frame = {"type": "error", "code": drain.RESTARTING_CODE, "message": drain.RESTARTING_MESSAGE}
    await send({"type": "websocket.send", "text": orjson.dumps(frame).decode()})
    try:
        await send({"type": "websocket.close", "code": drain.CLOSE_RESTARTING})
    except Exception:  # daphne cannot send 1012 (chat.drain)
        await send({"type": "websocket.close", "code": drain.CLOSE_RESTARTING_DAPHNE})
